"""Lazy access to TensorFlow and segmentation-models.

Nothing here imports TensorFlow at module import; call :func:`tf` or :func:`sm` inside the
functions that need them so ``import napari_sandseg`` and napari start-up stay fast.
"""

from __future__ import annotations

import os
from types import ModuleType


def tf() -> ModuleType:
    """Return the ``tensorflow`` module, importing it on first use."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep C++ start-up chatter off the console
    import tensorflow

    return tensorflow


def sm() -> ModuleType:
    """Return ``segmentation_models`` on tf.keras, importing it on first use."""
    os.environ["SM_FRAMEWORK"] = "tf.keras"
    tf()
    import segmentation_models

    return segmentation_models


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
    """Enable memory growth and mixed precision when a GPU is visible.

    Returns
    -------
    bool
        True when a GPU was found and configured.
    """
    t = tf()
    gpus = t.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            t.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth can only be set before first use
            pass
    if gpus:
        t.keras.mixed_precision.set_global_policy("mixed_float16")
    return bool(gpus)
