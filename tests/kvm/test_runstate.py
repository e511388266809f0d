"""The VM run state at the KVM layer: a stop requested from inside an exit
parks every vCPU before its next KVM_RUN (nothing more of the guest runs),
the main loop returns the state, ``vm_start`` resumes the same vCPUs after
the change-state handlers ran; halted vCPUs stay halted across it."""
from __future__ import annotations

from gqemu.aio import aio_bh_schedule_oneshot, qemu_get_aio_context
from gqemu.hw.memory import (MemoryRegionOps, memory_region_add_subregion,
                             memory_region_init_io, new_address_space_io)
from gqemu.kvm.cpu import CPUState, KVMState, kvm_set_irq
from gqemu.kvm.guest import X86CPU
from gqemu.kvm.main_loop import kvm_main_loop, kvm_stop_vcpus
from gqemu.kvm.runstate import (RUN_STATE_IO_ERROR, qemu_add_vm_change_state_handler,
                                qemu_system_vmstop_request, vm_start)


def make(stop_on: int):
    """A VM whose device at 0x100 asks for a stop when written ``stop_on``."""
    s: KVMState

    def write(opaque, addr, data, size):
        if data == stop_on:
            qemu_system_vmstop_request(s, RUN_STATE_IO_ERROR)

    as_io = new_address_space_io()
    mr = memory_region_init_io(None, MemoryRegionOps(lambda o, a, n: 0, write), None, "d", 8)
    memory_region_add_subregion(as_io.root, 0x100, mr)
    s = KVMState(qemu_get_aio_context(), as_io)
    return s


def add(s, fn):
    i = len(s.cpus)
    return CPUState(s, i, fn, X86CPU(i, None))


def test_stop_parks_every_vcpu_and_start_resumes_them():
    s = make(stop_on=7)
    trail = []
    events = []
    qemu_add_vm_change_state_handler(s, lambda o, running, st: events.append((running, st)),
                                     None)

    def a(cpu):
        for i in range(10):
            cpu.outb(0x100, i)
            trail.append(("a", i))

    def b(cpu):
        for i in range(10):
            cpu.inb(0x100)
            trail.append(("b", i))
    add(s, a)
    add(s, b)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR
    assert s.runstate == "io-error" and events == [(False, "io-error")]
    # a's OUT of 7 was its last exit: the guest did not run past it
    assert ("a", 7) not in trail and ("a", 6) in trail
    before = list(trail)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR and trail == before
    assert all(c.paused for c in s.cpus)
    assert vm_start(s) and not vm_start(s)
    assert events == [(False, "io-error"), (True, "running")]
    assert kvm_main_loop(s) == "shutdown"
    assert [t for t in trail if t[0] == "a"] == [("a", i) for i in range(10)]
    assert [t for t in trail if t[0] == "b"] == [("b", i) for i in range(10)]
    assert all(c.error is None and not c.paused for c in s.cpus)


def test_halted_vcpu_stays_halted_and_an_irq_while_stopped_runs_nothing():
    s = make(stop_on=1)
    woke = []

    def sleeper(cpu):
        cpu.hlt()
        woke.append(True)

    def stopper(cpu):
        cpu.outb(0x100, 1)

    add(s, sleeper)
    add(s, stopper)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR
    # an interrupt while stopped wakes the halted vCPU, which parks unrun
    aio_bh_schedule_oneshot(s.ctx, lambda _: kvm_set_irq(s, 14, 1), None)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR
    from gqemu.aio import aio_poll
    aio_poll(s.ctx, False)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR and woke == []
    vm_start(s)
    assert kvm_main_loop(s) == "shutdown" and woke == [True]


def test_a_stopped_vm_can_be_abandoned():
    s = make(stop_on=3)

    def g(cpu):
        cpu.outb(0x100, 3)
        raise AssertionError("ran while stopped")
    c = add(s, g)
    assert kvm_main_loop(s) == RUN_STATE_IO_ERROR
    kvm_stop_vcpus(s)
    assert c.stopped and c.error is None
    assert s.nr_running == 0 and s.ctx.external == 0
