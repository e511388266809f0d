"""SMART (0xB0) for the hard disk, with the self-test log kept in bounds.

The self-test counter runs 1..21 and wraps to 1, and every log index is
checked against the 512-byte log (CVE-2014-2894 was an off-by-one here).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (cmd_smart, smart_attributes).
"""
from __future__ import annotations

from gqemu.hw.ide.core import ide_abort_command, ide_set_irq, ide_transfer_start, ide_transfer_stop
from gqemu.hw.ide.internal import READY_STAT, SEEK_STAT, IDEState

__all__ = ["cmd_smart"]

SMART_READ_DATA = 0xD0
SMART_READ_THRESH = 0xD1
SMART_ATTR_AUTOSAVE = 0xD2
SMART_EXECUTE_OFFLINE = 0xD4
SMART_READ_LOG = 0xD5
SMART_ENABLE = 0xD8
SMART_DISABLE = 0xD9
SMART_STATUS = 0xDA

# id, flags, hflags, val, worst, raw[6], threshold
smart_attributes = (
    (0x01, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x06),
    (0x03, 0x03, 0x00, 0x64, 0x64, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    (0x04, 0x02, 0x00, 0x64, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14),
    (0x05, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24),
    (0x09, 0x03, 0x00, 0x64, 0x64, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    (0x0C, 0x03, 0x00, 0x64, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    (190, 0x03, 0x00, 0x45, 0x45, 0x1F, 0x00, 0x1F, 0x1F, 0x00, 0x00, 0x32),
)


def _checksum(buf: bytearray) -> None:
    buf[511] = (0x100 - (sum(buf[0:511]) & 0xFF)) & 0xFF


def _send(s: IDEState, buf: bytearray) -> bool:
    _checksum(buf)
    s.io_buffer[0:512] = buf
    s.status = READY_STAT | SEEK_STAT
    ide_transfer_start(s, 0, 512, ide_transfer_stop)
    ide_set_irq(s.bus)
    return False


def cmd_smart(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_smart."""
    if s.hcyl != 0xC2 or s.lcyl != 0x4F:
        ide_abort_command(s)
        return True
    f = s.feature
    if not s.smart_enabled and f != SMART_ENABLE:
        ide_abort_command(s)
        return True
    if f == SMART_DISABLE:
        s.smart_enabled = False
        return True
    if f == SMART_ENABLE:
        s.smart_enabled = True
        return True
    if f == SMART_ATTR_AUTOSAVE:
        if s.sector == 0x00:
            s.smart_autosave = False
        elif s.sector == 0xF1:
            s.smart_autosave = True
        else:
            ide_abort_command(s)
        return True
    if f == SMART_STATUS:
        if not s.smart_errors:
            s.hcyl, s.lcyl = 0xC2, 0x4F
        else:
            s.hcyl, s.lcyl = 0x2C, 0xF4
        return True
    if f == SMART_READ_THRESH:
        buf = bytearray(512)
        buf[0] = 0x01
        for n, attr in enumerate(smart_attributes):
            buf[2 + n * 12] = attr[0]
            buf[2 + 1 + n * 12] = attr[11]
        return _send(s, buf)
    if f == SMART_READ_DATA:
        buf = bytearray(512)
        buf[0] = 0x01
        for n, attr in enumerate(smart_attributes):
            for i in range(11):
                buf[2 + i + n * 12] = attr[i]
        buf[362] = 0x02 | (0x80 if s.smart_autosave else 0x00)
        count = s.smart_selftest_count
        buf[363] = 0 if count == 0 else s.smart_selftest_data[3 + (count - 1) * 24]
        buf[364] = 0x20
        buf[365] = 0x01
        buf[367] = (1 << 4) | (1 << 3) | 1
        buf[368] = 0x03
        buf[369] = 0x00
        buf[370] = 0x01
        buf[372] = 0x02
        buf[373] = 0x36
        buf[374] = 0x01
        return _send(s, buf)
    if f == SMART_READ_LOG:
        buf = bytearray(512)
        if s.sector == 0x01:
            buf[0] = 0x01
            buf[452] = s.smart_errors & 0xFF
            buf[453] = (s.smart_errors >> 8) & 0xFF
        elif s.sector == 0x06:
            buf[0] = 0x01
            if s.smart_selftest_count:
                buf[508] = s.smart_selftest_count & 0xFF
                buf[2:506] = s.smart_selftest_data[2:506]
        else:
            ide_abort_command(s)
            return True
        return _send(s, buf)
    if f == SMART_EXECUTE_OFFLINE:
        if s.sector in (0, 1, 2):
            s.smart_selftest_count += 1
            if s.smart_selftest_count > 21:
                s.smart_selftest_count = 1
            n = 2 + (s.smart_selftest_count - 1) * 24
            data = s.smart_selftest_data
            data[n] = s.sector
            data[n + 1] = 0x00
            data[n + 2] = 0x34
            data[n + 3] = 0x12
            return True
        ide_abort_command(s)
        return True
    ide_abort_command(s)
    return True
