"""PIIX bus-master DMA as QEMU 7.2 behaves (reliability.md 6.2, T36/T37).

PRD table at 0x1000, buffer at 0x2000, READ DMA of LBA 5; BAR4 at 0xc000.
"""
from __future__ import annotations

import pytest

from tests.hw.rig import Rig, make_disk
from tests.hw.test_ide_ata import NSECT, issue, sector

BM = 0xC000
EOT = 0x80000000


@pytest.fixture
def disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


@pytest.fixture
def rig(disk):
    r = Rig([disk])
    r.outb(0x3F6, 0x00)
    yield r
    r.close()


def prds(rig, entries, at=0x1000):
    data = b"".join(a.to_bytes(4, "little") + s.to_bytes(4, "little") for a, s in entries)
    rig.mem_write(at, data)
    rig.outl(BM + 4, at)


def dma(rig, entries, cmd=0xC8, lba=5, count=1, start=0x09):
    prds(rig, entries)
    issue(rig, cmd, lba=lba, count=count)
    assert rig.inb(0x3F6) == 0x58
    rig.outb(BM, start)
    rig.settle()
    return rig.inb(BM + 2), rig.inb(0x3F6)


def test_read_dma_512_eot(rig):
    assert dma(rig, [(0x2000, 512 | EOT)]) == (0x04, 0x50)
    assert rig.mem_read(0x2000, 512) == sector(5)
    assert rig.irq() == 1
    assert rig.inb(0x1F3) == 6 and rig.inb(0x1F2) == 0


def test_short_prd_no_irq_not_active_nothing_written(rig):
    assert dma(rig, [(0x2000, 256 | EOT)]) == (0x00, 0x50)
    assert rig.mem_read(0x2000, 512) == bytes(512)
    assert rig.irq() == 0 and rig.inb(0x1F1) == 0


def test_one_sector_short_prdt(rig):
    assert dma(rig, [(0x2000, 512 | EOT)], count=2) == (0x00, 0x50)
    assert rig.mem_read(0x2000, 512) == bytes(512)


def test_long_prd_stays_active(rig):
    assert dma(rig, [(0x2000, 1024 | EOT)]) == (0x05, 0x50)
    assert rig.mem_read(0x2000, 512) == sector(5)
    rig.outb(BM, 0x08)                          # stop
    assert rig.inb(BM + 2) == 0x04


def test_size_zero_is_64k(rig):
    assert dma(rig, [(0x2000, 0 | EOT)]) == (0x05, 0x50)
    assert rig.mem_read(0x2000, 512) == sector(5)


def test_two_half_prds(rig):
    assert dma(rig, [(0x2000, 256), (0x3000, 256 | EOT)]) == (0x04, 0x50)
    assert rig.mem_read(0x2000, 256) + rig.mem_read(0x3000, 256) == sector(5)


def test_odd_size_bit0_ignored(rig):
    assert dma(rig, [(0x2000, 513 | EOT)]) == (0x04, 0x50)


def test_lba_past_end(rig):
    assert dma(rig, [(0x2000, 512 | EOT)], lba=4000) == (0x04, 0x41)
    assert rig.inb(0x1F1) == 0x04 and rig.mem_read(0x2000, 512) == bytes(512)


def test_buffer_outside_ram_is_dropped(rig):
    assert dma(rig, [(0xF0000000, 512 | EOT)]) == (0x04, 0x50)


def test_no_eot_stops_after_one_page(rig):
    assert dma(rig, [(0x2000, 512)]) == (0x05, 0x50)
    assert rig.mem_read(0x2000, 512) == sector(5)


def test_prd_table_outside_ram(rig):
    rig.outl(BM + 4, 0xFFFFF000)
    issue(rig, 0xC8, lba=5, count=1)
    rig.outb(BM, 0x09)
    rig.settle()
    assert rig.inb(BM + 2) == 0x05 and rig.inb(0x1F7) == 0x50


