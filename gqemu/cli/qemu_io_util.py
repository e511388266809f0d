"""qemu-io's parsing and formatting helpers, independent of the block layer.

Number parsing (``cvtnum`` = ``qemu_strtosz`` with a byte default suffix),
human sizes (``cvtstr``), elapsed-time strings (``timestr``), the statistics
report (``print_report``), the ``-v`` hex dump (``dump_buffer``), pattern
bytes (``parse_pattern``), command-line splitting (``breakline``) and the
command record (``cmdinfo_t``).  ``getopt`` lives in qemu_io_getopt.

Output goes to ``sys.stdout``/``sys.stderr`` looked up at call time, so the
tool and in-process tests see the same streams.

Must not import: anything from ``gqemu`` (this module is pure).

QEMU: qemu-io-cmds.c (cvtnum, cvtstr, timestr, print_report, dump_buffer,
parse_pattern, breakline), util/cutils.c (do_strtosz).
"""
from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

BDRV_SECTOR_SIZE = 512
# QEMU: BDRV_REQUEST_MAX_BYTES = MIN(SIZE_MAX, INT_MAX) rounded down to sectors
BDRV_REQUEST_MAX_BYTES = 0x7fffffff & ~(BDRV_SECTOR_SIZE - 1)
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1

_SPACE = " \t\n\v\f\r"

CMD_FLAG_GLOBAL = 0x01      # runs without a file (help, quit)
CMD_NOFILE_OK = 0x02        # allowed without a file (open, sleep, ...)
CMD_PERM_WRITE = 0x1        # needs write permission (BLK_PERM_WRITE)
CMD_PERM_RESIZE = 0x2


@dataclass(frozen=True)
class cmdinfo_t:
    """One qemu-io command.  ``cfunc(io, argv) -> 0 or -errno``; ``argmax``
    -1 means unlimited.  QEMU: cmdinfo_t (qemu-io.h)."""

    name: str
    cfunc: Callable[[Any, list[str]], int]
    altname: Optional[str] = None
    argmin: int = 0
    argmax: int = 0
    flags: int = 0
    perm: int = 0
    args: Optional[str] = None
    oneline: str = ""
    help: str = ""


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


def err(s: str) -> None:
    """fprintf(stderr, ...): flushes stdout first so a terminal shows order."""
    sys.stdout.flush()
    sys.stderr.write(s)
    sys.stderr.flush()


def error_report(io: Any, msg: str) -> None:
    """QEMU: error_report (the program name, then the message, on stderr)."""
    err("%s: %s\n" % (io.prog, msg))


def strerror(e: int) -> str:
    """glibc strerror() of a positive errno value."""
    return os.strerror(e)


# ---------------------------------------------------------------------------
# Numbers


def _strtou64(s: str, pos: int, base: int) -> tuple[int, int, int]:
    """strtoull() + qemu_strtou64 checks from index pos.

    Returns (ret, value, endpos): ret is 0, -EINVAL (no digits; endpos = pos)
    or -ERANGE (overflow).  A leading '-' negates modulo 2^64, like strtoull.
    """
    i = pos
    n = len(s)
    while i < n and s[i] in _SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    digits = "0123456789abcdef"[:base]
    if base == 16 and s[i:i + 2].lower() == "0x" and i + 2 < n \
            and s[i + 2].lower() in digits:
        i += 2
    start = i
    while i < n and s[i].lower() in digits:
        i += 1
    if i == start:
        return -errno.EINVAL, 0, pos
    val = int(s[start:i], base)
    if val > UINT64_MAX:
        return -errno.ERANGE, UINT64_MAX, i
    if neg:
        val = (-val) & UINT64_MAX
    return 0, val, i


def _strtod_fraction(s: str, pos: int) -> tuple[bool, float, int]:
    """strtod() on s[pos:], which starts with '.': (ok, value, endpos)."""
    i = pos + 1
    n = len(s)
    while i < n and s[i].isdigit() and s[i].isascii():
        i += 1
    if i == pos + 1:
        return False, 0.0, pos
    if i < n and s[i] in "eE":
        j = i + 1
        if j < n and s[j] in "+-":
            j += 1
        k = j
        while k < n and s[k].isdigit() and s[k].isascii():
            k += 1
        if k > j:
            i = k
    return True, float(s[pos:i]), i


