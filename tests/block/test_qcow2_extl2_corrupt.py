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


GQEMU_IMG = ("import sys; sys.argv[0] = 'qemu-img'; "
             "from gqemu.cli.qemu_img import main; sys.exit(main())")


@pytest.mark.parametrize("zero", [True, False])
def test_check_repairs_unaligned_entry_without_data(qemu_img: str, qemu_io: str,
                                                    tmp_path: Path, zero: bool) -> None:
    """iotest 271: an unaligned host offset in an entry whose subclusters
    hold no data is repaired by 'check -r all' (the entry becomes zero,
    its cluster a leak that is repaired too); the data reads back.  With
    data in a subcluster it cannot be repaired: the refcounts are rebuilt
    and the entry is still counted (QEMU reports the corruptions fixed as
    those before the rebuild less those after it)."""
    outs = []
    for tag, argv in (("qemu", [qemu_img]), ("gqemu", [sys.executable, "-c", GQEMU_IMG])):
        d = tmp_path / tag
        d.mkdir()
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", "b.raw", "128k"], cwd=d,
                       check=True)
        subprocess.run([qemu_io, "-f", "raw", "-c", "write -q -P 0xff 0 128k", "b.raw"],
                       cwd=d, check=True)
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on",
                        "-F", "raw", "-b", "b.raw", "t.qcow2"], cwd=d, check=True)
        for cmd in ("write -q -P 1 4k 2k", "write -q -z 4k 2k")[:2 if zero else 1]:
            subprocess.run([qemu_io, "-c", cmd, "t.qcow2"], cwd=d, check=True)
        with open(d / "t.qcow2", "r+b") as f:
            f.seek(0x40000 + 6)
            f.write(b"\x02")
        p = subprocess.run(argv + ["check", "-r", "all", "t.qcow2"], cwd=d,
                           capture_output=True, text=True)
        r = subprocess.run([qemu_io, "-c", "read -q -P 0xff 0 4k", "-c", "read -q -P 0 4k 2k",
                            "-c", "read -q -P 0xff 6k 122k", "t.qcow2"], cwd=d,
                           capture_output=True, text=True)
        outs.append((p.returncode, p.stdout, p.stderr, r.returncode, r.stdout, r.stderr))
    assert outs[0] == outs[1]
    assert ("Repairing offset=50200" if zero else "Rebuilding refcount structure") \
        in outs[0][1] + outs[0][2]
