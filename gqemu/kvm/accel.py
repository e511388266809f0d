"""The real accelerator: guest code on /dev/kvm behind the same exit page.

Where the vCPU runs.  A vCPU stays what it is under the simulated loop: a
gevent greenlet running ``qemu_kvm_cpu_thread_fn`` -> ``kvm_cpu_exec``, so
every exit is handled on the loop's thread with the seed's frames
(``kvm_cpu_exec`` -> ``kvm_handle_io`` -> ``address_space_rw`` ...).  Only
the blocking ``ioctl(KVM_RUN)`` leaves it: it runs on the vCPU's own OS
thread (a one-thread pool of ``gqemu.threadpool``), and while the guest
executes, the vCPU greenlet waits in ``aio_wait_while`` -- the main loop
runs bottom halves, thread-pool completions and coroutines in the meantime,
as QEMU's main loop runs while its vCPU thread is inside ``KVM_RUN`` without
the BQL.  So device progress never waits for the guest's next exit, and a
guest sleeping in HLT (handled in the kernel: the irqchip is in-kernel) is
woken by ``KVM_IRQ_LINE`` from the loop.

``kvm_run`` decoding: after ``KVM_RUN`` returns, the exit is copied from the
mmap'd ``struct kvm_run`` into the vCPU's ``KvmRun`` (exit reason, the
``io``/``mmio`` fields, the data at ``data_offset``) -- exactly what the
simulated guest fills in -- so dispatch, tracing, ``--record`` and the
backtrace capture need no change.  The data of an IN (or an MMIO read) is
copied back into the page before the next ``KVM_RUN``.

Kicks.  ``qemu_cpu_kick`` sets ``immediate_exit`` and sends SIGUSR1 to the
vCPU thread (a no-op handler makes ``KVM_RUN`` return ``EINTR``), so a
guest that spins without exits can still be stopped.  QEMU: cpus.c
qemu_cpu_kick, kvm-all.c kvm_ipi_signal / kvm_eat_signals.

Must not import: gqemu.hw or anything above kvm.
"""
from __future__ import annotations

import errno
import signal
import threading
from typing import TYPE_CHECKING, Any, Optional

from gqemu.aio import AioContext, aio_wait_while
from gqemu.kvm.exits import (KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR,
                             KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_MMIO,
                             KVM_EXIT_SHUTDOWN, KVM_RUN_DATA_SIZE, KvmRun)
from gqemu.threadpool import ThreadPool, thread_pool_submit_aio
from gqemu.threadpool.pool import thread_pool_free

if TYPE_CHECKING:
    from gqemu.kvm.kvm_dev import KvmVcpu

# kvm_dev (ctypes, mmap) is imported only by a machine built with accel=kvm:
# the simulated vCPU loop (every gqemu run without it) needs only the
# constants and helpers below.

KVM_EXIT_INTR = 10

SIG_IPI = signal.SIGUSR1


class GuestFault(Exception):
    """Real guest code stopped the vCPU: a triple fault, a failed entry or
    a KVM internal error (one line)."""


class VcpuRun:
    """Per-vCPU state of the real backend."""

    __slots__ = ("vcpu", "pool", "in_run", "ret", "pending_in", "stop")

    def __init__(self, vcpu: KvmVcpu, pool: ThreadPool) -> None:
        self.vcpu = vcpu
        self.pool = pool
        self.in_run = False
        self.ret = 0
        self.pending_in: Optional[tuple[int, int]] = None   # (page offset, length)
        self.stop = False


class KvmAccel:
    """The VM on /dev/kvm that a machine built with ``accel=kvm`` runs on."""

    def __init__(self, ctx: AioContext, ram_size: int) -> None:
        from gqemu.kvm.kvm_dev import KvmVM
        self.ctx = ctx
        self.vm = KvmVM(ram_size)
        self.ram = self.vm.ram
        self.runs: list[VcpuRun] = []
        self._old_handler: Any = None
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(SIG_IPI, _ipi_handler)

    def create_vcpu(self) -> VcpuRun:
        """A vCPU with its own OS thread for KVM_RUN."""
        if self.runs:
            from gqemu.kvm.kvm_dev import KvmError
            raise KvmError("--accel kvm runs one vCPU")
        r = VcpuRun(self.vm.create_vcpu(), ThreadPool(self.ctx, max_threads=1))
        self.runs.append(r)
        return r

    def enable_dirty_log(self) -> None:
        self.vm.enable_dirty_log()

    def get_dirty_pages(self) -> list[int]:
        return self.vm.get_dirty_pages()

    def irq_line(self, irq: int, level: int) -> None:
        self.vm.irq_line(irq, level)

    def close(self) -> None:
        for r in self.runs:
            qemu_cpu_kick(r)
        for r in self.runs:
            if r.in_run:
                aio_wait_while(self.ctx, lambda: r.in_run)
            thread_pool_free(r.pool)
        self.runs = []
        self.vm.close()
        if self._old_handler is not None:
            signal.signal(SIG_IPI, self._old_handler)
            self._old_handler = None


