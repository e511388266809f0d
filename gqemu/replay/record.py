"""Record a run's exits and guest-observable events into a trace.

The recorder hangs on the hooks the KVM layer offers (``KVMState.on_exit``,
``KVMState.on_irq``, ``GuestMemory.on_write/on_read``) and turns each event
into one flat record (see ``format.py``).  An IRQ change caused while an exit
is being handled (a status read lowering INTRQ, a command completing at
once) is written after that exit's record, so a replay sees cause before
effect.

Must not import: gqemu.cli.
QEMU: replay/replay-events.c (the recording side).
"""
from __future__ import annotations

from typing import Any, Callable

from gqemu.kvm.cpu import CPUState, KVMState
from gqemu.kvm.exits import (KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO,
                             KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KvmRun)
from gqemu.kvm.guest import GuestMemory
from gqemu.replay.format import (MAX_MEM, MAX_MESSAGE, REC_HLT, REC_INTERNAL_ERROR,
                                 REC_IO, REC_IOS, REC_IRQ, REC_MEMR, REC_MEMW,
                                 REC_MMIO, REC_SHUTDOWN, TraceWriter)


class Recorder:
    """Write every exit of ``s`` (and its IRQ changes and guest RAM
    accesses) to ``writer``.  ``detach()`` removes the hooks."""

    def __init__(self, writer: TraceWriter, s: KVMState,
                 memories: list[GuestMemory] | tuple = ()) -> None:
        self.writer = writer
        self.s = s
        self.deferred: list[list] = []
        self.memories = list(memories)
        self.exit_cb = self._make_exit_cb()
        s.on_exit = self.exit_cb
        s.on_irq = self.irq_cb
        for m in self.memories:
            m.on_write = self.mem_write_cb
            m.on_read = self.mem_read_cb

    def detach(self) -> None:
        if self.s.on_exit == self.exit_cb:
            self.s.on_exit = None
        if self.s.on_irq == self.irq_cb:
            self.s.on_irq = None
        for m in self.memories:
            m.on_write = m.on_read = None

    def _make_exit_cb(self) -> Callable[[CPUState, KvmRun], None]:
        """The on_exit hook: single register accesses (most exits) take a
        closure fast path with TraceWriter.write inlined."""
        w = self.writer
        pack = w._pack
        flush_every = w.flush_every
        deferred = self.deferred
        slow = self._exit_cb

        def exit_cb(cpu: CPUState, run: KvmRun) -> None:
            if run.exit_reason == KVM_EXIT_IO and run.io_count == 1 and not deferred:
                size = run.io_size
                d = run.data
                pack([REC_IO, cpu.cpu_index, run.io_direction, size, run.io_port,
                      d[0] if size == 1 else int.from_bytes(d[:size], "little")])
                w.count += 1
                n = w._pending = w._pending + 1
                if n >= flush_every:
                    w.flush()
            else:
                slow(cpu, run)
        return exit_cb

    def _exit_cb(self, cpu: CPUState, run: KvmRun) -> None:
        reason = run.exit_reason
        w = self.writer
        if reason == KVM_EXIT_IO:
            size = run.io_size
            count = run.io_count
            if count == 1:
                d = run.data
                w.write([REC_IO, cpu.cpu_index, run.io_direction, size, run.io_port,
                         d[0] if size == 1 else int.from_bytes(d[:size], "little")])
            else:
                w.write([REC_IOS, cpu.cpu_index, run.io_direction, size, run.io_port,
                         count, bytes(run.data[:size * count])])
        elif reason == KVM_EXIT_MMIO:
            n = run.mmio_len
            w.write([REC_MMIO, cpu.cpu_index, run.mmio_is_write, run.mmio_phys_addr, n,
                     int.from_bytes(run.data[:n], "little")])
        elif reason == KVM_EXIT_HLT:
            w.write([REC_HLT, cpu.cpu_index])
            w.flush()               # the guest goes idle: put the trace on disk
        elif reason == KVM_EXIT_SHUTDOWN:
            w.write([REC_SHUTDOWN, cpu.cpu_index])
        elif reason == KVM_EXIT_INTERNAL_ERROR:
            e = run.internal_error
            msg = "%s: %s" % (type(e).__name__, e)
            w.write([REC_INTERNAL_ERROR, cpu.cpu_index, msg[:MAX_MESSAGE]])
        if self.deferred:
            for rec in self.deferred:
                w.write(rec)
            self.deferred.clear()

    def irq_cb(self, line: int, level: int) -> None:
        rec = [REC_IRQ, line, level]
        if self.s.in_exit:
            self.deferred.append(rec)
        else:
            self.writer.write(rec)

    def _mem(self, kind: int, cpu_index: int, addr: int, data: bytes) -> None:
        for off in range(0, len(data), MAX_MEM):
            self.writer.write([kind, cpu_index, addr + off, data[off:off + MAX_MEM]])

    def mem_write_cb(self, cpu_index: int, addr: int, data: bytes) -> None:
        self._mem(REC_MEMW, cpu_index, addr, data)

    def mem_read_cb(self, cpu_index: int, addr: int, data: bytes) -> None:
        self._mem(REC_MEMR, cpu_index, addr, data)


