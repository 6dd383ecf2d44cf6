"""What crosses the boundary to the engine process: one request type per job, typed messages back.

napari freezes a widget's settings into one of these requests on the main thread and hands it
to :meth:`napari_sandseg.engine_process.EngineProcess.run`, which picks the job by the
request's type (:data:`napari_sandseg.engine_server.JOBS`). What a job yields are the messages
below (or a :class:`napari_sandseg.events.TrainEvent` for training, a status ``str`` for the
short jobs), and what it returns is a summary that pickles: models stay in the engine process.

Everything here pickles (it crosses a socket) and imports neither TensorFlow nor Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from .classmap import ClassMap
    from .config import TrainConfig
    from .units import VoxelSize

#: The wire messages. From napari to the engine: ``(RUN, job_id, request)``, ``(CANCEL, job_id)``
#: and ``(SET, job_id, key, value)`` (a setting the running job reads); napari ends the engine by
#: closing its end of the socket. From the engine: ``(ITEM, job_id, message)`` per yield, then
#: ``(RESULT, job_id, summary)`` or ``(ERROR, job_id, (exception, traceback text))``.
RUN, CANCEL, SET = "run", "cancel", "set"
ITEM, RESULT, ERROR = "item", "result", "error"

#: Keys of the settings a running training job reads while it runs (``EngineProcess.set_control``).
PREVIEW_Z, PREVIEW_UNCERTAINTY = "preview_z", "preview_uncertainty"


# ---------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class DeviceRequest:
    """Start the engine: import TensorFlow, set the GPU up; returns the device's description."""

    job: ClassVar[str] = "device"  # how messages name the job


@dataclass(frozen=True)
class LoadRequest:
    """Load (and cache in the engine) the model at ``path``; returns its ``ModelInfo``."""

    job: ClassVar[str] = "load"  # how messages name the job

    path: Path


@dataclass(frozen=True, eq=False)
class TrainRequest:
    """Train (or fine-tune from ``init_model``) on in-memory stacks; returns a :class:`TrainSummary`.

    With ``preview_z``, the live-preview events carry that slice segmented with the current
    weights (moved with ``set_control(PREVIEW_Z, z)``), and its uncertainty while
    ``preview_uncertainty`` is on (``set_control(PREVIEW_UNCERTAINTY, flag)``). ``voxel_size``
    (of the images) is recorded in the model's sidecar.
    """

    job: ClassVar[str] = "train"  # how messages name the job

    images: np.ndarray
    targets: np.ndarray  # class ids, -1 = not annotated
    class_map: ClassMap
    config: TrainConfig
    out_path: Path
    init_model: Path | None = None
    preview_z: int | None = None
    preview_uncertainty: bool = False
    voxel_size: VoxelSize | None = None


@dataclass(frozen=True, eq=False)
class PredictRequest:
    """Segment an in-memory volume slab by slab; yields :class:`PredictedSlab`, returns the slice count.

    ``precision`` as in :func:`napari_sandseg.predict.iter_predict` ("auto" is decided in the
    engine, where the model runs).
    """

    job: ClassVar[str] = "predict"  # how messages name the job

    model_path: Path
    volume: np.ndarray
    batch_size: int
    probabilities: bool
    uncertainty: bool
    precision: str


@dataclass(frozen=True)
class PredictFileRequest:
    """Segment a volume file into output files; yields :class:`SliceProgress`, returns a :class:`FileSummary`.

    Only paths cross: the volume is read in the engine, so one bigger than memory never does.
    ``voxel_size`` is kept in the outputs (None: the image file's own).
    """

    job: ClassVar[str] = "predict_file"  # how messages name the job

    model_path: Path
    images_path: Path
    out_path: Path
    probabilities_path: Path | None
    uncertainty_path: Path | None
    batch_size: int
    overwrite: bool
    precision: str
    voxel_size: VoxelSize | None = None


#: Every request type, in the order the engine's job table lists them.
REQUESTS: tuple[type, ...] = (DeviceRequest, LoadRequest, TrainRequest, PredictRequest, PredictFileRequest)


# ---------------------------------------------------------------------------------- messages


@dataclass(frozen=True, eq=False)
class PredictedSlab:
    """Slices ``z0:z1`` of a :class:`PredictRequest`'s volume, segmented (what the job yields)."""

    z0: int
    z1: int
    labels: np.ndarray  # class ids, uint8
    probabilities: np.ndarray | None
    uncertainty: np.ndarray | None


@dataclass(frozen=True)
class SliceProgress:
    """``done`` of ``total`` slices segmented."""

    done: int
    total: int


@dataclass(frozen=True)
class TrainSummary:
    """The picklable part of a :class:`napari_sandseg.events.TrainResult` (the model stays in the engine)."""

    info: Any  # ModelInfo
    path: Path
    history: dict[str, list[float]]
    cancelled: bool
    best_epoch: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileSummary:
    """What a :class:`PredictFileRequest` wrote: the output paths and their total size on disk."""

    out: Path
    probabilities: Path | None
    uncertainty: Path | None
    nbytes: int
