"""``gqemu bench virtio``: 4 KiB random reads through legacy virtio-blk next
to the same reads by IDE bus-master DMA, on one machine and one image.

Figures (each beside ``blk_aio_preadv`` 4 KiB alone, one at a time):

* virtio-blk, one request per notify (queue depth 1): notify exit ->
  ``virtio_blk_handle_vq`` -> ``blk_aio_preadv`` -> completion -> used ring;
* virtio-blk, 32 requests per notify (queue depth 32, sectors far apart so
  nothing merges): what a queue buys over one request per exit;
* IDE READ DMA of 8 sectors (queue depth 1: the PRD table, the task file,
  BM START, then status polls until the engine stops).

The guest side is driven from Python at port level (no vCPU), the same for
both devices, so the ratio compares the device paths.
"""
from __future__ import annotations

import argparse
import os
import random
import struct
import tempfile
import time
from typing import Any

from gqemu.bench.common import (RATIO_HEADER, fmt_num, make_lba_image, progress,
                                progress_done, table)

NSECT = 32768            # 16 MiB
RING, HDR, DATA = 0x100000, 0x180000, 0x200000
PRD, DMABUF = 0x1000, 0x10000


class _Bench:
    def __init__(self, ide_path: str, vio_path: str) -> None:
        from gqemu.machine import Machine, drive_config
        self.m = Machine(drive_config(["file=%s,format=raw" % ide_path,
                                       "file=%s,format=raw,if=virtio" % vio_path]))
        from gqemu.hw.memory import cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw
        as_io = self.m.as_io
        cpu_outl(as_io, 0xCF8, 0x80001010)
        self.io = cpu_inl(as_io, 0xCFC) & 0xFFFC
        cpu_outl(as_io, 0xCF8, 0x80000920)
        self.bm = cpu_inl(as_io, 0xCFC) & 0xFFFC
        for v in (0, 1, 3):
            cpu_outb(as_io, self.io + 0x12, v)
        cpu_outl(as_io, self.io + 4, 0)
        cpu_outw(as_io, self.io + 0x0E, 0)
        self.num = cpu_inw(as_io, self.io + 0x0C)
        self.avail = RING + 16 * self.num
        self.used = (self.avail + 4 + 2 * self.num + 4095) & ~4095
        cpu_outl(as_io, self.io + 8, RING >> 12)
        cpu_outb(as_io, self.io + 0x12, 7)
        self.avail_idx = 0
        ram = self.m.ram
        for k in range(32):         # chains k: header, 4 KiB buffer, status
            hdr = HDR + 32 * k
            buf = DATA + 4096 * k
            ram[RING + 48 * k:RING + 48 * k + 48] = (
                struct.pack("<QIHH", hdr, 16, 1, 3 * k + 1)
                + struct.pack("<QIHH", buf, 4096, 3, 3 * k + 2)
                + struct.pack("<QIHH", hdr + 16, 1, 2, 0))

    def virtio_reads(self, sectors: list[int], depth: int) -> float:
        from gqemu.aio import aio_wait_while
        from gqemu.hw.memory import cpu_inb, cpu_outw
        ram, as_io, ctx = self.m.ram, self.m.as_io, self.m.ctx
        used_at = self.used + 2
        t0 = time.perf_counter()
        for i in range(0, len(sectors), depth):
            batch = sectors[i:i + depth]
            for k, sector in enumerate(batch):
                ram[HDR + 32 * k:HDR + 32 * k + 16] = struct.pack("<IIQ", 0, 0, sector)
                slot = self.avail + 4 + 2 * (self.avail_idx % self.num)
                ram[slot:slot + 2] = struct.pack("<H", 3 * k)
                self.avail_idx = (self.avail_idx + 1) & 0xFFFF
            ram[self.avail + 2:self.avail + 4] = struct.pack("<H", self.avail_idx)
            cpu_outw(as_io, self.io + 0x10, 0)
            want = self.avail_idx
            aio_wait_while(ctx, lambda: ram[used_at] | ram[used_at + 1] << 8 != want)
            cpu_inb(as_io, self.io + 0x13)
        dt = time.perf_counter() - t0
        k = len(sectors[-depth:]) - 1
        got = int.from_bytes(ram[DATA + 4096 * k:DATA + 4096 * k + 4], "little")
        if got != sectors[-1]:
            raise RuntimeError("bench virtio: read the wrong data")
        return len(sectors) / dt

    def ide_reads(self, sectors: list[int]) -> float:
        from gqemu.aio import aio_poll
        from gqemu.hw.memory import cpu_inb, cpu_outb, cpu_outl
        ram, as_io, ctx, bm = self.m.ram, self.m.as_io, self.m.ctx, self.bm
        ram[PRD:PRD + 8] = struct.pack("<IHH", DMABUF, 4096, 0x8000)
        cpu_outb(as_io, 0x3F6, 0x02)
        t0 = time.perf_counter()
        for lba in sectors:
            cpu_outl(as_io, bm + 4, PRD)
            cpu_outb(as_io, bm + 2, 0x06)
            for port, val in ((0x1F2, 8), (0x1F3, lba & 0xFF), (0x1F4, lba >> 8 & 0xFF),
                              (0x1F5, lba >> 16 & 0xFF), (0x1F6, 0xE0 | lba >> 24),
                              (0x1F7, 0xC8)):
                cpu_outb(as_io, port, val)
            cpu_outb(as_io, bm, 0x09)
            while cpu_inb(as_io, bm + 2) & 0x01:
                aio_poll(ctx, True)
            cpu_outb(as_io, bm, 0x00)
            if cpu_inb(as_io, 0x1F7) & 0x01:
                raise RuntimeError("bench virtio: READ DMA failed")
        dt = time.perf_counter() - t0
        if int.from_bytes(ram[DMABUF:DMABUF + 4], "little") != sectors[-1]:
            raise RuntimeError("bench virtio: IDE read the wrong data")
        return len(sectors) / dt

    def block_alone(self, sectors: list[int]) -> float:
        from gqemu.aio import aio_wait_while
        from gqemu.block.block_backend import blk_aio_preadv
        from gqemu.block.qiov import qemu_iovec_init_buf
        blk = self.m.vblks[0]
        buf = bytearray(4096)
        done = [0]

        def cb(opaque: Any, ret: int) -> None:
            done[0] += 1

        t0 = time.perf_counter()
        for i, s in enumerate(sectors):
            blk_aio_preadv(blk, s * 512, qemu_iovec_init_buf(buf), 0, cb, None)
            aio_wait_while(self.m.ctx, lambda: done[0] <= i)
        return len(sectors) / (time.perf_counter() - t0)

    def close(self) -> None:
        self.m.close()


