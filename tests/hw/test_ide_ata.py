"""ATA register and command behaviour, case by case, as QEMU 7.2 shows it
(reliability.md 6.1, refdata/README.md "Facts learned").

The disk has 2048 sectors; sector N holds the 32-bit value N repeated.
"""
from __future__ import annotations

import pytest

from gqemu.hw.ide.internal import IDE_CTRL_DISABLE_IRQ
from tests.hw.rig import Rig, make_disk

NSECT = 2048


@pytest.fixture
def disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


@pytest.fixture
def rig(disk):
    r = Rig([disk])
    yield r
    r.close()


def sector(n: int) -> bytes:
    return n.to_bytes(4, "little") * 128


def regs(rig, base=0x1F0):
    return [rig.inb(base + i) for i in range(1, 8)]


def issue(rig, cmd, lba=0, count=1, feature=0, dev=0xE0, base=0x1F0):
    rig.outb(base + 1, feature)
    rig.outb(base + 2, count)
    rig.outb(base + 3, lba & 0xFF)
    rig.outb(base + 4, (lba >> 8) & 0xFF)
    rig.outb(base + 5, (lba >> 16) & 0xFF)
    rig.outb(base + 6, dev | ((lba >> 24) & 0x0F))
    rig.outb(base + 7, cmd)


def issue48(rig, cmd, lba, count):
    for reg, hi, lo in ((2, count >> 8, count), (3, lba >> 24, lba), (4, lba >> 32, lba >> 8),
                        (5, lba >> 40, lba >> 16)):
        rig.outb(0x1F0 + reg, hi & 0xFF)
        rig.outb(0x1F0 + reg, lo & 0xFF)
    rig.outb(0x1F6, 0x40)
    rig.outb(0x1F7, cmd)


def wait_status(rig):
    rig.settle()
    return rig.inb(0x1F7)


def test_power_on_status(rig):
    assert rig.inb(0x1F7) == 0x50 and rig.inb(0x3F6) == 0x50
    assert regs(rig)[:6] == [0x00, 0x01, 0x01, 0x00, 0x00, 0xA0]


def test_identify_then_extra_read_returns_zero(rig):
    issue(rig, 0xEC, dev=0xA0)
    assert rig.inb(0x1F7) == 0x58 and rig.inb(0x1F2) == 0x01
    words = [rig.inw(0x1F0) for _ in range(256)]
    assert words[0] == 0x0040 and words[60] | words[61] << 16 == NSECT
    assert rig.inb(0x1F7) == 0x50
    assert rig.inw(0x1F0) == 0


def test_absent_slave_reads_zero_and_ignores_commands(rig):
    rig.outb(0x1F6, 0xB0)
    assert rig.inb(0x1F7) == 0x00 and rig.inb(0x3F6) == 0x00 and rig.inb(0x1F1) == 0x00
    rig.outb(0x1F2, 0x55)
    rig.outb(0x1F3, 0xAA)
    assert rig.inb(0x1F2) == 0x55 and rig.inb(0x1F3) == 0xAA   # the shared task file
    assert rig.inb(0x1F6) == 0xB0
    rig.outb(0x3F6, 0x00)                         # interrupts on
    for opcode in (0xEC, 0x20, 0x01):
        rig.outb(0x1F7, opcode)
        rig.settle()
        assert rig.irq() == 0                     # ignored: no completion, no IRQ
        assert rig.inb(0x1F7) == 0x00
    assert (rig.bus0.ifs[1].status, rig.bus0.ifs[1].error) == (0x50, 0x00)   # untouched
    rig.outb(0x1F6, 0xA0)
    assert rig.inb(0x1F7) == 0x50 and rig.inb(0x1F2) == 0x55   # master untouched


def test_channel_without_drives_reads_zero(rig):
    for port in range(0x171, 0x178):
        assert rig.inb(port) == 0
    assert rig.inw(0x170) == 0 and rig.inb(0x376) == 0
    rig.outb(0x177, 0xEC)
    assert rig.inb(0x177) == 0


@pytest.mark.parametrize("opcode", [0x01, 0x00, 0xA0, 0xA1, 0x08, 0x06, 0xFF])
def test_invalid_opcodes_abort(rig, opcode):
    issue(rig, opcode)
    assert rig.inb(0x1F7) == 0x41 and rig.inb(0x1F1) == 0x04


