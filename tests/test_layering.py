"""Imports point one way (STYLE §1): cli/machine/replay/guest/bench -> kvm ->
hw -> block -> threadpool -> runtime.  Parses every module with ``ast``
(function-level imports included) and fails on any edge that points up."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "gqemu"

RANKS = {
    "runtime": 0, "threadpool": 1, "block": 2, "hw": 3, "kvm": 4, "top": 5,
}
RUNTIME = {"gqemu", "gqemu.coroutine", "gqemu.aio", "gqemu.trace", "gqemu.trace_json",
           "gqemu.coroutine_ucontext", "gqemu.qemu_coroutine", "gqemu.qemu_coroutine_lock",
           "gqemu.qemu_coroutine_sleep", "gqemu.qemu_timer", "gqemu.aio_context",
           "gqemu.aio_posix",
           "gqemu.plant", "gqemu.cutils",
           "gqemu.sched"}


def layer_of(module: str) -> str:
    if module in RUNTIME:
        return "runtime"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ("threadpool", "block", "hw", "kvm"):
        return parts[1]
    return "top"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:``, which never run."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, (ast.Name, ast.Attribute)) \
                and (getattr(node.test, "id", None) or getattr(node.test, "attr", None)) \
                == "TYPE_CHECKING":
            out.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return out


def imports_of(path: Path, type_checking: bool = True) -> list[tuple[int, str]]:
    """The gqemu modules ``path`` imports, function-level imports included;
    with ``type_checking=False`` without those under ``if TYPE_CHECKING:``
    (annotations only: no import happens at run time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    skip = set() if type_checking else _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            for a in node.names:            # "from gqemu import aio"
                found.append((node.lineno, mod + "." + a.name))
    return [(ln, m) for ln, m in found if m == "gqemu" or m.startswith("gqemu.")]


def test_no_import_points_up():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = module_name(path)
        mine = RANKS[layer_of(me)]
        for lineno, target in imports_of(path):
            if target.count(".") > 1 and layer_of(target) == "top" \
                    and layer_of(target.rpartition(".")[0]) != "top":
                target = target.rpartition(".")[0]   # "from gqemu.block import x"
            if RANKS[layer_of(target)] > mine:
                bad.append("%s:%d imports %s (%s -> %s)" % (
                    path.relative_to(PKG.parent), lineno, target,
                    layer_of(me), layer_of(target)))
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_only_threadpool_starts_threads():
    """STYLE §8: no hidden threads, no monkey-patching in library code."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent)
        text = path.read_text(encoding="utf-8")
        if "gevent.monkey" in text or "monkey.patch_all" in text:
            bad.append("%s: gevent.monkey" % rel)
        if rel.parts[1] in ("threadpool", "cli", "bench"):
            continue
        if "threading.Thread(" in text or "start_new_thread" in text:
            bad.append("%s: starts a thread" % rel)
    assert not bad, "\n".join(bad)


def test_layer_classification_sanity():
    assert layer_of("gqemu.aio") == "runtime"
    assert layer_of("gqemu.block.io") == "block"
    assert layer_of("gqemu.cli.main") == "top"
    assert RANKS[layer_of("gqemu.hw.ide.core")] > RANKS[layer_of("gqemu.block")]
