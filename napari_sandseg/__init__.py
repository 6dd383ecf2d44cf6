"""napari-sandseg: segment micro-CT rock volumes with a UNet, in napari or headless.

Importing the package is cheap: TensorFlow and segmentation-models are imported only by the
functions that need them (see :mod:`napari_sandseg._tf`).
"""

import os

# segmentation-models picks its Keras at import time; without this it tries standalone Keras 2
# and fails on Keras 3. Set before anything can import it.
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
# Keras here always runs on TensorFlow. bioimageio.core (model packages) reads KERAS_BACKEND when
# first imported, defaults it to "torch" and writes that into os.environ, so every process
# started afterwards (a training subprocess, the engine) would look for PyTorch. Set before
# anything can import it.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

__all__ = ["__version__"]
