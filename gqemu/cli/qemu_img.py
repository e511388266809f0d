"""``gqemu-img``: qemu-img's create, info, check, map, compare, convert,
snapshot, measure, resize, rebase, commit, dd and amend, with its options, output
lines and exit codes (resize, rebase, commit, dd and amend live in
``qemu_img_<command>.py``).

It names itself after ``argv[0]``; every error is ``<prog>: <message>``
(qemu-img's second lines too: ``Try '... --help'``, QemuOpts hints) and a
non-zero exit, never a traceback.  The block
layer is imported only once a command needs it, so ``--help`` and usage
errors start fast.  ``convert`` is in
``qemu_img_convert.py`` (its copy engine in ``qemu_img_copy.py``), ``compare``
in ``qemu_img_compare.py``, ``map`` in ``qemu_img_map.py``; output helpers in ``qemu_img_out.py``;
what every command shares (errors, parsing, img_open) in
``qemu_img_tool.py``.  This dispatcher is the top: the command modules
import only ``qemu_img_tool`` (and each other downward), never this module.
Sizes are parsed by ``gqemu.cutils.qemu_strtosz``, QEMU's one parser.

QEMU: qemu-img.c (7.2 output formats).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable, Optional

from gqemu.cli import qemu_img_tool
from gqemu.cli.tool_run import (tool_buffer_stdout, tool_run_begin, tool_run_end,
                                tool_run_entering, tool_run_exiting)
from gqemu.cli.qemu_img_tool import (ImgError, blk_close, cvtnum, error_report, img_open,
                                     option_size, parse_args, parse_o, usage_error)

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend

HELP = """%(prog)s version %(version)s (gqemu)
usage: %(prog)s [standard options] command [command options]
QEMU disk image utility

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] filename
  commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
  create [-q] [-f fmt] [-b backing_file] [-F backing_fmt] [-o options] filename [size]
  compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [--target-is-zero] [-U] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W] [--salvage] filename output_filename
  dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  info [-f fmt] [--output=ofmt] [--backing-chain] filename
  map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]
  rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename
  resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  snapshot [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename

Command parameters:
  'filename' is a disk image filename
  'fmt' is the disk image format. It is guessed automatically in most cases
  'size' is the disk image size in bytes. Optional suffixes 'k' or 'K'
    (kilobyte, 1024), 'M' (megabyte), 'G' (gigabyte), 'T' (terabyte),
    'P' (petabyte) and 'E' (exabyte) are supported
  'output_filename' is the destination disk image filename
  'output_fmt' is the destination format
  'options' is a comma separated list of format specific options:
    cluster_size, compat, backing_file, backing_fmt, preallocation,
    lazy_refcounts, refcount_bits, extended_l2
  '-c' indicates that target image must be compressed (qcow2 format only)
  '-p' show progress of command (only certain commands)
  '-q' use Quiet mode - do not print any output (except errors)
  '-r' tries to repair any inconsistencies found during the check
  '--output' takes the format in which the output must be done (human or json)

Parameters to snapshot subcommand:
  'snapshot' is the name of the snapshot to create, apply or delete
  '-a' applies a snapshot (revert disk to saved state)
  '-c' creates a snapshot
  '-d' deletes a snapshot
  '-l' lists all snapshots in the given image

Parameters to compare subcommand:
  '-f' first image format
  '-F' second image format
  '-s' run in Strict mode - fail on different image size or sector allocation

Supported formats: %(formats)s
"""


# ------------------------------------------------------------------ create


def img_create(argv: list[str]) -> int:
    """QEMU: img_create."""
    opts, args = parse_args(argv, "hf:b:F:o:qu", ["help", "object="])
    fmt, backing, backing_fmt, quiet = "raw", None, None, False
    olist: list[str] = []
    unsafe = False
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "-b":
            backing = v
        elif o == "-F":
            backing_fmt = v
        elif o == "-o":
            qemu_img_tool.accumulate_options(olist, v)
        elif o == "-q":
            quiet = True
        elif o == "-u":
            unsafe = True
    if olist and qemu_img_tool.has_help_option(",".join(olist)):
        from gqemu.cli.qemu_img_opts_help import print_block_option_help
        return print_block_option_help(args[0] if args else None, fmt)
    if not args:
        raise usage_error("Expecting image file name")
    if len(args) > 2:
        raise usage_error("Unexpected argument: %s" % args[2])
    filename = args[0]
    o = parse_o(olist)
    size: Optional[int] = cvtnum("image size", args[1]) if len(args) > 1 else None
    if "size" in o:
        osize = option_size("size", o.pop("size"), filename)
        if size is not None:
            raise ImgError("%s: The image size must be specified only once" % filename)
        size = osize
    if fmt != "raw":        # raw's create options have no backing keys
        backing = o.pop("backing_file", backing)
        backing_fmt = o.pop("backing_fmt", backing_fmt)
    from gqemu.cli.qemu_img_create import create_image
    create_image(filename, fmt, size, backing, backing_fmt, o, quiet,
                 open_backing=not unsafe)
    return 0


# -------------------------------------------------------------------- info


def _display_name(blk: BlockBackend, filename: str, image_opts: bool) -> str:
    """The name ``info`` shows: for a ``json:``, ``--image-opts`` or
    ``file:`` name, the graph's (refresh_filename.py).
    QEMU: bdrv_refresh_filename."""
    if not filename.startswith(("json:", "file:")) and not image_opts:
        return filename
    from gqemu.block import blk_bs
    from gqemu.block.refresh_filename import bdrv_refresh_filename
    return bdrv_refresh_filename(blk_bs(blk)) or filename


def img_info(argv: list[str]) -> int:
    """QEMU: img_info."""
    opts, args = parse_args(argv, "f:hU", ["output=", "backing-chain", "help",
                                            "force-share", "image-opts", "object="])
    fmt, output, chain, image_opts, force_share = None, "human", False, False, False
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o == "-f":
            fmt = v
        elif o == "--output":
            output = v
        elif o == "--backing-chain":
            chain = True
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    from gqemu.block.driver import BDRV_O_NO_BACKING, BDRV_O_NO_IO
    from gqemu.cli.qemu_img_out import dump_info, image_info
    infos = []
    filename: Optional[str] = args[0]
    seen = set()
    while filename:
        if os.path.realpath(filename) in seen:
            raise ImgError("Backing file '%s' creates an infinite loop." % filename)
        seen.add(os.path.realpath(filename))
        blk = img_open(filename, fmt, False, BDRV_O_NO_BACKING | BDRV_O_NO_IO,
                       image_opts=image_opts,
                       force_share=force_share)
        try:
            info = image_info(blk, _display_name(blk, filename, image_opts))
        finally:
            blk_close(blk)
        infos.append(info)
        image_opts = False
        if not chain:
            break
        filename = info.get("full-backing-filename")
        fmt = info.get("backing-filename-format")
    dump_info(infos, output, chain)
    return 0


# ------------------------------------------------------------------- check


def img_check(argv: list[str]) -> int:
    """QEMU: img_check (exit 0 clean, 1 failed, 2 corrupt, 3 leaks, 63 n/a)."""
    opts, args = parse_args(argv, "hf:r:qU", ["output=", "repair=", "help",
                                               "force-share", "object=", "image-opts"])
    fmt, output, fix, quiet, image_opts, force_share = None, "human", 0, False, False, False
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o == "-f":
            fmt = v
        elif o == "--output":
            output = v
        elif o in ("-r", "--repair"):
            if v == "leaks":
                fix = 1
            elif v == "all":
                fix = 3
            else:
                raise usage_error("Unknown option value for -r "
                                  "(expecting 'leaks' or 'all'): %s" % v)
        elif o == "-q":
            quiet = True
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    from gqemu.block.driver import BDRV_O_CHECK
    from gqemu.cli.qemu_img_out import run_check
    blk = img_open(args[0], fmt, bool(fix), BDRV_O_CHECK, image_opts=image_opts,
                   force_share=force_share)
    try:
        return run_check(blk, args[0], fix, output, quiet, error_report)
    finally:
        blk_close(blk)


# ---------------------------------------------------------------- snapshot


def img_snapshot(argv: list[str]) -> int:
    """QEMU: img_snapshot."""
    opts, args = parse_args(argv, "la:c:d:hqU", ["help", "force-share", "object=",
                                                  "image-opts"])
    action, name, quiet, image_opts = None, None, False, False
    for o, v in opts:
        if o == "--image-opts":
            image_opts = True
        elif o in ("-l", "-a", "-c", "-d"):
            if action is not None:
                raise ImgError("Cannot mix '-l', '-a', '-c', '-d'")
            action, name = o, v
        elif o == "-q":
            quiet = True
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    from gqemu.cli.qemu_img_out import snapshot_action
    # no action: QEMU opens the image read-write and does nothing
    blk = img_open(args[0], None, action != "-l", image_opts=image_opts)
    try:
        return snapshot_action(blk, action, name or "", quiet) if action else 0
    finally:
        blk_close(blk)


def _convert(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_convert import img_convert
    return img_convert(argv)


def _compare(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_compare import img_compare
    return img_compare(argv)


def _resize(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_resize import img_resize
    return img_resize(argv)


def _rebase(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_rebase import img_rebase
    return img_rebase(argv)


def _commit(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_commit import img_commit
    return img_commit(argv)


def _dd(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_dd import img_dd
    return img_dd(argv)


def _amend(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_amend import img_amend
    return img_amend(argv)


def _measure(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_measure import img_measure
    return img_measure(argv)


def _bitmap(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_bitmap import img_bitmap
    return img_bitmap(argv)


def _bench(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_bench import img_bench
    return img_bench(argv)


def _map(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_map import img_map
    return img_map(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "create": img_create, "info": img_info, "check": img_check, "map": _map,
    "compare": _compare, "convert": _convert, "snapshot": img_snapshot,
    "resize": _resize, "rebase": _rebase, "commit": _commit, "dd": _dd,
    "amend": _amend, "measure": _measure, "bitmap": _bitmap, "bench": _bench,
}


def supported_formats() -> str:
    from gqemu.block import bdrv_drivers       # every name, no driver imported
    return " ".join(sorted(bdrv_drivers))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``gqemu-img`` console script; with no ``argv`` it
    is the process's (``sys.exit(main())``)."""
    prog = qemu_img_tool.PROG = os.path.basename(sys.argv[0]) or "gqemu-img"
    entry = argv is None
    if entry:
        tool_run_entering()
    argv = sys.argv[1:] if argv is None else argv
    from gqemu import __version__
    sink = tool_run_begin()
    tool_buffer_stdout()
    try:
        if not argv:
            raise usage_error("Not enough arguments")
        cmd = argv[0]
        fn = COMMANDS.get(cmd)
        if cmd in ("-h", "--help", "help") or (
                fn is not None and any(a in ("-h", "--help") for a in argv[1:])):
            sys.stdout.write(HELP % {"prog": prog, "version": __version__,
                                     "formats": supported_formats()})
            return 0
        if cmd in ("-V", "--version"):
            sys.stdout.write("%s version %s (gqemu)\n" % (prog, __version__))
            return 0
        if fn is None:
            raise usage_error("Command not found: %s" % cmd)
        qemu_img_tool.CMD = cmd
        return fn(argv[1:])
    except qemu_img_tool.HelpExit:
        sys.stdout.write(HELP % {"prog": prog, "version": __version__,
                                 "formats": supported_formats()})
        return 0
    except ImgError as e:
        for line in str(e).split("\n"):
            if line:
                error_report(line)
        sys.stderr.write(e.tail)
        return e.status
    except KeyboardInterrupt:
        error_report("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        error_report("%s: %s" % (getattr(e, "filename", "") or "I/O error", e.strerror or e))
        return 1
    except Exception as e:                      # a bug: still one line, never a traceback
        error_report("internal error: %s: %s" % (type(e).__name__, e))
        return 1
    finally:
        tool_run_end(sink)
        if entry:
            tool_run_exiting()


if __name__ == "__main__":
    sys.exit(main())
