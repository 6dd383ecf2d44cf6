"""Choose the tf.distribute strategy a training run uses: one device, all GPUs, or many machines.

We do not write our own distribution: training runs under a standard ``tf.distribute`` strategy
and Keras does the rest (the dataset is split across replicas, gradients are all-reduced).

- ``"default"``: TensorFlow's default strategy (one device; what small runs always used).
- ``"mirrored"``: :class:`tf.distribute.MirroredStrategy` over every visible GPU (over the
  logical CPU devices when there is no GPU, which is how the tests exercise it).
- ``"multiworker"``: :class:`tf.distribute.MultiWorkerMirroredStrategy`; the cluster comes from
  the ``TF_CONFIG`` environment variable, which must be set on every machine before start-up.
- ``"auto"``: multi-worker when ``TF_CONFIG`` names more than one task, mirrored when more than
  one GPU is visible, otherwise the default strategy.

``TrainConfig.batch_size`` is the *global* batch: with N replicas each gets ``batch_size / N``.
Batch normalisation statistics are then synchronised across replicas
(:func:`synchronize_batchnorm`), so a mirrored run computes what one device would compute with
the whole batch, only faster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .choices import STRATEGIES, check_choice
from .errors import ConfigError


def tf_config() -> dict[str, Any] | None:
    """The parsed ``TF_CONFIG`` environment variable, or None when it is unset or empty.

    Raises
    ------
    ConfigError
        If it is set but not a JSON object with a ``cluster`` entry.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); see the README's 'Scaling out' section") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cluster"), dict):
        raise ConfigError('TF_CONFIG must be a JSON object like {"cluster": {"worker": [...]}, "task": {...}}')
    return data


def cluster_size(config: dict[str, Any] | None) -> int:
    """Number of tasks (chief + workers) in a ``TF_CONFIG`` dict; 0 without one."""
    if not config:
        return 0
    return sum(len(v) for k, v in config["cluster"].items() if k in ("chief", "worker"))


def is_chief(config: dict[str, Any] | None = None) -> bool:
    """Whether this process writes the model: the ``chief``, or worker 0 when there is no chief.

    Without ``TF_CONFIG`` the (only) process is the chief.
    """
    config = tf_config() if config is None else config
    if not config:
        return True
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if "chief" in config["cluster"]:
        return kind == "chief"
    return kind == "worker" and index == 0


def worker_rank(config: dict[str, Any] | None = None) -> int:
    """This process's position among the cluster's tasks (chief first); 0 without ``TF_CONFIG``."""
    config = tf_config() if config is None else config
    if not config:
        return 0
    task = config.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "worker" and "chief" in config["cluster"]:
        return index + len(config["cluster"]["chief"])
    return index


def resolve(name: str) -> str:
    """The concrete strategy ``name`` stands for on this machine (``"auto"`` resolved).

    Raises
    ------
    ConfigError
        For an unknown name, or ``"multiworker"`` without a ``TF_CONFIG``.
    """
    check_choice("strategy", name, STRATEGIES)
    config = tf_config()
    if name == "multiworker" and cluster_size(config) < 1:
        raise ConfigError(
            "strategy='multiworker' needs the TF_CONFIG environment variable describing the "
            "cluster (see the README's 'Scaling out' section)"
        )
    if name != "auto":
        return name
    if cluster_size(config) > 1:
        return "multiworker"
    from ._tf import tf

    return "mirrored" if len(tf().config.list_physical_devices("GPU")) > 1 else "default"


def select_strategy(name: str = "auto"):
    """Create the ``tf.distribute.Strategy`` for ``name`` (see the module docstring).

    Call it before any other TensorFlow operation of the run: the multi-worker strategy
    configures the collective runtime, which must happen before the eager context starts.

    Parameters
    ----------
    name : {"auto", "default", "mirrored", "multiworker"}
        Strategy to use.

    Returns
    -------
    tf.distribute.Strategy
    """
    kind = resolve(name)
    from ._tf import tf

    t = tf()
    if kind == "multiworker":
        return t.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = t.config.list_logical_devices("GPU")
        # Without GPUs, mirror over the logical CPUs (one unless the caller configured more).
        devices = [d.name for d in (gpus or t.config.list_logical_devices("CPU"))]
        return t.distribute.MirroredStrategy(devices=devices)
    return t.distribute.get_strategy()


