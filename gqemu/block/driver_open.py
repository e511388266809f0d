"""Opening a node graph: ``bdrv_open`` (a format node over a protocol
node, with QEMU's format probing), ``bdrv_open_protocol``,
``find_image_format``, ``bdrv_assign_node_name`` and the option checks
of bdrv_open_common.

Sits above gqemu.block.driver (its ``BlockDriverState`` and graph
helpers); driver.py does not import this module.
Must not import: gqemu.block.io*, gqemu.hw, gqemu.kvm or anything above
the block layer (the probe read is io_misc's, handed down to driver.py by
``bdrv_set_sync_io``).
QEMU: block.c (bdrv_open, bdrv_open_inherit, bdrv_open_common,
find_image_format, bdrv_assign_node_name).
"""
from __future__ import annotations

import errno
import os
from typing import Optional

import gqemu.block.driver as _driver
from gqemu.aio import AioContext
from gqemu.block.block_int import warn_report
from gqemu.block.driver import (BDRV_O_COPY_ON_READ, BDRV_O_NO_BACKING, BDRV_O_NO_IO,
                                BDRV_O_PROTOCOL, BDRV_O_RDWR, BDRV_O_UNMAP, BlockDriver,
                                BlockDriverState, BlockError, _opening, _opening_context,
                                bdrv_attach_child, bdrv_child_flags, bdrv_drivers,
                                bdrv_find_format, bdrv_find_protocol, bdrv_getlength,
                                bdrv_probe_all, bdrv_refresh_limits, bdrv_unref,
                                qdict_first_key, refresh_total_sectors)
from gqemu.block.trace_events import trace_bdrv_open_common

__all__ = ["bdrv_open", "bdrv_open_protocol", "find_image_format",
           "bdrv_assign_node_name"]


# -------------------------------------------------------------------- open


def _split_child_options(options: dict, prefix: str) -> dict:
    out = {}
    for k in [k for k in options if k.startswith(prefix)]:
        out[k[len(prefix):]] = options.pop(k)
    return out


def _check_copy_on_read(flags: int) -> None:
    """QEMU: bdrv_open_common (before the driver opens the node)."""
    if flags & BDRV_O_COPY_ON_READ and not flags & BDRV_O_RDWR:
        raise BlockError(errno.EINVAL, "Can't use copy-on-read on read-only device")


def _check_leftover(bs: BlockDriverState, options: dict) -> None:
    if options:
        key = qdict_first_key(options)
        drv = bs.drv
        if drv is not None and drv.protocol_name and drv.bdrv_file_open is not None:
            raise BlockError(errno.EINVAL, "Block protocol '%s' doesn't support the "
                             "option '%s'" % (drv.format_name, key))
        raise BlockError(errno.EINVAL, "Block format '%s' does not support the "
                         "option '%s'" % (drv.format_name if drv else "?", key))


def bdrv_assign_node_name(bs: BlockDriverState, options: dict) -> None:
    """Take ``node-name`` out of the options: a letter, then letters,
    digits, '-', '.' or '_', under 32 characters.  Names are not registered
    graph-wide (gqemu's tools open one graph).  QEMU: bdrv_assign_node_name."""
    name = options.pop("node-name", None)
    if name is None:
        return
    name = str(name)
    if not (name[:1].isascii() and name[:1].isalpha()) or not all(
            c.isascii() and (c.isalnum() or c in "-._") for c in name):
        raise BlockError(errno.EINVAL, "Invalid node-name: '%s'" % name)
    if len(name) >= 32:
        raise BlockError(errno.EINVAL, "Node name too long")
    bs.node_name = name


def _finish_open(bs: BlockDriverState, options: dict) -> None:
    _check_leftover(bs, options)
    ret = refresh_total_sectors(bs, bs.total_sectors)
    # (bdrv_open_common keeps the answer in an int: a length from 2^63
    # on, negative as an int64_t, is cut to its low 32 bits)
    ret = ((ret + (1 << 31)) & 0xffffffff) - (1 << 31)
    if ret < 0:
        raise BlockError(-ret, "Could not refresh total sector count: %s"
                         % os.strerror(-ret))
    bdrv_refresh_limits(bs)


def bdrv_open_protocol(cls: type[BlockDriver], filename: str, options: dict,
                       flags: int, ctx: Optional[AioContext] = None
                       ) -> BlockDriverState:
    """Open a protocol node (file, null-co, blkdebug) in ``ctx`` (default:
    the opener's).  QEMU: bdrv_open_common for protocol drivers."""
    if cls.protocol_name in ("file", "host_device", "host_cdrom") and not filename \
            and not options.get("filename"):
        # QEMU: bdrv_open_common, bdrv_needs_filename
        raise BlockError(errno.EINVAL, "The '%s' block driver requires a file name"
                         % cls.format_name)
    drv = cls()
    bs = BlockDriverState(drv, filename, flags | BDRV_O_PROTOCOL, ctx)
    saved, _opening.ctx = _opening.ctx, bs.aio_context
    trace_bdrv_open_common(bs, filename, flags, drv.format_name)
    try:
        bdrv_assign_node_name(bs, options)
        assert drv.bdrv_file_open is not None
        drv.bdrv_file_open(bs, filename, options, flags)
        _finish_open(bs, options)
    except BaseException:
        bdrv_unref(bs)
        raise
    finally:
        _opening.ctx = saved
    return bs


def find_image_format(file_bs: BlockDriverState, filename: str) -> type[BlockDriver]:
    """Probe the first 512 bytes.  QEMU: find_image_format."""
    raw = bdrv_drivers["raw"]
    length = bdrv_getlength(file_bs)
    if length == 0:
        return raw
    buf = bytearray(512)
    ret = _driver._bdrv_pread(file_bs, 0, buf, 512)
    if ret < 0:
        raise BlockError(-ret, "Could not read image for determining its "
                         "format: %s" % os.strerror(-ret))
    cls = bdrv_probe_all(bytes(buf), filename)
    if cls is None:
        raise BlockError(errno.ENOENT, "Could not determine image format: "
                         "No compatible driver found")
    return cls


