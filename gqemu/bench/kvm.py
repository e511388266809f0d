"""``gqemu bench kvm``: exits per second of real guest code on /dev/kvm.

The same guest work -- ``in al, dx`` of the IDE sector-count register in a
loop -- measured three ways in one run:

- gqemu on /dev/kvm: ``--accel kvm`` with a boot program (each exit
  decoded into the KvmRun page, dispatched through ``kvm_handle_io`` ->
  IDE, with ``KVM_RUN`` on the vCPU's own thread);
- a bare ``KVM_RUN`` loop in Python on the calling thread (no dispatch, no
  thread hop): the floor for any Python VMM;
- the simulated loop (``--accel sim``) running the equivalent script.

Skipped, with the reason, when /dev/kvm cannot be opened.
"""
from __future__ import annotations

import argparse
import struct
import time

from gqemu.bench.common import RATIO_HEADER, progress, progress_done, ratio_row, table

IDE_NSECTOR = 0x1F2


def _loop_program(n: int) -> bytes:
    """mov ecx, n; mov dx, 0x1f2; 1: in al, dx; dec ecx; jnz 1b;
    mov al, 0; out 0xf4, al (isa-debug-exit); jmp $"""
    return (b"\x66\xb9" + struct.pack("<I", n) + b"\xba" + struct.pack("<H", IDE_NSECTOR)
            + b"\xec\x66\x49\x75\xfb" + b"\xb0\x00\xe6\xf4\xeb\xfe")


def _gqemu_kvm(n: int) -> float:
    import io
    from gqemu.machine import Machine
    m = Machine([], ram_size=1 << 20, accel="kvm", debugcon=io.BytesIO())
    try:
        m.add_boot_cpu(_loop_program(n))
        t0 = time.perf_counter()
        m.run()
        dt = time.perf_counter() - t0
        exits = m.kvm.nr_exits
    finally:
        m.close()
    return exits / dt


def _bare(n: int) -> float:
    from gqemu.kvm.kvm_dev import KvmVM
    vm = KvmVM(1 << 20)
    try:
        prog = b"\xba" + struct.pack("<H", IDE_NSECTOR) + b"\xec\xeb\xfd"
        vm.ram[0x7C00:0x7C00 + len(prog)] = prog        # type: ignore[index]
        v = vm.create_vcpu()
        v.set_real_mode(0, 0x7C00, {"rflags": 2})
        t0 = time.perf_counter()
        for _ in range(n):
            v.run()
            v.io()
        return n / (time.perf_counter() - t0)
    finally:
        vm.close()


def _sim(n: int) -> float:
    from gqemu.machine import Machine

    def guest(cpu):
        for _ in range(n):
            cpu.inb(IDE_NSECTOR)
    m = Machine([])
    try:
        m.add_cpu(guest)
        t0 = time.perf_counter()
        m.run()
        dt = time.perf_counter() - t0
        exits = m.kvm.nr_exits
    finally:
        m.close()
    return exits / dt


def run_bench(args: argparse.Namespace) -> int:
    from gqemu.kvm.kvm_dev import kvm_available
    why = kvm_available()
    if why is not None:
        print("\nkvm: skipped (%s)" % why)
        return 0
    n = 20_000 if args.quick else 100_000
    progress("kvm: gqemu --accel kvm")
    ours = _gqemu_kvm(n)
    progress("kvm: bare KVM_RUN loop")
    bare = _bare(n)
    progress("kvm: simulated loop")
    sim = _sim(n)
    progress_done()
    table("kvm: register-read exits per second (%d exits)" % n, RATIO_HEADER, [
        ratio_row("--accel kvm", ours, "bare KVM_RUN loop", bare, "exits/s"),
        ratio_row("--accel kvm", ours, "--accel sim", sim, "exits/s"),
    ])
    return 0
