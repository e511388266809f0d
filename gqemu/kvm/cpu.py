"""The simulated KVM: vCPUs, ``KVM_RUN``, exit handling and the main loop.

A vCPU is a gevent greenlet running :func:`qemu_kvm_cpu_thread_fn`.  Its
guest program runs in a raw greenlet of its own whose parent is the vCPU:
``KVM_RUN`` (:func:`kvm_vcpu_ioctl`) switches into the guest, and the guest
switches back at its next exit, having described it in the shared
``KvmRun``.  :func:`kvm_cpu_exec` then handles the exit as QEMU does
(``kvm_handle_io`` loops ``count`` times over ``address_space_rw``) and
enters the guest again.  A guest that returns exits with
KVM_EXIT_SHUTDOWN, one that raises with KVM_EXIT_INTERNAL_ERROR.

QEMU's vCPU thread drops the big lock while in ``KVM_RUN`` so the main
loop's bottom halves run while the guest computes.  Here the vCPU polls the
main AioContext (non-blocking) before every ``KVM_RUN``; completions that a
worker thread queued are dispatched there, so device I/O completes while a
guest polls a status register.  While every vCPU sleeps in HLT the main
greenlet (``kvm_main_loop``, main_loop.py) does the blocking polls, and an
IRQ raised through :func:`kvm_set_irq` wakes the halted vCPUs.

Before ``KVM_RUN`` a vCPU also checks the VM's state: while a stop is
requested or the VM is stopped (runstate.py) it parks
(:func:`qemu_kvm_wait_resume`); after a guest's ``sys.exit`` it ends
(``kvm_shutdown_request``); past a ``--timeout`` it ends with EXCP_WATCHDOG
(watchdog.py).

Must not import: gqemu.machine, gqemu.replay, gqemu.cli (higher layers).
QEMU: accel/kvm/kvm-all.c (kvm_cpu_exec, kvm_handle_io), cpus.c
(qemu_kvm_cpu_thread_fn), target/i386/kvm.c (kvm_handle_halt).
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Optional

import gevent
from gevent.hub import Waiter
from greenlet import getcurrent, greenlet

from gqemu.aio import AioContext, aio_notify, aio_poll
from gqemu.hw.memory import (MEMTXATTRS_UNSPECIFIED, AddressSpace,
                             address_space_rw, address_space_rw_string)
from gqemu.kvm.accel import KVM_EXIT_INTR, kvm_vcpu_ioctl_kvm, qemu_cpu_kick
from gqemu.kvm.exits import (KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO,
                             KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN,
                             KVM_RUN, KvmRun)
from gqemu.kvm.trace_events import (trace_kvm_halt, trace_kvm_halt_wakeup,
                                    trace_kvm_run_exit, trace_kvm_set_irq,
                                    trace_kvm_vcpu_ioctl)
from gqemu.trace import trace_register_track_name

EXCP_INTERRUPT = 0x10000
EXCP_HLT = 0x10001
EXCP_HALTED = 0x10003
EXCP_SHUTDOWN = 0x10010      # gqemu: the guest program ended
EXCP_INTERNAL = 0x10011      # gqemu: the guest program raised
EXCP_WATCHDOG = 0x10012      # gqemu: the exit budget ran out

NR_IRQS = 24


class GuestWatchdog(Exception):
    """The run exceeded a limit: its exit budget or its wall-clock time."""


class GuestTimeout(BaseException):
    """Raised inside a guest program that is still computing when the
    run's wall-clock limit expires (a BaseException, so that a guest's
    ``except Exception`` does not swallow it)."""


class KVMState:
    """The VM: its address spaces, vCPUs, IRQ lines and hooks.

    ``on_exit(cpu, run)`` is called after each handled exit and
    ``on_irq(line, level)`` on each IRQ level change (the recorder uses
    both); ``max_exits`` bounds the total number of exits (0: no bound).
    QEMU: KVMState.
    """

    def __init__(self, ctx: AioContext, as_io: AddressSpace,
                 as_mem: Optional[AddressSpace] = None) -> None:
        self.ctx = ctx
        self.as_io = as_io
        self.as_mem = as_mem
        self.cpus: list[CPUState] = []
        self.irq_level = [0] * NR_IRQS
        self.on_exit: Optional[Callable[[CPUState, KvmRun], None]] = None
        self.on_irq: Optional[Callable[[int, int], None]] = None
        self.in_exit = False
        self.max_exits = 0
        self.nr_exits = 0
        self.nr_running = 0          # vCPUs neither halted, parked nor stopped
        self.main_waiter: Any = None  # the main loop, waiting for vCPUs
        self.accel: Any = None        # KvmAccel under --accel kvm
        self.exit_request = False     # end the run (isa-debug-exit, a stop)
        self.exit_status: Optional[int] = None
        self.started = False
        self.runstate = "running"    # gqemu.kvm.runstate: RUN_STATE_*
        self.vmstop_request: Optional[str] = None
        self.vm_change_state_handlers: list[tuple[Callable[..., Any], Any]] = []
        self.shutdown_request = False  # a guest called sys.exit
        self.limit_error: Optional[BaseException] = None  # a --timeout expired
        # called when KVM_RUN returns, before the exit is handled (the
        # recorder's guest-RAM sync under --accel kvm)
        self.on_run_return: Optional[Callable[[CPUState], None]] = None


class CPUState:
    """One vCPU.  ``guest_fn(cpu)`` is the guest program; ``guest_cpu`` is
    the object the program sees (``X86CPU``).  QEMU: CPUState."""

    def __init__(self, s: KVMState, cpu_index: int,
                 guest_fn: Optional[Callable[[Any], Any]], guest_cpu: Any) -> None:
        self.kvm_state = s
        self.cpu_index = cpu_index
        self.kvm_run = KvmRun()
        self.guest_fn = guest_fn
        self.guest_cpu = guest_cpu
        self.guest: Optional[greenlet] = None
        self.thread: Any = None               # the gevent greenlet
        self.halted = False
        self.interrupt_request = False
        self.stopped = False          # the vCPU has ended
        self.paused = False           # parked while the VM is stopped
        self.exit_excp = 0
        self.error: Optional[BaseException] = None
        self.host_error: Optional[BaseException] = None
        self.accel_run: Any = None            # accel.VcpuRun under --accel kvm
        s.cpus.append(self)

    def __repr__(self) -> str:
        return "<CPUState %d>" % self.cpu_index


# ------------------------------------------------------------- interrupts

def kvm_set_irq(s: KVMState, irq: int, level: int) -> None:
    """Set IRQ line ``irq`` to ``level``; a rising edge wakes halted vCPUs.

    This is the callback the machine hands down to the interrupt lines.
    Context: loop (vCPU or main greenlet).  QEMU: kvm_set_irq.
    """
    level = 1 if level else 0
    if s.irq_level[irq] == level:
        return
    s.irq_level[irq] = level
    if trace_kvm_set_irq.enabled:
        trace_kvm_set_irq(irq, level)
    if s.on_irq is not None:
        s.on_irq(irq, level)
    if s.accel is not None:
        s.accel.irq_line(irq, level)
        return
    if level:
        for cpu in s.cpus:
            cpu.interrupt_request = True
            if cpu.halted:
                kvm_cpu_wakeup(cpu)


def kvm_cpu_wakeup(cpu: CPUState) -> None:
    """End ``cpu``'s HLT: it counts as running again from now on."""
    if not cpu.halted:
        return
    cpu.halted = False
    s = cpu.kvm_state
    s.nr_running += 1
    s.ctx.external_inc()
    if trace_kvm_halt_wakeup.enabled:
        trace_kvm_halt_wakeup(cpu.cpu_index)
    t = cpu.thread
    if t is not None and getattr(t, "_halt_waiter", None) is not None:
        w = t._halt_waiter
        t._halt_waiter = None
        gevent.get_hub().loop.run_callback(w.switch, None)


