"""No import circles in gqemu, function-level imports included: a module
reaches a higher one only through callables handed down (STYLE §1), and
two modules of one layer never need each other (issue 15).  The graph is
read with ``ast`` as tests/test_layering.py reads it.  Imports under
``if TYPE_CHECKING:`` are for annotations only and never run, so they are
no edges here (the layering test still counts them)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_layering import PKG, imports_of, module_name  # noqa: E402


def _graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for m, p in mods.items():
        deps = set()
        for _line, target in imports_of(p, type_checking=False):
            while target and target not in mods:        # "from pkg.mod import name"
                target = target.rpartition(".")[0]
            if target and target not in (m, "gqemu"):
                deps.add(target)
        graph[m] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan,
    iterative: no recursion limit to meet)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_type_checking_imports_are_no_edges():
    """virtio_blk.py names VirtIOBlock for the type checker only;
    virtio_blk_device.py imports virtio_blk.py at run time."""
    vblk = PKG / "hw" / "virtio" / "virtio_blk.py"
    assert "gqemu.hw.virtio.virtio_blk_device" in {m for _, m in imports_of(vblk)}
    assert "gqemu.hw.virtio.virtio_blk_device" not in {
        m for _, m in imports_of(vblk, type_checking=False)}
    assert "gqemu.hw.virtio.virtio_blk" in _graph()["gqemu.hw.virtio.virtio_blk_device"]


def test_perms_sits_above_driver():
    """perms.py takes BlockDriverState and BdrvChild from driver.py at run
    time; driver.py no longer re-exports the permission functions, so the
    two are no circle even for the type checker."""
    driver_imports = {m for _, m in imports_of(PKG / "block" / "driver.py")}
    assert "gqemu.block.perms" not in driver_imports
    assert "gqemu.block.driver" in _graph()["gqemu.block.perms"]


def test_no_import_circles():
    circles = _circles(_graph())
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)
