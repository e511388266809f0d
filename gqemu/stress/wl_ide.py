"""IDE workload: several vCPUs running random ATA programs on the PIIX IDE
controller, through ``address_space_rw`` port by port, with the scheduler
choosing which vCPU makes the next access and when the main loop runs.

Drives: index 0 (primary master) and index 2 (secondary master) share one
raw image (``share-rw=on``: two channels writing one file concurrently;
on qcow2 they get separate images), index 3 (secondary slave) has its own.
A vCPU takes a guest-level lock on a channel for each command, as a guest
driver would.  Commands: READ/WRITE SECTORS (PIO) and READ/WRITE DMA, in
LBA28 and LBA48 forms, FLUSH CACHE (EXT), and DMA commands interrupted by
a channel reset (``ide_bus_reset``, the machine reset) or a software reset
(SRST in device control).

Invariants: ``ide_registers`` (after every command BSY and DRQ are clear,
DRDY set, no error, the LBA registers point past the last sector, the
sector count is 0; after a reset the registers hold the reset signature),
``ide_irq`` (reading the status register lowers the channel's IRQ; no IRQ
after a reset once the channel is drained), ``reset_stale_dma`` (a
cancelled DMA read does not write guest RAM after the reset), ``ide_hang``
(no command waits forever), ``shadow_read`` (every sector read, and the
final contents of each disk, agree with the shadow model; a reset write
may or may not have landed, but nothing lands on sectors it did not
target).  With ``--faults P`` the drives sit on blkdebug with EIO/ENOSPC
rules (rerror/werror=report): a failed command must end with DRDY|ERR and
ABRT in the error register, and its write may or may not have landed.
The exits of every vCPU are the reproducer's trace.
"""
from __future__ import annotations

import random
from typing import Any, Optional

from gqemu.aio import aio_poll, aio_wait_while
from gqemu.block import blk_bs, blk_new_open, blk_pread, blk_unref
from gqemu.hw.ide.reset import ide_bus_reset
from gqemu.hw.ide.piix import pc_ide_init
from gqemu.hw.irq import isa_pic_new
from gqemu.hw.memory import (address_space_rw, address_space_rw_string,
                             memory_region_add_subregion, memory_region_init_ram,
                             new_address_space_io, new_address_space_memory)
from gqemu.stress.ata_programs import SECTOR, AtaPrograms, Gen
from gqemu.stress.engine import Env, Options, Workload
from gqemu.stress.shadow import INITIAL, ZERO, ShadowDisk
from gqemu.stress.wl_block import (FAULT_ERRNOS, QCOW2_EVENTS, check_qcow2,
                                   make_image_sized)

SECTORS = 256
DRIVES = (0, 2, 3)              # IDE index: bus * 2 + unit
RAM = 1 << 20


def random_op(rng: random.Random) -> list[Any]:
    kind = rng.choice(("pio_r", "pio_w", "dma_r", "dma_w", "dma_r", "dma_w",
                       "flush", "reset", "srst"))
    drive = rng.choice(DRIVES)
    if kind == "flush":
        return [kind, drive, rng.randrange(2)]
    n = 1 + rng.randrange(8)
    lba = rng.randrange(SECTORS - n + 1)
    op = [kind, drive, lba, n, rng.randrange(2)]
    if kind in ("reset", "srst"):
        op += [rng.randrange(2), rng.randrange(4)]     # write?, steps before reset
    elif kind.startswith("dma"):
        op.append(rng.randrange(n + 1))                # PRD split point
    return op


class VCpu:
    __slots__ = ("idx", "gen", "value", "waiting", "done", "lock_wanted")

    def __init__(self, idx: int, gen: Gen) -> None:
        self.idx = idx
        self.gen = gen
        self.value: Any = None
        self.waiting = False
        self.done = False
        self.lock_wanted: Optional[int] = None


