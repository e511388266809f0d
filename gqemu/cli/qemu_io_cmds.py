"""qemu-io's command table, dispatcher and the non-data commands: help,
flush, discard, length, info, alloc, map, truncate, sleep, sigraise, abort
and the blkdebug breakpoint commands.

``qemuio_command(io, line)`` splits a line, checks the argument count and
the write permission, and runs the command; it returns 0 or -errno.  ``io``
is the session (``gqemu.cli.qemu_io.QemuIO``): ``blk``, ``prog`` and the
table of commands.

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (command, qemuio_command, help_f, flush_f, discard_f,
length_f, info_f, alloc_f, map_f, ...).
"""
from __future__ import annotations

import errno
import os
import signal
import time
from typing import Any, Optional

from gqemu.block import (BDRV_BLOCK_DATA, BDRV_BLOCK_RAW, BDRV_BLOCK_ZERO,
                         BLOCK_ACCT_FLUSH, BlockAcctCookie, BlockError,
                         blk_bs, blk_flush, blk_getlength, blk_is_read_only,
                         blk_pdiscard, blk_get_stats, block_acct_done,
                         block_acct_start)
from gqemu.cli.qemu_io_rw import RW_COMMANDS
from gqemu.cli.qemu_io_util import (BDRV_REQUEST_MAX_BYTES, BDRV_SECTOR_SIZE,
                                    CMD_FLAG_GLOBAL, CMD_NOFILE_OK,
                                    CMD_PERM_RESIZE, CMD_PERM_WRITE, Getopt,
                                    breakline, cmdinfo_t, cvtnum, cvtstr, err,
                                    out, print_cvtnum_err, print_report,
                                    qemuio_command_usage, strerror, strtol_ms)
from gqemu.cli import qemu_io_help as H


def error_report(io: Any, msg: str) -> None:
    """QEMU: error_report (the program name, then the message)."""
    err("%s: %s\n" % (io.prog, msg))


# ------------------------------------------------------------- dispatch


def find_command(io: Any, name: str) -> Optional[cmdinfo_t]:
    for ct in io.cmdtab:
        if ct.name == name or (ct.altname and ct.altname == name):
            return ct
    return None


def init_check_command(io: Any, ct: cmdinfo_t) -> bool:
    if ct.flags & CMD_FLAG_GLOBAL:
        return True
    if not ct.flags & CMD_NOFILE_OK and io.blk is None:
        err("no file open, try 'help open'\n")
        return False
    return True


def check_perm(io: Any, ct: cmdinfo_t) -> int:
    """Take the write permission a command needs.  A read-only node refuses,
    as bdrv_check_perm does.  QEMU: command() -> blk_set_perm."""
    if not ct.perm or io.blk is None or blk_bs(io.blk) is None:
        return 0
    if blk_is_read_only(io.blk):
        error_report(io, "Block node is read-only")
        return -errno.EPERM
    if ct.perm & CMD_PERM_RESIZE:
        from gqemu.block import BLK_PERM_RESIZE, BLK_PERM_WRITE, blk_set_perm
        want = io.blk.perm | BLK_PERM_WRITE | BLK_PERM_RESIZE
        if want != io.blk.perm:
            try:
                blk_set_perm(io.blk, want, io.blk.shared_perm)
            except BlockError as e:
                error_report(io, e.msg)
                return -e.errno
    return 0


def command(io: Any, ct: cmdinfo_t, argv: list[str]) -> int:
    """QEMU: command."""
    if not init_check_command(io, ct):
        return -errno.EINVAL
    argc = len(argv) - 1
    if argc < ct.argmin or (ct.argmax != -1 and argc > ct.argmax):
        if ct.argmax == -1:
            err("bad argument count %d to %s, expected at least %d arguments\n"
                % (argc, argv[0], ct.argmin))
        elif ct.argmin == ct.argmax:
            err("bad argument count %d to %s, expected %d arguments\n"
                % (argc, argv[0], ct.argmin))
        else:
            err("bad argument count %d to %s, expected between %d and %d "
                "arguments\n" % (argc, argv[0], ct.argmin, ct.argmax))
        return -errno.EINVAL
    ret = check_perm(io, ct)
    if ret < 0:
        return ret
    return ct.cfunc(io, argv)


