"""The node graph: ``BlockDriverState``, ``BdrvChild``, references and
closing, lengths and limits, ``bdrv_debug_event``/``BLKDBG_EVENT``; and
the names every driver imports, re-exported from below: block_int.py's
constants and ``BlockError``/``BlockLimits``, driver_registry.py's
``BlockDriver`` and registry.  Opening a graph (``bdrv_open``, probing) is
driver_open.py's, and the permissions (``bdrv_refresh_perms``,
``bdrv_filter_default_perms``, ...) are perms.py's; both sit above this
module.

A driver class is the vtable (QEMU's ``BlockDriver``); its instance is the
node's state (QEMU's ``bs->opaque``), so ``bs.drv is bs.opaque``.  Slots a
driver does not implement stay ``None``; ``io.py`` checks for them as
block/io.c checks for NULL function pointers.

The synchronous I/O that closing and probing need (``bdrv_flush`` before
a node closes, ``bdrv_pread`` of the probe sector) is io_misc.py's, which
sits above this module: io_misc hands both down when it is imported
(``bdrv_set_sync_io``; the package imports it before any node is opened).

Must not import: gqemu.block.driver_open, gqemu.block.perms, gqemu.block.io*,
gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block.c, include/block/block_int.h.
"""
from __future__ import annotations

import errno
import threading
from typing import Any, Callable, Optional

from gqemu.aio import AioContext, qemu_get_current_aio_context
from gqemu.block.driver_registry import (BlockDriver, bdrv_drivers,  # noqa: F401 (re-exported)
                                         bdrv_find_format, bdrv_find_protocol,
                                         bdrv_probe_all, bdrv_register)

__all__ = [
    "BlockError", "BlockDriver", "BlockDriverState", "BdrvChild", "BlockLimits",
    "bdrv_register", "bdrv_find_format", "bdrv_find_protocol", "bdrv_drivers",
    "bdrv_unref", "bdrv_ref", "bdrv_probe_all", "bdrv_getlength",
    "bdrv_nb_sectors", "refresh_total_sectors", "bdrv_refresh_limits",
    "bdrv_get_aio_context", "bdrv_is_read_only", "bdrv_debug_event",
    "BLKDBG_EVENT", "error_report", "set_error_sink",
    "qemu_opt_bool", "qemu_opt_size", "qemu_opt_str", "qdict_first_key",
]

from gqemu.block.block_int import (  # noqa: F401  (re-exported)
    BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW, BDRV_MAX_LENGTH,
    BDRV_BLOCK_ZERO, BDRV_O_ALLOW_RDWR, BDRV_O_CACHE_MASK, BDRV_O_CHECK,
    BDRV_O_COPY_ON_READ, BDRV_O_INACTIVE, BDRV_O_IO_URING, BDRV_O_NATIVE_AIO,
    BDRV_O_NOCACHE, BDRV_O_NOWAIT, BDRV_O_NO_BACKING, BDRV_O_NO_FLUSH, BDRV_O_NO_IO,
    BDRV_O_PROTOCOL,
    BDRV_O_RDWR, BDRV_O_RESIZE, BDRV_O_SNAPSHOT, BDRV_O_TEMPORARY, BDRV_O_UNMAP,
    BDRV_REQUEST_MAX_BYTES, BDRV_REQUEST_MAX_SECTORS, BDRV_REQ_COPY_ON_READ,
    BDRV_REQ_FUA, BDRV_REQ_MASK, BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK, BDRV_REQ_NO_SERIALISING,
    BDRV_REQ_WRITE_COMPRESSED, BDRV_REQ_ZERO_WRITE, BDRV_SECTOR_BITS, BDRV_SECTOR_SIZE,
    BLK_PERM_ALL, BLK_PERM_CONSISTENT_READ, BLK_PERM_RESIZE, BLK_PERM_WRITE,
    BLK_PERM_WRITE_UNCHANGED, BlockError, BlockLimits, INT_MAX, _PERM_NAMES,
    _min_non_zero, error_report, qemu_opt_bool, qemu_opt_size, qemu_opt_str,
    set_error_sink,
)

# ------------------------------------------------------------------- graph


class BdrvChild:
    """An edge: ``parent`` (a node or BlockBackend) uses ``bs`` as ``name``.
    QEMU: BdrvChild."""

    __slots__ = ("bs", "name", "role", "parent", "perm", "shared_perm")

    def __init__(self, bs: "BlockDriverState", name: str, parent: Any,
                 perm: int = 0, shared_perm: int = BLK_PERM_ALL) -> None:
        self.bs = bs
        self.name = name
        self.role = name
        self.parent = parent
        self.perm = perm
        self.shared_perm = shared_perm

    def __repr__(self) -> str:
        return "<BdrvChild %s -> %r>" % (self.name, self.bs)


