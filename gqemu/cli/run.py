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
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, Optional

from gqemu.cli.run_loop import (STATUS_LIMIT, parse_on_io_error, run_machine,
                                trace_meta)


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
    from gqemu.machine import Machine, MachineError, drive_config, scratch_drives
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
    tmpdir: Optional[str] = None
    trace_out = None
    writer = None
    record_f = None
    flow = None
    machine = None
    old_sigterm: Any = None
    limit: Any = None
    status = 0
    try:
        if not drives:
            tmpdir = tempfile.mkdtemp(prefix="gqemu-run-")
            drives = scratch_drives(tmpdir, list(ns.get("SCRATCH_DRIVES", [0])),
                                    list(ns.get("SCRATCH_VIRTIO", [])))
        if args.trace:
            from gqemu.trace import trace_enable_events, trace_init_output
            try:
                trace_out = (open(args.trace_file, "w", encoding="utf-8")
                             if args.trace_file else sys.stderr)
            except OSError as e:
                raise UsageError("%s: %s" % (args.trace_file, e.strerror or e))
            trace_init_output(trace_out, args.trace_format, timestamps=args.trace_timestamps)
            try:
                for pat in args.trace:
                    trace_enable_events(pat)
            except OSError as e:
                raise UsageError("--trace %s: %s" % (pat, e.strerror or e))
        try:
            machine = Machine(drives)
        except MachineError as e:
            raise UsageError(str(e))
        for g in guests:
            machine.add_cpu(g)
        machine.kvm.max_exits = args.max_exits
        if args.record:
            from gqemu.replay.format import TraceWriter
            from gqemu.replay.record import Recorder
            meta = trace_meta(drives, machine.ram_size, args.script)
            try:
                record_f = open(args.record, "wb")
            except OSError as e:
                raise UsageError("%s: %s" % (args.record, e.strerror or e))
            writer = TraceWriter(record_f, meta)
            Recorder(writer, machine.kvm, machine.memories)
            old_sigterm = _flush_on_sigterm(writer)
        if args.backtrace:
            from gqemu.replay.flow import FlowCapture
            flow = FlowCapture().install()
        if args.timeout:
            from gqemu.kvm.watchdog import kvm_set_time_limit
            limit = kvm_set_time_limit(machine.kvm, args.timeout, STATUS_LIMIT)
        status = run_machine(machine, args.script, guest_traceback, ns, retries, delay)
    finally:
        if limit is not None:
            limit.cancel()
        if machine is not None:
            machine.close()
        if writer is not None:
            writer.close()
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
        if record_f is not None:
            record_f.close()
        if flow is not None:
            flow.remove()
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


def _flush_on_sigterm(writer: Any) -> Any:
    """On SIGTERM, write out what was recorded (no end record: the replay
    reports the trace as cut short) and exit.  Returns the old handler."""
    def handler(signum: int, frame: Any) -> None:
        try:
            writer.close(end=False)
        finally:
            os._exit(128 + signum)
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:          # not the main thread: nothing to do
        return None
