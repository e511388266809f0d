"""gqemu-img against the real qemu-img where qemu-iotests 111, 020, 098,
029, 122, 110 and 126 found differences: each case runs the same setup
(real qemu-img / qemu-io) in two folders, then one command through the
real qemu-img in one and gqemu-img (named qemu-img) in the other, and
requires the same stdout, stderr and exit status (the folder names
replaced), and, where given, the same check of the image afterwards."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

GQEMU_IMG = ("import sys; sys.argv[0] = 'qemu-img'; "
             "from gqemu.cli.qemu_img import main; sys.exit(main())")


def _sh(cmd: str, cwd: Path, tools: dict) -> subprocess.CompletedProcess:
    argv = shlex.split(cmd)
    prog = tools[argv[0]]
    p = subprocess.run(prog + argv[1:], capture_output=True, text=True, cwd=cwd)
    return p


def _filter(text: str, d: Path) -> str:
    text = text.replace(str(d), "DIR")
    return re.sub(r"(?m)^disk size: .*\n", "", text)     # host file system detail


def both(tmp_path: Path, qemu_img: str, qemu_io: str, setup: list[str],
         cmds: list[str]) -> None:
    """Run ``setup`` (real tools) then ``cmds`` with each qemu-img in its
    own folder; compare the outputs of ``cmds``."""
    outs = []
    for name, img in (("q", [qemu_img]), ("g", [sys.executable, "-c", GQEMU_IMG])):
        d = tmp_path / name
        d.mkdir()
        real = {"qemu-img": [qemu_img], "qemu-io": [qemu_io]}
        for cmd in setup:
            p = _sh(cmd, d, real)
            assert p.returncode == 0 or cmd.startswith("-"), (cmd, p.stderr)
        tools = {"qemu-img": img, "qemu-io": [qemu_io], "real-img": [qemu_img]}
        got = []
        for cmd in cmds:
            p = _sh(cmd, d, tools)
            got.append((cmd, p.returncode, _filter(p.stdout, d), _filter(p.stderr, d)))
        outs.append(got)
    for q, g in zip(*outs):
        assert g == q


# ------------------------------------------------ create: backing checks (111)


@pytest.mark.parametrize("args", [
    "-b nonexist 1M",                   # 111: open error + hint, before the format check
    "-b nonexist",
    "-b nonexist -F qcow2 1M",          # the backing file is opened even with a size
    "-u -b nonexist 1M",                # -u: no open, the format is still required
    "-u -b nonexist -F qcow2",          # -u and no size
    "-u -b nonexist -F qcow2 1M",
    "-b base.qcow2 1M",                 # the hint names the detected format
    "-b base.qcow2 -F foo",
    "-b base.qcow2 -F raw",
])
def test_create_backing_checks(tmp_path, qemu_img, qemu_io, args):
    both(tmp_path, qemu_img, qemu_io, ["qemu-img create -q -f qcow2 base.qcow2 2M"],
         ["qemu-img create -f qcow2 t.qcow2 " + args, "real-img info t.qcow2"])
