"""qemu-io's vectored and asynchronous commands: readv, writev, aio_read,
aio_write, aio_flush.

readv/writev submit one ``blk_aio_*`` request built from several buffers
and poll until it completes; aio_read/aio_write return at once and print
their report from the completion callback, whenever the loop next runs (the
next synchronous command, ``aio_flush``, ``close`` or exit).

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (create_iovec, readv_f, writev_f, aio_read_f,
aio_write_f, aio_flush_f, aio_read_done, aio_write_done).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Optional

from gqemu.block import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP, BLOCK_ACCT_READ,
                         BLOCK_ACCT_WRITE, BlockAcctCookie, QEMUIOVector,
                         blk_aio_preadv, blk_aio_pwrite_zeroes, blk_aio_pwritev,
                         blk_drain, blk_get_stats, block_acct_done,
                         block_acct_failed, block_acct_invalid, block_acct_start,
                         qemu_iovec_add)
from gqemu.cli import qemu_io_help as H
from gqemu.cli.qemu_io_rw import NOT_DONE, _now, _verify, _wait, qemu_io_alloc
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (BDRV_REQUEST_MAX_BYTES, CMD_PERM_WRITE,
                                    cmdinfo_t, cvtnum_arg, dump_buffer, out,
                                    parse_offset_count, parse_pattern, print_report,
                                    qemuio_command_usage, strerror)

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules

# -------------------------------------------------------- vectored I/O


def create_iovec(io: QemuIO, args: list[str],
                 pattern: int) -> Optional[tuple[QEMUIOVector, Any]]:
    """One buffer filled with ``pattern``, cut into the given lengths.
    Prints the problem and returns None on a bad length.
    QEMU: create_iovec."""
    sizes = []
    count = 0
    for arg in args:
        n = cvtnum_arg(arg, io.prog)
        if n < 0:
            return None
        if n > BDRV_REQUEST_MAX_BYTES:
            out("Argument '%s' exceeds maximum size %d\n"
                % (arg, BDRV_REQUEST_MAX_BYTES))
            return None
        if count > BDRV_REQUEST_MAX_BYTES - n:
            out("The total number of bytes exceed the maximum size %d\n"
                % BDRV_REQUEST_MAX_BYTES)
            return None
        sizes.append(n)
        count += n
    buf = qemu_io_alloc(io, count, pattern)
    qiov = QEMUIOVector()
    mv = memoryview(buf)
    pos = 0
    for n in sizes:
        qemu_iovec_add(qiov, mv[pos:pos + n])
        pos += n
    return qiov, buf


def _aio_rw_done(box: list, ret: int) -> None:
    box[0] = ret


def _vector_opts(argv: list[str], optstring: str, usage: cmdinfo_t,
                 opts: dict) -> Optional[list[str]]:
    """Shared getopt loop of readv/writev; None after a bad option."""
    g = Getopt(argv, optstring)
    for c, optarg in g:
        if c in ("C", "f", "q", "v"):
            opts[c] = True
        elif c == "P":
            opts["P"] = parse_pattern(optarg or "")
            if opts["P"] < 0:
                opts["ret"] = -errno.EINVAL
                return None
        else:
            qemuio_command_usage(usage)
            opts["ret"] = -errno.EINVAL
            return None
    if len(g.args) < 2:
        qemuio_command_usage(usage)
        opts["ret"] = -errno.EINVAL
        return None
    return g.args


def readv_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: readv_f (blk_aio_preadv, then wait)."""
    opts: dict = {}
    args = _vector_opts(argv, "CP:qv", readv_cmd, opts)
    if args is None:
        return int(opts["ret"])
    offset = cvtnum_arg(args[0], io.prog)
    if offset < 0:
        return offset
    made = create_iovec(io, args[1:], 0xab)
    if made is None:
        return -errno.EINVAL
    qiov, buf = made
    box = [NOT_DONE]
    t1 = _now()
    blk_aio_preadv(io.blk, offset, qiov, 0, _aio_rw_done, box)
    _wait(io, box)
    t2 = _now()
    ret = box[0]
    if ret < 0:
        out("readv failed: %s\n" % strerror(-ret))
        return ret
    ret = 0
    if "P" in opts and not _verify(buf, 0, qiov.size, opts["P"]):
        out("Pattern verification failed at offset %d, %d bytes\n"
            % (offset, qiov.size))
        ret = -errno.EINVAL
    if opts.get("q"):
        return ret
    if opts.get("v"):
        dump_buffer(buf, offset, qiov.size)
    print_report("read", t2 - t1, offset, qiov.size, qiov.size, 1,
                 bool(opts.get("C")))
    return ret


