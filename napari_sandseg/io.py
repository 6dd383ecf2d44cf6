"""Read and write TIFF volumes, masks and label stacks.

Everything a user hands us passes through here, so this module validates at the boundary:
every problem a user can fix raises :class:`~napari_sandseg.errors.InputError` (reading) or
:class:`~napari_sandseg.errors.OutputError` (writing) with a message that names the file, the
problem and what would be valid. Writes are atomic: a temp file in the target folder is
renamed over the target with :func:`os.replace`, so a crash or a full disk never leaves a
half-written file where the user's result (or their previous result) should be.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import lzma
import math
import os
import re
import secrets
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
import tifffile

from .classmap import MAX_CLASSES, ClassMap, check_integer_valued
from .errors import ConfigError, InputError, OutputError, SandsegError
from .targets import check_target, not_writable

PathLike = Union[str, "os.PathLike[str]"]

#: File name endings read as TIFF when a folder of slices is given.
TIFF_SUFFIXES = (".tif", ".tiff")

#: Compression names :func:`write_volume` accepts (zlib needs no extra codec package).
COMPRESSIONS = (None, "zlib")

#: Image data above this many bytes is written as BigTIFF. Classic TIFF stores every offset as
#: an unsigned 32-bit integer (TIFF 6.0), so a classic file ends at 4 GiB; the 32 MiB margin
#: leaves room for the page headers and tags written after the pixels. The same rule tifffile
#: applies on its own, and BigTIFF below it would only shut out old readers for nothing.
BIGTIFF_THRESHOLD = 2**32 - 2**25

# The first bytes of the formats people most often hand us by mistake, to say what the file is.
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_OTHER_MAGICS = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"BM": "a BMP image",
    b"\x93NUMPY": "a NumPy .npy file",
    b"PK\x03\x04": "a ZIP archive (or .npz/.keras file)",
    b"\x89HDF": "an HDF5 file",
}

_VALID_INPUT = (
    "a grayscale multi-page TIFF stack (Z, Y, X), a single 2D TIFF, "
    "or a folder of single-slice TIFFs"
)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_volume(path: PathLike, *, rgb_as_slices: bool = False) -> np.ndarray:
    """Read a grayscale volume as a ``(Z, Y, X)`` array in the file's dtype.

    Parameters
    ----------
    path : str or path-like
        A multi-page TIFF stack, a single 2D TIFF (returned as ``(1, Y, X)``), or a folder of
        single-slice TIFFs read in natural sort order (``slice2.tif`` before ``slice10.tif``).
    rgb_as_slices : bool
        Read a single-page TIFF tagged as planar RGB(A), shape ``(3 or 4, Y, X)``, as that
        many slices. tifffile writes a stack of 3 or 4 slices that way unless told
        ``photometric="minisblack"``. Interleaved ``(Y, X, 3)`` colour is refused regardless.

    Returns
    -------
    ndarray
        ``(Z, Y, X)`` array; integer, unsigned, float and bool dtypes are kept as stored.

    Raises
    ------
    InputError
        If the path is missing, empty, not a TIFF, truncated or corrupt (any codec), compressed
        with a codec this installation lacks, RGB/multichannel, not 2D/3D, holds NaN/Inf, or
        (for a folder) holds no TIFFs or slices that differ in shape or dtype.
    """
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, rgb_as_slices)
    volume = _read_tiff_file(path, rgb_as_slices)
    _check_finite(volume, path.name)
    return volume


def read_volume_lazy(path: PathLike, *, rgb_as_slices: bool = False) -> np.ndarray:
    """Open a volume without loading it: a read-only memory map where the file allows it.

    An uncompressed TIFF whose pages are stored contiguously (what :func:`write_volume`
    writes without compression) is memory-mapped, so volumes bigger than RAM can be streamed
    slab by slab. Anything else (compressed, tiled, a folder) falls back to
    :func:`read_volume` and is loaded into memory.

    Parameters
    ----------
    path : str or path-like
        Same inputs as :func:`read_volume`.
    rgb_as_slices : bool
        As in :func:`read_volume`.

    Returns
    -------
    ndarray
        ``(Z, Y, X)`` :class:`numpy.memmap` (read-only) or in-memory array.

    Raises
    ------
    InputError
        Same cases as :func:`read_volume`.
    """
    path = Path(path)
    if path.is_dir():
        return read_volume(path, rgb_as_slices=rgb_as_slices)
    _check_tiff_file(path)
    with _open_tiff(path) as tif:
        series = tif.series[0]
        shape = _volume_shape(series, path.name, rgb_as_slices)
        mappable = series.dataoffset is not None
    if not mappable:
        return read_volume(path, rgb_as_slices=rgb_as_slices)
    volume = tifffile.memmap(path, mode="r").reshape(shape)
    _check_finite(volume, path.name)
    return volume


def read_mask(
    path: PathLike, class_map: ClassMap | None = None, *, rgb_as_slices: bool = False
) -> tuple[np.ndarray, ClassMap]:
    """Read a label mask and map its values to contiguous class ids.

    Parameters
    ----------
    path : str or path-like
        Mask file or folder, in any layout :func:`read_volume` accepts.
    class_map : ClassMap, optional
        Expected classes (e.g. the ones a model was trained on). When omitted, the classes
        are the distinct values found in the mask, ascending.
    rgb_as_slices : bool
        As in :func:`read_volume`.

    Returns
    -------
    ids : ndarray
        ``(Z, Y, X)`` uint8 class ids ``0..K-1``.
    class_map : ClassMap
        The mapping from ids back to the mask's original values.

    Raises
    ------
    InputError
        For any :func:`read_volume` problem, fractional values, too many distinct values, or
        (with ``class_map``) values outside the class map.
    """
    path = Path(path)
    mask = read_volume(path, rgb_as_slices=rgb_as_slices)
    source = path.name
    check_integer_valued(mask, source)
    if class_map is None:
        n_values = np.unique(mask).size
        if n_values > MAX_CLASSES:
            raise InputError(
                f"{source}: {n_values} distinct values; a mask holds at most {MAX_CLASSES} "
                "class values (is this the image rather than the mask?)"
            )
        class_map = ClassMap.from_mask(mask, source=source)
    ids = class_map.encode(mask, source=source)
    return ids, class_map


def check_pair(
    images: np.ndarray,
    masks: np.ndarray,
    image_source: str = "images",
    mask_source: str = "masks",
) -> None:
    """Check that an image volume and its mask have the same shape.

    Raises
    ------
    InputError
        Naming both sources and shapes when they differ.
    """
    if tuple(images.shape) != tuple(masks.shape):
        raise InputError(
            f"{image_source} has shape {tuple(images.shape)} but {mask_source} has shape "
            f"{tuple(masks.shape)}; an image volume and its mask must have the same (Z, Y, X) shape"
        )


def _read_folder(folder: Path, rgb_as_slices: bool = False) -> np.ndarray:
    """Stack the single-slice TIFFs of ``folder`` in natural sort order."""
    files = _list_tiffs(folder)
    first = _read_slice_file(files[0], folder, rgb_as_slices)
    volume = np.empty((len(files),) + first.shape, dtype=first.dtype)
    volume[0] = first
    for z, file in enumerate(files[1:], start=1):
        plane = _read_slice_file(file, folder, rgb_as_slices)
        if plane.shape != first.shape or plane.dtype != first.dtype:
            raise InputError(
                f"{folder}: slice {file.name} is {plane.shape[0]}x{plane.shape[1]} {plane.dtype} "
                f"but {files[0].name} is {first.shape[0]}x{first.shape[1]} {first.dtype}; "
                "all slices in a folder must have the same size and dtype"
            )
        volume[z] = plane
    return volume


def _list_tiffs(folder: Path) -> list[Path]:
    """The folder's TIFF files, naturally sorted; ``InputError`` when there are none."""
    from natsort import natsorted  # only folder reads need it

    entries = [p for p in folder.iterdir() if p.is_file()]
    # "._name.tif" files are macOS resource forks, not images; other dot files are never slices.
    tiffs = [p for p in entries if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")]
    if not entries:
        raise InputError(f"{folder}: the folder is empty; expected {_VALID_INPUT}")
    if not tiffs:
        raise InputError(
            f"{folder}: no .tif/.tiff files among its {len(entries)} files; expected {_VALID_INPUT}"
        )
    return natsorted(tiffs, key=lambda p: p.name)


def _read_slice_file(file: Path, folder: Path, rgb_as_slices: bool = False) -> np.ndarray:
    """One slice of a folder as a 2D array, refusing stacks (a stray images.tif, say)."""
    # With rgb_as_slices a planar RGB file reads as 3 slices and is refused below as a stack.
    volume = _read_tiff_file(file, rgb_as_slices)
    if volume.shape[0] != 1:
        raise InputError(
            f"{folder}: {file.name} holds {volume.shape[0]} slices; a folder must hold "
            "single-slice TIFFs only (to read a stack, pass the stack file itself)"
        )
    _check_finite(volume, file.name)
    return volume[0]


def _read_tiff_file(path: Path, rgb_as_slices: bool = False) -> np.ndarray:
    """Read one TIFF file as ``(Z, Y, X)``, with every check but the NaN/Inf one."""
    _check_tiff_file(path)
    with _open_tiff(path) as tif:
        series = tif.series[0]
        shape = _volume_shape(series, path.name, rgb_as_slices)
        # Reading everything at once, a short read surfaces as a structure error too.
        with _tifffile_problems(path), decoding(path.name, also=_STRUCTURE_ERRORS):
            data = series.asarray()
    return data.reshape(shape)


@functools.cache
def decode_errors() -> tuple[type[Exception], ...]:
    """The exceptions that decoding damaged image data raises, whichever codec decodes it.

    tifffile decodes with imagecodecs when it is installed (each codec has its own error
    class), else with Python's :mod:`zlib` and :mod:`lzma` (and ``compression.zstd`` from
    Python 3.14), whose errors derive from nothing more specific than ``Exception``; tifffile
    raises ``TiffFileError`` for a strip that decodes to the wrong size, and zarr stores' codecs
    a plain ``RuntimeError`` (zstd, blosc) or ``gzip.BadGzipFile``. Built on first use because
    listing imagecodecs' classes loads its codec modules.

    Returns
    -------
    tuple of exception classes
        For an ``except`` clause; :func:`decoding` is the one place that uses it.
    """
    import gzip

    errors: list[type[Exception]] = [
        zlib.error, lzma.LZMAError, gzip.BadGzipFile, tifffile.TiffFileError, RuntimeError
    ]
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
    except ImportError:
        pass
    else:
        errors.append(zstd.ZstdError)
    try:
        import imagecodecs
    except ImportError:
        return tuple(errors)
    for name in getattr(imagecodecs, "__all__", ()):
        if not name.endswith("Error"):
            continue
        try:
            cls = getattr(imagecodecs, name)
        except (ImportError, AttributeError):  # a codec left out of this imagecodecs build
            continue
        # DelayedImportError (an ImportError) means a missing codec, not damaged data.
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, ImportError):
            errors.append(cls)
    return tuple(dict.fromkeys(errors))


