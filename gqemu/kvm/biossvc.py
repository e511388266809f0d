"""The BIOS services other than INT 13h a boot loader calls (INT 11h, 12h,
15h, 16h, 1Ah), answered as SeaBIOS 1.16.2 answers them under QEMU 7.2
with gqemu's machine (``-m 128``, no floppy, the default ``qemu64`` CPU,
whose AMD vendor adds the HyperTransport hole to the E820 map);
``tests/data/kvm/biossvc.asm`` recorded them.

Each service works on the caller's registers (``Regs``: 32-bit, as
SeaBIOS's ``struct bregs``) and the FLAGS image the ``int`` pushed (CF,
ZF).  SeaBIOS's conventions: ``set_success`` clears CF, ``set_code_success``
also AH; ``set_code_invalid``/``set_code_unimplemented`` set CF and AH
(0x86 for an unsupported function), ``set_invalid_silent`` and
``set_unimplemented`` only CF.

INT 15h: 24 00..03 (A20: port 0x92 read and written, as exits, as
SeaBIOS's set_a20/get_a20 do), 4F (CF), 52, 86 (wait CX:DX us), 87
(block move: the copy, and the GDT entries
SeaBIOS fills in the caller's table), 88, 90/91 (nothing), C0
(configuration table at F000:E6F5), C1 (EBDA segment), E801, E820 (the
map SeaBIOS builds from QEMU's for 128 MiB); anything else: AH=86, CF.
53 (the APM BIOS; 07 BX=1 CX=3 powers off).  Not modelled (AH=86 here,
something else under SeaBIOS): 5F, 7F, 83, 89, C2 (PS/2 mouse).

INT 16h: ``gqemu.kvm.bios_kbd``.

INT 1Ah: 00/01 (the tick count in the BIOS data area: it never advances,
gqemu has no PIT), 02/04 (the host's UTC time and date in BCD, as QEMU's
RTC gives them), 03/05 (accepted; the RTC is not written), 06 (alarm
set), 07 (alarm off), B1 (the PCI BIOS: ``gqemu.kvm.pcibios``); anything
else: CF.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/system.c, src/misc.c, src/kbd.c, src/clock.c.
"""
from __future__ import annotations

import struct
import time
from typing import Any, Callable

from gqemu.kvm.bios_kbd import handle_16
from gqemu.kvm.bregs import F_CF, Regs, rd16 as _rd16, wr as _wr

__all__ = ["Regs", "SERVICES", "BDA_INIT", "E820_MAP", "CONFIG_TABLE_OFF",
           "bios_data_area_init"]

RET_EUNSUPPORTED = 0x86
SMAP = 0x534D4150
PORT_A20 = 0x92
#: SeaBIOS's APM entry points (entry_apm16, entry_apm32) in its build
APM16_ENTRY, APM32_ENTRY = 0xD157, 0xD198
ACPI_PM1A_CNT = 0x604           # SeaBIOS's pmbase 0x600 + 4 on QEMU's PIIX4

