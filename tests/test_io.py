"""Reading and writing volumes, masks and labels: formats, validation messages, atomicity."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_sandseg import io, lazy
from napari_sandseg.classmap import ClassMap
from napari_sandseg.errors import ConfigError, InputError, OutputError


def _stack(shape: tuple[int, ...] = (4, 16, 12), dtype: str = "uint8", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 200, size=shape).astype(dtype)


def _write_raw(path: Path, array: np.ndarray, **kwargs) -> Path:
    """Write with tifffile directly (not our writer), as other software would."""
    tifffile.imwrite(path, array, **kwargs)
    return path


# ---- reading: layouts and dtypes ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "float32", "float64"])
def test_reads_multipage_stack_in_its_dtype(tmp_path: Path, dtype: str) -> None:
    stack = _stack(dtype=dtype) - (50 if dtype.startswith(("int", "float")) else 0)
    path = _write_raw(tmp_path / "s.tif", stack, photometric="minisblack")
    volume = io.read_volume(path)
    assert volume.dtype == np.dtype(dtype)
    assert np.array_equal(volume, stack)


def test_single_2d_tiff_becomes_one_slice(tmp_path: Path) -> None:
    plane = _stack((16, 12))
    volume = io.read_volume(_write_raw(tmp_path / "p.tif", plane))
    assert volume.shape == (1, 16, 12)
    assert np.array_equal(volume[0], plane)


def test_pages_without_shape_metadata_are_stacked(tmp_path: Path) -> None:
    stack = _stack()
    path = tmp_path / "plain.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in stack:
            writer.write(plane, metadata=None)
    assert np.array_equal(io.read_volume(path), stack)


def test_folder_of_slices_in_natural_order(tmp_path: Path) -> None:
    stack = _stack((12, 8, 9))
    for z, plane in enumerate(stack):
        _write_raw(tmp_path / f"slice{z}.tif", plane)  # slice10 sorts after slice9 naturally
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._slice0.tif").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    volume = io.read_volume(tmp_path)
    assert np.array_equal(volume, stack)


def test_folder_with_odd_slice_names_the_file(tmp_path: Path) -> None:
    for z in range(3):
        _write_raw(tmp_path / f"s{z}.tif", _stack((8, 9)))
    _write_raw(tmp_path / "s3.tif", _stack((8, 10)))
    with pytest.raises(InputError, match=r"s3\.tif.*8x10.*s0\.tif is 8x9"):
        io.read_volume(tmp_path)


def test_folder_with_odd_dtype_names_the_file(tmp_path: Path) -> None:
    _write_raw(tmp_path / "a1.tif", _stack((8, 9)))
    _write_raw(tmp_path / "a2.tif", _stack((8, 9), dtype="uint16"))
    with pytest.raises(InputError, match=r"a2\.tif.*uint16.*same size and dtype"):
        io.read_volume(tmp_path)


def test_folder_refuses_a_stack_file(tmp_path: Path) -> None:
    _write_raw(tmp_path / "a.tif", _stack((8, 9)))
    _write_raw(tmp_path / "images.tif", _stack((3, 8, 9)), photometric="minisblack")
    with pytest.raises(InputError, match=r"images\.tif holds 3 slices"):
        io.read_volume(tmp_path)


def test_empty_folder_and_folder_without_tiffs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder is empty"):
        io.read_volume(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match=r"no \.tif/\.tiff files"):
        io.read_volume(tmp_path)


# ---- reading: refusals ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found"):
        io.read_volume(tmp_path / "nope.tif")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.tif").write_bytes(b"")
    with pytest.raises(InputError, match=r"e\.tif.*empty \(0 bytes\)"):
        io.read_volume(tmp_path / "e.tif")


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"\x89PNG\r\n\x1a\n" + b"\0" * 32, "PNG"), (b"hello world, not an image", "TIFF header")],
)
def test_not_a_tiff(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "x.tif").write_bytes(content)
    with pytest.raises(InputError, match=rf"x\.tif: not a TIFF.*{match}"):
        io.read_volume(tmp_path / "x.tif")


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.9])
def test_truncated_tiff(tmp_path: Path, compression: str | None, keep: float) -> None:
    full = _write_raw(tmp_path / "full.tif", _stack((6, 32, 32)), photometric="minisblack", compression=compression)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: max(8, int(len(data) * keep))])
    with pytest.raises(InputError, match=r"cut\.tif.*(truncated|corrupt)"):
        io.read_volume(cut)


def test_corrupt_compressed_data(tmp_path: Path) -> None:
    full = _write_raw(tmp_path / "z.tif", _stack((2, 64, 64)), photometric="minisblack", compression="zlib")
    data = bytearray(full.read_bytes())
    with tifffile.TiffFile(full) as tif:
        offset = tif.pages[0].dataoffsets[0]
    data[offset : offset + 40] = b"\xff" * 40
    full.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"z\.tif.*truncated or corrupt"):
        io.read_volume(full)


@pytest.mark.parametrize(
    ("array", "kwargs"),
    [
        (np.zeros((16, 16, 3), np.uint8), {"photometric": "rgb"}),
        (np.zeros((2, 16, 16, 4), np.uint8), {"photometric": "rgb"}),
        (np.zeros((2, 16, 16, 3), np.uint8), {"photometric": "minisblack"}),
    ],
)
def test_rgb_and_multichannel_refused(tmp_path: Path, array: np.ndarray, kwargs: dict) -> None:
    path = _write_raw(tmp_path / "c.tif", array, **kwargs)
    with pytest.raises(InputError, match=r"c\.tif.*convert to grayscale"):
        io.read_volume(path)


@pytest.mark.parametrize("n", [3, 4])
def test_few_slices_tagged_as_planar_rgb_say_so_and_read_as_slices_when_asked(tmp_path: Path, n: int) -> None:
    stack = _stack((n, 16, 12))  # distinct random slices: a wrong order or mix-up shows
    path = _write_raw(tmp_path / "few.tif", stack)  # tifffile's defaults: one page, planar RGB(A)
    expected = rf'few\.tif: tagged as planar RGB with {n} samples per pixel \(shape \({n}, 16, 12\)\).*photometric="minisblack".*--rgb-as-slices'
    with pytest.raises(InputError, match=expected):
        io.read_volume(path)
    with pytest.raises(InputError, match=expected):
        lazy.open_volume(path)
    for read in (io.read_volume, io.read_volume_lazy, lazy.open_volume):
        volume = read(path, rgb_as_slices=True)
        assert volume.shape == (n, 16, 12) and np.array_equal(np.asarray(volume[...]), stack), read
    labels = (stack // 50).astype(np.uint8)
    ids, class_map = io.read_mask(_write_raw(tmp_path / "few_mask.tif", labels), rgb_as_slices=True)
    assert np.array_equal(class_map.decode(ids), labels)


def test_interleaved_rgb_refused_even_when_reading_rgb_as_slices(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "photo.tif", _stack((16, 12, 3)))  # samples side by side: a colour image
    message = r"photo\.tif: .*interleaved RGB with 3 samples per pixel.*convert to grayscale"
    with pytest.raises(InputError, match=message):
        io.read_volume(path)
    with pytest.raises(InputError, match=message + r".*only to a single planar page"):
        io.read_volume(path, rgb_as_slices=True)
    with pytest.raises(InputError, match=message):
        lazy.open_volume(path, rgb_as_slices=True)


def test_cli_rgb_as_slices_on_every_command_that_reads_volumes(tmp_path: Path, capsys) -> None:
    from napari_sandseg import cli

    parser = cli.build_parser()
    for argv in (["train", "--images", "i", "--masks", "m", "--out", "o.keras"],
                 ["predict", "--model", "m", "--images", "i", "--out", "o"],
                 ["evaluate", "--truth", "t", "--pred", "p"]):
        assert parser.parse_args([*argv, "--rgb-as-slices"]).rgb_as_slices
        assert not parser.parse_args(argv).rgb_as_slices
    labels = (_stack((3, 16, 12)) // 50).astype(np.uint8)
    truth = _write_raw(tmp_path / "truth.tif", labels)  # planar RGB by tifffile's defaults
    argv = ["evaluate", "--truth", str(truth), "--pred", str(truth)]
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert "truth.tif: tagged as planar RGB" in capsys.readouterr().err
    assert cli.main([*argv, "--rgb-as-slices"]) == 0
    assert "mean IoU" in capsys.readouterr().out


def test_4d_refused_but_singleton_axis_dropped(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "d4.tif", np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match=r"d4\.tif: 4D data.*3D \(Z, Y, X\)"):
        io.read_volume(path)
    stack = _stack((1, 3, 8, 8))
    path = _write_raw(tmp_path / "one.tif", stack, photometric="minisblack")
    assert np.array_equal(io.read_volume(path), stack[0])


def test_pages_of_different_sizes_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(np.zeros((8, 8), np.uint8), metadata=None)
        writer.write(np.zeros((4, 8), np.uint8), metadata=None)
    with pytest.raises(InputError, match=r"mixed\.tif.*different shapes"):
        io.read_volume(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_refused(tmp_path: Path, bad: float) -> None:
    stack = np.zeros((3, 4, 4), np.float32)
    stack[2, 1, 1] = bad
    path = _write_raw(tmp_path / "f.tif", stack, photometric="minisblack")
    with pytest.raises(InputError, match=r"f\.tif: slice 2 holds 1 NaN/Inf"):
        io.read_volume(path)
    with pytest.raises(InputError, match="NaN/Inf"):
        io.read_volume_lazy(path)


# ---- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(0, 1, 2, 3), (1, 2, 3, 4), (0, 85, 170, 255)])
def test_read_mask_and_write_labels_round_trip(tmp_path: Path, values: tuple[int, ...]) -> None:
    rng = np.random.default_rng(2)
    mask = rng.choice(np.asarray(values, np.uint8), size=(3, 10, 11))
    path = _write_raw(tmp_path / "m.tif", mask, photometric="minisblack")
    ids, cmap = io.read_mask(path)
    assert ids.dtype == np.uint8 and int(ids.max()) == 3
    assert cmap.values == values
    io.write_labels(tmp_path / "out.tif", ids, cmap)
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), mask)


def test_read_mask_with_class_map_refuses_other_values(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "m.tif", np.array([[[0, 5]]], np.uint8))
    with pytest.raises(InputError, match=r"m\.tif.*\[5\].*not in the class map"):
        io.read_mask(path, ClassMap((0, 1, 2, 3)))


def test_float_mask_with_fractions_refused(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "fm.tif", np.array([[0.0, 0.5], [1.0, 2.0]], np.float32))
    with pytest.raises(InputError, match=r"fm\.tif.*fractional"):
        io.read_mask(path)
    whole = _write_raw(tmp_path / "wm.tif", np.array([[0.0, 3.0], [1.0, 2.0]], np.float32))
    ids, cmap = io.read_mask(whole)
    assert cmap.values == (0, 1, 2, 3) and ids.tolist() == [[[0, 3], [1, 2]]]


def test_check_pair(tmp_path: Path) -> None:
    io.check_pair(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match=r"images\.tif has shape \(2, 3, 4\) but masks\.tif has shape \(2, 3, 5\)"):
        io.check_pair(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)), "images.tif", "masks.tif")


# ---- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_write_volume_round_trip_and_lazy_read(tmp_path: Path, compression: str | None) -> None:
    stack = _stack((5, 16, 3), dtype="uint16")  # X == 3 must not be taken for RGB
    path = io.write_volume(tmp_path / "v.tif", stack, compression=compression)
    assert np.array_equal(io.read_volume(path), stack)
    lazy = io.read_volume_lazy(path)
    assert isinstance(lazy, np.memmap) == (compression is None)
    assert np.array_equal(lazy, stack)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == (tifffile.COMPRESSION.ADOBE_DEFLATE if compression else tifffile.COMPRESSION.NONE)


def test_zlib_is_smaller_for_labels(tmp_path: Path) -> None:
    labels = np.zeros((8, 64, 64), np.uint8)
    labels[:, 10:40] = 2
    raw = io.write_volume(tmp_path / "raw.tif", labels).stat().st_size
    small = io.write_volume(tmp_path / "z.tif", labels, compression="zlib").stat().st_size
    assert small < raw / 5


def test_lazy_read_of_2d_tiff_and_folder(tmp_path: Path) -> None:
    plane = _stack((6, 7))
    _write_raw(tmp_path / "p.tif", plane)
    assert io.read_volume_lazy(tmp_path / "p.tif").shape == (1, 6, 7)
    folder = tmp_path / "f"
    folder.mkdir()
    _write_raw(folder / "0.tif", plane)
    assert np.array_equal(io.read_volume_lazy(folder), plane[None])


def test_refuses_to_overwrite_without_flag(tmp_path: Path) -> None:
    path = io.write_volume(tmp_path / "v.tif", _stack(seed=1))
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"v\.tif: already exists.*overwrite"):
        io.write_volume(path, _stack(seed=2))
    assert path.read_bytes() == before
    io.write_volume(path, _stack(seed=2), overwrite=True)
    assert np.array_equal(io.read_volume(path), _stack(seed=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.tif"]


def test_directory_and_missing_folder_targets(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a folder"):
        io.write_volume(tmp_path, _stack(), overwrite=True)
    with pytest.raises(OutputError, match="does not exist"):
        io.write_volume(tmp_path / "no" / "v.tif", _stack())


@pytest.fixture
def unwritable_folder(tmp_path: Path):
    """A real folder where the OS refuses this user new files.

    A folder without write permission; for root, who ignores permissions, Linux's sysfs, where
    the kernel refuses to create any file (EACCES) whoever asks.
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):
        if not Path("/sys/kernel").is_dir():
            pytest.skip("running as root on a system without sysfs: no folder refuses root")
        locked = Path("/sys/kernel")
    yield locked
    (tmp_path / "locked").chmod(0o700)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unwritable_folder(unwritable_folder: Path) -> None:
    before = sorted(unwritable_folder.iterdir())
    with pytest.raises(OutputError, match=re.escape(f"v.tif: the folder {unwritable_folder} is not writable")):
        io.write_volume(unwritable_folder / "v.tif", _stack())
    assert sorted(unwritable_folder.iterdir()) == before


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = io.write_volume(tmp_path / "v.tif", _stack(seed=1))
    before = path.read_bytes()

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with io.atomic_write(path, overwrite=True) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".tif" and tmp.exists()
            tmp.write_bytes(b"half a file")
            raise Boom()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.tif"]


