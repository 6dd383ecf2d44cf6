"""Worker helpers shared by widgets: engine calls run from a napari thread worker (no Qt here).

What more than one widget asks of the engine process lives here, so widgets never import
each other (the Segment and Correct widgets both segment with :func:`predict_slabs`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Generator

import numpy as np

from ..choices import AUTO
from ..engine_process import EngineProcess
from ..engine_requests import PredictRequest, SliceProgress


def predict_slabs(engine: EngineProcess, model_path: Path, n_classes: int, volume: np.ndarray, *, batch_size: int,
                  probabilities: bool, uncertainty: bool, cancel: threading.Event, precision: str = AUTO,
                  ) -> Generator[SliceProgress, None, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """The engine's slab-wise prediction (in the engine process) gathered into arrays.

    ``precision`` as in :func:`napari_sandseg.predict.iter_predict` ("auto" is decided by the
    engine, where the model runs). Yields :class:`SliceProgress` after each slab; returns
    ``(labels, probabilities, uncertainty)``, the last two None unless asked for.
    """
    n = volume.shape[0]
    labels = np.empty(volume.shape, np.uint8)
    probs = np.empty(volume.shape + (n_classes,), np.float32) if probabilities else None
    unc = np.empty(volume.shape, np.float32) if uncertainty else None
    request = PredictRequest(Path(model_path), volume, batch_size, probabilities, uncertainty, precision)
    for slab in engine.run(request, cancel=cancel):
        labels[slab.z0:slab.z1] = slab.labels
        if probs is not None:
            probs[slab.z0:slab.z1] = slab.probabilities
        if unc is not None:
            unc[slab.z0:slab.z1] = slab.uncertainty
        yield SliceProgress(slab.z1, n)
    return labels, probs, unc
