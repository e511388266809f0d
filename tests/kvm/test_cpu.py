"""The simulated KVM: exits, kvm_handle_io's count loop, HLT and IRQs, the
main loop running between exits, guest failures, two vCPUs."""
from __future__ import annotations

import pytest

from gqemu.aio import aio_bh_schedule_oneshot, qemu_get_aio_context
from gqemu.hw.memory import (MemoryRegionOps, memory_region_add_subregion,
                             memory_region_init_io, new_address_space_io)
from gqemu.kvm.cpu import (EXCP_INTERNAL, EXCP_SHUTDOWN, EXCP_WATCHDOG, CPUState,
                           KVMState, kvm_set_irq)
from gqemu.kvm.main_loop import GuestDeadlock, kvm_main_loop
from gqemu.kvm.exits import (KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO,
                             KVM_EXIT_SHUTDOWN, ExitIO, exit_from_run)
from gqemu.kvm.guest import GuestError, GuestMemory, X86CPU
from gqemu.threadpool import aio_get_thread_pool, thread_pool_submit_aio


class Dev:
    """A device that logs every access it sees (no bulk string handler,
    so a rep access must arrive as ``count`` single accesses)."""

    def __init__(self):
        self.log = []
        self.value = 0

    def read(self, opaque, addr, size):
        self.log.append(("r", addr, size))
        return self.value & ((1 << (8 * size)) - 1)

    def write(self, opaque, addr, data, size):
        self.log.append(("w", addr, data, size))
        self.value = data


@pytest.fixture
def vm():
    ctx = qemu_get_aio_context()
    as_io = new_address_space_io()
    dev = Dev()
    mr = memory_region_init_io(None, MemoryRegionOps(dev.read, dev.write), None, "dev", 8)
    memory_region_add_subregion(as_io.root, 0x100, mr)
    s = KVMState(ctx, as_io)
    exits = []
    s.on_exit = lambda cpu, run: exits.append((cpu.cpu_index, exit_from_run(run)))
    return s, dev, exits


def add(s, fn, ram=None):
    i = len(s.cpus)
    return CPUState(s, i, fn, X86CPU(i, GuestMemory(ram, i) if ram is not None else None))


def test_exits_and_values(vm):
    s, dev, exits = vm
    got = []

    def guest(cpu):
        cpu.outb(0x100, 0x12)
        got.append(cpu.inb(0x100))
        cpu.outw(0x102, 0xBEEF)
        got.append(cpu.inw(0x102))
        cpu.outl(0x104, 0xDEADBEEF)
        got.append(cpu.inl(0x104))
        got.append(cpu.inb(0x300))                 # unassigned: all ones
        got.append(cpu.inl(0x300))
    c = add(s, guest)
    kvm_main_loop(s)
    assert got == [0x12, 0xBEEF, 0xDEADBEEF, 0xFF, 0xFFFFFFFF]
    assert c.exit_excp == EXCP_SHUTDOWN and c.error is None
    ios = [e for _, e in exits if isinstance(e, ExitIO)]
    assert [(e.direction, e.size, e.port, e.count) for e in ios] == [
        (1, 1, 0x100, 1), (0, 1, 0x100, 1), (1, 2, 0x102, 1), (0, 2, 0x102, 1),
        (1, 4, 0x104, 1), (0, 4, 0x104, 1), (0, 1, 0x300, 1), (0, 4, 0x300, 1)]
    assert ios[5].value == 0xDEADBEEF
    assert exits[-1][1].__class__.__name__ == "ExitShutdown"


def test_string_io_is_one_exit_and_count_dispatches(vm):
    s, dev, exits = vm

    def guest(cpu):
        cpu.outsw(0x100, bytes(range(10)))         # 5 words, one exit
        dev.value = 0x4241
        assert cpu.insw(0x100, 3) == b"ABABAB"
    add(s, guest)
    kvm_main_loop(s)
    ios = [e for _, e in exits if isinstance(e, ExitIO)]
    assert [(e.direction, e.size, e.count) for e in ios] == [(1, 2, 5), (0, 2, 3)]
    assert ios[0].data == bytes(range(10))
    # kvm_handle_io: count accesses at the same port, data advancing
    assert dev.log == [("w", 0, 0x0100, 2), ("w", 0, 0x0302, 2), ("w", 0, 0x0504, 2),
                       ("w", 0, 0x0706, 2), ("w", 0, 0x0908, 2),
                       ("r", 0, 2), ("r", 0, 2), ("r", 0, 2)]


def test_guest_exception_is_internal_error(vm):
    s, dev, exits = vm

    def guest(cpu):
        cpu.outb(0x100, 1)
        raise RuntimeError("guest bug")
    c = add(s, guest)
    kvm_main_loop(s)
    assert c.exit_excp == EXCP_INTERNAL
    assert isinstance(c.error, RuntimeError)
    assert exits[-1][1].__class__.__name__ == "ExitInternalError"
    assert "guest bug" in exits[-1][1].message