def test_set_multiple_mode(rig):
    issue(rig, 0xC6, count=3)
    assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
    issue(rig, 0xC6, count=32)
    assert rig.inb(0x1F7) == 0x41
    issue(rig, 0xC6, count=4)
    assert (rig.inb(0x1F7), rig.inb(0x1F1), rig.inb(0x1F2)) == (0x50, 0x00, 0x04)
    issue(rig, 0xC4, lba=8, count=6)            # READ MULTIPLE: blocks of 4 then 2
    assert wait_status(rig) == 0x58
    data = rig.insw(0x1F0, 4 * 256)
    assert data == b"".join(sector(n) for n in range(8, 12))
    assert wait_status(rig) == 0x58
    assert rig.insw(0x1F0, 2 * 256) == sector(12) + sector(13)
    assert wait_status(rig) == 0x50 and regs(rig)[:5] == [0, 0, 14, 0, 0]


def test_read_multiple_default_is_16(rig):
    issue(rig, 0xC4, lba=0, count=32)
    assert wait_status(rig) == 0x58
    rig.insw(0x1F0, 16 * 256)
    assert rig.inb(0x1F3) == 16 and wait_status(rig) == 0x58


def test_flush_is_busy_0xc0_while_in_flight(rig):
    issue(rig, 0xE7)
    assert rig.inb(0x1F7) == 0xC0 and rig.inb(0x3F6) == 0xC0
    assert wait_status(rig) == 0x50 and rig.inb(0x1F1) == 0


def test_data_port_without_command(rig):
    assert rig.inw(0x1F0) == 0 and rig.inl(0x1F0) == 0
    rig.outw(0x1F0, 0x1234)
    assert rig.inb(0x1F7) == 0x50


def test_read_sectors_registers_and_data(rig):
    issue(rig, 0x20, lba=1, count=4)
    for n in range(1, 5):
        assert wait_status(rig) == 0x58
        assert rig.insw(0x1F0, 256) == sector(n)
    assert wait_status(rig) == 0x50
    assert regs(rig) == [0x00, 0x00, 0x05, 0x00, 0x00, 0xE0, 0x50]


def test_bsy_while_pio_read_in_flight(rig):
    issue(rig, 0x20, lba=7, count=1)
    assert rig.inb(0x1F7) == 0xD0            # the loop has not run: still in flight
    assert rig.inw(0x1F0) == 0
    assert wait_status(rig) == 0x58


def test_register_write_ignored_while_drq(rig):
    issue(rig, 0x20, lba=5, count=2)
    assert wait_status(rig) == 0x58
    rig.outb(0x1F3, 0x77)
    assert rig.inb(0x1F3) == 0x06             # advanced before the data, write ignored
    issue_cmd_only = 0xEC
    rig.outb(0x1F7, issue_cmd_only)           # a command during DRQ is ignored too
    assert rig.inb(0x1F7) == 0x58 and rig.insw(0x1F0, 256) == sector(5)


def test_count_zero_means_256(rig):
    issue(rig, 0x20, lba=0, count=0)
    assert wait_status(rig) == 0x58 and rig.inb(0x1F2) == 0xFF


def test_lba48_hob_readback_and_read_ext(rig):
    for reg in range(2, 6):
        rig.outb(0x1F0 + reg, 0x00)
        rig.outb(0x1F0 + reg, reg * 2)
    rig.outb(0x3F6, 0x80)
    assert [rig.inb(0x1F0 + r) for r in range(2, 6)] == [0, 0, 0, 0]
    rig.outb(0x3F6, 0x00)
    assert rig.inb(0x1F4) == 0x08
    rig.outb(0x3F6, 0x80)
    rig.outb(0x1F1, 0)                        # any task-file write clears HOB
    assert rig.inb(0x1F4) == 0x08
    issue48(rig, 0x24, 1024, 1)
    assert wait_status(rig) == 0x58 and rig.inw(0x1F0) == 0x0400


def test_lba48_count_zero_is_65536(rig):
    issue48(rig, 0x24, 0, 0)
    assert wait_status(rig) == 0x58


