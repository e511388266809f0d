"""qemu-io's allocation queries (alloc, map) and the remaining commands:
truncate, sleep, sigraise, abort and the blkdebug breakpoint commands.

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (alloc_f, map_is_allocated, map_f, truncate_f,
sleep_f, sigraise_f, abort_f, break_f, ...).
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from gqemu.block import BDRV_BLOCK_ALLOCATED, blk_bs, blk_getlength
from gqemu.cli import qemu_io_help as H
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (BDRV_SECTOR_SIZE, CMD_NOFILE_OK,
                                    CMD_PERM_RESIZE, CMD_PERM_WRITE, cmdinfo_t,
                                    cvtnum_arg, cvtstr, error_report, out,
                                    parse_offset_count, qemuio_command_usage,
                                    strerror, strtol_ms)

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules

# ------------------------------------------------------- allocation status


def bdrv_is_allocated(bs: Any, offset: int, nbytes: int) -> tuple[int, int]:
    """Whether [offset, offset+nbytes) starts allocated in ``bs`` itself
    (not its backing file): (1/0 or -errno, bytes with that status; 0 at
    the end of the node).  QEMU: bdrv_is_allocated (a BDRV_BLOCK_RAW answer
    is the node below's, as block status gives it)."""
    from gqemu.block import bdrv_co_get_block_status, bdrv_run_co
    ret, pnum, _, _ = bdrv_run_co(bs, bdrv_co_get_block_status, bs, offset, nbytes)
    if ret < 0:
        return ret, 0
    return (1 if ret & BDRV_BLOCK_ALLOCATED else 0), pnum


def alloc_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: alloc_f."""
    bs = blk_bs(io.blk)
    ret, offset, count = parse_offset_count(argv[1:], io.prog)
    if ret < 0:
        return ret
    start = offset
    if count < 0:
        count = BDRV_SECTOR_SIZE
    remaining = count
    sum_alloc = 0
    while remaining:
        ret, num = bdrv_is_allocated(bs, offset, remaining)
        if ret < 0:
            out("is_allocated failed: %s\n" % strerror(-ret))
            return ret
        offset += num
        remaining -= num
        if ret:
            sum_alloc += num
        if num == 0:
            count -= remaining
            remaining = 0
    out("%d/%d bytes allocated at offset %s\n" % (sum_alloc, count, cvtstr(start)))
    return 0


alloc_cmd = cmdinfo_t("alloc", alloc_f, altname="a", argmin=1, argmax=2,
                      args="offset [count]",
                      oneline="checks if offset is allocated in the file")


def map_is_allocated(bs: Any, offset: int, nbytes: int) -> tuple[int, int]:
    """QEMU: map_is_allocated (merge runs with the same status)."""
    ret, num = bdrv_is_allocated(bs, offset, nbytes)
    if ret < 0:
        return ret, 0
    firstret, pnum = ret, num
    while nbytes > 0 and ret == firstret:
        offset += num
        nbytes -= num
        ret, num = bdrv_is_allocated(bs, offset, nbytes)
        if ret == firstret and num:
            pnum += num
        else:
            break
    return firstret, pnum


def map_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: map_f."""
    offset = 0
    nbytes = blk_getlength(io.blk)
    if nbytes < 0:
        error_report(io, "Failed to query image length: %s" % strerror(-nbytes))
        return nbytes
    bs = blk_bs(io.blk)
    lines: list[str] = []
    while nbytes:
        ret, num = map_is_allocated(bs, offset, nbytes)
        if ret < 0:
            out("".join(lines))
            error_report(io, "Failed to get allocation status: %s"
                         % strerror(-ret))
            return ret
        if not num:
            out("".join(lines))
            error_report(io, "Unexpected end of image")
            return -errno.EIO
        retstr = "    allocated" if ret else "not allocated"
        lines.append("%s (0x%x) bytes %s at offset %s (0x%x)\n"
                     % (cvtstr(num), num, retstr, cvtstr(offset), offset))
        offset += num
        nbytes -= num
    out("".join(lines))
    return 0


map_cmd = cmdinfo_t("map", map_f, argmin=0, argmax=0, args="",
                    oneline="prints the allocated areas of a file")


# ------------------------------------------------------------- the rest


def truncate_f(io: QemuIO, argv: list[str]) -> int:
    """Resize the image (``-m off|metadata|falloc|full``).  QEMU: truncate_f
    (blk_truncate with exact=false)."""
    from gqemu.block.io_truncate import PREALLOC_MODES, bdrv_truncate
    prealloc = "off"
    g = Getopt(argv, "m:")
    for c, optarg in g:
        if c == "m":
            if optarg not in PREALLOC_MODES:
                error_report(io, "Invalid preallocation mode '%s'" % optarg)
                return -errno.EINVAL
            prealloc = str(optarg)
        else:
            qemuio_command_usage(truncate_cmd)
            return -errno.EINVAL
    if not g.args:
        qemuio_command_usage(truncate_cmd)
        return -errno.EINVAL
    offset = cvtnum_arg(g.args[0], io.prog, g.permuted[1])   # QEMU names argv[1] here
    if offset < 0:
        return offset
    bs = blk_bs(io.blk)
    if bs is None:                          # QEMU: blk_truncate's blk_is_available
        error_report(io, "No medium inserted")
        return -errno.ENOMEDIUM
    ret, msg = bdrv_truncate(bs, offset, False, prealloc)
    if ret < 0:
        error_report(io, msg)
        return ret
    return 0


truncate_cmd = cmdinfo_t("truncate", truncate_f, altname="t", argmin=1,
                         argmax=3, perm=CMD_PERM_WRITE | CMD_PERM_RESIZE,
                         args="[-m prealloc_mode] off",
                         oneline="truncates the current file at the given offset")


def _int64(v: int) -> int:
    """``v`` wrapped to a signed 64-bit integer."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >> 63 else v


def sleep_f(io: QemuIO, argv: list[str]) -> int:
    """Run the loop for the given milliseconds.  QEMU: sleep_f."""
    ms = strtol_ms(argv[1])
    if ms < 0:
        out("%s is not a valid number\n" % argv[1])
        return -errno.EINVAL
    from gqemu.aio import (QEMU_CLOCK_HOST, SCALE_NS, aio_poll, aio_timer_new,
                           qemu_clock_get_ns, qemu_get_aio_context, timer_mod)
    ctx = qemu_get_aio_context()
    expired = [False]
    ts = aio_timer_new(ctx, QEMU_CLOCK_HOST, SCALE_NS,
                       lambda box: box.__setitem__(0, True), expired)
    # int64_t arithmetic, as QEMU's: a huge sleep wraps to a deadline in
    # the past, which timer_mod clamps to 0 (it expires at once)
    delta = _int64(ms * 1_000_000)
    timer_mod(ts, max(_int64(qemu_clock_get_ns(QEMU_CLOCK_HOST) + delta), 0))
    while not expired[0]:
        aio_poll(ctx, True)
    return 0


sleep_cmd = cmdinfo_t("sleep", sleep_f, argmin=1, argmax=1, flags=CMD_NOFILE_OK,
                      oneline="waits for the given value in milliseconds")


def sigraise_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: sigraise_f."""
    sig = cvtnum_arg(argv[1], io.prog)
    if sig < 0:
        return sig
    if sig > signal.NSIG:
        out("signal argument '%s' is too large to be a valid signal\n" % argv[1])
        return -errno.EINVAL
    sys.stdout.flush()
    sys.stderr.flush()
    if sig:
        if sig == signal.SIGINT:          # Python's own handler would catch it
            signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
    return 0


sigraise_cmd = cmdinfo_t("sigraise", sigraise_f, argmin=1, argmax=1,
                         flags=CMD_NOFILE_OK, args="signal",
                         oneline="raises a signal", help=H.SIGRAISE_HELP)


def abort_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: abort_f."""
    sys.stdout.flush()
    os.abort()


abort_cmd = cmdinfo_t("abort", abort_f, flags=CMD_NOFILE_OK,
                      oneline="simulate a program crash using abort(3)")


def _debug_node(io: QemuIO, slot: str) -> tuple[Any, Any]:
    """The first node down the file chain whose driver has ``slot``, and the
    bound slot; (None, None) if none has.  QEMU: the loop in
    bdrv_debug_breakpoint and friends."""
    bs = blk_bs(io.blk)
    while bs is not None:
        # a node without a driver (taken out of service by a fatal
        # corruption) is walked through, as QEMU does
        fn = getattr(bs.drv, slot, None) if bs.drv is not None else None
        if fn is not None:
            return bs, fn
        bs = bs.file.bs if bs.file is not None else None
    return None, None


def _debug_call(io: QemuIO, slot: str, *args: str) -> int:
    bs, fn = _debug_node(io, slot)
    return -errno.ENOTSUP if fn is None else int(fn(bs, *args))


def break_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: break_f (bdrv_debug_breakpoint)."""
    ret = _debug_call(io, "bdrv_debug_breakpoint", argv[1], argv[2])
    if ret < 0:
        out("Could not set breakpoint: %s\n" % strerror(-ret))
    return ret


def remove_break_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: remove_break_f (bdrv_debug_remove_breakpoint)."""
    ret = _debug_call(io, "bdrv_debug_remove_breakpoint", argv[1])
    if ret < 0:
        out("Could not remove breakpoint %s: %s\n" % (argv[1], strerror(-ret)))
    return ret


def resume_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: resume_f (bdrv_debug_resume)."""
    ret = _debug_call(io, "bdrv_debug_resume", argv[1])
    if ret < 0:
        out("Could not resume request: %s\n" % strerror(-ret))
    return ret


def wait_break_f(io: QemuIO, argv: list[str]) -> int:
    """Poll until the request tagged ``argv[1]`` is suspended.  Where no node
    keeps breakpoints QEMU would wait forever; gqemu says so and fails.
    QEMU: wait_break_f (bdrv_debug_is_suspended)."""
    bs, fn = _debug_node(io, "bdrv_debug_is_suspended")
    if fn is None:
        out("Could not wait for breakpoint %s: %s\n"
            % (argv[1], strerror(errno.ENOTSUP)))
        return -errno.ENOTSUP
    from gqemu.aio import aio_wait_while
    from gqemu.block import blk_get_aio_context
    try:
        aio_wait_while(blk_get_aio_context(io.blk), lambda: not fn(bs, argv[1]))
    except RuntimeError as e:               # AioDeadlockError: nothing can run
        out("Could not wait for breakpoint %s: %s\n" % (argv[1], e))
        return -errno.EDEADLK
    return 0


break_cmd = cmdinfo_t("break", break_f, argmin=2, argmax=2, args="event tag",
                      oneline="sets a breakpoint on event and tags the stopped "
                      "request as tag")
remove_break_cmd = cmdinfo_t("remove_break", remove_break_f, argmin=1, argmax=1,
                             args="tag", oneline="remove a breakpoint by tag")
resume_cmd = cmdinfo_t("resume", resume_f, argmin=1, argmax=1, args="tag",
                       oneline="resumes the request tagged as tag")
wait_break_cmd = cmdinfo_t("wait_break", wait_break_f, argmin=1, argmax=1,
                           args="tag",
                           oneline="waits for the suspension of a request")


MISC_COMMANDS = [alloc_cmd, map_cmd, truncate_cmd, sleep_cmd, sigraise_cmd,
                 abort_cmd, break_cmd, remove_break_cmd, resume_cmd,
                 wait_break_cmd]