@pytest.mark.parametrize("call", [
    lambda cpu: cpu.outb(0x10000, 0), lambda cpu: cpu.outb(0x100, 256),
    lambda cpu: cpu.outw(0x100, -1), lambda cpu: cpu.inb("0x100"),
    lambda cpu: cpu.outsw(0x100, b"abc"), lambda cpu: cpu.insw(0x100, 0),
    lambda cpu: cpu.memory.write(16 << 20, b"x"),
])
def test_bad_instructions_raise_in_the_guest(vm, call):
    s, _dev, _exits = vm
    c = add(s, call, ram=bytearray(16 << 20))
    kvm_main_loop(s)
    assert isinstance(c.error, GuestError)


def test_main_loop_runs_between_exits(vm):
    """A worker-thread request completes while the guest polls: its
    completion (a BH in the main context) must run between exits."""
    s, dev, _exits = vm
    ctx = s.ctx
    done = []
    polls = []

    def guest(cpu):
        pool = aio_get_thread_pool(ctx)
        thread_pool_submit_aio(pool, lambda arg: 7, None,
                               lambda opaque, ret: done.append(ret), None)
        while not done:
            polls.append(cpu.inb(0x100))
        cpu.outb(0x100, 2)
    add(s, guest)
    kvm_main_loop(s)
    assert done == [7]
    assert 1 <= len(polls) < 100_000


def test_hlt_sleeps_until_an_irq(vm):
    s, dev, exits = vm
    ctx = s.ctx
    order = []

    def raise_later(tag):
        aio_bh_schedule_oneshot(ctx, lambda _: (order.append(tag), kvm_set_irq(s, 14, 1)),
                                None)

    def guest(cpu):
        raise_later("irq1")             # a device completes from a BH later
        order.append("hlt")
        cpu.hlt()
        order.append("woke")
        kvm_set_irq(s, 14, 0)           # the guest acknowledges
        raise_later("irq2")
        cpu.hlt()                       # the first IRQ was consumed: sleeps again
        order.append("woke2")
    c = add(s, guest)
    kvm_main_loop(s)
    assert c.error is None
    assert order == ["hlt", "irq1", "woke", "irq2", "woke2"]
    assert sum(1 for _, e in exits if e.__class__.__name__ == "ExitHLT") == 2


def test_irq_wakes_every_halted_vcpu(vm):
    s, dev, exits = vm
    woke = []

    def sleeper(cpu):
        cpu.hlt()
        woke.append(cpu.cpu_index)

    def waker(cpu):
        for _ in range(20):
            cpu.inb(0x100)              # let the others reach their hlt
        kvm_set_irq(s, 15, 1)
    add(s, sleeper)
    add(s, sleeper)
    add(s, waker)
    kvm_main_loop(s)
    assert sorted(woke) == [0, 1]


def test_hlt_with_nothing_pending_is_a_deadlock(vm):
    s, _dev, _exits = vm

    def guest(cpu):
        cpu.hlt()
    add(s, guest)
    with pytest.raises(GuestDeadlock):
        kvm_main_loop(s)


def test_interrupt_before_hlt_is_not_lost(vm):
    s, _dev, _exits = vm

    def guest(cpu):
        kvm_set_irq(s, 14, 1)           # e.g. completion came before the hlt
        cpu.hlt()                       # returns at once
    c = add(s, guest)
    kvm_main_loop(s)
    assert c.exit_excp == EXCP_SHUTDOWN


def test_two_vcpus_interleave(vm):
    s, dev, exits = vm

    def g(port):
        def guest(cpu):
            for _ in range(50):
                cpu.outb(port, 1)
        return guest
    add(s, g(0x100))
    add(s, g(0x101))
    kvm_main_loop(s)
    seq = [cpu for cpu, e in exits if isinstance(e, ExitIO)]
    assert seq.count(0) == seq.count(1) == 50
    switches = sum(1 for a, b in zip(seq, seq[1:]) if a != b)
    assert switches > 20                 # not one after the other


def test_watchdog_stops_a_spinning_guest(vm):
    s, _dev, _exits = vm
    s.max_exits = 1000

    def guest(cpu):
        while True:
            cpu.inb(0x100)
    c = add(s, guest)
    kvm_main_loop(s)
    assert c.exit_excp == EXCP_WATCHDOG
    assert s.nr_exits == 1001


def test_exit_reason_constants():
    # linux/kvm.h values
    assert (KVM_EXIT_IO, KVM_EXIT_HLT, KVM_EXIT_SHUTDOWN, KVM_EXIT_INTERNAL_ERROR) == \
        (2, 5, 8, 17)


def test_guest_memory_slices():
    ram = bytearray(64)
    seen = []
    m = GuestMemory(ram)
    m.on_write = lambda cpu, addr, data: seen.append(("w", addr, data))
    m.on_read = lambda cpu, addr, data: seen.append(("r", addr, data))
    m[4:8] = b"abcd"
    assert m[4:8] == b"abcd" and m[5] == ord("b")
    m.write_u32(8, 0x11223344)
    assert m.read_u32(8) == 0x11223344 and ram[8] == 0x44
    assert seen[0] == ("w", 4, b"abcd")
    with pytest.raises(GuestError):
        m[60:70] = b"0123456789"
    with pytest.raises(GuestError):
        m.read(-1, 2)
