"""Replay QEMU 7.2's recorded IDE port accesses (refdata/mbr) against gqemu.

SeaBIOS's probe and boot, then the ataprobe program: every ``in`` must
return what QEMU returned, and the disk must end as QEMU left it.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.hw.replay_helper import load_exits, replay_exits
from tests.hw.rig import Rig, decompress


@pytest.fixture
def mbr_disk(tmp_path, refdata):
    return decompress(refdata / "mbr/out/disk-pristine.img.xz", tmp_path / "disk.img")


@pytest.mark.parametrize("readahead", [0, 64])
def test_replay_refdata_mbr_raw(mbr_disk, refdata, tmp_path, readahead):
    records = load_exits(refdata / "mbr/out/exits-raw.jsonl.xz")
    assert len(records) == 5076
    rig = Rig([mbr_disk], readahead=readahead)
    try:
        mismatches = list(replay_exits(rig, records))
        rig.settle()
    finally:
        rig.close()
    assert mismatches[:5] == [] and len(mismatches) == 0
    after = decompress(refdata / "mbr/out/disk-after.img.xz", tmp_path / "after.img")
    assert mbr_disk.read_bytes() == after.read_bytes()


def test_identify_word_for_word(mbr_disk, refdata):
    want = json.loads((refdata / "mbr/out/identify-master.json").read_text())["words"]
    rig = Rig([mbr_disk])
    try:
        rig.outb(0x1F6, 0xA0)
        rig.outb(0x1F7, 0xEC)
        assert rig.inb(0x1F7) == 0x58
        words = [rig.inw(0x1F0) for _ in range(256)]
        assert rig.inb(0x1F7) == 0x50
        assert rig.inw(0x1F0) == 0          # past the end: 0
    finally:
        rig.close()
    assert words == want


def test_replay_refdata_mbr_on_qcow2(mbr_disk, refdata, tmp_path, qemu_img):
    """The same run on the disk stored as qcow2 (made and read back by the
    real qemu-img) gives the same answers and the same disk contents."""
    q = tmp_path / "disk.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(mbr_disk), str(q)],
                   check=True)
    rig = Rig([q], {"format": "qcow2"})
    try:
        mismatches = list(replay_exits(rig, load_exits(refdata / "mbr/out/exits-raw.jsonl.xz")))
        rig.settle()
    finally:
        rig.close()
    assert mismatches == []
    out = tmp_path / "out.img"
    subprocess.run([qemu_img, "check", str(q)], check=True, capture_output=True)
    subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(q), str(out)], check=True)
    after = decompress(refdata / "mbr/out/disk-after.img.xz", tmp_path / "after.img")
    assert out.read_bytes() == after.read_bytes()
