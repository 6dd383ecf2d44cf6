"""Build the Unet, and save/load it as one self-describing artefact.

A model artefact is ``name.keras`` (architecture + weights, loaded in Keras safe mode so no
code from the file runs) plus ``name.json``, a sidecar holding everything needed to use the
model correctly: class map, normalisation, training config, history and held-out metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .choices import (
    DEFAULT_BACKBONE,
    DEFAULT_PRECISION,
    ENCODER_WEIGHTS,
    MODEL_PRECISIONS,
    SUPPORTED_BACKBONES,
    check_choice,
)
from .classmap import ClassMap
from .data import Normalization
from .errors import ConfigError, InputError, ModelError, SandsegWarning
from .fused_bn import count_fused, custom_objects, fused_config, fused_copy, plain_config
from .io import atomic_write, jsonable, remove_stale_temps
from .targets import MODEL_SUFFIX, check_target

#: Version of the sidecar layout; bump when a field changes meaning.
SIDECAR_FORMAT = 1

#: Name of the layer that casts a mixed-precision model's softmax back to float32.
OUTPUT_CAST = "float32_output"


@dataclass
class ModelInfo:
    """Everything stored next to the weights (the JSON sidecar).

    Attributes
    ----------
    config : dict
        The ``TrainConfig`` as a dict.
    class_map : ClassMap
        Original class values, names and colours.
    normalization : Normalization
        Intensity scaling the model was trained with.
    history : dict of str to list of float
        Per-epoch Keras logs (``loss``, ``val_loss``, ...).
    metrics : dict or None
        Report on the held-out test slices (``metrics.report_from_confusion`` keys).
    versions : dict
        Package, TensorFlow, Keras and segmentation-models versions used for training.
    backbone : str
        Encoder name.
    n_classes : int
        Number of output channels.
    created : str
        ISO time the artefact was written.
    notes : list of str
        Remarks a user should see (e.g. "cancelled after epoch 3").
    voxel_size : ((z, y, x), unit) or None
        Voxel size of the training images (:mod:`napari_sandseg.units`), when they carried one.
    """

    config: dict[str, Any]
    class_map: ClassMap
    normalization: Normalization
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    backbone: str = DEFAULT_BACKBONE
    n_classes: int = 4
    created: str = ""
    notes: list[str] = field(default_factory=list)
    voxel_size: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the sidecar content, without the file checksum)."""
        return {
            "format_version": SIDECAR_FORMAT,
            "backbone": self.backbone,
            "n_classes": self.n_classes,
            "class_map": self.class_map.to_dict(),
            "class_names": list(self.class_map.names),
            "normalization": self.normalization.to_dict(),
            "config": self.config,
            "history": self.history,
            "metrics": self.metrics,
            "versions": self.versions,
            "created": self.created,
            "notes": list(self.notes),
            "voxel_size": None if self.voxel_size is None else {"zyx": list(self.voxel_size[0]),
                                                                 "unit": self.voxel_size[1]},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        """Inverse of :meth:`to_dict`; ``KeyError``/``TypeError``/``ValueError`` on bad data."""
        return cls(
            config=dict(data.get("config") or {}),
            class_map=ClassMap.from_dict(data["class_map"]),
            normalization=Normalization.from_dict(data["normalization"]),
            # None is how the sidecar writes NaN (strict JSON), e.g. an unscored cancelled epoch
            history={k: [float("nan") if v is None else float(v) for v in vs] for k, vs in (data.get("history") or {}).items()},
            metrics=data.get("metrics"),
            versions=dict(data.get("versions") or {}),
            backbone=str(data["backbone"]),
            n_classes=int(data["n_classes"]),
            created=str(data.get("created", "")),
            notes=list(data.get("notes") or []),
            voxel_size=_voxel_size_from(data.get("voxel_size")),
        )


def _voxel_size_from(data: dict[str, Any] | None):
    """The sidecar's ``voxel_size`` (``{"zyx": [...], "unit": ...}``) as ``((z, y, x), unit)``; None if absent."""
    from .units import check_voxel_size

    return None if not data else (check_voxel_size(data["zyx"]), str(data["unit"]))


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar that belongs to a ``.keras`` file."""
    return Path(path).with_suffix(".json")


def versions() -> dict[str, str]:
    """Versions of the packages a model depends on (stored in the sidecar)."""
    from . import __version__
    from ._tf import keras as _keras_module
    from ._tf import sm, tf

    keras = _keras_module()

    return {
        "napari_sandseg": __version__,
        "tensorflow": tf().__version__,
        "keras": keras.__version__,
        "segmentation_models": getattr(sm(), "__version__", "unknown"),
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------------------------
# building


def build_model(backbone: str = DEFAULT_BACKBONE, n_classes: int = 4, encoder_weights: str | None = None,
                precision: str = DEFAULT_PRECISION, fused: bool = True):
    """Build a Unet for single-channel slices of any size (multiples of 32).

    Parameters
    ----------
    backbone : str
        Encoder, one of :data:`SUPPORTED_BACKBONES`.
    n_classes : int
        Number of output classes (softmax channels), at least 2.
    encoder_weights : {None, "imagenet"}
        ``"imagenet"`` starts the encoder from pretrained weights; they must already be in the
        Keras cache (``~/.keras/models``) or downloadable.
    precision : {"float32", "mixed_bfloat16"}
        Keras dtype policy the layers are built with. Under ``"mixed_bfloat16"`` the layers
        compute in bfloat16 with float32 variables, and a final ``float32_output`` layer casts
        the softmax back to float32 for the loss and the metrics. Keras' global policy is
        restored afterwards.
    fused : bool
        Batch norms as :class:`~napari_sandseg.fused_bn.FusedBatchNormalization` (same results,
        one fused kernel: faster on CPU). Saved files always hold standard Keras layers.

    Returns
    -------
    keras.Model
        Input ``(None, None, None, 1)``, output ``(None, None, None, n_classes)`` float32 softmax.

    Raises
    ------
    ConfigError
        Unknown backbone, bad ``n_classes``, ``encoder_weights`` or ``precision``.
    ModelError
        Pretrained weights requested but not available.
    """
    check_choice("backbone", backbone, SUPPORTED_BACKBONES)
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ConfigError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    check_choice("encoder_weights", encoder_weights, ENCODER_WEIGHTS)
    check_choice("precision", precision, MODEL_PRECISIONS)
    from ._tf import sm

    seg = sm()
    with dtype_policy(precision):
        if encoder_weights is None:
            model = seg.Unet(
                backbone, input_shape=(None, None, 1), classes=int(n_classes), activation="softmax",
                encoder_weights=None,
            )
        else:
            model = _build_pretrained(seg, backbone, int(n_classes))
        model = model if precision == "float32" else _cast_output(model)
        return fused_copy(model) if fused else model


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy set to ``precision`` for the duration, then restored.

    Layers and models take the global policy when they are created, and ``compile`` wraps the
    optimizer in a loss-scale optimizer when a model's policy is ``mixed_float16``. Models are
    therefore only ever created inside this scope, in the precision asked for, and the global
    policy a caller (or Keras' default, float32) set is what it finds afterwards: nothing in
    this package changes it for good.
    """
    from ._tf import keras as _keras_module

    keras = _keras_module()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)  # the policy must not leak to later models