class BdrvTrackedRequest:
    """An in-flight request on a node.  QEMU: BdrvTrackedRequest."""

    __slots__ = ("bs", "offset", "bytes", "type", "serialising", "overlap_offset",
                 "overlap_bytes", "co", "wait_queue", "waiting_for")

    bs: "BlockDriverState"
    offset: int
    bytes: int
    type: int
    serialising: bool
    overlap_offset: int
    overlap_bytes: int
    co: Any
    wait_queue: Any
    waiting_for: Optional["BdrvTrackedRequest"]


class BlockDriverState:
    """One node of the graph.  QEMU: BlockDriverState."""

    def __init__(self, drv: BlockDriver, filename: str, flags: int,
                 ctx: Optional[AioContext] = None) -> None:
        from gqemu.coroutine import CoQueue
        self.drv: Optional[BlockDriver] = drv
        self.opaque = drv
        self.filename = filename
        self.open_flags = flags
        self.read_only = not (flags & BDRV_O_RDWR)
        self.probed = False
        self.file: Optional[BdrvChild] = None
        self.backing: Optional[BdrvChild] = None
        self.children: list[BdrvChild] = []
        self.parents: list[BdrvChild] = []
        self.bl = BlockLimits()
        self.total_sectors = 0
        self.supported_write_flags = 0
        self.supported_zero_flags = 0
        self.copy_on_read = 1 if flags & BDRV_O_COPY_ON_READ else 0
        self.detect_zeroes = "off"
        self.in_flight = 0
        self.tracked_requests: list[Any] = []
        self.serialising_in_flight = 0
        self.write_gen = 0
        self.flushed_gen = 0
        self.active_flush_req = False
        self.flush_queue = CoQueue()
        self.wr_highest_offset = 0
        self.dirty_bitmaps: list[Any] = []       # dirty_bitmap.py, newest first
        self.quiesce_counter = 0
        self.before_write_notifiers: list[Callable[[Any], int]] = []
        self.aio_context: AioContext = ctx or _opening_context()
        self.refcnt = 1
        self.node_name = ""
        self.perm = 0
        self.shared_perm = BLK_PERM_ALL

    def __repr__(self) -> str:
        name = self.drv.format_name if self.drv else "-"
        return "<BlockDriverState %s %s>" % (name, self.filename)


def bdrv_get_aio_context(bs: BlockDriverState) -> AioContext:
    """The context ``bs`` runs its I/O in: its opener's.
    QEMU: bdrv_get_aio_context."""
    return bs.aio_context


class _Opening(threading.local):
    ctx: Optional[AioContext] = None    # of the bdrv_open running here


_opening = _Opening()


def _opening_context() -> AioContext:
    # A node inherits the context of whoever opens it: the bdrv_open in
    # progress on this thread (children, backing files), else the thread's.
    return _opening.ctx or qemu_get_current_aio_context()


def bdrv_is_read_only(bs: BlockDriverState) -> bool:
    return bs.read_only


def bdrv_attach_child(parent_bs: BlockDriverState, child_bs: BlockDriverState,
                      name: str) -> BdrvChild:
    """Link ``child_bs`` under ``parent_bs``.  QEMU: bdrv_attach_child."""
    child = BdrvChild(child_bs, name, parent_bs)
    parent_bs.children.append(child)
    child_bs.parents.append(child)
    return child


def bdrv_ref(bs: BlockDriverState) -> None:
    bs.refcnt += 1


def _no_sync_io(*_args: Any) -> int:
    raise RuntimeError("gqemu.block.io_misc is not imported")


# io_misc's bdrv_flush(bs) and bdrv_pread(child, offset, buf, nbytes),
# handed down by bdrv_set_sync_io.
_bdrv_flush: Callable[[BlockDriverState], int] = _no_sync_io
_bdrv_pread: Callable[[Any, int, Any, int], int] = _no_sync_io


def bdrv_set_sync_io(flush: Callable[[BlockDriverState], int],
                     pread: Callable[[Any, int, Any, int], int]) -> None:
    """Called by gqemu.block.io_misc when it is imported: the synchronous
    flush and read that bdrv_unref and find_image_format use."""
    global _bdrv_flush, _bdrv_pread
    _bdrv_flush = flush
    _bdrv_pread = pread


def bdrv_unref(bs: Optional[BlockDriverState]) -> None:
    """Drop a reference; the last one flushes and closes the node, then its
    children.  QEMU: bdrv_unref / bdrv_close."""
    if bs is None:
        return
    bs.refcnt -= 1
    if bs.refcnt > 0:
        return
    drv = bs.drv
    if drv is not None:
        # what the driver still caches goes out first (errors are ignored)
        _bdrv_flush(bs)
    if drv is not None and drv.bdrv_close is not None:
        drv.bdrv_close(bs)
    bs.drv = None
    for child in bs.children:
        child.bs.parents.remove(child)
        bdrv_unref(child.bs)
    bs.children = []
    bs.file = bs.backing = None


