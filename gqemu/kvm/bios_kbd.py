"""INT 16h, the keyboard services, as SeaBIOS 1.16.2 answers them with no
key ever pressed: 00/10 (read a key: with none, the caller waits in HLT as
under SeaBIOS), 01/11 (ZF when none), 02/12 (shift flags), 05 (store a
key), 09, 0A (BX=0: no keyboard answers in gqemu), 6F, 92, A2, on the BIOS
data area's keyboard buffer as SeaBIOS keeps it.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/kbd.c.
"""
from __future__ import annotations

import struct
from typing import Any

from gqemu.kvm.bregs import BDA, F_ZF, Regs, rd16 as _rd16, wr as _wr

__all__ = ["handle_16"]

KBD_HEAD, KBD_TAIL, KBD_START, KBD_END = 0x41A, 0x41C, 0x480, 0x482
KBD_FLAG0, KBD_FLAG1 = 0x417, 0x418


def _enqueue_key(bs: Any, keycode: int) -> int:
    ram = bs.ram
    start, end = _rd16(ram, KBD_START), _rd16(ram, KBD_END)
    head, tail = _rd16(ram, KBD_HEAD), _rd16(ram, KBD_TAIL)
    new = tail + 2
    if new >= end:
        new = start
    if new == head:
        return 0
    _wr(bs, BDA + tail, struct.pack("<H", keycode))
    _wr(bs, KBD_TAIL, struct.pack("<H", new))
    return 1


def _dequeue_key(bs: Any, r: Regs, incr: bool, extended: bool) -> None:
    """SeaBIOS: dequeue_key (with no key, a read waits: ``r.wait``)."""
    ram = bs.ram
    head, tail = _rd16(ram, KBD_HEAD), _rd16(ram, KBD_TAIL)
    if head == tail:
        if not incr:
            r.flags |= F_ZF
        else:
            r.wait = True
        return
    keycode = _rd16(ram, BDA + head)
    ascii = keycode & 0xFF
    if not extended:
        if ascii == 0xE0 and keycode & 0xFF00:
            keycode &= 0xFF00
        elif keycode in (0xE00D, 0xE00A):
            keycode = 0x1C00 | ascii
        elif keycode == 0xE02F:
            keycode = 0x352F
    if ascii == 0xF0 and keycode & 0xFF00:
        keycode &= 0xFF00
    r.set_ax(keycode)
    if not incr:
        r.flags &= ~F_ZF
        return
    head += 2
    if head >= _rd16(ram, KBD_END):
        head = _rd16(ram, KBD_START)
    _wr(bs, KBD_HEAD, struct.pack("<H", head))


def handle_16(bs: Any, r: Regs) -> None:
    """SeaBIOS: handle_16."""
    ah, ram = r.ah, bs.ram
    if ah in (0x00, 0x01, 0x10, 0x11):
        _dequeue_key(bs, r, ah in (0x00, 0x10), ah >= 0x10)
    elif ah == 0x02:
        r.set_al(ram[KBD_FLAG0])
    elif ah == 0x05:
        r.set_al(not _enqueue_key(bs, r.ecx & 0xFFFF))
    elif ah == 0x09:
        r.set_al(0x30)
    elif ah == 0x0A:
        r.ebx &= ~0xFFFF
    elif ah == 0x12:
        rctrl_ralt = 0x0C
        r.set_ax((ram[KBD_FLAG0] | (ram[KBD_FLAG1] << 8)) & ~(rctrl_ralt << 8)
                 | ((ram[0x496] & rctrl_ralt) << 8))
    elif ah == 0x6F:
        if r.al == 0x08:
            r.set_ah(2)
    elif ah == 0x92:
        r.set_ah(0x80)
