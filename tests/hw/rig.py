"""A bare PC for IDE tests: I/O and memory spaces, RAM, the ISA PIC and
the PIIX IDE function on real raw images, driven from the test's greenlet.

``Rig.settle()`` runs the main loop until no drive is busy (what a guest's
BSY poll waits for); nothing else runs the loop, so a test sees the device
exactly between the steps it takes.
"""
from __future__ import annotations

import lzma
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

from gqemu.aio import aio_poll, aio_wait_while, qemu_get_aio_context
import gqemu.block.file_posix  # noqa: F401  (registers the drivers until block/__init__ does)
import gqemu.block.raw_format  # noqa: F401
import gqemu.block.qcow2  # noqa: F401
from gqemu.block.block_backend import blk_new_open, blk_unref
from gqemu.hw.ide.internal import BUSY_STAT
from gqemu.hw.ide.piix import pc_ide_init
from gqemu.hw.irq import isa_pic_new
from gqemu.hw.memory import (address_space_read, address_space_write,
                             cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl,
                             cpu_outw, memory_region_add_subregion,
                             memory_region_init_ram, new_address_space_io,
                             new_address_space_memory)

RAM_SIZE = 1 << 20


def decompress(src: Path, dst: Path) -> Path:
    with lzma.open(src) as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


def make_disk(path: Path, nsectors: int, fill: Any = None) -> Path:
    """Sector N holds the 32-bit value N repeated (reliability 6.1's disk)."""
    with open(path, "wb") as f:
        for n in range(nsectors):
            f.write((n.to_bytes(4, "little")) * 128 if fill is None else fill(n))
    return path


class Rig:
    def __init__(self, paths: Sequence[Optional[Any]], opts: Optional[dict] = None,
                 bmdma_base: Optional[int] = 0xC000, readahead: int = 0) -> None:
        self.ctx = qemu_get_aio_context()
        self.as_io = new_address_space_io()
        self.as_mem = new_address_space_memory()
        self.ram = memory_region_init_ram(None, "pc.ram", RAM_SIZE)
        memory_region_add_subregion(self.as_mem.root, 0, self.ram)
        self.pic = isa_pic_new()
        self.blks = []
        for p in paths:
            if p is None:
                self.blks.append(None)
            else:
                o = {"format": "raw"}
                o.update(opts or {})
                self.blks.append(blk_new_open(str(p), o))
        self.bus0, self.bus1, self.piix = pc_ide_init(
            self.as_io, self.pic.irqs, self.blks,
            address_space_memory=self.as_mem, ctx=self.ctx,
            bmdma_base=bmdma_base, pio_readahead=readahead)
        self.buses = (self.bus0, self.bus1)

    # port I/O
    def inb(self, port: int) -> int:
        return cpu_inb(self.as_io, port)

    def inw(self, port: int) -> int:
        return cpu_inw(self.as_io, port)

    def inl(self, port: int) -> int:
        return cpu_inl(self.as_io, port)

    def outb(self, port: int, v: int) -> None:
        cpu_outb(self.as_io, port, v)

    def outw(self, port: int, v: int) -> None:
        cpu_outw(self.as_io, port, v)

    def outl(self, port: int, v: int) -> None:
        cpu_outl(self.as_io, port, v)

    def insw(self, port: int, count: int) -> bytes:
        return b"".join(self.inw(port).to_bytes(2, "little") for _ in range(count))

    def outsw(self, port: int, data: bytes) -> None:
        for i in range(0, len(data), 2):
            self.outw(port, data[i] | data[i + 1] << 8)

    # RAM
    def mem_write(self, addr: int, data: bytes) -> None:
        address_space_write(self.as_mem, addr, None, data, len(data))

    def mem_read(self, addr: int, n: int) -> bytes:
        b = bytearray(n)
        address_space_read(self.as_mem, addr, None, b, n)
        return bytes(b)

    # the loop
    def busy(self) -> bool:
        return any(bus.srst_pending or bus.dma.aiocb is not None
                   or any(s.status & BUSY_STAT and (s.pio_aiocb is not None
                                                    or s.buffered_requests)
                          for s in bus.ifs)
                   for bus in self.buses)

    def settle(self) -> None:
        aio_wait_while(self.ctx, self.busy)

    def drain(self, limit: int = 100000) -> int:
        """Run the loop until nothing is left; returns the polls made."""
        n = 0
        while n < limit:
            if aio_poll(self.ctx, False) or (self.ctx.external and aio_poll(self.ctx, True)):
                n += 1
                continue
            break
        return n

    def irq(self, n: int = 14) -> int:
        return self.pic.levels[n]

    def close(self) -> None:
        self.drain()
        for blk in self.blks:
            if blk is not None:
                blk_unref(blk)
        self.drain()
