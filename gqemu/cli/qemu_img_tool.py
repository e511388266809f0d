"""What every qemu-img command shares: the program name, the error type
and its one-line reporting, argument and size parsing, and opening and
closing an image.

The dispatcher (``qemu_img.py``) and the command modules
(``qemu_img_<command>.py``, ``qemu_img_out.py``) import this module; it
imports none of them, so the qemu-img modules form no import cycle.  The
block layer is imported inside the functions that need it, so ``--help``
and usage errors start fast.

QEMU: qemu-img.c (error_exit, cvtnum, img_open), util/error-report.c.
"""
from __future__ import annotations

import errno
import re
import sys
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend

# The name errors are reported under: main() sets it from argv[0].
PROG = "qemu-img"
# The command being run (getopt's argv[0]): main() sets it.
CMD = ""


class ImgError(Exception):
    """An error: each line of ``msg`` is reported as ``<prog>: <line>`` (none
    when empty: the message was already printed), then ``tail`` verbatim;
    ``status`` is the exit code."""

    def __init__(self, msg: str, status: int = 1, tail: str = "") -> None:
        super().__init__(msg)
        self.status = status
        self.tail = tail


class ImgOptError(ImgError):
    """A bad ``-o`` option value (found before anything is created)."""


def usage_error(msg: str) -> ImgError:
    """A command-line mistake: the message, then a pointer to --help.
    QEMU: qemu-img.c error_exit."""
    return ImgError(msg, tail="Try '%s --help' for more information\n" % PROG)


def error_report(msg: str) -> None:
    """``<prog>: <msg>`` on stderr, as QEMU's error_report in a tool."""
    sys.stderr.write("%s: %s\n" % (PROG, msg))


class HelpExit(ImgError):
    """Show the help text and exit 0 (QEMU: qemu-img.c help())."""

    def __init__(self) -> None:
        super().__init__("", 0)


def parse_args(argv: list[str], short: str, longs: list[str],
               glibc_errors: bool = False, object_status: int = 1) -> tuple[list, list[str]]:
    """The options (``("-f", value)``, ``("--output", value)``) and operands
    of a command's ``argv`` (without the command name), scanned by glibc's
    getopt_long (qemu_io_getopt.Getopt) in order: ``-h``/``--help`` shows
    the help, ``--object`` is created, and the first error ends the command
    as qemu-img's missing_argument / unrecognized_option do, naming
    ``argv[optind - 1]`` of glibc's permuted argv.  ``longs``: the long
    names, ``=`` when they take a value; ``glibc_errors``: a command whose
    optstring lacks the leading ':' (measure), where glibc prints its own
    message under the command's name and the command shows its help.

    An error after options the command must act on first (a bad ``-r``
    value before an unknown option) is raised when the caller's loop over
    the options reaches it (Opts)."""
    from gqemu.cli.qemu_io_getopt import Getopt
    longopts = {n.rstrip("="): (n.endswith("="), "--" + n.rstrip("=")) for n in longs}
    if "help" in longopts:
        longopts["help"] = (False, "h")
    g = Getopt([CMD] + argv, ("" if glibc_errors else ":") + short, longopts, prog=CMD)
    g.messages = []
    opts = Opts()
    for c, v in g:
        if c == "h":
            opts.error = HelpExit()
            break
        if c in "?:":
            if glibc_errors:
                opts.error = HelpExit()
                opts.message = "".join(g.messages)
            else:
                word = g.argv[g.optind - 1]
                opts.error = usage_error("missing argument for option '%s'" % word
                                         if c == ":" else "unrecognized option '%s'" % word)
            break
        o = c if c.startswith("--") else "-" + c
        if o == "--object":             # exit status object_status (compare: 2)
            try:
                user_creatable_add(v or "")
            except ImgError as e:
                e.status = object_status
                raise
        opts.append((o, v))
    else:
        return opts, g.args
    return opts, []


