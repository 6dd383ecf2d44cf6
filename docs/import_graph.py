"""Draw the package's import graph in its bands: ``python docs/import_graph.py`` writes docs/import_graph.md.

The package is built in three bands, each importing only those below it:

- **engine**: the Qt-free engine, ``napari_sandseg/*.py`` (TensorFlow only lazily, no Qt, no napari);
- **napari glue**: ``napari_sandseg/_napari/`` (reader, writer, layers, sample data, launcher);
- **widgets**: ``napari_sandseg/_widgets/`` (Qt, magicgui, napari thread workers).

Above them sit the **entry points**, which start one or the other and which nothing imports:
``sandseg`` (``cli.py``: its ``gui`` sub-command opens napari) and ``python -m napari_sandseg``.

Every ``import`` of the package counts, those inside functions (TensorFlow's lazy pattern) and
under ``TYPE_CHECKING`` too: they are dependencies all the same. ``tests/test_import_graph.py``
checks the rules on the same graph, and that this drawing is up to date. Only the standard
library is used (ast); the drawing is a Mermaid flowchart, which GitHub renders.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_sandseg"
OUT = ROOT / "docs" / "import_graph.md"

#: Bands from the bottom up; a module may import its own band and those before it.
BANDS = ("engine", "napari glue", "widgets", "entry points")
#: Sub-packages that make a band (every other module of the package is the engine).
BAND_PACKAGES = {f"{PACKAGE}._napari": "napari glue", f"{PACKAGE}._widgets": "widgets"}
#: Modules that start the program; nothing imports them.
ENTRY_POINTS = {f"{PACKAGE}.cli": "entry points", f"{PACKAGE}.__main__": "entry points"}
#: Third-party packages of the GUI, which the engine never imports.
GUI_PACKAGES = frozenset({"qtpy", "napari", "magicgui", "PyQt5", "PyQt6", "superqt", "vispy"})


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _import_nodes(tree: ast.AST) -> list[tuple[ast.stmt, bool]]:
    """Every import statement in ``tree``, with whether it runs when the module is imported.

    Imports inside functions run when those are called, those under ``if TYPE_CHECKING:`` never.
    """
    found: list[tuple[ast.stmt, bool]] = []

    def visit(node: ast.AST, at_import: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, at_import))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(ast.Module(body=child.body, type_ignores=[]), False)
                visit(ast.Module(body=child.orelse, type_ignores=[]), at_import)
            else:
                visit(child, at_import)

    visit(tree, True)
    return found


def imports(root: Path = ROOT, at_import_only: bool = False) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The import graph: ``(internal, external)``, each module -> the modules / top-level packages it imports.

    ``at_import_only``: only the imports that run when a module is imported (see :func:`_import_nodes`).
    """
    known = modules(root)
    internal: dict[str, set[str]] = {name: set() for name in known}
    external: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node, at_import in _import_nodes(ast.parse(path.read_text(), str(path))):
            if at_import_only and not at_import:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(name, path).split(".")
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from . import x`` and ``from .pkg import mod`` import modules; else the stem itself.
                subs = [f"{stem}.{alias.name}" for alias in node.names if f"{stem}.{alias.name}" in known]
                targets = subs or [stem]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    while target not in known:  # ``import napari_sandseg.x.y`` of a name inside a module
                        target = target.rpartition(".")[0]
                    if target != name:
                        internal[name].add(target)
                else:
                    external[name].add(target.split(".")[0])
    return internal, external