@contextlib.contextmanager
def decoding(name: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn a failure to decode image data inside the block into an ``InputError`` naming ``name``.

    Wrap every read of pixel data with it (whole files here, slabs in :mod:`napari_sandseg.lazy`),
    so a damaged file gives one message whatever codec and code path read it.

    Parameters
    ----------
    name : str
        The file, folder or store the data comes from, as the message names it.
    also : tuple of exception classes
        Further exceptions that mean damaged data in this block. The whole-file reader adds
        tifffile's short-read errors; slab reads add none, so an indexing bug keeps its traceback.

    Raises
    ------
    InputError
        "truncated or corrupt" for damaged data; "cannot decode" when a codec module is missing.
    """
    try:
        yield
    except SandsegError:
        raise  # already says what is wrong (InputError is a ValueError, which ``also`` may hold)
    except ImportError as exc:
        # tifffile's fallback codecs import their module only when called (zstd before Python 3.14).
        raise _missing_codec(name, str(exc)) from exc
    except (*decode_errors(), *also) as exc:
        raise InputError(
            f"{name}: the image data is truncated or corrupt ({exc}); re-export or re-copy the file"
        ) from exc


def _missing_codec(name: str, detail: str) -> InputError:
    """The one message for data this installation has no decoder for."""
    return InputError(
        f"{name}: cannot decode the image data ({detail}); install the imagecodecs package "
        "(pip install imagecodecs) or re-save the file uncompressed or with zlib compression"
    )


def _check_codecs(page: tifffile.TiffPage, name: str) -> None:
    """Refuse data whose compression or predictor has no decoder here (LZW, JPEG, ... without imagecodecs).

    tifffile would only say so when a page is decoded, as a ``ValueError`` that reads like damage.
    """
    for table, key in ((tifffile.TIFF.DECOMPRESSORS, page.compression), (tifffile.TIFF.UNPREDICTORS, page.predictor)):
        if key == 1:  # none
            continue
        try:
            table[key]  # resolves the codec; KeyError says which package is missing
        except KeyError as exc:
            raise _missing_codec(name, str(exc.args[0] if exc.args else exc)) from exc


def _check_tiff_file(path: Path) -> None:
    """Existence, non-emptiness and TIFF signature, checked before tifffile sees the file."""
    if not path.exists():
        raise InputError(f"{path}: file not found; expected {_VALID_INPUT}")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; expected {_VALID_INPUT}")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes); expected {_VALID_INPUT}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] in _TIFF_MAGICS:
        return
    what = next((name for magic, name in _OTHER_MAGICS.items() if head.startswith(magic)), None)
    found = f"it looks like {what}" if what else "it does not start with a TIFF header"
    raise InputError(f"{path.name}: not a TIFF file ({found}); expected {_VALID_INPUT}")


@contextlib.contextmanager
def _open_tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    """Open with tifffile, turning structural damage into ``InputError``."""
    with _tifffile_problems(path):
        try:
            tif = tifffile.TiffFile(path)
        except _STRUCTURE_ERRORS as exc:
            raise _corrupt(path, exc) from exc
    with tif:
        with _tifffile_problems(path):
            try:
                _check_pages(tif, path)  # reads every page header and builds the series
            except _STRUCTURE_ERRORS as exc:
                raise _corrupt(path, exc) from exc
        _check_codecs(tif.series[0].keyframe, path.name)
        yield tif


# What tifffile raises on damaged headers, depending on where the damage is.
_STRUCTURE_ERRORS = (tifffile.TiffFileError, ValueError, IndexError, EOFError, OSError, struct.error)


def _corrupt(path: Path, exc: Exception) -> InputError:
    return InputError(
        f"{path.name}: the TIFF structure is truncated or corrupt ({exc}); re-export or re-copy the file"
    )


class _WarningCollector(logging.Handler):
    """Collect tifffile's log warnings: it reports damaged files there and reads on regardless."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_problems(path: Path) -> Iterator[None]:
    """Raise ``InputError`` if tifffile logs a warning about ``path`` inside the block.

    tifffile recovers from a bad page offset by silently dropping the pages after it, which
    would hand the user a shorter volume than the file claims; we refuse instead.
    """
    logger = logging.getLogger("tifffile")
    collector = _WarningCollector()
    logger.addHandler(collector)
    try:
        yield
    finally:
        logger.removeHandler(collector)
    damage = [m for m in collector.messages if any(w in m for w in ("invalid", "corrupt", "failed", "truncat"))]
    if damage:
        raise InputError(
            f"{path.name}: the TIFF is truncated or corrupt ({damage[0].strip()}); "
            "re-export or re-copy the file"
        )


def _check_pages(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse files whose pages point past the end of the file (a cut-off download or copy)."""
    size = path.stat().st_size
    series = tif.series[0] if tif.series else None
    if series is not None and len(tif.series) == 1 and series.dataoffset is not None:
        # Contiguous data (what we write): one range check instead of parsing every page,
        # plus a walk of the page chain to the last page, whose header sits after the data.
        last_page = tif.pages[series.size // max(1, series.keyframe.size) - 1]
        if last_page is None or tuple(last_page.shape) != tuple(series.keyframe.shape):
            raise InputError(f"{path.name}: the last page is damaged; re-export or re-copy the file")
        end = series.dataoffset + series.nbytes
        if end > size:
            raise InputError(
                f"{path.name}: truncated: the image data needs {end} bytes but the file has "
                f"{size}; re-export or re-copy the file"
            )
        return
    for index, page in enumerate(tif.pages):
        offsets = getattr(page, "dataoffsets", ())
        counts = getattr(page, "databytecounts", ())
        ends = [o + c for o, c in zip(offsets, counts) if c]
        if ends and max(ends) > size:
            raise InputError(
                f"{path.name}: truncated: page {index} needs {max(ends)} bytes but the file has "
                f"{size}; re-export or re-copy the file"
            )
    if not tif.series:
        raise InputError(f"{path.name}: the TIFF holds no image; expected {_VALID_INPUT}")
    if len(tif.series) > 1:
        # tifffile splits pages of different sizes into several series; reading only the first
        # would silently drop slices.
        shapes = ", ".join(str(tuple(s.shape)) for s in tif.series[:4])
        raise InputError(
            f"{path.name}: holds {len(tif.series)} images of different shapes ({shapes}); "
            "expected one stack whose slices all have the same size"
        )


def _volume_shape(series: tifffile.TiffPageSeries, name: str, rgb_as_slices: bool = False) -> tuple[int, int, int]:
    """The ``(Z, Y, X)`` shape of a tifffile series, refusing colour and 4D+ data.

    With ``rgb_as_slices`` a single planar RGB(A) page, ``(3 or 4, Y, X)``, is taken as that many
    slices (see :func:`read_volume`).
    """
    shape, axes = tuple(series.shape), str(series.axes)
    # Leading length-1 axes (a (1, Z, Y, X) hyperstack, say) carry no data: drop them.
    while len(shape) > 3 and shape[0] == 1:
        shape, axes = shape[1:], axes[1:]
    # 'S' = samples per pixel (RGB/RGBA or interleaved channels), 'C' = ImageJ/OME channels.
    if "S" in axes:
        return _samples_shape(series.keyframe, shape, axes, name, rgb_as_slices)
    if "C" in axes:
        raise InputError(
            f"{name}: RGB/multichannel image (shape {shape}, axes {axes}); expected a single "
            "grayscale channel: convert to grayscale (or save one channel) first"
        )
    if len(shape) == 2:
        return (1,) + shape
    if len(shape) == 3:
        if shape[-1] in (3, 4) and series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB:
            raise InputError(
                f"{name}: RGB image (shape {shape}); expected a single grayscale channel: "
                "convert to grayscale first"
            )
        return shape  # type: ignore[return-value]
    if shape[-1] in (3, 4):
        raise InputError(
            f"{name}: {len(shape)}D data with a trailing colour/channel axis (shape {shape}); "
            "expected a 3D (Z, Y, X) grayscale stack: convert to grayscale first"
        )
    raise InputError(
        f"{name}: {len(shape)}D data (shape {shape}, axes {axes}); expected a 2D image or a "
        "3D (Z, Y, X) stack: save one time point / channel as a grayscale stack"
    )


def _samples_shape(
    page: tifffile.TiffPage, shape: tuple[int, ...], axes: str, name: str, rgb_as_slices: bool
) -> tuple[int, int, int]:
    """Pages with several samples per pixel: planar ``(S, Y, X)`` may be slices, the rest is colour."""
    samples = int(page.samplesperpixel)
    photometric = getattr(page.photometric, "name", page.photometric)  # an int if tifffile does not know it
    tagged = f"{photometric} with {samples} samples per pixel (shape {shape})"
    if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and axes == "SYX":
        # Each sample is stored as a whole plane, just like a slice: tifffile.imwrite writes a
        # (3, Y, X) or (4, Y, X) stack this way unless told photometric="minisblack".
        if rgb_as_slices:
            return shape  # type: ignore[return-value]
        raise InputError(
            f"{name}: tagged as planar {tagged}; if these are {samples} slices, save them with "
            'photometric="minisblack" (tifffile) or read them as slices (sandseg --rgb-as-slices, '
            "rgb_as_slices=True in Python); if it is a colour image, convert it to grayscale first"
        )
    layout = "interleaved" if page.planarconfig == tifffile.PLANARCONFIG.CONTIG else "planar"
    raise InputError(
        f"{name}: a colour/multichannel image, tagged as {layout} {tagged}, axes {axes}; expected a "
        "single grayscale channel: convert to grayscale (or save one channel) first"
        + ("; reading RGB as slices applies only to a single planar page" if rgb_as_slices else "")
    )


def _check_finite(volume: np.ndarray, name: str) -> None:
    """Refuse NaN/Inf, slice by slice so a big float volume needs no full-size temp mask."""
    if not np.issubdtype(volume.dtype, np.floating):
        return
    for z in range(volume.shape[0]):
        plane = volume[z]
        if not np.isfinite(plane).all():
            n_bad = int(np.count_nonzero(~np.isfinite(plane)))
            raise InputError(
                f"{name}: slice {z} holds {n_bad} NaN/Inf values; images must hold finite "
                "numbers only (fill or mask them before saving)"
            )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success rename it over ``path``.

    The temp file sits in the target's own folder (so the final :func:`os.replace` is an
    atomic rename on the same file system) and keeps the target's suffix (``.tif``,
    ``.keras``) because some writers choose the format from it. It already exists, empty,
    with the permissions the user's umask gives a new file.

    Parameters
    ----------
    path : str or path-like
        Final destination.
    overwrite : bool
        Replace an existing file. Without it an existing file raises ``OutputError``.

    Yields
    ------
    Path
        The temp path to write to.

    Raises
    ------
    OutputError
        If ``path`` is a directory, exists and ``overwrite`` is False, its folder is missing or
        not writable, or writing fails (disk full, ...). The temp file is removed and any
        previous file at ``path`` is left untouched.
    """
    target = check_target(path, overwrite, store=False)
    tmp = _create_temp(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{target}: {write_failure(exc)}; nothing was changed") from exc
    except BaseException:
        # Any other failure (a bug, Ctrl-C) must not leave a temp file behind either.
        tmp.unlink(missing_ok=True)
        raise


def write_volume(
    path: PathLike,
    array: np.ndarray,
    overwrite: bool = False,
    compression: str | None = None,
    voxel_size=None,
) -> Path:
    """Write a ``(Z, Y, X)`` (or 2D) array as a grayscale multi-page TIFF, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.tif`` file.
    array : ndarray
        2D or 3D numeric array; written in its own dtype, one page per slice.
    overwrite : bool
        Replace an existing file.
    compression : {None, "zlib"}
        ``None`` writes contiguous uncompressed pages that :func:`read_volume_lazy` can
        memory-map; ``"zlib"`` is lossless and much smaller for label stacks.
    voxel_size : ((z, y, x), unit), optional
        Kept in a ``(Z, Y, X)`` stack as ImageJ ``spacing``/``unit`` and resolution tags
        (:func:`napari_sandseg.outputs.imagej_voxel_tags`).

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    OutputError
        See :func:`atomic_write`.
    InputError
        If ``array`` is not 2D/3D or has a dtype TIFF cannot store.
    ConfigError
        For an unknown ``compression``.
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise InputError(f"cannot write an array of shape {array.shape}; expected (Z, Y, X) or (Y, X)")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise InputError(f"cannot write dtype {array.dtype} as TIFF; expected an integer or float array")
    if array.dtype == bool:
        array = array.view(np.uint8)  # TIFF has no bool; 0/1 bytes read back everywhere
    if compression not in COMPRESSIONS:
        raise ConfigError(f"compression must be one of {list(COMPRESSIONS)}, got {compression!r}")
    from .outputs import imagej_voxel_tags

    tags = {"metadata": {"axes": "ZYX" if array.ndim == 3 else "YX"}, **imagej_voxel_tags(array.shape, voxel_size)}
    with atomic_write(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(
            tmp,
            array,
            photometric="minisblack",  # never let a (Z, Y, 3) stack be taken for RGB
            compression=compression,
            bigtiff=needs_bigtiff(array.nbytes),
            **tags,
        )
    return Path(path)


def write_labels(
    path: PathLike,
    ids: np.ndarray,
    class_map: ClassMap,
    overwrite: bool = False,
    compression: str | None = None,
    voxel_size=None,
) -> Path:
    """Write class ids as a mask holding the original class values, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.tif`` file.
    ids : ndarray
        Integer class ids ``0..K-1``, 2D or 3D.
    class_map : ClassMap
        Maps ids back to the user's values (e.g. ``0/85/170/255``).
    overwrite, compression, voxel_size
        As in :func:`write_volume`.

    Returns
    -------
    Path
        The written path.

    Raises
    ------
    InputError
        If an id is outside ``0..K-1``.
    OutputError
        See :func:`atomic_write`.
    """
    return write_volume(path, class_map.decode(ids), overwrite=overwrite, compression=compression,
                        voxel_size=voxel_size)


_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")

#: Errors of a file system that refuses this user (or anyone) a file.
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


def write_failure(exc: OSError) -> str:
    """Say in words why a write failed, and what to do: disk full and size limits by name."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"the disk is full ({exc.strerror or exc}); free some space or write to another disk"
    if exc.errno == errno.EFBIG:
        return (
            f"the file is larger than this file system or your file-size limit allows "
            f"({exc.strerror or exc}); write to another disk or raise the limit"
        )
    if exc.errno is None and _SHORT_WRITE.search(str(exc)):
        # numpy's tofile (used by tifffile for big arrays) reports a short write without an
        # errno; on a local disk that means no space left or a file-size limit reached.
        return (
            f"the disk is full or a file-size limit was reached ({exc} bytes); "
            "free some space or write to another disk"
        )
    if exc.errno in _REFUSED:
        return f"not allowed to write here ({exc.strerror or exc}); choose a writable folder"
    return f"could not write the file ({exc.strerror or exc})"


def cannot_start(target: Path, exc: OSError) -> str:
    """Why the first file of an output (a temp file, a temp store) could not be created beside ``target``."""
    if exc.errno in _REFUSED:  # a folder os.access let pass (root, read-only mounts, network shares)
        return not_writable(target, exc.strerror or str(exc))
    return f"{target}: cannot write in {target.parent}: {write_failure(exc)}"


def needs_bigtiff(nbytes: int) -> bool:
    """Whether ``nbytes`` of image data must go into a BigTIFF (:data:`BIGTIFF_THRESHOLD`)."""
    return nbytes > BIGTIFF_THRESHOLD


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON types: numpy scalars and arrays to Python, NaN/Inf to None.

    Dict keys become strings and tuples lists; the one sanitiser of every JSON the package
    writes (model sidecars, metric reports, package metadata).
    """
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def remove_stale_temps(target: Path) -> None:
    """Delete temp files of ``target`` that killed writers left behind (their process is gone).

    Temp names carry the writer's process id (:func:`_create_temp`); a temp whose process still
    exists, or cannot be asked about, is left alone.
    """
    name = re.compile(rf"\.{re.escape(target.stem)}\.(\d+)\.[0-9a-f]+\.tmp{re.escape(target.suffix)}")
    for tmp in target.parent.iterdir():
        match = name.fullmatch(tmp.name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # exists but not ours, or no permission to ask: leave it alone
            pass


def _create_temp(target: Path) -> Path:
    """Create an empty, uniquely named temp file beside ``target`` (named after this process)."""
    for _ in range(16):
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{target.suffix}")
        try:
            # O_EXCL: never clobber another writer's temp; 0o666 lets the umask decide the mode.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(cannot_start(target, exc)) from exc
        os.close(fd)
        return tmp
    raise OutputError(f"{target}: could not create a temp file in {target.parent}")


def _fsync(path: Path) -> None:
    """Flush the written data to disk so the rename never exposes an incomplete file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
