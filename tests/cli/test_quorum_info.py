"""What QEMU 7.2's iotest 110 checks of a quorum node, against the real
tools: ``qemu-img info`` of a qcow2 image whose file is a quorum node names
it ``json:{...}`` and cannot place a relative backing file name ("cannot
determine actual path": quorum's children have no common folder); opening
the image with its backing file fails as QEMU's qemu-io does."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

GQEMU_IO = [sys.executable, "-m", "gqemu.cli.qemu_io"]
GQEMU_IMG = [sys.executable, "-m", "gqemu.cli.qemu_img"]


def _run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def _quorum_image(qemu_img: str, d) -> str:
    _run([qemu_img, "create", "-q", "-f", "qcow2", str(d / "t.qcow2.base"), "64M"])
    _run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "t.qcow2.base", "-F", "qcow2",
          str(d / "t.qcow2")], cwd=d)
    shutil.copy(d / "t.qcow2", d / "t.qcow2.copy")
    return ("json:{'driver': 'qcow2', 'file': {'driver': 'quorum', 'vote-threshold': 1, "
            "'children': [{'driver': 'file', 'filename': '%s/t.qcow2'}, "
            "{'driver': 'file', 'filename': '%s/t.qcow2.copy'}]}}" % (d, d))


def test_info_of_qcow2_on_quorum_as_qemu_img(qemu_img, tmp_path):
    name = _quorum_image(qemu_img, tmp_path)
    want = _run([qemu_img, "info", name]).stdout
    got = _run(GQEMU_IMG + ["info", name]).stdout
    assert "backing file: t.qcow2.base (cannot determine actual path)\n" in want

    def strip(text: str) -> list:           # json key order is QEMU's hash order
        return [ln for ln in text.splitlines() if not ln.startswith("image: json:{")]
    assert strip(got) == strip(want)
    assert got.startswith("image: json:{")
    jwant = _run([qemu_img, "info", "--output=json", name]).stdout
    jgot = _run(GQEMU_IMG + ["info", "--output=json", name]).stdout
    assert "full-backing-filename" not in jwant and "full-backing-filename" not in jgot


def test_open_qcow2_on_quorum_with_relative_backing_fails_as_qemu_io(qemu_img, qemu_io,
                                                                     tmp_path):
    name = _quorum_image(qemu_img, tmp_path)
    want = subprocess.run([qemu_io, "-c", "read 0 512", name], capture_output=True, text=True)
    got = subprocess.run(GQEMU_IO + ["-c", "read 0 512", name], capture_output=True,
                         text=True)
    assert want.returncode == got.returncode == 1
    assert got.stderr.split(":", 1)[1] == want.stderr.split(":", 1)[1]
    assert "Cannot generate a base directory for quorum nodes" in want.stderr
