"""``gqemu-io``: QEMU 7.2's qemu-io over gqemu's block layer.

``gqemu-io [-f FMT] [-r] [-n] [-t CACHE] [-c CMD]... [--image-opts] FILE``
runs each ``-c`` command in order (or reads commands from stdin after a
``NAME> `` prompt, with readline history on a terminal) and exits 1 if any
command failed, 0 otherwise, as qemu-io does.  It names itself after
``argv[0]``.  Option parsing, ``-h`` and ``-V`` import nothing from the
block layer, so they start as fast as Python does.

Must not import at module level: gqemu.block (lazily, once a file or a
command needs it); never gqemu.hw, gqemu.kvm, gqemu.machine.
QEMU: qemu-io.c (main, openfile, open_f, close_f, quit_f, command_loop).
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any, Optional

from gqemu.cli.qemu_io_util import (CMD_FLAG_GLOBAL, CMD_NOFILE_OK, Getopt,
                                    cmdinfo_t, err, out, qemuio_command_usage)

USAGE = """\
Usage: %(p)s [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser (gqemu)

  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -n, --nocache        disable host cache, short for -t none
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT (no effect in gqemu)
  -k, --native-aio     use kernel AIO implementation (refused by gqemu)
  -i, --aio=MODE       use AIO mode (threads, or gqemu's nowait)
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                       specify tracing options
  -U, --force-share    force shared permissions (read-only images)
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See '%(p)s -c help' for information on available commands.
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
CACHE_MODES = ("off", "none", "directsync", "writeback", "unsafe", "writethrough")


class QemuIO:
    """One qemu-io session: the open BlockBackend and the command table."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.blk: Any = None
        self.quit = False
        self.image_opts = False
        from gqemu.cli.qemu_io_cmds import BASE_COMMANDS
        self.opened: tuple[Optional[str], OpenOpts] = (None, OpenOpts())
        self.cmdtab = sorted(BASE_COMMANDS + [quit_cmd, open_cmd, close_cmd,
                                              reopen_cmd],
                             key=lambda ct: ct.name)


def error_report(io: QemuIO, msg: str) -> None:
    err("%s: %s\n" % (io.prog, msg))


# ------------------------------------------------------------------ open


class OpenOpts:
    """What open_f and main collect before opening.  QEMU: flags + QDict."""

    def __init__(self) -> None:
        self.opts: dict[str, Any] = {}
        self.readonly = False
        self.cache = "writethrough"        # qemu-io's default
        self.discard = "unmap"             # qemu-io sets BDRV_O_UNMAP
        self.force_share = False

    def drive_options(self) -> dict[str, Any]:
        d = dict(self.opts)
        if "cache.direct" not in d and "cache.no-flush" not in d:
            d.setdefault("cache", self.cache)
        d.setdefault("discard", self.discard)
        if self.readonly:
            d["read-only"] = "on"
        if self.force_share:
            d.setdefault("locking", "off")
        return d


def parse_qemu_opts(io: Any, s: str) -> dict[str, str]:
    """``key=value,...`` with ``,,`` for a comma; a bare word means
    ``word=on`` (with QEMU's deprecation warning).  ``file.filename`` is
    gqemu's ``file``.  QEMU: qemu_opts_parse_noisily (permit_abbrev false)."""
    items, cur, i = [], [], 0
    while i < len(s):
        if s[i] == ",":
            if s[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(s[i])
        i += 1
    items.append("".join(cur))
    opts: dict[str, str] = {}
    for item in items:
        if not item:
            continue
        if "=" in item:
            k, v = item.split("=", 1)
        else:
            error_report(io, "warning: short-form boolean option '%s' deprecated"
                         % item)
            err("Please use %s=on instead\n" % item)
            k, v = item, "on"
        opts[k] = v
    if opts.get("file.driver") == "file":
        del opts["file.driver"]
    if "file.filename" in opts:
        opts["file"] = opts.pop("file.filename")
    return opts


def openfile(io: QemuIO, name: Optional[str], o: OpenOpts) -> int:
    """Open the image; 0, or 1 after printing why not.  QEMU: openfile."""
    if io.blk is not None:
        error_report(io, "file open already, try 'help close'")
        return 1
    if o.force_share and not o.readonly:
        error_report(io, "can't open%s%s: force-share=on can only be used with "
                     "read-only images" % (" device " if name else "", name or ""))
        return 1
    from gqemu.block import BlockError, blk_new_open
    options = o.drive_options()
    if name is None and "driver" not in options and "file" not in options:
        error_report(io, "can't open: Must specify either driver or file")
        return 1
    try:
        io.blk = blk_new_open(name, options)
    except BlockError as e:
        error_report(io, "can't open%s%s: %s"
                     % (" device " if name else "", name or "", e.msg))
        if e.hint:
            err(e.hint.rstrip("\n") + "\n")
        return 1
    io.opened = (name, o)
    return 0


def _parse_open_flag(io: QemuIO, o: OpenOpts, c: str, optarg: Optional[str]) -> int:
    """One of the option letters main() and open share.  0, -EINVAL after a
    message, or 1 when ``c`` is not one of them."""
    if c == "n":
        o.cache = "none"
    elif c == "C":
        o.opts["copy-on-read"] = "on"
    elif c == "r":
        o.readonly = True
    elif c == "k":
        o.opts["aio"] = "native"
    elif c == "U":
        o.force_share = True
    elif c == "t":
        if optarg not in CACHE_MODES:
            error_report(io, "Invalid cache option: %s" % optarg)
            return -errno.EINVAL
        o.cache = str(optarg)
    elif c == "d":
        if optarg not in ("off", "ignore", "on", "unmap"):
            error_report(io, "Invalid discard option: %s" % optarg)
            return -errno.EINVAL
        o.discard = "unmap" if optarg in ("on", "unmap") else "ignore"
    elif c == "i":
        if optarg not in ("threads", "native", "io_uring", "nowait"):
            error_report(io, "Invalid aio option: %s" % optarg)
            return -errno.EINVAL
        o.opts["aio"] = optarg
    else:
        return 1
    return 0


def open_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: open_f."""
    o = OpenOpts()
    g = Getopt(argv, "snCro:ki:t:d:U")
    for c, optarg in g:
        ret = _parse_open_flag(io, o, c, optarg)
        if ret <= 0:
            if ret < 0:
                return ret
            continue
        if c == "o":
            if io.image_opts:
                out("--image-opts and 'open -o' are mutually exclusive\n")
                return -errno.EINVAL
            o.opts.update(parse_qemu_opts(io, optarg or ""))
        elif c == "s":
            error_report(io, "snapshot=on is not supported by gqemu")
            return -errno.ENOTSUP
        else:
            qemuio_command_usage(open_cmd)
            return -errno.EINVAL
    args = g.args
    if io.image_opts and len(args) == 1:
        o.opts.update(parse_qemu_opts(io, args.pop()))
    if len(args) > 1:
        qemuio_command_usage(open_cmd)
        return -errno.EINVAL
    return -errno.EINVAL if openfile(io, args[0] if args else None, o) else 0


def close_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: close_f (blk_unref drains, so pending aio reports print)."""
    from gqemu.block import blk_unref
    blk, io.blk = io.blk, None
    blk_unref(blk)
    return 0


def reopen_f(io: QemuIO, argv: list[str]) -> int:
    """Change read-only, cache mode or driver options of the open image.
    gqemu closes the node and opens it again with the new options (QEMU
    reopens in place); if that fails, the old options are restored.
    QEMU: reopen_f -> bdrv_reopen."""
    name, old = io.opened
    o = OpenOpts()
    o.opts, o.readonly, o.cache = dict(old.opts), old.readonly, old.cache
    o.discard, o.force_share = old.discard, old.force_share
    has_rw = has_cache = False
    new_opts: dict[str, str] = {}
    g = Getopt(argv, "c:o:rw")
    for c, optarg in g:
        if c == "c":
            if optarg not in CACHE_MODES:
                error_report(io, "Invalid cache option: %s" % optarg)
                return -errno.EINVAL
            o.cache, has_cache = str(optarg), True
        elif c == "o":
            new_opts.update(parse_qemu_opts(io, optarg or ""))
        elif c in "rw":
            if has_rw:
                error_report(io, "Only one -r/-w option may be given")
                return -errno.EINVAL
            o.readonly, has_rw = c == "r", True
        else:
            qemuio_command_usage(reopen_cmd)
            return -errno.EINVAL
    if g.args:
        qemuio_command_usage(reopen_cmd)
        return -errno.EINVAL
    if "read-only" in new_opts and has_rw:
        error_report(io, "Cannot set both -r/-w and 'read-only'")
        return -errno.EINVAL
    if ("cache.direct" in new_opts or "cache.no-flush" in new_opts) and has_cache:
        error_report(io, "Cannot set both -c and the cache options")
        return -errno.EINVAL
    if "read-only" in new_opts:
        o.readonly = new_opts.pop("read-only") in ("on", "true", "yes")
    o.opts.update(new_opts)
    from gqemu.block import blk_unref
    blk, io.blk = io.blk, None
    blk_unref(blk)
    if openfile(io, name, o) == 0:
        return 0
    openfile(io, name, old)
    return -errno.EINVAL


def quit_f(io: QemuIO, argv: list[str]) -> int:
    io.quit = True
    return 0


from gqemu.cli.qemu_io_help import OPEN_HELP, REOPEN_HELP  # noqa: E402

open_cmd = cmdinfo_t("open", open_f, altname="o", argmin=1, argmax=-1,
                     flags=CMD_NOFILE_OK,
                     args="[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
                     oneline="open the file specified by path", help=OPEN_HELP)
close_cmd = cmdinfo_t("close", close_f, altname="c",
                      oneline="close the current open file")
reopen_cmd = cmdinfo_t("reopen", reopen_f, argmin=0, argmax=-1,
                       args="[(-r|-w)] [-c cache] [-o options]",
                       oneline="reopens an image with new options",
                       help=REOPEN_HELP)
quit_cmd = cmdinfo_t("quit", quit_f, altname="q", argmin=-1, argmax=-1,
                     flags=CMD_FLAG_GLOBAL, oneline="exit the program")


# ------------------------------------------------------------------ loop


def _poll_once(io: QemuIO) -> None:
    """Let finished aio requests report while waiting for input.
    QEMU: main_loop_wait in command_loop."""
    if io.blk is not None:
        from gqemu.aio import aio_poll
        from gqemu.block import blk_get_aio_context
        aio_poll(blk_get_aio_context(io.blk), False)


def _fetchline(io: QemuIO, tty: bool) -> Optional[str]:
    prompt = "%s> " % io.prog
    if tty:
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
    argv = list(sys.argv if argv is None else argv)
    prog = os.path.basename(argv[0]) if argv else "gqemu-io"
    try:
        return _main(prog, argv)
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1


def _main(prog: str, argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)    # die on ^C, as qemu-io
    o = OpenOpts()
    cmdline: list[str] = []
    fmt: Optional[str] = None
    image_opts = False
    traces: list[str] = []
    io_err = _ErrIO(prog)
    g = Getopt(argv, SOPT, LOPT)     # glibc names argv[0] as given
    for c, optarg in g:
        ret = _parse_open_flag(io_err, o, c, optarg)   # type: ignore[arg-type]
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
        elif c in ("s", "O"):
            error_report(io_err, "%s is not supported by gqemu"  # type: ignore[arg-type]
                         % ("--snapshot" if c == "s" else "--object"))
            return 1
        else:
            usage(prog)
            return 1
    if len(g.args) > 1:
        usage(prog)
        return 1
    if fmt and image_opts:
        error_report(io_err, "--image-opts and -f are mutually exclusive")  # type: ignore[arg-type]
        return 1
    if traces and _init_trace(io_err, traces):   # type: ignore[arg-type]
        return 1

    io = QemuIO(prog)
    io.image_opts = image_opts
    if g.args:
        name: Optional[str] = g.args[0]
        if image_opts:
            o.opts.update(parse_qemu_opts(io, g.args[0]))
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


def _init_trace(io: QemuIO, specs: list[str]) -> int:
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
        blk_unref(blk)


class _ErrIO:
    """The session fields error_report needs before a session exists."""

    def __init__(self, prog: str) -> None:
        self.prog = prog


if __name__ == "__main__":
    sys.exit(main())