EBDA_SEG = 0x9FC0
#: SeaBIOS's BIOS_CONFIG_TABLE (F000:E6F5): size 8, model FC, submodel 0,
#: revision 1, feature bytes 74 40 00 00 00
CONFIG_TABLE_OFF = 0xE6F5
CONFIG_TABLE = bytes.fromhex("0800fc0001744000000000")[:10]
#: the segment of the stack SeaBIOS's INT 15h handlers run on (the SS
#: descriptor AH=87 leaves in the caller's GDT)
SEABIOS_STACK_SEG = 0xD980
#: where INT 15h AH=86's completion flag sits on that stack
USER_WAIT_FLAG_OFF = 0xFC91
#: what SeaBIOS's E820 answers with QEMU 7.2's pc, 128 MiB, KVM and qemu64:
#: (start, size, type); 1 RAM, 2 reserved
E820_MAP = ((0x0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
            (0x100000, 0x7EE0000, 1), (0x7FE0000, 0x20000, 2),
            (0xFEFFC000, 0x4000, 2), (0xFFFC0000, 0x40000, 2),
            (0xFD00000000, 0x300000000, 2))
#: SeaBIOS's LegacyRamSize: the RAM below 4 GiB it does not reserve
LEGACY_RAM_SIZE = 0x7FE0000
#: the BIOS data area (address, bytes) as SeaBIOS leaves it: EBDA
#: segment, equipment (FPU, PS/2 mouse), base memory, keyboard buffer
#: head/tail/start/end, disk control byte, 101-key keyboard flag
BDA_INIT = ((0x40E, struct.pack("<H", EBDA_SEG)), (0x410, struct.pack("<H", 0x0006)),
            (0x413, struct.pack("<H", 639)), (0x41A, struct.pack("<HH", 0x1E, 0x1E)),
            (0x476, b"\xC0"), (0x480, struct.pack("<HH", 0x1E, 0x3E)), (0x496, b"\x10"))
TIMER_COUNTER, TIMER_ROLLOVER = 0x46C, 0x470
# RTC status register B (SeaBIOS's rtc_setup leaves RTC_B_24HR)
RTC_B_DSE, RTC_B_24HR, RTC_B_AIE, RTC_B_PIE, RTC_B_SET = 0x01, 0x02, 0x20, 0x40, 0x80


def bios_data_area_init(ram: Any) -> None:
    """The BIOS data area, the EBDA's size byte (1 KiB) and the ROM's
    last 16 bytes (reset jump, date, model) as SeaBIOS leaves them."""
    for addr, data in BDA_INIT:
        ram[addr:addr + len(data)] = data
    ram[EBDA_SEG << 4] = 1
    ram[0xFFFF0:0x100000] = bytes.fromhex("ea5be000f030362f32332f393900fcf3")
    ram[0xF0000 + CONFIG_TABLE_OFF:0xF0000 + CONFIG_TABLE_OFF + len(CONFIG_TABLE)] = CONFIG_TABLE


# -- INT 11h, 12h ---------------------------------------------------------

def handle_11(bs: Any, r: Regs) -> None:
    r.set_ax(_rd16(bs.ram, 0x410))


def handle_12(bs: Any, r: Regs) -> None:
    r.set_ax(_rd16(bs.ram, 0x413))


# -- INT 15h --------------------------------------------------------------

def _desc(limit: int, base: int, access: int) -> bytes:
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF,
                       access, (limit >> 16) & 0x0F, (base >> 24) & 0xFF)


def _wait_us(bs: Any, us: int) -> None:
    """INT 15h AH=86: ``us`` microseconds pass (SeaBIOS waits on the RTC's
    periodic interrupt; gqemu sleeps in the main loop, in slices, so a
    ``--timeout`` or a stop still ends the run)."""
    # SeaBIOS's set_usertimer leaves the BIOS data area's pointer to its
    # completion flag (on its stack) behind: 0040:0098 = D980:FC91
    _wr(bs, 0x498, struct.pack("<HH", USER_WAIT_FLAG_OFF, SEABIOS_STACK_SEG))
    if bs.io is None:
        return
    import gevent
    s = bs.io.s
    end = time.monotonic() + us / 1e6
    while not s.exit_request:
        left = end - time.monotonic()
        if left <= 0:
            break
        gevent.sleep(min(left, 0.05))


def _get_a20(bs: Any) -> int:
    """SeaBIOS: get_a20 (a read of port 0x92, an exit like SeaBIOS's)."""
    if bs.io is None:
        return int(bs.a20)
    return (bs.io.inb(PORT_A20) >> 1) & 1


def _set_a20(bs: Any, cond: int) -> int:
    """SeaBIOS: set_a20 (port 0x92 read, then written); the old state."""
    if bs.io is None:
        old, bs.a20 = bs.a20, cond
        return int(old)
    old = bs.io.inb(PORT_A20)
    bs.io.outb(PORT_A20, (old | 0x02) if cond else (old & ~0x02))
    return (old >> 1) & 1


def _handle_1587(bs: Any, r: Regs) -> None:
    """The block move: CX words from the GDT's source descriptor (entry 2)
    to its destination (entry 3); SeaBIOS fills entries 1 (the GDT), 4
    (its code) and 5 (its stack) on the way.  Outside RAM reads 0xFF
    and writes vanish, as unassigned memory under QEMU."""
    ram = bs.ram
    prev = _set_a20(bs, 1)
    gdt = (r.es << 4) + (r.esi & 0xFFFF)
    d = bytes(ram[gdt:gdt + 48])
    src = d[0x12] | (d[0x13] << 8) | (d[0x14] << 16) | (d[0x17] << 24)
    dst = d[0x1A] | (d[0x1B] << 8) | (d[0x1C] << 16) | (d[0x1F] << 24)
    _wr(bs, gdt + 8, _desc(6 * 8 - 1, gdt, 0x93))
    _wr(bs, gdt + 32, _desc(0xFFFF, 0xF0000, 0x9B))
    _wr(bs, gdt + 40, _desc(0xFFFF, SEABIOS_STACK_SEG << 4, 0x93))
    n = 2 * (r.ecx & 0xFFFF)
    size = len(ram)
    data = bytes(ram[src:min(src + n, size)]) if src < size else b""
    data += b"\xFF" * (n - len(data))
    if dst < size:
        _wr(bs, dst, data[:size - dst])
    _set_a20(bs, prev)
    r.code_success()


