"""The PCI BIOS (INT 1Ah AH=B1) as SeaBIOS 1.16.2 answers it under QEMU
7.2's ``pc`` (``tests/data/kvm/pcibios.asm`` recorded it): B101
installation check (configuration mechanism 1, version 2.10, last bus 0,
"PCI ", EDI the 32-bit entry point SeaBIOS's build has), B102 find device
and B103 find class by walking bus 0 as SeaBIOS's ``pci_next`` does, B108
to B10D configuration reads and writes through 0xCF8/0xCFC, as exits of
the vCPU like SeaBIOS's; anything else (B10E, the IRQ routing table,
included): AH=81 with CF.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/pcibios.c, src/hw/pci.c (pci_next, pci_config_*).
"""
from __future__ import annotations

from typing import Any

__all__ = ["handle_1ab1"]

PORT_PCI_CMD, PORT_PCI_DATA = 0xCF8, 0xCFC
RET_FUNC_NOT_SUPPORTED = 0x81
RET_DEVICE_NOT_FOUND = 0x86
#: entry_pcibios32 + BUILD_BIOS_ADDR in Debian's SeaBIOS 1.16.2 (QEMU 7.2)
PCIBIOS32_ENTRY = 0x000FD1CA
MAX_PCI_BUS = 0


def _addr(bdf: int, reg: int) -> int:
    return 0x80000000 | (bdf << 8) | (reg & 0xFC)


def _readb(io: Any, bdf: int, reg: int) -> int:
    io.outl(PORT_PCI_CMD, _addr(bdf, reg))
    return int(io.inb(PORT_PCI_DATA + (reg & 3)))


def _readw(io: Any, bdf: int, reg: int) -> int:
    io.outl(PORT_PCI_CMD, _addr(bdf, reg))
    return int(io.inw(PORT_PCI_DATA + (reg & 2)))


def _readl(io: Any, bdf: int, reg: int) -> int:
    io.outl(PORT_PCI_CMD, _addr(bdf, reg))
    return int(io.inl(PORT_PCI_DATA))


def _next(io: Any, bdf: int, bus: int) -> int:
    """SeaBIOS: pci_next."""
    if (bdf & 7) == 0 and not _readb(io, bdf, 0x0E) & 0x80:
        bdf += 8
    else:
        bdf += 1
    while True:
        if bdf >> 8 != bus:
            return -1
        v = _readw(io, bdf, 0x00)
        if v not in (0x0000, 0xFFFF):
            return bdf
        bdf += 8 if (bdf & 7) == 0 else 1


def _find(io: Any, r: Any, reg: int, match: Any) -> None:
    count = r.esi & 0xFFFF
    for bus in range(MAX_PCI_BUS + 1):
        bdf = _next(io, (bus << 8) - 1, bus)
        while bdf >= 0:
            if match(_readl(io, bdf, reg)):
                if not count:
                    r.ebx = (r.ebx & ~0xFFFF) | bdf
                    r.code_success()
                    return
                count -= 1
            bdf = _next(io, bdf, bus)
    r.code_invalid(RET_DEVICE_NOT_FOUND)


def handle_1ab1(bs: Any, r: Any) -> None:
    """SeaBIOS: handle_1ab1 (``bs.io`` makes the configuration accesses)."""
    io, al = bs.io, r.al
    bdf, reg = r.ebx & 0xFFFF, r.edi & 0xFFFF
    if io is None or al not in (0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D):
        r.code_invalid(RET_FUNC_NOT_SUPPORTED)
        return
    if al == 0x01:
        r.set_al(0x01)
        r.ebx = (r.ebx & ~0xFFFF) | 0x0210
        r.ecx = (r.ecx & ~0xFF) | MAX_PCI_BUS
        r.edx, r.edi = 0x20494350, PCIBIOS32_ENTRY
    elif al == 0x02:
        want = ((r.ecx & 0xFFFF) << 16) | (r.edx & 0xFFFF)
        _find(io, r, 0x00, lambda v: v == want)
        return
    elif al == 0x03:
        want = r.ecx
        _find(io, r, 0x08, lambda v: v >> 8 == want)
        return
    elif al == 0x08:
        r.ecx = (r.ecx & ~0xFF) | _readb(io, bdf, reg)
    elif al == 0x09:
        r.ecx = (r.ecx & ~0xFFFF) | _readw(io, bdf, reg)
    elif al == 0x0A:
        r.ecx = _readl(io, bdf, reg)
    else:
        io.outl(PORT_PCI_CMD, _addr(bdf, reg))
        if al == 0x0B:
            io.outb(PORT_PCI_DATA + (reg & 3), r.ecx & 0xFF)
        elif al == 0x0C:
            io.outw(PORT_PCI_DATA + (reg & 2), r.ecx & 0xFFFF)
        else:
            io.outl(PORT_PCI_DATA, r.ecx)
    r.code_success()