# ------------------------------------------------------------ exit handling

def kvm_handle_io(port: int, attrs: Any, data: bytearray, direction: int,
                  size: int, count: int, as_io: AddressSpace) -> None:
    """Dispatch an I/O exit: ``count`` accesses of ``size`` bytes at ``port``.

    As QEMU does, this is ``count`` calls of ``address_space_rw`` at the
    same port, the data pointer advancing by ``size``.  For ``count > 1``
    the hw layer's ``address_space_rw_string`` runs that loop and lets a
    device that can (the IDE data port inside one DRQ block, tracing off)
    move the whole run at once with exactly the same effect.
    Context: vCPU.  QEMU: kvm-all.c kvm_handle_io (the address space is
    QEMU's global ``address_space_io``, passed here explicitly).
    """
    if count == 1:
        address_space_rw(as_io, port, attrs, data, size, direction == KVM_EXIT_IO_OUT)
    else:
        address_space_rw_string(as_io, port, attrs, memoryview(data)[:size * count],
                                size, count, direction == KVM_EXIT_IO_OUT)


def kvm_handle_mmio(phys_addr: int, attrs: Any, data: bytearray, length: int,
                    is_write: int, as_mem: Optional[AddressSpace]) -> None:
    """Dispatch an MMIO exit.  Context: vCPU.  QEMU: kvm_cpu_exec, KVM_EXIT_MMIO."""
    if as_mem is None:
        if not is_write:
            data[:length] = bytes(length)
        return
    address_space_rw(as_mem, phys_addr, attrs, data, length, bool(is_write))


