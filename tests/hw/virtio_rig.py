"""A device-side test rig for legacy virtio-blk: a Machine with one
if=virtio drive, driven directly through the I/O space and guest RAM (no
vCPU), as the reference program drives it."""
from __future__ import annotations

import struct
from typing import Optional

from gqemu.hw.memory import cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw
from gqemu.machine import Machine, drive_config

RING = 0x10000          # PFN 0x10: desc 0x10000, avail 0x11000, used 0x12000 (num 256)
HDR = 0x13000
DATA = 0x14000


class Rig:
    def __init__(self, path: str, fmt: str = "raw", features: int = 0,
                 extra: str = "") -> None:
        self.m = Machine(drive_config(["file=%s,format=%s,if=virtio%s" % (path, fmt, extra)]))
        self.io = self.cfg(0x10, 0x10) & 0xFFFC
        self.nreq = 0
        self.used_seen = 0
        self.status(0)
        self.status(1)
        self.status(3)
        cpu_outl(self.m.as_io, self.io + 4, features)
        cpu_outw(self.m.as_io, self.io + 0x0E, 0)
        self.num = cpu_inw(self.m.as_io, self.io + 0x0C)
        self.avail = RING + 16 * self.num
        self.used = (self.avail + 4 + 2 * self.num + 4095) & ~4095
        cpu_outl(self.m.as_io, self.io + 8, RING >> 12)
        self.status(7)

    @property
    def vdev(self):
        return self.m.virtio[0].vdev

    def cfg(self, devfn: int, off: int) -> int:
        cpu_outl(self.m.as_io, 0xCF8, 0x80000000 | devfn << 8 | off)
        return cpu_inl(self.m.as_io, 0xCFC)

    def cfg_write(self, devfn: int, off: int, val: int, size: int = 4) -> None:
        cpu_outl(self.m.as_io, 0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
        {1: cpu_outb, 2: cpu_outw, 4: cpu_outl}[size](self.m.as_io, 0xCFC + (off & 3), val)

    def status(self, val: Optional[int] = None) -> int:
        if val is not None:
            cpu_outb(self.m.as_io, self.io + 0x12, val)
        return cpu_inb(self.m.as_io, self.io + 0x12)

    def isr(self) -> int:
        return cpu_inb(self.m.as_io, self.io + 0x13)

    # -- guest memory
    def wr(self, addr: int, data: bytes) -> None:
        self.m.ram[addr:addr + len(data)] = data

    def rd(self, addr: int, n: int) -> bytes:
        return bytes(self.m.ram[addr:addr + n])

    def desc(self, i: int, addr: int, length: int, flags: int, nxt: int = 0,
             table: int = RING) -> None:
        self.wr(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def put_avail(self, head: int) -> None:
        slot = self.nreq % self.num
        self.wr(self.avail + 4 + 2 * slot, struct.pack("<H", head))
        self.nreq = (self.nreq + 1) & 0xFFFF

    def publish(self) -> None:
        self.wr(self.avail + 2, struct.pack("<H", self.nreq))

    def kick(self) -> None:
        cpu_outw(self.m.as_io, self.io + 0x10, 0)

    def used_idx(self) -> int:
        return struct.unpack("<H", self.rd(self.used + 2, 2))[0]

    def new_used(self) -> list[tuple[int, int]]:
        out = []
        while self.used_seen != self.used_idx():
            slot = self.used_seen % self.num
            out.append(struct.unpack("<II", self.rd(self.used + 4 + 8 * slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out

    def request(self, rtype: int, sector: int, data: bytes = b"", in_len: int = 0,
                slot: int = 0, kick: bool = True, hdr_len: int = 16) -> int:
        """A header/data/status chain at descriptors 3*slot..; returns the
        status byte's address."""
        hdr = HDR + 32 * slot
        self.wr(hdr, struct.pack("<IIQ", rtype, 0, sector) + b"\xee")
        d = 3 * slot
        self.desc(d, hdr, hdr_len, 1, d + 1)
        n = d + 1
        buf = DATA + 0x1000 * slot
        if data:
            self.wr(buf, data)
            self.desc(n, buf, len(data), 1, n + 1)
            n += 1
        elif in_len:
            self.desc(n, buf, in_len, 3, n + 1)
            n += 1
        self.desc(n, hdr + 16, 1, 2)
        self.put_avail(d)
        if kick:
            self.publish()
            self.kick()
        return hdr + 16

    def settle(self) -> None:
        self.m.drain()

    def close(self) -> None:
        self.m.close()
