"""qemu-io's parsing and formatting helpers, independent of the block layer.

Number parsing (``cvtnum`` = ``qemu_strtosz`` with a byte default suffix),
human sizes (``cvtstr``), elapsed-time strings (``timestr``), the statistics
report (``print_report``), the ``-v`` hex dump (``dump_buffer``), pattern
bytes (``parse_pattern``), command-line splitting (``breakline``) and the
command record (``cmdinfo_t``).  ``getopt`` lives in qemu_io_getopt.

Output goes to ``sys.stdout``/``sys.stderr`` looked up at call time, so the
tool and in-process tests see the same streams.

Must not import: anything from ``gqemu`` but the pure ``gqemu.cutils``.

QEMU: qemu-io-cmds.c (cvtnum, cvtstr, timestr, print_report, dump_buffer,
parse_pattern, breakline), util/cutils.c (do_strtosz).
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable, Optional, Protocol

from gqemu.cutils import INT64_MAX, _strtol0, qemu_strtosz

BDRV_SECTOR_SIZE = 512
# QEMU: BDRV_REQUEST_MAX_BYTES = MIN(SIZE_MAX, INT_MAX) rounded down to sectors
BDRV_REQUEST_MAX_BYTES = 0x7fffffff & ~(BDRV_SECTOR_SIZE - 1)


CMD_FLAG_GLOBAL = 0x01      # runs without a file (help, quit)
CMD_NOFILE_OK = 0x02        # allowed without a file (open, sleep, ...)
CMD_PERM_WRITE = 0x1        # needs write permission (BLK_PERM_WRITE)
CMD_PERM_RESIZE = 0x2


class cmdinfo_t:
    """One qemu-io command.  ``cfunc(io, argv) -> 0 or -errno``; ``argmax``
    -1 means unlimited.  QEMU: cmdinfo_t (qemu-io.h).  (A plain class: a
    dataclass compiles its methods at import time, on every gqemu-io.)"""

    __slots__ = ("name", "cfunc", "altname", "argmin", "argmax", "flags", "perm", "args",
                 "oneline", "help")

    def __init__(self, name: str, cfunc: Callable[[Any, list[str]], int],
                 altname: Optional[str] = None, argmin: int = 0, argmax: int = 0,
                 flags: int = 0, perm: int = 0, args: Optional[str] = None,
                 oneline: str = "", help: str = "") -> None:
        self.name = name
        self.cfunc = cfunc
        self.altname = altname
        self.argmin = argmin
        self.argmax = argmax
        self.flags = flags
        self.perm = perm
        self.args = args
        self.oneline = oneline
        self.help = help


def qemuio_command_usage(ct: cmdinfo_t) -> None:
    """QEMU: qemuio_command_usage."""
    out("%s %s -- %s\n" % (ct.name, ct.args, ct.oneline))


def out(s: str) -> None:
    """printf() to stdout.  A closed pipe is ignored, as qemu-io ignores
    SIGPIPE: the remaining commands still run."""
    try:
        sys.stdout.write(s)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (ValueError, AttributeError):       # closed, or a stand-in without isatty
        return False


def err(s: str) -> None:
    """fprintf(stderr, ...).  stdout is flushed first only on a terminal
    (C's line buffering there); into a pipe or file it stays buffered until
    it fills or the program ends, as qemu-io's printf output does, so its
    lines follow the stderr ones written meanwhile."""
    if _stdout_is_tty():
        sys.stdout.flush()
    sys.stderr.write(s)
    sys.stderr.flush()


class HasProg(Protocol):
    """What error_report needs of a session: the program name (a QemuIO,
    or qemu-io's stand-in while its options are parsed)."""
    prog: str


def error_report(io: HasProg, msg: str) -> None:
    """QEMU: error_report (the program name, then the message, on stderr)."""
    err("%s: %s\n" % (io.prog, msg))


def strerror(e: int) -> str:
    """glibc strerror() of a positive errno value."""
    return os.strerror(e)


# ---------------------------------------------------------------------------
# Numbers


def cvtnum(s: str, prog: str = "qemu-io") -> int:
    """A non-negative size, or -EINVAL / -ERANGE.

    QEMU: qemu-io-cmds.c cvtnum.
    """
    ret, val, warning = qemu_strtosz(s)
    if warning:
        err("%s: warning: %s\n" % (prog, warning))
    if ret < 0:
        return ret
    if val > INT64_MAX:
        return -errno.ERANGE
    return val


def print_cvtnum_err(rc: int, arg: str) -> None:
    """QEMU: qemu-io-cmds.c print_cvtnum_err."""
    if rc == -errno.EINVAL:
        out("Parsing error: non-numeric argument,"
            " or extraneous/unrecognized suffix -- %s\n" % arg)
    elif rc == -errno.ERANGE:
        out("Parsing error: argument too large -- %s\n" % arg)
    else:
        out("Parsing error: %s\n" % arg)


def cvtnum_arg(arg: str, prog: str, shown: Optional[str] = None) -> int:
    """A command's number argument: cvtnum, and on failure QEMU's parsing
    message (naming ``shown``, default ``arg``).  Returns the value or
    -errno.  QEMU: the cvtnum + print_cvtnum_err pairs of qemu-io-cmds.c."""
    n = cvtnum(arg, prog)
    if n < 0:
        print_cvtnum_err(n, arg if shown is None else shown)
    return n


def parse_offset_count(args: list[str], prog: str) -> tuple[int, int, int]:
    """``OFFSET [COUNT]`` of read, write, discard, alloc, aio_write -z:
    parsed in that order, the first bad one reported.  Returns
    (0, offset, count) with count -1 when absent, or (-errno, 0, 0)."""
    offset = cvtnum_arg(args[0], prog)
    if offset < 0:
        return offset, 0, 0
    count = -1
    if len(args) > 1:
        count = cvtnum_arg(args[1], prog)
        if count < 0:
            return count, 0, 0
    return 0, offset, count


def parse_pattern(arg: str) -> int:
    """strtol(arg, 0) that must be one byte; prints and returns -1 otherwise.

    QEMU: qemu-io-cmds.c parse_pattern.
    """
    ret, val, end = _strtol0(arg)
    if ret or val < 0 or val > 255 or end != len(arg):
        out("%s is not a valid pattern byte\n" % arg)
        return -1
    return val


def strtol_ms(arg: str) -> int:
    """strtol(arg, 0) for 'sleep': -1 when invalid."""
    ret, val, end = _strtol0(arg)
    if ret or val < 0 or end != len(arg):
        return -1
    return val


# ---------------------------------------------------------------------------
# Human-readable output


def cvtstr(value: float) -> str:
    """Largest binary unit, '%.3f' with '.000' dropped ('64 KiB', '4 bytes').

    QEMU: qemu-io-cmds.c cvtstr.
    """
    for shift, suffix in ((60, " EiB"), (50, " PiB"), (40, " TiB"),
                          (30, " GiB"), (20, " MiB"), (10, " KiB")):
        if value >= (1 << shift):
            s = "%.3f" % (value / (1 << shift))
            break
    else:
        suffix = " bytes"
        s = "%f" % value
    i = s.find(".000")
    if i >= 0:
        return s[:i] + suffix
    return s + suffix


DEFAULT_TIME = 0x0
TERSE_FIXED_TIME = 0x1
VERBOSE_FIXED_TIME = 0x2


def timestr(elapsed_ns: int, fmt: int = DEFAULT_TIME) -> str:
    """QEMU: qemu-io-cmds.c timestr (timespec version, 7.2)."""
    sec, nsec = divmod(max(0, elapsed_ns), 1_000_000_000)
    frac = nsec / 1e9
    hours, minutes, seconds = sec // 3600, (sec % 3600) // 60, sec % 60
    if fmt & TERSE_FIXED_TIME:
        if not hours:
            return "%u:%05.2f" % (minutes, seconds + frac)
        fmt |= VERBOSE_FIXED_TIME
    if (fmt & VERBOSE_FIXED_TIME) or sec:
        return "%u:%02u:%05.2f" % (hours, minutes, seconds + frac)
    return "%05.2f sec" % frac


def tdiv(value: float, elapsed_ns: int) -> float:
    seconds = elapsed_ns / 1e9
    if seconds == 0:
        return float("inf") if value else float("nan")
    return value / seconds


def print_report(op: str, elapsed_ns: int, offset: int, count: int,
                 total: int, cnt: int, cflag: bool) -> None:
    """The two statistics lines, or the one -C line.

    QEMU: qemu-io-cmds.c print_report.
    """
    ts = timestr(elapsed_ns, VERBOSE_FIXED_TIME if cflag else DEFAULT_TIME)
    if not cflag:
        out("%s %d/%d bytes at offset %d\n" % (op, total, count, offset))
        out("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n"
            % (cvtstr(total), cnt, ts, cvtstr(tdiv(total, elapsed_ns)),
               tdiv(cnt, elapsed_ns)))
    else:
        out("%d,%d,%s,%.3f,%.3f\n" % (total, cnt, ts,
                                      tdiv(total, elapsed_ns),
                                      tdiv(cnt, elapsed_ns)))


def dump_buffer(buf: bytes | bytearray | memoryview, offset: int, length: int) -> None:
    """The -v hex dump: '%08x:  ' + '%02x ' per byte + ' ' + ASCII column.

    QEMU: qemu-io-cmds.c dump_buffer.
    """
    lines = []
    mv = memoryview(buf)
    for i in range(0, length, 16):
        chunk = bytes(mv[i:min(i + 16, length)])
        hexpart = "".join("%02x " % b for b in chunk)
        text = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum()
                       else "." for b in chunk)
        lines.append("%08x:  %s %s\n" % (offset + i, hexpart, text))
    out("".join(lines))


def breakline(line: str) -> list[str]:
    """Split on single spaces, dropping empty words (tabs are not spaces).

    QEMU: qemu-io-cmds.c breakline.
    """
    return [w for w in line.split(" ") if w]
