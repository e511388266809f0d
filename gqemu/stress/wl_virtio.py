"""virtio-blk workload: a guest driver keeping several requests in flight on
a legacy virtio-blk-pci device, with the scheduler choosing when the driver
kicks the next batch and when the main loop (and so the thread pool's
completions) runs.

The program is a list of batches; a batch (1..6 requests: READ, WRITE,
FLUSH, WRITE_ZEROES of 1..8 sectors, or an out-of-range READ) is made
available and notified at once, so ``virtio_blk_submit_multireq`` sorts and
merges what is adjacent and requests complete in whatever order the block
layer finishes them.  At most 32 requests (chains of three descriptors) are
in flight.

Invariants: ``virtio_used`` (every used element names a chain in flight,
once, with the length of its device-writable buffers, and its status byte
is OK -- IOERR for the out-of-range read); ``virtio_irq`` (whenever new
used elements are visible the INTx line, IRQ 10, is raised and the ISR
says so; reading the ISR lowers it); ``virtio_hang`` (a request in flight
always completes); ``shadow_read`` (every read, and the final disk, agree
with the shadow model, whatever the completion order).  The device is
never broken (the driver is correct).  The reproducer trace lists the
batches as they were kicked and the used elements as they were seen.
"""
from __future__ import annotations

import random
import struct
from typing import Any, Optional

from gqemu.aio import aio_poll
from gqemu.block import blk_new_open, blk_pread, blk_unref
from gqemu.hw.irq import isa_pic_new
from gqemu.hw.memory import (cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw,
                             memory_region_add_subregion, memory_region_init_ram,
                             new_address_space_io, new_address_space_memory)
from gqemu.hw.pc_pci import pci_bios_setup
from gqemu.hw.pci import pci_bus_new
from gqemu.hw.virtio.virtio_pci import virtio_blk_pci_new
from gqemu.stress.engine import Env, Options, Workload
from gqemu.stress.shadow import INITIAL, ZERO, ShadowDisk
from gqemu.stress.wl_block import check_qcow2, make_image_sized

SECTOR = 512
SECTORS = 256
SLOTS = 32
RAM = 1 << 20
RING, HDR, DATA = 0x10000, 0x13000, 0x20000       # DATA + 4 KiB per slot
IRQ = 10                                           # slot 2 INTA -> PIRQB -> 10


def random_batch(rng: random.Random) -> list[list[int]]:
    out = []
    for _ in range(1 + rng.randrange(6)):
        kind = rng.choice(("r", "r", "w", "w", "w", "f", "z", "bad"))
        n = 1 + rng.randrange(8)
        out.append([("r", "w", "f", "z", "bad").index(kind), rng.randrange(SECTORS - n + 1), n])
    return out