def test_os_error_while_writing_becomes_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"v\.tif: the disk is full .*No space left"):
        with io.atomic_write(tmp_path / "v.tif") as tmp:
            raise OSError(28, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_new_file_gets_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = io.write_volume(tmp_path / "v.tif", _stack())
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_write_volume_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="shape"):
        io.write_volume(tmp_path / "a.tif", np.zeros((2, 2, 2, 2)))
    with pytest.raises(ConfigError, match="compression"):
        io.write_volume(tmp_path / "a.tif", np.zeros((2, 2)), compression="lzw")
    with pytest.raises(InputError, match="0..1"):
        io.write_labels(tmp_path / "a.tif", np.array([[0, 2]]), ClassMap((0, 255)))
    assert list(tmp_path.iterdir()) == []


def test_bigtiff_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = _stack()
    monkeypatch.setattr(io, "BIGTIFF_THRESHOLD", stack.nbytes - 1)
    path = io.write_volume(tmp_path / "big.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    assert np.array_equal(io.read_volume(path), stack)
    assert np.array_equal(io.read_volume_lazy(path), stack)
    small = io.write_volume(tmp_path / "small.tif", stack[:1, :1])
    with tifffile.TiffFile(small) as tif:
        assert not tif.is_bigtiff


# ---- properties -----------------------------------------------------------------------------------

_shapes = st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["uint8", "uint16", "int16", "float32"]).flatmap(
        lambda dt: hnp.arrays(
            dt, _shapes, elements=hnp.from_dtype(np.dtype(dt), allow_nan=False, allow_infinity=False)
        )
    )
)
def test_property_volume_round_trip(stack: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = io.write_volume(Path(tmp) / "v.tif", stack)
        back = io.read_volume(path)
    assert back.dtype == stack.dtype and back.shape == stack.shape
    assert np.array_equal(back, stack)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["uint8", "uint16", "int16", "float32"]),
    st.lists(st.integers(-300, 300), min_size=1, max_size=6, unique=True),
    _shapes,
    st.integers(0, 2**31),
)
def test_property_mask_round_trip(dtype: str, values: list[int], shape: tuple[int, int, int], seed: int) -> None:
    info = np.iinfo(dtype) if dtype != "float32" else None
    values = sorted(v for v in values if info is None or info.min <= v <= info.max) or [0]
    mask = np.random.default_rng(seed).choice(np.asarray(values), size=shape).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.tif"
        tifffile.imwrite(src, mask, photometric="minisblack")
        ids, cmap = io.read_mask(src)
        assert ids.shape == shape and ids.dtype == np.uint8
        out = io.write_labels(Path(tmp) / "out.tif", ids, cmap)
        back = io.read_volume(out)
    assert cmap.values == tuple(np.unique(mask).astype(int).tolist())
    assert np.array_equal(back, mask)  # same values (dtype may shrink to fit them)