def _ipi_handler(signum: int, frame: Any) -> None:
    """SIG_IPI only needs to interrupt KVM_RUN; nothing to do here."""


def _kvm_run_thread(r: VcpuRun) -> int:
    """Worker side: the blocking KVM_RUN.  Context: the vCPU's OS thread."""
    r.vcpu.thread_id = threading.get_ident()
    if r.stop:
        return -errno.EINTR
    return r.vcpu.run()


def _kvm_run_done(r: VcpuRun, ret: int) -> None:
    r.ret = ret
    r.in_run = False


def qemu_cpu_kick(r: VcpuRun, stop: bool = True) -> None:
    """Make the vCPU leave KVM_RUN now; with ``stop``, never re-enter it
    (the run is ending), otherwise the vCPU loop decides (a VM stop parks it).
    Context: loop.  QEMU: qemu_cpu_kick (immediate_exit + SIG_IPI)."""
    if stop:
        r.stop = True
    r.vcpu.set_immediate_exit(1)
    tid = r.vcpu.thread_id
    if r.in_run and tid:
        try:
            signal.pthread_kill(tid, SIG_IPI)
        except (ProcessLookupError, OSError):
            pass


def kvm_vcpu_ioctl_kvm(r: VcpuRun, run: KvmRun, ctx: AioContext) -> int:
    """``KVM_RUN`` on /dev/kvm, then decode the exit into ``run``.

    The vCPU greenlet waits in the loop while the guest executes.
    Returns 0.  QEMU: kvm_vcpu_ioctl(KVM_RUN) + the exit decode of
    kvm_cpu_exec.
    """
    vcpu = r.vcpu
    page = vcpu.run_page
    if r.pending_in is not None:
        off, n = r.pending_in
        r.pending_in = None
        if off < 0:                      # MMIO read: the page's mmio.data
            vcpu.set_mmio_data(bytes(run.data[:n]))
        else:
            page[off:off + n] = bytes(run.data[:n])
    if r.stop:
        run.exit_reason = KVM_EXIT_INTR
        return 0
    r.in_run = True
    thread_pool_submit_aio(r.pool, _kvm_run_thread, r, _kvm_run_done, r)
    aio_wait_while(ctx, lambda: r.in_run)
    if r.ret == -errno.EINTR:
        vcpu.set_immediate_exit(1 if r.stop else 0)
        run.exit_reason = KVM_EXIT_INTR
        return 0
    reason = vcpu.exit_reason
    if reason == KVM_EXIT_IO:
        direction, size, port, count, off = vcpu.io()
        n = size * count
        if n > KVM_RUN_DATA_SIZE or off + n > len(page):
            raise GuestFault("KVM_EXIT_IO with %d bytes at offset %d" % (n, off))
        run.exit_reason = KVM_EXIT_IO
        run.io_direction, run.io_size, run.io_port, run.io_count = direction, size, port, count
        if direction == KVM_EXIT_IO_IN:
            r.pending_in = (off, n)
        else:
            run.data[:n] = page[off:off + n]
    elif reason == KVM_EXIT_MMIO:
        addr, data, length, is_write = vcpu.mmio()
        length = min(length, 8)
        run.exit_reason = KVM_EXIT_MMIO
        run.mmio_phys_addr, run.mmio_len, run.mmio_is_write = addr, length, is_write
        if is_write:
            run.data[:length] = data[:length]
        else:
            r.pending_in = (-1, length)
    elif reason == KVM_EXIT_HLT:
        run.exit_reason = KVM_EXIT_HLT
    else:
        run.exit_reason = KVM_EXIT_INTERNAL_ERROR
        run.internal_error = GuestFault(_describe(vcpu, reason))
    return 0


def _describe(vcpu: KvmVcpu, reason: int) -> str:
    from gqemu.kvm.kvm_dev import KvmError
    try:
        rip = vcpu.get_regs().rip
        cs = vcpu.get_sregs().cs.selector
        where = " at %04x:%04x" % (cs, rip & 0xFFFF) if rip < 0x10000 else " at rip 0x%x" % rip
    except KvmError:
        where = ""
    if reason == KVM_EXIT_SHUTDOWN:
        return "the guest shut down the vCPU (triple fault)%s" % where
    if reason == KVM_EXIT_FAIL_ENTRY:
        hw, _ = vcpu.fail_entry()
        return "KVM_EXIT_FAIL_ENTRY (hardware reason 0x%x)%s" % (hw, where)
    if reason == KVM_EXIT_INTERNAL_ERROR:
        sub, _ = vcpu.internal()
        return "KVM_EXIT_INTERNAL_ERROR (suberror %d)%s" % (sub, where)
    return "unhandled KVM exit reason %d%s" % (reason, where)
