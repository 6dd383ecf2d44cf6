"""Lazy access to TensorFlow and segmentation-models.

Nothing here imports TensorFlow at module import; call :func:`tf` or :func:`sm` inside the
functions that need them so ``import napari_sandseg`` and napari start-up stay fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from types import ModuleType
from typing import Iterator


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C++ logging ignores Python's sys.stderr).

    TensorFlow 2.21's native start-up lines ("oneDNN custom operations are on", "Could not find
    cuda drivers") ignore TF_CPP_MIN_LOG_LEVEL and land in a user's terminal as noise. Python
    exceptions raised meanwhile are still reported, after the descriptor is restored.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (some GUI launchers): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _own_symbols_first() -> Iterator[None]:
    """Load TensorFlow's shared libraries with ``RTLD_DEEPBIND`` (Linux).

    Inside a napari process whose OpenGL context came from Mesa, a plain ``import tensorflow``
    segfaults: TensorFlow's bundled libraries then bind to symbols of the same names that Mesa
    already loaded. Deep binding makes TensorFlow prefer its own. (Measured here: plain import
    after a viewer screenshot crashes, deep-bound import runs a model.)
    """
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)
    if not deepbind or not hasattr(sys, "getdlopenflags"):
        yield
        return
    old = sys.getdlopenflags()
    sys.setdlopenflags(old | deepbind)
    try:
        yield
    finally:
        sys.setdlopenflags(old)


def tf() -> ModuleType:
    """Return the ``tensorflow`` module, importing it on first use.

    The first import hides TensorFlow's native start-up log lines unless ``SANDSEG_TF_VERBOSE``
    is set.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet = _native_stderr_silenced() if not os.environ.get("SANDSEG_TF_VERBOSE") else contextlib.nullcontext()
    with quiet, _own_symbols_first():
        import tensorflow

        # Device discovery logs "failed call to cuInit" on machines without a GPU; do it now.
        tensorflow.config.list_physical_devices("GPU")
    return tensorflow


def keras() -> ModuleType:
    """Return ``keras``, importing TensorFlow quietly first (importing keras imports it)."""
    tf()
    import keras as _keras

    return _keras


def sm() -> ModuleType:
    """Return ``segmentation_models`` on tf.keras, importing it on first use."""
    os.environ["SM_FRAMEWORK"] = "tf.keras"
    tf()
    # It prints "Segmentation Models: using `tf.keras` framework." on import.
    with contextlib.redirect_stdout(None):
        import segmentation_models

    return segmentation_models


def has_gpu() -> bool:
    """Whether TensorFlow sees a GPU (training and prediction then run there)."""
    return bool(tf().config.list_physical_devices("GPU"))


def describe_device() -> str:
    """Plain description of the compute device: ``"GPU: <name>"`` or ``"CPU: no GPU found"``."""
    gpus = tf().config.list_physical_devices("GPU")
    if not gpus:
        return "CPU: no GPU found"
    details = tf().config.experimental.get_device_details(gpus[0])
    name = details.get("device_name", gpus[0].name)
    more = f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else ""
    return f"GPU: {name}{more}"


def configure_gpu() -> bool:
    """Let TensorFlow take GPU memory as it needs it, instead of all of it at once.

    Device set-up only: the arithmetic is the caller's explicit ``precision`` (resolved by
    :func:`napari_sandseg.choices.resolve_precision`), never a global Keras policy, so the
    engine process computes exactly what ``sandseg`` does on the same machine.

    Returns
    -------
    bool
        True when a GPU was found.
    """
    t = tf()
    gpus = t.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            t.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth can only be set before first use
            pass
    return bool(gpus)
