"""A small guest-side legacy virtio-blk driver for emulator scripts.

Runs inside the guest program: PCI config space through 0xCF8/0xCFC, the
device's BAR0 registers by port I/O, the virtqueue in guest RAM through
``cpu.memory``::

    from gqemu.guest.virtio_blk import VirtioBlk
    def guest(cpu):
        vb = VirtioBlk(cpu)            # first 1AF4:1001 on bus 0
        data = vb.read(0, 8)           # 8 sectors from sector 0
        vb.write(100, data)
        vb.flush()

The constructor scans bus 0 (function 0 of each slot), enables I/O and bus
mastering, resets the device, sets ACKNOWLEDGE|DRIVER, accepts the
``features`` it is given that the device offers (default none), puts queue 0
at ``ring`` (4 KiB aligned) and sets DRIVER_OK.  One request at a time, a
three-descriptor chain (header, data, status); it waits in ``hlt`` for the
INTx interrupt, then reads the ISR (which lowers the line).  A status other
than OK raises ``VirtioBlkError`` with it.  This is guest code: the layout
is the guest's choice.
"""
from __future__ import annotations

import struct
from typing import Any, Optional

VENDOR_DEVICE = 0x10011AF4
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES = 0, 1, 4, 8, 11, 13
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
RING = 0x100000             # queue (PFN 0x100)
HDR = 0x180000              # request header, status byte at +16
DATA = 0x200000             # data buffer
DATA_MAX = 4 << 20          # bytes per request
MAX_WAITS = 100_000


class VirtioBlkError(Exception):
    """A request ended with a status other than OK, or no device."""

    def __init__(self, what: str, status: int = -1) -> None:
        super().__init__(what if status < 0 else "%s: status %d" % (what, status))
        self.status = status


def pci_cfg_read(cpu: Any, devfn: int, off: int) -> int:
    cpu.outl(0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
    return int(cpu.inl(0xCFC))


def pci_cfg_write(cpu: Any, devfn: int, off: int, val: int) -> None:
    cpu.outl(0xCF8, 0x80000000 | devfn << 8 | (off & 0xFC))
    cpu.outl(0xCFC, val)


def find_virtio_blk(cpu: Any) -> Optional[int]:
    """The devfn of the first virtio-blk function on bus 0, or None."""
    for slot in range(32):
        if pci_cfg_read(cpu, slot << 3, 0) == VENDOR_DEVICE:
            return slot << 3
    return None


class VirtioBlk:
    """One legacy virtio-blk device, queue 0."""

    def __init__(self, cpu: Any, features: int = 0, ring: int = RING) -> None:
        self.cpu = cpu
        devfn = find_virtio_blk(cpu)
        if devfn is None:
            raise VirtioBlkError("no virtio-blk device on PCI bus 0")
        self.devfn = devfn
        self.io = pci_cfg_read(cpu, devfn, 0x10) & 0xFFFC
        cmd = pci_cfg_read(cpu, devfn, 0x04)
        pci_cfg_write(cpu, devfn, 0x04, (cmd & 0xFFFF) | 0x5)
        io = self.io
        cpu.outb(io + 0x12, 0)
        cpu.outb(io + 0x12, 1)
        cpu.outb(io + 0x12, 3)
        self.host_features = cpu.inl(io)
        self.features = features & self.host_features
        cpu.outl(io + 0x04, self.features)
        cpu.outw(io + 0x0E, 0)
        self.num = cpu.inw(io + 0x0C)
        if not self.num:
            raise VirtioBlkError("queue 0 has size 0")
        self.ring = ring
        self.avail = ring + 16 * self.num
        self.used = (self.avail + 4 + 2 * self.num + 4095) & ~4095
        cpu.memory.write(ring, bytes(self.used + 6 + 8 * self.num - ring))
        cpu.outl(io + 0x08, ring >> 12)
        cpu.outb(io + 0x12, 7)
        self.avail_idx = 0
        self.used_idx = 0
        self.capacity = cpu.inl(io + 0x14) | cpu.inl(io + 0x18) << 32

    def _desc(self, i: int, addr: int, length: int, flags: int) -> None:
        self.cpu.memory.write(self.ring + 16 * i, struct.pack("<QIHH", addr, length, flags, i + 1))

    def request(self, rtype: int, sector: int = 0, out: bytes = b"",
                in_len: int = 0) -> tuple[int, bytes]:
        """One request: ``out`` is sent after the header, ``in_len`` bytes
        come back before the status.  Returns (status, data)."""
        cpu, mem = self.cpu, self.cpu.memory
        if len(out) > DATA_MAX or in_len > DATA_MAX or (out and in_len):
            raise ValueError("one data buffer of at most %d bytes" % DATA_MAX)
        mem.write(HDR, struct.pack("<IIQB", rtype, 0, sector, 0xFF))
        self._desc(0, HDR, 16, 1)
        n = 1
        if out:
            mem.write(DATA, out)
            self._desc(n, DATA, len(out), 1)
            n += 1
        elif in_len:
            self._desc(n, DATA, in_len, 1 | 2)
            n += 1
        self._desc(n, HDR + 16, 1, 2)
        mem.write(self.avail + 4 + 2 * (self.avail_idx % self.num), struct.pack("<H", 0))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        mem.write(self.avail + 2, struct.pack("<H", self.avail_idx))
        cpu.outw(self.io + 0x10, 0)
        for _ in range(MAX_WAITS):
            if struct.unpack("<H", mem.read(self.used + 2, 2))[0] != self.used_idx:
                break
            cpu.hlt()
        else:
            raise VirtioBlkError("request type %d: no completion" % rtype)
        self.isr = cpu.inb(self.io + 0x13)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        status = mem.read(HDR + 16, 1)[0]
        return status, (mem.read(DATA, in_len) if in_len else b"")

    def _check(self, what: str, status: int) -> None:
        if status != S_OK:
            raise VirtioBlkError(what, status)

    def read(self, sector: int, count: int) -> bytes:
        """``count`` sectors from ``sector`` (requests of at most DATA_MAX)."""
        out = []
        step = DATA_MAX // 512
        while count > 0:
            n = min(count, step)
            status, data = self.request(T_IN, sector, in_len=512 * n)
            self._check("read sector %d" % sector, status)
            out.append(data)
            sector += n
            count -= n
        return b"".join(out)

    def write(self, sector: int, data: bytes) -> None:
        """Write whole sectors of ``data`` at ``sector``."""
        if not data or len(data) % 512:
            raise ValueError("write of %d bytes: not whole sectors" % len(data))
        for pos in range(0, len(data), DATA_MAX):
            chunk = data[pos:pos + DATA_MAX]
            status, _ = self.request(T_OUT, sector + pos // 512, out=chunk)
            self._check("write sector %d" % (sector + pos // 512), status)

    def flush(self) -> None:
        self._check("flush", self.request(T_FLUSH)[0])

    def get_id(self) -> bytes:
        status, data = self.request(T_GET_ID, in_len=20)
        self._check("get id", status)
        return data
