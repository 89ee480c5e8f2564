"""The package's modules import each other without cycles.

Two rules: no cycle at import time anywhere in the package (module-level imports), and no cycle at all,
deferred imports inside functions included, between the modules of one subpackage (``training.loop`` and
``training.gan`` once imported each other, one of them inside a function).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "platform" / "tumorbench"
SUBPACKAGES = sorted(path.parent.name for path in PACKAGE.glob("*/__init__.py"))


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, deferred: bool) -> list[str]:
    nodes = ast.walk(tree) if deferred else tree.body
    names = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def import_graph(root: Path = PACKAGE, *, deferred: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (in its body too when ``deferred``); re-exporting
    ``__init__`` files are left out as targets (importing ``pkg.x`` runs ``pkg/__init__`` first, by design)."""
    modules = {_module_name(path, root): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = _imports(ast.parse(path.read_text()), deferred)
        graph[name] = {t for t in targets if t in modules and t != name and modules[t].name != "__init__.py"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_a_deferred_import_is_seen(tmp_path):
    package = tmp_path / "tumorbench"
    package.mkdir()
    (package / "a.py").write_text("import tumorbench.b\n")
    (package / "b.py").write_text("def f():\n    from tumorbench.a import x\n")
    assert set(find_cycle(import_graph(package))) == {"tumorbench.a", "tumorbench.b"}
    assert find_cycle(import_graph(package, deferred=False)) is None


def test_no_cycle_at_import_time():
    assert find_cycle(import_graph(deferred=False)) is None


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_no_cycle_inside_a_subpackage(subpackage):
    prefix = f"tumorbench.{subpackage}."
    inside = {
        name: {t for t in targets if t.startswith(prefix)}
        for name, targets in import_graph().items()
        if name.startswith(prefix)
    }
    assert find_cycle(inside) is None