def describe_record(rec: Any) -> str:
    """One line for a record, as replay reports print it."""
    k = rec[0]
    if k == REC_IO:
        d = "in " if rec[2] == 0 else "out"
        return "cpu%d %s port 0x%04x size %d %s 0x%0*x" % (
            rec[1], d, rec[4], rec[3], "->" if rec[2] == 0 else "<-", 2 * rec[3], rec[5])
    if k == REC_IOS:
        d = "ins " if rec[2] == 0 else "outs"
        head = rec[6][:8].hex()
        return "cpu%d %s port 0x%04x size %d count %d data %s%s" % (
            rec[1], d, rec[4], rec[3], rec[5], head, "..." if len(rec[6]) > 8 else "")
    if k == REC_MMIO:
        return "cpu%d mmio %s 0x%x size %d value 0x%x" % (
            rec[1], "write" if rec[2] else "read", rec[3], rec[4], rec[5])
    if k == REC_HLT:
        return "cpu%d hlt" % rec[1]
    if k == REC_SHUTDOWN:
        return "cpu%d shutdown (guest program ended)" % rec[1]
    if k == REC_INTERNAL_ERROR:
        return "cpu%d internal error: %s" % (rec[1], rec[2])
    if k == REC_IRQ:
        return "irq %d %s" % (rec[1], "raise" if rec[2] else "lower")
    if k in (REC_MEMW, REC_MEMR):
        return "cpu%d ram %s 0x%x len %d" % (
            rec[1], "store" if k == REC_MEMW else "load", rec[2], len(rec[3]))
    return repr(rec)[:80]


PAGE = 4096
_ZERO_PAGE = bytes(PAGE)


class GuestRamSync:
    """Guest RAM for a trace recorded under ``--accel kvm``.

    Real guest code writes RAM without exiting (PRD tables, DMA buffers).
    So that a replay under the simulated loop gives the devices the same
    memory, RAM changes go into the trace as mem-write records just before
    the exit that follows them: each time KVM_RUN returns, the pages KVM's
    dirty log names (and those the firmware wrote for INT 13h) are compared
    with a shadow copy and the changed bytes of each are written.  The
    first sync also writes everything set up before the run (the boot
    program, the IVT).  QEMU's migration uses the same dirty log."""

    def __init__(self, recorder: Recorder, s: KVMState, accel: Any, ram: Any,
                 bios: Any = None) -> None:
        self.recorder = recorder
        self.accel = accel
        self.ram = ram
        self.shadow = bytearray(len(ram))
        self.noted: set[int] = set()
        self.first = True
        accel.enable_dirty_log()
        s.on_run_return = self.sync
        if bios is not None:
            bios.on_ram_write = self.note

    def note(self, addr: int, n: int) -> None:
        """RAM written behind KVM's back (the firmware's INT 13h data)."""
        self.noted.update(range(addr // PAGE, (addr + n + PAGE - 1) // PAGE))

    def sync(self, cpu: CPUState) -> None:
        pages = set(self.accel.get_dirty_pages()) | self.noted
        self.noted.clear()
        ram, shadow = self.ram, self.shadow
        if self.first:
            self.first = False
            pages.update(p for p in range(len(ram) // PAGE)
                         if ram[p * PAGE:(p + 1) * PAGE] != _ZERO_PAGE)
        for p in sorted(pages):
            a = p * PAGE
            new = ram[a:a + PAGE]
            old = shadow[a:a + PAGE]
            if new == old:
                continue
            lo = 0
            while new[lo:lo + 64] == old[lo:lo + 64]:
                lo += 64
            hi = PAGE
            while new[hi - 64:hi] == old[hi - 64:hi]:
                hi -= 64
            shadow[a + lo:a + hi] = new[lo:hi]
            self.recorder._mem(REC_MEMW, cpu.cpu_index, a + lo, bytes(new[lo:hi]))