def _suffix_mul(c: str, unit: int = 1024) -> int:
    c = c.upper()
    if c == "B":
        return 1
    exp = "KMGTPE".find(c) if c else -1
    if exp < 0:
        return -1
    return unit ** (exp + 1)


def qemu_strtosz(s: str) -> tuple[int, int, Optional[str]]:
    """Parse a size with an optional K/M/G/T/P/E suffix (default: bytes).

    Returns (ret, value, warning): ret 0 or -EINVAL / -ERANGE; warning is the
    hex-with-suffix deprecation text or None.  Like QEMU, any error that
    leaves characters unparsed is reported as -EINVAL.

    QEMU: util/cutils.c do_strtosz (7.2).
    """
    ret, val, end, warning = _strtosz_parse(s)
    if end != len(s):
        ret = -errno.EINVAL
    return ret, (val if ret == 0 else 0), warning


def _strtosz_parse(s: str) -> tuple[int, int, int, Optional[str]]:
    """do_strtosz up to its 'out:' label: (ret, val, end, warning)."""
    ret, val, end = _strtou64(s, 0, 10)
    if ret:
        return ret, 0, end, None
    if "-" in s[:end]:
        return -errno.EINVAL, 0, 0, None
    valf = 0
    hexnum = False
    if val == 0 and end < len(s) and s[end] in "xX":
        ret, val, end = _strtou64(s, 0, 16)
        if ret:
            return ret, 0, end, None
        if end < len(s) and s[end] == ".":
            return -errno.EINVAL, 0, 0, None
        hexnum = True
    elif end < len(s) and s[end] == ".":
        ok, fraction, fend = _strtod_fraction(s, end)
        if not ok:
            end += 1
        elif "e" in s[end:fend].lower():
            return -errno.EINVAL, 0, 0, None
        else:
            end = fend
            valf = int(fraction * 2.0 ** 64)
            if valf >= 1 << 64:          # C's out-of-range double -> u64
                valf = 0
    c = s[end] if end < len(s) else ""
    mul = _suffix_mul(c) if c else -1
    warning = None
    if mul > 0:
        if hexnum:
            warning = ("Using a multiplier suffix on hex numbers "
                       "is deprecated: %s" % s)
        end += 1
    else:
        mul = 1
    if mul == 1:
        if valf != 0:
            return -errno.EINVAL, 0, 0, warning
    else:
        frac = valf * mul
        total = val * mul + (frac >> 64) + ((frac >> 63) & 1)
        if total > UINT64_MAX:
            return -errno.ERANGE, 0, end, warning
        val = total
    return 0, val, end, warning


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


def parse_pattern(arg: str) -> int:
    """strtol(arg, 0) that must be one byte; prints and returns -1 otherwise.

    QEMU: qemu-io-cmds.c parse_pattern.
    """
    ret, val, end = _strtol0(arg)
    if ret or val < 0 or val > 255 or end != len(arg):
        out("%s is not a valid pattern byte\n" % arg)
        return -1
    return val


def _strtol0(s: str) -> tuple[int, int, int]:
    """strtol(s, &end, 0): base from the prefix (0x hex, 0 octal)."""
    i = 0
    n = len(s)
    while i < n and s[i] in _SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    base = 10
    if s[i:i + 2].lower() == "0x" and i + 2 < n and s[i + 2].lower() in \
            "0123456789abcdef":
        base, i = 16, i + 2
    elif s[i:i + 1] == "0":
        base = 8
    digits = "0123456789abcdef"[:base]
    start = i
    while i < n and s[i].lower() in digits:
        i += 1
    if i == start:
        return 0, 0, 0
    val = int(s[start:i], base)
    return 0, -val if neg else val, i


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