def qemuio_command(io: Any, line: str) -> int:
    """Run one command line.  Returns 0 or -errno.  QEMU: qemuio_command."""
    argv = breakline(line)
    if not argv:
        return 0
    ct = find_command(io, argv[0])
    if ct is None:
        err('command "%s" not found\n' % argv[0])
        return -errno.EINVAL
    return command(io, ct, argv)


# ------------------------------------------------------------------ help


def help_oneline(name: str, ct: cmdinfo_t) -> str:
    s = name + " "
    if ct.args is not None:
        s += ct.args + " "
    return s + "-- " + ct.oneline + "\n"


def help_f(io: Any, argv: list[str]) -> int:
    """QEMU: help_f."""
    if len(argv) < 2:
        out("".join(help_oneline(ct.name, ct) for ct in io.cmdtab))
        out("\nUse 'help commandname' for extended help.\n")
        return 0
    ct = find_command(io, argv[1])
    if ct is None:
        out("command %s not found\n" % argv[1])
        return -errno.EINVAL
    out(help_oneline(argv[1], ct) + ct.help)
    return 0


help_cmd = cmdinfo_t("help", help_f, altname="?", argmin=0, argmax=1,
                     flags=CMD_FLAG_GLOBAL, args="[command]",
                     oneline="help for one or all commands")


# ------------------------------------------------------- simple commands


def flush_f(io: Any, argv: list[str]) -> int:
    """QEMU: flush_f (blk_flush)."""
    stats = blk_get_stats(io.blk)
    cookie = block_acct_start(stats, BlockAcctCookie(), 0, BLOCK_ACCT_FLUSH)
    ret = blk_flush(io.blk)
    if ret >= 0:
        block_acct_done(stats, cookie)
    return ret


flush_cmd = cmdinfo_t("flush", flush_f, altname="f",
                      oneline="flush all in-core file state to disk")


