"""Block drivers and the node graph: ``BlockDriver``, the registry,
``BlockDriverState``, ``BdrvChild``, ``BlockLimits``, permissions, and
``bdrv_open`` with QEMU's format probing.

A driver class is the vtable (QEMU's ``BlockDriver``); its instance is the
node's state (QEMU's ``bs->opaque``), so ``bs.drv is bs.opaque``.  Slots a
driver does not implement stay ``None``; ``io.py`` checks for them as
block/io.c checks for NULL function pointers.

The synchronous I/O that closing and probing need (``bdrv_flush`` before
a node closes, ``bdrv_pread`` of the probe sector) is io_misc.py's, which
sits above this module: io_misc hands both down when it is imported
(``bdrv_set_sync_io``; the package imports it before any node is opened).

Must not import: gqemu.block.io*, gqemu.hw, gqemu.kvm or anything above
the block layer.
QEMU: block.c, include/block/block_int.h.
"""
from __future__ import annotations

import errno
import os
import threading
from typing import Any, Callable, Iterator, Mapping, Optional

from gqemu.aio import AioContext, qemu_get_current_aio_context
from gqemu.block.module_block import block_driver_modules, block_module_load
from gqemu.block.perms import (bdrv_filter_default_perms,  # noqa: F401 (re-exported)
                               bdrv_format_default_perms, bdrv_get_cumulative_perm,
                               bdrv_perm_names, bdrv_refresh_perms)
from gqemu.block.trace_events import trace_bdrv_open_common

