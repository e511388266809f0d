"""The main loop: start the vCPUs, wait while they run, poll while they
all sleep in HLT, stop the VM when asked, detect a guest that can never
wake up.

Must not import: gqemu.machine, gqemu.replay, gqemu.cli (higher layers).
QEMU: softmmu/main-loop.c (main_loop_wait), softmmu/runstate.c
(main_loop_should_exit: the vmstop request), softmmu/cpus.c
(qemu_init_vcpu).
"""
from __future__ import annotations

import gevent
from gevent.hub import Waiter

from gqemu.aio import aio_poll
from gqemu.kvm.cpu import KVMState, kvm_kick_all, qemu_kvm_cpu_thread_fn
from gqemu.kvm.runstate import RUN_STATE_RUNNING, RUN_STATE_SHUTDOWN, vm_stop

__all__ = ["GuestDeadlock", "kvm_start_vcpus", "kvm_main_loop", "kvm_stop_vcpus"]


class GuestDeadlock(Exception):
    """Every vCPU sleeps in HLT and nothing pending can raise an IRQ."""


def kvm_start_vcpus(s: KVMState) -> None:
    """Spawn one gevent greenlet per vCPU (they start at the next hub turn)."""
    s.started = True
    for cpu in s.cpus:
        s.ctx.external_inc()
        s.nr_running += 1
        cpu.thread = gevent.Greenlet(qemu_kvm_cpu_thread_fn, cpu)
        cpu.thread._halt_waiter = None
        cpu.thread.start()


def kvm_main_loop(s: KVMState) -> str:
    """The main loop: run until every vCPU has stopped, or until the VM
    stops (a ``stop`` error policy); returns the run state then
    (``shutdown`` or e.g. ``io-error``).  Called again after ``vm_start``,
    it goes on with the same vCPUs.

    While any vCPU runs, the vCPUs dispatch the main AioContext themselves
    between exits (and may block in it, e.g. to drain), and the main
    greenlet just waits.  While every live vCPU sleeps in HLT, the main
    greenlet polls the context, blocking, until an interrupt wakes one.
    Raises GuestDeadlock when every live vCPU is halted and nothing that
    could raise an interrupt is pending (the halted vCPUs are stopped).
    Context: the main greenlet.  QEMU: main_loop / main_loop_wait.
    """
    ctx = s.ctx
    if not s.started:
        kvm_start_vcpus(s)
    while True:
        live = [c for c in s.cpus if not c.stopped]
        if not live:
            break
        if s.nr_running > 0:
            w = Waiter()
            s.main_waiter = w
            w.get()
            continue
        if s.vmstop_request is not None:
            vm_stop(s, s.vmstop_request)
        if s.runstate != RUN_STATE_RUNNING:
            return s.runstate           # stopped: the caller may vm_start
        if s.limit_error is not None:
            kvm_kick_all(s)             # a limit expired: the halted vCPUs end too
            gevent.sleep(0)
            continue
        if aio_poll(ctx, True):
            continue
        live = [c for c in s.cpus if not c.stopped]
        if live and s.nr_running == 0:
            for c in live:
                c.stopped = True
                c.thread.kill(block=False)
            gevent.sleep(0)
            raise GuestDeadlock("every vCPU is halted and no interrupt can arrive")
    for cpu in s.cpus:
        if cpu.thread is not None:
            cpu.thread.join()
        if cpu.host_error is not None:
            raise cpu.host_error
    if s.runstate != RUN_STATE_RUNNING:
        return s.runstate               # stopped after the vCPUs ended (a drain)
    return RUN_STATE_SHUTDOWN


def kvm_stop_vcpus(s: KVMState) -> None:
    """End every vCPU that has not ended (a run that stays stopped, or is
    abandoned): their greenlets are killed where they wait."""
    for c in s.cpus:
        if not c.stopped and c.thread is not None:
            c.thread.kill(block=False)
    gevent.sleep(0)
    for c in s.cpus:
        if c.thread is not None:
            c.thread.join()
