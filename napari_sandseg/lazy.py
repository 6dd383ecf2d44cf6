"""Open volumes without reading them: TIFF stacks, folders of slices, zarr and OME-Zarr stores.

Everything here returns an *array-like* (``shape``, ``dtype``, ``ndim`` and numpy slicing that
returns numpy arrays) whose data stays on disk until a slice of it is indexed, so the engine can
stream a volume many times larger than RAM slab by slab, and :func:`as_dask` wraps it for napari.

TIFFs are read through tifffile's zarr store (``aszarr``): one page per chunk, read with
ordinary file reads. We use it rather than a memory map even for uncompressed files because
pages of a memory map that have been touched count in the process's resident memory until the
kernel needs them back, so a streamed pass over a file bigger than RAM would look (and, for a
memory-limited job, be) as big as the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import InputError
from .targets import is_zarr_path, is_zarr_store

PathLike = Union[str, "os.PathLike[str]"]

#: Files at least this big open lazily in napari (smaller ones are simply read: faster to use).
LAZY_BYTES = 1 << 30


def is_zarr(path: PathLike) -> bool:
    """Whether ``path`` is a zarr store (a folder named ``*.zarr`` or holding zarr metadata)."""
    p = Path(path)
    return p.is_dir() and (is_zarr_path(p) or is_zarr_store(p))


def nbytes_on_disk(path: PathLike) -> int:
    """Size of a file, or the total size of the files directly in a folder (slices, chunks)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return 0


class VolumeView:
    """A ``(Z, Y, X)`` view of an array with extra leading length-1 axes (``(1, 1, Z, Y, X)``).

    Indexing returns numpy arrays, like a memory map, so the engine treats it as a volume. Data
    that fails to decode when a slab is read raises :class:`InputError` naming ``name``.
    """

    def __init__(self, array: Any, lead: int, name: str = "volume") -> None:
        self._array = array
        self._lead = lead
        self.name = name
        self.shape = tuple(int(n) for n in array.shape[lead:])
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(getattr(array, "chunks", self.shape)[lead:])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        from .io import decoding

        key = key if isinstance(key, tuple) else (key,)
        # Compressed pages (TIFF) and chunks (zarr) are decoded here, on first access, so a
        # damaged one is found mid-stream, not at open: say which file, like the eager reader.
        with decoding(self.name):
            return np.asarray(self._array[(0,) * self._lead + key])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data


def open_volume(path: PathLike, *, check_finite: bool = True, rgb_as_slices: bool = False) -> Any:
    """Open a ``(Z, Y, X)`` volume lazily.

    Parameters
    ----------
    path : str or path-like
        A TIFF stack (any compression or layout), a single 2D TIFF, a folder of single-slice
        TIFFs, a zarr array, or a zarr group: OME-Zarr (its full-resolution level) or a group
        holding exactly one array.
    check_finite : bool
        Refuse float data holding NaN/Inf. This reads the whole volume once (slice by slice),
        so the napari reader turns it off to open instantly; the engine keeps it on.
    rgb_as_slices : bool
        Read a TIFF tagged as planar RGB(A), ``(3 or 4, Y, X)``, as slices, as in
        :func:`napari_sandseg.io.read_volume`.

    Returns
    -------
    array-like
        ``(Z, Y, X)``; slicing it reads only the slices asked for and returns numpy arrays.
        Single 2D images come back as an in-memory ``(1, Y, X)`` array.

    Raises
    ------
    InputError
        For anything :func:`napari_sandseg.io.read_volume` refuses, or a zarr store that
        holds no 2D/3D grayscale array. Data damaged past what opening checks (a compressed
        page that does not decode) is reported the same way when its slices are read.
    """
    p = Path(path)
    if is_zarr(p):
        volume = open_levels(p)[0]
    elif p.is_dir():
        volume = _open_tiff_folder(p, rgb_as_slices)
    else:
        volume = _open_tiff(p, rgb_as_slices)
    if check_finite:
        from .io import _check_finite

        _check_finite(volume, p.name)
    return volume


def open_levels(path: PathLike) -> list[Any]:
    """All resolution levels of a zarr store, full resolution first (one level unless OME-Zarr).

    Raises
    ------
    InputError
        If the store cannot be opened or holds no suitable array.
    """
    import zarr

    p = Path(path)
    try:
        node = zarr.open(str(p), mode="r")
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{p.name}: cannot open as a zarr store ({exc})") from exc
    if isinstance(node, zarr.Array):
        return [_as_volume(node, p.name)]
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        paths = [d["path"] for d in multiscales[0]["datasets"]]
        return [_as_volume(node[name], f"{p.name}/{name}") for name in paths]
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) != 1:
        raise InputError(
            f"{p.name}: a zarr group with {len(arrays)} arrays ({arrays[:5]}) and no OME-Zarr "
            "multiscales; open the array folder itself"
        )
    return [_as_volume(node[arrays[0]], f"{p.name}/{arrays[0]}")]