def bdrv_open(filename: str, options: Optional[dict] = None, flags: int = 0,
              protocol_only: bool = False,
              ctx: Optional[AioContext] = None) -> BlockDriverState:
    """Open ``filename`` as a node graph: a format node over a protocol node,
    probing the format when none is given.  ``options`` holds driver keys;
    ``file.KEY`` goes to the protocol node.  Every node of the graph runs
    in ``ctx``; by default the opener's (the bdrv_open in progress, for a
    backing file; else the calling thread's current context).  Raises
    BlockError.  QEMU: bdrv_open / bdrv_open_inherit.
    """
    if ctx is None:
        ctx = _opening_context()
    saved, _opening.ctx = _opening.ctx, ctx
    try:
        return _bdrv_open(filename, options, flags, protocol_only, ctx)
    finally:
        _opening.ctx = saved


def _bdrv_open(filename: str, options: Optional[dict], flags: int,
               protocol_only: bool, ctx: AioContext) -> BlockDriverState:
    options = dict(options or {})
    if filename.startswith("json:") or (not filename and "file.filename" in options):
        from gqemu.block.open_opts import bdrv_fill_options
        name, options = bdrv_fill_options(filename, options)
        filename = name or ""
    if "backing" in options and options["backing"] in ("", None):
        # "backing": null: no backing file; "" too, with QEMU 7.2's warning
        if options.pop("backing") == "":
            warn_report('Use of "backing": "" is deprecated; use "backing": null instead')
        flags |= BDRV_O_NO_BACKING
    drvname = options.pop("driver", None)
    fmt = options.pop("format", None)
    if drvname and fmt and drvname != fmt:
        raise BlockError(errno.EINVAL, "Cannot specify both 'driver' and 'format'")
    drvname = drvname or fmt
    cls: Optional[type[BlockDriver]] = None
    if drvname is not None:
        cls = bdrv_find_format(str(drvname))
        if cls is None:
            raise BlockError(errno.EINVAL, "Unknown driver '%s'" % drvname)
        if cls.bdrv_file_open is not None:
            _check_copy_on_read(flags)
            return bdrv_open_protocol(cls, filename, options, flags, ctx)
    file_opts = _split_child_options(options, "file.")
    if not filename and "driver" not in file_opts:
        if cls is not None and not file_opts:     # a format without its file child
            raise BlockError(errno.EINVAL, "A block device must be specified for \"file\"")
        # no format to probe on no file, or a file child with options but
        # neither a driver nor a name (QEMU: bdrv_open_inherit, bdrv_fill_options)
        raise BlockError(errno.EINVAL, "Must specify either driver or file")
    proto = bdrv_find_protocol(filename) if filename else bdrv_drivers.get("file")
    if proto is None:
        raise BlockError(errno.EINVAL, "Unknown protocol '%s'" % filename.split(":")[0])
    below = bdrv_find_format(str(file_opts["driver"])) if "driver" in file_opts else proto
    for key in ("locking", "aio"):        # gqemu: -drive shorthands for file.KEY
        if key in options:                # (a filter, e.g. blkdebug: its image's)
            prefix = "image." if below is not None and below.is_filter else ""
            file_opts.setdefault(prefix + key, options.pop(key))
    fflags = flags & ~BDRV_O_NO_IO if cls is not None or not protocol_only else flags
    if "driver" in file_opts:             # file.driver=blkdebug, ...
        file_bs = bdrv_open(filename, file_opts, bdrv_child_flags(fflags),
                            protocol_only=True, ctx=ctx)
    else:
        file_bs = bdrv_open_protocol(proto, filename, file_opts, bdrv_child_flags(fflags), ctx)
    if not protocol_only or cls is not None:
        # a format node's file child (and the filters' below it) discards:
        # the format decides what to pass down.  QEMU: bdrv_inherited_options'
        # discard=unmap default, parsed after the bdrv_open_common trace
        node: Optional[BlockDriverState] = file_bs
        while node is not None:
            node.open_flags |= BDRV_O_UNMAP
            node = node.file.bs if node.drv is not None and node.drv.is_filter \
                and node.file is not None else None
    if protocol_only and cls is None:
        _check_leftover(file_bs, options)
        return file_bs
    probed = False
    try:
        if cls is None:
            cls = find_image_format(file_bs, filename)
            probed = True
    except BaseException:
        bdrv_unref(file_bs)
        raise
    try:
        _check_copy_on_read(flags)    # after the file's errors, before the format's
    except BlockError:
        bdrv_unref(file_bs)
        raise
    drv = cls()
    if filename.startswith("file:"):      # the name the file node took
        filename = file_bs.filename
    bs = BlockDriverState(drv, filename, flags, ctx)
    bs.probed = probed
    trace_bdrv_open_common(bs, filename, flags, drv.format_name)
    bs.file = bdrv_attach_child(bs, file_bs, "file")   # takes our reference
    try:
        bdrv_assign_node_name(bs, options)
        assert drv.bdrv_open is not None, "format driver without bdrv_open"
        drv.bdrv_open(bs, options, flags)
        if options.get("backing") and not drv.supports_backing \
                and not flags & BDRV_O_NO_BACKING:
            # QEMU: bdrv_open_backing_file, for a backing=NAME reference
            raise BlockError(errno.EINVAL, "Driver doesn't support backing files")
        _finish_open(bs, options)
    except BaseException:
        bdrv_unref(bs)
        raise
    return bs
