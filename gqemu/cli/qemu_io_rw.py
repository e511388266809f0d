"""qemu-io's data commands: read, readv, write, writev, aio_read, aio_write,
aio_flush.

Each ``*_f(io, argv) -> int`` parses its options with glibc ``getopt``
semantics, issues the request through the BlockBackend, and prints what
QEMU 7.2's qemu-io prints.  Returns 0 or -errno, which decides the exit
status.  Synchronous commands wait by polling the AioContext, as qemu-io
does; ``aio_*`` completions print whenever the loop next runs (the next
synchronous command, ``aio_flush``, ``close`` or exit).

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (read_f, readv_f, write_f, writev_f, aio_read_f,
aio_write_f, aio_flush_f, create_iovec, do_* helpers).
"""
from __future__ import annotations

import errno
import time
from typing import Any, Optional

from gqemu.block import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP, BLOCK_ACCT_READ,
                         BLOCK_ACCT_WRITE, BlockAcctCookie, BlockError,
                         QEMUIOVector, blk_aio_preadv, blk_aio_pwrite_zeroes,
                         blk_aio_pwritev, blk_bs, blk_drain, blk_get_aio_context,
                         blk_get_stats, blk_prw, blk_pwrite, blk_pwrite_zeroes,
                         block_acct_done, block_acct_failed, block_acct_invalid,
                         block_acct_start, qemu_iovec_add)
from gqemu.block.block_backend import blk_check_byte_request
from gqemu.cli.qemu_io_util import (BDRV_REQUEST_MAX_BYTES, BDRV_SECTOR_SIZE,
                                    CMD_PERM_WRITE, Getopt, cmdinfo_t, cvtnum,
                                    dump_buffer, out, parse_pattern,
                                    print_cvtnum_err, print_report,
                                    qemuio_command_usage, strerror)
from gqemu.cli import qemu_io_help as H

NOT_DONE = 0x7fffffff
BDRV_REQ_NO_FALLBACK = 0x100        # QEMU 7.2 flag; gqemu's io.py ignores it
# Above this size a buffer is only allocated once the request is known to be
# in range, so 'read 0 2G' on a small image fails fast instead of eating RAM.
_LAZY_ALLOC = 64 << 20


def _now() -> int:
    return time.monotonic_ns()


def _wait(io: Any, box: list) -> None:
    """Run the loop until ``box[0]`` is set.  QEMU: main_loop_wait loop."""
    from gqemu.aio import aio_wait_while
    aio_wait_while(blk_get_aio_context(io.blk), lambda: box[0] == NOT_DONE)


def _precheck(io: Any, offset: int, count: int) -> int:
    if count > _LAZY_ALLOC:
        return blk_check_byte_request(io.blk, offset, count)
    return 0


def _verify(buf: Any, start: int, n: int, pattern: int) -> bool:
    return bytes(buf[start:start + n]) == bytes((pattern,)) * n


# ------------------------------------------------------------------ read