def _cast_output(model):
    """``model`` with its output cast to float32 by a final :data:`OUTPUT_CAST` layer."""
    from ._tf import keras as _keras_module

    keras = _keras_module()
    out = keras.layers.Activation("linear", dtype="float32", name=OUTPUT_CAST)(model.output)
    return keras.Model(model.input, out, name=model.name)


def model_precision(model) -> str:
    """Dtype policy of ``model``'s first layer with weights (``"float32"``, ``"mixed_bfloat16"``)."""
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model (the ImageNet wrapper's Unet)
            return model_precision(layer)
        if layer.weights:
            return layer.dtype_policy.name
    return "float32"


def to_precision(model, precision: str, fused: bool | None = None):
    """Uncompiled copy of ``model``, with the same weights, computing in ``precision``.

    The copy is rebuilt from the model's configuration with every layer's dtype policy set to
    ``precision`` (the :data:`OUTPUT_CAST` layer stays float32; it is added for a mixed
    precision when missing). Variables are float32 under both policies, so the weights carry
    over unchanged.

    Parameters
    ----------
    model : keras.Model
        A functional model (e.g. from :func:`build_model` or :func:`load_model`).
    precision : {"float32", "mixed_bfloat16"}
        Dtype policy of the copy.
    fused : bool, optional
        Batch norms fused (True) or standard Keras layers (False); None keeps the model's.
    """
    check_choice("precision", precision, MODEL_PRECISIONS)
    config = _with_policy(model.get_config(), precision)
    if fused is not None:
        config = fused_config(config) if fused else plain_config(config)
    with dtype_policy(precision):
        copy = type(model).from_config(config, custom_objects=custom_objects())
        if precision != "float32" and OUTPUT_CAST not in {layer.name for layer in copy.layers}:
            copy = _cast_output(copy)
    copy.set_weights(model.get_weights())
    return copy


def _with_policy(obj: Any, precision: str) -> Any:
    """A Keras config with every ``DTypePolicy`` set to ``precision``, except the output cast's."""
    if isinstance(obj, list):
        return [_with_policy(v, precision) for v in obj]
    if not isinstance(obj, dict) or obj.get("name") == OUTPUT_CAST:
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):  # the latter: an older alias
        return {**obj, "config": {**obj.get("config", {}), "name": precision}}
    return {key: _with_policy(value, precision) for key, value in obj.items()}