def kvm_vcpu_ioctl(cpu: CPUState, type_: int) -> int:
    """``KVM_RUN``: switch into the guest until its next exit.

    Context: vCPU greenlet.  Returns 0.  QEMU: kvm_vcpu_ioctl(KVM_RUN).
    """
    if trace_kvm_vcpu_ioctl.enabled:
        trace_kvm_vcpu_ioctl(cpu.cpu_index, type_, None)
    run = cpu.kvm_run
    if cpu.accel_run is not None and cpu.guest is None:
        return kvm_vcpu_ioctl_kvm(cpu.accel_run, run, cpu.kvm_state.ctx)
    guest = cpu.guest
    try:
        guest.switch()  # type: ignore[union-attr]
    except BaseException as e:          # the guest program raised
        run.exit_reason = KVM_EXIT_INTERNAL_ERROR
        run.internal_error = e
        return 0
    if guest.dead:  # type: ignore[union-attr]
        if cpu.accel_run is not None:
            # the firmware (a Python program on this vCPU) has jumped to the
            # boot program: real code on /dev/kvm from here on
            cpu.guest = None
            return kvm_vcpu_ioctl_kvm(cpu.accel_run, run, cpu.kvm_state.ctx)
        run.exit_reason = KVM_EXIT_SHUTDOWN
    return 0


def kvm_handle_halt(cpu: CPUState) -> int:
    """HLT: sleep unless an interrupt arrived since the last wake-up.
    QEMU: target/i386/kvm.c kvm_handle_halt."""
    if cpu.interrupt_request:
        cpu.interrupt_request = False
        return 0
    cpu.halted = True
    return EXCP_HLT


def kvm_cpu_exec(cpu: CPUState) -> int:
    """Run the guest and handle its exits until one needs the outer loop.

    Context: vCPU greenlet.
    Returns: EXCP_HLT, EXCP_SHUTDOWN, EXCP_INTERNAL or EXCP_WATCHDOG.
    QEMU: kvm-all.c kvm_cpu_exec.
    """
    s = cpu.kvm_state
    run = cpu.kvm_run
    ctx = s.ctx
    as_io = s.as_io
    multi = len(s.cpus) > 1
    while True:
        # The BQL is dropped during KVM_RUN: let the main loop dispatch.
        aio_poll(ctx, False)
        if multi:
            gevent.sleep(0)
        if s.runstate != "running" or s.vmstop_request is not None:
            return EXCP_INTERRUPT       # the VM is stopping: park (cpu_can_run)
        if s.shutdown_request:
            return EXCP_SHUTDOWN
        if s.limit_error is not None:
            cpu.error = s.limit_error
            return EXCP_WATCHDOG
        kvm_vcpu_ioctl(cpu, KVM_RUN)
        if s.on_run_return is not None:
            s.on_run_return(cpu)
        reason = run.exit_reason
        if trace_kvm_run_exit.enabled:
            trace_kvm_run_exit(cpu.cpu_index, reason)
        s.nr_exits += 1
        if s.max_exits and s.nr_exits > s.max_exits:
            cpu.error = GuestWatchdog("the run exceeded its --max-exits of %d exits" % s.max_exits)
            return EXCP_WATCHDOG
        if reason == KVM_EXIT_IO:
            s.in_exit = True
            kvm_handle_io(run.io_port, MEMTXATTRS_UNSPECIFIED, run.data,
                          run.io_direction, run.io_size, run.io_count, as_io)
            ret = 0
            if ctx.external > s.nr_running:
                # A worker thread is busy for the guest: a real vCPU and a
                # real worker run in parallel, so hand over the GIL now
                # instead of after the 5 ms switch interval.
                time.sleep(0)
        elif reason == KVM_EXIT_MMIO:
            s.in_exit = True
            kvm_handle_mmio(run.mmio_phys_addr, MEMTXATTRS_UNSPECIFIED, run.data,
                            run.mmio_len, run.mmio_is_write, s.as_mem)
            ret = 0
        elif reason == KVM_EXIT_HLT:
            s.in_exit = True
            ret = kvm_handle_halt(cpu)
        elif reason == KVM_EXIT_SHUTDOWN:
            ret = EXCP_SHUTDOWN
        elif reason == KVM_EXIT_INTERNAL_ERROR:
            cpu.error = run.internal_error
            if isinstance(cpu.error, GuestTimeout):
                cpu.error = s.limit_error or GuestWatchdog(str(cpu.error))
                ret = EXCP_WATCHDOG
            else:
                if isinstance(cpu.error, (SystemExit, KeyboardInterrupt)):
                    kvm_shutdown_request(s)     # sys.exit ends the whole VM
                ret = EXCP_INTERNAL
        elif reason == KVM_EXIT_INTR:
            # kicked: end, park for a VM stop, or simply run on
            ret = (EXCP_SHUTDOWN if s.exit_request else
                   EXCP_INTERRUPT if s.vmstop_request is not None else 0)
        else:
            raise AssertionError("unhandled exit reason %d" % reason)
        if s.on_exit is not None and reason != KVM_EXIT_INTR:
            s.on_exit(cpu, run)
        s.in_exit = False
        if ret:
            return ret
        if s.exit_request:
            return EXCP_SHUTDOWN        # isa-debug-exit, Machine.stop()


