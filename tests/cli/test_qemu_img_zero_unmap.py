"""qcow2 zero writes honour BDRV_REQ_MAY_UNMAP as QEMU 7.2 does: without
it (qemu-io ``write -z``) a normal cluster stays allocated with the zero
flag; with it (``write -zu``, and ``qemu-img convert -n``, which opens its
target with discard=unmap) the host cluster is freed.  The resulting
image maps (read by the real ``qemu-img map``) must equal the ones QEMU's
own tools leave."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

GQEMU_IO = [sys.executable, "-m", "gqemu.cli.qemu_io"]
GQEMU_IMG = [sys.executable, "-m", "gqemu.cli.qemu_img"]


def _map(qemu_img: str, path) -> str:
    return subprocess.run([qemu_img, "map", "--output=json", str(path)], check=True,
                          capture_output=True, text=True).stdout


def _base(qemu_img: str, qemu_io: str, path, opts: str) -> None:
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", opts, str(path), "1M"],
                   check=True)
    subprocess.run([qemu_io, "-c", "write -P 7 0 1M", str(path)], check=True,
                   stdout=subprocess.DEVNULL)


@pytest.mark.parametrize("opts", ["cluster_size=65536", "cluster_size=4096",
                                  "extended_l2=on,cluster_size=65536"])
# extended L2: only whole-cluster zeroing is compared (gqemu writes a
# partial-cluster zero range as data where QEMU zeroes the subclusters)
def test_write_zeroes_map_same_as_qemu(qemu_img, qemu_io, tmp_path, opts):
    want, got = tmp_path / "want.qcow2", tmp_path / "got.qcow2"
    _base(qemu_img, qemu_io, want, opts)
    shutil.copy(want, got)
    cmds = ["-c", "write -z 0 128k", "-c", "write -z 512k 64k", "-c", "write -zu 768k 64k"]
    if "extended_l2" not in opts:
        cmds += ["-c", "write -z 700k 4k", "-c", "write -zu 900k 36k"]
    subprocess.run([qemu_io] + cmds + [str(want)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(GQEMU_IO + cmds + [str(got)], check=True, stdout=subprocess.DEVNULL)
    assert _map(qemu_img, got) == _map(qemu_img, want)


@pytest.mark.parametrize("sparse", [None, "0"])
def test_convert_n_onto_qcow2_map_same_as_qemu(qemu_img, qemu_io, tmp_path, sparse):
    """``-S 0`` opens the target without discard=unmap: zeroes stay allocated."""
    src = tmp_path / "src.raw"
    subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(src), "1M"], check=True)
    subprocess.run([qemu_io, "-f", "raw", "-c", "write -P 1 64k 64k", str(src)], check=True,
                   stdout=subprocess.DEVNULL)
    want, got = tmp_path / "want.qcow2", tmp_path / "got.qcow2"
    _base(qemu_img, qemu_io, want, "cluster_size=65536")
    shutil.copy(want, got)
    args = ["convert", "-n", "-f", "raw", "-O", "qcow2"] + (["-S", sparse] if sparse else [])
    subprocess.run([qemu_img] + args + [str(src), str(want)], check=True)
    subprocess.run(GQEMU_IMG + args + [str(src), str(got)], check=True)
    assert _map(qemu_img, got) == _map(qemu_img, want)
