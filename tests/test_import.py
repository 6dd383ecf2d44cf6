"""Importing the engine must not pull in TensorFlow (napari start-up would take seconds)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "keras", "segmentation_models")


def test_engine_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys\n"
        "import napari_sandseg, napari_sandseg.io, napari_sandseg.metrics\n"
        "import napari_sandseg.sample, napari_sandseg.classmap\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at start-up: {result.stdout.strip()}"
