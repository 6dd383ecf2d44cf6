"""User-facing errors.

Every problem a user can fix (a bad file, a wrong shape, an impossible setting) is raised as a
:class:`SandsegError` whose message names the file or argument, the problem, and what would be
valid. The CLI prints it as one ``sandseg: error: ...`` line and exits 2; the widgets show it as a
napari notification. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SandsegError(Exception):
    """A problem with the user's input or settings, with a message meant for the user."""


class InputError(SandsegError, ValueError):
    """An image, mask or volume that cannot be used as given."""


class ModelError(SandsegError):
    """A model file or sidecar that is missing, corrupt, unsafe or does not fit the data."""


class ConfigError(SandsegError, ValueError):
    """A training or prediction setting outside its valid range."""


class OutputError(SandsegError):
    """An output path that cannot be written, or that would overwrite existing work."""


class Cancelled(SandsegError):
    """Work stopped because the user asked for it."""


class SandsegWarning(UserWarning):
    """Something the user should know that does not stop the work (the CLI prints it as one line)."""