def test_multi_sector_read_and_write_dma(rig, disk):
    assert dma(rig, [(0x2000, 2048), (0x4000, 2048 | EOT)], lba=100, count=8) == (0x04, 0x50)
    got = rig.mem_read(0x2000, 2048) + rig.mem_read(0x4000, 2048)
    assert got == b"".join(sector(n) for n in range(100, 108))
    payload = bytes((i * 13) & 0xFF for i in range(4096))
    rig.mem_write(0x8000, payload)
    rig.outb(BM, 0x00)
    rig.outb(BM + 2, 0x04)                      # write 1 to clear INTR
    assert rig.inb(BM + 2) == 0x00
    assert dma(rig, [(0x8000, 4096 | EOT)], cmd=0xCA, lba=300, count=8, start=0x01) == (0x04, 0x50)
    assert disk.read_bytes()[300 * 512:308 * 512] == payload
    assert rig.inb(0x1F3) == 0x34 and rig.inb(0x1F4) == 0x01      # LBA 308


def test_start_before_command(rig):
    prds(rig, [(0x2000, 512 | EOT)])
    rig.outb(BM, 0x09)                           # ACTIVE, nothing to do yet
    assert rig.inb(BM + 2) == 0x01
    issue(rig, 0xC8, lba=7, count=1)             # runs at once
    rig.settle()
    assert rig.inb(BM + 2) == 0x04 and rig.mem_read(0x2000, 512) == sector(7)


def test_registers(rig):
    rig.outb(BM, 0xFF)
    assert rig.inb(BM) == 0x09
    rig.outb(BM, 0x00)
    rig.outb(BM + 2, 0x67)                       # bits 5-6 r/w, ACTIVE read-only
    assert rig.inb(BM + 2) == 0x60
    assert rig.inw(BM) == 0xFFFF and rig.inl(BM) == 0xFFFFFFFF
    assert rig.inb(BM + 1) == 0xFF and rig.inb(BM + 3) == 0xFF
    rig.outl(BM + 4, 0x12345677)
    assert rig.inl(BM + 4) == 0x12345674 and rig.inw(BM + 6) == 0x1234
    rig.outb(BM + 5, 0xAB)
    assert rig.inl(BM + 4) == 0x1234AB74
    rig.outb(BM + 8, 0x01)                       # channel 1 is separate
    assert rig.inb(BM + 10) == 0x01 and rig.inb(BM + 2) == 0x60


def test_start_toggling_without_command_is_harmless(rig):
    for _ in range(10):
        rig.outb(BM, 0x01)
        rig.outb(BM, 0x00)
    rig.settle()
    assert rig.inb(0x1F7) == 0x50 and rig.inb(BM + 2) == 0x00


def test_clearing_start_mid_transfer_completes_it(rig):
    prds(rig, [(0x2000, 4096 | EOT)])
    issue(rig, 0xC8, lba=20, count=8)
    rig.outb(BM, 0x09)
    assert rig.piix.bmdma[0].aiocb is not None  # in flight
    rig.outb(BM, 0x08)                          # QEMU drains: the transfer finishes
    assert rig.piix.bmdma[0].aiocb is None
    assert rig.mem_read(0x2000, 4096) == b"".join(sector(n) for n in range(20, 28))
    assert rig.inb(0x1F7) == 0x50 and rig.inb(BM + 2) == 0x04


def trim_payload(*ranges):
    data = b"".join((lba | count << 48).to_bytes(8, "little") for lba, count in ranges)
    return data.ljust(512, b"\0")


@pytest.mark.parametrize("discard", ["ignore", "unmap"])
def test_dsm_trim(tmp_path, discard):
    disk = make_disk(tmp_path / "t.img", NSECT)
    rig = Rig([disk], {"discard": discard})
    try:
        rig.mem_write(0x2000, trim_payload((10, 2), (0, 0), (20, 1)))
        prds(rig, [(0x2000, 512 | EOT)])
        issue(rig, 0x06, feature=0x01, count=1)
        rig.outb(BM, 0x01)
        rig.settle()
        assert (rig.inb(BM + 2), rig.inb(0x1F7), rig.inb(0x1F1)) == (0x04, 0x50, 0x00)
        data = disk.read_bytes()
        assert data[9 * 512:10 * 512] == sector(9) and data[12 * 512:13 * 512] == sector(12)
        if discard == "unmap":
            assert data[10 * 512:12 * 512] == bytes(1024) and data[20 * 512:21 * 512] == bytes(512)
        else:
            assert data[10 * 512:11 * 512] == sector(10)
    finally:
        rig.close()