def replicas(strategy) -> int:
    """Number of replicas that share each batch (all devices of all workers)."""
    return int(strategy.num_replicas_in_sync)


def is_multiworker(strategy) -> bool:
    """Whether ``strategy`` spans several processes (MultiWorkerMirroredStrategy)."""
    from ._tf import tf

    return isinstance(strategy, tf().distribute.MultiWorkerMirroredStrategy)


def describe(strategy) -> str:
    """One line naming the strategy and its replica count, for the start event."""
    n = replicas(strategy)
    name = "MultiWorkerMirroredStrategy" if is_multiworker(strategy) else type(strategy).__name__
    return f"{name} over {n} replica{'s' if n != 1 else ''}"


def synchronize_batchnorm(model, synchronized: bool = True) -> int:
    """Set ``synchronized`` on every BatchNormalization layer of ``model`` (nested models too).

    With several replicas each sees only part of the batch; unsynchronised batch norm would
    normalise with per-replica statistics, so results would depend on the number of devices.
    Synchronised, the mean and variance are those of the global batch (one all-reduce per
    layer and step).

    Returns
    -------
    int
        Number of layers changed.
    """
    import keras

    count = 0
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized
            count += 1
        stack.extend(getattr(layer, "layers", []))
    return count


def replica_mean_loss(loss_fn):
    """Wrap a loss that returns one scalar per batch so replicas' gradients sum to the global one.

    Keras divides a loss by the number of replicas only when the loss returns per-sample
    values; our masked losses return the batch mean directly (a mean over annotated pixels,
    not over samples), so without this each replica's gradient would count in full and the
    all-reduced gradient would be N times too large (and the logged loss N times too high).
    """
    import functools

    @functools.wraps(loss_fn)
    def scaled(y_true, y_pred):
        from ._tf import tf

        n = tf().distribute.get_strategy().num_replicas_in_sync
        return loss_fn(y_true, y_pred) / float(n)

    return scaled


def patch_multiworker_fit(model) -> None:
    """Work around two Keras 3 failures of ``fit`` under MultiWorkerMirroredStrategy.

    Both are in Keras' TensorFlow trainer (keras-team/keras#20585), not in our code:

    1. Before the first step it "symbolically builds" the model from a first batch averaged
       with ``strategy.reduce``, which raises "Attempt to convert a value (PerReplica ...) to a
       Tensor" under this strategy. Our models are functional, hence already built, and the
       loss and metrics build when the step is first traced (as without a strategy), so that
       step is skipped for this model instance.
    2. It averages each step's logs over replicas with ``strategy.reduce("MEAN", v, axis=0)``,
       which fails for scalar logs ("Invalid reduction dimension 0"). The steps here return
       each log as a length-1 vector, which that reduce turns back into the scalar mean.
    """
    from ._tf import tf

    t = tf()

    def vectorised(step):
        def run(data):
            return {name: t.reshape(value, [1]) for name, value in step(data).items()}

        return run

    object.__setattr__(model, "_maybe_symbolic_build", lambda iterator=None, data_batch=None: None)
    object.__setattr__(model, "train_step", vectorised(model.train_step))
    object.__setattr__(model, "test_step", vectorised(model.test_step))


def worker_out_path(out_path: Path, config: dict[str, Any] | None = None) -> Path:
    """Where this process writes the model: ``out_path`` on the chief, a scratch file elsewhere.

    Every multi-worker process must run the same saving code (saving reads distributed
    variables), but only the chief's file is the result; the others write beside it under a
    hidden name that tells which worker wrote it, so two processes never race on one file.
    """
    config = tf_config() if config is None else config
    if is_chief(config):
        return out_path
    task = config.get("task", {}) if config else {}
    tag = f"{task.get('type', 'worker')}{int(task.get('index', 0))}"
    return out_path.with_name(f".{out_path.stem}.{tag}{out_path.suffix}")