@pytest.mark.parametrize("lba", [NSECT, NSECT + 100, 0x0FFFFFF])
def test_read_past_end_aborts(rig, lba):
    issue(rig, 0x20, lba=lba, count=1)
    assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04


def test_lba48_past_end_aborts(rig):
    issue48(rig, 0x24, 1 << 40, 1)
    assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04


def test_read_straddling_the_end(rig):
    issue(rig, 0x20, lba=NSECT - 1, count=2)
    assert wait_status(rig) == 0x58
    assert rig.insw(0x1F0, 256) == sector(NSECT - 1)
    assert wait_status(rig) == 0x41
    assert regs(rig) == [0x04, 0x01, 0x00, 0x08, 0x00, 0xE0, 0x41]


def test_write_past_end_aborts_after_data(rig, disk):
    before = disk.read_bytes()
    issue(rig, 0x30, lba=0x0FFFFFFF, count=1)
    assert rig.inb(0x1F7) == 0x58
    rig.outsw(0x1F0, b"\x5a" * 512)
    assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04
    assert disk.read_bytes() == before


def test_chs_sector_zero_aborts_and_sector_one_is_lba0(rig):
    issue(rig, 0x20, lba=0, count=1, dev=0xA0)
    assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04
    issue(rig, 0x20, lba=1, count=1, dev=0xA0)
    assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == sector(0)


def test_chs_addressing(rig):
    # C/H/S = 1/3/4 with 16 heads x 63 sectors = 1*1008 + 3*63 + 3
    rig.outb(0x1F2, 1)
    rig.outb(0x1F3, 4)
    rig.outb(0x1F4, 1)
    rig.outb(0x1F5, 0)
    rig.outb(0x1F6, 0xA3)
    rig.outb(0x1F7, 0x20)
    assert wait_status(rig) == 0x58
    assert rig.insw(0x1F0, 256) == sector(1 * 1008 + 3 * 63 + 3)
    assert wait_status(rig) == 0x50 and (rig.inb(0x1F3), rig.inb(0x1F6)) == (5, 0xA3)


def test_write_sectors_and_read_back(rig, disk):
    issue(rig, 0x30, lba=100, count=2)
    assert rig.irq() == 0 and rig.inb(0x1F7) == 0x58      # first DRQ: no IRQ
    payload = bytes(range(256)) * 4
    rig.outsw(0x1F0, payload[:512])
    assert rig.inb(0x1F7) == 0xD0
    assert wait_status(rig) == 0x58
    rig.outsw(0x1F0, payload[512:])
    assert wait_status(rig) == 0x50 and regs(rig)[:5] == [0, 0, 102, 0, 0]
    assert disk.read_bytes()[100 * 512:102 * 512] == payload
    issue(rig, 0x20, lba=100, count=2)
    assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == payload[:512]


def test_write_multiple_with_dwords(rig, disk):
    issue(rig, 0xC6, count=4)
    issue(rig, 0xC5, lba=200, count=4)
    assert rig.inb(0x1F7) == 0x58
    data = bytes((i * 7) & 0xFF for i in range(2048))
    for i in range(0, 2048, 4):
        rig.outl(0x1F0, int.from_bytes(data[i:i + 4], "little"))
    assert wait_status(rig) == 0x50 and rig.inb(0x1F3) == 204
    assert disk.read_bytes()[200 * 512:204 * 512] == data


def test_read_verify_leaves_registers(rig):
    issue(rig, 0x40, lba=10, count=3)
    assert wait_status(rig) == 0x50
    assert regs(rig) == [0x00, 0x03, 0x0A, 0x00, 0x00, 0xE0, 0x50]
    issue(rig, 0x40, lba=NSECT + 5, count=3)      # no range check
    assert wait_status(rig) == 0x50


def test_device_head_reads_with_0xa0(rig):
    rig.outb(0x1F6, 0x40)
    assert rig.inb(0x1F6) == 0xE0
    rig.outb(0x1F6, 0x0F)
    assert rig.inb(0x1F6) == 0xAF


