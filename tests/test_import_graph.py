"""The layout's rules on the package's import graph (ast, no imports run): bands, no cycles, no widget pairs.

The rules and the graph are those of ``docs/import_graph.py``, which also draws the graph into
``docs/import_graph.md``; the drawing must be the one the source gives today.
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "docs" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_keeps_its_bands_and_has_no_cycles(graph):
    assert graph.problems() == []


def test_three_bands_are_where_the_layout_says(graph):
    internal, external = graph.imports()
    bands = {graph.band(m) for m in internal}
    assert bands == set(graph.BANDS)
    assert graph.band("napari_sandseg.engine_server") == "engine"
    assert graph.band("napari_sandseg._napari.reader") == "napari glue"
    assert graph.band("napari_sandseg._widgets._train_widget") == "widgets"
    # The graph is read, not assumed: known edges are found, lazy ones included.
    assert "napari_sandseg.engine_requests" in internal["napari_sandseg.engine_server"]
    assert "napari_sandseg.train" in internal["napari_sandseg.engine_server"]  # imported inside train_job
    assert "napari_sandseg._napari.layers" in internal["napari_sandseg._napari.reader"]
    assert "napari" in external["napari_sandseg._napari.reader"]


def test_the_drawing_is_up_to_date(graph):
    drawn = (ROOT / "docs" / "import_graph.md").read_text()
    assert drawn == graph.mermaid(), "the import graph changed: run 'python docs/import_graph.py'"
    for band in graph.BANDS:
        assert f'["{band}"]' in drawn


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "napari_sandseg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_each_rule_catches_what_it_is_for(graph, tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "engine_a.py": "from . import engine_b\nimport qtpy\n",
        "engine_b.py": "from .engine_a import x\n",  # a cycle at import time
        "engine_c.py": "def f():\n    from ._widgets._w_widget import W\n",  # upward, even inside a function
        "engine_d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .engine_e import T\n",
        "engine_e.py": "from .engine_d import y\n",  # no cycle: engine_d's import never runs
        "cli.py": "",
        "_napari/__init__.py": "",
        "_napari/reader.py": "from .._widgets import _shared\nfrom .. import cli\n",
        "_widgets/__init__.py": "",
        "_widgets/_shared.py": "",
        "_widgets/_w_widget.py": "from ._v_widget import V\nfrom ._shared import S\n",
        "_widgets/_v_widget.py": "from ..engine_a import A\nfrom .._napari.reader import R\n",
    })
    assert sorted(graph.problems(root)) == sorted([
        "import cycle at import time: napari_sandseg.engine_a -> napari_sandseg.engine_b",
        "napari_sandseg.engine_a (engine) imports qtpy",
        "napari_sandseg.engine_c (engine) imports napari_sandseg._widgets._w_widget (widgets)",
        "napari_sandseg._napari.reader (napari glue) imports napari_sandseg._widgets._shared (widgets)",
        "napari_sandseg._napari.reader (napari glue) imports napari_sandseg.cli (entry points)",
        "widget napari_sandseg._widgets._w_widget imports widget napari_sandseg._widgets._v_widget",
    ])
