"""String-to-number conversions with QEMU's exact semantics, shared by
every tool and the block layer's option parser: one parser, one answer.

``qemu_strtosz`` is util/cutils.c's do_strtosz (7.2): decimal, or hex
without a fraction; an optional fraction; one of the suffixes b/B, k/K,
M, G, T, P, E (powers of 1024); no whitespace or sign tricks past what
strtoull accepts, no ``_`` separators, no exponent.  ``qemu_strtol`` and
``qemu_strtou64`` are qemu_strtol/qemu_strtou64 on a whole string.

Must not import: anything (pure; sits with the runtime layer).
QEMU: util/cutils.c (do_strtosz, qemu_strtol, qemu_strtou64, check_strtox_error).
"""
from __future__ import annotations

import errno
from typing import Optional

_SPACE = " \t\n\v\f\r"
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1


def _strtox_scan(s: str, pos: int, base: int) -> tuple[int, int, bool, int]:
    """What strtol() and strtoull() share, from index pos: white space, one
    sign, the base prefix (base 0: "0x" hex, "0" octal, else decimal; base
    16: an optional "0x" before a hex digit), then the run of digits.
    Returns (first digit, end of the digits, negative, base); no digits:
    the two indexes are equal.  (glibc: strtol and strtoull are one
    parser, ____strtol_l_internal.)"""
    i = pos
    n = len(s)
    while i < n and s[i] in _SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    if base in (0, 16) and s[i:i + 2].lower() == "0x" and i + 2 < n \
            and s[i + 2].lower() in "0123456789abcdef":
        base, i = 16, i + 2
    elif base == 0:
        base = 8 if s[i:i + 1] == "0" else 10
    digits = "0123456789abcdef"[:base]
    start = i
    while i < n and s[i].lower() in digits:
        i += 1
    return start, i, neg, base


def _strtou64(s: str, pos: int, base: int) -> tuple[int, int, int]:
    """strtoull() + qemu_strtou64 checks from index pos.

    Returns (ret, value, endpos): ret is 0, -EINVAL (no digits; endpos = pos)
    or -ERANGE (overflow).  A leading '-' negates modulo 2^64, like strtoull.
    """
    start, i, neg, base = _strtox_scan(s, pos, base)
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


def _strtol0(s: str) -> tuple[int, int, int]:
    """strtol(s, &end, 0): base from the prefix (0x hex, 0 octal)."""
    start, i, neg, base = _strtox_scan(s, 0, 0)
    if i == start:
        return 0, 0, 0
    val = int(s[start:i], base)
    return 0, -val if neg else val, i


def qemu_strtol(s: str) -> tuple[int, int]:
    """strtol(s, &end, 0) over the whole string: (0, value), or (-EINVAL, 0)
    for no digits or trailing characters, (-ERANGE, 0) past a long.
    QEMU: util/cutils.c qemu_strtol (endptr NULL, base 0)."""
    _, val, end = _strtol0(s)
    if end == 0 or end != len(s):
        return -errno.EINVAL, 0
    if not -(1 << 63) <= val <= INT64_MAX:
        return -errno.ERANGE, 0
    return 0, val
