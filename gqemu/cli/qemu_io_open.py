"""qemu-io's open, close and quit commands, and the open options that the
command line shares with ``open`` (reopen: qemu_io_reopen.py).

Options become ``-drive`` keys for ``blk_new_open``: qemu-io's defaults are
``cache=writethrough`` and ``discard=unmap``; ``-r`` is ``read-only=on``,
``-n`` ``cache=none``, ``-U`` ``locking=off`` (read-only images only),
``-C`` ``copy-on-read=on``.

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import at module level: gqemu.block; never gqemu.hw, gqemu.kvm.
QEMU: qemu-io.c (openfile, open_f, close_f, quit_f).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Optional

from gqemu.cli.qemu_io_help import OPEN_HELP
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_util import (CMD_FLAG_GLOBAL, CMD_NOFILE_OK, HasProg, cmdinfo_t,
                                    err, error_report, out,
                                    qemuio_command_usage)

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules

# cache mode -> cache.direct, cache.no-flush, cache.writeback (bdrv_parse_cache_mode)
_CACHE_KEYS = {"off": ("on", "off", "on"), "none": ("on", "off", "on"),
               "directsync": ("on", "off", "off"), "writeback": ("off", "off", "on"),
               "unsafe": ("off", "on", "on"), "writethrough": ("off", "off", "off")}

# -drive keys that gqemu's blk_new_open takes but QEMU's bdrv_open does not
# know on a format node: given to open -o or --image-opts, qemu-io's open
# fails on them once the driver opened them ("does not support the option")
_DRIVE_ONLY_KEYS = frozenset((
    "cache", "cache.writeback", "readonly", "rerror", "werror", "aio", "copy-on-read",
    "share-rw", "snapshot", "format", "locking", "if", "index", "bus", "unit", "media",
    "serial", "model", "cyls", "heads", "secs", "trans", "addr", "boot"))


# ------------------------------------------------------------------ open


class OpenOpts:
    """What open_f and main collect before opening.  QEMU: flags + QDict."""

    def __init__(self) -> None:
        self.opts: dict[str, Any] = {}
        self.readonly = False
        self.cache = "writethrough"        # qemu-io's default
        self.discard = "unmap"             # qemu-io sets BDRV_O_UNMAP
        self.force_share = False
        self.user_keys: set[str] = set()   # keys of -o / --image-opts
        self.file_ref: Optional[tuple[str, bool]] = None  # file=NAME: a node

    def add_user_opts(self, opts: dict[str, Any]) -> None:
        ref = opts.pop(_FILE_REF, None)
        if ref is not None:
            self.file_ref = ref
        self.opts.update(opts)
        self.user_keys.update(opts)

    def leftover(self) -> list[str]:
        """The user's keys that QEMU's bdrv_open would leave unused (a
        protocol driver on top takes its own aio and locking)."""
        keys = _DRIVE_ONLY_KEYS
        if self._protocol_on_top():
            keys = keys - {"aio", "locking"}
        return [k for k in self.opts if k in self.user_keys and k in keys]

    def _protocol_on_top(self) -> bool:
        from gqemu.block import bdrv_find_format
        cls = bdrv_find_format(str(self.opts.get("driver", "")))
        return cls is not None and cls.bdrv_file_open is not None

    def drive_options(self) -> dict[str, Any]:
        skip = set(self.leftover()) | ({"force-share"} & self.user_keys)
        d = {k: v for k, v in self.opts.items() if k not in skip}
        if ("cache.direct" in d) != ("cache.no-flush" in d):
            # the other one comes from the cache mode (QEMU:
            # update_options_from_flags), writethrough from it in any case
            direct, no_flush, writeback = _CACHE_KEYS[self.cache]
            d.setdefault("cache.direct", direct)
            d.setdefault("cache.no-flush", no_flush)
            d["cache.writeback"] = writeback
        if "auto-read-only" in self.user_keys and "auto-read-only" in d:
            # checked, then no effect: qemu-io's node is writable or -r
            from gqemu.block.driver import qemu_opt_bool
            qemu_opt_bool(d, "auto-read-only", False)
        if "cache.direct" not in d and "cache.no-flush" not in d:
            d.setdefault("cache", self.cache)
        d.setdefault("discard", self.discard)
        if self.readonly and "read-only" not in self.user_keys:
            d["read-only"] = "on"       # (the user's read-only=off opens the node rw)
        if self.force_share:
            d.setdefault("locking", "off")
        return d


def parse_qemu_opts(io: QemuIO, s: str) -> dict[str, Any]:
    """``key=value,...`` with ``,,`` for a comma; a bare word means
    ``word=on`` (with QEMU's deprecation warning).  ``file.filename`` is
    gqemu's ``file``.  QEMU: qemu_opts_parse_noisily (permit_abbrev false),
    get_opt_name_value (``noX`` is ``X=off``; ``help``/``?`` draw no
    warning)."""
    opts: dict[str, Any] = {}
    p, n = 0, len(s)
    while p < n:
        end = p
        while end < n and s[end] not in "=,":
            end += 1
        k = s[p:end]
        if end < n and s[end] == "=":
            parts, p = [], end + 1
            while True:                         # the value: ",," is a comma
                comma = s.find(",", p)
                comma = n if comma < 0 else comma
                parts.append(s[p:comma])
                if comma + 1 < n and s[comma + 1] == ",":
                    parts.append(",")
                    p = comma + 2
                    continue
                p = comma
                break
            v = "".join(parts)
        else:
            p, prefix = end, ""
            if k.startswith("no"):
                k, v, prefix = k[2:], "off", "no"
            else:
                v = "on"
            if prefix or k not in ("help", "?"):
                error_report(io, "warning: short-form boolean option '%s%s' deprecated"
                             % (prefix, k))
                if k == "delay":
                    err("Please use nodelay=%s instead\n" % ("on" if prefix else "off"))
                else:
                    err("Please use %s=%s instead\n" % (k, v))
        p += p < n                              # the comma after the item
        opts[k] = v
    if "file" in opts:
        # the user's file=NAME names an existing node (QEMU: bdref_key);
        # OpenOpts.add_user_opts takes it apart from gqemu's own "file"
        # (with whether file.* options came too)
        opts[_FILE_REF] = (opts.pop("file"), any(k.startswith("file.") for k in opts))
    if opts.get("file.driver") == "file" and "file.filename" in opts:
        del opts["file.driver"]
    if "file.filename" in opts:
        opts["file"] = opts.pop("file.filename")
    return opts


_FILE_REF = "\0file-reference"


def file_ref_error(name: Optional[str], o: OpenOpts) -> str:
    """qemu-io has no other node to refer to: a file=NAME is an error.
    QEMU: bdrv_open_child_bs -> bdrv_open_inherit (reference), bdrv_lookup_bs."""
    if o.file_ref is None:
        return ""
    from gqemu.block import bdrv_find_format
    if "driver" in o.opts and bdrv_find_format(str(o.opts["driver"])) is None:
        return ""                         # (Unknown driver, first)
    ref, with_options = o.file_ref
    if name or with_options or "file" in o.opts or \
            any(k.startswith("file.") for k in o.opts):
        return "Cannot reference an existing block device with additional options " \
            "or a new filename"
    return "Cannot find device='%s' nor node-name='%s'" % (ref, ref)


def blk_open(name: Optional[str], o: OpenOpts) -> Any:
    """A BlockBackend on the image; raises BlockError.  A gqemu bug comes
    back as one BlockError line, not a traceback."""
    from gqemu.block import BlockError, blk_new_open
    try:
        return blk_new_open(name, o.drive_options())
    except BlockError:
        raise
    except Exception as e:                  # a gqemu bug: one line, not a traceback
        raise BlockError(errno.EIO, "internal error: %s: %s" % (type(e).__name__, e))


def openfile(io: QemuIO, name: Optional[str], o: OpenOpts) -> int:
    """Open the image; 0, or 1 after printing why not.  QEMU: openfile."""
    if io.blk is not None:
        error_report(io, "file open already, try 'help close'")
        return 1
    if "force-share" in o.user_keys and o.opts.get("force-share") is not None:
        share = o.opts["force-share"]
        if o.force_share and share != "on":
            error_report(io, "-U conflicts with image options")
            return 1
        if share == "on":
            o.force_share = True
    node_ro = o.readonly
    if "read-only" in o.user_keys:      # the node's own option decides
        node_ro = str(o.opts.get("read-only")) in ("on", "true", "yes")
    if o.force_share and not node_ro and o.opts.get("snapshot") != "on":
        # (-s: the image below the overlay is read-only, and the overlay
        # does not take force-share -- QEMU's bdrv_temp_snapshot_options)
        error_report(io, "can't open%s%s: force-share=on can only be used with "
                     "read-only images" % (" device " if name else "", name or ""))
        return 1
    from gqemu.block import BlockError, blk_is_read_only, blk_unref
    try:
        options = o.drive_options()
    except BlockError as e:
        error_report(io, "can't open%s%s: %s" % (" device " if name else "", name or "",
                                                 e.msg))
        return 1
    if name is None and "driver" not in options and "file" not in options \
            and o.file_ref is None and not any(k.startswith("file.") for k in options):
        error_report(io, "can't open: Must specify either driver or file")
        return 1
    ref_error = file_ref_error(name, o)
    if ref_error:
        error_report(io, "can't open%s%s: %s" % (" device " if name else "", name or "",
                                                 ref_error))
        return 1
    try:
        io.blk = blk_open(name, o)
    except BlockError as e:
        error_report(io, "can't open%s%s: %s"
                     % (" device " if name else "", name or "", e.msg))
        if e.hint:
            err(e.hint.rstrip("\n") + "\n")
        return 1
    leftover = o.leftover()
    if leftover:
        # QEMU: bdrv_open_inherit's check for unused options, after the open
        from gqemu.block import blk_bs, qdict_first_key
        bs = blk_bs(io.blk)
        if o.opts.get("snapshot") == "on" and bs is not None and bs.backing is not None:
            bs = bs.backing.bs          # the image's node, below the -s overlay
        fmt = bs.drv.format_name if bs is not None and bs.drv is not None else ""
        blk, io.blk = io.blk, None
        blk_unref(blk)
        what = ("Block protocol '%s' doesn't support" if o._protocol_on_top()
                else "Block format '%s' does not support") % fmt
        error_report(io, "can't open%s%s: %s the option '%s'"
                     % (" device " if name else "", name or "", what,
                        qdict_first_key(leftover)))
        return 1
    if not o.readonly and blk_is_read_only(io.blk):
        # qemu-io's BlockBackend wants to write a node the user's read-only=on
        # (an option or a json: key) opened read-only.
        # QEMU: blk_new_open -> blk_insert_bs
        blk, io.blk = io.blk, None
        blk_unref(blk)
        error_report(io, "can't open%s%s: Block node is read-only"
                     % (" device " if name else "", name or ""))
        return 1
    io.opened = (name, o)
    io.snapshot_reopened = False
    _name_nodes(io)
    return 0


def _name_nodes(io: QemuIO) -> None:
    """The name QEMU generates for the root node, "#block" + a running
    count + two random digits: children opened before their parent (the
    file first), every node without a node-name draws one.
    QEMU: bdrv_assign_node_name, id_generate."""
    import random
    from gqemu.block import blk_bs

    def count(bs: Any) -> int:
        if bs is None:
            return 0
        kids = [c.bs for c in (bs.file, bs.backing) if c is not None]
        return (not bs.node_name) + sum(count(k) for k in kids)
    root = blk_bs(io.blk)
    assert root is not None
    base = io.node_ids
    before = count(root.file.bs) if root.file is not None else 0
    io.root_node_name = root.node_name or "#block%d%02d" % (base + before,
                                                           random.randrange(100))
    io.blk_write_perm = not io.opened[1].readonly
    io.node_ids = base + count(root)


def parse_open_flag(io: HasProg, o: OpenOpts, c: str, optarg: Optional[str]) -> int:
    """One of the option letters main() and open share.  0, -EINVAL after a
    message, or 1 when ``c`` is not one of them."""
    if c == "n":
        o.cache = "none"
    elif c == "C":
        o.opts["copy-on-read"] = "on"
    elif c == "r":
        o.readonly = True
    elif c == "k" or (c == "i" and optarg == "native"):
        o.opts["aio"] = "native"        # the flags add up: native wins
    elif c == "U":
        o.force_share = True
    elif c == "t":
        if optarg not in _CACHE_KEYS:
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
        # QEMU: bdrv_parse_aio ORs BDRV_O_NATIVE_AIO / BDRV_O_IO_URING into
        # the flags ("threads" changes nothing); file-posix takes native
        # first, then io_uring (gqemu's nowait: when neither is set)
        if optarg == "io_uring" and o.opts.get("aio") != "native":
            o.opts["aio"] = optarg
        elif optarg == "nowait" and o.opts.get("aio") not in ("native", "io_uring"):
            o.opts["aio"] = optarg
    else:
        return 1
    return 0


def open_f(io: QemuIO, argv: list[str]) -> int:
    """QEMU: open_f."""
    o = OpenOpts()
    g = Getopt(argv, "snCro:ki:t:d:U")
    for c, optarg in g:
        ret = parse_open_flag(io, o, c, optarg)
        if ret <= 0:
            if ret < 0:
                return ret
            continue
        if c == "o":
            if io.image_opts:
                out("--image-opts and 'open -o' are mutually exclusive\n")
                return -errno.EINVAL
            o.add_user_opts(parse_qemu_opts(io, optarg or ""))
            if "id" in o.opts:                 # open's option list takes no id
                error_report(io, "Invalid parameter 'id'")
                return -errno.EINVAL
        elif c == "s":
            o.opts["snapshot"] = "on"
        else:
            qemuio_command_usage(open_cmd)
            return -errno.EINVAL
    args = g.args
    if io.image_opts and len(args) == 1:
        o.add_user_opts(parse_qemu_opts(io, args.pop()))
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


def quit_f(io: QemuIO, argv: list[str]) -> int:
    io.quit = True
    return 0


open_cmd = cmdinfo_t("open", open_f, altname="o", argmin=1, argmax=-1,
                     flags=CMD_NOFILE_OK,
                     args="[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
                     oneline="open the file specified by path", help=OPEN_HELP)
close_cmd = cmdinfo_t("close", close_f, altname="c",
                      oneline="close the current open file")
quit_cmd = cmdinfo_t("quit", quit_f, altname="q", argmin=-1, argmax=-1,
                     flags=CMD_FLAG_GLOBAL, oneline="exit the program")