class Opts(list):
    """A command's options up to a command-line error, which iterating over
    them raises once the options before it are seen (QEMU's getopt loop acts
    on each option as it comes, then fails on the bad one)."""

    error: Optional[ImgError] = None
    message = ""            # glibc's own line before a HelpExit (measure)

    def __iter__(self) -> Any:
        yield from super().__iter__()
        if self.error is not None:
            sys.stderr.write(self.message)
            raise self.error


def cvtnum(name: str, value: str, top: int = 0) -> int:
    """A size in [0, ``top``] (default INT64_MAX) with qemu-img's two error
    forms; the hex-with-suffix warning goes out at once.  Raises ImgError.
    QEMU: qemu-img.c cvtnum / cvtnum_full over qemu_strtosz."""
    from gqemu.cutils import INT64_MAX, qemu_strtosz
    top = top or INT64_MAX
    ret, val, warning = qemu_strtosz(value)
    if warning:
        error_report("warning: " + warning)
    if ret < 0 and ret != -errno.ERANGE:
        raise ImgError("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"
                       "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes."
                       % name)
    if ret == -errno.ERANGE or val > top:
        raise ImgError("Invalid %s specified. Must be between 0 and %d." % (name, top))
    return val


# Warnings of ``-o`` sizes: QEMU parses the options a second time when the
# format creates the image, so create_image (qemu_img_create.py) repeats them
# after "Formatting".
OPT_WARNINGS: list[str] = []


def option_size(name: str, value: str, filename: str) -> int:
    """A size given with ``-o``: QemuOpts' messages, prefixed by the image
    name as bdrv_img_create reports them.  Raises ImgError."""
    from gqemu.block.block_int import BlockError, parse_option_size
    try:
        val, warning = parse_option_size(name, value)
    except BlockError as e:
        raise ImgOptError("%s: %s" % (filename, e.msg), tail=e.hint)
    if warning:
        error_report("warning: " + warning)
        OPT_WARNINGS.append(warning)
    return val


def qemu_strtol(text: str) -> Optional[int]:
    """A whole-string strtol (base from the prefix), or None."""
    from gqemu.cutils import qemu_strtol as strtol
    ret, val = strtol(text)
    return None if ret else val


_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


def user_creatable_add(spec: str) -> None:
    """``--object``: a ``secret`` goes to the block layer's table
    (crypto_secret.py); other object types are ignored.  Raises ImgError.
    QEMU: user_creatable_process_cmdline."""
    from gqemu.block.crypto_secret import secret_object_add
    from gqemu.block.drive_opts import qemu_opts_split
    for n, item in enumerate(qemu_opts_split(spec)):
        key, eq, _ = item.partition("=")
        if (eq or n) and not all(_KEY.match(f) for f in key.split(".")):
            raise ImgError("Invalid parameter '%s'" % key)      # keyval's key syntax
    msg = secret_object_add(spec)
    if msg:
        raise ImgError(msg)
    if msg == "":
        _check_object_type(spec)


# QAPI's ObjectType values (qapi/qom.json, QEMU 7.2) that qemu-img does not
# build, and the first required property of those it builds (its message
# when missing); other types pass unchecked
_NOT_CREATABLE = ("can-bus", "cryptodev-backend", "cryptodev-backend-builtin", "iothread",
                  "pef-guest", "rng-builtin", "rng-random", "s390-pv-guest")
_REQUIRED = {"authz-listfile": "filename", "authz-pam": "service", "authz-simple": "identity",
             "can-host-socketcan": "if", "colo-compare": "primary_in",
             "cryptodev-vhost-user": "chardev", "dbus-vmstate": "addr",
             "filter-buffer": "netdev", "filter-dump": "netdev", "filter-mirror": "netdev",
             "filter-redirector": "netdev", "filter-replay": "netdev",
             "filter-rewriter": "netdev", "input-barrier": "name", "input-linux": "evdev",
             "memory-backend-epc": "size", "memory-backend-file": "size",
             "memory-backend-memfd": "size", "memory-backend-ram": "size",
             "pr-manager-helper": "path", "qtest": "chardev", "rng-egd": "chardev",
             "secret_keyring": "serial", "sev-guest": "reduced-phys-bits",
             "x-remote-object": "fd", "x-vfio-user-server": "socket"}
