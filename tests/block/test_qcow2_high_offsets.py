"""qcow2 entries that point past 4 GiB of host file.

Every other qcow2 test image is small, so every host offset fits in 32
bits.  ``preallocation=metadata`` makes real qemu-img map every cluster of
a 6 GiB image to a host offset up front (the file is sparse), so the data
of the last gigabytes lives past 4 GiB.  Real qemu-io and gqemu must agree
on where it is, both ways, and real qemu-img check must stay clean.
"""
from __future__ import annotations

import json
import subprocess

import gqemu.block  # noqa: F401  (registers the drivers)
from gqemu.block.block_backend import blk_new_open, blk_pread, blk_pwrite, blk_unref

G = 1 << 30
SIZE = 6 * G
THEIRS = 5 * G + 12345 * 512          # qemu-io writes here, gqemu reads
OURS = 5 * G + 512 * 1024 * 3         # gqemu writes here, qemu-io reads


def host_offset(qemu_img, path, virt):
    """Where real qemu-img says virtual offset ``virt`` is in the file."""
    out = subprocess.run([qemu_img, "map", "--output=json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    for e in json.loads(out):
        if e["start"] <= virt < e["start"] + e["length"] and "offset" in e:
            return e["offset"] + virt - e["start"]
    return None


def test_data_past_4g_of_host_file(tmp_path, qemu_img, qemu_io):
    img = tmp_path / "big.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o",
                    "preallocation=metadata,cluster_size=65536", str(img), str(SIZE)],
                   check=True)
    assert host_offset(qemu_img, img, THEIRS) > 4 * G
    assert host_offset(qemu_img, img, OURS) > 4 * G
    subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x6b %d 4096" % THEIRS,
                    "-c", "write -P 0x11 %d 4096" % (THEIRS - 4 * G), str(img)],
                   check=True, capture_output=True)

    blk = blk_new_open(str(img), {"format": "qcow2"})
    try:
        assert blk_pread(blk, THEIRS, 4096) == b"\x6b" * 4096
        assert blk_pread(blk, THEIRS - 4 * G, 4096) == b"\x11" * 4096
        assert blk_pwrite(blk, OURS, b"\xd4" * 8192) >= 0
        assert blk_pread(blk, OURS - 512, 512) == bytes(512)
    finally:
        blk_unref(blk)

    p = subprocess.run([qemu_io, "-f", "qcow2", "-r",
                        "-c", "read -P 0xd4 %d 8192" % OURS,
                        "-c", "read -P 0 %d 8192" % (OURS - 4 * G),
                        "-c", "read -P 0x6b %d 4096" % THEIRS, str(img)],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "fail" not in p.stdout.lower(), p.stdout + p.stderr
    chk = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
