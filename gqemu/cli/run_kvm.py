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
import shutil
import sys
import tempfile
from typing import Any, Optional

RAM_SIZE_KVM = 128 << 20        # QEMU's default -m, as in refdata


def _no_traceback(err: BaseException, script: str) -> str:
    return "%s\n" % err


def run_kvm(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    from gqemu.cli.run_loop import STATUS_LIMIT, parse_on_io_error, run_machine, trace_meta
    from gqemu.kvm.kvm_dev import kvm_available
    from gqemu.machine import Machine, MachineError, drive_config, scratch_drives
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
    tmpdir: Optional[str] = None
    debugcon: Any = None
    close_debugcon = False
    machine = None
    trace_out = None
    writer = None
    record_f = None
    flow = None
    limit = None
    try:
        if not drives:
            tmpdir = tempfile.mkdtemp(prefix="gqemu-run-")
            drives = scratch_drives(tmpdir, [0])
        if args.debugcon is None or args.debugcon == "-":
            debugcon = sys.stdout.buffer
        else:
            try:
                debugcon = open(args.debugcon, "wb")
            except OSError as e:
                raise UsageError("--debugcon %s: %s" % (args.debugcon, e.strerror or e))
            close_debugcon = True
        trace_out = _start_trace(args)
        try:
            machine = Machine(drives, ram_size=RAM_SIZE_KVM, accel="kvm", debugcon=debugcon)
            from_disk = boot is None
            code = machine.boot_sector() if boot is None else boot
            machine.add_boot_cpu(code, boot_disk=from_disk)
        except MachineError as e:
            raise UsageError(str(e))
        machine.kvm.max_exits = args.max_exits
        if args.record:
            from gqemu.replay.format import TraceWriter
            from gqemu.replay.record import GuestRamSync, Recorder
            meta = trace_meta(drives, machine.ram_size, args.boot or "boot sector")
            try:
                record_f = open(args.record, "wb")
            except OSError as e:
                raise UsageError("%s: %s" % (args.record, e.strerror or e))
            writer = TraceWriter(record_f, meta)
            recorder = Recorder(writer, machine.kvm, machine.memories)
            GuestRamSync(recorder, machine.kvm, machine.accel, machine.ram, machine.bios)
        if args.backtrace:
            from gqemu.replay.flow import FlowCapture
            flow = FlowCapture().install()
        if args.timeout:
            from gqemu.kvm.watchdog import kvm_set_time_limit
            limit = kvm_set_time_limit(machine.kvm, args.timeout, STATUS_LIMIT)
        retries, delay = parse_on_io_error(args.on_io_error)
        status = run_machine(machine, "boot program", _no_traceback, {}, retries, delay)
    finally:
        if limit is not None:
            limit.cancel()
        if machine is not None:
            machine.close()
        if writer is not None:
            writer.close()
        if record_f is not None:
            record_f.close()
        if flow is not None:
            flow.remove()
        if close_debugcon:
            debugcon.close()
        if trace_out is not None:
            from gqemu.trace import trace_close_output, trace_reset
            trace_close_output()
            trace_reset()
            if trace_out is not sys.stderr:
                trace_out.close()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if flow is not None:
        sys.stdout.write(flow.report())
        sys.stdout.flush()
    return status


def _start_trace(args: argparse.Namespace) -> Any:
    if not args.trace:
        return None
    from gqemu.cli.main import UsageError
    from gqemu.trace import trace_enable_events, trace_init_output
    try:
        out = open(args.trace_file, "w", encoding="utf-8") if args.trace_file else sys.stderr
    except OSError as e:
        raise UsageError("%s: %s" % (args.trace_file, e.strerror or e))
    trace_init_output(out, args.trace_format, timestamps=args.trace_timestamps)
    for pat in args.trace:
        trace_enable_events(pat)
    return out