def test_srst_completes_in_a_bottom_half(rig):
    issue(rig, 0x20, lba=3, count=1)
    rig.settle()
    rig.outb(0x3F6, 0x06)
    assert rig.inb(0x3F6) == 0xD8                # BSY at once (DRQ still up), reset pending
    rig.outb(0x3F6, 0x02)
    rig.settle()
    assert regs(rig) == [0x01, 0x01, 0x01, 0x00, 0x00, 0xA0, 0x50]
    assert rig.inw(0x1F0) == 0
    issue(rig, 0xC4, lba=0, count=32)            # multiple count back to 16
    assert wait_status(rig) == 0x58


def test_irq_rules(rig):
    rig.outb(0x3F6, 0x00)
    issue(rig, 0x20, lba=1, count=1)
    rig.settle()
    assert rig.irq() == 1
    assert rig.inb(0x3F6) == 0x58 and rig.irq() == 1     # alt status: no effect
    rig.outb(0x3F6, IDE_CTRL_DISABLE_IRQ)
    assert rig.irq() == 1                                # nIEN does not lower
    assert rig.inb(0x1F7) == 0x58 and rig.irq() == 0     # status read lowers
    rig.insw(0x1F0, 256)
    issue(rig, 0x20, lba=1, count=1)
    rig.settle()
    assert rig.irq() == 0                                # nIEN: no IRQ
    rig.insw(0x1F0, 256)
    rig.outb(0x3F6, 0x00)
    issue(rig, 0xE7)
    assert rig.irq() == 0                                # the command write lowered it
    rig.settle()
    assert rig.irq() == 1
    issue(rig, 0x01)
    assert rig.irq() == 1 and rig.inb(0x1F7) == 0x41     # abort raises too


def test_read_native_max(rig):
    issue(rig, 0xF8)
    assert wait_status(rig) == 0x50
    lba = rig.inb(0x1F3) | rig.inb(0x1F4) << 8 | rig.inb(0x1F5) << 16 | (rig.inb(0x1F6) & 0xF) << 24
    assert lba == NSECT - 1
    issue48(rig, 0x27, 0, 0)
    assert wait_status(rig) == 0x50 and (rig.inb(0x1F3), rig.inb(0x1F4)) == (0xFF, 0x07)


@pytest.mark.parametrize("opcode", [0xE5, 0x98])
def test_check_power_mode(rig, opcode):
    issue(rig, opcode)
    assert wait_status(rig) == 0x50 and rig.inb(0x1F2) == 0xFF


@pytest.mark.parametrize("opcode,status", [
    (0x10, 0x50), (0x91, 0x50), (0x70, 0x50), (0xEA, 0x50),     # SET_DSC commands
    (0xE0, 0x40), (0xE1, 0x40), (0xE2, 0x40), (0xE3, 0x40), (0xE6, 0x40),
    (0x94, 0x40), (0x95, 0x40), (0x96, 0x40), (0x97, 0x40), (0x99, 0x40)])
def test_no_data_commands_succeed(rig, opcode, status):
    # STANDBY/IDLE/SLEEP have no SET_DSC in QEMU's table: DRDY alone
    issue(rig, opcode, lba=9, count=2)
    assert wait_status(rig) == status and rig.inb(0x1F1) == 0


def test_execute_device_diagnostic(rig):
    issue(rig, 0x90, lba=0x123456, count=9)
    assert wait_status(rig) == 0x50
    assert regs(rig)[:6] == [0x01, 0x01, 0x01, 0x00, 0x00, 0xA0]   # DEV, LBA cleared (7.1+)


def chs_read(rig, c, h, s_):
    rig.outb(0x1F2, 1)
    rig.outb(0x1F3, s_)
    rig.outb(0x1F4, c & 0xFF)
    rig.outb(0x1F5, c >> 8)
    rig.outb(0x1F6, 0xA0 | h)
    rig.outb(0x1F7, 0x20)
    assert wait_status(rig) == 0x58
    return rig.insw(0x1F0, 256)


def test_initialize_device_parameters(rig):
    issue(rig, 0x91, count=8, dev=0xA3)           # 4 heads, 8 sectors per track
    assert wait_status(rig) == 0x50
    assert chs_read(rig, 1, 2, 3) == sector(1 * 4 * 8 + 2 * 8 + 2)
    rig.outb(0x3F6, 0x04)                         # SRST keeps the geometry ...
    rig.outb(0x3F6, 0x00)
    rig.settle()
    assert chs_read(rig, 1, 2, 3) == sector(50)
    issue(rig, 0xEF, feature=0xCC)                # ... unless reverting is enabled
    assert wait_status(rig) == 0x50
    rig.outb(0x3F6, 0x04)
    rig.outb(0x3F6, 0x00)
    rig.settle()
    assert chs_read(rig, 1, 2, 3) == sector(1 * 16 * 63 + 2 * 63 + 2)


