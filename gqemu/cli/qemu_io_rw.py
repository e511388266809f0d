"""qemu-io's synchronous data commands: read and write.

Each ``*_f(io, argv) -> int`` parses its options with glibc ``getopt``
semantics, issues the request through the BlockBackend, and prints what
QEMU 7.2's qemu-io prints.  Returns 0 or -errno, which decides the exit
status.  Also the helpers the vectored and aio commands share.

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (read_f, write_f, do_pread, do_pwrite,
do_pwrite_zeroes, do_write_compressed, qemu_io_alloc_from_file).
"""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any, Optional

import gqemu.block as _block
from gqemu.block import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP, BlockError, blk_bs,
                         blk_get_aio_context, blk_prw, blk_pwrite,
                         blk_pwrite_zeroes)
from gqemu.block.block_backend import blk_check_byte_request
from gqemu.cli import qemu_io_help as H
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (BDRV_REQUEST_MAX_BYTES, BDRV_SECTOR_SIZE,
                                    CMD_PERM_WRITE, cmdinfo_t, cvtnum_arg,
                                    dump_buffer, err, out, parse_offset_count,
                                    parse_pattern, print_report,
                                    qemuio_command_usage, strerror)

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules

NOT_DONE = 0x7fffffff
# QEMU 7.2's flag (value 0x100); used from gqemu.block once it defines it.
BDRV_REQ_NO_FALLBACK: int = getattr(_block, "BDRV_REQ_NO_FALLBACK", 0x100)
# Above this size a buffer is only allocated once the request is known to be
# in range, so 'read 0 2G' on a small image fails fast instead of eating RAM.
_LAZY_ALLOC = 64 << 20


def _now() -> int:
    return time.monotonic_ns()


def _wait(io: QemuIO, box: list) -> None:
    """Run the loop until ``box[0]`` is set.  QEMU: main_loop_wait loop."""
    from gqemu.aio import aio_wait_while
    aio_wait_while(blk_get_aio_context(io.blk), lambda: box[0] == NOT_DONE)


def _precheck(io: QemuIO, offset: int, count: int) -> int:
    if count > _LAZY_ALLOC:
        return blk_check_byte_request(io.blk, offset, count)
    return 0


def _verify(buf: Any, start: int, n: int, pattern: int) -> bool:
    """All of buf[start:start+n] equal to ``pattern`` (no copies of a
    bytearray)."""
    if isinstance(buf, memoryview):
        return buf[start:start + n] == bytes((pattern,)) * n
    return buf.count(bytes((pattern,)), start, start + n) == n  # type: ignore[no-any-return]


def qemu_io_alloc(io: QemuIO, count: int, fill: Any) -> Any:
    """A buffer of ``count`` bytes of ``fill`` (a byte value, or bytes of
    that length), aligned as the node's memory must be (page-aligned under
    O_DIRECT, so the request reaches the AIO engines instead of the
    thread pool's bounce buffer, as qemu-io's buffers do in QEMU).
    QEMU: qemu_io_alloc (blk_blockalign)."""
    bs = blk_bs(io.blk) if io.blk is not None else None
    if count and bs is not None and bs.bl.min_mem_alignment > 1:
        from gqemu.block.io_driver import qemu_blockalign
        buf = qemu_blockalign(bs, count)
        buf[:] = bytes((fill,)) * count if isinstance(fill, int) else fill
        return buf
    # one allocation, as before alignment mattered (a 1 GiB read is 1 GiB)
    return bytearray((fill,)) * count if isinstance(fill, int) else bytearray(fill)


# ------------------------------------------------------------------ read


class _ReadArgs:
    """read's options and operands.  QEMU: read_f's locals.  (Class
    attributes are the defaults; a plain class, as a dataclass would
    compile its methods on every one-shot start-up.)"""
    offset: int = 0
    count: int = 0
    bflag: bool = False
    cflag: bool = False
    lflag: bool = False
    pflag: bool = False
    qflag: bool = False
    sflag: bool = False
    vflag: bool = False
    pattern: int = 0
    pattern_offset: int = 0
    pattern_count: int = 0


