"""The legacy PC ports a boot loader reads besides the disks, as QEMU 7.2's
``pc`` machine answers them once SeaBIOS 1.16 has run
(``tests/data/kvm/ports.asm`` recorded them):

- the i8042 keyboard controller (0x60 data, 0x64 status/command), reduced
  to what boot loaders use: status 0x1C (self-test passed, unlocked, the
  command bit QEMU never clears; never "input buffer full", so A20 wait
  loops end), the
  last byte SeaBIOS's keyboard set-up left (0xFA), the output port (0xCF:
  reset line, A20) read with D0 and written with D1, DD/DF (A20 off/on),
  the command byte (0x61 after SeaBIOS; 20/60, AD/AE), AA/AB (self-tests:
  0x55, 0x00), keyboard commands answered with ACK (FF: ACK then 0xAA,
  F2: ACK, 0xAB, 0x41 translated or 0x83, EE: 0xEE).  Not modelled: the
  mouse, IRQ 1, a reset (FE, or an output port without bit 0);
- System Control Port A (0x92): reads give what was last written (0x02
  after SeaBIOS: A20 on); A20 is not masked (KVM ignores it, as under
  QEMU) and the fast reset (bit 0) is not modelled;
- port 0x61 (NMI status / speaker): the refresh bit (4) flips on every
  read (QEMU's follows a 15 us clock), the rest reads 0;
- the MC146818 RTC/CMOS (0x70 index, 0x71 data): the clock registers give
  the host's UTC time in BCD, 24-hour (status A 0x26, B 0x02, C 0, D 0x80
  as SeaBIOS leaves them), and the CMOS bytes ``pc_cmos_init`` writes: base,
  extended (0x17/0x30) and >16 MiB (0x34) memory, equipment (FPU, PS/2
  mouse), the IDE disk types and geometry (0x12, 0x19-0x24), translations
  (0x39), boot order "cad" (0x3D, 0x38), century (0x32, 0x37);
- the floppy controller's DOR/MSR/DIR reads (0x3F2, 0x3F4, 0x3F7; no drive,
  no command), fw_cfg's signature and ID (0x510 selector, 0x511 data);
- the PIIX4 ACPI PM registers at SeaBIOS's pmbase 0x600: PM1a control
  (0x604; SLP_EN with S5 powers the machine off: ``on_shutdown``) and the
  PM timer (0x608).

QEMU: hw/input/pckbd.c, hw/i386/port92.c (hw/audio/pcspk.c), hw/rtc/
mc146818rtc.c, hw/i386/pc.c (pc_cmos_init, cmos_init_hd, set_boot_dev),
hw/block/fdc.c, hw/nvram/fw_cfg.c.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from gqemu.hw.memory_region import (MemoryRegion, MemoryRegionOps,
                                    memory_region_add_subregion, memory_region_init_io)

__all__ = ["PcLegacyState", "pc_legacy_init", "pc_cmos_bytes"]

KBD_STAT_OBF, KBD_STAT_SELFTEST, KBD_STAT_CMD, KBD_STAT_UNLOCKED = 0x01, 0x04, 0x08, 0x10
KBD_OUT_A20 = 0x02
KBD_MODE_DISABLE_KBD, KBD_MODE_KCC = 0x10, 0x40
ACPI_SLP_EN = 0x2000
KiB, MiB = 1 << 10, 1 << 20
CHS_TRANS = {"none": 0, "lba": 1, "large": 2}


def pc_cmos_bytes(ram_size: int, disks: Sequence[Any]) -> bytearray:
    """The 128 CMOS bytes QEMU's ``pc_cmos_init`` writes for ``ram_size``
    below 4 GiB and the IDE units ``disks`` (index 0..3: None or the
    IDEState, its cylinders, heads, sectors and chs_trans), with the RTC
    status registers SeaBIOS leaves."""
    c = bytearray(128)
    c[0x0A], c[0x0B], c[0x0C], c[0x0D] = 0x26, 0x02, 0x00, 0x80
    val = min(ram_size // KiB, 640)
    c[0x15], c[0x16] = val & 0xFF, val >> 8
    val = min((ram_size - MiB) // KiB if ram_size > MiB else 0, 65535)
    c[0x17], c[0x18] = val & 0xFF, val >> 8
    c[0x30], c[0x31] = val & 0xFF, val >> 8
    val = min((ram_size - 16 * MiB) // (64 * KiB) if ram_size > 16 * MiB else 0, 65535)
    c[0x34], c[0x35] = val & 0xFF, val >> 8
    c[0x14] = 0x02 | 0x04                       # FPU, PS/2 mouse
    c[0x3D], c[0x38] = (1 << 4) | 2, (3 << 4)   # boot order c, a, d; floppy check
    c[0x32] = c[0x37] = 0x20                    # century (BCD)
    c[0x12] = (0xF0 if disks[0] else 0) | (0x0F if len(disks) > 1 and disks[1] else 0)
    for unit, (type_ofs, info_ofs) in enumerate(((0x19, 0x1B), (0x1A, 0x24))):
        if unit < len(disks) and disks[unit]:
            d = disks[unit]
            cyls, heads, secs = d.cylinders, d.heads, d.sectors
            c[type_ofs] = 47
            c[info_ofs:info_ofs + 9] = bytes((cyls & 0xFF, (cyls >> 8) & 0xFF, heads & 0xFF,
                                              0xFF, 0xFF, 0xC0 | ((heads > 8) << 3),
                                              cyls & 0xFF, (cyls >> 8) & 0xFF, secs & 0xFF))
    val = 0
    for unit, d in enumerate(disks[:4]):
        if d:
            val |= CHS_TRANS.get(d.chs_trans, 0) << (2 * unit)
    c[0x39] = val
    return c


class PcLegacyState:
    """The i8042, port 0x92, port 0x61 and the RTC/CMOS."""

    def __init__(self, cmos: bytearray, on_shutdown: Any = None) -> None:
        self.on_shutdown = on_shutdown      # an ACPI S5 request (power off)
        self.pm1_cnt = 0x0001               # SCI_EN
        self.kbd_status = KBD_STAT_SELFTEST | KBD_STAT_UNLOCKED | KBD_STAT_CMD
        self.kbd_out: list[int] = []        # bytes waiting in the output buffer
        self.kbd_last = 0xFA
        self.kbd_write_cmd = 0              # the command a data write completes
        self.kbd_mode = 0x61                # the command byte SeaBIOS leaves
        self.outport = 0xCF
        self.port92 = 0x02
        self.refresh = 0
        self.cmos = cmos
        self.cmos_index = 0
        self.fdc_dor = 0x0C
        self.fw_cfg_key = 0xFFFF            # nothing selected
        self.fw_cfg_off = 0


def _kbd_queue(s: PcLegacyState, *vals: int) -> None:
    s.kbd_out.extend(vals)
    s.kbd_status |= KBD_STAT_OBF


def kbd_read(s: PcLegacyState, addr: int, size: int) -> int:
    """QEMU: kbd_read_data / kbd_read_status."""
    if addr == 4:
        return s.kbd_status
    if s.kbd_out:
        s.kbd_last = s.kbd_out.pop(0)
    if not s.kbd_out:
        s.kbd_status &= ~KBD_STAT_OBF
    return s.kbd_last


def kbd_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    """QEMU: kbd_write_command / kbd_write_data (the part above)."""
    val &= 0xFF
    if addr == 4:
        s.kbd_status |= KBD_STAT_CMD
        if val == 0xD0:
            _kbd_queue(s, s.outport)
        elif val in (0xD1, 0xD2, 0xD3, 0xD4, 0x60):
            s.kbd_write_cmd = val
        elif val == 0x20:
            _kbd_queue(s, s.kbd_mode)
        elif val == 0xAD:
            s.kbd_mode |= KBD_MODE_DISABLE_KBD
        elif val == 0xAE:
            s.kbd_mode &= ~KBD_MODE_DISABLE_KBD
        elif val == 0xDD:
            s.outport &= ~KBD_OUT_A20
        elif val == 0xDF:
            s.outport |= KBD_OUT_A20
        elif val == 0xAA:
            _kbd_queue(s, 0x55)
        elif val == 0xAB:
            _kbd_queue(s, 0x00)
        return
    cmd, s.kbd_write_cmd = s.kbd_write_cmd, 0     # (QEMU never clears KBD_STAT_CMD)
    if cmd == 0xD1:
        s.outport = val
    elif cmd in (0xD2, 0xD3):
        _kbd_queue(s, val)
    elif cmd == 0x60:
        s.kbd_mode = val
    elif cmd == 0xD4:
        pass                                # the mouse
    elif val == 0xFF:
        _kbd_queue(s, 0xFA, 0xAA)
    elif val == 0xF2:                       # the ID, translated with KCC
        _kbd_queue(s, 0xFA, 0xAB, 0x41 if s.kbd_mode & KBD_MODE_KCC else 0x83)
    elif val == 0xEE:
        _kbd_queue(s, 0xEE)
    else:
        _kbd_queue(s, 0xFA)


def port92_read(s: PcLegacyState, addr: int, size: int) -> int:
    return s.port92


def port92_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    s.port92 = val & 0xFF


def port61_read(s: PcLegacyState, addr: int, size: int) -> int:
    s.refresh ^= 1
    return s.refresh << 4


def port61_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    pass


def _bcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


def cmos_read(s: PcLegacyState, addr: int, size: int) -> int:
    """QEMU: cmos_ioport_read (index port: 0xFF)."""
    if addr == 0:
        return 0xFF
    i = s.cmos_index
    if i <= 9 and i not in (1, 3, 5):
        t = time.gmtime()
        return _bcd({0: t.tm_sec, 2: t.tm_min, 4: t.tm_hour, 6: t.tm_wday + 1,
                     7: t.tm_mday, 8: t.tm_mon, 9: t.tm_year % 100}[i])
    val = s.cmos[i]
    if i == 0x0C:
        s.cmos[i] = 0
    return val


def cmos_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    if addr == 0:
        s.cmos_index = val & 0x7F
    elif s.cmos_index not in (0x0C, 0x0D) and s.cmos_index > 9:
        s.cmos[s.cmos_index] = val & 0xFF


def fdc_read(s: PcLegacyState, addr: int, size: int) -> int:
    """The floppy controller's registers a boot loader touches (no drive):
    DOR (as written; 0x0C after SeaBIOS), MSR 0x80 (ready), DIR 0x80."""
    return {2: s.fdc_dor, 4: 0x80, 7: 0x80}.get(addr, 0xFF)


def fdc_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    if addr == 2:
        s.fdc_dor = val & 0xFF


def fw_cfg_read(s: PcLegacyState, addr: int, size: int) -> int:
    """fw_cfg's I/O interface: 0x511 reads the selected item byte by byte
    (the signature "QEMU", the interface ID 3: traditional and DMA; no
    other item is modelled and reads 0, as past an item's end); 0x510
    reads 0.  QEMU: hw/nvram/fw_cfg.c (fw_cfg_comb_read)."""
    if addr != 1:
        return 0
    item = {0x0000: b"QEMU", 0x0001: (3).to_bytes(4, "little")}.get(s.fw_cfg_key, b"")
    v = item[s.fw_cfg_off] if s.fw_cfg_off < len(item) else 0
    s.fw_cfg_off += 1
    return v


def fw_cfg_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    if addr == 0:
        s.fw_cfg_key, s.fw_cfg_off = val & 0xFFFF, 0


def acpi_pm_read(s: PcLegacyState, addr: int, size: int) -> int:
    """PIIX4 PM at SeaBIOS's pmbase 0x600: PM1 status/enable read 0 (the
    timer's overflow status is not modelled), PM1a control (SCI_EN as
    SeaBIOS leaves it), the PM timer (3.579545 MHz, 24 bits) from the
    host's clock.  QEMU: hw/acpi/core.c, hw/acpi/piix4.c."""
    if addr in (4, 5):
        return (s.pm1_cnt >> (8 * (addr - 4))) & 0xFF
    if 8 <= addr < 12:
        tmr = (time.monotonic_ns() * 3579545 // 1_000_000_000) & 0xFFFFFF
        return (tmr >> (8 * (addr - 8))) & 0xFF
    return 0


def acpi_pm_write(s: PcLegacyState, addr: int, val: int, size: int) -> None:
    """PM1a control: SLP_EN with sleep type 0 is S5, a power off (QEMU:
    acpi_pm1_cnt_write -> qemu_system_shutdown_request)."""
    if addr not in (4, 5):
        return
    shift = 8 * (addr - 4)
    cnt = (s.pm1_cnt & ~(0xFF << shift)) | ((val & 0xFF) << shift)
    s.pm1_cnt = cnt & ~ACPI_SLP_EN
    if addr == 5 and cnt & ACPI_SLP_EN and (cnt >> 10) & 7 == 0 and s.on_shutdown:
        s.on_shutdown()


def _map(io_root: MemoryRegion, port: int, n: int, read: Any, write: Any, s: PcLegacyState,
         name: str, max_size: int = 1) -> None:
    ops = MemoryRegionOps(read, write, impl_min_access_size=1, impl_max_access_size=max_size,
                          name=name)
    memory_region_add_subregion(io_root, port, memory_region_init_io(None, ops, s, name, n))


def pc_legacy_init(io_root: MemoryRegion, cmos: bytearray,
                   on_shutdown: Any = None) -> PcLegacyState:
    s = PcLegacyState(cmos, on_shutdown)
    _map(io_root, 0x60, 1, kbd_read, kbd_write, s, "i8042-data")
    _map(io_root, 0x64, 1, lambda o, a, z: kbd_read(o, 4, z),
         lambda o, a, v, z: kbd_write(o, 4, v, z), s, "i8042-cmd")
    _map(io_root, 0x61, 1, port61_read, port61_write, s, "pcspk")
    _map(io_root, 0x70, 2, cmos_read, cmos_write, s, "rtc")
    _map(io_root, 0x92, 1, port92_read, port92_write, s, "port92")
    _map(io_root, 0x3F2, 4, lambda o, a, z: fdc_read(o, a + 2, z),
         lambda o, a, v, z: fdc_write(o, a + 2, v, z), s, "fdc")
    _map(io_root, 0x3F7, 1, lambda o, a, z: fdc_read(o, 7, z),
         lambda o, a, v, z: None, s, "fdc-dir")      # (0x3F6 is IDE's)
    _map(io_root, 0x510, 2, fw_cfg_read, fw_cfg_write, s, "fwcfg", 2)
    _map(io_root, 0x600, 12, acpi_pm_read, acpi_pm_write, s, "acpi-pm")
    return s
