"""The optional PIO read-ahead keeps QEMU's guest-visible behaviour: same
data, BSY until the loop runs, errors at the same block, nothing after a
reset -- with fewer block requests."""
from __future__ import annotations

import errno

import pytest

import gqemu.hw.ide.core as core
import gqemu.hw.ide.readahead as ra_mod
from tests.hw.rig import Rig, make_disk
from tests.hw.test_ide_ata import NSECT, issue, regs, sector, wait_status
from tests.hw.test_ide_errors import failing


@pytest.fixture
def disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


def test_same_data_fewer_requests(disk, monkeypatch):
    calls = []
    real = ra_mod.blk_aio_preadv

    def spy(blk, offset, qiov, flags, cb, opaque):
        calls.append((offset, qiov.size))
        return real(blk, offset, qiov, flags, cb, opaque)
    monkeypatch.setattr(ra_mod, "blk_aio_preadv", spy)
    rig = Rig([disk], readahead=16)
    try:
        issue(rig, 0x20, lba=100, count=40)
        for n in range(100, 140):
            assert rig.inb(0x1F7) == 0xD0           # BSY until the loop runs
            assert wait_status(rig) == 0x58
            assert rig.insw(0x1F0, 256) == sector(n)
        assert wait_status(rig) == 0x50 and regs(rig)[:5] == [0, 0, 140, 0, 0]
    finally:
        rig.close()
    assert calls == [(100 * 512, 16 * 512), (116 * 512, 16 * 512), (132 * 512, 8 * 512)]


def test_window_stops_at_the_disk_end(disk):
    rig = Rig([disk], readahead=64)
    try:
        issue(rig, 0x20, lba=NSECT - 3, count=5)
        for n in range(NSECT - 3, NSECT):
            assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == sector(n)
        assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04
    finally:
        rig.close()


def test_error_hits_the_same_block(disk, monkeypatch):
    rig = Rig([disk], {"rerror": "report"}, readahead=16)
    try:
        issue(rig, 0x20, lba=10, count=2)
        assert wait_status(rig) == 0x58             # the window holds 10..11
        monkeypatch.setattr(ra_mod, "blk_aio_preadv", failing(errno.EIO, []))
        monkeypatch.setattr(core, "blk_aio_preadv", failing(errno.EIO, []))
        assert rig.insw(0x1F0, 256) == sector(10)
        assert wait_status(rig) == 0x58             # served from the window
        monkeypatch.undo()
        assert rig.insw(0x1F0, 256) == sector(11) and wait_status(rig) == 0x50
        # a new command: the window is gone; its read fails as a whole and
        # the block is retried alone, which fails too -> ABRT on block 1
        monkeypatch.setattr(ra_mod, "blk_aio_preadv", failing(errno.EIO, []))
        monkeypatch.setattr(core, "blk_aio_preadv", failing(errno.EIO, []))
        issue(rig, 0x20, lba=20, count=4)
        assert wait_status(rig) == 0x41 and rig.inb(0x1F3) == 20
        assert len(rig.blks[0].io_error_events) == 1
    finally:
        rig.close()


def test_reset_drops_the_window(disk):
    rig = Rig([disk], readahead=16)
    try:
        issue(rig, 0x20, lba=50, count=8)
        rig.outb(0x3F6, 0x06)                       # SRST while the window loads
        rig.outb(0x3F6, 0x02)
        rig.settle()
        rig.drain()
        assert regs(rig) == [1, 1, 1, 0, 0, 0xA0, 0x50] and rig.inw(0x1F0) == 0
        issue(rig, 0x20, lba=51, count=1)
        assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == sector(51)
    finally:
        rig.close()
