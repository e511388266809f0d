"""``gqemu-img``: qemu-img's create, info, check, map, compare, convert,
snapshot, measure, resize, rebase, commit, dd and amend, with its options, output
lines and exit codes (resize, rebase, commit, dd and amend live in
``qemu_img_<command>.py``; info, check and snapshot in ``qemu_img_info.py``).

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
from typing import Callable, Optional

from gqemu.cli import qemu_img_tool
from gqemu.cli.tool_run import (tool_buffer_stdout, tool_run_begin, tool_run_end,
                                tool_run_entering, tool_run_exiting)
from gqemu.cli.qemu_img_tool import (ImgError, cvtnum, error_report, option_size, parse_args,
                                     parse_o, usage_error)

HELP = """%(prog)s version %(version)s (gqemu)
usage: %(prog)s [standard options] command [command options]
QEMU disk image utility

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit
    '-T', '--trace'      [[enable=]<pattern>][,events=<file>][,file=<file>]
                         specify tracing options

Command syntax:
  amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap
  check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
  commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename
  compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename
  create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]
  snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename
  rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename
  resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size

Command parameters:
  'filename' is a disk image filename
  'objectdef' is a QEMU user creatable object definition. See the qemu(1)
    manual page for a description of the object properties. The most common
    object type is a 'secret', which is used to supply passwords and/or
    encryption keys.
  'fmt' is the disk image format. It is guessed automatically in most cases
  'cache' is the cache mode used to write the output disk image, the valid
    options are: 'none', 'writeback' (default, except for convert), 'writethrough',
    'directsync' and 'unsafe' (default for convert)
  'src_cache' is the cache mode used to read input disk images, the valid
    options are the same as for the 'cache' option
  'size' is the disk image size in bytes. Optional suffixes
    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),
    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are
    supported. 'b' is ignored.
  'output_filename' is the destination disk image filename
  'output_fmt' is the destination format
  'options' is a comma separated list of format specific options in a
    name=value format. Use -o help for an overview of the options supported by
    the used format
  'snapshot_param' is param used for internal snapshot, format
    is 'snapshot.id=[ID],snapshot.name=[NAME]', or
    '[ID_OR_NAME]'
  '-c' indicates that target image must be compressed (qcow format only)
  '-u' allows unsafe backing chains. For rebasing, it is assumed that old and
       new backing file match exactly. The image doesn't need a working
       backing file before rebasing in this case (useful for renaming the
       backing file). For image creation, allow creating without attempting
       to open the backing file.
  '-h' with or without a command shows this help and lists the supported formats
  '-p' show progress of command (only certain commands)
  '-q' use Quiet mode - do not print any output (except errors)
  '-S' indicates the consecutive number of bytes (defaults to 4k) that must
       contain only zeros for qemu-img to create a sparse image during
       conversion. If the number of bytes is 0, the source will not be scanned for
       unallocated or zero sectors, and the destination image will always be
       fully allocated
  '--output' takes the format in which the output must be done (human or json)
  '-n' skips the target volume creation (useful if the volume is created
       prior to running qemu-img)

Parameters to bitmap subcommand:
  'bitmap' is the name of the bitmap to manipulate, through one or more
       actions from '--add', '--remove', '--clear', '--enable', '--disable',
       or '--merge source'
  '-g granularity' sets the granularity for '--add' actions
  '-b source' and '-F src_fmt' tell '--merge' actions to find the source
       bitmaps from an alternative file

Parameters to check subcommand:
  '-r' tries to repair any inconsistencies that are found during the check.
       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all
       kinds of errors, with a higher risk of choosing the wrong fix or
       hiding corruption that has already occurred.

Parameters to convert subcommand:
  '--bitmaps' copies all top-level persistent bitmaps to destination
  '-m' specifies how many coroutines work in parallel during the convert
       process (defaults to 8)
  '-W' allow to write to the target out of order rather than sequential

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

Parameters to dd subcommand:
  'bs=BYTES' read and write up to BYTES bytes at a time (default: 512)
  'count=N' copy only N input blocks
  'if=FILE' read from FILE
  'of=FILE' write to FILE
  'skip=N' skip N bs-sized blocks at the start of input

Supported formats: %(formats)s

See <https://qemu.org/contribute/report-a-bug> for how to report bugs.
More information on the QEMU project at <https://qemu.org>.
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
    filename = args[0]
    size: Optional[int] = cvtnum("image size", args[1]) if len(args) > 1 else None
    if len(args) > 2:
        raise usage_error("Unexpected argument: %s" % args[2])
    o = parse_o(olist)
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


def img_info(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_info import img_info
    return img_info(argv)


def img_check(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_info import img_check
    return img_check(argv)


def img_snapshot(argv: list[str]) -> int:
    from gqemu.cli.qemu_img_info import img_snapshot
    return img_snapshot(argv)


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


def _global_options(argv: list[str]) -> Optional[list[str]]:
    """The command and its arguments after qemu-img's own options
    (``-h``/``--help``: None, ``-V``/``--version``: ["-V"], ``-T``/``--trace``
    enables events), scanned as main's getopt_long("+:hVT:") does.
    QEMU: qemu-img.c main."""
    from gqemu.cli.qemu_io_getopt import Getopt
    g = Getopt(["qemu-img"] + argv, "+:hVT:", {"help": (False, "h"), "version": (False, "V"),
                                               "trace": (True, "T")})
    for c, v in g:
        if c == "h":
            return None
        if c == "V":
            return ["-V"]
        if c == "T":
            from gqemu.trace import trace_enable_events, trace_init_output
            for item in (v or "").split(","):
                if item and not item.startswith("file="):
                    trace_enable_events(item)
            trace_init_output(sys.stderr, "log")
        elif c == ":":
            raise usage_error("missing argument for option '%s'" % g.argv[g.optind - 1])
        elif c == "?":
            raise usage_error("unrecognized option '%s'" % g.argv[g.optind - 1])
    return g.args


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
        rest = _global_options(argv)
        if rest is None:
            sys.stdout.write(HELP % {"prog": prog, "version": __version__,
                                     "formats": supported_formats()})
            return 0
        if rest == ["-V"]:
            sys.stdout.write("%s version %s (gqemu)\n" % (prog, __version__))
            return 0
        if not rest:
            return 0
        cmd = rest[0]
        fn = COMMANDS.get(cmd)
        if fn is None:
            raise usage_error("Command not found: %s" % cmd)
        qemu_img_tool.CMD = cmd
        argv = rest
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
