"""Replay a trace against a machine and compare every guest-visible result.

The replayer is the guest: it performs each recorded access through the
same ``kvm_handle_io`` a vCPU uses, in record order, from the main greenlet.
It drives the main loop itself, and only when a recorded result needs the
device to have made progress (ARCHITECTURE §6); thread-pool requests are
held until then (``hold.py``), so host speed never shows:

- an access is performed without running the loop first, so a status poll
  that recorded "busy" is answered while the I/O is still in flight;
- when a read returns something else than recorded, the loop is run one
  blocking step (``aio_poll(ctx, True)``, which returns False when nothing
  is pending) and the read is repeated, until it matches or nothing is left
  pending -- a recorded "ready" therefore waits for the completion;
- a recorded IRQ change must match the model's next IRQ change, running
  the loop until there is one;
- a recorded guest RAM load (DMA results) is compared the same way.

A divergence is a result that still differs when nothing is pending.  The
replay stops at the first one and reports it with the records before it.
Reads repeated while waiting are side-effect free in QEMU's IDE (status,
alternate status, and the data port while DRQ is clear); a port whose read
clears what it returned (``read_clears``: virtio's ISR) is read again only
while it returned 0.

Must not import: gqemu.cli.
QEMU: replay/replay.c (replay_run), in the spirit of its checks.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from gqemu.aio import aio_poll
from gqemu.hw.memory import MEMTXATTRS_UNSPECIFIED
from gqemu.kvm.cpu import KVMState, kvm_handle_io, kvm_handle_mmio
from gqemu.replay.format import (REC_IO, REC_IOS, REC_IRQ, REC_MEMR, REC_MEMW, REC_MMIO,
                                 TraceError, TraceReader)
from gqemu.replay.hold import ReplayScheduler, fd_mapper
from gqemu.replay.record import describe_record

CONTEXT_RECORDS = 5
MAX_IRQ_BACKLOG = 4096


@dataclass
class Divergence:
    """The first result that differed."""
    index: int
    record: list
    expected: str
    actual: str
    before: list = field(default_factory=list)    # [(index, record), ...]

    def report(self) -> str:
        lines = ["divergence at record %d: %s" % (self.index, describe_record(self.record)),
                 "  expected %s" % self.expected,
                 "  actual   %s" % self.actual]
        if self.before:
            lines.append("  records before:")
            for i, r in self.before:
                lines.append("    %8d  %s" % (i, describe_record(r)))
        return "\n".join(lines)


@dataclass
class ReplayResult:
    records: int = 0
    divergence: Optional[Divergence] = None
    waits: int = 0              # loop steps forced by recorded results


class Replayer:
    """Replay ``reader``'s records on the machine behind ``s`` (its I/O and
    memory spaces, IRQ hook and main AioContext); ``ram`` is guest RAM.

    ``progress(n)`` is called every ``progress_every`` records.
    """

    def __init__(self, s: KVMState, ram: Optional[bytearray],
                 progress: Optional[Callable[[int], None]] = None,
                 progress_every: int = 65536,
                 port_drives: Optional[dict[int, tuple[int, ...]]] = None,
                 irq_drives: Optional[dict[int, tuple[int, ...]]] = None,
                 drive_files: Optional[dict[int, str]] = None,
                 read_clears: Optional[Callable[[int], bool]] = None) -> None:
        self.s = s
        self.ram = ram
        self.progress = progress
        self.progress_every = progress_every
        self.irqs: deque[tuple[int, int]] = deque()
        self.check_irqs = False
        self.port_drives = port_drives or {}
        self.irq_drives = irq_drives or {}
        # ports whose read consumes what it returned (virtio's ISR): such a
        # read is repeated only while it returned 0 (no effect)
        self.read_clears = read_clears
        self.sched = ReplayScheduler(fd_mapper(drive_files) if drive_files else None)
        self.last_result: Optional[ReplayResult] = None   # also set when the reader raised

    def _model_irq(self, line: int, level: int) -> None:
        self.irqs.append((line, level))

    def _step(self, prefer: Optional[tuple[int, ...]] = None) -> bool:
        """Make one step of progress: dispatch what is ready, else release
        one held request (of a drive in ``prefer`` if possible) and deliver
        its completion, else wait for timers.  False when nothing is pending."""
        ctx = self.s.ctx
        if aio_poll(ctx, False):
            return True
        if self.sched.release(prefer):
            aio_poll(ctx, True)
            return True
        return aio_poll(ctx, True)

    def run(self, reader: TraceReader) -> ReplayResult:
        s = self.s
        as_io = s.as_io
        res = ReplayResult()
        self.last_result = res
        self.check_irqs = bool(reader.meta.get("irq", False))
        s.on_irq = self._model_irq if self.check_irqs else None
        ctx = s.ctx
        old_sched, ctx.sched = ctx.sched, self.sched
        hist: deque = deque(maxlen=CONTEXT_RECORDS)
        buf = bytearray(65536 * 4)
        attrs = MEMTXATTRS_UNSPECIFIED
        progress = self.progress
        every = self.progress_every
        # one handler per record kind; single register accesses, most of a
        # trace, stay inline: replay speed is a benchmark
        handlers: dict[int, Callable[..., Optional[Divergence]]] = {
            REC_IOS: self._ios, REC_IRQ: self._irq, REC_MEMW: self._memw,
            REC_MEMR: self._memr, REC_MMIO: self._mmio}
        i = -1
        try:
            for i, rec in enumerate(reader):
                kind = rec[0]
                d = None
                if kind == REC_IO:
                    size = rec[3]
                    if rec[2]:                      # OUT
                        v = rec[5]
                        if size == 1:
                            buf[0] = v
                        else:
                            buf[:size] = v.to_bytes(size, "little")
                        kvm_handle_io(rec[4], attrs, buf, 1, size, 1, as_io)
                    else:
                        kvm_handle_io(rec[4], attrs, buf, 0, size, 1, as_io)
                        v = buf[0] if size == 1 else int.from_bytes(buf[:size], "little")
                        if v != rec[5]:
                            d = self._io_wait(i, rec, buf, res, hist, v)
                else:
                    h = handlers.get(kind)      # HLT, SHUTDOWN, INTERNAL_ERROR: nothing
                    if h is not None:
                        d = h(i, rec, buf, res, hist)
                if d is not None:
                    res.divergence = d
                    return res
                hist.append(rec)
                if progress is not None and not i % every:
                    progress(i)
                if len(self.irqs) > MAX_IRQ_BACKLOG:
                    res.divergence = self._irq_backlog(i, rec, hist)
                    return res
            res.records = i + 1
            self._settle()
            return res
        finally:
            if res.records == 0:
                res.records = max(i, 0)
            s.on_irq = None
            # let whatever is still held run, then hand the loop back
            while self.sched.release():
                aio_poll(ctx, False)
            ctx.sched = old_sched

    def _settle(self) -> None:
        """The trace has ended: let the last requests complete (writes
        reach the disk)."""
        while self._step():
            pass

    def _io_wait(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
                 hist: deque, first: int) -> Optional[Divergence]:
        """An IN read something else than the trace: let the devices make
        progress and read again until it matches, or nothing can change."""
        size, port = rec[3], rec[4]
        prefer = self.port_drives.get(port)
        clears = self.read_clears is not None and self.read_clears(port)
        v = first
        while not (clears and v):
            if not self._step(prefer):
                break
            res.waits += 1
            kvm_handle_io(port, MEMTXATTRS_UNSPECIFIED, buf, 0, size, 1, self.s.as_io)
            v = buf[0] if size == 1 else int.from_bytes(buf[:size], "little")
            if v == rec[5]:
                return None
        return Divergence(i, rec, "0x%0*x" % (2 * size, rec[5]), "0x%0*x" % (2 * size, v),
                          _before(i, hist))

    def _irq_backlog(self, i: int, rec: list, hist: deque) -> Divergence:
        """The model raised more IRQ changes than the trace records."""
        line, level = self.irqs[0]
        return Divergence(i, rec, "no more IRQ changes than the trace records",
                          "the model changed IRQ %d to %d and %d more the trace does not have"
                          % (line, level, len(self.irqs) - 1), _before(i, hist))

    def _ram_range(self, i: int, what: str, addr: int, n: int) -> bytearray:
        """The guest RAM, once ``addr .. addr + n`` is checked to lie in it
        (format.py has already refused negative addresses).
        Raises TraceError."""
        ram = self.ram
        if ram is None or addr + n > len(ram):
            raise TraceError("guest RAM %s at 0x%x outside the %d bytes of RAM"
                             % (what, addr, len(ram or b"")), i)
        return ram

    def _memw(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
              hist: deque) -> Optional[Divergence]:
        addr, data = rec[2], rec[3]
        ram = self._ram_range(i, "store", addr, len(data))
        ram[addr:addr + len(data)] = data
        return None

    # -- the rarer record kinds ------------------------------------------------

    def _ios(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
             hist: deque) -> Optional[Divergence]:
        _k, _cpu, direction, size, port, count, data = rec
        n = size * count
        as_io = self.s.as_io
        if direction:
            buf[:n] = data
            kvm_handle_io(port, MEMTXATTRS_UNSPECIFIED, buf, 1, size, count, as_io)
            return None
        kvm_handle_io(port, MEMTXATTRS_UNSPECIFIED, buf, 0, size, count, as_io)
        got = bytes(buf[:n])
        # Repeat only while the reads had no effect: in QEMU's IDE a data
        # read with DRQ clear returns zeros and changes nothing.  Once real
        # data came out, repeating would consume more of it.
        while got != data and not any(buf[:n]):
            if not self._step(self.port_drives.get(port)):
                break
            res.waits += 1
            kvm_handle_io(port, MEMTXATTRS_UNSPECIFIED, buf, 0, size, count, as_io)
            if buf[:n] == data:
                return None
            if any(buf[:n]):
                got = bytes(buf[:n])
        if got == data:
            return None
        j = next(j for j in range(0, n, size) if got[j:j + size] != data[j:j + size])
        return Divergence(
            i, rec, "element %d = 0x%s" % (j // size, data[j:j + size][::-1].hex()),
            "element %d = 0x%s" % (j // size, got[j:j + size][::-1].hex()), _before(i, hist))

    def _irq(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
             hist: deque) -> Optional[Divergence]:
        if not self.check_irqs:
            return None
        want = (rec[1], rec[2])
        while not self.irqs:
            if not self._step(self.irq_drives.get(want[0])):
                return Divergence(i, rec, _irq_change(want), "no IRQ change", _before(i, hist))
            res.waits += 1
        got = self.irqs.popleft()
        if got != want:
            return Divergence(i, rec, _irq_change(want), _irq_change(got), _before(i, hist))
        return None

    def _memr(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
              hist: deque) -> Optional[Divergence]:
        addr, data = rec[2], rec[3]
        ram = self._ram_range(i, "load", addr, len(data))
        while ram[addr:addr + len(data)] != data:
            if not self._step():
                got = bytes(ram[addr:addr + len(data)])
                j = next(j for j in range(len(data)) if got[j] != data[j])
                return Divergence(i, rec, "byte 0x%x = 0x%02x" % (addr + j, data[j]),
                                  "byte 0x%x = 0x%02x" % (addr + j, got[j]), _before(i, hist))
            res.waits += 1
        return None

    def _mmio(self, i: int, rec: list, buf: bytearray, res: ReplayResult,
              hist: deque) -> Optional[Divergence]:
        _k, _cpu, is_write, addr, size, value = rec
        as_mem = self.s.as_mem
        if is_write:
            buf[:size] = value.to_bytes(size, "little")
            kvm_handle_mmio(addr, MEMTXATTRS_UNSPECIFIED, buf, size, 1, as_mem)
            return None
        while True:
            kvm_handle_mmio(addr, MEMTXATTRS_UNSPECIFIED, buf, size, 0, as_mem)
            v = int.from_bytes(buf[:size], "little")
            if v == value:
                return None
            if not self._step(self.port_drives.get(addr)):
                return Divergence(i, rec, "0x%x" % value, "0x%x" % v, _before(i, hist))
            res.waits += 1


def _irq_change(change: tuple[int, int]) -> str:
    return "IRQ %d %s" % (change[0], "raise" if change[1] else "lower")


def _before(i: int, hist: deque) -> list:
    """The records before record ``i`` as (index, record) pairs."""
    n = len(hist)
    return [(i - n + k, r) for k, r in enumerate(hist)]