# ---------------------------------------------------------------- debug


def bdrv_child_flags(flags: int) -> int:
    """The open flags a child node inherits: those of its parent without
    the ones that only apply to the top node (copy-on-read).
    QEMU: bdrv_inherited_options ("flags that only apply to the top layer")."""
    return flags & ~BDRV_O_COPY_ON_READ


def bdrv_debug_event(bs: Optional[BlockDriverState], event: int) -> None:
    """Tell blkdebug (if it is this node) that ``event`` happened.
    QEMU: bdrv_debug_event."""
    if bs is None or bs.drv is None or bs.drv.bdrv_debug_event is None:
        return
    bs.drv.bdrv_debug_event(bs, event)


def BLKDBG_EVENT(child: Optional[BdrvChild], event: int) -> None:
    """QEMU: the BLKDBG_EVENT(child, evt) macro."""
    if child is not None:                   # bdrv_debug_event, inlined
        bs = child.bs
        if bs is not None:
            drv = bs.drv
            if drv is not None and drv.bdrv_debug_event is not None:
                drv.bdrv_debug_event(bs, event)


# ----------------------------------------------------------- length, limits


def refresh_total_sectors(bs: BlockDriverState, hint: int) -> int:
    """QEMU: refresh_total_sectors.  Returns 0 or -errno."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    if drv.bdrv_getlength is not None:
        length = drv.bdrv_getlength(bs)
        if length < 0:
            return length
        hint = (length + BDRV_SECTOR_SIZE - 1) >> BDRV_SECTOR_BITS
    bs.total_sectors = hint
    if hint * BDRV_SECTOR_SIZE > BDRV_MAX_LENGTH:     # e.g. a qcow2 size from 2^63
        return -errno.EFBIG
    return 0


def bdrv_nb_sectors(bs: BlockDriverState) -> int:
    """QEMU: bdrv_nb_sectors.  Returns sectors or -errno."""
    length = bdrv_getlength(bs)
    return length if length < 0 else length >> BDRV_SECTOR_BITS


def bdrv_getlength(bs: BlockDriverState) -> int:
    """Length in bytes (a multiple of 512) or -errno.  QEMU: bdrv_getlength
    (bdrv_nb_sectors inlined: it runs several times per request)."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    if drv.has_variable_length:
        # refresh_total_sectors(bs, bs.total_sectors), inlined
        getlength = drv.bdrv_getlength
        if getlength is not None:
            length = getlength(bs)
            if length < 0:
                return length
            bs.total_sectors = (length + BDRV_SECTOR_SIZE - 1) >> BDRV_SECTOR_BITS
    return bs.total_sectors * BDRV_SECTOR_SIZE


def bdrv_refresh_limits(bs: BlockDriverState) -> None:
    """Zero the limits, merge the children's, run the driver hook.
    QEMU: bdrv_refresh_limits."""
    drv = bs.drv
    bl = bs.bl
    bs.bl = bl = BlockLimits()
    bl.request_alignment = 1 if drv is not None and drv.bdrv_co_preadv else 512
    bl.max_iov = 0
    bl.min_mem_alignment = bl.opt_mem_alignment = 0
    for child in (bs.file, bs.backing):
        if child is None:
            continue
        c = child.bs.bl
        bl.opt_transfer = max(bl.opt_transfer, c.opt_transfer)
        bl.max_transfer = _min_non_zero(bl.max_transfer, c.max_transfer)
        bl.min_mem_alignment = max(bl.min_mem_alignment, c.min_mem_alignment)
        bl.opt_mem_alignment = max(bl.opt_mem_alignment, c.opt_mem_alignment)
        bl.max_iov = _min_non_zero(bl.max_iov, c.max_iov)
    bl.max_iov = bl.max_iov or 1024
    bl.min_mem_alignment = bl.min_mem_alignment or 1
    bl.opt_mem_alignment = bl.opt_mem_alignment or 1
    if drv is not None and drv.bdrv_refresh_limits is not None:
        drv.bdrv_refresh_limits(bs)


# ------------------------------------------------------------ qdict


def _tdb_hash(name: str) -> int:
    """QEMU: qobject/qdict.c tdb_hash (32-bit)."""
    data = name.encode()
    value = 0x238F13AF * len(data) & 0xffffffff
    for i, c in enumerate(data):
        value = (value + (c << (i * 5 % 24))) & 0xffffffff
    return (1103515243 * value + 12345) & 0xffffffff


def qdict_first_key(keys: Any) -> str:
    """The key qdict_first() returns for a QDict holding ``keys`` (inserted
    in that order): the lowest of its 512 hash buckets, the latest inserted
    key within one.  QEMU: qdict_first, QDICT_BUCKET_MAX."""
    keys = list(keys)
    return min(reversed(keys), key=lambda k: _tdb_hash(k) % 512)
