"""qemu-io's open, close, reopen and quit commands, and the open options
that the command line shares with ``open``.

Options become ``-drive`` keys for ``blk_new_open``: qemu-io's defaults are
``cache=writethrough`` and ``discard=unmap``; ``-r`` is ``read-only=on``,
``-n`` ``cache=none``, ``-U`` ``locking=off`` (read-only images only),
``-C`` ``copy-on-read=on``.

Context (every ``*_f(io, argv)``): the main loop, outside coroutines; it
polls the AioContext until its request completes.  Returns: 0, or -errno
after printing the error as qemu-io does (any failure makes the exit
status 1).

Must not import at module level: gqemu.block; never gqemu.hw, gqemu.kvm.
QEMU: qemu-io.c (openfile, open_f, close_f, quit_f), qemu-io-cmds.c
(reopen_f).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Optional

from gqemu.cli.qemu_io_help import OPEN_HELP, REOPEN_HELP
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


def reopen_f(io: QemuIO, argv: list[str]) -> int:
    """Change read-only, cache mode or driver options of the open image.
    The new options are joined with the old explicit ones (qcow2's join
    rules), checked as bdrv_reopen does (booleans, options that cannot
    change), then gqemu closes the node and opens it again with them (QEMU
    reopens in place); if that fails, the error is printed and the old
    options are opened again.  QEMU: reopen_f -> bdrv_reopen."""
    name, old = io.opened
    o = OpenOpts()
    o.opts, o.readonly, o.cache = dict(old.opts), old.readonly, old.cache
    o.discard, o.force_share = old.discard, old.force_share
    o.user_keys = set(old.user_keys) - {"read-only"}
    if "read-only" in old.user_keys:    # the node's state, which reopen restates
        o.readonly = str(o.opts.pop("read-only", "")) in ("on", "true", "yes")
    has_rw = has_cache = False
    new_opts: dict[str, str] = {}
    g = Getopt(argv, "c:o:rw")
    for c, optarg in g:
        if c == "c":
            if optarg not in _CACHE_KEYS:
                error_report(io, "Invalid cache option: %s" % optarg)
                return -errno.EINVAL
            o.cache, has_cache = str(optarg), True
        elif c == "o":
            new_opts.update(parse_qemu_opts(io, optarg or ""))
            if _FILE_REF in new_opts:           # (a child to attach: not modelled)
                new_opts["file"] = new_opts.pop(_FILE_REF)[0]
            if "id" in new_opts:               # reopen's option list takes no id
                error_report(io, "Invalid parameter 'id'")
                return -errno.EINVAL
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
    had_write_perm = io.blk_write_perm
    if o.readonly:
        # qemu-io gives up its write permission for good before reopening
        # read-only (whether or not the reopen then succeeds)
        io.blk_write_perm = False
    if "read-only" in new_opts and has_rw:
        error_report(io, "Cannot set both -r/-w and 'read-only'")
        return -errno.EINVAL
    if ("cache.direct" in new_opts or "cache.no-flush" in new_opts) and has_cache:
        error_report(io, "Cannot set both -c and the cache options")
        return -errno.EINVAL
    msg = _reopen_check(io, new_opts)
    fixed = msg if msg.startswith("Cannot change") else ""   # (checked last)
    msg = "" if fixed else msg
    ro = o.readonly or str(new_opts.get("read-only")) in ("on", "true", "yes")
    if not msg and ro and old.opts.get("copy-on-read") == "on":
        # QEMU: bdrv_reopen_prepare -> bdrv_can_set_read_only
        msg = "Can't set node '%s' to r/o with copy-on-read enabled" % io.root_node_name
    msg = msg or _reopen_unsupported(io) or fixed or _reopen_unchanged(io, new_opts)
    if msg:
        error_report(io, msg)
        return -errno.EINVAL
    if new_opts.get("read-only") in ("on", "true", "yes") and not old.readonly and \
            io.blk_write_perm:
        # qemu-io still holds its write permission (no reopen -r since the
        # open): the node cannot turn read-only under it.  QEMU: reopen_f,
        # bdrv_reopen_multiple's permission update
        error_report(io, "Read-only block node '%s' cannot support read-write users"
                     % io.root_node_name)
        return -errno.EPERM
    if "read-only" in new_opts:
        o.readonly = new_opts.pop("read-only") in ("on", "true", "yes")
    new_opts.pop("auto-read-only", None)        # no effect in gqemu
    if _root_format(io) == "qcow2":
        from gqemu.block.qcow2_options import qcow2_join_options
        o.opts = qcow2_join_options(new_opts, o.opts)
    else:
        o.opts.update(new_opts)
    from gqemu.block import BlockError, blk_bs, blk_unref
    if old.opts.get("snapshot") == "on":
        # -s: QEMU reopens in place, and only a read-only change opens a
        # file again -- the temporary overlay, by its name, which is gone:
        # that fails and the session keeps its overlay.  gqemu would reopen
        # the image itself (losing the overlay's writes), so it keeps the
        # open node as it is instead.
        # What QEMU 7.2 does (measured): the overlay's file is not O_DIRECT;
        # a reopen that changes read-only or asks for cache.direct fails, and
        # after one reopen that succeeded every further one fails too (one
        # asking for read-only at the permission check instead) -- unless the
        # overlay is read-only (-r -s), whose file keeps its descriptor.
        direct = new_opts.get("cache.direct", "off" if not has_cache else
                              "on" if o.cache in ("none", "off", "directsync") else "off")
        if io.snapshot_reopened and o.readonly and not old.readonly:
            error_report(io, "Read-only block node '%s' cannot support read-write users"
                         % io.root_node_name)
            io.blk_write_perm = had_write_perm  # (measured: a write then works)
            return -errno.EPERM
        if o.readonly != old.readonly or direct in ("on", "true", "yes") or \
                (io.snapshot_reopened and not old.readonly):
            bs = blk_bs(io.blk)
            error_report(io, "Could not open '%s': No such file or directory"
                         % (bs.filename if bs is not None else ""))
            return -errno.ENOENT
        io.snapshot_reopened = True
        return 0
    for key in ("aio", "file.aio"):
        if o.opts.get(key) == "native":
            # QEMU's reopen keeps the engine without checking O_DIRECT again;
            # gqemu runs both on the thread pool
            o.opts[key] = "threads"
    blk, io.blk = io.blk, None
    blk_unref(blk)
    try:
        io.blk = blk_open(name, o)
    except BlockError as e:
        error_report(io, e.msg)
        if e.hint:
            err(e.hint.rstrip("\n") + "\n")
        openfile(io, name, old)
        return -errno.EINVAL
    io.opened = (name, o)
    return 0


# options bdrv_reopen handles; any other option must keep its value
_REOPEN_BOOLS = ("read-only", "cache.direct", "cache.no-flush", "auto-read-only")
_REOPEN_FIXED = ("node-name", "driver")


def _root_format(io: QemuIO) -> str:
    from gqemu.block import blk_bs
    bs = blk_bs(io.blk) if io.blk is not None else None
    return bs.drv.format_name if bs is not None and bs.drv is not None else ""


def _reopen_check(io: QemuIO, new_opts: dict[str, str]) -> str:
    """The first error bdrv_reopen_prepare reports for ``new_opts``, or ''.
    QEMU: bdrv_reopen_prepare (bdrv_runtime_opts, "Cannot change the
    option")."""
    for key in _REOPEN_BOOLS:
        v = new_opts.get(key)
        if v is not None and v not in ("on", "off", "true", "false", "yes", "no"):
            return "Parameter '%s' expects 'on' or 'off'" % key
    from gqemu.block import blk_bs
    root = blk_bs(io.blk) if io.blk is not None else None
    nodes = {"": root,
             "file.": root.file.bs if root is not None and root.file else None,
             "backing.": root.backing.bs if root is not None and root.backing else None}
    for prefix, bs in nodes.items():
        for key in _REOPEN_FIXED:
            if prefix + key not in new_opts:
                continue
            if bs is None:                      # no such child: a key of the root
                return "Cannot change the option '%s'" % (prefix + key)
            cur: Optional[str] = bs.node_name if key == "node-name" else \
                (bs.drv.format_name if bs.drv is not None else "")
            if key == "node-name" and not cur:
                cur = None                      # no explicit name: any name is a change
            if new_opts[prefix + key] != cur:
                return "Cannot change the option '%s'" % key
    return ""


# what each driver's reopen takes (besides the generic read-only,
# auto-read-only, cache.*, discard and detect-zeroes); QEMU:
# qcow2_reopen_prepare, raw_reopen_prepare (raw-format, file-posix)
_REOPEN_GENERIC = ("read-only", "auto-read-only", "cache.direct", "cache.no-flush",
                   "discard", "detect-zeroes")
_REOPEN_DRIVER = {"raw": ("offset", "size"), "file": ("drop-cache", "x-check-cache-dropped"),
                  "qcow": (), "null-co": (), "blkdebug": ()}
# drivers without bdrv_reopen_prepare in QEMU 7.2: any reopen fails
_NO_REOPEN = ("compress", "copy-on-read", "quorum")


def _reopen_unsupported(io: QemuIO) -> str:
    """The first node of the reopen queue (the root, then its children,
    depth first) whose driver cannot reopen.  QEMU: bdrv_reopen_prepare
    ("does not support reopening files", after the generic options)."""
    from gqemu.block import blk_bs
    stack = [blk_bs(io.blk) if io.blk is not None else None]
    while stack:
        bs = stack.pop(0)
        if bs is None or bs.drv is None:
            continue
        if bs.drv.format_name in _NO_REOPEN:
            name = io.root_node_name if bs is blk_bs(io.blk) else bs.node_name
            return ("Block format '%s' used by node '%s' does not support reopening "
                    "files" % (bs.drv.format_name, name or io.root_node_name))
        stack[:0] = [c.bs for c in (bs.file, bs.backing) if c is not None]
    return ""


def _qdict_order(key: str) -> tuple[int, int]:
    """Where a key comes in a QDict walk (the bucket of its hash).
    QEMU: tdb_hash, qdict_first/qdict_next (QDICT_BUCKET_MAX 512)."""
    b = key.encode()
    value = (0x238F13AF * len(b)) & 0xffffffff
    for i, c in enumerate(b):
        value = (value + (c << (i * 5 % 24))) & 0xffffffff
    return ((1103515243 * value + 12345) & 0xffffffff) % 512, 0


def _reopen_unchanged(io: QemuIO, new_opts: dict[str, str]) -> str:
    """A node's options that its reopen does not take must keep their
    value: the first other one (QDict order; the root first, then the
    backing and file children) is "Cannot change the option".
    QEMU: bdrv_reopen_prepare (the check at its end)."""
    from gqemu.block import blk_bs
    from gqemu.block.qcow2_options import qcow2_runtime_opts
    root = blk_bs(io.blk) if io.blk is not None else None
    if root is None or root.drv is None:
        return ""
    name, old = io.opened
    nodes: dict[str, tuple[Any, dict[str, Any]]] = {
        "": (root, dict({k: v for k, v in old.opts.items() if "." not in k or
                         k.split(".")[0] not in ("file", "backing")},
                        driver=root.drv.format_name))}
    nodes[""][1].pop("file", None)
    if old.force_share:
        nodes[""][1]["force-share"] = True          # a QBool: no string equals it
    if root.backing is not None and root.backing.bs.drv is not None:
        bopts = {k[8:]: v for k, v in old.opts.items() if k.startswith("backing.")}
        bopts.update(driver=root.backing.bs.drv.format_name)
        nodes["backing"] = (root.backing.bs, bopts)
    if root.file is not None and root.file.bs.drv is not None and \
            root.drv.format_name != "blkdebug":     # (its child is 'image')
        fopts = {k[5:]: v for k, v in old.opts.items() if k.startswith("file.")}
        fopts.update(driver=root.file.bs.drv.format_name,
                     filename=old.opts.get("file", name))
        nodes["file"] = (root.file.bs, fopts)
    per_node: dict[str, dict[str, str]] = {k: {} for k in nodes}
    for key, value in new_opts.items():
        if key == "file":                           # gqemu's file.filename
            per_node.setdefault("file", {})["filename"] = value
            continue
        child, dot, rest = key.partition(".")
        if dot and child in nodes and child:
            per_node[child][rest] = value
            sub, dot, leaf = rest.partition(".")
            if dot and sub in ("file", "backing"):  # a grandchild: its file node
                if leaf in ("driver", "filename") or leaf in _REOPEN_DRIVER["file"]:
                    del per_node[child][rest]       # (taken as unchanged)
                else:
                    return "Cannot change the option '%s'" % leaf.rpartition(".")[2]
        elif not (dot and child in ("file", "backing") and child in nodes):
            per_node[""][key] = value
    names = {n.node_name for n, _ in nodes.values() if n.node_name}
    for child in ("", "backing", "file"):
        if child not in nodes or child not in per_node:
            continue
        bs, effective = nodes[child]
        ref = per_node[child].pop("backing", None)
        if ref is not None and ref not in names:    # a node name to attach
            return "Cannot find device='' nor node-name='%s'" % ref
        fmt = bs.drv.format_name
        if fmt == "qcow2":
            takes = tuple(qcow2_runtime_opts)
        elif fmt in _REOPEN_DRIVER:
            takes = _REOPEN_DRIVER[fmt]
        else:
            continue                                # not modelled: no check
        changed = [k for k in per_node[child]
                   if k not in _REOPEN_GENERIC and k not in takes
                   and not (fmt == "qcow2" and k.startswith("encrypt."))
                   and per_node[child][k] != effective.get(k)]
        if changed:
            return "Cannot change the option '%s'" % min(changed, key=_qdict_order)
    return ""


def quit_f(io: QemuIO, argv: list[str]) -> int:
    io.quit = True
    return 0


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