def _build_pretrained(seg, backbone: str, n_classes: int):
    """Unet with an ImageNet encoder; the grey slice is repeated into the 3 RGB channels."""
    from ._tf import keras as _keras_module
    keras = _keras_module()

    fname = _pretrained_file_name(backbone)
    found = [d for d in _keras_cache_dirs() if (d / "models" / fname).is_file()]
    if not found:
        # Checking first instead of letting Keras try: without network a download can hang on
        # DNS/connect timeouts before it fails.
        dirs = " or ".join(str(d / "models") for d in _keras_cache_dirs())
        raise ModelError(
            f"encoder_weights='imagenet' needs the pretrained {backbone} encoder file {fname}, "
            f"which is not in the Keras cache ({dirs}) and cannot be downloaded without network "
            "access. Copy that file there from a machine with internet, or train with "
            "encoder_weights=None"
        )
    try:
        core = seg.Unet(
            backbone, input_shape=(None, None, 3), classes=n_classes, activation="softmax", encoder_weights="imagenet"
        )
    except Exception as exc:  # corrupt cached file, hash mismatch, ...
        raise ModelError(f"could not load the pretrained {backbone} encoder weights ({fname}): {exc}") from exc
    inp = keras.Input((None, None, 1), name="slice")
    rgb = keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([inp, inp, inp])
    return keras.Model(inp, core(rgb), name=f"unet_{backbone}_imagenet")


def _pretrained_file_name(backbone: str) -> str:
    """File name under which segmentation-models caches the backbone's ImageNet weights."""
    if backbone.startswith("resnet"):
        return f"{backbone}_imagenet_1000_no_top.h5"
    if backbone.startswith("efficientnetb"):
        return f"efficientnet-b{backbone[-1]}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
    if backbone == "mobilenetv2":
        return "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    raise ConfigError(f"no ImageNet weights known for backbone {backbone!r}")