class VirtioWorkload(Workload):
    name = "virtio"
    points_per_request = 6

    @classmethod
    def generate(cls, seed: int, opts: Options) -> dict[str, Any]:
        rng = random.Random("gqemu-work:virtio:%d" % seed)
        batches = []
        left = opts.requests
        while left > 0:
            b = random_batch(rng)[:left]
            batches.append(b)
            left -= len(b)
        return {"fmt": opts.fmt, "programs": [batches]}

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        super().__init__(env, spec)
        self.fmt = spec.get("fmt", "raw")
        self.path = make_image_sized(self.fmt, SECTORS * SECTOR, SECTOR)
        self.blk = blk_new_open(self.path, {"format": self.fmt, "cache": "writeback",
                                            "rerror": "report", "werror": "report"})
        self.shadow = ShadowDisk(SECTORS * SECTOR, SECTOR,
                                 ZERO if self.fmt == "qcow2" else INITIAL)
        self.as_io = new_address_space_io()
        self.as_mem = new_address_space_memory()
        ram = memory_region_init_ram(None, "pc.ram", RAM)
        memory_region_add_subregion(self.as_mem.root, 0, ram)
        assert ram.ram is not None
        self.ram: bytearray = ram.ram
        self.pic = isa_pic_new()
        bus = pci_bus_new(self.as_io, self.as_mem, self.pic.irqs)
        from gqemu.hw.pc_pci import pc_pci_chipset
        pc_pci_chipset(bus)
        self.proxy = virtio_blk_pci_new(bus, 0x10, self.blk, env.ctx)
        pci_bios_setup(bus)
        cpu_outl(self.as_io, 0xCF8, 0x80001010)
        self.io = cpu_inl(self.as_io, 0xCFC) & 0xFFFC
        for v in (0, 1, 3):
            cpu_outb(self.as_io, self.io + 0x12, v)
        cpu_outl(self.as_io, self.io + 4, 0)
        cpu_outw(self.as_io, self.io + 0x0E, 0)
        self.num = cpu_inw(self.as_io, self.io + 0x0C)
        self.avail = RING + 16 * self.num
        self.used = (self.avail + 4 + 2 * self.num + 4095) & ~4095
        cpu_outl(self.as_io, self.io + 8, RING >> 12)
        cpu_outb(self.as_io, self.io + 0x12, 7)
        self.batches: list[list[list[int]]] = [list(b) for b in spec["programs"][0]] \
            if spec["programs"] else []
        self.free = list(range(SLOTS))
        self.inflight: dict[int, tuple] = {}      # head -> (kind, sector, n, shadow id, in_len)
        self.avail_idx = 0
        self.used_seen = 0

    # -- the driver --------------------------------------------------------

    def _kick(self, batch: list[list[int]]) -> None:
        ram = self.ram
        for kind, sector, n in batch:
            k = self.free.pop(0)
            hdr, buf, head = HDR + 32 * k, DATA + 4096 * k, 3 * k
            rtype = (0, 1, 4, 13, 0)[kind]
            if kind == 4:
                sector = SECTORS            # past the end: IOERR
            ram[hdr:hdr + 17] = struct.pack("<IIQB", rtype, 0, sector if kind != 3 else 0, 0xEE)
            d = RING + 16 * head
            nbytes = n * SECTOR
            sid: Optional[int] = None
            in_len = 1
            if kind in (0, 4):
                ram[d:d + 48] = (struct.pack("<QIHH", hdr, 16, 1, head + 1)
                                 + struct.pack("<QIHH", buf, nbytes, 3, head + 2)
                                 + struct.pack("<QIHH", hdr + 16, 1, 2, 0))
                in_len += nbytes
                if kind == 0:
                    sid = self.shadow.read_begin(sector * SECTOR, nbytes)
            elif kind in (1, 3):
                if kind == 1:
                    sid, data = self.shadow.write_begin(sector * SECTOR, nbytes)
                    ram[buf:buf + nbytes] = data
                else:
                    sid, _ = self.shadow.write_begin(sector * SECTOR, nbytes, "zero")
                    ram[buf:buf + 16] = struct.pack("<QII", sector, n, 0)
                    nbytes = 16
                ram[d:d + 48] = (struct.pack("<QIHH", hdr, 16, 1, head + 1)
                                 + struct.pack("<QIHH", buf, nbytes, 1, head + 2)
                                 + struct.pack("<QIHH", hdr + 16, 1, 2, 0))
            else:
                ram[d:d + 32] = (struct.pack("<QIHH", hdr, 16, 1, head + 1)
                                 + struct.pack("<QIHH", hdr + 16, 1, 2, 0))
            slot = self.avail + 4 + 2 * (self.avail_idx % self.num)
            ram[slot:slot + 2] = struct.pack("<H", head)
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
            self.inflight[head] = (kind, sector, n, sid, in_len)
            self.env.requests += 1
        ram[self.avail + 2:self.avail + 4] = struct.pack("<H", self.avail_idx)
        self.trace.append(["kick", batch])
        cpu_outw(self.as_io, self.io + 0x10, 0)
        self._reap()

    def _reap(self) -> None:
        """Consume the used elements now visible."""
        ram, check = self.ram, self.env.check
        used_idx = ram[self.used + 2] | ram[self.used + 3] << 8
        if used_idx == self.used_seen:
            return
        check(self.pic.levels[IRQ] == 1, "virtio_irq", "used index moved to %d but IRQ %d "
              "is low", used_idx, IRQ)
        isr = cpu_inb(self.as_io, self.io + 0x13)
        check(isr == 1 and self.pic.levels[IRQ] == 0, "virtio_irq",
              "ISR read gave %d, IRQ level after it %d", isr, self.pic.levels[IRQ])
        while self.used_seen != used_idx:
            at = self.used + 4 + 8 * (self.used_seen % self.num)
            head, length = struct.unpack("<II", ram[at:at + 8])
            self.used_seen = (self.used_seen + 1) & 0xFFFF
            self.trace.append(["used", head, length])
            req = self.inflight.pop(head, None)
            check(req is not None, "virtio_used", "used element names head %d, not in "
                  "flight", head)
            if req is None:
                continue
            kind, sector, n, sid, in_len = req
            k = head // 3
            status = ram[HDR + 32 * k + 16]
            check(length == in_len, "virtio_used", "head %d: used len %d, expected %d",
                  head, length, in_len)
            want = 1 if kind == 4 else 0
            check(status == want, "virtio_used", "head %d (kind %d): status %d", head,
                  kind, status)
            if kind == 0 and sid is not None:
                buf = DATA + 4096 * k
                err = self.shadow.read_end(sid, bytes(ram[buf:buf + n * SECTOR]))
                check(err is None, "shadow_read", "read of %d+%d: %s", sector, n, err)
            elif kind in (1, 3) and sid is not None:
                self.shadow.write_end(sid, 0 if status == 0 else -5,
                                      "write" if kind == 1 else "zero")
            self.free.append(k)

    def run(self) -> None:
        sched, ctx = self.env.sched, self.env.ctx
        stalls = 0
        while self.batches or self.inflight:
            can_kick = bool(self.batches) and len(self.free) >= len(self.batches[0])
            if not can_kick or sched.flip(0.5):
                progress = aio_poll(ctx, not can_kick)
                self._reap()
                if progress or can_kick:
                    stalls = 0
                    continue
                stalls += 1
                self.env.check(stalls < 2, "virtio_hang", "%d requests in flight and "
                               "nothing can complete them", len(self.inflight))
                continue
            stalls = 0
            self._kick(self.batches.pop(0))
        self.env.check(not self.proxy.vdev.broken, "virtio_used", "the device broke: %s",
                       self.proxy.vdev.error_log)

    def done(self) -> bool:
        return not self.batches and not self.inflight

    def start(self) -> None:
        pass

    def finish(self) -> None:
        sh = self.shadow
        rid = sh.read_begin(0, SECTORS * SECTOR)
        err = sh.read_end(rid, blk_pread(self.blk, 0, SECTORS * SECTOR))
        self.env.check(err is None, "shadow_read", "final contents: %s", err)

    def close(self, failed: bool) -> None:
        import os
        if not failed:
            blk_unref(self.blk)
            if self.fmt == "qcow2":
                check_qcow2(self.path, self.env.faults, self.env.check)
        try:
            os.unlink(self.path)
        except OSError:
            pass


WORKLOAD = VirtioWorkload
