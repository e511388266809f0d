"""No import cycle (function-local and TYPE_CHECKING imports included)
runs through the runtime modules or the block layer's core (the node graph,
permissions and the request path): a lower module reaches a higher one only
through callables handed down (STYLE §1)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_layering import PKG, imports_of, module_name  # noqa: E402

CORE = {
    "gqemu.aio", "gqemu.coroutine", "gqemu.plant", "gqemu.trace", "gqemu.trace_json",
    "gqemu.block.driver", "gqemu.block.perms", "gqemu.block.io", "gqemu.block.io_flush",
    "gqemu.block.io_misc", "gqemu.block.io_tracked", "gqemu.block.block_int",
}


def _graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        deps = set()
        for _ln, t in imports_of(p):
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != m and t != "gqemu":
                deps.add(t)
        graph[m] = deps
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_core_modules_are_in_no_import_cycle():
    graph = _graph()
    assert CORE <= set(graph)
    cyclic = sorted(m for m in CORE if m in _reaches(graph, m))
    assert cyclic == []