def _keras_cache_dirs() -> list[Path]:
    """Where ``keras.utils.get_file`` looks: ``$KERAS_HOME`` or ``~/.keras``, else ``/tmp/.keras``."""
    home = Path(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")))
    return [home, Path("/tmp/.keras")]


def plain_copy(model):
    """Uncompiled float32 copy of ``model`` with the same weights (what is saved).

    Saving a compiled model would store Adam's two extra copies of every weight and the
    training loss, which a user of the model never needs. A mixed-precision model is saved in
    float32 so that it predicts the same on every machine (bfloat16 is slow where the CPU
    lacks it); its variables are float32 already.
    """
    # from_config, not clone_model: cloning a compiled model also recompiles it, which needs
    # the (unregistered) loss functions.
    return to_precision(model, "float32")


def output_classes(model) -> int:
    """Number of output channels of a segmentation model."""
    return int(model.outputs[0].shape[-1])


# --------------------------------------------------------------------------------------------
# saving / loading


def save_model(model, path: str | os.PathLike, info: ModelInfo, overwrite: bool = True) -> Path:
    """Write ``path`` (``.keras``) and its JSON sidecar, both atomically.

    Both files are first written to temporary names in the same folder and then moved into
    place with ``os.replace``, so a crash or kill at any moment leaves either the previous or
    the new pair, never a truncated file. The sidecar records the SHA-256 of the model file so
    a mismatched pair is detected on load.

    Parameters
    ----------
    model : keras.Model
        Model to save; a compiled model is saved without its optimizer state, a
        mixed-precision one in float32 (:func:`plain_copy`).
    path : path-like
        Destination, must end in ``.keras``.
    info : ModelInfo
        Sidecar content; ``versions`` and ``created`` are filled in when empty.
    overwrite : bool
        Replace an existing file; ``OutputError`` when False and the file exists.

    Returns
    -------
    Path
        The ``.keras`` path.
    """
    path = check_target(path, overwrite, suffixes=(MODEL_SUFFIX,))
    if (getattr(model, "optimizer", None) is not None or model_precision(model) != "float32"
            or count_fused(model)):
        # No optimizer state; float32 (see plain_copy); standard Keras batch norms, so the file
        # loads anywhere Keras and segmentation-models do.
        model = to_precision(model, "float32", fused=False)
    n_out = output_classes(model)
    if n_out != info.n_classes:
        raise ModelError(f"model has {n_out} output classes but the info says n_classes={info.n_classes}")
    if not info.versions:
        info.versions = versions()
    if not info.created:
        info.created = datetime.now(timezone.utc).isoformat(timespec="seconds")

    side = sidecar_path(path)
    for target in (path, side):
        remove_stale_temps(target)
    # Nested so that the model is renamed into place first, then its sidecar (which records
    # the new model's checksum): an interruption between the two is detected on load.
    with atomic_write(side, overwrite=True) as tmp_side:
        with atomic_write(path, overwrite=overwrite) as tmp_model:
            model.save(tmp_model)
            sidecar = info.to_dict()
            sidecar["model_sha256"] = _sha256(tmp_model)
            tmp_side.write_text(json.dumps(jsonable(sidecar), indent=1, allow_nan=False), encoding="utf-8")
    return path


def load_model(path: str | os.PathLike, fused: bool = True):
    """Load a model artefact written by :func:`save_model`, in Keras safe mode.

    Parameters
    ----------
    path : path-like
        The ``.keras`` file; its ``.json`` sidecar must sit next to it. Or a bioimage.io model
        package (``.zip``) written by :func:`napari_sandseg.model_package.export_package`.
    fused : bool
        Return the model with fused batch norms (:mod:`napari_sandseg.fused_bn`): same
        results, faster prediction and training on CPU.

    Returns
    -------
    model : keras.Model
        Uncompiled model, ready for prediction (compile it again to train).
    info : ModelInfo
        The sidecar.

    Raises
    ------
    ModelError
        Missing or corrupt file or sidecar, a model that needs custom code (refused: loading
        it could run arbitrary code), or a sidecar that does not describe the model.
    """
    path = Path(path)
    from .model_package import is_package, load_package

    if is_package(path):  # a bioimage.io package written by model_package.export_package
        return load_package(path, fused=fused)
    _check_model_file(path)
    info, recorded_sha = _read_sidecar(path)
    with dtype_policy("float32"):  # saved models are float32, whatever policy the caller set
        model = _load_keras(path, info)
        if fused and not count_fused(model):
            model = fused_copy(model)
    n_out = output_classes(model)
    if n_out != info.n_classes:
        raise ModelError(
            f"{sidecar_path(path).name} says n_classes={info.n_classes} but {path.name} has {n_out} "
            "output channels; the sidecar belongs to another model"
        )
    if info.class_map.n_classes != info.n_classes:
        raise ModelError(
            f"{sidecar_path(path).name}: class map has {info.class_map.n_classes} classes but "
            f"n_classes={info.n_classes}; the sidecar does not belong to {path.name}: keep each .keras "
            "file with the .json written with it"
        )
    if recorded_sha and recorded_sha != _sha256(path):
        note = (
            f"{sidecar_path(path).name} was written for a different version of {path.name} "
            "(interrupted save?); history and metrics may be out of date"
        )
        warnings.warn(note, SandsegWarning, stacklevel=2)
        info.notes.append(note)
    return model, info


def read_info(path: str | os.PathLike) -> ModelInfo:
    """The sidecar of a model file, checked like :func:`load_model` does but without loading
    the model (no TensorFlow): for checks that should fail fast, before any slow work.

    Raises
    ------
    ModelError
        Missing or corrupt model file or sidecar.
    """
    path = Path(path)
    from .model_package import is_package, read_package_info

    if is_package(path):  # a bioimage.io package (see load_model)
        return read_package_info(path)
    _check_model_file(path)
    return _read_sidecar(path)[0]


def _check_model_file(path: Path) -> None:
    if not path.exists():
        raise ModelError(f"model file not found: {path}; expected a .keras file written by napari-sandseg")
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise ModelError(
            f"{path} is not a valid .keras model file (corrupt, truncated or another format); "
            "expected a .keras file written by napari-sandseg, with its .json sidecar beside it"
        )


def _read_sidecar(path: Path) -> tuple[ModelInfo, str | None]:
    side = sidecar_path(path)
    if not side.exists():
        raise ModelError(
            f"sidecar {side} is missing; a model needs the .json file written next to it "
            "(class map and normalisation), keep both files together"
        )
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = int(data.get("format_version", 0))
        info = ModelInfo.from_dict(data)
    except Exception as exc:  # JSON syntax, missing keys, wrong types
        raise ModelError(
            f"sidecar {side} is corrupt or incomplete ({exc}); restore the .json written with the model, "
            "or re-save the model"
        ) from exc
    if version > SIDECAR_FORMAT:
        raise ModelError(
            f"sidecar {side} has format version {version}; this napari-sandseg reads up to "
            f"{SIDECAR_FORMAT}: update napari-sandseg"
        )
    return info, data.get("model_sha256")


#: Phrases in Keras' safe-mode refusals and unknown-class errors.
_UNSAFE_HINTS = ("safe_mode", "arbitrary code", "lambda", "could not locate", "custom_objects", "register_keras_serializable")


def _load_keras(path: Path, info: ModelInfo):
    from ._tf import keras as _keras_module
    keras = _keras_module()

    from ._tf import sm

    sm()  # the backbone layers must be importable before deserialising
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc).lower()
        if any(h in text for h in _UNSAFE_HINTS):
            raise ModelError(
                f"{path} contains custom code (e.g. a Lambda layer or an unregistered custom "
                "layer) that cannot be loaded safely; refusing to run code from a model file. "
                "Only models built by napari-sandseg can be loaded"
            ) from exc
        first_error = exc
    # Keras could not rebuild the architecture from the file (e.g. a backbone whose config does
    # not round-trip): rebuild it from the sidecar and read only the weights, which runs no code.
    try:
        model = build_model(info.backbone, info.n_classes, None, fused=False)
        if info.config.get("precision", "float32") != "float32":
            model = _cast_output(model)  # saved in float32 but with the output cast layer
        model.load_weights(path)
    except Exception as exc:
        raise ModelError(f"{path} could not be loaded (corrupt or from an incompatible version): {first_error}") from exc
    return model


