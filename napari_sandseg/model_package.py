"""bioimage.io model packages: export a napari-sandseg model as one, and read one back.

A package is the zip the bioimage.io ecosystem (ilastik, deepImageJ, QuPath, bioimageio.core)
exchanges: an ``rdf.yaml`` in the current 0.5 spec with weights, preprocessing, test tensors, a
cover and documentation. Ours also carries the napari-sandseg artefact itself, under fixed
names (:data:`WEIGHTS_NAME`, :data:`SIDECAR_NAME`), so ``load_model("M.zip")`` gives back the
exact model, class map and normalisation without reading the YAML.

Weights are ``keras_v3``: the ``.keras`` file napari-sandseg already writes. bioimageio.core
0.11 loads it with ``keras.models.load_model`` (safe mode, no code from the file runs) on the
installed TensorFlow/Keras 3. ``tensorflow_saved_model_bundle`` is not written: bioimageio.core
runs it through TensorFlow 1's ``tf.Session``, which TensorFlow 2 does not have; ``keras_hdf5``
is Keras 3's legacy format. ONNX is not written: it needs tf2onnx and onnx, not installed.

Export needs the optional ``bioimageio`` extra (``bioimageio.core``, which brings
``bioimageio.spec``); reading a package back needs nothing beyond napari-sandseg.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .choices import DEFAULT_TILE_HALO, SIZE_MULTIPLE
from .errors import ConfigError, ModelError
from .targets import MODEL_SUFFIX, check_target
from .units import VoxelSize

#: File name suffix of a model package.
PACKAGE_SUFFIX = ".zip"
#: Names of the napari-sandseg artefact inside a package (fixed, so reading needs no YAML).
WEIGHTS_NAME = "sandseg_model.keras"
SIDECAR_NAME = "sandseg_model.json"
#: Names a bioimage.io package may give its description.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Tensor ids in the description.
INPUT_ID, OUTPUT_ID = "raw", "probabilities"
#: Halo on the output's spatial axes: what tiled prediction discards at each inner tile border.
PACKAGE_HALO = DEFAULT_TILE_HALO
#: Smallest input side: a halo on each side plus one 32-pixel block of the Unet.
MIN_SIDE = 2 * PACKAGE_HALO + SIZE_MULTIPLE
#: Licence written when the user names none (the licence most bioimage.io models use).
DEFAULT_LICENSE = "CC-BY-4.0"
#: napari-sandseg's length units (:data:`napari_sandseg.units.UNITS`) as bioimage.io spells them.
SPEC_UNITS = {"nm": "nanometer", "um": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter"}
#: Key under the description's ``config`` holding what napari-sandseg needs to read it back.
CONFIG_KEY = "napari_sandseg"
#: How to get the optional dependencies of export and validation.
EXTRA_HINT = "install them with: pip install 'napari-sandseg[bioimageio]'"


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a model package (by its suffix; the content is checked on reading)."""
    return Path(path).suffix.lower() == PACKAGE_SUFFIX


# --------------------------------------------------------------------------------------------
# reading