__all__ = [
    "BlockError", "BlockDriver", "BlockDriverState", "BdrvChild", "BlockLimits",
    "bdrv_register", "bdrv_find_format", "bdrv_find_protocol", "bdrv_drivers",
    "bdrv_open", "bdrv_unref", "bdrv_ref", "bdrv_probe_all", "bdrv_getlength",
    "bdrv_nb_sectors", "refresh_total_sectors", "bdrv_refresh_limits",
    "bdrv_get_aio_context", "bdrv_is_read_only", "bdrv_debug_event",
    "BLKDBG_EVENT", "bdrv_filter_default_perms", "bdrv_format_default_perms",
    "bdrv_refresh_perms", "bdrv_perm_names", "error_report", "set_error_sink",
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

# ----------------------------------------------------------------- drivers


class BlockDriver:
    """The driver vtable; an instance is one node's state.

    Slots (``None`` = not implemented), all taking ``bs`` first:
    ``bdrv_open(bs, options, flags)`` (formats) / ``bdrv_file_open(bs,
    filename, options, flags)`` (protocols) raise BlockError;
    ``bdrv_close``; ``bdrv_co_preadv/pwritev(bs, offset, nbytes, qiov,
    flags)``; ``bdrv_co_flush``, ``bdrv_co_flush_to_os``,
    ``bdrv_co_flush_to_disk`` (blkdebug) or ``bdrv_aio_flush(bs, cb, opaque)
    -> acb`` (file-posix, as QEMU 2.8's raw-posix: through the thread pool);
    ``bdrv_co_pdiscard(bs, offset, nbytes)``;
    ``bdrv_co_pwrite_zeroes(bs, offset, nbytes, flags)``;
    ``bdrv_co_get_block_status(bs, offset, nbytes) -> (ret, pnum, map, file)``
    (flags apart from the host offset ``map``; see io_status.py);
    ``bdrv_getlength(bs)``; ``bdrv_truncate(bs, offset)``;
    ``bdrv_refresh_limits(bs)``; ``bdrv_get_info(bs) -> dict``;
    ``bdrv_amend_options(bs, opts, status_cb, force) -> (ret, msg)`` (from
    the loop, ``opts`` typed by ``amend_opts``);
    ``bdrv_debug_event(bs, event)``, ``bdrv_debug_breakpoint(bs, event_name,
    tag)``, ``bdrv_debug_remove_breakpoint/bdrv_debug_resume(bs, tag)``,
    ``bdrv_debug_is_suspended(bs, tag)`` (blkdebug); ``bdrv_check_perm/bdrv_set_perm(bs,
    perm, shared)``; ``bdrv_child_perm(bs, child, role, perm, shared)``.
    ``bdrv_probe(buf, filename) -> score`` is a staticmethod.
    QEMU: struct BlockDriver.
    """

    format_name: str = ""
    protocol_name: Optional[str] = None
    is_filter = False
    has_variable_length = False
    supports_backing = False
    # (name, type, help) of the creation options as qemu-img lists them, types
    # "str", "bool", "num", "size"; none: no image creation (QEMU: create_opts)
    create_opts: tuple[tuple[str, str, str], ...] = ()
    # (name, type, help) of the options ``qemu-img amend`` takes (QEMU: amend_opts)
    amend_opts: tuple[tuple[str, str, str], ...] = ()

    bdrv_probe: Optional[Callable[[bytes, str], int]] = None
    bdrv_open: Optional[Callable[..., None]] = None
    bdrv_file_open: Optional[Callable[..., None]] = None
    bdrv_close: Optional[Callable[..., None]] = None
    bdrv_co_preadv: Optional[Callable[..., int]] = None
    bdrv_co_pwritev: Optional[Callable[..., int]] = None
    bdrv_co_pwritev_compressed: Optional[Callable[..., int]] = None
    bdrv_co_flush: Optional[Callable[..., int]] = None
    bdrv_co_flush_to_os: Optional[Callable[..., int]] = None
    bdrv_co_flush_to_disk: Optional[Callable[..., int]] = None
    bdrv_aio_flush: Optional[Callable[..., Any]] = None
    bdrv_co_pdiscard: Optional[Callable[..., int]] = None
    bdrv_co_pwrite_zeroes: Optional[Callable[..., int]] = None
    bdrv_co_get_block_status: Optional[Callable[..., Any]] = None
    bdrv_getlength: Optional[Callable[..., int]] = None
    bdrv_truncate: Optional[Callable[..., int]] = None
    bdrv_refresh_limits: Optional[Callable[..., None]] = None
    bdrv_get_info: Optional[Callable[..., Any]] = None
    bdrv_debug_event: Optional[Callable[..., None]] = None
    bdrv_debug_breakpoint: Optional[Callable[..., int]] = None
    bdrv_debug_remove_breakpoint: Optional[Callable[..., int]] = None
    bdrv_debug_resume: Optional[Callable[..., int]] = None
    bdrv_debug_is_suspended: Optional[Callable[..., bool]] = None
    bdrv_check_perm: Optional[Callable[..., None]] = None
    bdrv_set_perm: Optional[Callable[..., None]] = None
    bdrv_child_perm: Optional[Callable[..., tuple[int, int]]] = None
    bdrv_has_zero_init: Optional[Callable[..., int]] = None
    bdrv_amend_options: Optional[Callable[..., tuple[int, str]]] = None

    def __repr__(self) -> str:
        return "<BlockDriver %s>" % (self.format_name or self.protocol_name)


class _BlockDrivers(Mapping[str, type[BlockDriver]]):
    """``bdrv_drivers``: every driver by format name, in registration order
    (module_block.py's table, then any driver registered outside it).  The
    names are known from the start; a driver's module is imported when its
    class is first looked up (``bdrv_drivers[name]``, ``.get``,
    ``.values()``), so listing or testing names imports nothing."""

    def __init__(self) -> None:
        self.loaded: dict[str, type[BlockDriver]] = {}
        self.modules = {m.format_name: m.library_name for m in block_driver_modules}

    def __getitem__(self, name: str) -> type[BlockDriver]:
        cls = self.loaded.get(name)
        if cls is None:
            library = self.modules.get(name)
            if library is None:
                raise KeyError(name)
            block_module_load(library)
            cls = self.loaded[name]
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self.modules or name in self.loaded

    def __iter__(self) -> Iterator[str]:
        yield from self.modules
        yield from (n for n in self.loaded if n not in self.modules)

    def __len__(self) -> int:
        return len(self.modules) + sum(1 for n in self.loaded if n not in self.modules)


bdrv_drivers = _BlockDrivers()


def bdrv_register(cls: type[BlockDriver]) -> type[BlockDriver]:
    """Class decorator: add a driver to the registry (when its module is
    imported).  QEMU: bdrv_register."""
    name = cls.format_name
    assert name and name not in bdrv_drivers.loaded, "driver %r registered twice" % name
    bdrv_drivers.loaded[name] = cls
    return cls


def bdrv_find_format(name: str) -> Optional[type[BlockDriver]]:
    """The driver of that format name, its module imported on first use.
    QEMU: bdrv_find_format (with block_module_load)."""
    return bdrv_drivers.get(name)


def bdrv_find_protocol(filename: str) -> Optional[type[BlockDriver]]:
    """The protocol named by a ``proto:`` prefix (before any '/'), else a
    driver whose ``bdrv_probe_device`` claims the file (host_device for
    /dev nodes), else file.  QEMU: bdrv_find_protocol."""
    colon = filename.find(":")
    slash = filename.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        prefix = filename[:colon]
        for m in block_driver_modules:
            if m.protocol_name == prefix:
                return bdrv_drivers[m.format_name]
        for cls in bdrv_drivers.loaded.values():
            if cls.protocol_name == prefix:
                return cls
        return None
    for m in block_driver_modules:
        if m.probe_device:
            probe = getattr(bdrv_drivers[m.format_name], "bdrv_probe_device")
            if probe(filename):
                return bdrv_drivers[m.format_name]
    return bdrv_drivers.get("file")


def bdrv_probe_all(buf: bytes, filename: str) -> Optional[type[BlockDriver]]:
    """Highest probe score wins; ties go to registration order.  Imports
    the drivers that probe (module_block.py's ``probe`` column).
    QEMU: bdrv_probe_all."""
    best, best_score = None, 0
    for name in bdrv_drivers:
        if not _PROBES.get(name, True):
            continue
        cls = bdrv_drivers[name]
        if cls.bdrv_probe is not None:
            score = cls.bdrv_probe(buf, filename)
            if score > best_score:
                best, best_score = cls, score
    return best


_PROBES = {m.format_name: m.probe for m in block_driver_modules}


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


# -------------------------------------------------------------------- open


def _split_child_options(options: dict, prefix: str) -> dict:
    out = {}
    for k in [k for k in options if k.startswith(prefix)]:
        out[k[len(prefix):]] = options.pop(k)
    return out


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
    if ret < 0:
        raise BlockError(-ret, "Could not refresh total sector count: %s"
                         % os.strerror(-ret))
    bdrv_refresh_limits(bs)


def bdrv_open_protocol(cls: type[BlockDriver], filename: str, options: dict,
                       flags: int, ctx: Optional[AioContext] = None
                       ) -> BlockDriverState:
    """Open a protocol node (file, null-co, blkdebug) in ``ctx`` (default:
    the opener's).  QEMU: bdrv_open_common for protocol drivers."""
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
    ret = _bdrv_pread(file_bs, 0, buf, 512)
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
    if options.get("backing") == "":      # json: "backing": null -- no backing file
        del options["backing"]
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
        raise BlockError(errno.EINVAL, "The 'file' block driver requires a file name")
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
        _finish_open(bs, options)
    except BaseException:
        bdrv_unref(bs)
        raise
    return bs