def read_f(io: Any, argv: list[str]) -> int:
    """QEMU: read_f."""
    cflag = qflag = vflag = pflag = sflag = lflag = bflag = False
    pattern = 0
    pattern_offset = pattern_count = 0
    g = Getopt(argv, "bCl:pP:qs:v")
    for c, optarg in g:
        if c == "b":
            bflag = True
        elif c == "C":
            cflag = True
        elif c == "l":
            lflag = True
            pattern_count = cvtnum(optarg or "", io.prog)
            if pattern_count < 0:
                print_cvtnum_err(pattern_count, optarg or "")
                return pattern_count
        elif c == "p":
            pass
        elif c == "P":
            pflag = True
            pattern = parse_pattern(optarg or "")
            if pattern < 0:
                return -errno.EINVAL
        elif c == "q":
            qflag = True
        elif c == "s":
            sflag = True
            pattern_offset = cvtnum(optarg or "", io.prog)
            if pattern_offset < 0:
                print_cvtnum_err(pattern_offset, optarg or "")
                return pattern_offset
        elif c == "v":
            vflag = True
        else:
            qemuio_command_usage(read_cmd)
            return -errno.EINVAL
    args = g.args
    if len(args) != 2:
        qemuio_command_usage(read_cmd)
        return -errno.EINVAL
    offset = cvtnum(args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, args[0])
        return offset
    count = cvtnum(args[1], io.prog)
    if count < 0:
        print_cvtnum_err(count, args[1])
        return count
    if count > BDRV_REQUEST_MAX_BYTES:
        out("length cannot exceed %d, given %s\n"
            % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    if not pflag and (lflag or sflag):
        qemuio_command_usage(read_cmd)
        return -errno.EINVAL
    if not lflag:
        pattern_count = count - pattern_offset
    if pattern_count < 0 or pattern_count + pattern_offset > count:
        out("pattern verification range exceeds end of read data\n")
        return -errno.EINVAL
    if bflag:
        if offset % BDRV_SECTOR_SIZE:
            out("%d is not a sector-aligned value for 'offset'\n" % offset)
            return -errno.EINVAL
        if count % BDRV_SECTOR_SIZE:
            out("%d is not a sector-aligned value for 'count'\n" % count)
            return -errno.EINVAL

    ret = _precheck(io, offset, count)
    buf = bytearray((0xab,)) * count if ret == 0 else bytearray()
    t1 = _now()
    if ret < 0:
        pass
    elif bflag:
        ret = -errno.ENOTSUP            # gqemu has no vmstate area
    else:
        ret = blk_prw(io.blk, offset, buf, count, False)
        ret = ret if ret < 0 else 1
    t2 = _now()
    if ret < 0:
        out("read failed: %s\n" % strerror(-ret))
        return ret
    cnt, ret = ret, 0
    if pflag and not _verify(buf, pattern_offset, pattern_count, pattern):
        out("Pattern verification failed at offset %d, %d bytes\n"
            % (offset + pattern_offset, pattern_count))
        ret = -errno.EINVAL
    if qflag:
        return ret
    if vflag:
        dump_buffer(buf, offset, count)
    print_report("read", t2 - t1, offset, count, count, cnt, cflag)
    return ret


read_cmd = cmdinfo_t("read", read_f, altname="r", argmin=2, argmax=-1,
                     args="[-abCqv] [-P pattern [-s off] [-l len]] off len",
                     oneline="reads a number of bytes at a specified offset",
                     help=H.READ_HELP)


# -------------------------------------------------------- vectored I/O


def create_iovec(io: Any, args: list[str],
                 pattern: int) -> Optional[tuple[QEMUIOVector, bytearray]]:
    """One buffer filled with ``pattern``, cut into the given lengths.
    Prints the problem and returns None on a bad length.
    QEMU: create_iovec."""
    sizes = []
    count = 0
    for arg in args:
        n = cvtnum(arg, io.prog)
        if n < 0:
            print_cvtnum_err(n, arg)
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
    buf = bytearray((pattern,)) * count
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


def readv_f(io: Any, argv: list[str]) -> int:
    """QEMU: readv_f (blk_aio_preadv, then wait)."""
    opts: dict = {}
    args = _vector_opts(argv, "CP:qv", readv_cmd, opts)
    if args is None:
        return int(opts["ret"])
    offset = cvtnum(args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, args[0])
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


def writev_f(io: Any, argv: list[str]) -> int:
    """QEMU: writev_f (blk_aio_pwritev, then wait)."""
    opts: dict = {}
    args = _vector_opts(argv, "CfqP:", writev_cmd, opts)
    if args is None:
        return int(opts["ret"])
    flags = BDRV_REQ_FUA if opts.get("f") else 0
    offset = cvtnum(args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, args[0])
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


# ----------------------------------------------------------------- write


def _pattern_from_file(name: str, count: int) -> Optional[bytearray]:
    """The file's bytes repeated to ``count``.  QEMU: qemu_io_alloc_from_file."""
    try:
        with open(name, "rb") as f:
            data = f.read(count)
    except OSError as e:
        out_err("%s: %s\n" % (name, e.strerror))
        return None
    if not data:
        out_err("%s: file is empty\n" % name)
        return None
    reps = -(-count // len(data))
    return bytearray((data * reps)[:count])


def out_err(s: str) -> None:
    from gqemu.cli.qemu_io_util import err
    err(s)


def write_f(io: Any, argv: list[str]) -> int:
    """QEMU: write_f."""
    cflag = qflag = bflag = pflag = zflag = compress = sflag = False
    flags = 0
    pattern = 0xcd
    file_name = ""
    g = Getopt(argv, "bcCfnpP:qs:uz")
    for c, optarg in g:
        if c == "b":
            bflag = True
        elif c == "c":
            compress = True
        elif c == "C":
            cflag = True
        elif c == "f":
            flags |= BDRV_REQ_FUA
        elif c == "n":
            flags |= BDRV_REQ_NO_FALLBACK
        elif c == "p":
            pass
        elif c == "P":
            pflag = True
            pattern = parse_pattern(optarg or "")
            if pattern < 0:
                return -errno.EINVAL
        elif c == "q":
            qflag = True
        elif c == "s":
            sflag = True
            file_name = optarg or ""
        elif c == "u":
            flags |= BDRV_REQ_MAY_UNMAP
        elif c == "z":
            zflag = True
        else:
            qemuio_command_usage(write_cmd)
            return -errno.EINVAL
    args = g.args
    if len(args) != 2:
        qemuio_command_usage(write_cmd)
        return -errno.EINVAL
    if bflag and zflag:
        out("-b and -z cannot be specified at the same time\n")
        return -errno.EINVAL
    if flags & BDRV_REQ_FUA and (bflag or compress):
        out("-f and -b or -c cannot be specified at the same time\n")
        return -errno.EINVAL
    if flags & BDRV_REQ_NO_FALLBACK and not zflag:
        out("-n requires -z to be specified\n")
        return -errno.EINVAL
    if flags & BDRV_REQ_MAY_UNMAP and not zflag:
        out("-u requires -z to be specified\n")
        return -errno.EINVAL
    if zflag + pflag + sflag > 1:
        out("Only one of -z, -P, and -s can be specified at the same time\n")
        return -errno.EINVAL
    offset = cvtnum(args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, args[0])
        return offset
    count = cvtnum(args[1], io.prog)
    if count < 0:
        print_cvtnum_err(count, args[1])
        return count
    if count > BDRV_REQUEST_MAX_BYTES and not flags & BDRV_REQ_NO_FALLBACK:
        out("length cannot exceed %d without -n, given %s\n"
            % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    if bflag or compress:
        if offset % BDRV_SECTOR_SIZE:
            out("%d is not a sector-aligned value for 'offset'\n" % offset)
            return -errno.EINVAL
        if count % BDRV_SECTOR_SIZE:
            out("%d is not a sector-aligned value for 'count'\n" % count)
            return -errno.EINVAL

    ret = 0 if zflag else _precheck(io, offset, count)
    data: Any = None
    if ret == 0 and not zflag:
        if sflag:
            data = _pattern_from_file(file_name, count)
            if data is None:
                return -errno.EINVAL
        else:
            data = bytes((pattern,)) * count
    t1 = _now()
    if ret < 0:
        pass
    elif bflag:
        ret = -errno.ENOTSUP            # gqemu has no vmstate area
    elif zflag:
        ret = blk_pwrite_zeroes(io.blk, offset, count, flags)
    elif compress:
        ret = do_write_compressed(io, offset, data)
    else:
        try:
            blk_pwrite(io.blk, offset, data, flags)
        except BlockError as e:
            ret = -e.errno
    t2 = _now()
    if ret < 0:
        out("write failed: %s\n" % strerror(-ret))
        return ret
    if qflag:
        return 0
    print_report("wrote", t2 - t1, offset, count, count, 1, cflag)
    return 0


def do_write_compressed(io: Any, offset: int, data: bytes) -> int:
    """Drivers without a compressed-write slot give -ENOTSUP.
    QEMU: blk_pwrite_compressed -> bdrv_driver_pwritev_compressed."""
    from gqemu.block import BDRV_REQ_WRITE_COMPRESSED
    bs = blk_bs(io.blk)
    if bs is None or bs.drv is None or bs.drv.bdrv_co_pwritev_compressed is None:
        return -errno.ENOTSUP
    try:
        blk_pwrite(io.blk, offset, data, BDRV_REQ_WRITE_COMPRESSED)
    except BlockError as e:
        return -e.errno
    return 0


write_cmd = cmdinfo_t("write", write_f, altname="w", argmin=2, argmax=-1,
                      perm=CMD_PERM_WRITE,
                      args="[-bcCfnquz] [-P pattern | -s source_file] off len",
                      oneline="writes a number of bytes at a specified offset",
                      help=H.WRITE_HELP)


# ------------------------------------------------------------------- AIO


class aio_ctx:
    """One outstanding aio_read/aio_write.  QEMU: struct aio_ctx."""

    def __init__(self, io: Any) -> None:
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


def aio_read_f(io: Any, argv: list[str]) -> int:
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
    ctx.offset = cvtnum(args[0], io.prog)
    if ctx.offset < 0:
        print_cvtnum_err(ctx.offset, args[0])
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


def aio_write_f(io: Any, argv: list[str]) -> int:
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
    ctx.offset = cvtnum(args[0], io.prog)
    if ctx.offset < 0:
        print_cvtnum_err(ctx.offset, args[0])
        return ctx.offset
    stats = blk_get_stats(io.blk)
    if ctx.zflag:
        count = cvtnum(args[1], io.prog)
        if count < 0:
            print_cvtnum_err(count, args[1])
            return count
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


def aio_flush_f(io: Any, argv: list[str]) -> int:
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

RW_COMMANDS = [read_cmd, readv_cmd, write_cmd, writev_cmd, aio_read_cmd,
               aio_write_cmd, aio_flush_cmd]
