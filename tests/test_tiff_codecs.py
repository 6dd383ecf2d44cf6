"""Compressed TIFFs whose data is damaged (issue 10): one clear error, whichever codec and code path.

tifffile decodes with imagecodecs when it is installed and otherwise with Python's zlib/lzma, each
raising its own exception classes. Whatever reads the data (the eager reader, a lazily opened
volume's slab reads, the napari reader, ``sandseg predict`` / ``evaluate``), a page that does not
decode must give an ``InputError`` naming the file and saying "corrupt", and the CLI one
``sandseg: error:`` line, exit 2, with no output file created. The damage is inside the strip data
(its first bytes overwritten), never in the header, so opening succeeds and only decoding fails.

These tests pass with and without imagecodecs; codecs tifffile cannot write without it (LZW, and
zstd before Python 3.14) skip their own cases only.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sandseg import cli, io, lazy
from napari_sandseg.errors import InputError

#: deflate (zlib) is always writable; LZW (what ImageJ/Fiji writes) and zstd may need imagecodecs.
CODECS = ["zlib", "lzw", "zstd"]
STACK = (np.random.default_rng(3).integers(0, 4, size=(4, 32, 32)) * 60).astype(np.uint8)


def _write(path: Path, compression: str, array: np.ndarray = STACK) -> Path:
    """Write ``array`` with tifffile's ``compression``, or skip when this installation cannot encode it."""
    try:
        tifffile.imwrite(path, array, compression=compression, photometric="minisblack")
    except (KeyError, ImportError) as exc:  # "<COMPRESSION.LZW: 5> requires the 'imagecodecs' package"
        path.unlink(missing_ok=True)
        pytest.skip(f"tifffile cannot write {compression} here (imagecodecs not installed?): {exc}")
    return path


def _damage(path: Path, page: int) -> Path:
    """Overwrite the first 16 bytes of ``page``'s strip data (the codec's header) with 0xFF."""
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[page].compression != tifffile.COMPRESSION.NONE
        offset, count = tif.pages[page].dataoffsets[0], tif.pages[page].databytecounts[0]
    assert count > 16  # the damage stays inside the strip
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


def _damaged(tmp_path: Path, compression: str, page: int = 1) -> Path:
    return _damage(_write(tmp_path / f"{compression}_bad.tif", compression), page)


def _corrupt_message(path: Path) -> str:
    return rf"{re.escape(path.name)}: .*corrupt"


# ----------------------------------------------------------------------------- readers


@pytest.mark.parametrize("compression", CODECS)
def test_undamaged_file_reads_exactly(tmp_path: Path, compression: str) -> None:
    # The guard against false alarms: the same files, undamaged, read back bit for bit.
    path = _write(tmp_path / "ok.tif", compression)
    assert np.array_equal(io.read_volume(path), STACK)
    assert np.array_equal(lazy.open_volume(path)[...], STACK)


@pytest.mark.parametrize("compression", CODECS)
def test_eager_readers_refuse_damaged_data(tmp_path: Path, compression: str) -> None:
    path = _damaged(tmp_path, compression)
    with pytest.raises(InputError, match=_corrupt_message(path)):
        io.read_volume(path)
    with pytest.raises(InputError, match=_corrupt_message(path)):
        io.read_volume_lazy(path)  # compressed: read whole, same check
    with pytest.raises(InputError, match=_corrupt_message(path)):
        io.read_mask(path)


@pytest.mark.parametrize("compression", CODECS)
def test_lazy_slab_read_refuses_damaged_page(tmp_path: Path, compression: str) -> None:
    path = _damaged(tmp_path, compression, page=2)
    volume = lazy.open_volume(path)  # opening reads headers only: the damage is not seen yet
    assert np.array_equal(volume[0:2], STACK[0:2])  # undamaged pages still read
    for key in (2, slice(1, 4), Ellipsis):
        with pytest.raises(InputError, match=_corrupt_message(path)):
            volume[key]


def test_damaged_slice_in_a_folder_names_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(len(STACK)):
        _write(folder / f"s{z}.tif", "zlib", STACK[z])
    _damage(folder / "s2.tif", page=0)
    with pytest.raises(InputError, match=r"s2\.tif: .*corrupt"):
        io.read_volume(folder)
    volume = lazy.open_volume(folder)  # first and last slice checked at open, the rest when read
    with pytest.raises(InputError, match=r"slices: .*corrupt"):
        volume[2]


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("lazily", [False, True], ids=["eager", "lazy"])
def test_napari_reader_notifies_instead_of_raising(tmp_path: Path, monkeypatch, compression: str, lazily: bool) -> None:
    import napari.utils.notifications

    from napari_sandseg._napari import reader as _reader

    shown: list[str] = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", shown.append)
    if lazily:  # big files open as dask arrays, sampled at open: the sample hits the damaged page
        monkeypatch.setattr(_reader, "LAZY_BYTES", 1)
    path = _damaged(tmp_path, compression)
    assert _reader.read_or_notify(str(path)) == _reader.NO_LAYERS
    assert len(shown) == 1 and re.search(_corrupt_message(path), shown[0]), shown


