"""An extended-L2 entry whose subcluster is both zero and allocated (iotest
271's corrupted-bitmap cases): read and write fail with EIO and mark the
image corrupt with QEMU 7.2's exact message (the read path's has two
spaces before the parenthesis, the write path's one)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

GQEMU_IO = ("import sys; sys.argv[0] = 'qemu-io'; "
            "from gqemu.cli.qemu_io import main; sys.exit(main())")


def _image(qemu_img: str, qemu_io: str, d: Path) -> Path:
    d.mkdir()
    img = d / "t.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on",
                    str(img), "1M"], check=True)
    subprocess.run([qemu_io, "-c", "write -q 32k 128k", str(img)], check=True)
    with open(img, "r+b") as f:             # cluster 1's bitmap: zero bit 0 too
        f.seek(0x40000 + 24)
        f.write(struct.pack(">I", 1))
    return img


@pytest.mark.parametrize("cmd", ["read 0 192k", "write 0 192k"])
def test_zero_and_allocated_subcluster(cmd: str, qemu_img: str, qemu_io: str,
                                       tmp_path: Path) -> None:
    results = []
    for tag, argv in (("qemu", [qemu_io]), ("gqemu", [sys.executable, "-c", GQEMU_IO])):
        img = _image(qemu_img, qemu_io, tmp_path / tag)
        p = subprocess.run(argv + ["-c", cmd, "t.qcow2"], cwd=img.parent,
                           capture_output=True, text=True)
        results.append((p.returncode, p.stdout, p.stderr))
    assert results[0] == results[1]
    assert "Invalid cluster entry found" in results[0][1] + results[0][2]