def _lo16(v: int, new: int) -> int:
    return (v & ~0xFFFF) | (new & 0xFFFF)


def _handle_1553(bs: Any, r: Regs) -> None:
    """SeaBIOS's APM BIOS (1.2): its entry points are Debian's 1.16.2
    build's; 07 with BX=1, CX=3 powers off through the ACPI PM1a control
    register, as SeaBIOS's apm_shutdown does (an exit: QEMU shuts down).
    SeaBIOS: src/apm.c."""
    al = r.al
    if al == 0x00:
        r.set_ax(0x0102)
        r.ebx, r.ecx = _lo16(r.ebx, 0x504D), _lo16(r.ecx, 0x0003)
    elif al == 0x02:
        r.set_ax(0xF000)
        r.ebx, r.ecx = _lo16(r.ebx, APM16_ENTRY), _lo16(r.ecx, 0xF000)
        r.esi, r.edi = _lo16(r.esi, 0xFFF0), _lo16(r.edi, 0xFFF0)
    elif al == 0x03:
        r.set_ax(0xF000)
        r.ebx, r.ecx, r.edx = APM32_ENTRY, _lo16(r.ecx, 0xF000), _lo16(r.edx, 0xF000)
        r.esi, r.edi = 0xFFF0FFF0, _lo16(r.edi, 0xFFF0)
    elif al == 0x07:
        if (r.ebx & 0xFFFF) == 1 and (r.ecx & 0xFFFF) == 3 and bs.io is not None:
            bs.io.outw(ACPI_PM1A_CNT, 0x2000)
    elif al == 0x0A:
        r.ebx, r.ecx, r.edx = _lo16(r.ebx, 0x01FF), _lo16(r.ecx, 0x80FF), _lo16(r.edx, 0xFFFF)
        r.esi = _lo16(r.esi, 0)
    elif al == 0x0B:
        r.set_ah(0x80)
        r.flags |= F_CF
        return
    elif al == 0x0E:
        r.set_ax(0x0102)
    elif al == 0x10:
        r.ebx, r.ecx = r.ebx & ~0xFF, _lo16(r.ecx, 0)
    elif al not in (0x01, 0x04, 0x05, 0x06, 0x08, 0x0F):
        r.flags |= F_CF
        return
    r.success()


def _handle_15e820(bs: Any, r: Regs) -> None:
    bx = r.ebx & 0xFFFF
    if r.edx != SMAP or bx >= len(E820_MAP) or r.ecx < 20:
        r.code_invalid(RET_EUNSUPPORTED)
        return
    start, size, kind = E820_MAP[bx]
    _wr(bs, (r.es << 4) + (r.edi & 0xFFFF), struct.pack("<QQI", start, size, kind))
    r.ebx = 0 if bx == len(E820_MAP) - 1 else (r.ebx + 1) & 0xFFFFFFFF
    r.eax, r.ecx = SMAP, 20
    r.success()


