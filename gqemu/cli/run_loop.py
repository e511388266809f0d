"""The run loop shared by ``gqemu run`` (``--accel sim`` and ``--accel kvm``):
the trace header, resuming a VM that an I/O error paused (``--on-io-error``,
a script's ``on_io_error`` hook), and the exit status a run makes.

Exit statuses are listed in ``gqemu.cli.run``'s docstring and docs/run.md.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional, Sequence

from gqemu.cli.errors import UsageError

def trace_meta(drives: list[dict], ram_size: int, script: str) -> dict:
    """The trace header map for a run on ``drives``."""
    from gqemu.machine import file_sha256
    out = []
    for d in drives:
        e: dict[str, Any] = {"index": d["index"], "if": d.get("if", "ide"),
                             "format": str(d["options"].get("format", "raw")),
                             "size": os.path.getsize(d["file"]),
                             "sha256": file_sha256(d["file"])}
        if d.get("scratch"):
            e["scratch"] = d["scratch"]
        out.append(e)
    return {"machine": "pc", "drives": out, "ram_size": ram_size, "irq": True,
            "created_by": "gqemu run %s" % os.path.basename(script)}


STATUS_IO_ERROR = 4       # the VM ended paused by an I/O error
STATUS_LIMIT = 124        # --timeout / --max-exits stopped the guest (as timeout(1))


def parse_on_io_error(text: str) -> tuple[int, float]:
    """``stop`` -> (0, 0); ``retry=N[,delay=SECONDS]`` -> (N, SECONDS).
    Raises UsageError."""
    if text == "stop":
        return 0, 0.0
    retries: Optional[int] = None
    delay = 1.0
    for item in text.split(","):
        key, eq, value = item.partition("=")
        try:
            if key == "retry" and eq:
                retries = int(value)
            elif key == "delay" and eq:
                delay = float(value)
            else:
                raise ValueError
        except ValueError:
            retries = None
            break
    if retries is None or retries < 0 or not 0 <= delay <= 3600:
        raise UsageError("--on-io-error %s: expected 'stop' or 'retry=N[,delay=SECONDS]' "
                         "(N >= 0, 0 <= SECONDS <= 3600)" % text)
    return retries, delay


def report_io_errors(events: list[dict]) -> None:
    """One line per BLOCK_IO_ERROR that stopped the VM (QEMU emits the
    event, then STOP)."""
    for ev in events:
        sys.stderr.write("gqemu run: BLOCK_IO_ERROR: drive %s: %s failed: %s (errno %d); "
                         "%s: VM paused (io-error)\n"
                         % (ev["device"], ev["operation"], ev["reason"], ev["errno"],
                            ev["policy"]))


def run_machine(machine: Any, script: str, guest_traceback: Any, ns: dict,
                retries: int, delay: float) -> int:
    """Run, resuming a VM that an I/O error paused as ``--on-io-error``
    (and the script's ``on_io_error(machine, events)`` hook) say; return
    the exit status."""
    from gqemu.kvm.main_loop import GuestDeadlock
    from gqemu.kvm.runstate import RUN_STATE_IO_ERROR
    status = 0
    reported = 0
    retried = 0
    hook = ns.get("on_io_error")
    try:
        state = machine.run()
        while state == RUN_STATE_IO_ERROR and machine.kvm.limit_error is None:
            events = machine.io_errors[reported:]
            reported = len(machine.io_errors)
            report_io_errors(events)
            if callable(hook):
                try:
                    hook(machine, events)
                except Exception as e:
                    sys.stderr.write("gqemu run: on_io_error raised an exception:\n")
                    sys.stderr.write(guest_traceback(e, script))
                    _guest_status(machine, script, guest_traceback, 1)
                    return 1
                if machine.runstate != RUN_STATE_IO_ERROR:
                    state = machine.run()
                    continue
            if retried >= retries:
                sys.stderr.write("gqemu run: the VM stays paused (io-error)%s; the failed "
                                 "request was not completed\n"
                                 % (" after %d retries" % retried if retried else ""))
                _guest_status(machine, script, guest_traceback, 0)    # report the others
                return STATUS_IO_ERROR
            retried += 1
            sys.stderr.write("gqemu run: cont in %g s (retry %d of %d)\n"
                             % (delay, retried, retries))
            _pause(machine, delay)
            if machine.kvm.limit_error is not None:
                break
            machine.cont()
            state = machine.run()
        if state == RUN_STATE_IO_ERROR:         # a limit expired while paused
            sys.stderr.write("gqemu run: %s while the VM was paused (io-error)\n"
                             % machine.kvm.limit_error)
            _guest_status(machine, script, guest_traceback, 0)
            return STATUS_LIMIT
    except GuestDeadlock as e:
        sys.stderr.write("gqemu run: guest hung: %s\n" % e)
        status = 1
    return _guest_status(machine, script, guest_traceback, status)


def _pause(machine: Any, delay: float) -> None:
    """Wait ``delay`` s before a retry, or less if a --timeout expires."""
    import time
    import gevent
    end = time.monotonic() + delay
    while machine.kvm.limit_error is None:
        left = end - time.monotonic()
        if left <= 0:
            break
        gevent.sleep(min(left, 0.05))


def _guest_status(machine: Any, script: str, guest_traceback: Any, status: int) -> int:
    """Report how each vCPU ended (one line for a limit, the traceback of a
    guest that raised) and return the status that makes."""
    from gqemu.kvm.accel import GuestFault
    from gqemu.kvm.cpu import GuestWatchdog
    exit_code: Optional[int] = None
    limited: list[int] = []
    limit_msg = ""
    for cpu in machine.kvm.cpus:
        err = cpu.error
        if err is None:
            continue
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt
        if isinstance(err, SystemExit):
            if exit_code is None:
                exit_code = _exit_status(err)
            continue
        if isinstance(err, GuestWatchdog):
            limited.append(cpu.cpu_index)
            limit_msg = limit_msg or str(err)
            continue
        status = 1
        if isinstance(err, GuestFault):          # real guest code (--accel kvm)
            sys.stderr.write("gqemu run: vCPU %d stopped: %s\n" % (cpu.cpu_index, err))
            continue
        sys.stderr.write("gqemu run: the guest on vCPU %d raised an exception:\n"
                         % cpu.cpu_index)
        sys.stderr.write(guest_traceback(err, script))
    if limited:
        sys.stderr.write("gqemu run: %s: stopped vCPU %s (exits: %d)\n"
                         % (limit_msg, ", ".join(str(i) for i in limited),
                            machine.kvm.nr_exits))
        return STATUS_LIMIT
    if exit_code is not None and status == 0:
        return exit_code
    if status == 0 and machine.kvm.exit_status is not None:
        return machine.kvm.exit_status         # isa-debug-exit (--accel kvm)
    return status


def _exit_status(e: SystemExit) -> int:
    """What Python's own exit makes of ``sys.exit(code)``."""
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write("%s\n" % (code,))
    return 1


# ----------------------------------------------- what a run sets up and undoes
# Each helper registers its undo on the caller's ExitStack, so gqemu run's two
# accelerators share them and unwind in reverse order whatever happens.

def start_trace(stack: Any, args: Any) -> None:
    """``--trace``/``--trace-file``/``--trace-format``; undone at the end."""
    if not args.trace:
        return
    from gqemu.trace import (trace_close_output, trace_enable_events, trace_init_output,
                             trace_reset)
    try:
        out = open(args.trace_file, "w", encoding="utf-8") if args.trace_file else sys.stderr
    except OSError as e:
        raise UsageError("%s: %s" % (args.trace_file, e.strerror or e))

    def close() -> None:
        trace_close_output()
        trace_reset()
        if out is not sys.stderr:
            out.close()
    stack.callback(close)
    trace_init_output(out, args.trace_format, timestamps=args.trace_timestamps)
    pat = ""
    try:
        for pat in args.trace:
            trace_enable_events(pat)
    except OSError as e:
        raise UsageError("--trace %s: %s" % (pat, e.strerror or e))


def start_scratch(stack: Any, ide: Sequence[int], virtio: Sequence[int] = ()) -> list[dict]:
    """Scratch disks in a temporary directory removed at the end."""
    import shutil
    import tempfile
    from gqemu.machine import scratch_drives
    tmpdir = tempfile.mkdtemp(prefix="gqemu-run-")
    stack.callback(shutil.rmtree, tmpdir, ignore_errors=True)
    return scratch_drives(tmpdir, list(ide), list(virtio))


def start_record(stack: Any, args: Any, machine: Any, drives: list[dict],
                 program: str) -> Any:
    """``--record TRACE``: the recorder (with guest RAM under --accel kvm)
    and a SIGTERM handler that keeps what was recorded.  The machine is
    closed before the trace, so requests drained at the end are in it.
    Returns the Recorder, or None."""
    if not args.record:
        return None
    from gqemu.replay.format import TraceWriter
    from gqemu.replay.record import GuestRamSync, Recorder
    meta = trace_meta(drives, machine.ram_size, program)
    if not machine.ide_bus_master:
        # PCI as SeaBIOS leaves it (--accel kvm, with or without the
        # firmware's exits): the replay machine must start the same way
        meta["firmware"] = "seabios"
    try:
        f = open(args.record, "wb")
    except OSError as e:
        raise UsageError("%s: %s" % (args.record, e.strerror or e))
    stack.callback(f.close)
    writer = TraceWriter(f, meta)
    stack.callback(writer.close)
    recorder = Recorder(writer, machine.kvm, machine.memories)
    if machine.accel is not None:
        GuestRamSync(recorder, machine.kvm, machine.accel, machine.ram, machine.bios)
    old = _flush_on_sigterm(writer)
    if old is not None:
        stack.callback(signal.signal, signal.SIGTERM, old)
    stack.callback(machine.close)       # idempotent: before the writer's close
    return recorder


def start_flow(stack: Any, args: Any) -> Any:
    """``--backtrace``: the flow capture (its report printed by the caller
    after the run)."""
    if not args.backtrace:
        return None
    from gqemu.replay.flow import FlowCapture
    flow = FlowCapture().install()
    stack.callback(flow.remove)
    return flow


def start_time_limit(stack: Any, args: Any, machine: Any) -> None:
    """``--timeout SECONDS`` (status 124)."""
    if args.timeout:
        from gqemu.kvm.watchdog import kvm_set_time_limit
        limit = kvm_set_time_limit(machine.kvm, args.timeout, STATUS_LIMIT)
        stack.callback(limit.cancel)


def print_flow(flow: Any) -> None:
    if flow is not None:
        sys.stdout.write(flow.report())
        sys.stdout.flush()


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
