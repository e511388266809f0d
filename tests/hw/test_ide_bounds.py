"""The end of the disk, exactly (reliability.md 6.1/6.2, T47).

The last sector reads and writes normally; the first sector past the end
is ABRT (0x41/0x04), by PIO and DMA, LBA28 and LBA48, and nothing is read
or written outside the image.  QEMU checks the range (ide_sect_range_ok)
before it submits anything and answers with ide_rw_error / ide_dma_error
directly, so the rerror/werror policy is never consulted: no
BLOCK_IO_ERROR is raised, and under ``stop`` and ``ignore`` a past-end
request is still ABRT and the VM does not stop.
"""
from __future__ import annotations

import pytest

from gqemu.block.blk_error import blk_is_stopped
from tests.hw.rig import Rig, make_disk
from tests.hw.test_ide_ata import NSECT, issue, issue48, sector
from tests.hw.test_ide_bmdma import BM, EOT, prds

LAST = NSECT - 1
BUF = 0x2000


@pytest.fixture
def disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


def open_rig(disk, **opts):
    rig = Rig([disk], opts)
    rig.outb(0x3F6, 0x00)
    return rig


def command(rig, cmd, lba, count, lba48):
    if lba48:
        issue48(rig, cmd, lba, count)
    else:
        issue(rig, cmd, lba=lba, count=count)


def pio_read(rig, lba, count, lba48):
    """Returns (status after the command ends, data delivered)."""
    command(rig, 0x24 if lba48 else 0x20, lba, count, lba48)
    data = b""
    for _ in range(count):
        rig.settle()
        if rig.inb(0x3F6) != 0x58:
            break
        data += rig.insw(0x1F0, 256)
    rig.settle()
    return rig.inb(0x1F7), data


def pio_write(rig, lba, data, lba48):
    command(rig, 0x34 if lba48 else 0x30, lba, len(data) // 512, lba48)
    for i in range(0, len(data), 512):
        rig.settle()
        if rig.inb(0x3F6) != 0x58:
            break
        rig.outsw(0x1F0, data[i:i + 512])
    rig.settle()
    return rig.inb(0x1F7)


def dma(rig, write, lba, count, lba48):
    """Returns (BM status, ATA status)."""
    prds(rig, [(BUF, (count * 512) | EOT)])
    rig.outb(BM + 2, 0x06)
    command(rig, (0x35 if lba48 else 0xCA) if write else (0x25 if lba48 else 0xC8),
            lba, count, lba48)
    rig.outb(BM, 0x01 if write else 0x09)
    rig.settle()
    bst = rig.inb(BM + 2)
    rig.outb(BM, 0x00)
    return bst, rig.inb(0x1F7)


LBA_MODES = pytest.mark.parametrize("lba48", [False, True], ids=["lba28", "lba48"])


@LBA_MODES
def test_last_sector_reads_by_pio(disk, lba48):
    rig = open_rig(disk)
    try:
        assert pio_read(rig, LAST, 1, lba48) == (0x50, sector(LAST))
    finally:
        rig.close()


@LBA_MODES
def test_last_sector_reads_by_dma(disk, lba48):
    rig = open_rig(disk)
    try:
        assert dma(rig, False, LAST, 1, lba48) == (0x04, 0x50)
        assert rig.mem_read(BUF, 512) == sector(LAST)
    finally:
        rig.close()


@LBA_MODES
@pytest.mark.parametrize("how", ["pio", "dma"])
def test_last_sector_writes(disk, lba48, how):
    rig = open_rig(disk)
    before = disk.read_bytes()
    try:
        if how == "pio":
            assert pio_write(rig, LAST, b"\xa7" * 512, lba48) == 0x50
        else:
            rig.mem_write(BUF, b"\xa7" * 512)
            assert dma(rig, True, LAST, 1, lba48) == (0x04, 0x50)
    finally:
        rig.close()
    assert disk.read_bytes() == before[:LAST * 512] + b"\xa7" * 512


@LBA_MODES
@pytest.mark.parametrize("lba,count", [(NSECT, 1), (LAST, 2)], ids=["past", "straddling"])
def test_past_end_pio_read(disk, lba48, lba, count):
    """One past the end: ABRT at once.  Straddling: the last sector is
    delivered (the check is per PIO block), then ABRT."""
    rig = open_rig(disk)
    try:
        status, data = pio_read(rig, lba, count, lba48)
        assert (status, rig.inb(0x1F1)) == (0x41, 0x04)
        assert data == (sector(LAST) if count == 2 else b"")
        assert not rig.blks[0].io_error_events       # not an I/O error: no policy
    finally:
        rig.close()


@LBA_MODES
@pytest.mark.parametrize("lba,count", [(NSECT, 1), (LAST, 2)], ids=["past", "straddling"])
def test_past_end_dma_read_transfers_nothing(disk, lba48, lba, count):
    rig = open_rig(disk)
    try:
        rig.mem_write(BUF, b"\x33" * 1024)
        assert dma(rig, False, lba, count, lba48) == (0x04, 0x41)
        assert rig.inb(0x1F1) == 0x04
        assert rig.mem_read(BUF, 1024) == b"\x33" * 1024
        assert not rig.blks[0].io_error_events
    finally:
        rig.close()


@LBA_MODES
@pytest.mark.parametrize("how", ["pio", "dma"])
@pytest.mark.parametrize("lba,count", [(NSECT, 1), (LAST, 2)], ids=["past", "straddling"])
def test_past_end_write_aborts_and_writes_nothing_outside(disk, lba48, how, lba, count):
    """PIO: the data phase runs, then ABRT (straddling: the last sector is
    written first); DMA: ABRT before any data moves.  The file never grows."""
    before = disk.read_bytes()
    rig = open_rig(disk)
    try:
        data = b"\x5c" * 512 * count
        if how == "pio":
            status = pio_write(rig, lba, data, lba48)
        else:
            rig.mem_write(BUF, data)
            status = dma(rig, True, lba, count, lba48)[1]
        assert (status, rig.inb(0x1F1)) == (0x41, 0x04)
        assert not rig.blks[0].io_error_events
    finally:
        rig.close()
    after = disk.read_bytes()
    assert len(after) == NSECT * 512
    if how == "pio" and count == 2:
        assert after == before[:LAST * 512] + b"\x5c" * 512
    else:
        assert after == before


@pytest.mark.parametrize("policy", ["stop", "ignore"])
@pytest.mark.parametrize("op", ["pio-read", "pio-write", "dma-read", "dma-write"])
def test_past_end_is_abrt_whatever_the_error_policy(disk, policy, op):
    """The range check comes before the request, so the policy never sees it."""
    before = disk.read_bytes()
    rig = open_rig(disk, rerror=policy, werror=policy)
    try:
        if op == "pio-read":
            status = pio_read(rig, NSECT, 1, False)[0]
        elif op == "pio-write":
            status = pio_write(rig, NSECT, b"\x77" * 512, False)
        else:
            status = dma(rig, op == "dma-write", NSECT, 1, False)[1]
        assert (status, rig.inb(0x1F1)) == (0x41, 0x04)
        assert not blk_is_stopped(rig.blks[0])
        assert rig.bus0.error_status == 0
        assert not rig.blks[0].io_error_events
        # the drive carries on: the next command works
        assert pio_read(rig, LAST, 1, False) == (0x50, sector(LAST))
    finally:
        rig.close()
    assert disk.read_bytes() == before