def band(module: str) -> str:
    """The band ``module`` belongs to (see :data:`BANDS`)."""
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    for package, name in BAND_PACKAGES.items():
        if module == package or module.startswith(package + "."):
            return name
    return "engine"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (its strongly connected parts of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            part = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_widget(module: str) -> bool:
    """A dock widget's module (``_widgets/_<name>_widget.py``), as opposed to the parts they share."""
    return band(module) == "widgets" and module.endswith("_widget")


def problems(root: Path = ROOT) -> list[str]:
    """What breaks the layout's rules, one line each (empty: none).

    The rules: no cycle among the imports that run at import time; no import points up a band
    (so the glue never imports the widgets) and nothing imports an entry point; the engine
    imports no GUI package (:data:`GUI_PACKAGES`); no widget imports another widget (what two
    widgets share lives in a module of its own under ``_widgets/``).
    """
    internal, external = imports(root)
    found = [f"import cycle at import time: {' -> '.join(part)}" for part in cycles(imports(root, True)[0])]
    for a in sorted(internal):
        for b in sorted(internal[a]):
            if BANDS.index(band(b)) > BANDS.index(band(a)) or (band(b) == "entry points" and a != b):
                found.append(f"{a} ({band(a)}) imports {b} ({band(b)})")
            elif _is_widget(a) and _is_widget(b):
                found.append(f"widget {a} imports widget {b}")
        gui = external[a] & GUI_PACKAGES
        if band(a) == "engine" and gui:
            found.append(f"{a} (engine) imports {', '.join(sorted(gui))}")
    return found


def _node(module: str) -> str:
    return module.replace(".", "_")


def _label(module: str) -> str:
    return module.removeprefix(PACKAGE + ".").rpartition(".")[2] if module != PACKAGE else PACKAGE


def mermaid(root: Path = ROOT) -> str:
    """The drawing: the bands with how many imports go between them, then every module's imports."""
    internal, _ = imports(root)
    lazy_cycles = [part for part in cycles(internal) if part not in cycles(imports(root, at_import_only=True)[0])]
    between = Counter((band(a), band(b)) for a, targets in internal.items() for b in targets if band(a) != band(b))
    lines = [
        "# Import graph of napari_sandseg",
        "",
        "Generated by `python docs/import_graph.py` from the source (do not edit by hand);",
        "`tests/test_import_graph.py` checks the rules and that this file is up to date.",
        "Bands from the bottom: the Qt-free **engine** (`napari_sandseg/*.py`), the **napari glue**",
        "(`napari_sandseg/_napari/`), the **widgets** (`napari_sandseg/_widgets/`); the **entry points**",
        "(`sandseg`, `python -m napari_sandseg`) start them. Every arrow points down a band or within",
        "one, and no cycle runs at import time. Imports inside functions count too (TensorFlow is",
        "imported that way); the cycles they close are listed at the end.",
        "",
        "## Bands",
        "",
        "```mermaid",
        "flowchart BT",
    ]
    for name in BANDS:
        count = sum(1 for m in internal if band(m) == name)
        lines.append(f'    {_node(name.replace(" ", "_"))}["{name} ({count} modules)"]')
    for (a, b), n in sorted(between.items(), key=lambda item: (BANDS.index(item[0][0]), BANDS.index(item[0][1]))):
        lines.append(f'    {_node(a.replace(" ", "_"))} -->|{n}| {_node(b.replace(" ", "_"))}')
    lines += ["```", "", "## Modules", "", "```mermaid", "flowchart TB"]
    for name in reversed(BANDS):
        members = sorted(m for m in internal if band(m) == name)
        lines.append(f'    subgraph {_node(name.replace(" ", "_"))}_band["{name}"]')
        lines += [f'        {_node(m)}["{_label(m)}"]' for m in members]
        lines.append("    end")
    for a in sorted(internal):
        for b in sorted(internal[a]):
            if b != PACKAGE:  # every module's package: drawn it would only add noise
                lines.append(f"    {_node(a)} --> {_node(b)}")
    lines += ["```", ""]
    if lazy_cycles:
        lines += ["Cycles closed only by imports inside functions (none runs at import time; each group",
                  "of modules needs each other, to be untangled):", ""]
        lines += [f"- {', '.join(_label(m) for m in part)}" for part in lazy_cycles]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Write :data:`OUT`."""
    OUT.write_text(mermaid())
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
