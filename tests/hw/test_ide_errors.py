"""rerror/werror policies (reliability 4.3, T48) and resets racing with
requests in flight (CVE-2023-5088, T38/T39)."""
from __future__ import annotations

import errno

import pytest

import gqemu.hw.dma as hwdma
import gqemu.hw.ide.core as core
from gqemu.aio import AIOCBInfo, BlockAIOCB, aio_bh_schedule_oneshot, qemu_get_aio_context
from gqemu.block.blk_error import blk_is_stopped, blk_resume
from tests.hw.rig import Rig, make_disk
from tests.hw.test_ide_ata import NSECT, issue, sector
from tests.hw.test_ide_bmdma import BM, EOT, prds


@pytest.fixture
def disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


def failing(err, calls):
    """A blk_aio_* stand-in whose requests fail with -err from a BH."""
    def fake(blk, *args):
        cb, opaque = args[-2], args[-1]
        calls.append(args[0] if len(args) > 2 else None)
        acb = BlockAIOCB(AIOCBInfo(), cb, opaque)

        def complete(_):
            acb.refcnt = 0
            cb(opaque, -err)
        aio_bh_schedule_oneshot(qemu_get_aio_context(), complete, None)
        return acb
    return fake


def make(disk, **opts):
    return Rig([disk], opts)


def test_read_error_report(disk, monkeypatch):
    rig = make(disk, rerror="report")
    try:
        calls = []
        monkeypatch.setattr(core, "blk_aio_preadv", failing(errno.EIO, calls))
        issue(rig, 0x20, lba=3, count=1)
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
        assert rig.inw(0x1F0) == 0 and calls == [3 * 512]
        assert rig.blks[0].io_error_events[-1]["action"] == "report"
    finally:
        rig.close()


def test_read_error_ignore_gives_stale_buffer(disk, monkeypatch):
    rig = make(disk, rerror="ignore")
    try:
        issue(rig, 0x20, lba=9, count=1)
        rig.settle()
        assert rig.insw(0x1F0, 256) == sector(9)
        monkeypatch.setattr(core, "blk_aio_preadv", failing(errno.EIO, []))
        issue(rig, 0x20, lba=3, count=1)
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x58, 0x00)
        assert rig.insw(0x1F0, 256) == sector(9)          # whatever was in the buffer
    finally:
        rig.close()


def test_read_error_stop_then_resume_retries(disk, monkeypatch):
    rig = make(disk, rerror="stop")
    try:
        monkeypatch.setattr(core, "blk_aio_preadv", failing(errno.EIO, []))
        issue(rig, 0x20, lba=4, count=1)
        rig.settle()
        assert rig.inb(0x1F7) == 0x50 and blk_is_stopped(rig.blks[0])
        monkeypatch.undo()
        blk_resume(rig.blks[0])
        rig.drain()
        rig.settle()
        assert rig.inb(0x1F7) == 0x58 and rig.insw(0x1F0, 256) == sector(4)
        assert rig.inb(0x1F7) == 0x50
    finally:
        rig.close()


@pytest.mark.parametrize("err,stopped", [(errno.EIO, False), (errno.ENOSPC, True)])
def test_write_error_enospc_policy(disk, monkeypatch, err, stopped):
    rig = make(disk)                             # werror default: enospc
    try:
        monkeypatch.setattr(core, "blk_aio_pwritev", failing(err, []))
        issue(rig, 0x30, lba=4, count=1)
        rig.outsw(0x1F0, b"\x11" * 512)
        rig.settle()
        if stopped:
            assert rig.inb(0x1F7) == 0x50 and blk_is_stopped(rig.blks[0])
            monkeypatch.undo()
            blk_resume(rig.blks[0])
            rig.drain()
            rig.settle()
            assert rig.inb(0x1F7) == 0x50
            assert disk.read_bytes()[4 * 512:5 * 512] == b"\x11" * 512
        else:
            assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
            assert not blk_is_stopped(rig.blks[0])
    finally:
        rig.close()


def test_flush_error_report(disk, monkeypatch):
    rig = make(disk, werror="report")
    try:
        monkeypatch.setattr(core, "blk_aio_flush", lambda blk, cb, opaque: failing(errno.EIO, [])(blk, cb, opaque))
        issue(rig, 0xE7)
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
    finally:
        rig.close()


def test_dma_read_error_report(disk, monkeypatch):
    rig = make(disk, rerror="report")
    try:
        rig.outb(0x3F6, 0)
        monkeypatch.setattr(hwdma, "blk_aio_preadv", failing(errno.EIO, []))
        prds(rig, [(0x2000, 512 | EOT)])
        issue(rig, 0xC8, lba=5, count=1)
        rig.outb(BM, 0x09)
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1), rig.inb(BM + 2)) == (0x41, 0x04, 0x04)
        assert rig.mem_read(0x2000, 512) == bytes(512)
    finally:
        rig.close()


# ------------------------------------------------------- resets in flight

def srst(rig):
    rig.outb(0x3F6, 0x06)
    rig.outb(0x3F6, 0x02)


