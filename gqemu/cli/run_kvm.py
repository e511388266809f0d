"""``gqemu run --accel kvm``: real guest code on /dev/kvm.

With no ``--boot``, sector 0 of the first IDE disk is loaded at 0000:7C00
(it must end in 55 AA, as SeaBIOS requires); ``--boot FILE.bin`` loads a
raw boot program there instead.  The vCPU starts in real mode with the
registers SeaBIOS leaves (DL = 0x80).  ``isa-debugcon`` at 0xE9 writes to
``--debugcon`` (default: standard output); a write of V to
``isa-debug-exit`` at 0xF4 ends the run with status ``(V << 1) | 1`` (mod
256), as QEMU exits.

Exit status: the isa-debug-exit status; 0 when the run was stopped
otherwise without error; 1 when the guest faulted (triple fault, failed
entry, KVM internal error); 2 for bad input or no usable /dev/kvm; 4 when
an I/O error left the VM paused; 124 when ``--timeout`` or ``--max-exits``
stopped it (as ``gqemu run``, whose ``run_machine`` this shares).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Optional

RAM_SIZE_KVM = 128 << 20        # QEMU's default -m, as in refdata


def _no_traceback(err: BaseException, script: str) -> str:
    return "%s\n" % err


def run_kvm(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    from gqemu.cli.run_loop import (parse_on_io_error, print_flow, run_machine, start_flow,
                                    start_record, start_scratch, start_time_limit, start_trace)
    from gqemu.kvm.kvm_dev import kvm_available
    from gqemu.machine import Machine, MachineError, drive_config
    if args.script is not None:
        raise UsageError("--accel kvm runs machine code (--boot FILE or the disk's "
                         "boot sector), not a Python script")
    why = kvm_available()
    if why is not None:
        raise UsageError("--accel kvm: %s" % why)
    try:
        drives = drive_config(args.drive)
    except MachineError as e:
        raise UsageError(str(e))
    boot: Optional[bytes] = None
    if args.boot is not None:
        try:
            with open(args.boot, "rb") as f:
                boot = f.read()
        except OSError as e:
            raise UsageError("--boot %s: %s" % (args.boot, e.strerror or e))
    elif not drives:
        raise UsageError("--accel kvm needs --boot FILE or a bootable --drive")
    with contextlib.ExitStack() as stack:
        if not drives:
            drives = start_scratch(stack, [0])
        if args.debugcon is None or args.debugcon == "-":
            debugcon: Any = sys.stdout.buffer
        else:
            try:
                debugcon = open(args.debugcon, "wb")
            except OSError as e:
                raise UsageError("--debugcon %s: %s" % (args.debugcon, e.strerror or e))
            stack.callback(debugcon.close)
        start_trace(stack, args)
        try:
            machine = Machine(drives, ram_size=RAM_SIZE_KVM, accel="kvm", debugcon=debugcon)
            stack.callback(machine.close)
            code = machine.boot_sector() if boot is None else boot
            machine.add_boot_cpu(code, boot_disk=boot is None)
        except MachineError as e:
            raise UsageError(str(e))
        machine.kvm.max_exits = args.max_exits
        start_record(stack, args, machine, drives, args.boot or "boot sector")
        flow = start_flow(stack, args)
        start_time_limit(stack, args, machine)
        retries, delay = parse_on_io_error(args.on_io_error)
        status = run_machine(machine, "boot program", _no_traceback, {}, retries, delay)
    print_flow(flow)
    return status
