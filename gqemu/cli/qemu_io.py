"""``gqemu-io``: QEMU 7.2's qemu-io over gqemu's block layer.

``gqemu-io [-f FMT] [-r] [-n] [-t CACHE] [-c CMD]... [--image-opts] FILE``
runs each ``-c`` command in order (or reads commands from stdin after a
``NAME> `` prompt, with readline history on a terminal) and exits 1 if any
command failed, 0 otherwise, as qemu-io does.  It names itself after
``argv[0]``.  Option parsing, ``-h`` and ``-V`` import nothing from the
block layer, so they start as fast as Python does.

Differences from qemu-io 7.2 (each reports an error instead of acting):
``--object`` of another type than ``secret``.  ``-k``/``-i native`` (which
need ``-t none``, as QEMU's) use Linux AIO (gqemu.block.linux_aio) and
``-i io_uring`` an io_uring ring (gqemu.block.io_uring); gqemu also takes ``-i nowait``, its fast
path.  ``read -b``/
``write -b`` and the breakpoint commands work through QEMU's driver slots
(``bdrv_co_readv/writev_vmstate``, ``bdrv_debug_*``) and answer -ENOTSUP
where no driver has them, as QEMU does on raw; ``wait_break`` then fails at
once instead of waiting forever.  ``-m`` is accepted and has no effect.
``reopen`` joins the new options with the old ones and checks them as
bdrv_reopen does, then closes and opens the node again (docs/block.md).

Must not import at module level: gqemu.block (lazily, once a file or a
command needs it); never gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io.c (main, openfile, open_f, close_f, quit_f, command_loop).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

from gqemu.cli.tool_run import (tool_buffer_stdout, tool_run_begin, tool_run_end,
                                tool_run_entering, tool_run_exiting)
from gqemu.cli.qemu_io_open import (OpenOpts, openfile, parse_open_flag,
                                    parse_qemu_opts)
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import HasProg, error_report, out

USAGE = """\
Usage: %(p)s [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser

  --object OBJECTDEF   define an object such as 'secret' for
                       passwords and/or encryption keys
  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -s, --snapshot       use snapshot file
  -n, --nocache        disable host cache, short for -t none
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT
  -k, --native-aio     use kernel AIO implementation
                       (Linux only, prefer use of -i)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring)
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                       specify tracing options
                       see qemu-img(1) man page for full description
  -U, --force-share    force shared permissions
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See '%(p)s -c help' for information on available commands.

See <https://qemu.org/contribute/report-a-bug> for how to report bugs.
More information on the QEMU project at <https://qemu.org>.
"""

SOPT = "hVc:d:f:rsnCmki:t:T:U"
LOPT: dict[str, tuple[bool, str]] = {
    "help": (False, "h"), "version": (False, "V"), "cmd": (True, "c"),
    "format": (True, "f"), "read-only": (False, "r"), "snapshot": (False, "s"),
    "nocache": (False, "n"), "copy-on-read": (False, "C"),
    "misalign": (False, "m"), "native-aio": (False, "k"), "aio": (True, "i"),
    "discard": (True, "d"), "cache": (True, "t"), "trace": (True, "T"),
    "object": (True, "O"), "image-opts": (False, "I"),
    "force-share": (False, "U"),
}


class QemuIO:
    """One qemu-io session: the open BlockBackend and the command table."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.blk: Any = None
        self.quit = False
        self.image_opts = False
        # QEMU's generated name of the root node ('#block' + a running count
        # of unnamed nodes + two random digits), that count, and whether the
        # session holds write permission on the node (reopen -r gives it up)
        self.root_node_name = "#block100"
        self.node_ids = 0
        self.blk_write_perm = True
        self.snapshot_reopened = False     # -s: a reopen succeeded (qemu_io_open)
        from gqemu.cli.qemu_io_cmds import BASE_COMMANDS
        from gqemu.cli.qemu_io_open import close_cmd, open_cmd, quit_cmd
        from gqemu.cli.qemu_io_reopen import reopen_cmd
        self.opened: tuple[Optional[str], OpenOpts] = (None, OpenOpts())
        self.cmdtab = sorted(BASE_COMMANDS + [quit_cmd, open_cmd, close_cmd,
                                              reopen_cmd],
                             key=lambda ct: ct.name)


# ------------------------------------------------------------------ loop


def _poll_once(io: QemuIO) -> None:
    """Let finished aio requests report while waiting for input.
    QEMU: main_loop_wait in command_loop."""
    if io.blk is not None:
        from gqemu.aio import aio_poll
        from gqemu.block import blk_get_aio_context
        try:
            aio_poll(blk_get_aio_context(io.blk), False)
        except Exception as e:              # a gqemu bug: one line, not a traceback
            error_report(io, "internal error: %s: %s" % (type(e).__name__, e))


def _fetchline(io: QemuIO, tty: bool) -> Optional[str]:
    prompt = "%s> " % io.prog
    if tty:
        _poll_once(io)
        try:
            return input(prompt)
        except EOFError:
            out("\n")
            return None
    out(prompt)
    sys.stdout.flush()
    _poll_once(io)
    line = sys.stdin.readline()
    if not line:
        return None
    return line[:-1] if line.endswith("\n") else line


def _setup_readline(io: QemuIO) -> None:
    """History and command-name completion.  QEMU: readline_init."""
    try:
        import readline
    except ImportError:
        return
    names = [ct.name for ct in io.cmdtab]

    def complete(text: str, state: int) -> Optional[str]:
        matches = [n for n in names if n.startswith(text)]
        return matches[state] if state < len(matches) else None
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")


