"""Constants, the setup error type, option parsing helpers and BlockLimits
shared by every block module.  ``gqemu.block.driver`` re-exports them.

Must not import: anything in gqemu.block (it is imported by all of them);
only the pure gqemu.cutils.
QEMU: include/block/block.h, include/block/block_int.h, util/qemu-option.c.
"""
from __future__ import annotations

import errno
import sys
from typing import Any, Callable, Optional

from gqemu.aio import qemu_get_current_aio_context

# include/block/block.h (2.8)
BDRV_O_NO_SHARE = 0x0001       # share only reads and unchanged writes (blk_new_open)
BDRV_O_RDWR = 0x0002
BDRV_O_RESIZE = 0x0004
BDRV_O_SNAPSHOT = 0x0008
BDRV_O_TEMPORARY = 0x0010
BDRV_O_NOCACHE = 0x0020
BDRV_O_NATIVE_AIO = 0x0080
BDRV_O_NO_BACKING = 0x0100
BDRV_O_NO_FLUSH = 0x0200
BDRV_O_COPY_ON_READ = 0x0400
BDRV_O_INACTIVE = 0x0800
BDRV_O_CHECK = 0x1000
BDRV_O_ALLOW_RDWR = 0x2000
BDRV_O_UNMAP = 0x4000
BDRV_O_PROTOCOL = 0x8000
BDRV_O_NO_IO = 0x10000
BDRV_O_IO_URING = 0x40000     # aio=io_uring (gqemu.block.io_uring)
BDRV_O_NOWAIT = 0x100000      # gqemu: the RWF_NOWAIT fast path (aio=nowait)
BDRV_O_CACHE_MASK = BDRV_O_NOCACHE | BDRV_O_NO_FLUSH

# BdrvRequestFlags (2.8)
BDRV_REQ_COPY_ON_READ = 0x1
BDRV_REQ_ZERO_WRITE = 0x2
BDRV_REQ_MAY_UNMAP = 0x4
BDRV_REQ_NO_SERIALISING = 0x8
BDRV_REQ_FUA = 0x10
BDRV_REQ_WRITE_COMPRESSED = 0x20
BDRV_REQ_NO_FALLBACK = 0x100    # QEMU >= 4.0: fail zero writes instead of writing zeroes
BDRV_REQ_MASK = 0x13f

BDRV_SECTOR_BITS = 9
BDRV_SECTOR_SIZE = 512
INT_MAX = 2**31 - 1
BDRV_REQUEST_MAX_SECTORS = INT_MAX >> BDRV_SECTOR_BITS
BDRV_REQUEST_MAX_BYTES = BDRV_REQUEST_MAX_SECTORS << BDRV_SECTOR_BITS
# the largest image length (QEMU: BDRV_MAX_LENGTH, aligned down to 1 GiB)
BDRV_MAX_LENGTH = ((1 << 63) - 1) & ~((1 << 30) - 1)

# Block status bits (2.8)
BDRV_BLOCK_DATA = 0x01
BDRV_BLOCK_ZERO = 0x02
BDRV_BLOCK_OFFSET_VALID = 0x04
BDRV_BLOCK_RAW = 0x08
BDRV_BLOCK_ALLOCATED = 0x10
BDRV_BLOCK_EOF = 0x20
BDRV_BLOCK_RECURSE = 0x40           # ask the protocol node about this data

# Permissions (QEMU >= 2.10; the lock bytes of file-posix follow them)
BLK_PERM_CONSISTENT_READ = 0x01
BLK_PERM_WRITE = 0x02
BLK_PERM_WRITE_UNCHANGED = 0x04
BLK_PERM_RESIZE = 0x08
BLK_PERM_ALL = 0x0f
_PERM_NAMES = ("consistent read", "write", "write unchanged", "resize")


