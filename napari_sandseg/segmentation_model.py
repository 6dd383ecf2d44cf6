"""The segmentation model as one object: a Keras Unet with its sidecar, precision twins and graphs.

:class:`SegmentationModel` (in the spirit of csbdeep's ``BaseModel``) owns what the engine
derives from a model: its :class:`~napari_sandseg.model.ModelInfo` (class map, normalisation,
metadata), the copies computing in another precision (:meth:`SegmentationModel.at`), the
compiled prediction graphs (:meth:`SegmentationModel.predict_function`), saving, loading and
the compatibility check. :class:`ModelCache` keeps loaded models by file version, for the
engine process.

Nothing is set on the Keras objects: what is derived from a Keras model sits in this module's
weak table, keyed by that model, so it goes when the model goes and every
:class:`SegmentationModel` over the same Keras model (and the prediction functions, which
accept a bare Keras model too) shares one twin and one graph. The graphs hold their model
weakly, so an entry never keeps its own key alive.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .classmap import ClassMap
from .model import ModelInfo, check_compatible, load_model, model_precision, save_model, to_precision


@dataclass
class _Derived:
    """What has been built from one Keras model: precision twins and compiled predict functions."""

    twins: dict[str, Any] = field(default_factory=dict)
    functions: dict[bool, Callable[[Any], Any]] = field(default_factory=dict)


#: Keras model -> what was derived from it; an entry goes with its model.
_DERIVED: "weakref.WeakKeyDictionary[Any, _Derived]" = weakref.WeakKeyDictionary()


def _derived(keras_model: Any) -> _Derived:
    found = _DERIVED.get(keras_model)
    if found is None:
        found = _DERIVED[keras_model] = _Derived()
    return found


def compiled(keras_model: Any, tta: bool = False) -> Callable[[Any], Any]:
    """A ``tf.function`` mapping a (B, H, W, 1) float32 batch to (B, H, W, K) float32 probabilities.

    One graph serves every batch and slice size (the spatial dimensions are left open), and it
    is kept for ``keras_model`` so repeated calls do not retrace. With ``tta`` the softmax
    outputs of the four flips (none, left-right, up-down, both) are averaged.
    """
    derived = _derived(keras_model)
    if tta in derived.functions:
        return derived.functions[tta]
    from ._tf import tf

    t = tf()
    ref = weakref.ref(keras_model)  # the graph captures the variables; the model may still go

    def run(x):
        return t.cast(ref()(x, training=False), t.float32)

    def run_tta(x):
        total = run(x)
        total += t.reverse(run(t.reverse(x, [2])), [2])
        total += t.reverse(run(t.reverse(x, [1])), [1])
        total += t.reverse(run(t.reverse(x, [1, 2])), [1, 2])
        return total / 4.0

    fn = t.function(run_tta if tta else run, input_signature=[t.TensorSpec([None, None, None, 1], t.float32)])
    derived.functions[tta] = fn
    return fn


def at_precision(keras_model: Any, precision: str) -> Any:
    """``keras_model`` computing in ``precision`` (a model precision): itself, or its kept twin.

    The twin (:func:`napari_sandseg.model.to_precision`, with fused batch norms, its softmax in
    float32) is built on the first call and kept, so later calls neither rebuild nor retrace
    it. Its weights are refreshed from ``keras_model`` on every call (a copy of a few hundred
    MB at most, small next to a prediction), so a model trained further between two
    predictions is never predicted with stale weights.
    """
    if model_precision(keras_model) == precision:
        return keras_model
    twins = _derived(keras_model).twins
    twin = twins.get(precision)
    if twin is None:
        twin = twins[precision] = to_precision(keras_model, precision, fused=True)
        if precision != "float32":
            _softmax_in_float32(twin)
    else:
        twin.set_weights(keras_model.get_weights())
    return twin


def _softmax_in_float32(model: Any) -> None:
    """Make the output softmax of a mixed-precision ``model`` compute in float32, in place.

    Its bfloat16 logits are still the network's, but a bfloat16 softmax would round every
    probability to 8 significant bits (sums off by up to 3e-3, about a thousand distinct
    values in a volume): float32 keeps probabilities and entropy smooth and normalised, for
    the cost of one small layer. The softmax is the last layer (segmentation-models names it
    after the activation) before the float32 output cast, in the model or a nested one.
    """
    for layer in reversed(model.layers):
        if hasattr(layer, "layers"):  # the ImageNet wrapper's nested Unet
            _softmax_in_float32(layer)
            return
        if layer.name == "softmax":
            layer.dtype_policy = "float32"
            return


class SegmentationModel:
    """A Keras segmentation model with its sidecar, precision twins and compiled predict functions.

    Parameters
    ----------
    keras_model : keras.Model
        The Unet (e.g. from :func:`napari_sandseg.model.build_model` or a training run).
    info : ModelInfo
        Its sidecar: class map, normalisation, training configuration, history, metrics.
    path : path-like, optional
        The ``.keras`` file it was loaded from or saved to.
    """

    def __init__(self, keras_model: Any, info: ModelInfo, path: str | os.PathLike | None = None) -> None:
        self.keras_model = keras_model
        self.info = info
        self.path = None if path is None else Path(path)

    def __repr__(self) -> str:
        return (f"SegmentationModel({self.info.backbone}, {self.n_classes} classes, {self.precision}"
                f"{'' if self.path is None else f', {self.path.name}'})")

    @classmethod
    def load(cls, path: str | os.PathLike, fused: bool = True) -> "SegmentationModel":
        """The model saved at ``path`` (``.keras`` with its sidecar, or a bioimage.io ``.zip``).

        See :func:`napari_sandseg.model.load_model` (safe mode, checks, ``fused``); raises its
        :class:`~napari_sandseg.errors.ModelError`.
        """
        keras_model, info = load_model(path, fused=fused)
        return cls(keras_model, info, path)

    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the model and its sidecar atomically (:func:`napari_sandseg.model.save_model`)."""
        saved = save_model(self.keras_model, path, self.info, overwrite=overwrite)
        self.path = saved
        return saved

    @property
    def class_map(self) -> ClassMap:
        """Original class values, names and colours."""
        return self.info.class_map

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return int(self.info.n_classes)

    @property
    def precision(self) -> str:
        """Dtype policy the Keras model computes in (``"float32"`` or ``"mixed_bfloat16"``)."""
        return model_precision(self.keras_model)

    def check_compatible(self, volume: np.ndarray | None = None, class_map: ClassMap | None = None) -> None:
        """Check ``volume`` / ``class_map`` against the model (:func:`napari_sandseg.model.check_compatible`)."""
        check_compatible(self.info, volume, class_map)

    def at(self, precision: str) -> Any:
        """The Keras model computing in ``precision`` (a resolved model precision): see :func:`at_precision`."""
        return at_precision(self.keras_model, precision)

    def predict_function(self, precision: str = "float32", tta: bool = False) -> Callable[[Any], Any]:
        """The compiled prediction graph of :meth:`at` ``(precision)`` (see :func:`compiled`)."""
        return compiled(self.at(precision), tta)