class IdeWorkload(AtaPrograms, Workload):
    name = "ide"
    points_per_request = 20

    @classmethod
    def generate(cls, seed: int, opts: Options) -> dict[str, Any]:
        rng = random.Random("gqemu-work:ide:%d" % seed)
        programs: list[list[Any]] = [[] for _ in range(max(1, opts.vcpus))]
        for _ in range(opts.requests):
            programs[rng.randrange(len(programs))].append(random_op(rng))
        events = QCOW2_EVENTS if opts.fmt == "qcow2" else ("read_aio", "write_aio")
        faults = []
        for _ in range(opts.requests):
            if rng.random() < opts.faults:
                faults.append([rng.randrange(3), {
                    "event": rng.choice(events), "errno": rng.choice(FAULT_ERRNOS),
                    "sector": rng.choice((-1, rng.randrange(SECTORS))), "once": "on",
                    "immediately": rng.choice(("on", "off"))}])
        return {"fmt": opts.fmt, "faults": faults, "programs": programs}

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        super().__init__(env, spec)
        self.fmt = spec.get("fmt", "raw")
        initial = ZERO if self.fmt == "qcow2" else INITIAL
        shared = self.fmt == "raw"
        pa = make_image_sized(self.fmt, SECTORS * SECTOR, SECTOR)
        pc = pa if shared else make_image_sized(self.fmt, SECTORS * SECTOR, SECTOR)
        pb = make_image_sized(self.fmt, SECTORS * SECTOR, SECTOR)
        self.paths = sorted({pa, pb, pc})
        o = {"format": self.fmt, "cache": "writeback", "rerror": "report",
             "werror": "report"}
        if shared:
            o["share-rw"] = "on"
        faults = spec.get("faults") or []
        self.faults = bool(faults)
        self.blks: list[Any] = []
        for k, path in enumerate((pa, pc, pb)):
            rules = [dict(r) for d, r in faults if d == k]
            if rules:
                self.blks.append(blk_new_open("blkdebug::" + path,
                                              dict(o, **{"file.inject-error": rules})))
            else:
                self.blks.append(blk_new_open(path, dict(o)))
        sa = ShadowDisk(SECTORS * SECTOR, SECTOR, initial)
        sc = sa if shared else ShadowDisk(SECTORS * SECTOR, SECTOR, initial)
        sb = ShadowDisk(SECTORS * SECTOR, SECTOR, initial)
        self.shadow = {0: sa, 2: sc, 3: sb}
        self.images = [(self.blks[0], sa), (self.blks[2], sb)] + (
            [] if shared else [(self.blks[1], sc)])
        self.as_io = new_address_space_io()
        self.as_mem = new_address_space_memory()
        ram = memory_region_init_ram(None, "pc.ram", RAM)
        memory_region_add_subregion(self.as_mem.root, 0, ram)
        assert ram.ram is not None
        self.ram: bytearray = ram.ram
        self.pic = isa_pic_new()
        drives = [self.blks[0], None, self.blks[1], self.blks[2]]
        self.buses = pc_ide_init(self.as_io, self.pic.irqs, drives,
                                 address_space_memory=self.as_mem, ctx=env.ctx)[:2]
        self.locks: list[Optional[int]] = [None, None]
        self.vcpus = [VCpu(i, self.guest(i, p)) for i, p in enumerate(spec["programs"])]

    # -- the driver: the scheduler picks the next vCPU access ---------------

    def run(self) -> None:
        sched, ctx = self.env.sched, self.env.ctx
        stalls = 0
        while True:
            live = [v for v in self.vcpus if not v.done]
            if not live:
                return
            runnable = [v for v in live if not v.waiting and
                        (v.lock_wanted is None or self.locks[v.lock_wanted] is None)]
            if not runnable or sched.flip(0.2):
                progress = aio_poll(ctx, not runnable)
                for v in live:
                    v.waiting = False
                if runnable or progress:
                    stalls = 0
                    continue
                # Nothing could run and the loop had nothing to do.  A
                # vCPU's own step may have polled (a drain), so let every
                # vCPU look once more before calling it a hang.
                stalls += 1
                self.env.check(stalls < 2, "ide_hang", "vCPUs wait for the device and "
                               "nothing is in flight; last accesses: %s",
                               [next((t for t in reversed(self.trace) if t[0] == v.idx),
                                     None) for v in live])
                continue
            v = runnable[sched.choose(runnable)]
            if self.step(v):
                stalls = 0

    def step(self, v: VCpu) -> bool:
        """Run one access of ``v``; returns False when it only waited."""
        if v.lock_wanted is not None:
            self.locks[v.lock_wanted] = v.idx
            v.lock_wanted = None
        try:
            req = v.gen.send(v.value)
        except StopIteration:
            v.done = True
            return True
        v.value = None
        kind = req[0]
        if kind == "in":
            buf = bytearray(req[2])
            address_space_rw(self.as_io, req[1], None, buf, req[2], False)
            v.value = int.from_bytes(buf, "little")
            self.trace.append([v.idx, "i", req[1], req[2], v.value])
        elif kind == "out":
            address_space_rw(self.as_io, req[1], None,
                             bytearray(req[3].to_bytes(req[2], "little")), req[2], True)
            self.trace.append([v.idx, "o", req[1], req[2], req[3]])
        elif kind == "ins":
            buf = bytearray(req[2])
            address_space_rw_string(self.as_io, req[1], None, buf, 2, req[2] // 2, False)
            v.value = bytes(buf)
            self.trace.append([v.idx, "ins", req[1], 2, req[2] // 2])
        elif kind == "outs":
            address_space_rw_string(self.as_io, req[1], None, bytearray(req[2]), 2,
                                    len(req[2]) // 2, True)
            self.trace.append([v.idx, "outs", req[1], 2, len(req[2]) // 2])
        elif kind == "wait":
            v.waiting = True
            return False
        elif kind == "pause":           # let the loop run a little
            aio_poll(self.env.ctx, False)
        elif kind == "lock":
            if self.locks[req[1]] is None:
                self.locks[req[1]] = v.idx
            else:
                v.lock_wanted = req[1]
        elif kind == "unlock":
            self.locks[req[1]] = None
        elif kind == "reset":
            self.trace.append([v.idx, "reset", req[1]])
            ide_bus_reset(self.buses[req[1]])
        elif kind == "drain":
            blks = [self.blks[0], self.blks[1]] if req[1] == 0 else self.blks[1:]
            aio_wait_while(self.env.ctx, lambda: any(b.in_flight for b in blks))
        return True

    # -- end of run ----------------------------------------------------------

    def done(self) -> bool:
        return all(v.done for v in self.vcpus)

    def start(self) -> None:
        pass

    def _debug_nodes(self) -> list[Any]:
        out = []
        for blk in self.blks:
            bs = blk_bs(blk)
            while bs is not None:
                if bs.drv is not None and bs.drv.format_name == "blkdebug":
                    out.append(bs.opaque)
                bs = bs.file.bs if bs.file is not None else None
        return out

    def _disarm(self) -> None:
        """Count the injected faults and stop injecting."""
        self.env.faults = 0
        for d in self._debug_nodes():
            self.env.faults += d.injected
            d.active_rules = []
            for lst in d.rules:
                del lst[:]

    def finish(self) -> None:
        self._disarm()
        for blk, sh in self.images:
            rid = sh.read_begin(0, SECTORS * SECTOR)
            err = sh.read_end(rid, blk_pread(blk, 0, SECTORS * SECTOR))
            self.env.check(err is None, "shadow_read", "final contents: %s", err)

    def close(self, failed: bool) -> None:
        import os
        if not failed:
            self._disarm()
            for blk in self.blks:
                blk_unref(blk)
            if self.fmt == "qcow2":
                for p in self.paths:
                    check_qcow2(p, self.env.faults, self.env.check)
        for p in self.paths:
            try:
                os.unlink(p)
            except OSError:
                pass


WORKLOAD = IdeWorkload
