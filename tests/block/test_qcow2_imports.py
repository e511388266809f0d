"""The qcow2 modules import one way: qcow2_state at the bottom, the driver
(qcow2.py) at the top, no circle between them (function-level imports
included; imports under ``if TYPE_CHECKING:`` never run and are left out,
as in tests/test_import_cycles.py), and no module of gqemu/block imports the
``gqemu.block`` package itself (its __init__ registers every driver, so such
an import ties each module to all the others)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_layering import _type_checking_only  # noqa: E402

BLOCK = Path(__file__).resolve().parents[2] / "gqemu" / "block"


def _imports(path: Path) -> set[str]:
    """Every gqemu module named by an import in ``path`` (any depth) that
    runs."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {node.module + "." + a.name for a in node.names}
    return {m for m in found if m.startswith("gqemu.")}


def _graph(block: Path) -> dict[str, set[str]]:
    mods = {"gqemu.block." + p.stem: p for p in block.glob("*.py") if p.stem != "__init__"}
    mods["gqemu.block"] = block / "__init__.py"
    graph = {}
    for name, path in mods.items():
        deps = set()
        for target in _imports(path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


def qcow2_cycles(block: Path = BLOCK) -> list[str]:
    """The qcow2 modules that can reach themselves through imports."""
    graph = _graph(block)
    return sorted(m for m in graph if m.startswith("gqemu.block.qcow2")
                  and m in _reaches(graph, m))


def package_importers(block: Path = BLOCK) -> list[str]:
    """Modules of gqemu/block (other than __init__) that import the package."""
    graph = _graph(block)
    return sorted(m for m, deps in graph.items()
                  if m != "gqemu.block" and "gqemu.block" in deps)


def test_no_qcow2_module_is_on_an_import_circle():
    assert qcow2_cycles() == []


def test_no_block_module_imports_the_block_package():
    assert package_importers() == []


def test_qcow2_state_is_the_bottom():
    graph = _graph(BLOCK)
    below = {m for m in _reaches(graph, "gqemu.block.qcow2_state")
             if m.startswith("gqemu.block.qcow2")}
    assert below <= {"gqemu.block.qcow2_header"}


def test_type_checking_imports_are_left_out(tmp_path):
    """A name imported for the type checker only is no edge; one imported
    at run time is."""
    mod = tmp_path / "mod.py"
    mod.write_text("from typing import TYPE_CHECKING\n"
                   "from gqemu.block.qcow2_state import Qcow2BDS\n"
                   "if TYPE_CHECKING:\n"
                   "    from gqemu.block.qcow2_check import BdrvCheckResult\n",
                   encoding="utf-8")
    assert "gqemu.block.qcow2_state" in _imports(mod)
    assert "gqemu.block.qcow2_check" not in _imports(mod)


def test_check_and_rebuild_import_one_way():
    """qcow2_rebuild takes the check's record and in-memory table from
    qcow2_calculate_refcounts, below both: no circle, not even one for the
    type checker."""
    rebuild = BLOCK / "qcow2_rebuild.py"
    assert "from gqemu.block.qcow2_check import" not in rebuild.read_text(encoding="utf-8")
    assert "gqemu.block.qcow2_rebuild" in _imports(BLOCK / "qcow2_check.py")