def test_srst_during_pio_read(disk):
    rig = make(disk)
    try:
        issue(rig, 0x20, lba=3, count=2)
        assert rig.inb(0x1F7) == 0xD0                 # read in flight
        srst(rig)
        rig.settle()
        rig.drain()
        assert [rig.inb(0x1F0 + i) for i in range(1, 8)] == [1, 1, 1, 0, 0, 0xA0, 0x50]
        assert rig.inw(0x1F0) == 0
    finally:
        rig.close()


def test_srst_during_pio_write_writes_nothing_more(disk):
    before = disk.read_bytes()
    rig = make(disk)
    try:
        issue(rig, 0x30, lba=10, count=3)
        rig.outsw(0x1F0, b"\x77" * 512)               # block 1 in flight
        srst(rig)
        rig.settle()
        rig.drain()
        assert [rig.inb(0x1F0 + i) for i in range(1, 8)] == [1, 1, 1, 0, 0, 0xA0, 0x50]
        rig.outsw(0x1F0, b"\x66" * 512)               # no DRQ: dropped
        rig.drain()
    finally:
        rig.close()
    after = disk.read_bytes()
    assert after[:10 * 512] == before[:10 * 512]      # LBA 0 untouched
    assert after[11 * 512:] == before[11 * 512:]


@pytest.mark.parametrize("how", ["srst", "bus_reset"])
def test_reset_during_dma_write_cve_2023_5088(disk, how):
    before = disk.read_bytes()
    rig = make(disk)
    try:
        rig.mem_write(0x8000, b"\xEE" * 4096)
        prds(rig, [(0x8000, 4096 | EOT)])
        issue(rig, 0xCA, lba=100, count=8)
        rig.outb(BM, 0x01)
        assert rig.piix.bmdma[0].aiocb is not None    # the write is in flight
        if how == "srst":
            srst(rig)
        else:
            rig.piix.reset()
        rig.settle()
        rig.drain()
        regs = [rig.inb(0x1F0 + i) for i in range(1, 8)]
        assert regs[6] == 0x50
        if how == "srst":
            assert regs == [1, 1, 1, 0, 0, 0xA0, 0x50]
        assert rig.inb(BM + 2) & 0x01 == 0
    finally:
        rig.close()
    after = disk.read_bytes()
    assert after[:100 * 512] == before[:100 * 512]    # nothing at LBA 0
    assert after[108 * 512:] == before[108 * 512:]


def test_bus_reset_during_dma_read_writes_no_ram(disk):
    rig = make(disk)
    try:
        prds(rig, [(0x2000, 4096 | EOT)])
        issue(rig, 0xC8, lba=100, count=8)
        rig.outb(BM, 0x09)
        rig.piix.reset()
        rig.drain()
        assert rig.mem_read(0x2000, 4096) == bytes(4096)
        assert rig.inb(0x1F7) == 0x50 and rig.inb(BM + 2) == 0
    finally:
        rig.close()


def test_late_completion_after_reset_and_new_command(disk):
    """A stale completion must not finish the next command's work."""
    rig = make(disk)
    try:
        issue(rig, 0x20, lba=3, count=1)              # read of LBA 3 in flight
        rig.piix.reset()
        issue(rig, 0x20, lba=7, count=1)              # a new read, also in flight
        rig.settle()
        rig.drain()
        assert rig.inb(0x1F7) == 0x58 and rig.insw(0x1F0, 256) == sector(7)
    finally:
        rig.close()


def test_dma_write_enospc_stops_then_retries(disk, monkeypatch):
    rig = make(disk)                             # werror=enospc
    try:
        rig.outb(0x3F6, 0)
        payload = bytes((i * 3) & 0xFF for i in range(2048))
        rig.mem_write(0x8000, payload)
        prds(rig, [(0x8000, 2048 | EOT)])
        monkeypatch.setattr(hwdma, "blk_aio_pwritev", failing(errno.ENOSPC, []))
        issue(rig, 0xCA, lba=60, count=4)
        rig.outb(BM, 0x01)
        rig.settle()
        assert blk_is_stopped(rig.blks[0]) and rig.bus0.error_status
        monkeypatch.undo()
        blk_resume(rig.blks[0])
        rig.drain()
        rig.settle()
        assert rig.inb(0x1F7) == 0x50 and rig.inb(BM + 2) == 0x04
        assert rig.inb(0x1F3) == 64 and rig.bus0.error_status == 0
    finally:
        rig.close()
    assert disk.read_bytes()[60 * 512:64 * 512] == payload


def test_flush_stop_then_retry(disk, monkeypatch):
    rig = make(disk, werror="stop")
    try:
        monkeypatch.setattr(core, "blk_aio_flush",
                            lambda blk, cb, opaque: failing(errno.EIO, [])(blk, cb, opaque))
        issue(rig, 0xE7)
        rig.settle()
        assert blk_is_stopped(rig.blks[0])
        monkeypatch.undo()
        blk_resume(rig.blks[0])
        rig.drain()
        rig.settle()
        assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x50, 0x00)
    finally:
        rig.close()