def run_bench(args: argparse.Namespace) -> int:
    quick = bool(getattr(args, "quick", False))
    n = 256 if quick else 4096
    rounds = 1 if quick else 3
    rng = random.Random(1)
    sectors = [rng.randrange(NSECT // 8) * 8 for _ in range(n)]
    tmp = tempfile.mkdtemp(prefix="gqemu-bench-virtio-")
    ide_path, vio_path = os.path.join(tmp, "ide.img"), os.path.join(tmp, "virtio.img")
    try:
        progress("virtio: making two 16 MiB images")
        make_lba_image(ide_path, NSECT)
        make_lba_image(vio_path, NSECT)
        b = _Bench(ide_path, vio_path)
        try:
            qd1 = qd32 = ide = blk = 0.0
            for r in range(rounds):
                progress("virtio: round %d/%d" % (r + 1, rounds))
                qd1 = max(qd1, b.virtio_reads(sectors, 1))
                qd32 = max(qd32, b.virtio_reads(sectors, 32))
                ide = max(ide, b.ide_reads(sectors))
                blk = max(blk, b.block_alone(sectors))
        finally:
            b.close()
    finally:
        for p in (ide_path, vio_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(tmp)
        progress_done()
    anchor = "blk_aio_preadv 4 KiB alone (QD1)"
    rows = [
        ["virtio-blk 4 KiB random read, QD1", "%s IOPS" % fmt_num(qd1), anchor,
         "%s IOPS" % fmt_num(blk), "%.2fx" % (qd1 / blk), ""],
        ["virtio-blk 4 KiB random read, QD32", "%s IOPS" % fmt_num(qd32), anchor,
         "%s IOPS" % fmt_num(blk), "%.2fx" % (qd32 / blk), ""],
        ["IDE READ DMA 4 KiB random read, QD1", "%s IOPS" % fmt_num(ide), anchor,
         "%s IOPS" % fmt_num(blk), "%.2fx" % (ide / blk), ""],
    ]
    table("gqemu bench virtio (best of %d, %d reads)" % (rounds, n), RATIO_HEADER, rows)
    return 0
