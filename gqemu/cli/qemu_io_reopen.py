"""qemu-io's reopen command: new read-only, cache or driver options for the
open image, checked as bdrv_reopen does; gqemu closes the node and opens
it again with them (QEMU reopens in place).

Context: the main loop, outside coroutines.  Returns: 0, or -errno after
printing the error as qemu-io does.

Must not import at module level: gqemu.block; never gqemu.hw, gqemu.kvm.
QEMU: qemu-io-cmds.c (reopen_f), block.c (bdrv_reopen_prepare).
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Optional

from gqemu.cli.qemu_io_help import REOPEN_HELP
from gqemu.cli.qemu_io_getopt import Getopt
from gqemu.cli.qemu_io_open import (_CACHE_KEYS, _FILE_REF, OpenOpts, blk_open, openfile,
                                    parse_qemu_opts)
from gqemu.cli.qemu_io_util import cmdinfo_t, err, error_report, qemuio_command_usage

if TYPE_CHECKING:
    from gqemu.cli.qemu_io import QemuIO   # it imports the command modules


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


reopen_cmd = cmdinfo_t("reopen", reopen_f, argmin=0, argmax=-1,
                       args="[(-r|-w)] [-c cache] [-o options]",
                       oneline="reopens an image with new options",
                       help=REOPEN_HELP)
