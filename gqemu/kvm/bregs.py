"""The caller's registers of a BIOS service as SeaBIOS's ``struct bregs``
(32-bit), with its result conventions, and the RAM helpers the services
(``gqemu.kvm.biossvc``, ``gqemu.kvm.bios_kbd``, ``gqemu.kvm.pcibios``) share.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/bregs.h.
"""
from __future__ import annotations

import struct
from typing import Any

__all__ = ["Regs", "F_CF", "F_ZF", "BDA", "rd16", "wr"]

F_CF = 0x0001
F_ZF = 0x0040
BDA = 0x400


class Regs:
    """The caller's registers, 32-bit (SeaBIOS's ``struct bregs``), and
    the FLAGS image; ``wait`` asks the stub to halt and call again."""

    def __init__(self, eax: int, ebx: int, ecx: int, edx: int, esi: int, edi: int,
                 es: int, flags: int) -> None:
        self.eax, self.ebx, self.ecx, self.edx = eax, ebx, ecx, edx
        self.esi, self.edi, self.es, self.flags = esi, edi, es, flags
        self.wait = False

    @property
    def ah(self) -> int:
        return (self.eax >> 8) & 0xFF

    @property
    def al(self) -> int:
        return self.eax & 0xFF

    def set_ax(self, v: int) -> None:
        self.eax = (self.eax & ~0xFFFF) | (v & 0xFFFF)

    def set_ah(self, v: int) -> None:
        self.eax = (self.eax & ~0xFF00) | ((v & 0xFF) << 8)

    def set_al(self, v: int) -> None:
        self.eax = (self.eax & ~0xFF) | (v & 0xFF)

    def success(self) -> None:
        self.flags &= ~F_CF

    def code_success(self) -> None:
        self.set_ah(0)
        self.success()

    def code_invalid(self, code: int) -> None:
        self.set_ah(code)
        self.flags |= F_CF


def rd16(ram: Any, a: int) -> int:
    return struct.unpack_from("<H", ram, a)[0]


def wr(bs: Any, a: int, data: bytes) -> None:
    """RAM written behind KVM's back: noted for a recording."""
    bs.ram[a:a + len(data)] = data
    if bs.on_ram_write is not None:
        bs.on_ram_write(a, len(data))
