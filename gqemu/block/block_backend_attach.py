"""BlockBackend itself: the object a device or tool holds, opening one
from ``-drive`` options with its root attached and its permissions taken
(``blk_new_open``, ``blk_set_perm``), closing (``blk_unref``,
``blk_drain``), its queries, and the range check every request makes
(``blk_check_byte_request``: a request crossing the end fails with -EIO).
block_backend.py (the request wrappers) sits above this module and
re-exports every name here.

Must not import: gqemu.block.block_backend, gqemu.hw, gqemu.kvm or
anything above the block layer.
QEMU: block/block-backend.c (2.8): blk_new_open, blk_set_perm, blk_unref,
blk_drain, blk_getlength, blk_check_byte_request.
"""
from __future__ import annotations

import errno
from typing import Any, Callable, Optional

from gqemu.aio import AioContext, aio_wait_while
from gqemu.block.accounting import BlockAcctStats
from gqemu.block.block_int import BDRV_O_NO_SHARE
from gqemu.block.drive_opts import parse_drive_options
from gqemu.block.driver import (BDRV_O_COPY_ON_READ, BDRV_O_RDWR, BLK_PERM_ALL,
                                BLK_PERM_CONSISTENT_READ, BLK_PERM_WRITE,
                                BLK_PERM_WRITE_UNCHANGED, INT_MAX, BdrvChild,
                                BlockDriverState, BlockError, bdrv_getlength,
                                bdrv_unref, qemu_opt_bool)
from gqemu.block.perms import bdrv_refresh_perms
from gqemu.block.driver_open import bdrv_open
from gqemu.block.io_misc import bdrv_drain

__all__ = [
    "BlockBackend", "blk_new_open", "blk_unref", "blk_bs", "blk_getlength",
    "blk_nb_sectors", "blk_is_read_only", "blk_is_inserted", "blk_is_available",
    "blk_get_aio_context", "blk_enable_write_cache", "blk_set_enable_write_cache",
    "blk_get_stats", "blk_set_perm", "blk_check_byte_request", "blk_drain",
]


class BlockBackend:
    """QEMU: BlockBackend.  ``stopped`` is True after a ``stop`` error action
    until ``blk_resume``; ``io_error_events`` records each BLOCK_IO_ERROR."""

    def __init__(self, ctx: AioContext) -> None:
        self.name = ""
        self.root: Optional[BdrvChild] = None
        self.ctx = ctx
        self.refcnt = 1
        self.in_flight = 0
        self.enable_write_cache = True
        self.allow_write_beyond_eof = False
        self.on_read_error = 0
        self.on_write_error = 2
        self.iostatus_enabled = True
        self.iostatus = 0
        self.stopped = False
        self.io_error_events: list[dict] = []
        self.stop_handlers: list[tuple[Callable[[Any, Any], Any], Any]] = []
        self.resume_handlers: list[tuple[Callable[[Any], Any], Any]] = []
        self.stats = BlockAcctStats()
        self.perm = 0
        self.shared_perm = BLK_PERM_ALL
        self.device: dict = {}
        self.dev: Any = None

    def __repr__(self) -> str:
        return "<BlockBackend %s %r>" % (self.name, self.root.bs if self.root else None)


def blk_new_open(filename: Optional[str], options: Optional[dict] = None,
                 flags: int = 0, ctx: Optional[AioContext] = None) -> BlockBackend:
    """Open an image from ``-drive``-style options (``format``, ``cache``,
    ``readonly``, ``rerror``, ``werror``, ``discard``, ``aio``,
    ``share-rw``, driver keys, ``file.KEY``).  Read-write unless
    ``readonly=on``; ``flags`` adds BDRV_O_* bits.  The backend and its
    nodes run in ``ctx``, by default the calling thread's current context.
    Raises BlockError (one-line message; ``hint`` for lock conflicts).
    QEMU: blk_new_open.
    """
    if (filename or "").startswith("json:") or (options and "file.filename" in options):
        from gqemu.block.open_opts import bdrv_fill_options
        filename, options = bdrv_fill_options(filename, options or {})
    options = dict(options or {})
    snapshot = qemu_opt_bool(options, "snapshot", False)
    d = parse_drive_options(options, flags)
    filename = filename or d.filename
    if not filename and "driver" not in d.bdrv_options and "format" not in d.bdrv_options:
        if not any(k.startswith("file.") for k in d.bdrv_options):
            # QEMU: bdrv_open_inherit, no format to probe on no file
            raise BlockError(errno.EINVAL, "Must specify either driver or file")
    if snapshot:                           # qemu-io -s: a temporary overlay on top
        from gqemu.block.snapshot_overlay import bdrv_append_temp_snapshot
        # (the image below is read-only and copies nothing up: QEMU's
        # bdrv_backing_options)
        base = bdrv_open(filename or "", d.bdrv_options,
                         d.flags & ~(BDRV_O_RDWR | BDRV_O_COPY_ON_READ), ctx=ctx)
        try:
            bs = bdrv_append_temp_snapshot(base, d.flags)
        except BaseException:
            bdrv_unref(base)
            raise
    else:
        bs = bdrv_open(filename or "", d.bdrv_options, d.flags, ctx=ctx)
    bs.detect_zeroes = d.detect_zeroes
    blk = BlockBackend(bs.aio_context)
    blk.enable_write_cache = d.enable_write_cache
    blk.on_read_error = d.on_read_error
    blk.on_write_error = d.on_write_error
    blk.device = d.device
    perm = BLK_PERM_CONSISTENT_READ | (BLK_PERM_WRITE if d.flags & BDRV_O_RDWR else 0)
    shared = BLK_PERM_ALL
    if d.flags & BDRV_O_NO_SHARE:           # e.g. qemu-img convert's sources
        shared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED
    if d.share_rw is not None:
        shared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED
        if d.share_rw:
            shared |= BLK_PERM_WRITE
    blk.root = BdrvChild(bs, "root", blk, perm, shared)
    bs.parents.append(blk.root)
    try:
        bdrv_refresh_perms(bs)
    except BaseException:
        bs.parents.remove(blk.root)
        blk.root = None
        bdrv_unref(bs)
        raise
    blk.perm, blk.shared_perm = perm, shared
    return blk


