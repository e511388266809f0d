"""``gqemu run SCRIPT``: run an emulator script on a simulated pc machine.

Exit status (docs/run.md):

* 0 -- every guest program ended (or called ``sys.exit()`` / ``sys.exit(0)``);
* N -- a guest program called ``sys.exit(N)``; ``sys.exit("text")`` prints
  the text and gives 1, as Python does;
* 1 -- a guest program raised (its guest-side traceback is printed), or the
  guest hung in HLT with nothing that could wake it;
* 2 -- bad input (unloadable script, bad ``--drive``, image locked by another
  process, unwritable trace file);
* 4 -- the VM ended paused by an I/O error (a ``stop`` error policy, no
  ``--on-io-error`` retry left): the failed request was never completed;
* 124 -- a limit stopped the guest: ``--timeout`` or ``--max-exits``;
* 130 -- interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib

from gqemu.cli.run_loop import (parse_on_io_error, print_flow, run_machine, start_flow,
                                start_record, start_scratch, start_time_limit, start_trace)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", metavar="SCRIPT", nargs="?",
                   help="Python file defining guest(cpu) or guests (--accel sim)")
    p.add_argument("--accel", choices=("sim", "kvm"), default="sim",
                   help="sim: the simulated KVM_RUN for Python scripts (default); "
                        "kvm: real machine code on /dev/kvm")
    p.add_argument("--boot", metavar="FILE.bin",
                   help="--accel kvm: boot this raw program at 0000:7C00 instead of "
                        "sector 0 of the first IDE disk")
    p.add_argument("--debugcon", metavar="FILE",
                   help="--accel kvm: isa-debugcon (port 0xE9) output (default: stdout)")
    p.add_argument("--drive", action="append", default=[], metavar="SPEC",
                   help="QEMU -drive syntax: file=PATH,format=raw|qcow2,index=N,cache=... "
                        "(default: a self-describing 16 MiB scratch disk)")
    p.add_argument("--record", metavar="TRACE", help="record the exits to a msgpack trace")
    p.add_argument("--trace", action="append", default=[], metavar="PATTERN",
                   help="enable trace events matching PATTERN (QEMU -trace syntax; "
                        "--trace=-PATTERN disables)")
    p.add_argument("--trace-file", metavar="FILE", help="trace output (default: stderr)")
    p.add_argument("--trace-format", choices=("log", "json"), default="log",
                   help="QEMU log lines or Chrome trace JSON (Perfetto)")
    p.add_argument("--trace-timestamps", action="store_true",
                   help="prefix log lines with pid@sec.usec: (-msg timestamp=on)")
    p.add_argument("--backtrace", action="store_true",
                   help="print gdb-style backtraces of the first block request")
    p.add_argument("--max-exits", type=int, default=50_000_000, metavar="N",
                   help="stop the guest after N exits in all (0: no limit; default "
                        "%(default)s); exit status 124")
    p.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS",
                   help="stop the guest after SECONDS of wall-clock time, even one "
                        "computing without exits (0: no limit); exit status 124")
    p.add_argument("--on-io-error", default="stop", metavar="POLICY",
                   help="when a stop error policy (werror=stop|enospc, rerror=stop) "
                        "pauses the VM: 'stop' ends the run with status 4 (default); "
                        "'retry=N[,delay=SECONDS]' resumes it (QMP cont: the failed "
                        "request is retried) up to N times, SECONDS apart (default 1)")


def run(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    from gqemu.guest.script import ScriptError, guest_traceback, load_script
    from gqemu.machine import Machine, MachineError, drive_config
    if args.max_exits < 0:
        raise UsageError("--max-exits must be >= 0")
    if not args.timeout >= 0 or args.timeout == float("inf"):
        raise UsageError("--timeout must be a number of seconds >= 0")
    if args.accel == "kvm":
        from gqemu.cli.run_kvm import run_kvm
        return run_kvm(args)
    if args.script is None:
        raise UsageError("a SCRIPT is required (or --accel kvm)")
    if args.boot is not None or args.debugcon is not None:
        raise UsageError("--boot and --debugcon need --accel kvm")
    retries, delay = parse_on_io_error(args.on_io_error)
    try:
        guests, ns = load_script(args.script)
        drives = drive_config(args.drive)
    except (ScriptError, MachineError) as e:
        raise UsageError(str(e))
    with contextlib.ExitStack() as stack:
        if not drives:
            drives = start_scratch(stack, ns.get("SCRATCH_DRIVES", [0]),
                                   ns.get("SCRATCH_VIRTIO", []))
        start_trace(stack, args)
        try:
            machine = Machine(drives)
        except MachineError as e:
            raise UsageError(str(e))
        stack.callback(machine.close)
        for g in guests:
            machine.add_cpu(g)
        machine.kvm.max_exits = args.max_exits
        start_record(stack, args, machine, drives, args.script)
        flow = start_flow(stack, args)
        start_time_limit(stack, args, machine)
        status = run_machine(machine, args.script, guest_traceback, ns, retries, delay)
    print_flow(flow)
    return status
