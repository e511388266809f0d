"""Request splitting against the node's limits, as QEMU 7.2's block/io.c
and blkdebug do it (iotests 177 and 204): the same qemu-io commands are run
by gqemu-io and the real qemu-io on copies of one image, and the real
``qemu-img map`` of the two results must be equal.

- discard: bdrv_co_pdiscard hands the unaligned head and tail to the driver
  as pieces of their own; blkdebug drops those shorter than its ``align``,
  qcow2 those smaller than a cluster, file-posix punches them;
- zero writes: blkdebug refuses pieces shorter than ``opt-write-zero``
  (-ENOTSUP), so the block layer writes zeroes there as data;
- ``qemu-img map`` of a blkdebug node looks through the filter to the
  image's backing files.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

GQEMU_IO = [sys.executable, "-m", "gqemu.cli.qemu_io"]
GQEMU_IMG = [sys.executable, "-m", "gqemu.cli.qemu_img"]
LIMITS = ("driver=blkdebug,image.driver=qcow2,align=512,opt-write-zero=15M,"
          "max-write-zero=15M,opt-discard=15M,max-discard=15M")


def _run(cmd: list) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _map(qemu_img: str, path) -> str:
    return _run([qemu_img, "map", "--output=json", str(path)])


def _chain(qemu_img: str, qemu_io: str, tmp_path) -> tuple:
    """A 128M base of 11s, an overlay with 1M clusters holding 22s over
    0..110M; returns the (want, got) overlays."""
    base = tmp_path / "b.qcow2"
    want, got = tmp_path / "want.qcow2", tmp_path / "got.qcow2"
    _run([qemu_img, "create", "-q", "-f", "qcow2", str(base), "128M"])
    _run([qemu_io, "-c", "write -P 11 0 128M", str(base)])
    _run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=1M", "-b",
          str(base), "-F", "qcow2", str(want)])
    _run([qemu_io, "-c", "write -P 22 0 110M", str(want)])
    shutil.copy(want, got)
    return want, got


@pytest.mark.parametrize("cmd", ["discard 80000001 30M", "write -z 32M 32M"])
def test_blkdebug_limits_map_same_as_qemu(qemu_img, qemu_io, tmp_path, cmd):
    want, got = _chain(qemu_img, qemu_io, tmp_path)
    for prog, img in (([qemu_io], want), (GQEMU_IO, got)):
        out = _run(prog + ["-c", "open -o %s blkdebug::%s" % (LIMITS, img), "-c", cmd])
        assert "bytes at offset" in out, out
    assert _map(qemu_img, got) == _map(qemu_img, want)


def test_map_through_blkdebug_shows_backing(qemu_img, qemu_io, tmp_path):
    want, _ = _chain(qemu_img, qemu_io, tmp_path)
    opts = ("driver=blkdebug,image.driver=qcow2,image.file.driver=file,"
            "image.file.filename=%s,align=4k" % want)
    args = ["map", "--output=json", "--image-opts", opts]
    assert _run(GQEMU_IMG + args) == _run([qemu_img] + args)


def test_unaligned_discard_on_odirect_raw_punches(qemu_img, qemu_io, tmp_path):
    """file-posix with O_DIRECT (request_alignment 512 or more): the
    unaligned pieces of a discard reach it and are punched to zeroes."""
    want, got = tmp_path / "want.raw", tmp_path / "got.raw"
    _run([qemu_img, "create", "-q", "-f", "raw", str(want), "64k"])
    _run([qemu_io, "-f", "raw", "-c", "write -P 7 0 64k", str(want)])
    shutil.copy(want, got)
    cmd = ["-t", "none", "-d", "unmap", "-f", "raw", "-c", "discard 100 5000"]
    try:
        _run([qemu_io] + cmd + [str(want)])
    except subprocess.CalledProcessError:
        pytest.skip("no O_DIRECT on this file system")
    _run(GQEMU_IO + cmd + [str(got)])
    assert got.read_bytes() == want.read_bytes()
    assert want.read_bytes()[100:5100] == bytes(5000)