def discard_f(io: Any, argv: list[str]) -> int:
    """QEMU: discard_f (blk_pdiscard)."""
    cflag = qflag = False
    g = Getopt(argv, "Cq")
    for c, _ in g:
        if c == "C":
            cflag = True
        elif c == "q":
            qflag = True
        else:
            qemuio_command_usage(discard_cmd)
            return -errno.EINVAL
    args = g.args
    if len(args) != 2:
        qemuio_command_usage(discard_cmd)
        return -errno.EINVAL
    offset = cvtnum(args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, args[0])
        return offset
    nbytes = cvtnum(args[1], io.prog)
    if nbytes < 0:
        print_cvtnum_err(nbytes, args[1])
        return nbytes
    if nbytes > BDRV_REQUEST_MAX_BYTES:
        out("length cannot exceed %d, given %s\n"
            % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    t1 = time.monotonic_ns()
    ret = blk_pdiscard(io.blk, offset, nbytes)
    t2 = time.monotonic_ns()
    if ret < 0:
        out("discard failed: %s\n" % strerror(-ret))
        return ret
    if not qflag:
        print_report("discard", t2 - t1, offset, nbytes, nbytes, 1, cflag)
    return 0


discard_cmd = cmdinfo_t("discard", discard_f, altname="d", argmin=2, argmax=-1,
                        perm=CMD_PERM_WRITE, args="[-Cq] off len",
                        oneline="discards a number of bytes at a specified offset",
                        help=H.DISCARD_HELP)


def length_f(io: Any, argv: list[str]) -> int:
    """QEMU: length_f."""
    size = blk_getlength(io.blk)
    if size < 0:
        out("getlength: %s\n" % strerror(-size))
        return size
    out(cvtstr(size) + "\n")
    return 0


length_cmd = cmdinfo_t("length", length_f, altname="l",
                       oneline="gets the length of the current file")


def _dump_specific(info: Any, indent: int) -> str:
    """QEMU: bdrv_image_info_specific_dump (key: value lines, nested)."""
    items = info.items() if isinstance(info, dict) else info
    s = ""
    for key, value in items:
        if isinstance(value, (dict, list)) and not isinstance(value, str):
            s += "%*s%s:\n" % (indent, "", key) + _dump_specific(value, indent + 4)
        else:
            if isinstance(value, bool):
                value = "true" if value else "false"
            s += "%*s%s: %s\n" % (indent, "", key, value)
    return s


def info_f(io: Any, argv: list[str]) -> int:
    """QEMU: info_f."""
    bs = blk_bs(io.blk)
    drv = bs.drv if bs is not None else None
    if drv is not None and drv.format_name:
        out("format name: %s\n" % drv.format_name)
    if drv is not None and drv.protocol_name:
        out("format name: %s\n" % drv.protocol_name)
    if drv is None or drv.bdrv_get_info is None:
        return -errno.ENOTSUP
    bdi = drv.bdrv_get_info(bs)
    if isinstance(bdi, int):
        return bdi
    out("cluster size: %s\n" % cvtstr(bdi.get("cluster_size", 0)))
    out("vm state offset: %s\n" % cvtstr(bdi.get("vm_state_offset", 0)))
    get_spec = getattr(drv, "bdrv_get_specific_info", None)
    if get_spec is not None:
        spec = get_spec(bs)
        if spec:
            out("Format specific information:\n" + _dump_specific(spec, 4))
    return 0


info_cmd = cmdinfo_t("info", info_f, altname="i",
                     oneline="prints information about the current file")


# ------------------------------------------------------- allocation status


def bdrv_is_allocated(bs: Any, offset: int, nbytes: int) -> tuple[int, int]:
    """Whether [offset, offset+nbytes) starts allocated in ``bs`` itself
    (not its backing file): (1/0 or -errno, bytes with that status).
    Data or zero flags mean allocated; a BDRV_BLOCK_RAW answer asks the
    node below.  QEMU: bdrv_is_allocated (2.8 rules of
    bdrv_co_get_block_status)."""
    from gqemu.block import bdrv_co_get_block_status
    from gqemu.block.io_misc import _run_co
    while True:
        ret, pnum, file = _run_co(bs, bdrv_co_get_block_status, bs, offset,
                                  nbytes)
        if ret < 0:
            return ret, 0
        if ret & BDRV_BLOCK_RAW and file is not None and file is not bs:
            offset = ret & ~(BDRV_SECTOR_SIZE - 1)     # host offset bits
            nbytes = pnum
            bs = file
            continue
        return (1 if ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO) else 0), pnum


def alloc_f(io: Any, argv: list[str]) -> int:
    """QEMU: alloc_f."""
    bs = blk_bs(io.blk)
    start = offset = cvtnum(argv[1], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, argv[1])
        return offset
    if len(argv) == 3:
        count = cvtnum(argv[2], io.prog)
        if count < 0:
            print_cvtnum_err(count, argv[2])
            return count
    else:
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


def map_f(io: Any, argv: list[str]) -> int:
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


def truncate_f(io: Any, argv: list[str]) -> int:
    """Resize the image (preallocation 'off' only).  QEMU: truncate_f."""
    g = Getopt(argv, "m:")
    for c, optarg in g:
        if c == "m":
            if optarg != "off":
                error_report(io, "Invalid preallocation mode '%s'" % optarg)
                return -errno.EINVAL
        else:
            qemuio_command_usage(truncate_cmd)
            return -errno.EINVAL
    if not g.args:
        qemuio_command_usage(truncate_cmd)
        return -errno.EINVAL
    offset = cvtnum(g.args[0], io.prog)
    if offset < 0:
        print_cvtnum_err(offset, argv[1])
        return offset
    from gqemu.block.driver import refresh_total_sectors
    bs: Any = blk_bs(io.blk)
    node: Any = bs
    if node.drv.bdrv_truncate is None and node.drv.format_name == "raw" \
            and node.file is not None:
        if getattr(node.drv, "has_size", False):
            error_report(io, "Cannot resize fixed-size raw disks")
            return -errno.ENOTSUP
        offset += getattr(node.drv, "offset", 0)
        node = node.file.bs               # QEMU: raw_co_truncate
    if node.drv.bdrv_truncate is None:
        error_report(io, "Image format driver does not support resize")
        return -errno.ENOTSUP
    ret = node.drv.bdrv_truncate(node, offset)
    if ret < 0:
        error_report(io, "Failed to resize: %s" % strerror(-ret))
        return ret
    refresh_total_sectors(node, offset >> 9)
    if node is not bs:
        refresh_total_sectors(bs, bs.total_sectors)
    return 0


