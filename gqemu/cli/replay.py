"""``gqemu replay TRACE [--drive SPEC]...``: replay a trace and compare.

Exit status: 0 when every recorded result matched, 1 on a divergence (the
report goes to stdout), 2 on bad input (unreadable, truncated or malformed
trace, unknown version, bad drive).  Without ``--drive``, a trace recorded
on scratch disks gets fresh scratch disks; a trace of other disks needs
them given with ``--drive`` (writes go to those files, as in the run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Any, Optional


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", metavar="TRACE", help="a gqemu trace (gqemu run --record, "
                                                  "gqemu import-qemu-trace)")
    p.add_argument("--drive", action="append", default=[], metavar="SPEC",
                   help="QEMU -drive syntax, as for gqemu run")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.add_argument("--allow-truncated", action="store_true",
                   help="replay the readable prefix of a cut-short trace and exit 0 "
                        "if it matched (a warning says so)")


def _drives_for(meta: dict, specs: list[str], tmpdir_box: list) -> list[dict]:
    from gqemu.cli.main import UsageError
    from gqemu.machine import SCRATCH_TAG, MachineError, drive_config, scratch_drives
    try:
        drives = drive_config(specs)
    except MachineError as e:
        raise UsageError(str(e))
    recorded = meta.get("drives", [])
    if drives:
        return drives
    if recorded and all(d.get("scratch") == SCRATCH_TAG for d in recorded):
        tmpdir = tempfile.mkdtemp(prefix="gqemu-replay-")
        tmpdir_box.append(tmpdir)
        return scratch_drives(tmpdir, [d["index"] for d in recorded if d.get("if") != "virtio"],
                              [d["index"] for d in recorded if d.get("if") == "virtio"])
    if recorded:
        raise UsageError("the trace was recorded on %d drive(s) (%s); give them with --drive"
                         % (len(recorded), ", ".join("%s index %s" % (
                             "virtio" if d.get("if") == "virtio" else "IDE", d.get("index", 0))
                             for d in recorded)))
    raise UsageError("the trace does not describe its drives; give them with --drive "
                     "(e.g. --drive file=disk.img,format=raw)")


def _check_drives(meta: dict, drives: list[dict]) -> None:
    """Warn (one line each) when a drive differs from the recorded one."""
    from gqemu.machine import file_sha256
    by_index = {d.get("index", 0): d for d in meta.get("drives", [])}
    for d in drives:
        rec = by_index.get(d["index"])
        if rec is None or d["options"].get("format", "raw") != "raw":
            continue
        try:
            size = os.path.getsize(d["file"])
        except OSError:
            continue
        if "size" in rec and rec["size"] != size:
            sys.stderr.write("gqemu replay: warning: drive %d is %d bytes, the recorded "
                             "one %d\n" % (d["index"], size, rec["size"]))
        elif "sha256" in rec and size <= (1 << 30) and file_sha256(d["file"]) != rec["sha256"]:
            sys.stderr.write("gqemu replay: warning: drive %d's contents differ from the "
                             "recorded disk (sha256)\n" % d["index"])


def run(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    from gqemu.cli.progress import Progress
    from gqemu.machine import Machine, MachineError
    from gqemu.replay.format import TraceError, TraceReader, TraceTruncated
    from gqemu.replay.replayer import Replayer
    try:
        f = open(args.trace, "rb")
    except OSError as e:
        raise UsageError("%s: %s" % (args.trace, e.strerror or e))
    tmpdir_box: list = []
    machine: Optional[Any] = None
    bar: Optional[Progress] = None
    try:
        try:
            reader = TraceReader(f)
        except TraceError as e:
            raise UsageError("%s: %s" % (args.trace, e))
        drives = _drives_for(reader.meta, args.drive, tmpdir_box)
        _check_drives(reader.meta, drives)
        ram_size = reader.meta.get("ram_size", 16 << 20)
        if not 1 << 16 <= ram_size <= 1 << 30:
            raise UsageError("%s: header: guest RAM size %d out of range" % (args.trace, ram_size))
        try:
            machine = Machine(drives, ram_size=ram_size,
                              ide_bus_master=reader.meta.get("firmware") != "seabios")
        except MachineError as e:
            raise UsageError(str(e))
        bar = Progress("replay", total=reader.size, unit="B")

        def progress(i: int) -> None:
            bar.update(reader.position(), "%d records" % i)  # type: ignore[union-attr]

        rp = Replayer(machine.kvm, machine.ram, progress=progress if bar.enabled else None,
                      **machine.replay_hints())
        truncated = None
        try:
            res = rp.run(reader)
        except TraceTruncated as e:
            if not args.allow_truncated or rp.last_result is None:
                raise UsageError("%s: %s" % (args.trace, e))
            truncated, res = e, rp.last_result
        except TraceError as e:
            raise UsageError("%s: %s" % (args.trace, e))
        bar.close()
        if res.divergence is not None:
            sys.stdout.write(res.divergence.report() + "\n")
            sys.stdout.flush()
            return 1
        if truncated is not None:
            sys.stderr.write("gqemu replay: warning: %s: %s\n" % (args.trace, truncated))
        if not args.quiet:
            sys.stdout.write("%s: %d records replayed, no divergence\n"
                             % (args.trace, reader.count))
        return 0
    finally:
        if bar is not None:
            bar.close()
        if machine is not None:
            machine.close()
        f.close()
        for d in tmpdir_box:
            shutil.rmtree(d, ignore_errors=True)