@contextlib.contextmanager
def _unpacked(path: str | os.PathLike) -> Iterator[Path]:
    """The package's napari-sandseg artefact, extracted to a temp folder: yields its ``.keras`` path.

    Raises
    ------
    ModelError
        Not a zip file, not a bioimage.io package, or a package napari-sandseg did not write
        (the message names the missing members).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model package not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a zip file; expected a bioimage.io model package written by "
                         "'sandseg export-model'")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        missing = [n for n in (WEIGHTS_NAME, SIDECAR_NAME) if n not in names]
        if not any(n in names or any(m.endswith("." + n) for m in names) for n in RDF_NAMES):
            missing.insert(0, "rdf.yaml")
        if missing:
            raise ModelError(
                f"{path.name} is not a model package made by napari-sandseg: it lacks {', '.join(missing)} "
                f"({'the bioimage.io description, ' if 'rdf.yaml' in missing else ''}the napari-sandseg "
                "weights and their class map / normalisation sidecar); napari-sandseg loads only packages "
                "written by 'sandseg export-model' (or its Export for bioimage.io button)"
            )
        with tempfile.TemporaryDirectory(prefix="sandseg-package-") as tmp:
            for name in (WEIGHTS_NAME, SIDECAR_NAME):
                try:
                    zf.extract(name, tmp)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise ModelError(f"{path.name}: cannot read {name} ({exc}); the package is damaged") from exc
            yield Path(tmp) / WEIGHTS_NAME


def read_package_info(path: str | os.PathLike):
    """The :class:`~napari_sandseg.model.ModelInfo` of a package, without loading the model.

    Raises
    ------
    ModelError
        See :func:`load_package`.
    """
    from .model import read_info

    with _unpacked(path) as keras_file:
        return read_info(keras_file)


def load_package(path: str | os.PathLike, fused: bool = True):
    """Load the model of a package written by :func:`export_package`.

    Parameters
    ----------
    path : path-like
        The ``.zip`` package.
    fused : bool
        As in :func:`napari_sandseg.model.load_model`.

    Returns
    -------
    model : keras.Model
    info : ModelInfo

    Raises
    ------
    ModelError
        A file that is not a package napari-sandseg wrote (the message names what is missing),
        or a damaged one.
    """
    from .model import load_model

    with _unpacked(path) as keras_file:
        return load_model(keras_file, fused=fused)


def extract_package(path: str | os.PathLike, target: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a package's model as a plain artefact: ``target`` (.keras) and its ``.json`` sidecar.

    Both files are written atomically (see :func:`napari_sandseg.io.atomic_write`).

    Raises
    ------
    ModelError
        Not a package napari-sandseg wrote.
    OutputError
        ``target`` exists and ``overwrite`` is False, or cannot be written.
    """
    import shutil

    from .io import atomic_write
    from .model import sidecar_path

    target = check_target(target, overwrite, suffixes=(MODEL_SUFFIX,))
    with _unpacked(path) as keras_file:
        for src, dst in ((keras_file, target), (sidecar_path(keras_file), sidecar_path(target))):
            with atomic_write(dst, overwrite=overwrite) as tmp:
                shutil.copyfile(src, tmp)
    return target


# --------------------------------------------------------------------------------------------
# export


@dataclasses.dataclass
class PackageMetadata:
    """What the user says about a package (everything else comes from the model).

    Attributes
    ----------
    name : str or None
        Human-readable name (letters, digits, space, ``_+-()``; 5-128 characters); None
        derives one from the backbone.
    authors : tuple of str
        Author names, as they should be cited.
    license : str
        SPDX licence identifier of the weights (e.g. ``CC-BY-4.0``, ``MIT``).
    voxel_size : ((z, y, x), unit) or None
        Voxel size of the training data (:mod:`napari_sandseg.units`), when known; its y and x
        edges become the scale of the spatial axes. None, or a size in ``px``, writes none.
    """

    name: str | None = None
    authors: tuple[str, ...] = ()
    license: str = DEFAULT_LICENSE
    voxel_size: VoxelSize | None = None