def as_model(model: Any, info: ModelInfo | None = None) -> SegmentationModel:
    """``model`` if it is a :class:`SegmentationModel`, else one around the Keras model ``model``.

    A bare Keras model needs ``info`` where its sidecar is used (normalisation, classes); the
    twins and graphs built for it are shared with every other wrapper of the same Keras model.
    """
    if isinstance(model, SegmentationModel):
        return model
    return SegmentationModel(model, info)  # type: ignore[arg-type] - info is asked for where needed


class ModelCache:
    """Models loaded or trained in this process, by file: loading costs seconds, keep them.

    An entry is keyed by the file's resolved path and answers only while the file's
    modification time is the one it was loaded (or put) with, so a file rewritten meanwhile
    (a later training run, a copy from elsewhere) is loaded afresh.
    """

    def __init__(self) -> None:
        self._models: dict[str, tuple[SegmentationModel, float]] = {}

    def get(self, path: str | os.PathLike) -> SegmentationModel:
        """The model at ``path``, loaded once per file version (``ModelError`` as :meth:`SegmentationModel.load`)."""
        path = Path(path)
        if not path.is_file():
            return SegmentationModel.load(path)  # raises its ModelError naming the missing file
        key, mtime = str(path.resolve()), path.stat().st_mtime
        cached = self._models.get(key)
        if cached is None or cached[1] != mtime:
            cached = self._models[key] = (SegmentationModel.load(path), mtime)
        return cached[0]

    def put(self, model: SegmentationModel) -> None:
        """Keep ``model`` under its :attr:`~SegmentationModel.path` (a file just written from it)."""
        if model.path is None:
            raise ValueError("only a model saved to a file can be cached by its path")
        self._models[str(model.path.resolve())] = (model, model.path.stat().st_mtime)

    def __len__(self) -> int:
        return len(self._models)


#: The models this process has loaded or trained (the engine process's jobs share them).
MODELS = ModelCache()