def test_decode_errors_cover_pythons_codecs_and_imagecodecs() -> None:
    import lzma
    import zlib

    errors = io.decode_errors()
    assert issubclass(zlib.error, errors) and issubclass(lzma.LZMAError, errors)
    try:
        import imagecodecs
    except ImportError:
        return
    assert issubclass(imagecodecs.DeflateError, errors) and issubclass(imagecodecs.LzwError, errors)
    assert not issubclass(imagecodecs.DelayedImportError, errors)  # a missing codec is not damage


def _set_compression_tag(path: Path, value: int) -> Path:
    """Rewrite every page's Compression tag in place (classic little-endian TIFF, inline SHORT)."""
    with tifffile.TiffFile(path) as tif:
        assert tif.byteorder == "<" and not tif.is_bigtiff
        offsets = [page.tags["Compression"].valueoffset for page in tif.pages]
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset : offset + 2] = struct.pack("<H", value)
    path.write_bytes(bytes(data))
    return path


def test_codec_missing_from_the_installation_is_named(tmp_path: Path) -> None:
    # An LZW file read where imagecodecs cannot be imported (a child process that blocks it):
    # the message says what is missing instead of calling the file corrupt. The file is a
    # deflate file re-tagged as LZW, so it can be made without imagecodecs too.
    path = _set_compression_tag(_write(tmp_path / "fiji.tif", "zlib"), int(tifffile.COMPRESSION.LZW))
    child = f"""
import sys
sys.modules["imagecodecs"] = None  # import imagecodecs -> ImportError, as if not installed
from napari_sandseg import io, lazy
from napari_sandseg.errors import InputError
for read in (io.read_volume, lazy.open_volume):
    try:
        read({str(path)!r})
    except InputError as exc:
        print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout + proc.stderr
    for line in lines:
        assert line.startswith("fiji.tif: cannot decode") and "LZW" in line and "pip install imagecodecs" in line
        assert "corrupt" not in line


# ----------------------------------------------------------------------------- command line


def _run_cli(argv: list, capsys) -> tuple[int, list[str]]:
    """Exit code and the ``sandseg:`` lines on stderr (a progress bar may precede them)."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.startswith("sandseg:")]


@pytest.mark.parametrize("compression", CODECS)
def test_cli_evaluate_damaged_file_is_one_line_and_writes_nothing(tmp_path: Path, compression: str, capsys) -> None:
    bad = _damaged(tmp_path, compression)
    good = io.write_volume(tmp_path / "truth.tif", STACK)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, lines = _run_cli(["evaluate", "--truth", good, "--pred", bad, "--json", tmp_path / "report.json"], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sandseg: error: "), lines
    assert re.search(_corrupt_message(bad), lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report, no temp file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """An untrained resnet18 model for values 0/60/120/180 (prediction only needs to run)."""
    from napari_sandseg.classmap import ClassMap
    from napari_sandseg.data import Normalization
    from napari_sandseg.model import ModelInfo, build_model, save_model

    info = ModelInfo(config={}, class_map=ClassMap((0, 60, 120, 180)), normalization=Normalization(0.0, 255.0),
                     backbone="resnet18", n_classes=4)
    return save_model(build_model("resnet18", 4), tmp_path_factory.mktemp("model") / "m.keras", info)


@pytest.mark.parametrize("compression", CODECS)
@pytest.mark.parametrize("slices", [4, 34], ids=["sampled-at-start", "met-mid-stream"])
def test_cli_predict_damaged_page_is_one_line_and_writes_nothing(
    tmp_path: Path, model_file: Path, compression: str, slices: int, capsys
) -> None:
    # predict streams: the file opens fine. With 4 slices the damaged page 3 is met by the
    # intensity check before the model runs; with 34 that check reads every 2nd slice only, so
    # page 3 is met mid-run, after the output writer started: its temp file must go too.
    array = np.resize(STACK, (slices, *STACK.shape[1:]))
    bad = _damage(_write(tmp_path / "bad.tif", compression, array), page=3)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, lines = _run_cli(["predict", "--model", model_file, "--images", bad, "--out", tmp_path / "pred.tif",
                            "--batch-size", 1, "--precision", "float32"], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sandseg: error: "), lines
    assert re.search(_corrupt_message(bad), lines[0]) and lines[0].count(bad.name) == 1, lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cli_predict_reads_planar_rgb_as_slices_when_asked(tmp_path: Path, model_file: Path, capsys) -> None:
    three = tmp_path / "three.tif"
    tifffile.imwrite(three, STACK[:3])  # tifffile's defaults tag a (3, Y, X) stack as planar RGB
    argv = ["predict", "--model", model_file, "--images", three, "--out", tmp_path / "pred.tif", "--precision", "float32"]
    code, lines = _run_cli(argv, capsys)
    assert code == 2 and "tagged as planar RGB" in lines[0] and "--rgb-as-slices" in lines[0], lines
    assert not (tmp_path / "pred.tif").exists()
    code, lines = _run_cli([*argv, "--rgb-as-slices"], capsys)
    assert code == 0, lines
    assert io.read_volume(tmp_path / "pred.tif").shape == (3, 32, 32)