readv_cmd = cmdinfo_t("readv", readv_f, argmin=2, argmax=-1,
                      args="[-Cqv] [-P pattern] off len [len..]",
                      oneline="reads a number of bytes at a specified offset",
                      help=H.READV_HELP)


def writev_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: writev_f (blk_aio_pwritev, then wait)."""
    opts: dict = {}
    args = _vector_opts(argv, "CfqP:", writev_cmd, opts)
    if args is None:
        return int(opts["ret"])
    flags = BDRV_REQ_FUA if opts.get("f") else 0
    offset = cvtnum_arg(args[0], io.prog)
    if offset < 0:
        return offset
    made = create_iovec(io, args[1:], opts.get("P", 0xcd))
    if made is None:
        return -errno.EINVAL
    qiov, _buf = made
    box = [NOT_DONE]
    t1 = _now()
    blk_aio_pwritev(io.blk, offset, qiov, flags, _aio_rw_done, box)
    _wait(io, box)
    t2 = _now()
    ret = box[0]
    if ret < 0:
        out("writev failed: %s\n" % strerror(-ret))
        return ret
    if opts.get("q"):
        return 0
    print_report("wrote", t2 - t1, offset, qiov.size, qiov.size, 1,
                 bool(opts.get("C")))
    return 0


writev_cmd = cmdinfo_t("writev", writev_f, argmin=2, argmax=-1,
                       perm=CMD_PERM_WRITE,
                       args="[-Cfq] [-P pattern] off len [len..]",
                       oneline="writes a number of bytes at a specified offset",
                       help=H.WRITEV_HELP)


# ------------------------------------------------------------------- AIO


class aio_ctx:
    """One outstanding aio_read/aio_write.  QEMU: struct aio_ctx."""

    def __init__(self, io: QemuIO) -> None:
        self.io = io
        self.blk = io.blk                 # io.blk is None while closing
        self.qiov: Optional[QEMUIOVector] = None
        self.buf: Any = None
        self.size = 0
        self.offset = 0
        self.qflag = self.vflag = self.cflag = self.pflag = self.zflag = False
        self.pattern = 0
        self.acct = BlockAcctCookie()
        self.t1 = 0


def aio_write_done(ctx: aio_ctx, ret: int) -> None:
    """Completion of aio_write.  QEMU: aio_write_done."""
    t2 = _now()
    stats = blk_get_stats(ctx.blk)
    if ret < 0:
        out("aio_write failed: %s\n" % strerror(-ret))
        block_acct_failed(stats, ctx.acct)
        return
    block_acct_done(stats, ctx.acct)
    if ctx.qflag:
        return
    print_report("wrote", t2 - ctx.t1, ctx.offset, ctx.size, ctx.size, 1,
                 ctx.cflag)


def aio_read_done(ctx: aio_ctx, ret: int) -> None:
    """Completion of aio_read.  QEMU: aio_read_done."""
    t2 = _now()
    stats = blk_get_stats(ctx.blk)
    if ret < 0:
        out("readv failed: %s\n" % strerror(-ret))
        block_acct_failed(stats, ctx.acct)
        return
    if ctx.pflag and not _verify(ctx.buf, 0, ctx.size, ctx.pattern):
        out("Pattern verification failed at offset %d, %d bytes\n"
            % (ctx.offset, ctx.size))
    block_acct_done(stats, ctx.acct)
    if ctx.qflag:
        return
    if ctx.vflag:
        dump_buffer(ctx.buf, ctx.offset, ctx.size)
    print_report("read", t2 - ctx.t1, ctx.offset, ctx.size, ctx.size, 1,
                 ctx.cflag)


def aio_read_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: aio_read_f."""
    ctx = aio_ctx(io)
    g = Getopt(argv, "CiP:qv")
    for c, optarg in g:
        if c == "C":
            ctx.cflag = True
        elif c == "P":
            ctx.pflag = True
            ctx.pattern = parse_pattern(optarg or "")
            if ctx.pattern < 0:
                return -errno.EINVAL
        elif c == "i":
            out("injecting invalid read request\n")
            block_acct_invalid(blk_get_stats(io.blk), BLOCK_ACCT_READ)
            return 0
        elif c == "q":
            ctx.qflag = True
        elif c == "v":
            ctx.vflag = True
        else:
            qemuio_command_usage(aio_read_cmd)
            return -errno.EINVAL
    args = g.args
    if len(args) < 2:
        qemuio_command_usage(aio_read_cmd)
        return -errno.EINVAL
    ctx.offset = cvtnum_arg(args[0], io.prog)
    if ctx.offset < 0:
        return ctx.offset
    made = create_iovec(io, args[1:], 0xab)
    if made is None:
        block_acct_invalid(blk_get_stats(io.blk), BLOCK_ACCT_READ)
        return -errno.EINVAL
    ctx.qiov, ctx.buf = made
    ctx.size = ctx.qiov.size
    ctx.t1 = _now()
    block_acct_start(blk_get_stats(io.blk), ctx.acct, ctx.size, BLOCK_ACCT_READ)
    blk_aio_preadv(io.blk, ctx.offset, ctx.qiov, 0, aio_read_done, ctx)
    return 0