def blk_set_perm(blk: BlockBackend, perm: int, shared_perm: int) -> None:
    """Change what this user needs and shares; on a conflict keep the old
    permissions and raise BlockError.  QEMU: blk_set_perm."""
    root = blk.root
    if root is None:
        blk.perm, blk.shared_perm = perm, shared_perm
        return
    old = root.perm, root.shared_perm
    root.perm, root.shared_perm = perm, shared_perm
    try:
        bdrv_refresh_perms(root.bs)
    except BlockError:
        root.perm, root.shared_perm = old
        bdrv_refresh_perms(root.bs)
        raise
    blk.perm, blk.shared_perm = perm, shared_perm


def blk_unref(blk: Optional[BlockBackend]) -> None:
    """Drop a reference; the last one drains and closes the graph.
    QEMU: blk_unref."""
    if blk is None:
        return
    blk.refcnt -= 1
    if blk.refcnt > 0:
        return
    if blk.root is not None:
        blk_drain(blk)
        bs = blk.root.bs
        bs.parents.remove(blk.root)
        blk.root = None
        bdrv_unref(bs)


def blk_bs(blk: BlockBackend) -> Optional[BlockDriverState]:
    return blk.root.bs if blk.root is not None else None


def blk_is_inserted(blk: BlockBackend) -> bool:
    bs = blk_bs(blk)
    return bs is not None and bs.drv is not None


blk_is_available = blk_is_inserted


def blk_is_read_only(blk: BlockBackend) -> bool:
    """QEMU: blk_is_read_only."""
    bs = blk_bs(blk)
    return bs.read_only if bs is not None else True


def blk_get_aio_context(blk: BlockBackend) -> AioContext:
    return blk.ctx


def blk_enable_write_cache(blk: BlockBackend) -> bool:
    return blk.enable_write_cache


def blk_set_enable_write_cache(blk: BlockBackend, wce: bool) -> None:
    blk.enable_write_cache = wce


def blk_get_stats(blk: BlockBackend) -> BlockAcctStats:
    return blk.stats


def blk_getlength(blk: BlockBackend) -> int:
    """Bytes, or -ENOMEDIUM.  QEMU: blk_getlength."""
    bs = blk_bs(blk)
    if bs is None:
        return -errno.ENOMEDIUM
    return bdrv_getlength(bs)


def blk_nb_sectors(blk: BlockBackend) -> int:
    """Length in 512-byte sectors (0 without medium; IDE's geometry).
    QEMU: blk_get_geometry."""
    n = blk_getlength(blk)
    return n >> 9 if n > 0 else 0


def blk_check_byte_request(blk: BlockBackend, offset: int, size: int) -> int:
    """QEMU: blk_check_byte_request.  Returns 0, -EIO or -ENOMEDIUM.
    (blk_is_available and blk_getlength are inlined: this runs on every
    request.)"""
    if size > INT_MAX or size < 0:
        return -errno.EIO
    root = blk.root
    bs = root.bs if root is not None else None
    if bs is None or bs.drv is None:
        return -errno.ENOMEDIUM
    if offset < 0:
        return -errno.EIO
    if not blk.allow_write_beyond_eof:
        length = bdrv_getlength(bs)
        if length < 0:
            return length
        if offset > length or length - offset < size:
            return -errno.EIO
    return 0


def blk_drain(blk: BlockBackend) -> None:
    """Run the loop until every request of ``blk`` has completed.
    Context: loop.  QEMU: blk_drain."""
    aio_wait_while(blk.ctx, lambda: blk.in_flight > 0)
    bs = blk_bs(blk)
    if bs is not None:
        bdrv_drain(bs)