def handle_15(bs: Any, r: Regs) -> None:
    """SeaBIOS: handle_15."""
    ah, al = r.ah, r.al
    if ah == 0x24 and al <= 3:
        if al == 0x00 or al == 0x01:
            _set_a20(bs, al)
        elif al == 0x02:
            r.set_al(_get_a20(bs))
        else:
            r.ebx = (r.ebx & ~0xFFFF) | 3
        r.code_success()
    elif ah == 0x4F:
        r.flags |= F_CF
    elif ah == 0x52:
        r.code_success()
    elif ah == 0x53:
        _handle_1553(bs, r)
    elif ah == 0x86:
        _wait_us(bs, ((r.ecx & 0xFFFF) << 16) | (r.edx & 0xFFFF))
        r.success()
    elif ah == 0x87:
        _handle_1587(bs, r)
    elif ah == 0x88:
        r.set_ax(63 * 1024 if LEGACY_RAM_SIZE > 64 << 20 else (LEGACY_RAM_SIZE - (1 << 20)) >> 10)
        r.success()
    elif ah in (0x90, 0x91):
        pass
    elif ah == 0xC0:
        r.es, r.ebx = 0xF000, (r.ebx & ~0xFFFF) | CONFIG_TABLE_OFF
        r.code_success()
    elif ah == 0xC1:
        r.es = EBDA_SEG
        r.success()
    elif ah == 0xE8 and al == 0x01:
        if LEGACY_RAM_SIZE > 16 << 20:
            cx, dx = 15 * 1024, (LEGACY_RAM_SIZE - (16 << 20)) >> 16
        else:
            cx, dx = (LEGACY_RAM_SIZE - (1 << 20)) >> 10, 0
        r.set_ax(cx)
        r.ebx = (r.ebx & ~0xFFFF) | dx
        r.ecx = (r.ecx & ~0xFFFF) | cx
        r.edx = (r.edx & ~0xFFFF) | dx
        r.success()
    elif ah == 0xE8 and al == 0x20:
        _handle_15e820(bs, r)
    else:
        r.code_invalid(RET_EUNSUPPORTED)


# -- INT 1Ah --------------------------------------------------------------

def _bcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


def handle_1a(bs: Any, r: Regs) -> None:
    """SeaBIOS: handle_1a (``bs.rtc_b``: the RTC's status register B,
    which gqemu keeps without an RTC)."""
    ah, ram = r.ah, bs.ram
    if ah == 0x00:
        ticks = struct.unpack_from("<I", ram, TIMER_COUNTER)[0]
        r.ecx = (r.ecx & ~0xFFFF) | (ticks >> 16)
        r.edx = (r.edx & ~0xFFFF) | (ticks & 0xFFFF)
        r.set_al(ram[TIMER_ROLLOVER])
        _wr(bs, TIMER_ROLLOVER, b"\0")
        r.success()
    elif ah == 0x01:
        _wr(bs, TIMER_COUNTER, struct.pack("<I", ((r.ecx & 0xFFFF) << 16) | (r.edx & 0xFFFF)))
        _wr(bs, TIMER_ROLLOVER, b"\0")
        r.set_ah(0)
        r.success()
    elif ah in (0x02, 0x04):
        t = time.gmtime()
        if ah == 0x02:
            ch, cl, dh, dl = (_bcd(t.tm_hour), _bcd(t.tm_min), _bcd(t.tm_sec),
                              bs.rtc_b & RTC_B_DSE)
        else:
            ch, cl, dh, dl = _bcd(t.tm_year // 100), _bcd(t.tm_year % 100), _bcd(t.tm_mon), \
                _bcd(t.tm_mday)
        r.ecx = (r.ecx & ~0xFFFF) | (ch << 8) | cl
        r.edx = (r.edx & ~0xFFFF) | (dh << 8) | dl
        r.set_ax(ch)
        r.success()
    elif ah == 0x03:
        bs.rtc_b = (bs.rtc_b & (RTC_B_PIE | RTC_B_AIE)) | RTC_B_24HR | (r.edx & RTC_B_DSE)
        r.set_ax(bs.rtc_b)
        r.success()
    elif ah == 0x05:
        bs.rtc_b &= ~RTC_B_SET
        r.set_ax(bs.rtc_b)
        r.success()
    elif ah == 0x06:
        r.set_ax(0)
        if bs.rtc_b & RTC_B_AIE:
            r.flags |= F_CF
            return
        bs.rtc_b = (bs.rtc_b & ~RTC_B_SET) | RTC_B_AIE
        r.success()
    elif ah == 0xB1:
        from gqemu.kvm.pcibios import handle_1ab1
        handle_1ab1(bs, r)
    elif ah == 0x07:
        r.set_ax(bs.rtc_b)
        bs.rtc_b &= ~(RTC_B_SET | RTC_B_AIE)
        r.success()
    else:
        r.flags |= F_CF


#: the services by trap port offset (1..): INT 11h, 12h, 15h, 16h, 1Ah
#: with their classic entry points in the BIOS segment
SERVICES: tuple[tuple[int, int, Callable[[Any, Regs], None]], ...] = (
    (0x11, 0xF84D, handle_11), (0x12, 0xF841, handle_12), (0x15, 0xF859, handle_15),
    (0x16, 0xE82E, handle_16), (0x1A, 0xFE6E, handle_1a))
