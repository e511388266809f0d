"""The gqemu.cli modules import one way (issue 15): the qemu-img commands
import ``qemu_img_tool`` (the shared helpers) downward, and only the
dispatcher ``qemu_img`` imports the commands, so no two cli modules import
each other, directly or through others.  Function-level imports count: a
cycle hidden in a function is still a cycle; an import under ``if
TYPE_CHECKING:`` (annotations only) never runs and is left out, as in
tests/test_import_cycles.py.  The imports are read with ``ast``, as
tests/test_layering.py does."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_layering import _type_checking_only  # noqa: E402

CLI = Path(__file__).resolve().parents[2] / "gqemu" / "cli"


def _cli_imports(path: Path) -> set[str]:
    """The gqemu.cli modules ``path`` imports, at any depth of the file."""
    mods = {p.stem for p in CLI.glob("*.py")}
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [node.module + "." + a.name for a in node.names]
        for name in names:
            if name.startswith("gqemu.cli."):
                stem = name.split(".")[2]
                if stem in mods and stem != path.stem:
                    found.add(stem)
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _cli_imports(p) for p in CLI.glob("*.py")}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when none."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str]:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                stack = path + [m]
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t, path + [m])
                if found:
                    return found
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state:
            found = visit(m, [])
            if found:
                return found
    return []


def test_cli_modules_form_no_import_cycle():
    cycle = _cycle(_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_type_checking_imports_are_left_out():
    """The qemu-io command modules name QemuIO for the type checker only;
    qemu_io imports them at run time."""
    graph = _graph()
    assert "from gqemu.cli.qemu_io import QemuIO" in (CLI / "qemu_io_rw.py").read_text()
    assert "qemu_io" not in graph["qemu_io_rw"]
    assert "qemu_io_open" in graph["qemu_io"]


def test_qemu_img_commands_import_the_helpers_not_the_dispatcher():
    graph = _graph()
    assert not {m for m in graph["qemu_img_tool"] if m.startswith("qemu_img")}
    users = sorted(m for m, deps in graph.items() if "qemu_img" in deps)
    assert users == [], "modules importing the dispatcher qemu_img: %s" % users