class BlockError(Exception):
    """A setup failure (open, options): ``errno`` and a one-line message.
    ``hint`` is an optional second line, as QEMU's error_append_hint."""

    def __init__(self, err: int, msg: str, hint: str = "") -> None:
        super().__init__(msg)
        self.errno = err
        self.msg = msg
        self.hint = hint

    def __str__(self) -> str:
        return self.msg


def _stderr(s: str) -> Any:
    return sys.stderr.write(s)


def set_error_sink(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    """Redirect error_report() output of the current AioContext (tools,
    tests, a stress run); returns the old sink."""
    ctx = qemu_get_current_aio_context()
    old, ctx.error_sink = ctx.error_sink or _stderr, fn
    return old


def error_report(msg: str) -> None:
    """Print one diagnostic line to the current AioContext's error sink
    (stderr by default), as QEMU's error_report."""
    sink = qemu_get_current_aio_context().error_sink or _stderr
    sink(msg if msg.endswith("\n") else msg + "\n")


def warn_report(msg: str) -> None:
    """``<program>: warning: <msg>``, as QEMU's warn_report in a tool (the
    program name is argv[0]'s, as error_init sets it)."""
    import os
    error_report("%s: warning: %s" % (os.path.basename(sys.argv[0]) or "gqemu", msg))


# ----------------------------------------------------------------- options


def qemu_opt_str(options: dict, key: str, default: Optional[str] = None) -> Optional[str]:
    v = options.pop(key, None)
    return default if v is None else str(v)


def qemu_opt_bool(options: dict, key: str, default: bool) -> bool:
    """Pop an on/off option.  Raises BlockError with QEMU's message."""
    v = options.pop(key, None)
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    s = str(v)
    if s in ("on", "yes", "true"):
        return True
    if s in ("off", "no", "false"):
        return False
    raise BlockError(errno.EINVAL, "Parameter '%s' expects 'on' or 'off'" % key)


SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
             "and exabytes, respectively.\n")


def parse_option_size(name: str, value: str) -> tuple[int, Optional[str]]:
    """A QemuOpts size value: (bytes, hex-with-suffix warning or None).
    Raises BlockError with QEMU's message (and SIZE_HINT as the hint).
    QEMU: util/qemu-option.c parse_option_size over qemu_strtosz."""
    from gqemu.cutils import qemu_strtosz
    ret, val, warning = qemu_strtosz(value)
    if ret == -errno.ERANGE:
        raise BlockError(errno.EINVAL, "Value '%s' is out of range for parameter '%s'"
                         % (value, name))
    if ret < 0:
        raise BlockError(errno.EINVAL, "Parameter '%s' expects a non-negative number "
                         "below 2^64" % name, SIZE_HINT)
    return val, warning


def qemu_opt_size(options: dict, key: str, default: Optional[int] = None) -> Optional[int]:
    """Pop a size option.  Raises BlockError.  QEMU: qemu_opt_get_size."""
    v = options.pop(key, None)
    if v is None:
        return default
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64:
        return v
    n, warning = parse_option_size(key, str(v))
    if warning:
        warn_report(warning)
    return n


# ------------------------------------------------------------------ limits


class BlockLimits:
    """QEMU: BlockLimits (2.8), in bytes."""

    __slots__ = ("request_alignment", "max_pdiscard", "pdiscard_alignment",
                 "max_pwrite_zeroes", "pwrite_zeroes_alignment", "opt_transfer",
                 "max_transfer", "min_mem_alignment", "opt_mem_alignment",
                 "max_iov")

    def __init__(self) -> None:
        self.request_alignment = 1
        self.max_pdiscard = 0
        self.pdiscard_alignment = 0
        self.max_pwrite_zeroes = 0
        self.pwrite_zeroes_alignment = 0
        self.opt_transfer = 0
        self.max_transfer = 0
        self.min_mem_alignment = 1
        self.opt_mem_alignment = 1
        self.max_iov = 1024


def _min_non_zero(a: int, b: int) -> int:
    return min(a, b) if a and b else (a or b)