aio_read_cmd = cmdinfo_t("aio_read", aio_read_f, argmin=2, argmax=-1,
                         args="[-Ciqv] [-P pattern] off len [len..]",
                         oneline="asynchronously reads a number of bytes",
                         help=H.AIO_READ_HELP)


def aio_write_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: aio_write_f (7.2: -P is accepted together with -z)."""
    ctx = aio_ctx(io)
    flags = 0
    pattern = 0xcd
    g = Getopt(argv, "CfiP:quz")
    for c, optarg in g:
        if c == "C":
            ctx.cflag = True
        elif c == "f":
            flags |= BDRV_REQ_FUA
        elif c == "q":
            ctx.qflag = True
        elif c == "u":
            flags |= BDRV_REQ_MAY_UNMAP
        elif c == "P":
            pattern = parse_pattern(optarg or "")
            if pattern < 0:
                return -errno.EINVAL
        elif c == "i":
            out("injecting invalid write request\n")
            block_acct_invalid(blk_get_stats(io.blk), BLOCK_ACCT_WRITE)
            return 0
        elif c == "z":
            ctx.zflag = True
        else:
            qemuio_command_usage(aio_write_cmd)
            return -errno.EINVAL
    args = g.args
    if len(args) < 2:
        qemuio_command_usage(aio_write_cmd)
        return -errno.EINVAL
    if ctx.zflag and len(args) != 2:
        out("-z supports only a single length parameter\n")
        return -errno.EINVAL
    if flags & BDRV_REQ_MAY_UNMAP and not ctx.zflag:
        out("-u requires -z to be specified\n")
        return -errno.EINVAL
    ret, ctx.offset, count = parse_offset_count(args[:2] if ctx.zflag else args[:1], io.prog)
    if ret < 0:
        return ret
    stats = blk_get_stats(io.blk)
    if ctx.zflag:
        ctx.size = count
        ctx.t1 = _now()
        block_acct_start(stats, ctx.acct, count, BLOCK_ACCT_WRITE)
        blk_aio_pwrite_zeroes(io.blk, ctx.offset, count, flags,
                              aio_write_done, ctx)
        return 0
    made = create_iovec(io, args[1:], pattern)
    if made is None:
        block_acct_invalid(stats, BLOCK_ACCT_WRITE)
        return -errno.EINVAL
    ctx.qiov, ctx.buf = made
    ctx.size = ctx.qiov.size
    ctx.t1 = _now()
    block_acct_start(stats, ctx.acct, ctx.size, BLOCK_ACCT_WRITE)
    blk_aio_pwritev(io.blk, ctx.offset, ctx.qiov, flags, aio_write_done, ctx)
    return 0


aio_write_cmd = cmdinfo_t("aio_write", aio_write_f, argmin=2, argmax=-1,
                          perm=CMD_PERM_WRITE,
                          args="[-Cfiquz] [-P pattern] off len [len..]",
                          oneline="asynchronously writes a number of bytes",
                          help=H.AIO_WRITE_HELP)


def aio_flush_f(io: QemuIO, argv: list[str]) -> int:
    """Wait for every outstanding request.  QEMU: aio_flush_f (blk_drain_all)."""
    from gqemu.block import BLOCK_ACCT_FLUSH
    stats = blk_get_stats(io.blk)
    cookie = BlockAcctCookie()
    block_acct_start(stats, cookie, 0, BLOCK_ACCT_FLUSH)
    blk_drain(io.blk)
    block_acct_done(stats, cookie)
    return 0


aio_flush_cmd = cmdinfo_t("aio_flush", aio_flush_f,
                          oneline="completes all outstanding aio requests")

VEC_COMMANDS = [readv_cmd, writev_cmd, aio_read_cmd, aio_write_cmd,
                aio_flush_cmd]