def export_package(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    slice_index: int | None = None,
    metadata: PackageMetadata | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a napari-sandseg model as a bioimage.io model package (spec 0.5).

    Parameters
    ----------
    model_path : path-like
        The ``.keras`` model with its ``.json`` sidecar (or a package written by this function).
    out_path : path-like
        The package to write; must end in ``.zip``. Written atomically.
    images : path-like, optional
        Volume whose slice becomes the test input and the cover; default the bundled
        synthetic sandstone.
    slice_index : int, optional
        Which slice of ``images`` (default the middle one).
    metadata : PackageMetadata, optional
        Name, authors, licence, voxel size.
    overwrite : bool
        Replace an existing ``out_path``.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ConfigError
        Bad metadata (licence, name, author), a slice index out of range, or the
        bioimage.io libraries missing.
    ModelError, InputError, OutputError
        Unreadable model or image, or an output that cannot be written.
    """
    from .io import atomic_write

    meta = metadata or PackageMetadata()
    if meta.voxel_size is None and images is not None:
        from .units import read_voxel_size

        meta = dataclasses.replace(meta, voxel_size=read_voxel_size(images))  # None when the file has none
    out_path = check_target(out_path, overwrite, suffixes=(PACKAGE_SUFFIX,))  # before the slow work
    spec = _import_spec()
    _check_metadata(meta)
    with atomic_write(out_path, overwrite=overwrite) as tmp_zip, \
            tempfile.TemporaryDirectory(prefix="sandseg-export-") as tmp:
        model, info = _load_any(model_path)
        raw = _test_slice(images, slice_index, info)
        staging = Path(tmp)
        _stage_artefact(model, info, staging)
        descr = _describe(info, raw, meta, staging, model)
        try:
            spec.save_bioimageio_package(descr, output_path=tmp_zip)
        except ValueError as exc:  # the written description did not validate
            raise ModelError(f"{out_path.name}: the package did not pass bioimage.io validation: {exc}") from exc
    return out_path


def _check_metadata(meta: PackageMetadata) -> None:
    """Refuse metadata bioimage.io would reject, with the field named (before any slow work)."""
    from bioimageio.spec.generic.v0_3 import LicenseId

    try:
        LicenseId(meta.license)
    except ValueError:
        raise ConfigError(f"licence {meta.license!r} is not an SPDX licence identifier; use one such as "
                          f"{DEFAULT_LICENSE}, CC-BY-SA-4.0, CC0-1.0, MIT or BSD-3-Clause (https://spdx.org/licenses)") from None
    for author in meta.authors:
        if not author.strip() or "/" in author:
            raise ConfigError(f"author {author!r}: give a person's name (not empty, no '/')")


def _import_spec():
    """``bioimageio.spec``, or a :class:`ConfigError` saying how to install it."""
    try:
        import bioimageio.spec as spec
    except ImportError as exc:
        raise ConfigError(f"exporting a bioimage.io package needs bioimageio.spec and bioimageio.core; {EXTRA_HINT}") from exc
    return spec


def _load_any(model_path: str | os.PathLike):
    """``(model, info)`` of a ``.keras`` artefact or a package, in float32 with plain batch norms."""
    from .model import load_model

    return load_model(model_path, fused=False)


def _test_slice(images: str | os.PathLike | None, slice_index: int | None, info) -> np.ndarray:
    """A ``(MIN_SIDE, MIN_SIDE)`` float32 slice of raw grey values for the test tensors and cover.

    The slice is cut from the middle of the chosen image slice; a smaller slice is mirrored
    (symmetric padding at the bottom/right, as prediction pads) up to :data:`MIN_SIDE`.
    """
    from .bundled import bundled_sample_paths
    from .lazy import open_volume
    from .model import check_compatible

    path = Path(images) if images is not None else bundled_sample_paths()[0]
    volume = open_volume(path)
    n = volume.shape[0]
    index = n // 2 if slice_index is None else int(slice_index)
    if not 0 <= index < n:
        raise ConfigError(f"slice {index} is out of range: {path.name} has {n} slices (0..{n - 1})")
    raw = np.asarray(volume[index], dtype=np.float32)
    check_compatible(info, raw)
    h, w = raw.shape
    top, left = max(0, (h - MIN_SIDE) // 2), max(0, (w - MIN_SIDE) // 2)
    raw = raw[top : top + MIN_SIDE, left : left + MIN_SIDE]
    pad = [(0, MIN_SIDE - raw.shape[0]), (0, MIN_SIDE - raw.shape[1])]
    return np.pad(raw, pad, mode="symmetric") if any(p for _, p in pad) else raw


def _stage_artefact(model, info, staging: Path) -> None:
    """Write the napari-sandseg artefact under its package names (:data:`WEIGHTS_NAME`, ...)."""
    from .model import save_model

    save_model(model, staging / WEIGHTS_NAME, info)


def _probabilities(model, info, raw: np.ndarray) -> np.ndarray:
    """``(1, Y, X, K)`` float32 class probabilities of one slice, by ``sandseg predict``'s path."""
    from .predict import predict_volume

    result = predict_volume(model, raw[None], info, probabilities=True, precision="float32")
    return result.probabilities


def _cover(raw: np.ndarray, labels: np.ndarray, info) -> np.ndarray:
    """RGB uint8 cover, 2:1: the slice, and the segmentation over it in the class colours."""
    grey = np.clip(info.normalization.apply(raw), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    colours = np.asarray([c[:3] for c in info.class_map.colors], np.float32)
    overlay = 0.55 * rgb + 0.45 * colours[labels]
    return (np.concatenate([rgb, overlay], axis=1) * 255).round().astype(np.uint8)


def _describe(info, raw: np.ndarray, meta: PackageMetadata, staging: Path, model):
    """The :class:`bioimageio.spec.model.v0_5.ModelDescr` of the staged artefact."""
    import imageio.v3 as iio
    import tifffile
    from bioimageio.spec.model import v0_5

    from ._tf import keras as _keras_module
    from ._tf import tf
    from .io import jsonable

    probs = _probabilities(model, info, raw)
    x = raw[None, :, :, None].astype(np.float32)
    np.save(staging / "test_input.npy", x)
    np.save(staging / "test_output.npy", probs)
    # sample tensors: the same arrays as images for people and viewers (imageio reads TIFF)
    tifffile.imwrite(staging / "sample_input.tif", x)
    tifffile.imwrite(staging / "sample_output.tif", probs)
    iio.imwrite(staging / "cover.png", _cover(raw, probs[0].argmax(-1), info))
    (staging / "README.md").write_text(documentation(info, meta), encoding="utf-8")

    norm, cmap = info.normalization, info.class_map
    known = meta.voxel_size is not None and meta.voxel_size[1] in SPEC_UNITS
    (_, dy, dx), unit = meta.voxel_size if known else ((1.0, 1.0, 1.0), "px")
    scale = {"y": {"scale": dy, "unit": SPEC_UNITS[unit]}, "x": {"scale": dx, "unit": SPEC_UNITS[unit]}} if known else {}
    gain = 1.0 / (norm.high - norm.low)

    def space_in(axis: str):
        return v0_5.SpaceInputAxis(id=v0_5.AxisId(axis), size=v0_5.ParameterizedSize(min=MIN_SIDE, step=SIZE_MULTIPLE),
                                   **scale.get(axis, {}))

    def space_out(axis: str):
        return v0_5.SpaceOutputAxisWithHalo(
            id=v0_5.AxisId(axis), halo=PACKAGE_HALO,
            size=v0_5.SizeReference(tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId(axis)),
            **scale.get(axis, {}),
        )

    source = v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description="one grey slice, raw intensities (any bit depth; side a multiple of 32, at least "
                    f"{MIN_SIDE} px)",
        axes=[v0_5.BatchAxis(), space_in("y"), space_in("x"), v0_5.ChannelAxis(channel_names=["grey"])],
        test_tensor=v0_5.FileDescr(source=staging / "test_input.npy"),
        sample_tensor=v0_5.FileDescr(source=staging / "sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        pad=v0_5.ReflectPadding(),  # how napari-sandseg pads slices (to multiples of 32)
        preprocessing=[
            v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
            # the training statistics as a fixed gain/offset: low -> 0, high -> 1
            v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=gain, offset=-norm.low * gain)),
        ],
    )
    target = v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description="softmax class probabilities; label = class value of the argmax channel "
                    f"({', '.join(f'{n}={v}' for n, v in zip(cmap.names, cmap.values))})"[:128],
        axes=[v0_5.BatchAxis(), space_out("y"), space_out("x"), v0_5.ChannelAxis(channel_names=list(cmap.names))],
        test_tensor=v0_5.FileDescr(source=staging / "test_output.npy"),
        sample_tensor=v0_5.FileDescr(source=staging / "sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    keras = _keras_module()
    weights = v0_5.WeightsDescr(keras_v3=v0_5.KerasV3WeightsDescr(
        source=staging / WEIGHTS_NAME, keras_version=v0_5.Version(keras.__version__),
        backend=("tensorflow", v0_5.Version(tf().__version__)),
    ))
    config = v0_5.Config(
        bioimageio=v0_5.BioimageioConfig(
            architecture_type="U-Net",
            architecture_description=f"segmentation-models Unet, {info.backbone} encoder, {info.n_classes}-class softmax",
            modality="X-ray micro-CT", task="semantic segmentation", target_structure=list(cmap.names),
            model_parameter_count=int(model.count_params()),
        ),
        **{CONFIG_KEY: {
            "weights": WEIGHTS_NAME, "sidecar": SIDECAR_NAME, "class_values": list(cmap.values),
            "class_names": list(cmap.names), "normalization": norm.to_dict(), "tile_halo": PACKAGE_HALO,
            "training_config": jsonable(info.config),  # plain types: the YAML writer refuses numpy and NaN
        }},
    )
    fields: dict[str, Any] = dict(
        name=meta.name or f"napari-sandseg {info.backbone} Unet micro-CT",
        description=description(info),
        authors=[v0_5.Author(name=a.strip()) for a in meta.authors],
        license=meta.license,
        cite=[v0_5.CiteEntry(text="Ronneberger et al. U-Net: Convolutional Networks for Biomedical Image "
                                  "Segmentation (MICCAI 2015)", doi=v0_5.Doi("10.1007/978-3-319-24574-4_28"))],
        tags=["napari-sandseg", "semantic-segmentation", "micro-ct", "rock", "unet", "2d", "keras", "tensorflow"],
        documentation=v0_5.FileDescr(source=staging / "README.md"),
        covers=[v0_5.FileDescr(source=staging / "cover.png")],
        attachments=[v0_5.FileDescr(source=staging / SIDECAR_NAME)],
        inputs=[source], outputs=[target], weights=weights, config=config,
    )
    try:
        return v0_5.ModelDescr(**fields)
    except ValueError as exc:  # pydantic's ValidationError: name the offending fields
        raise ConfigError(f"the package description is not valid bioimage.io: {_short_errors(exc)}") from exc


def _short_errors(exc: ValueError) -> str:
    """pydantic errors as ``field: message; ...`` (the licence or name a user typed, mostly)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'][:160]}" for e in errors()[:5])




def _recipe(config: dict[str, Any]) -> str:
    """One line of the training recipe from a saved ``TrainConfig``."""
    keys = ("backbone", "encoder_weights", "epochs", "batch_size", "optimizer", "learning_rate", "lr_schedule",
            "loss", "augment", "crop_size", "crops_per_epoch")
    return ", ".join(f"{k}={config[k]}" for k in keys if k in config)


def description(info) -> str:
    """The package's ``description`` (at most 512 characters): task, input, output, recipe."""
    cmap = info.class_map
    epochs = len(info.history.get("loss", []))
    text = (
        f"Semantic segmentation of X-ray micro-CT rock slices into {cmap.n_classes} phases "
        f"({', '.join(cmap.names)}); a Unet ({info.backbone}) trained with napari-sandseg"
        f"{f' for {epochs} epochs' if epochs else ''}. Output: class probabilities; the label is the "
        f"argmax channel's class value. Tile with a {PACKAGE_HALO}-pixel halo. Recipe (all of it in the "
        f"documentation): {_recipe(info.config)}"
    )
    return text if len(text) <= 512 else text[:509] + "..."


def documentation(info, meta: PackageMetadata) -> str:
    """The package's README.md: how to use the model and how it was trained."""
    cmap, norm = info.class_map, info.normalization
    lines = [
        f"# {meta.name or f'napari-sandseg {info.backbone} Unet micro-CT'}",
        "",
        "Semantic segmentation of X-ray micro-CT slices of rock, exported by napari-sandseg "
        f"{info.versions.get('napari_sandseg', '')} (`sandseg export-model`).",
        "",
        "## Use",
        f"- Input `{INPUT_ID}`: one grey slice `(batch, y, x, 1)` of raw intensities. Preprocessing scales them "
        f"linearly with the training statistics: {norm.low:g} -> 0, {norm.high:g} -> 1 (not clipped).",
        f"- Spatial sides: a multiple of {SIZE_MULTIPLE} pixels, at least {MIN_SIDE}. napari-sandseg pads "
        "smaller or odd-sized slices by reflection at the bottom/right and crops the output back.",
        f"- Output `{OUTPUT_ID}`: `(batch, y, x, {cmap.n_classes})` softmax probabilities (the softmax is part of "
        "the network). The label of a pixel is the class value of the most probable channel:",
        "",
        "| channel | class | value |",
        "|---|---|---|",
        *[f"| {i} | {n} | {v} |" for i, (n, v) in enumerate(zip(cmap.names, cmap.values))],
        "",
        f"- Tiling: discard a {PACKAGE_HALO}-pixel halo at inner tile borders (what napari-sandseg's tiled "
        "prediction does; predictions then match whole-slice ones).",
    ]
    if meta.voxel_size is not None and meta.voxel_size[1] != "px":
        (_, dy, dx), unit = meta.voxel_size
        lines.append(f"- Pixel size of the training data: {dy:g} x {dx:g} {unit} (y, x).")
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(info.config.items())]
    hist = info.history
    if hist.get("loss"):
        lines += ["", f"Trained for {len(hist['loss'])} epochs; last loss {hist['loss'][-1]:.4f}"
                  + (f", last val_loss {hist['val_loss'][-1]:.4f}" if hist.get("val_loss") else "") + "."]
    metrics = info.metrics or {}
    if metrics.get("per_class_iou") is not None:
        lines += ["", "## Held-out test slices", "", "| class | IoU |", "|---|---|"]
        lines += [f"| {n} | {_fmt(v)} |" for n, v in zip(cmap.names, metrics["per_class_iou"])]
        lines.append(f"| mean | {_fmt(metrics.get('mean_iou'))} |")
    lines += [
        "", "## Validation", "",
        f"The test output is what `sandseg predict` computes (float32, whole slice) on the test input, a "
        f"{MIN_SIDE} x {MIN_SIDE} crop of a slice (mirrored at the bottom/right when the slice is smaller). "
        "Check the package with `bioimageio test <package>` (bioimageio.core).",
    ]
    if info.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in info.notes]]
    lines += ["", "## Versions", "", *[f"- {k} {v}" for k, v in sorted(info.versions.items())], ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{float(value):.3f}"


# --------------------------------------------------------------------------------------------
# validation


@dataclasses.dataclass
class PackageCheck:
    """Outcome of :func:`validate_package`.

    Attributes
    ----------
    status : str
        bioimage.io's overall status: ``"passed"``, ``"valid-format"`` (the format is valid
        but a test failed) or ``"failed"``.
    summary : str
        bioimage.io's validation summary as plain text (the table its tools print).
    """

    status: str
    summary: str

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return self.status == "passed"


def validate_package(path: str | os.PathLike, test: bool = True) -> PackageCheck:
    """Check a package with the reference tools: the spec's validation, then bioimageio.core's model test.

    The model test runs the package on its test input (for several input sizes and batch
    sizes) and compares with its test output.

    Parameters
    ----------
    path : path-like
        The package.
    test : bool
        Also run the model test (loads TensorFlow and the model); else only the spec's
        static validation.

    Raises
    ------
    ConfigError
        The bioimage.io libraries are not installed.
    """
    from ._tf import tf

    if test:
        tf()  # TensorFlow only through _tf; bioimageio.core's Keras backend imports it by name
        # (KERAS_BACKEND=tensorflow, which bioimageio.core reads, is set by the package's __init__)
    try:
        from loguru import logger

        import bioimageio.spec as spec
        if test:
            import bioimageio.core as core
    except ImportError as exc:
        raise ConfigError(f"validating a bioimage.io package needs bioimageio.spec and bioimageio.core; {EXTRA_HINT}") from exc
    from ._tf import keras as _keras_module

    keras = _keras_module().utils if test else None
    logger.disable("bioimageio")  # its progress logging; the summary says what matters
    if keras is not None:
        keras.disable_interactive_logging()  # Keras' per-call progress bars from its model.predict
    try:
        if test:
            summary = core.test_model(Path(path))
        else:
            summary = spec.load_description(Path(path), format_version="latest").validation_summary
    finally:
        logger.enable("bioimageio")
        if keras is not None:
            keras.enable_interactive_logging()
    return PackageCheck(status=str(summary.status), summary=_without_conda(summary.format_md()))


def _without_conda(text: str) -> str:
    """The summary without its conda environment sections (a pip install has no conda to compare)."""
    lines = text.split("\n### Recommended Conda Environment")[0].splitlines()
    kept, skip = [], False
    for line in lines:
        first = line.split("|")[1].strip() if line.startswith("|") and line.count("|") > 2 else None
        if first:  # a row that starts a new entry
            skip = False
        if "conda" in line.lower():
            skip = True
        if not skip:
            kept.append(line)
    return "\n".join(kept).rstrip() + "\n"