def command_loop(io: QemuIO, cmdline: list[str]) -> int:
    """Returns the last failing command's -errno, or 0.  QEMU: command_loop."""
    from gqemu.cli.qemu_io_cmds import qemuio_command
    last_error = 0
    if cmdline:
        for line in cmdline:
            if io.quit:
                break
            ret = qemuio_command(io, line)
            if ret < 0:
                last_error = ret
        return last_error
    tty = sys.stdin.isatty()
    if tty:
        _setup_readline(io)
    while not io.quit:
        input_line = _fetchline(io, tty)
        if input_line is None:
            break
        ret = qemuio_command(io, input_line)
        if ret < 0:
            last_error = ret
    return last_error


# ------------------------------------------------------------------ main


def usage(prog: str) -> None:
    out(USAGE % {"p": prog})


def _version(prog: str) -> None:
    from gqemu import __version__
    out("%s version %s (gqemu), modelled on qemu-io 7.2\n" % (prog, __version__))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the ``gqemu-io`` console script; with no ``argv`` it is
    the process's (``sys.exit(main())``)."""
    entry = argv is None
    if entry:
        tool_run_entering()
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else "gqemu-io"
    sink = tool_run_begin()
    try:
        return _main(prog, argv)
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    finally:            # _main installs qemu-io's sink
        tool_run_end(sink)
        if entry:
            tool_run_exiting()


def _main(prog: str, argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # die on ^C, as qemu-io
    tool_buffer_stdout()
    o = OpenOpts()
    cmdline: list[str] = []
    fmt: Optional[str] = None
    image_opts = False
    traces: list[str] = []
    io_err = _ErrIO(prog)
    g = Getopt(argv, SOPT, LOPT)     # glibc names argv[0] as given
    for c, optarg in g:
        ret = parse_open_flag(io_err, o, c, optarg)
        if ret < 0:
            return 1
        if ret == 0:
            continue
        if c == "f":
            fmt = optarg
        elif c == "c":
            cmdline.append(optarg or "")
        elif c == "m":
            pass                        # Python buffers carry no alignment
        elif c == "T":
            traces.append(optarg or "")
        elif c == "V":
            _version(prog)
            return 0
        elif c == "h":
            usage(prog)
            return 0
        elif c == "I":
            image_opts = True
        elif c == "s":
            o.opts["snapshot"] = "on"
        elif c == "O":
            from gqemu.block.crypto_secret import secret_object_add
            msg = secret_object_add(optarg or "")
            if msg is not None:
                error_report(io_err, msg or "--object: only 'secret' objects are "
                             "supported by gqemu")
                return 1
        else:
            usage(prog)
            return 1
    if len(g.args) > 1:
        usage(prog)
        return 1
    if fmt and image_opts:
        error_report(io_err, "--image-opts and -f are mutually exclusive")
        return 1
    if traces and _init_trace(io_err, traces):
        return 1

    io = QemuIO(prog)
    io.image_opts = image_opts
    # the block layer's error_report() lines carry the program name, as
    # QEMU's; its "WARNING: ..." lines are fprintf()s in QEMU (raw probing)
    from gqemu.block.driver import set_error_sink
    from gqemu.cli.qemu_io_util import err
    # (warn_report's lines name the program already)
    set_error_sink(lambda text: err(text if text.startswith(("WARNING: ", prog + ": "))
                                    else "%s: %s" % (prog, text)))
    if g.args:
        name: Optional[str] = g.args[0]
        if image_opts:
            o.add_user_opts(parse_qemu_opts(io, g.args[0]))
            name = None
        elif fmt:
            o.opts["driver"] = fmt
        if openfile(io, name, o):
            return 1
    ret = command_loop(io, cmdline)
    _shutdown(io)
    if traces:
        from gqemu.trace import trace_close_output
        trace_close_output()
    sys.stdout.flush()
    return 1 if ret < 0 else 0


def _init_trace(io: HasProg, specs: list[str]) -> int:
    """``-T [[enable=]PATTERN][,events=FILE][,file=FILE]``: log lines on
    stderr or in FILE.  QEMU: trace_opt_parse + trace_init_backends."""
    from gqemu.trace import trace_enable_events, trace_init_output
    out_file: Optional[str] = None
    for spec in specs:
        for item in spec.split(","):
            if item.startswith("file="):
                out_file = item[5:]
            elif item:
                trace_enable_events(item)
    try:
        sink = open(out_file, "w") if out_file else sys.stderr
    except OSError as e:
        error_report(io, "could not open trace file '%s': %s" % (out_file, e.strerror))
        return 1
    trace_init_output(sink, "log")
    return 0


def _shutdown(io: QemuIO) -> None:
    """Let outstanding requests finish, then close.  QEMU: bdrv_drain_all +
    blk_unref at the end of main."""
    if io.blk is not None:
        from gqemu.block import blk_unref
        blk, io.blk = io.blk, None
        try:
            blk_unref(blk)
        except Exception as e:              # a gqemu bug: one line, not a traceback
            error_report(io, "internal error while closing: %s: %s"
                         % (type(e).__name__, e))


class _ErrIO:
    """The session fields error_report needs before a session exists."""

    def __init__(self, prog: str) -> None:
        self.prog = prog


if __name__ == "__main__":
    sys.exit(main())