def _as_volume(array: Any, name: str) -> Any:
    """``array`` as ``(Z, Y, X)``: leading length-1 axes dropped, a 2D image read as (1, Y, X)."""
    shape = tuple(int(n) for n in array.shape)
    lead = 0
    while len(shape) - lead > 3 and shape[lead] == 1:
        lead += 1
    ndim = len(shape) - lead
    if ndim == 2:
        from .io import decoding

        with decoding(name):  # a single image is read now: it is small
            return np.asarray(array[(0,) * lead])[None]
    if ndim != 3:
        raise InputError(
            f"{name}: {len(shape)}D data (shape {shape}); expected a 2D image or a 3D (Z, Y, X) "
            "grayscale stack"
        )
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == bool) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{name}: dtype {dtype} is not a grayscale number type")
    return VolumeView(array, lead, name)


def _open_tiff(path: Path, rgb_as_slices: bool = False) -> Any:
    """A TIFF file through tifffile's zarr store, after :mod:`io`'s structure checks."""
    import tifffile
    import zarr

    from .io import _check_tiff_file, _open_tiff as open_checked, _volume_shape

    _check_tiff_file(path)
    with open_checked(path) as tif:
        shape = _volume_shape(tif.series[0], path.name, rgb_as_slices)
    store = tifffile.imread(path, aszarr=True)  # keeps its file handle until garbage-collected
    array = zarr.open(store, mode="r")
    if int(np.prod(array.shape)) != int(np.prod(shape)):
        raise InputError(f"{path.name}: unexpected layout {array.shape}; expected {shape}")
    return _as_volume(array, path.name)


def _open_tiff_folder(folder: Path, rgb_as_slices: bool = False) -> Any:
    """A folder of single-slice TIFFs as one lazy stack (natural sort order, like io)."""
    import tifffile
    import zarr

    from .io import _list_tiffs, _read_slice_file

    files = _list_tiffs(folder)
    # Header checks on the first and last file only: opening thousands of files one by one
    # is what "instant" must avoid; a slice that differs is reported when it is read.
    first, last = (_read_slice_file(f, folder, rgb_as_slices) for f in (files[0], files[-1]))
    if first.shape != last.shape or first.dtype != last.dtype:
        raise InputError(
            f"{folder}: slice {files[-1].name} is {last.shape} {last.dtype} but {files[0].name} is "
            f"{first.shape} {first.dtype}; all slices in a folder must have the same size and dtype"
        )
    if len(files) == 1:
        return first[None]
    store = tifffile.TiffSequence([str(f) for f in files]).aszarr()
    return _as_volume(zarr.open(store, mode="r"), folder.name)


def as_dask(volume: Any, name: str | None = None):
    """Wrap a lazy volume as a dask array with one chunk per slice (what napari shows at a time).

    Parameters
    ----------
    volume : array-like
        From :func:`open_volume` (or a numpy array / memory map).
    name : str, optional
        Dask graph name; give one derived from the file and its modification time so dask
        does not hash the data to name it.
    """
    import dask.array as da

    z, y, x = volume.shape
    return da.from_array(volume, chunks=(1, y, x), name=name or False, lock=False, asarray=True, fancy=False)


def sample_slices(volume: Any, n: int = 5) -> np.ndarray:
    """``n`` evenly spaced slices, for statistics (contrast, label detection) without a full read."""
    z = volume.shape[0]
    idx = np.unique(np.linspace(0, z - 1, min(n, z)).round().astype(int))
    return np.stack([np.asarray(volume[int(i)]) for i in idx])


def unique_values(volume: Any, slab: int = 16, limit: int | None = None) -> np.ndarray:
    """Distinct values of a lazy volume, read ``slab`` slices at a time.

    Parameters
    ----------
    limit : int, optional
        Stop early once more than ``limit`` values were found (a mask holds few).
    """
    found = np.empty(0, dtype=volume.dtype)
    for z0 in range(0, volume.shape[0], slab):
        found = np.union1d(found, np.unique(np.asarray(volume[z0 : z0 + slab])))
        if limit is not None and found.size > limit:
            break
    return found


class MappedVolume:
    """A lazy volume seen through a value lookup: ``codes[i]`` wherever the data holds ``values[i]``.

    Turns a big mask of original class values (``0/85/170/255``) into class ids (or Labels-layer
    values) slice by slice, without a converted copy of the whole volume.
    """

    def __init__(self, volume: Any, values: np.ndarray, codes: np.ndarray, source: str = "mask") -> None:
        order = np.argsort(values)
        self._volume = volume
        self._values = np.asarray(values)[order]
        self._codes = np.asarray(codes)[order]
        self._source = source
        self.shape = tuple(volume.shape)
        self.dtype = self._codes.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        raw = np.asarray(self._volume[key])
        pos = np.clip(np.searchsorted(self._values, raw), 0, len(self._values) - 1)
        bad = self._values[pos] != raw
        if bad.any():
            raise InputError(
                f"{self._source}: value {raw[bad].flat[0].item()!r} is not one of the classes "
                f"{self._values.tolist()}"
            )
        return self._codes[pos]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data.astype(dtype) if dtype is not None else data