truncate_cmd = cmdinfo_t("truncate", truncate_f, altname="t", argmin=1,
                         argmax=3, perm=CMD_PERM_WRITE | CMD_PERM_RESIZE,
                         args="[-m prealloc_mode] off",
                         oneline="truncates the current file at the given offset")


def sleep_f(io: Any, argv: list[str]) -> int:
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
    timer_mod(ts, qemu_clock_get_ns(QEMU_CLOCK_HOST) + ms * 1_000_000)
    while not expired[0]:
        aio_poll(ctx, True)
    return 0


sleep_cmd = cmdinfo_t("sleep", sleep_f, argmin=1, argmax=1, flags=CMD_NOFILE_OK,
                      oneline="waits for the given value in milliseconds")


def sigraise_f(io: Any, argv: list[str]) -> int:
    """QEMU: sigraise_f."""
    sig = cvtnum(argv[1], io.prog)
    if sig < 0:
        print_cvtnum_err(sig, argv[1])
        return sig
    if sig > signal.NSIG:
        out("signal argument '%s' is too large to be a valid signal\n" % argv[1])
        return -errno.EINVAL
    import sys
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


def abort_f(io: Any, argv: list[str]) -> int:
    """QEMU: abort_f."""
    import sys
    sys.stdout.flush()
    os.abort()


abort_cmd = cmdinfo_t("abort", abort_f, flags=CMD_NOFILE_OK,
                      oneline="simulate a program crash using abort(3)")


def _debug_f(fmt: str) -> Any:
    """break/remove_break/resume/wait_break: no gqemu driver keeps
    breakpoints, so every node answers -ENOTSUP as QEMU's non-blkdebug
    nodes do.  QEMU: bdrv_debug_breakpoint and friends."""
    def f(io: Any, argv: list[str]) -> int:
        out(fmt.replace("%TAG", argv[1]) % strerror(errno.ENOTSUP) + "\n")
        return -errno.ENOTSUP
    return f


break_cmd = cmdinfo_t("break", _debug_f("Could not set breakpoint: %s"),
                      argmin=2, argmax=2, args="event tag",
                      oneline="sets a breakpoint on event and tags the stopped "
                      "request as tag")
remove_break_cmd = cmdinfo_t("remove_break",
                             _debug_f("Could not remove breakpoint %TAG: %s"),
                             argmin=1, argmax=1, args="tag",
                             oneline="remove a breakpoint by tag")
resume_cmd = cmdinfo_t("resume", _debug_f("Could not resume request: %s"),
                       argmin=1, argmax=1, args="tag",
                       oneline="resumes the request tagged as tag")
wait_break_cmd = cmdinfo_t("wait_break",
                           _debug_f("Could not wait for breakpoint %TAG: %s"),
                           argmin=1, argmax=1, args="tag",
                           oneline="waits for the suspension of a request")

BASE_COMMANDS = RW_COMMANDS + [
    help_cmd, flush_cmd, discard_cmd, length_cmd, info_cmd, alloc_cmd,
    map_cmd, truncate_cmd, sleep_cmd, sigraise_cmd, abort_cmd, break_cmd,
    remove_break_cmd, resume_cmd, wait_break_cmd]