def _guest_entry(cpu: CPUState) -> Any:
    assert cpu.guest_fn is not None
    return cpu.guest_fn(cpu.guest_cpu)


def qemu_kvm_cpu_thread_fn(cpu: CPUState) -> int:
    """The vCPU: run ``kvm_cpu_exec`` until the guest ends, sleeping in HLT.

    Context: the vCPU's gevent greenlet.
    Returns: the final EXCP_* code (also left in ``cpu.exit_excp``).
    QEMU: cpus.c qemu_kvm_cpu_thread_fn.
    """
    s = cpu.kvm_state
    ctx = s.ctx
    trace_register_track_name("vCPU %d" % cpu.cpu_index)
    if cpu.guest_fn is not None:     # a script, or the firmware before real code
        cpu.guest = greenlet(functools.partial(_guest_entry, cpu), parent=getcurrent())
        cpu.guest_cpu._attach(cpu)
    ret = 0
    try:
        while True:
            ret = kvm_cpu_exec(cpu)
            if ret == EXCP_HLT:
                qemu_kvm_wait_io_event(cpu)
            elif ret == EXCP_INTERRUPT:
                qemu_kvm_wait_resume(cpu)
            else:
                break
            if cpu.stopped:
                break
    except gevent.GreenletExit:
        raise
    except BaseException as e:      # a bug below the guest: re-raised by the main loop
        cpu.host_error = e
    finally:
        cpu.exit_excp = ret
        cpu.stopped = True
        if not cpu.halted and not cpu.paused:
            s.nr_running -= 1
            ctx.external_dec()
        cpu.halted = False
        cpu.paused = False
        aio_notify(ctx)
        kvm_main_wake(s)
    return ret


def qemu_kvm_wait_io_event(cpu: CPUState) -> None:
    """Sleep until :func:`kvm_cpu_wakeup`.  QEMU: qemu_kvm_wait_io_event."""
    s = cpu.kvm_state
    if trace_kvm_halt.enabled:
        trace_kvm_halt(cpu.cpu_index)
    s.nr_running -= 1
    s.ctx.external_dec()
    aio_notify(s.ctx)
    kvm_main_wake(s)
    t = cpu.thread
    w = Waiter()
    t._halt_waiter = w
    w.get()
    cpu.interrupt_request = False


def kvm_shutdown_request(s: KVMState) -> None:
    """End every vCPU at its next exit boundary (a guest called
    ``sys.exit``); halted ones are woken to end.
    QEMU: qemu_system_shutdown_request."""
    s.shutdown_request = True
    kvm_kick_all(s)


def kvm_kick_all(s: KVMState) -> None:
    """Wake every halted vCPU so that it looks at the VM's state again; a
    real vCPU inside KVM_RUN is kicked out of it (qemu_cpu_kick)."""
    for cpu in s.cpus:
        if cpu.halted and not cpu.stopped:
            kvm_cpu_wakeup(cpu)
        if cpu.accel_run is not None and not cpu.stopped:
            qemu_cpu_kick(cpu.accel_run, stop=False)
    kvm_main_wake(s)


def kvm_main_wake(s: KVMState) -> None:
    """A vCPU halted or stopped: let the main loop look again."""
    w = s.main_waiter
    if w is not None:
        s.main_waiter = None
        gevent.get_hub().loop.run_callback(w.switch, None)


def qemu_kvm_wait_resume(cpu: CPUState) -> None:
    """Park a vCPU while the VM is stopped; ``vm_start`` wakes it (and
    counts it as running again).  Context: the vCPU greenlet.
    QEMU: qemu_wait_io_event (cpu->stopped)."""
    s = cpu.kvm_state
    s.nr_running -= 1
    s.ctx.external_dec()
    aio_notify(s.ctx)
    kvm_main_wake(s)
    w = Waiter()
    cpu.thread._pause_waiter = w
    cpu.paused = True
    w.get()                 # killed here: stays paused for the thread's cleanup
    cpu.paused = False