def _read_options(io: QemuIO, argv: list[str], a: _ReadArgs) -> tuple[int, list[str]]:
    """read's option loop.  Returns (0 or -errno, the operands)."""
    g = Getopt(argv, "bCl:pP:qs:v")
    for c, optarg in g:
        if c == "b":
            a.bflag = True
        elif c == "C":
            a.cflag = True
        elif c == "l":
            a.lflag = True
            a.pattern_count = cvtnum_arg(optarg or "", io.prog)
            if a.pattern_count < 0:
                return a.pattern_count, []
        elif c == "p":
            pass
        elif c == "P":
            a.pflag = True
            a.pattern = parse_pattern(optarg or "")
            if a.pattern < 0:
                return -errno.EINVAL, []
        elif c == "q":
            a.qflag = True
        elif c == "s":
            a.sflag = True
            a.pattern_offset = cvtnum_arg(optarg or "", io.prog)
            if a.pattern_offset < 0:
                return a.pattern_offset, []
        elif c == "v":
            a.vflag = True
        else:
            qemuio_command_usage(read_cmd)
            return -errno.EINVAL, []
    return 0, g.args


def _read_operands(io: QemuIO, args: list[str], a: _ReadArgs) -> int:
    """``off len`` and the checks that need them.  Returns 0 or -errno."""
    if len(args) != 2:
        qemuio_command_usage(read_cmd)
        return -errno.EINVAL
    ret, a.offset, a.count = parse_offset_count(args, io.prog)
    if ret < 0:
        return ret
    if a.count > BDRV_REQUEST_MAX_BYTES:
        out("length cannot exceed %d, given %s\n" % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    if not a.pflag and (a.lflag or a.sflag):
        qemuio_command_usage(read_cmd)
        return -errno.EINVAL
    if not a.lflag:
        a.pattern_count = a.count - a.pattern_offset
    if a.pattern_count < 0 or a.pattern_count + a.pattern_offset > a.count:
        out("pattern verification range exceeds end of read data\n")
        return -errno.EINVAL
    return _check_sector_aligned(a.offset, a.count) if a.bflag else 0


def _check_sector_aligned(offset: int, count: int) -> int:
    """-b and -c requests are in whole sectors.  Returns 0 or -EINVAL."""
    if offset % BDRV_SECTOR_SIZE:
        out("%d is not a sector-aligned value for 'offset'\n" % offset)
        return -errno.EINVAL
    if count % BDRV_SECTOR_SIZE:
        out("%d is not a sector-aligned value for 'count'\n" % count)
        return -errno.EINVAL
    return 0


def read_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: read_f."""
    a = _ReadArgs()
    ret, args = _read_options(io, argv, a)
    if ret == 0:
        ret = _read_operands(io, args, a)
    if ret < 0:
        return ret
    offset, count = a.offset, a.count
    ret = _precheck(io, offset, count)
    buf = qemu_io_alloc(io, count, 0xab) if ret == 0 else bytearray()
    t1 = _now()
    if ret < 0:
        pass
    elif a.bflag:
        ret = do_vmstate(io, offset, buf, False)
    else:
        try:
            blk_prw(io.blk, offset, buf, count, False)
            ret = 1
        except BlockError as e:
            ret = -e.errno
    t2 = _now()
    if ret < 0:
        out("read failed: %s\n" % strerror(-ret))
        return ret
    cnt, ret = ret, 0
    if a.pflag and not _verify(buf, a.pattern_offset, a.pattern_count, a.pattern):
        out("Pattern verification failed at offset %d, %d bytes\n"
            % (offset + a.pattern_offset, a.pattern_count))
        ret = -errno.EINVAL
    if a.qflag:
        return ret
    if a.vflag:
        dump_buffer(buf, offset, count)
    print_report("read", t2 - t1, offset, count, count, cnt, a.cflag)
    return ret


read_cmd = cmdinfo_t("read", read_f, altname="r", argmin=2, argmax=-1,
                     args="[-abCqv] [-P pattern [-s off] [-l len]] off len",
                     oneline="reads a number of bytes at a specified offset",
                     help=H.READ_HELP)


# ----------------------------------------------------------------- write


def _pattern_from_file(name: str, count: int) -> Optional[bytearray]:
    """The file's bytes repeated to ``count``.  QEMU: qemu_io_alloc_from_file."""
    try:
        with open(name, "rb") as f:
            data = f.read(count)
    except OSError as e:
        err("%s: %s\n" % (name, e.strerror))
        return None
    if not data:
        err("%s: file is empty\n" % name)
        return None
    reps = -(-count // len(data))
    return bytearray((data * reps)[:count])


class _WriteArgs:
    """write's options and operands.  QEMU: write_f's locals.  (Plain
    class, defaults as class attributes, as _ReadArgs.)"""
    offset: int = 0
    count: int = 0
    bflag: bool = False
    cflag: bool = False
    compress: bool = False
    pflag: bool = False
    qflag: bool = False
    sflag: bool = False
    zflag: bool = False
    flags: int = 0
    pattern: int = 0xcd
    file_name: str = ""


def _write_options(io: QemuIO, argv: list[str], a: _WriteArgs) -> tuple[int, list[str]]:
    """write's option loop.  Returns (0 or -errno, the operands)."""
    g = Getopt(argv, "bcCfnpP:qs:uz")
    for c, optarg in g:
        if c == "b":
            a.bflag = True
        elif c == "c":
            a.compress = True
        elif c == "C":
            a.cflag = True
        elif c == "f":
            a.flags |= BDRV_REQ_FUA
        elif c == "n":
            a.flags |= BDRV_REQ_NO_FALLBACK
        elif c == "p":
            pass
        elif c == "P":
            a.pflag = True
            a.pattern = parse_pattern(optarg or "")
            if a.pattern < 0:
                return -errno.EINVAL, []
        elif c == "q":
            a.qflag = True
        elif c == "s":
            a.sflag = True
            a.file_name = optarg or ""
        elif c == "u":
            a.flags |= BDRV_REQ_MAY_UNMAP
        elif c == "z":
            a.zflag = True
        else:
            qemuio_command_usage(write_cmd)
            return -errno.EINVAL, []
    return 0, g.args


def _write_operands(io: QemuIO, args: list[str], a: _WriteArgs) -> int:
    """The option combinations, ``off len`` and the checks that need them.
    Returns 0 or -errno."""
    if len(args) != 2:
        qemuio_command_usage(write_cmd)
        return -errno.EINVAL
    for bad, msg in ((a.bflag and a.zflag, "-b and -z cannot be specified at the same time"),
                     (a.flags & BDRV_REQ_FUA and (a.bflag or a.compress),
                      "-f and -b or -c cannot be specified at the same time"),
                     (a.flags & BDRV_REQ_NO_FALLBACK and not a.zflag,
                      "-n requires -z to be specified"),
                     (a.flags & BDRV_REQ_MAY_UNMAP and not a.zflag,
                      "-u requires -z to be specified"),
                     (a.zflag + a.pflag + a.sflag > 1,
                      "Only one of -z, -P, and -s can be specified at the same time")):
        if bad:
            out(msg + "\n")
            return -errno.EINVAL
    ret, a.offset, a.count = parse_offset_count(args, io.prog)
    if ret < 0:
        return ret
    if a.count > BDRV_REQUEST_MAX_BYTES and not a.flags & BDRV_REQ_NO_FALLBACK:
        out("length cannot exceed %d without -n, given %s\n"
            % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    return _check_sector_aligned(a.offset, a.count) if a.bflag or a.compress else 0


def write_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: write_f."""
    a = _WriteArgs()
    ret, args = _write_options(io, argv, a)
    if ret == 0:
        ret = _write_operands(io, args, a)
    if ret < 0:
        return ret
    offset, count = a.offset, a.count
    ret = 0 if a.zflag else _precheck(io, offset, count)
    data: Any = None
    if ret == 0 and not a.zflag:
        if a.sflag:
            data = _pattern_from_file(a.file_name, count)
            if data is None:
                return -errno.EINVAL
            data = qemu_io_alloc(io, count, data)
        else:
            data = qemu_io_alloc(io, count, a.pattern)
    t1 = _now()
    if ret < 0:
        pass
    elif a.bflag:
        ret = do_vmstate(io, offset, data, True)
    elif a.zflag:
        try:
            blk_pwrite_zeroes(io.blk, offset, count, a.flags)
        except BlockError as e:
            ret = -e.errno
    elif a.compress:
        ret = do_write_compressed(io, offset, data)
    else:
        try:
            blk_pwrite(io.blk, offset, data, a.flags)
        except BlockError as e:
            ret = -e.errno
    t2 = _now()
    if ret < 0:
        out("write failed: %s\n" % strerror(-ret))
        return ret
    if not a.qflag:
        print_report("wrote", t2 - t1, offset, count, count, 1, a.cflag)
    return 0


def do_vmstate(io: QemuIO, offset: int, buf: Any, is_write: bool) -> int:
    """Read or write the VM state area through the format driver's
    ``bdrv_co_readv_vmstate``/``bdrv_co_writev_vmstate(bs, qiov, pos)``;
    -ENOTSUP where the driver has none (raw).  Returns 1 or -errno.
    A write is flushed in writethrough mode.
    QEMU: blk_load_vmstate/blk_save_vmstate -> bdrv_co_rw_vmstate."""
    from gqemu.block import bdrv_run_co, qemu_iovec_init_buf
    from gqemu.block.block_int import BDRV_MAX_LENGTH
    bs: Any = blk_bs(io.blk)
    if bs is not None and (offset > BDRV_MAX_LENGTH or len(buf) > BDRV_MAX_LENGTH - offset):
        return -errno.EIO       # QEMU: bdrv_co_{read,write}v_vmstate's bdrv_check_qiov_request
    node, fn = bs, None
    while node is not None and node.drv is not None:
        fn = getattr(node.drv, "bdrv_co_writev_vmstate" if is_write
                     else "bdrv_co_readv_vmstate", None)
        if fn is not None:
            break
        # a node without a vmstate area passes the request to its primary
        # child (a filter's filtered node, a format's file); QEMU:
        # bdrv_co_readv_vmstate/bdrv_co_writev_vmstate, bdrv_primary_bs
        node = node.file.bs if node.file is not None else None
    if fn is None:
        return -errno.ENOTSUP
    ret = int(bdrv_run_co(node, fn, node, qemu_iovec_init_buf(memoryview(buf)), offset))
    if ret >= 0 and is_write and not io.blk.enable_write_cache:
        # writethrough: blk_save_vmstate flushes the node after the write
        from gqemu.block.io_misc import bdrv_co_flush
        ret = int(bdrv_run_co(bs, bdrv_co_flush, bs))
    return ret if ret < 0 else 1


def do_write_compressed(io: QemuIO, offset: int, data: bytes) -> int:
    """Drivers without a compressed-write slot give -ENOTSUP, once the
    request passed the checks of the backend and of io.c (past the end:
    -EIO first).  QEMU: blk_pwrite_compressed -> blk_co_pwritev_part ->
    bdrv_driver_pwritev_compressed."""
    from gqemu.block import BDRV_REQ_WRITE_COMPRESSED
    bs = blk_bs(io.blk)
    if bs is None or bs.drv is None:
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


RW_COMMANDS = [read_cmd, write_cmd]
