"""``sandseg gui`` / ``python -m napari_sandseg``: napari with the plugin docked and the sample open."""

from __future__ import annotations

import warnings
from typing import Any

#: Dock widgets opened by the launcher, in tab order: npe2 display name (napari.yaml) -> tab title.
#: napari titles a plugin dock "<display name> (napari-sandseg)", which five tabs cut to "Train (nap...".
WIDGETS = {
    "Train": "Train",
    "Segment": "Segment",
    "Correct and fine-tune": "Correct",
    "Evaluate": "Evaluate",
    "Analyze": "Analyze",
    "Export": "Export",
}
PLUGIN = "napari-sandseg"

#: Start-up notices a user can do nothing about (napari 0.9 under PyQt5, this plugin's default Qt).
_QUIET_WARNINGS = ("System theme detection requires a Qt6 backend",)


def quiet_startup() -> None:
    """Silence napari's start-up notices about the Qt binding, which the user cannot act on.

    napari 0.9 warns (``UserWarning``) that system theme detection needs Qt6, and shows a
    notification that its PyQt5 support is deprecated, each time it starts under PyQt5. The
    notification is not a Python warning: napari shows it once per process from the main
    window's first ``showEvent``, guarded by the module flag ``SHOW_QT_WARNING``, which is
    cleared here. Must run before the viewer is created.
    """
    for message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    from napari._qt import qt_main_window

    if getattr(qt_main_window, "SHOW_QT_WARNING", False):
        qt_main_window.SHOW_QT_WARNING = False


def open_viewer(show: bool = True) -> Any:
    """A napari viewer with the bundled sample loaded and every sandseg widget docked, Train in front.

    Parameters
    ----------
    show : bool
        Show the window (False for tests and screenshots that do not need it on screen).

    Returns
    -------
    napari.viewer.Viewer
    """
    quiet_startup()
    import napari

    from ..bundled import bundled_sample_paths

    viewer = napari.Viewer(title="napari-sandseg", show=show)
    # The repository's sample_data/ stacks, or (installed without them) a generated copy.
    images, masks = bundled_sample_paths()
    viewer.open(images, plugin=PLUGIN)
    viewer.open(masks, plugin=PLUGIN)
    docks = dock_widgets(viewer)
    bring_to_front(docks[next(iter(WIDGETS))][0])  # Train is the first step
    return viewer


def dock_widgets(viewer: Any) -> dict[str, tuple[Any, Any]]:
    """Dock every sandseg widget, tabbed on the right, under short tab titles.

    Returns
    -------
    dict
        ``{display name: (dock, widget)}`` in :data:`WIDGETS` order.
    """
    docks = {}
    for name, title in WIDGETS.items():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=True)
        set_dock_title(dock, title)
        docks[name] = (dock, widget)
    return docks


def set_dock_title(dock: Any, title: str) -> None:
    """Show ``title`` on a dock's tab and title bar.

    Only what is shown changes: napari keeps finding the dock by its full name (``dock.name``),
    and re-creates its title bar from that name when the dock floats or moves, so the short
    title is put back then.
    """
    dock.setWindowTitle(title)  # the tab text of tabified docks

    def retitle(*_: Any) -> None:
        label = getattr(getattr(dock, "title", None), "title", None)  # napari's QtCustomTitleBar label
        if label is not None:
            label.setText(title)

    retitle()
    # Connected after napari's own handlers, so this runs after they rebuild the title bar.
    dock.topLevelChanged.connect(retitle)
    dock.dockLocationChanged.connect(retitle)


def bring_to_front(dock: Any) -> None:
    """Make ``dock`` the visible tab of its group.

    Qt lays out tabified docks when events are next processed, after which the last dock added
    would be in front, so pending events are processed first.
    """
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    dock.raise_()


def main() -> None:
    """Open the viewer and run napari's event loop until the window closes."""
    import napari

    open_viewer(show=True)
    napari.run()