def test_permission_error_creating_temp_becomes_output_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Root ignores directory permissions, so simulate what a read-only folder does to os.open.
    real_open = os.open

    def denied(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(OutputError, match=re.escape(f"v.tif: the folder {tmp_path} is not writable (Permission denied)")):
        io.write_volume(tmp_path / "v.tif", _stack())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_image_passed_as_mask_names_the_file(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "images.tif", np.arange(300, dtype=np.uint16).reshape(1, 15, 20))
    with pytest.raises(InputError, match=r"images\.tif: 300 distinct values.*image rather than the mask"):
        io.read_mask(path)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("layout", ["ours", "pages"])
def test_every_truncation_is_refused_or_harmless(tmp_path: Path, compression: str | None, layout: str) -> None:
    # Cut the file at many points: the reader must raise InputError or return the exact
    # data (the cut only hit trailing metadata); never another exception, never wrong data.
    stack = _stack((6, 32, 32), seed=5)
    full = tmp_path / "full.tif"
    if layout == "ours":
        io.write_volume(full, stack, compression=compression)
    else:
        with tifffile.TiffWriter(full) as writer:
            for plane in stack:
                writer.write(plane, metadata=None, compression=compression)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    refused = 0
    for n in range(1, len(data), 17):
        cut.write_bytes(data[:n])
        try:
            volume = io.read_volume(cut)
        except InputError:
            refused += 1
            continue
        assert np.array_equal(volume, stack), f"cut at {n} of {len(data)} bytes gave wrong data"
    assert refused > 0.9 * (len(data) // 17)


_ALL_DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(_ALL_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            dt, st.one_of(_shapes, st.tuples(st.integers(1, 9), st.integers(1, 9))),
            elements=hnp.from_dtype(np.dtype(dt), allow_nan=False, allow_infinity=False),
        )
    )
)
def test_property_any_dtype_2d_or_3d_round_trips(array: np.ndarray) -> None:
    """Every numeric dtype, 2D (read back as one slice) or 3D, comes back exactly."""
    with tempfile.TemporaryDirectory() as tmp:
        back = io.read_volume(io.write_volume(Path(tmp) / "v.tif", array))
    expected = array.view(np.uint8) if array.dtype == bool else array
    assert back.shape == (array.shape if array.ndim == 3 else (1, *array.shape))
    assert back.dtype == expected.dtype and np.array_equal(back.reshape(expected.shape), expected)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(-40_000, 70_000), min_size=1, max_size=8, unique=True).map(sorted),
    _shapes,
    st.integers(0, 2**31),
)
def test_property_labels_with_any_class_values_round_trip(values: list[int], shape, seed: int) -> None:
    """ids -> write_labels (original values, any range) -> read_mask with the class map -> same ids."""
    class_map = ClassMap(tuple(values))
    ids = np.random.default_rng(seed).integers(0, len(values), size=shape).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = io.write_labels(Path(tmp) / "l.tif", ids, class_map)
        back, same_map = io.read_mask(path, class_map)
        assert np.array_equal(io.read_volume(path), np.asarray(values)[ids])
    assert same_map == class_map and np.array_equal(back, ids)