def test_specify_zero_sectors_does_not_crash(rig):
    issue(rig, 0x91, count=0, dev=0xA0)
    assert wait_status(rig) == 0x50
    issue(rig, 0x20, lba=1, count=2, dev=0xA0)   # CHS with 0 sectors per track
    rig.settle()
    assert rig.inb(0x1F7) in (0x58, 0x41)
    issue(rig, 0xF8, dev=0xA0)                    # READ NATIVE MAX in CHS mode
    rig.settle()


def identify_words(rig):
    issue(rig, 0xEC)
    rig.settle()
    return [rig.inw(0x1F0) for _ in range(256)]


def test_set_features(rig):
    issue(rig, 0xEF, feature=0x03, count=0x45)     # UDMA mode 5
    assert wait_status(rig) == 0x50
    w = identify_words(rig)
    assert (w[62], w[63], w[88]) == (0x07, 0x07, 0x3F | 1 << 13)
    issue(rig, 0xEF, feature=0x03, count=0x30)     # no such mode
    assert wait_status(rig) == 0x41
    issue(rig, 0xEF, feature=0x82)                 # write cache off: flushes
    assert rig.inb(0x1F7) == 0xC0
    assert wait_status(rig) == 0x50 and identify_words(rig)[85] == 0x4001
    issue(rig, 0xEF, feature=0x02)
    assert wait_status(rig) == 0x50 and identify_words(rig)[85] == 0x4021
    issue(rig, 0xEF, feature=0xAA)
    assert wait_status(rig) == 0x50
    issue(rig, 0xEF, feature=0x99)
    assert wait_status(rig) == 0x41 and rig.inb(0x1F1) == 0x04


def test_smart_selftest_log_stays_in_bounds(rig):
    def smart(feature, sector=0):
        rig.outb(0x1F1, feature)
        rig.outb(0x1F3, sector)
        rig.outb(0x1F4, 0x4F)
        rig.outb(0x1F5, 0xC2)
        rig.outb(0x1F7, 0xB0)
        rig.settle()
    for _ in range(1000):
        smart(0xD4, 1)
        assert rig.inb(0x1F7) == 0x50
    smart(0xD5, 0x06)
    assert rig.inb(0x1F7) == 0x58
    log = rig.insw(0x1F0, 256)
    assert 1 <= log[508] <= 21 and sum(log) & 0xFF == 0
    smart(0xDA)
    assert (rig.inb(0x1F4), rig.inb(0x1F5)) == (0x4F, 0xC2)
    rig.outb(0x1F4, 0)
    rig.outb(0x1F7, 0xB0)
    assert rig.inb(0x1F7) == 0x41


def test_untraced_access_sizes(rig):
    assert rig.inl(0x1F2) == 0xFFFFFFFF and rig.inl(0x1F1) == 0xFFFFFFFF
    rig.outw(0x1F2, 0x0A07)                      # two byte writes: count, lba0
    assert (rig.inb(0x1F2), rig.inb(0x1F3)) == (0x07, 0x0A)
    assert rig.inw(0x1F2) == 0x0A07
    rig.outl(0x1F2, 0)                           # dropped
    assert rig.inb(0x1F2) == 0x07
    assert rig.inb(0x3F7) == 0xFF and rig.inb(0x377) == 0xFF
    issue(rig, 0x20, lba=0x21, count=1)
    rig.settle()
    assert rig.inb(0x1F0) == 0x21 and rig.inb(0x1F0) == 0x00   # a byte read eats a word
    assert rig.inw(0x1F0) == 0x0021
    rig.outb(0x1F0, 0x99)                        # a byte write does nothing
    rest = rig.insw(0x1F0, 253)
    assert rest == sector(0x21)[6:]