_OTHERS = ("authz-list", "authz-list-file", "main-loop", "thread-context", "throttle-group",
           "tls-cipher-suites", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509")


def _check_object_type(spec: str) -> None:
    """A non-secret ``--object``: QEMU's errors for a missing or unknown
    type, a type qemu-img lacks, a missing first required property.
    QEMU: user_creatable_add_from_str (the ObjectOptions visitor)."""
    from gqemu.block.drive_opts import qemu_opts_split
    props: dict[str, str] = {}
    for n, item in enumerate(qemu_opts_split(spec)):
        k, eq, v = item.partition("=")
        if not eq and n == 0:
            k, v = "qom-type", item
        if not k:
            raise ImgError("Invalid parameter ''")
        props[k] = v
    t = props.get("qom-type")
    if not t:
        raise ImgError("Parameter 'qom-type' is missing")
    if t in _NOT_CREATABLE:
        raise ImgError("invalid object type: %s" % t)
    if t not in _REQUIRED and t not in _OTHERS:
        raise ImgError("Parameter 'qom-type' does not accept value '%s'" % t)
    if t in _REQUIRED and _REQUIRED[t] not in props:
        raise ImgError("Parameter '%s' is missing" % _REQUIRED[t])


def parse_o(opts: list[str]) -> dict[str, str]:
    """``-o a=b,c=d`` (repeatable; ``,,`` escapes a comma)."""
    out: dict[str, str] = {}
    for o in opts:
        for item in o.replace(",,", "\0").split(","):
            item = item.replace("\0", ",")
            if not item:
                continue
            k, _, v = item.partition("=")
            out[k] = v if _ else "on"
    return out


def is_valid_option_list(text: str) -> bool:
    """Not empty, not starting with a comma, no unescaped trailing comma.
    QEMU: qemu-img.c is_valid_option_list."""
    if not text or text[0] == ",":
        return False
    trailing = len(text) - len(text.rstrip(","))
    return trailing % 2 == 0


def split_opts(text: str) -> list[str]:
    """The items of an option list (``,,`` is a comma).  QEMU: get_opt_value."""
    items, cur, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            items.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    items.append(cur)
    return items


def has_help_option(text: str) -> bool:
    """QEMU: has_help_option."""
    return any(item in ("help", "?") for item in split_opts(text))


def accumulate_options(olist: list[str], v: str) -> None:
    """One more ``-o`` list, checked (the lists are joined with commas
    later).  Raises ImgError.  QEMU: accumulate_options."""
    if not is_valid_option_list(v):
        raise ImgError("Invalid option list: %s" % v)
    olist.append(v)


def parse_image_opts(spec: str) -> dict[str, str]:
    """``--image-opts``: the filename is ``key=value,...`` (``,,`` escapes
    a comma); a first item without ``=`` is the ``file`` option, a later
    one a short-form boolean (``foo`` on, ``nofoo`` off, with QemuOpts'
    deprecation warning).  QEMU: qemu_opts_parse_noisily(qemu_source_opts),
    whose implied option is "file"."""
    from gqemu.block.drive_opts import qemu_opts_split
    opts: dict[str, str] = {}
    for i, item in enumerate(qemu_opts_split(spec)):
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq and i == 0:
            opts["file"] = k
            continue
        if not eq:
            v = "on"
            if k.startswith("no"):
                k, v = k[2:], "off"
            error_report("warning: short-form boolean option '%s' deprecated" % item)
            sys.stderr.write("Please use %s=%s instead\n" % (k, v))
        opts[k] = v
    return opts


def _node_reference(filename: str, opts: dict) -> None:
    """``file=NAME`` names an existing node, and qemu-img has none: QEMU's
    errors (after an unknown driver's).  QEMU: bdrv_open_inherit's
    reference lookup (bdrv_lookup_bs)."""
    from gqemu.block.driver_registry import bdrv_find_format
    ref = opts["file"]
    if opts.get("driver") and bdrv_find_format(opts["driver"]) is None:
        return
    if any(k.startswith("file.") for k in opts):
        raise ImgError("Could not open '%s': Cannot reference an existing block device "
                       "with additional options or a new filename" % filename)
    raise ImgError("Could not open '%s': Cannot find device='%s' nor node-name='%s'"
                   % (filename, ref, ref))


def img_open(filename: str, fmt: Optional[str], writable: bool = False,
             extra_flags: int = 0, image_opts: bool = False,
             force_share: bool = False, cache: str = "writeback") -> Any:
    """Open an image as qemu-img does (``image_opts``: the filename is an
    option list, ``force_share``: -U).  Raises ImgError.  QEMU: img_open."""
    from gqemu.block import blk_new_open
    from gqemu.block.driver import BlockError
    opts: dict = {}
    name: Optional[str] = filename
    if image_opts:
        if fmt:
            raise ImgError("--image-opts and --format are mutually exclusive")
        opts = parse_image_opts(filename)
        name = None
        if "file" in opts:
            _node_reference(filename, opts)
    if force_share:
        if writable:
            raise ImgError("Could not open '%s': force-share=on can only be used with "
                           "read-only images" % filename)
        opts.setdefault("locking", "off")
    if name == "":                 # bdrv_open with neither a name nor options
        raise ImgError("Could not open '': The 'file' block driver requires a file name")
    if image_opts and "driver" not in opts and not any(k == "file" or k.startswith("file.")
                                                       for k in opts):
        raise ImgError("Could not open '%s': Must specify either driver or file" % filename)
    opts.update({"readonly": "off" if writable else "on"})
    opts.setdefault("cache", cache)
    if fmt:
        opts["driver"] = fmt             # as img_open_file: json: keys do not override it
    try:
        return blk_new_open(name, opts, extra_flags)
    except BlockError as e:
        hint = e.hint + ("\n" if e.hint and not e.hint.endswith("\n") else "")
        raise ImgError("Could not open '%s': %s" % (filename, e.msg), tail=hint) from None


def blk_close(blk: BlockBackend) -> None:
    from gqemu.block import blk_unref
    blk_unref(blk)


def parse_option_size(name: str, text: str) -> int:
    """A QemuOpts size value through the one size parser
    (``block_int.parse_option_size`` over ``cutils.qemu_strtosz``), its
    errors as gqemu-img reports them.  Raises ImgError."""
    from gqemu.block.block_int import BlockError
    from gqemu.block.block_int import parse_option_size as qemu_opt_parse_size
    try:
        val, warning = qemu_opt_parse_size(name, text)
    except BlockError as e:
        raise ImgError(e.msg, tail=e.hint or "")
    if warning:
        error_report("warning: " + warning)
    return val


def parse_snapshot_param(v: str) -> dict:
    """``-l snapshot.id=ID,snapshot.name=NAME`` (convert, measure): the
    keys without their ``snapshot.`` prefix.  Raises ImgError after
    QemuOpts' message.  QEMU: internal_snapshot_opts,
    qemu_opts_parse_noisily."""
    out = {}
    for item in v.split(","):
        key, eq, val = item.partition("=")
        if key not in ("snapshot.id", "snapshot.name"):
            error_report("Invalid parameter '%s'" % key)
            raise ImgError("Failed in parsing snapshot param '%s'" % v)
        if not eq:                           # QemuOpts' short-form boolean
            error_report("warning: short-form boolean option '%s' deprecated" % key)
            sys.stderr.write("Please use %s=on instead\n" % key)
            val = "on"
        out[key[len("snapshot."):]] = val
    return out
