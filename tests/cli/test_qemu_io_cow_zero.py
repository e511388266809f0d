"""A partial write into a qcow2 zero cluster whose new host cluster is a
reused one (freed compressed data) over a hole of a sparse image file:
the copy-on-write regions read as zeroes, so QEMU 7.2 zeroes the host
cluster efficiently (FALLOC_FL_ZERO_RANGE, which leaves the hole) instead
of writing zero buffers, and ``qemu-img map`` shows the holes as zero.
QEMU: qcow2.c is_zero_cow -> bdrv_co_is_zero_fast (block status with
want_zero false), handle_alloc_space.

Each tool gets a sparse copy of one prepared image (the corpus runner's
copy fills the holes, so it cannot see this).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
_GQEMU_IO = ("import sys; sys.path.insert(0, %r); sys.argv[0] = 'qemu-io'; "
             "from gqemu.cli.qemu_io import main; sys.exit(main())" % str(_ROOT))
_PREP = ["-c", "write -c 0 64k", "-c", "write -P 3 128k 64k", "-c", "write -z 256k 64k"]


@pytest.mark.parametrize("session", [
    ["write -z 0 4k", "discard 128k 64k", "write -P 0 300k 4k"],
    ["write -z 0 4k", "write -P 5 260k 4k", "write -P 6 384k 1k"],
])
def test_cow_from_zero_cluster_keeps_holes(session: list[str], qemu_img: str,
                                           qemu_io: str, tmp_path: Path) -> None:
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "base.img", "1M"],
                   cwd=tmp_path, check=True)
    subprocess.run([qemu_io, "-f", "qcow2"] + _PREP + ["base.img"], cwd=tmp_path,
                   check=True, capture_output=True)
    maps = []
    for tool in ([qemu_io], [sys.executable, "-c", _GQEMU_IO]):
        d = tmp_path / str(len(maps))
        d.mkdir()
        # (a sparse copy: the zero blocks of the image file become holes)
        subprocess.run(["cp", "--sparse=always", "base.img", str(d / "t.img")],
                       cwd=tmp_path, check=True)
        args = [a for c in session for a in ("-c", c)]
        p = subprocess.run(tool + ["-f", "qcow2"] + args + ["t.img"], cwd=d,
                           capture_output=True, text=True)
        assert p.returncode == 0 and not p.stderr, p.stderr
        maps.append(subprocess.run([qemu_img, "map", "--output=json", "t.img"], cwd=d,
                                   check=True, capture_output=True, text=True).stdout)
    assert maps[0] == maps[1]