def test_dsm_trim_out_of_range_aborts(rig):
    rig.mem_write(0x2000, trim_payload((NSECT - 1, 2)))
    prds(rig, [(0x2000, 512 | EOT)])
    issue(rig, 0x06, feature=0x01, count=1)
    rig.outb(BM, 0x01)
    rig.settle()
    assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
    issue(rig, 0x06, feature=0x02, count=1)          # not TRIM: ABRT
    assert rig.inb(0x1F7) == 0x41


@pytest.mark.parametrize("cmd,start", [(0x25, 0x09), (0x35, 0x01)])
def test_dma_ext(rig, disk, cmd, start):
    rig.mem_write(0x2000, b"\xAB" * 1024)
    prds(rig, [(0x2000, 1024 | EOT)])
    for reg, hi, lo in ((2, 0, 2), (3, 0, 0x10), (4, 0, 0x04), (5, 0, 0)):
        rig.outb(0x1F0 + reg, hi)
        rig.outb(0x1F0 + reg, lo)
    rig.outb(0x1F6, 0x40)
    rig.outb(0x1F7, cmd)
    rig.outb(BM, start)
    rig.settle()
    assert (rig.inb(BM + 2), rig.inb(0x1F7)) == (0x04, 0x50)
    if cmd == 0x25:
        assert rig.mem_read(0x2000, 1024) == sector(0x410) + sector(0x411)
    else:
        assert disk.read_bytes()[0x410 * 512:0x412 * 512] == b"\xAB" * 1024


def test_dma_completion_twice_or_without_command_is_ignored(rig):
    from gqemu.hw.dma import dma_blk_cb
    assert dma(rig, [(0x2000, 512 | EOT)]) == (0x04, 0x50)
    calls = []
    acb = rig.piix.bmdma[0]
    from gqemu.hw.dma import DMAAIOCB, dma_aiocb_info
    d = DMAAIOCB(dma_aiocb_info, lambda o, r: calls.append(r), None)
    dma_blk_cb(d, 0)
    dma_blk_cb(d, 0)                             # a double completion
    assert calls == [0]
    from gqemu.hw.ide.dma import ide_dma_cb
    ide_dma_cb(rig.bus0.ifs[0], 0)               # no command active: count is 0
    assert rig.inb(0x1F7) == 0x50 and acb.aiocb is None


def test_clearing_start_from_inside_a_poll_stops_at_completion(rig):
    """A vCPU's port write while the main loop is parked in aio_poll cannot
    drain; the transfer still completes and only then the engine stops."""
    from gqemu.aio import aio_bh_schedule_oneshot, aio_poll
    prds(rig, [(0x2000, 4096 | EOT)])
    issue(rig, 0xC8, lba=20, count=8)
    rig.outb(BM, 0x09)
    aio_bh_schedule_oneshot(rig.ctx, lambda _: rig.outb(BM, 0x08), None)
    aio_poll(rig.ctx, False)                     # the write runs inside a poll
    assert rig.inb(BM) == 0x08
    rig.settle()
    assert rig.mem_read(0x2000, 4096) == b"".join(sector(n) for n in range(20, 28))
    assert rig.inb(0x1F7) == 0x50 and rig.inb(BM + 2) == 0x04


def test_clearing_start_inside_a_poll_with_long_prds(rig):
    from gqemu.aio import aio_bh_schedule_oneshot, aio_poll
    prds(rig, [(0x2000, 8192 | EOT)])
    issue(rig, 0xC8, lba=20, count=2)
    rig.outb(BM, 0x09)
    aio_bh_schedule_oneshot(rig.ctx, lambda _: rig.outb(BM, 0x08), None)
    aio_poll(rig.ctx, False)
    rig.settle()
    assert rig.inb(BM + 2) == 0x04               # not left ACTIVE after the stop


def test_prd_walk_stops_after_one_page(rig):
    # 1024 two-byte PRDs without EOT: the first page (512 entries) maps only
    # 1024 of the 2048 bytes; reading the second page would complete it
    prds(rig, [(0x20000 + 2 * i, 2) for i in range(1024)])
    issue(rig, 0xC8, lba=5, count=4)
    rig.outb(BM, 0x09)
    rig.settle()
    assert (rig.inb(BM + 2), rig.inb(0x1F7)) == (0x00, 0x50)
    assert rig.mem_read(0x20000, 2048) == bytes(2048)
