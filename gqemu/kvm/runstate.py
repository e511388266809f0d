"""The VM's run state: running, paused on an I/O error, resumed by ``cont``.

A ``stop`` error policy (``rerror=stop``, ``werror=stop``, ``werror=enospc``
on ENOSPC) asks for a stop with :func:`qemu_system_vmstop_request`, from
wherever the failed request completed.  Every vCPU checks for the request
before its next ``KVM_RUN`` and parks there (the guest executes nothing
more: QEMU kicks its vCPUs out of ``KVM_RUN``); halted vCPUs stay halted,
and one that an interrupt wakes parks before it runs.  Once no vCPU runs,
the main loop calls :func:`vm_stop`: the run state becomes ``io-error``,
the VM change-state handlers run with ``running=False`` (the machine drains
and flushes its drives there), and ``kvm_main_loop`` (main_loop.py) returns.

:func:`vm_start` (QMP ``cont``) sets ``running``, runs the change-state
handlers with ``running=True`` -- the machine resumes its stopped drives,
which schedules the devices' restart bottom halves -- and wakes the parked
vCPUs.  A vCPU polls the main AioContext before ``KVM_RUN``, so the restart
BH reissues the parked request (IDE status BSY again) before the guest
executes another instruction: the guest never sees a retried request as
finished before it is.

Must not import: gqemu.machine, gqemu.replay, gqemu.cli.
QEMU: softmmu/runstate.c (runstate_set, vm_state_notify,
qemu_system_vmstop_request), softmmu/cpus.c (vm_stop, do_vm_stop, vm_start,
pause_all_vcpus, resume_all_vcpus).
"""
from __future__ import annotations

from typing import Any, Callable

import gevent

from gqemu.aio import aio_notify
from gqemu.kvm.accel import qemu_cpu_kick
from gqemu.kvm.cpu import kvm_main_wake
from gqemu.kvm.trace_events import trace_runstate_set, trace_vm_state_notify

RUN_STATE_RUNNING = "running"
RUN_STATE_PAUSED = "paused"
RUN_STATE_IO_ERROR = "io-error"
RUN_STATE_SHUTDOWN = "shutdown"

# QAPI RunState values, as QEMU's trace events print them
_RUN_STATE_NUMBERS = {"debug": 0, "inmigrate": 1, "internal-error": 2, RUN_STATE_IO_ERROR: 3,
                      RUN_STATE_PAUSED: 4, "prelaunch": 6, RUN_STATE_RUNNING: 9,
                      RUN_STATE_SHUTDOWN: 11}

__all__ = ["RUN_STATE_RUNNING", "RUN_STATE_PAUSED", "RUN_STATE_IO_ERROR",
           "RUN_STATE_SHUTDOWN", "runstate_is_running", "qemu_system_vmstop_request",
           "qemu_add_vm_change_state_handler", "runstate_set", "vm_stop", "vm_start",
           "cpu_can_run"]


def runstate_is_running(s: Any) -> bool:
    """QEMU: runstate_is_running."""
    return s.runstate == RUN_STATE_RUNNING


def cpu_can_run(s: Any) -> bool:
    """Whether a vCPU may enter ``KVM_RUN`` now.  QEMU: cpu_can_run."""
    return s.runstate == RUN_STATE_RUNNING and s.vmstop_request is None


def qemu_system_vmstop_request(s: Any, state: str) -> None:
    """Ask the main loop to stop the VM in ``state``; the vCPUs park at
    their next exit boundary.  Context: any greenlet of the loop thread.
    QEMU: qemu_system_vmstop_request."""
    if s.vmstop_request is None and s.runstate == RUN_STATE_RUNNING:
        s.vmstop_request = state
        if s.accel is not None:         # a real vCPU may be inside KVM_RUN
            for cpu in s.cpus:
                if cpu.accel_run is not None:
                    qemu_cpu_kick(cpu.accel_run, stop=False)
    aio_notify(s.ctx)
    kvm_main_wake(s)


def qemu_add_vm_change_state_handler(s: Any, cb: Callable[[Any, bool, str], Any],
                                     opaque: Any) -> None:
    """``cb(opaque, running, state)`` runs on every stop and start.
    QEMU: qemu_add_vm_change_state_handler."""
    s.vm_change_state_handlers.append((cb, opaque))


def runstate_set(s: Any, new_state: str) -> None:
    """QEMU: runstate_set."""
    if trace_runstate_set.enabled:
        trace_runstate_set(_RUN_STATE_NUMBERS.get(s.runstate, -1), s.runstate,
                           _RUN_STATE_NUMBERS.get(new_state, -1), new_state)
    s.runstate = new_state


def _vm_state_notify(s: Any, running: bool, state: str) -> None:
    if trace_vm_state_notify.enabled:
        trace_vm_state_notify(int(running), _RUN_STATE_NUMBERS.get(state, -1), state)
    handlers = list(s.vm_change_state_handlers)
    if not running:
        handlers.reverse()          # QEMU: stop in reverse registration order
    for cb, opaque in handlers:
        cb(opaque, running, state)


def vm_stop(s: Any, state: str) -> None:
    """Stop the VM in ``state``.  Every vCPU is parked or halted already
    (the main loop calls this only then).  Context: the main greenlet.
    QEMU: do_vm_stop (pause_all_vcpus; runstate_set; vm_state_notify;
    bdrv_drain_all; bdrv_flush_all -- the last two in the handlers)."""
    s.vmstop_request = None
    if s.runstate != RUN_STATE_RUNNING:
        return
    runstate_set(s, state)
    _vm_state_notify(s, False, state)


def vm_start(s: Any) -> bool:
    """Resume a stopped VM (QMP ``cont``).  Returns False when it was
    running already.  Context: the main greenlet, outside the main loop.
    QEMU: vm_start (vm_prepare_start + resume_all_vcpus)."""
    if s.runstate == RUN_STATE_RUNNING and s.vmstop_request is None:
        return False
    s.vmstop_request = None
    runstate_set(s, RUN_STATE_RUNNING)
    _vm_state_notify(s, True, RUN_STATE_RUNNING)
    for cpu in s.cpus:
        t = cpu.thread
        w = getattr(t, "_pause_waiter", None) if t is not None else None
        if w is not None:
            t._pause_waiter = None
            s.nr_running += 1
            s.ctx.external_inc()
            gevent.get_hub().loop.run_callback(w.switch, None)
    return True

