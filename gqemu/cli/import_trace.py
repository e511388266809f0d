"""``gqemu import-qemu-trace LOG[.xz] [-o TRACE]``: QEMU log -> gqemu trace.

The output is written to a temporary file beside TRACE and renamed into
place only when the whole log converted, so a refused log leaves nothing.
"""
from __future__ import annotations

import argparse
import lzma
import os
import sys
import tempfile
from typing import Any, Iterator

from gqemu.cutils import qemu_strtosz
from gqemu.replay.format import TraceWriter
from gqemu.replay.qemu_log import BMDMA_BASE, RAM_SIZE, LogError, QemuLogImporter, open_log
from gqemu.replay.qemu_log_io import QemuIoLogImporter, Snapshot, read_ram_snapshots


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("log", metavar="LOG", help="QEMU log-backend trace (plain or .xz)")
    p.add_argument("-o", "--output", metavar="TRACE",
                   help="output trace (default: LOG's name with .gqtrace, "
                        "in the current directory)")
    p.add_argument("--ram", action="append", default=[], metavar="FILE@ADDR",
                   help="the guest's memory: FILE's bytes at guest-physical ADDR "
                        "(e.g. boot.bin@0x7c00), stored before the first access; "
                        "with it the guest's own PRD tables are replayed instead "
                        "of synthesized ones (repeatable)")
    p.add_argument("--ram-snapshots", metavar="FILE",
                   help="guest RAM read at points of the log (plain or .xz; "
                        "tests/data/virtio/record.py writes one): stored and checked "
                        "there, and accesses before its 'start' dropped")
    p.add_argument("-m", "--memory", metavar="SIZE",
                   help="the guest's RAM as QEMU's -m gave it (MiB unless suffixed, "
                        "at most 1G; default 16M): where --ram and --ram-snapshots may "
                        "store, and the replay machine's RAM")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def _ram_images(specs: list[str]) -> list[tuple[int, bytes]]:
    from gqemu.cli.main import UsageError
    out = []
    for spec in specs:
        path, sep, addr = spec.rpartition("@")
        if not sep or not path:
            raise UsageError("--ram %s: expected FILE@ADDR" % spec)
        try:
            a = int(addr, 0)
        except ValueError:
            raise UsageError("--ram %s: bad address '%s'" % (spec, addr))
        try:
            with open(path, "rb") as f:
                out.append((a, f.read()))
        except OSError as e:
            raise UsageError("%s: %s" % (path, e.strerror or e))
    return out


def _ram_size(spec: str | None) -> int:
    """-m SIZE: QEMU's -m takes MiB when no suffix is given."""
    from gqemu.cli.main import UsageError
    if spec is None:
        return RAM_SIZE
    ret, val, _ = qemu_strtosz(spec + "M" if spec.isdigit() else spec)
    if ret < 0 or not MIN_RAM <= val <= MAX_RAM:
        raise UsageError("-m %s: expected a RAM size from 64K to 1G" % spec)
    return val


def _snapshots(path: str | None, ram_size: int) -> list[Snapshot]:
    from gqemu.cli.main import UsageError
    if path is None:
        return []
    try:
        with open_log(path) as f:
            return read_ram_snapshots(f, ram_size)
    except OSError as e:
        raise UsageError("%s: %s" % (path, e.strerror or e))
    except (ValueError, lzma.LZMAError, EOFError) as e:
        raise UsageError("%s: %s" % (path, e))


MAX_LINE = 64 * 1024
MIN_RAM, MAX_RAM = 1 << 16, 1 << 30       # what gqemu replay accepts


def _lines(src: Any, imp: QemuLogImporter) -> Iterator[bytes]:
    """The log's lines, refusing one longer than MAX_LINE without reading
    all of it into memory."""
    while True:
        line = src.readline(MAX_LINE)
        if not line:
            return
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            raise LogError(imp.lines + 1, "line longer than %d bytes" % MAX_LINE)
        yield line


def default_output(log: str) -> str:
    name = os.path.basename(log)
    for ext in (".xz", ".log", ".txt"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return (name or "trace") + ".gqtrace"


def run(args: argparse.Namespace) -> int:
    from gqemu.cli.main import UsageError
    out = args.output or default_output(args.log)
    ram_size = _ram_size(args.memory)
    try:
        imp = QemuIoLogImporter(guest_ram=_ram_images(args.ram), ram_size=ram_size,
                                ram_snapshots=_snapshots(args.ram_snapshots, ram_size))
    except ValueError as e:
        raise UsageError("--ram: %s" % e)
    try:
        src = open_log(args.log)
    except OSError as e:
        raise UsageError("%s: %s" % (args.log, e.strerror or e))
    outdir = os.path.dirname(os.path.abspath(out))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gqemu-import-", dir=outdir)
    except OSError as e:
        src.close()
        raise UsageError("%s: %s" % (out, e.strerror or e))
    ok = False
    try:
        with src, os.fdopen(fd, "wb") as f:
            meta: dict[str, Any] = {"machine": "pc", "drives": [],
                    "source": "qemu-log:%s" % os.path.basename(args.log),
                    "created_by": "gqemu import-qemu-trace"}
            if ram_size != RAM_SIZE:
                meta["ram_size"] = ram_size
            if imp.start is not None:
                meta["firmware"] = "seabios"    # the program ran after SeaBIOS
            w = TraceWriter(f, meta, flush_every=4096)
            try:
                for rec in imp.records(_lines(src, imp)):
                    w.write(rec)
            except (lzma.LZMAError, EOFError) as e:
                raise LogError(imp.lines + 1, "corrupt xz data (%s)" % e)
            w.close()
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, out)
        ok = True
    except LogError as e:
        raise UsageError("%s: %s" % (args.log, e))
    except OSError as e:
        raise UsageError("%s: %s" % (out, e.strerror or e))
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if not args.quiet:
        extra = ""
        if imp.prd_synthesized:
            extra += "; %d PRD tables synthesized" % imp.prd_synthesized
        if imp.bmdma_bar is not None and imp.bmdma_bar != BMDMA_BASE and not imp.ops_accesses:
            # (memory_region_ops accesses keep their ports: nothing is mapped)
            extra += "; guest BMDMA BAR 0x%x mapped to 0x%x" % (imp.bmdma_bar, BMDMA_BASE)
        if imp.before_start:
            extra += "; %d accesses before the program's start dropped" % imp.before_start
        if imp.skipped_regions:
            extra += "; %d accesses to regions gqemu does not model skipped (%s)" % (
                sum(imp.skipped_regions.values()), ", ".join(sorted(imp.skipped_regions)))
        sys.stderr.write("%s: %d records from %d lines%s\n" % (out, w.count, imp.lines, extra))
    return 0
