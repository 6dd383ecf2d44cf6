"""Segment a volume on a dask cluster: slabs of slices go to workers, results come back in order.

We use dask.distributed rather than our own process pool: users already run its schedulers
on their clusters (``dask scheduler`` / ``dask worker``, dask-jobqueue, dask-kubernetes), and
``--workers N`` starts a :class:`distributed.LocalCluster` on this machine.

- The client sends each worker only the *paths* and a slab range; workers read their slices
  from the shared file system themselves (no volume data goes through the scheduler).
- Each worker loads the model once: a worker plugin (:class:`ModelPlugin`) keeps it, with the
  lazily opened input volume, for every slab that worker gets.
- Slabs are multiples of ``batch_size`` slices, so a worker runs exactly the model batches the
  single-process :func:`napari_sandseg.predict.predict_volume` runs (tiles of big slices
  included: workers call the same :func:`napari_sandseg.predict.iter_predict`), and the labels
  are identical. ``precision="auto"`` is decided once for the whole cluster
  (:func:`cluster_precision`), so every slab is computed in the same arithmetic.
- The client writes the slabs in order as they arrive (TIFF or zarr, see
  :mod:`napari_sandseg.outputs`), keeping only a bounded window of slabs in flight.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
from distributed import WorkerPlugin

from .choices import (
    AUTO,
    DEFAULT_PRECISION,
    DEFAULT_TILE_HALO,
    DEFAULT_TILE_SIZE,
    PREDICT_BATCH_SIZE,
)
from .errors import Cancelled, ConfigError

#: Name the model plugin is registered under on the workers.
PLUGIN_NAME = "napari-sandseg-model"

#: Slabs in flight per worker: enough to keep every worker busy while the client writes.
SLABS_PER_WORKER = 2


class ModelPlugin(WorkerPlugin):
    """Worker plugin that loads the model once per worker and opens the input volume once.

    Parameters
    ----------
    model_path : str
        ``.keras`` model (with its sidecar) on a file system every worker sees.
    """

    name = PLUGIN_NAME

    def __init__(self, model_path: str) -> None:
        super().__init__()
        self.model_path = model_path
        self.model = None  # a SegmentationModel once set up
        self._volumes: dict[str, object] = {}

    def setup(self, worker=None) -> None:
        """Load the model (called by dask on each worker when it starts or the plugin is added)."""
        from .segmentation_model import SegmentationModel

        self.model = SegmentationModel.load(self.model_path)

    def volume(self, path: str):
        """The lazily opened volume at ``path`` (opened on first use by this worker)."""
        from .lazy import open_volume

        if path not in self._volumes:
            self._volumes[path] = open_volume(path, check_finite=False)  # the client checked it
        return self._volumes[path]


def predict_slab(images_path: str, z0: int, z1: int, batch_size: int, tta: bool = False, *,
                 tile_size: int | None = DEFAULT_TILE_SIZE, tile_halo: int = DEFAULT_TILE_HALO,
                 precision: str = DEFAULT_PRECISION) -> np.ndarray:
    """Class ids of slices ``z0:z1`` (runs on a worker; uses that worker's :class:`ModelPlugin`).

    A bfloat16 ``precision`` twin of the model is built on the worker's first slab and kept
    with the model (:func:`napari_sandseg.predict.model_at`).
    """
    from distributed import get_worker

    from .predict import predict_volume

    plugin = get_worker().plugins[PLUGIN_NAME]
    slab = np.asarray(plugin.volume(images_path)[z0:z1])
    return predict_volume(plugin.model, slab, batch_size=batch_size, tta=tta, tile_size=tile_size,
                          tile_halo=tile_halo, precision=precision).labels


def slab_ranges(n_slices: int, batch_size: int, batches_per_slab: int) -> list[tuple[int, int]]:
    """``[(z0, z1), ...]`` covering ``0..n_slices`` in slabs of ``batch_size * batches_per_slab``."""
    step = batch_size * batches_per_slab
    return [(z0, min(n_slices, z0 + step)) for z0 in range(0, n_slices, step)]


def cluster_precision(client, precision: str) -> str:
    """``precision`` with ``"auto"`` decided by the workers: bfloat16 only when every worker picks it.

    Each worker resolves ``"auto"`` for its own machine
    (:func:`napari_sandseg.predict.resolve_predict_precision`); workers that disagree (mixed
    CPUs, some with a GPU) all get float32, so the labels never depend on which worker took a slab.
    ``precision`` is trusted: :func:`predict_cluster` checked it.
    """
    from .predict import resolve_predict_precision

    if precision != AUTO:
        return precision
    chosen = set(client.run(resolve_predict_precision, AUTO).values())
    return chosen.pop() if len(chosen) == 1 else "float32"


def connect(scheduler: str | None = None, workers: int | None = None):
    """A dask client: to the scheduler at ``scheduler``, or to a new local cluster of ``workers``.

    The local cluster listens on 127.0.0.1 only, one single-threaded process per worker
    (TensorFlow parallelises inside each), with no dashboard.

    Raises
    ------
    ConfigError
        Neither or both given, ``workers < 1``, or the scheduler cannot be reached.
    """
    from distributed import Client, LocalCluster

    if (scheduler is None) == (workers is None):
        raise ConfigError("give either a dask scheduler address or a number of local workers, not both or neither")
    if scheduler is not None:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"cannot reach the dask scheduler at {scheduler} ({exc})") from exc
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    return Client(cluster)


def predict_cluster(
    model_path: str | os.PathLike,
    images_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    batches_per_slab: int = 4,
    tta: bool = False,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    tile_halo: int = DEFAULT_TILE_HALO,
    precision: str = DEFAULT_PRECISION,
    voxel_size=None,
) -> Path:
    """Segment ``images_path`` into ``out_path`` across dask workers; labels equal the single-process ones.

    Parameters
    ----------
    model_path : path-like
        ``.keras`` model; the workers read it (and the images) from the same path, so on a
        cluster both must be on a shared file system.
    images_path : path-like
        Volume (TIFF, folder of TIFFs, zarr / OME-Zarr).
    out_path : path-like
        Label stack with the original class values: ``*.zarr`` -> zarr store, else TIFF.
    client : distributed.Client, optional
        Use this client (and leave it open); otherwise one is made from ``scheduler`` or
        ``workers`` (see :func:`connect`) and closed at the end.
    batch_size : int
        Slices per model call (as in :func:`napari_sandseg.predict.predict_volume`).
    batches_per_slab : int
        Model batches per dask task: bigger slabs mean less scheduling overhead, smaller ones
        better balance and less memory per worker.
    tta, overwrite, cancel, progress, tile_size, tile_halo, voxel_size
        As in :func:`napari_sandseg.file_prediction.predict_file`.
    precision : {"float32", "mixed_bfloat16", "auto"}
        Arithmetic of the model, as in :func:`napari_sandseg.file_prediction.predict_file`; ``"auto"``
        is decided by the workers (:func:`cluster_precision`). The labels equal the
        single-process ones computed in the same precision.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ConfigError, InputError, ModelError, OutputError
        Bad settings, input, model or destination (checked before any work is sent).
    Cancelled
        When ``cancel`` is set; no output is written.
    """
    from distributed import as_completed

    from .file_prediction import open_file_run, write_slabs
    from .predict import slab_size

    for name, value in (("batch_size", batch_size), ("batches_per_slab", batches_per_slab)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    # Workers read the model and the images from these paths: absolute, so any working folder works.
    model_path, images_path = Path(model_path).resolve(), Path(images_path).resolve()
    # The client checks the model and its sidecar before the workers load it; "auto" is decided by the workers.
    run = open_file_run(model_path, images_path, {"labels": out_path}, overwrite=overwrite, precision=precision,
                        tile_size=tile_size, tile_halo=tile_halo, fused=False, voxel_size=voxel_size)
    n_slices = run.volume.shape[0]
    # Slabs are whole multiples of the model call size iter_predict will use (lowered for big
    # slices), so workers run exactly the single-process batches.
    slabs = slab_ranges(n_slices, slab_size(batch_size, *run.volume.shape[1:]), batches_per_slab)

    own_client = client is None
    client = connect(scheduler, workers) if own_client else client
    try:
        client.register_plugin(ModelPlugin(str(model_path)), name=PLUGIN_NAME)
        window = max(1, SLABS_PER_WORKER * len(client.scheduler_info()["workers"]))
        task = {"batch_size": batch_size, "tta": tta, "tile_size": tile_size, "tile_halo": tile_halo,
                "precision": cluster_precision(client, precision)}
        write_slabs(run, _slabs_in_order(client, as_completed, slabs, str(images_path), task, window, cancel, progress))
    finally:
        if own_client:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    return Path(out_path)


def _slabs_in_order(client, as_completed, slabs, images_path, task, window, cancel, progress):
    """Submit slabs with at most ``window`` in flight; yield each one as soon as its turn comes.

    Yields :data:`napari_sandseg.file_prediction.Slab` tuples (class ids only) for
    :func:`~napari_sandseg.file_prediction.write_slabs`. ``task`` holds the keyword arguments of
    :func:`predict_slab` besides the slab itself.
    """
    total = slabs[-1][1] if slabs else 0
    pending = iter(enumerate(slabs))
    futures = {}
    done: dict[int, np.ndarray] = {}
    next_write = 0

    def submit_one() -> bool:
        item = next(pending, None)
        if item is None:
            return False
        index, (z0, z1) = item
        # pure=False: the same slab asked twice (a rerun) must be computed, not looked up.
        future = client.submit(predict_slab, images_path, z0, z1, **task, pure=False)
        futures[future] = index
        tracker.add(future)
        return True

    tracker = as_completed()
    for _ in range(window):
        if not submit_one():
            break
    for future in tracker:
        if cancel is not None and cancel.is_set():
            client.cancel(list(futures))
            raise Cancelled(f"prediction cancelled after {sum(z1 - z0 for z0, z1 in slabs[:next_write])} of {total} slices")
        done[futures.pop(future)] = future.result()  # re-raises a worker's exception here
        while next_write in done:
            z0, z1 = slabs[next_write]
            yield z0, done.pop(next_write), None, None
            next_write += 1
            if progress is not None:
                progress(z1, total)
        # Refill only up to the window counting results waiting to be written, so memory stays
        # bounded even when an early slab is slow.
        while len(futures) + len(done) < window and submit_one():
            pass