def test_rep_string_path_equals_single_accesses(rig):
    from gqemu.hw.memory import address_space_rw_string
    issue(rig, 0x20, lba=40, count=3)
    rig.settle()
    buf = bytearray(512 * 3)
    mv = memoryview(buf)
    for i in range(3):
        address_space_rw_string(rig.as_io, 0x1F0, None, mv[i * 512:], 2, 256, False)
        rig.settle()
    assert bytes(buf) == sector(40) + sector(41) + sector(42)
    assert rig.inb(0x1F7) == 0x50
    # a run longer than the DRQ block: the rest reads 0 once DRQ drops
    issue(rig, 0x20, lba=50, count=1)
    rig.settle()
    buf = bytearray(1024)
    address_space_rw_string(rig.as_io, 0x1F0, None, buf, 2, 512, False)
    assert bytes(buf) == sector(50) + bytes(512)


def test_writes_and_commands_ignored_while_bsy(rig):
    rig.outb(0x1F3, 0x12)
    issue(rig, 0xE7)                              # FLUSH: BSY while in flight
    assert rig.inb(0x1F7) == 0xC0
    rig.outb(0x1F3, 0x77)
    rig.outb(0x1F6, 0xF0)
    rig.outb(0x1F7, 0xEC)                         # ignored too
    assert rig.inb(0x1F3) == 0x00 and rig.inb(0x1F6) == 0xE0
    assert wait_status(rig) == 0x50 and rig.inw(0x1F0) == 0


def test_data_direction_is_enforced(rig, disk):
    issue(rig, 0x30, lba=30, count=1)             # PIO out: the host writes
    assert rig.inw(0x1F0) == 0 and rig.inl(0x1F0) == 0
    assert rig.piix.bus[0].ifs[0].data_ptr == 0   # reads did not move the pointer
    rig.outsw(0x1F0, b"\x42" * 512)
    assert wait_status(rig) == 0x50
    issue(rig, 0x20, lba=31, count=1)             # PIO in: host writes are dropped
    rig.settle()
    rig.outw(0x1F0, 0xFFFF)
    rig.outl(0x1F0, 0xFFFFFFFF)
    assert rig.insw(0x1F0, 256) == sector(31)
    assert disk.read_bytes()[30 * 512:31 * 512] == b"\x42" * 512


def test_lba48_write_and_read_ext(rig, disk):
    issue48(rig, 0x34, 0x300, 2)
    assert rig.inb(0x1F7) == 0x58
    payload = bytes(range(256)) * 4
    rig.outsw(0x1F0, payload[:512])
    assert wait_status(rig) == 0x58
    rig.outsw(0x1F0, payload[512:])
    assert wait_status(rig) == 0x50
    assert disk.read_bytes()[0x300 * 512:0x302 * 512] == payload
    issue48(rig, 0x29, 0x300, 2)                  # READ MULTIPLE EXT
    assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 512) == payload
    issue48(rig, 0x42, 0x300, 5)                  # READ VERIFY EXT
    assert wait_status(rig) == 0x50 and rig.inb(0x1F2) == 5


def test_read_multiple_disabled_aborts(rig):
    issue(rig, 0xC6, count=0)                     # SET MULTIPLE 0 disables
    assert wait_status(rig) == 0x50
    issue(rig, 0xC4, lba=0, count=1)
    assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x41, 0x04)
    issue(rig, 0xC5, lba=0, count=1)
    assert rig.inb(0x1F7) == 0x41


def test_slave_drive_is_separate(tmp_path):
    d0 = make_disk(tmp_path / "m.img", 64)
    d1 = make_disk(tmp_path / "s.img", 128, fill=lambda n: (n + 1000).to_bytes(4, "little") * 128)
    rig = Rig([d0, d1])
    try:
        issue(rig, 0xEC, dev=0xB0)
        assert wait_status(rig) == 0x58
        words = rig.insw(0x1F0, 256)
        assert words[20:34] == b"MQ0000 2" + b"  " * 3 and int.from_bytes(words[120:124], "little") == 128
        issue(rig, 0x20, lba=5, count=1, dev=0xF0)
        assert wait_status(rig) == 0x58 and rig.insw(0x1F0, 256) == (1005).to_bytes(4, "little") * 128
        rig.outb(0x1F6, 0xA0)
        assert rig.inb(0x1F7) == 0x50              # the master was not involved
    finally:
        rig.close()