def check_compatible(info: ModelInfo, volume: np.ndarray | None = None, class_map: ClassMap | None = None) -> None:
    """Check that a model can be applied to ``volume`` / compared with masks of ``class_map``.

    Parameters
    ----------
    info : ModelInfo
        The model's sidecar.
    volume : ndarray, optional
        ``(Z, Y, X)`` or ``(Y, X)`` grayscale volume.
    class_map : ClassMap, optional
        Class map of masks the model will be compared with or fine-tuned on.

    Raises
    ------
    InputError
        Volume of the wrong shape or dtype, or whose intensities do not overlap the training
        range at all (e.g. 16-bit data for a model trained on 8-bit data).
    ModelError
        Class maps that differ.
    """
    if volume is not None:
        vol = np.asarray(volume) if not hasattr(volume, "shape") else volume
        if vol.ndim not in (2, 3):
            raise InputError(f"volume must be (Z, Y, X) or (Y, X) grayscale, got shape {tuple(vol.shape)}")
        if not (np.issubdtype(vol.dtype, np.integer) or np.issubdtype(vol.dtype, np.floating)):
            raise InputError(f"volume dtype {vol.dtype} is not numeric")
        if vol.size:
            step = max(1, vol.shape[0] // 16) if vol.ndim == 3 else 1
            sample = np.asarray(vol[::step] if vol.ndim == 3 else vol).reshape(-1)
            # At most ~1M voxels go to float64: 16 slices of 2048^2 would need 0.5 GB, twice.
            sample = sample[:: max(1, sample.size // 1_000_000)]
            lo, hi = np.percentile(sample.astype(np.float64), [0.5, 99.5])
            norm = info.normalization
            if hi < norm.low or lo > norm.high:
                raise InputError(
                    f"volume intensities ({lo:g}..{hi:g}) do not overlap the range the model was "
                    f"trained on ({norm.low:g}..{norm.high:g}); is this data of another bit depth "
                    "or scanner setting?"
                )
    if class_map is not None and tuple(class_map.values) != tuple(info.class_map.values):
        raise ModelError(
            f"class values {list(class_map.values)} do not match the model's "
            f"{list(info.class_map.values)}"
        )


# --------------------------------------------------------------------------------------------
# helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
