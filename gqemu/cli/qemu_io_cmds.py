"""qemu-io's command table and dispatcher, and the simple commands: help,
flush, discard, length, info.

``qemuio_command(io, line)`` splits a line, checks the argument count and
the write permission, and runs the command; it returns 0 or -errno.  ``io``
is the session (``gqemu.cli.qemu_io.QemuIO``): ``blk``, ``prog`` and the
table of commands.

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import: gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io-cmds.c (command, qemuio_command, help_f, flush_f, discard_f,
length_f, info_f).
"""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any, Optional

from gqemu.block import (BLOCK_ACCT_FLUSH, BlockAcctCookie, BlockError, blk_bs,
                         blk_flush, blk_get_stats, blk_getlength, blk_is_read_only,
                         blk_pdiscard, block_acct_done, block_acct_start)
from gqemu.cli import qemu_io_help as H
from gqemu.cli.qemu_io_misc import MISC_COMMANDS
from gqemu.cli.qemu_io_rw import RW_COMMANDS
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (BDRV_REQUEST_MAX_BYTES, CMD_FLAG_GLOBAL,
                                    CMD_NOFILE_OK, CMD_PERM_RESIZE, CMD_PERM_WRITE,
                                    breakline, cmdinfo_t, cvtstr, err,
                                    error_report, out, parse_offset_count,
                                    print_report, qemuio_command_usage, strerror)
from gqemu.cli.qemu_io_vec import VEC_COMMANDS

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules


# ------------------------------------------------------------- dispatch


def find_command(io: QemuIO, name: str) -> Optional[cmdinfo_t]:
    for ct in io.cmdtab:
        if ct.name == name or (ct.altname and ct.altname == name):
            return ct
    return None


def init_check_command(io: QemuIO, ct: cmdinfo_t) -> bool:
    if ct.flags & CMD_FLAG_GLOBAL:
        return True
    if not ct.flags & CMD_NOFILE_OK and io.blk is None:
        err("no file open, try 'help open'\n")
        return False
    return True


def check_perm(io: QemuIO, ct: cmdinfo_t) -> int:
    """Take the write permission a command needs.  A read-only node refuses,
    as bdrv_check_perm does.  QEMU: command() -> blk_set_perm."""
    if not ct.perm or io.blk is None or blk_bs(io.blk) is None:
        return 0
    if blk_is_read_only(io.blk):
        error_report(io, "Block node is read-only")
        return -errno.EPERM
    from gqemu.block import BLK_PERM_RESIZE, BLK_PERM_WRITE, blk_set_perm
    if io.snapshot_reopened and (not io.blk_write_perm or ct.perm & CMD_PERM_RESIZE and
                                 not io.blk.perm & BLK_PERM_RESIZE):
        # -s after a reopen: QEMU 7.2 opens the unlinked overlay file again
        # for a new permission, which fails (as the reopens, qemu_io_reopen)
        bs = blk_bs(io.blk)
        error_report(io, "Could not open '%s': No such file or directory"
                     % (bs.filename if bs is not None else ""))
        return -errno.ENOENT
    io.blk_write_perm = True            # held from now on (reopen -r gives it up)
    if ct.perm & CMD_PERM_RESIZE:
        want = io.blk.perm | BLK_PERM_WRITE | BLK_PERM_RESIZE
        if want != io.blk.perm:
            try:
                blk_set_perm(io.blk, want, io.blk.shared_perm)
            except BlockError as e:
                error_report(io, e.msg)
                return -e.errno
    return 0


def command(io: QemuIO, ct: cmdinfo_t, argv: list[str]) -> int:
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
    try:
        return ct.cfunc(io, argv)
    except BlockError as e:
        error_report(io, e.msg)
        return -(e.errno or errno.EIO)
    except Exception as e:                  # a gqemu bug: one line, not a traceback
        error_report(io, "internal error in '%s': %s: %s"
                     % (argv[0], type(e).__name__, e))
        return -errno.EIO


def qemuio_command(io: QemuIO, line: str) -> int:
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


def help_f(io: QemuIO, argv: list[str]) -> int:
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


def flush_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: flush_f (blk_flush)."""
    stats = blk_get_stats(io.blk)
    cookie = block_acct_start(stats, BlockAcctCookie(), 0, BLOCK_ACCT_FLUSH)
    try:
        blk_flush(io.blk)
    except BlockError as e:
        return -e.errno
    block_acct_done(stats, cookie)
    return 0


flush_cmd = cmdinfo_t("flush", flush_f, altname="f",
                      oneline="flush all in-core file state to disk")


def discard_f(io: QemuIO, argv: list[str]) -> int:
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
    ret, offset, nbytes = parse_offset_count(args, io.prog)
    if ret < 0:
        return ret
    if nbytes > BDRV_REQUEST_MAX_BYTES:
        out("length cannot exceed %d, given %s\n"
            % (BDRV_REQUEST_MAX_BYTES, args[1]))
        return -errno.EINVAL
    t1 = time.monotonic_ns()
    try:
        ret = blk_pdiscard(io.blk, offset, nbytes)
    except BlockError as e:
        ret = -e.errno
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


def length_f(io: QemuIO, argv: list[str]) -> int:
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
    """QEMU: bdrv_image_info_specific_dump (key: value lines, nested; list
    entries as ``[i]``, dump_qlist)."""
    items = info.items() if isinstance(info, dict) else \
        [("[%d]" % i, v) for i, v in enumerate(info)]
    s = ""
    for key, value in items:
        if isinstance(value, (dict, list)) and not isinstance(value, str):
            s += "%*s%s:\n" % (indent, "", key) + _dump_specific(value, indent + 4)
        else:
            if isinstance(value, bool):
                value = "true" if value else "false"
            s += "%*s%s: %s\n" % (indent, "", key, value)
    return s


def info_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: info_f."""
    bs = blk_bs(io.blk)
    drv = bs.drv if bs is not None else None
    if drv is not None and drv.format_name:
        out("format name: %s\n" % drv.format_name)
    if drv is not None and drv.protocol_name:
        out("format name: %s\n" % drv.protocol_name)
    node = bs               # a filter without its own answer asks the node
    while (node is not None and node.drv is not None and node.drv.bdrv_get_info is None
           and node.drv.is_filter and node.file is not None):      # it filters
        node = node.file.bs          # (QEMU 7.2: bdrv_co_get_info, bdrv_filter_bs)
    if drv is None or node is None or node.drv is None or node.drv.bdrv_get_info is None:
        return -errno.ENOTSUP
    bdi = node.drv.bdrv_get_info(node)
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


BASE_COMMANDS = RW_COMMANDS + VEC_COMMANDS + MISC_COMMANDS + [
    help_cmd, flush_cmd, discard_cmd, length_cmd, info_cmd]
