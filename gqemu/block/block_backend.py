"""BlockBackend: what a device or tool holds.  Range checks (any request
crossing the end fails with -EIO), writethrough as FUA, asynchronous
requests that never call back before they return, the synchronous edge
wrappers, and the rerror/werror policy with a visible stopped state.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/block-backend.c (2.8).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable, Optional

from gqemu.aio import (AioContext, AIOCBInfo, BlockAIOCB, aio_bh_schedule_oneshot,
                       aio_wait_while)
from gqemu.block.accounting import BlockAcctStats
from gqemu.block.driver import (BDRV_O_COPY_ON_READ, BDRV_O_RDWR, BDRV_REQ_FUA, BDRV_REQ_ZERO_WRITE,
                                BLK_PERM_ALL, BLK_PERM_CONSISTENT_READ,
                                BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED, INT_MAX,
                                BdrvChild, BlockDriverState, BlockError, bdrv_getlength,
                                bdrv_refresh_perms, bdrv_unref, qemu_opt_bool)
from gqemu.block.driver_open import bdrv_open
from gqemu.block.block_int import BDRV_O_NO_SHARE
from gqemu.block.drive_opts import parse_drive_options
from gqemu.block.io import NOT_DONE, bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_misc import bdrv_co_flush, bdrv_co_pdiscard, bdrv_drain, bdrv_poll_co
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_init_buf
from gqemu.block.trace_events import (trace_blk_aio_complete, trace_blk_aio_prwv,
                                     trace_blk_co_preadv, trace_blk_co_pwritev)
from gqemu.coroutine import coroutine_fn, qemu_coroutine_create, qemu_coroutine_enter

__all__ = [
    "BlockBackend", "blk_new_open", "blk_unref", "blk_bs", "blk_getlength",
    "blk_nb_sectors", "blk_is_read_only", "blk_is_inserted", "blk_is_available",
    "blk_get_aio_context", "blk_enable_write_cache", "blk_set_enable_write_cache",
    "blk_get_stats", "blk_set_perm", "blk_check_byte_request",
    "blk_co_preadv", "blk_co_pwritev", "blk_co_flush", "blk_co_pdiscard", "blk_co_ioctl",
    "blk_co_pwrite_zeroes", "blk_aio_prwv", "blk_aio_preadv", "blk_aio_pwritev",
    "blk_aio_flush", "blk_aio_pdiscard", "blk_aio_pwrite_zeroes", "blk_aio_ioctl",
    "blk_aio_read_entry", "blk_aio_write_entry", "blk_pread", "blk_pwrite",
    "blk_flush", "blk_pdiscard", "blk_pwrite_zeroes", "blk_prw", "blk_drain",
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
        raise BlockError(errno.EINVAL, "A block device must be specified for \"file\"")
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


# ------------------------------------------------------------ coroutines


@coroutine_fn
def blk_co_preadv(blk: BlockBackend, offset: int, nbytes: int, qiov: QEMUIOVector,
                  flags: int) -> int:
    """Context: coroutine.  Returns: 0 or -errno.  QEMU: blk_co_preadv."""
    root = blk.root
    bs = root.bs if root is not None else None
    if trace_blk_co_preadv.enabled:
        trace_blk_co_preadv(blk, bs, offset, nbytes, flags)
    ret = blk_check_byte_request(blk, offset, nbytes)
    if ret < 0:
        return ret
    bs.in_flight += 1  # type: ignore[union-attr]
    try:
        return bdrv_co_preadv(root, offset, nbytes, qiov, flags)  # type: ignore[arg-type]
    finally:
        bs.in_flight -= 1  # type: ignore[union-attr]


@coroutine_fn
def blk_co_pwritev(blk: BlockBackend, offset: int, nbytes: int,
                   qiov: Optional[QEMUIOVector], flags: int) -> int:
    """Adds FUA when the write cache is off (writethrough).
    Context: coroutine.  Returns: 0 or -errno.  QEMU: blk_co_pwritev."""
    bs = blk.root.bs if blk.root is not None else None
    if trace_blk_co_pwritev.enabled:
        trace_blk_co_pwritev(blk, bs, offset, nbytes, flags)
    ret = blk_check_byte_request(blk, offset, nbytes)
    if ret < 0:
        return ret
    if not blk.enable_write_cache:
        flags |= BDRV_REQ_FUA
    bs.in_flight += 1  # type: ignore[union-attr]
    try:
        return bdrv_co_pwritev(blk.root, offset, nbytes, qiov, flags)  # type: ignore[arg-type]
    finally:
        bs.in_flight -= 1  # type: ignore[union-attr]


@coroutine_fn
def blk_co_pwrite_zeroes(blk: BlockBackend, offset: int, nbytes: int, flags: int) -> int:
    """QEMU: blk_co_pwrite_zeroes."""
    return blk_co_pwritev(blk, offset, nbytes, None, flags | BDRV_REQ_ZERO_WRITE)


@coroutine_fn
def blk_co_flush(blk: BlockBackend) -> int:
    """QEMU: blk_co_flush."""
    if not blk_is_available(blk):
        return -errno.ENOMEDIUM
    return bdrv_co_flush(blk_bs(blk))


@coroutine_fn
def blk_co_pdiscard(blk: BlockBackend, offset: int, nbytes: int) -> int:
    """QEMU: blk_co_pdiscard."""
    ret = blk_check_byte_request(blk, offset, nbytes)
    if ret < 0:
        return ret
    return bdrv_co_pdiscard(blk_bs(blk), offset, nbytes)  # type: ignore[arg-type]


@coroutine_fn
def blk_co_ioctl(blk: BlockBackend, req: int, buf: Any) -> int:
    """-ENOTSUP: no gqemu driver passes ioctls through (in QEMU only
    host_device and host_cdrom do; raw forwards to its file, which for a
    regular file has none).  QEMU: blk_co_do_ioctl + bdrv_co_ioctl."""
    if not blk_is_available(blk):
        return -errno.ENOMEDIUM
    return -errno.ENOTSUP


# ------------------------------------------------------------------- AIO


class BlkAioEmAIOCB(BlockAIOCB):
    """QEMU: BlkAioEmAIOCB.  QEMU embeds the request's BlkRwCo in it; here
    its fields (``blk``, ``offset``, ``qiov``, ``flags``, ``ret``) are the
    acb's own, so a request allocates one object, not two."""

    __slots__ = ("blk", "offset", "qiov", "flags", "ret", "bytes", "has_returned")

    def __init__(self, cb: Optional[Callable[[Any, int], Any]], opaque: Any,
                 blk: BlockBackend, offset: int, nbytes: int,
                 qiov: Optional[QEMUIOVector], flags: int) -> None:
        # qemu_aio_get(&blk_aio_em_aiocb_info, ...) and the BlkRwCo, in one
        self.aiocb_info = blk_aio_em_aiocb_info
        self.cb = cb
        self.opaque = opaque
        self.refcnt = 1
        self.blk = blk
        self.offset = offset
        self.qiov = qiov
        self.flags = flags
        self.ret = NOT_DONE
        self.bytes = nbytes
        self.has_returned = False


def _blk_aio_em_get_aio_context(acb: BlkAioEmAIOCB) -> AioContext:
    return acb.blk.ctx


blk_aio_em_aiocb_info = AIOCBInfo(get_aio_context=_blk_aio_em_get_aio_context)


def blk_aio_complete(acb: BlkAioEmAIOCB) -> None:
    """Deliver the callback, but only once blk_aio_prwv has returned.
    QEMU: blk_aio_complete."""
    if acb.has_returned:
        blk = acb.blk
        cb = acb.cb
        if trace_blk_aio_complete.enabled:
            trace_blk_aio_complete(blk, acb, acb.ret)
        if cb is not None:
            cb(acb.opaque, acb.ret)
        blk.in_flight -= 1
        acb.refcnt -= 1                     # qemu_aio_unref, inlined
        assert acb.refcnt >= 0, "AIOCB released twice"


def blk_aio_prwv(blk: BlockBackend, offset: int, nbytes: int,
                 qiov: Optional[QEMUIOVector], co_entry: Callable[[Any], None],
                 flags: int, cb: Optional[Callable[[Any, int], Any]],
                 opaque: Any) -> BlkAioEmAIOCB:
    """Run ``co_entry`` in a new coroutine; if it finished before we return,
    complete from a bottom half.  Context: loop or coroutine.
    QEMU: blk_aio_prwv."""
    blk.in_flight += 1
    acb = BlkAioEmAIOCB(cb, opaque, blk, offset, nbytes, qiov, flags)
    co = qemu_coroutine_create(co_entry, acb)
    if trace_blk_aio_prwv.enabled:
        trace_blk_aio_prwv(blk, acb, co, offset, nbytes, co_entry.__name__)
    qemu_coroutine_enter(co)
    acb.has_returned = True
    if acb.ret != NOT_DONE:
        # QEMU's blk_aio_complete_bh asserts has_returned and calls
        # blk_aio_complete: has_returned is set, so the BH is that.
        aio_bh_schedule_oneshot(blk.ctx, blk_aio_complete, acb)
    return acb


# The entries call blk_aio_complete only once blk_aio_prwv has returned (it
# does nothing before): a request that finishes without yielding is
# completed from the bottom half blk_aio_prwv schedules.


def blk_aio_read_entry(acb: BlkAioEmAIOCB) -> None:
    """QEMU: blk_aio_read_entry."""
    qiov = acb.qiov
    assert qiov is not None and qiov.size == acb.bytes
    acb.ret = blk_co_preadv(acb.blk, acb.offset, acb.bytes, qiov, acb.flags)
    if acb.has_returned:
        blk_aio_complete(acb)


def blk_aio_write_entry(acb: BlkAioEmAIOCB) -> None:
    """QEMU: blk_aio_write_entry."""
    qiov = acb.qiov
    assert qiov is None or qiov.size == acb.bytes
    acb.ret = blk_co_pwritev(acb.blk, acb.offset, acb.bytes, qiov, acb.flags)
    if acb.has_returned:
        blk_aio_complete(acb)


def blk_aio_flush_entry(acb: BlkAioEmAIOCB) -> None:
    """QEMU: blk_aio_flush_entry."""
    acb.ret = blk_co_flush(acb.blk)
    blk_aio_complete(acb)


def blk_aio_pdiscard_entry(acb: BlkAioEmAIOCB) -> None:
    """QEMU: blk_aio_pdiscard_entry."""
    acb.ret = blk_co_pdiscard(acb.blk, acb.offset, acb.bytes)
    blk_aio_complete(acb)


def blk_aio_ioctl_entry(acb: BlkAioEmAIOCB) -> None:
    """QEMU: blk_aio_ioctl_entry (the request rides in ``offset``, the
    buffer in ``qiov``, as in QEMU's BlkRwCo)."""
    acb.ret = blk_co_ioctl(acb.blk, acb.offset, acb.qiov)
    blk_aio_complete(acb)


def blk_aio_ioctl(blk: BlockBackend, req: int, buf: Any,
                  cb: Optional[Callable[[Any, int], Any]], opaque: Any) -> BlkAioEmAIOCB:
    """QEMU: blk_aio_ioctl."""
    return blk_aio_prwv(blk, req, 0, buf, blk_aio_ioctl_entry, 0, cb, opaque)


def blk_aio_preadv(blk: BlockBackend, offset: int, qiov: QEMUIOVector, flags: int,
                   cb: Optional[Callable[[Any, int], Any]], opaque: Any) -> BlkAioEmAIOCB:
    """Read into ``qiov``; ``cb(opaque, ret)`` later, never before return.
    QEMU: blk_aio_preadv."""
    return blk_aio_prwv(blk, offset, qiov.size, qiov, blk_aio_read_entry, flags, cb, opaque)


def blk_aio_pwritev(blk: BlockBackend, offset: int, qiov: QEMUIOVector, flags: int,
                    cb: Optional[Callable[[Any, int], Any]], opaque: Any) -> BlkAioEmAIOCB:
    """QEMU: blk_aio_pwritev."""
    return blk_aio_prwv(blk, offset, qiov.size, qiov, blk_aio_write_entry, flags, cb, opaque)


def blk_aio_pwrite_zeroes(blk: BlockBackend, offset: int, count: int, flags: int,
                          cb: Optional[Callable[[Any, int], Any]],
                          opaque: Any) -> BlkAioEmAIOCB:
    """QEMU: blk_aio_pwrite_zeroes."""
    return blk_aio_prwv(blk, offset, count, None, blk_aio_write_entry,
                        flags | BDRV_REQ_ZERO_WRITE, cb, opaque)


def blk_aio_flush(blk: BlockBackend, cb: Optional[Callable[[Any, int], Any]],
                  opaque: Any) -> BlkAioEmAIOCB:
    """QEMU: blk_aio_flush."""
    return blk_aio_prwv(blk, 0, 0, None, blk_aio_flush_entry, 0, cb, opaque)


def blk_aio_pdiscard(blk: BlockBackend, offset: int, count: int,
                     cb: Optional[Callable[[Any, int], Any]], opaque: Any) -> BlkAioEmAIOCB:
    """QEMU: blk_aio_pdiscard."""
    return blk_aio_prwv(blk, offset, count, None, blk_aio_pdiscard_entry, 0, cb, opaque)


# ----------------------------------------------------- synchronous edge


def _check(ret: int) -> int:
    """The synchronous helpers' contract: a failure raises BlockError
    carrying the errno (and strerror as its message)."""
    if ret < 0:
        raise BlockError(-ret, os.strerror(-ret))
    return ret


def blk_prw(blk: BlockBackend, offset: int, buf: Any, nbytes: int, is_write: bool,
            flags: int = 0) -> int:
    """Synchronous read into / write from the first ``nbytes`` of ``buf``:
    the primitive under blk_pread/blk_pwrite, for callers that own the
    buffer (qemu-io).  Returns 0; raises BlockError(errno) on failure, as
    every synchronous helper does.  QEMU: blk_prw."""
    qiov = qemu_iovec_init_buf(memoryview(buf)[:nbytes])
    co_entry = blk_co_pwritev if is_write else blk_co_preadv
    _check(bdrv_poll_co(blk.ctx, co_entry, blk, offset, nbytes, qiov, flags))
    return 0


def blk_pread(blk: BlockBackend, offset: int, count: int) -> bytes:
    """Read ``count`` bytes.  Raises BlockError(errno) on failure.
    QEMU: blk_pread."""
    buf = bytearray(count)
    blk_prw(blk, offset, buf, count, False)
    return bytes(buf)


def blk_pwrite(blk: BlockBackend, offset: int, data: Any, flags: int = 0) -> int:
    """Write ``data``; returns its length.  Raises BlockError on failure.
    QEMU: blk_pwrite."""
    mv = memoryview(data)
    blk_prw(blk, offset, mv, mv.nbytes, True, flags)
    return mv.nbytes


def blk_pwrite_zeroes(blk: BlockBackend, offset: int, count: int, flags: int = 0) -> int:
    """Synchronous zero write.  Returns 0; raises BlockError on failure.
    QEMU: blk_pwrite_zeroes."""
    return _check(bdrv_poll_co(blk.ctx, blk_co_pwrite_zeroes, blk, offset, count, flags))


def blk_flush(blk: BlockBackend) -> int:
    """Synchronous flush.  Returns 0; raises BlockError on failure.
    QEMU: blk_flush."""
    return _check(bdrv_poll_co(blk.ctx, blk_co_flush, blk))


def blk_pdiscard(blk: BlockBackend, offset: int, count: int) -> int:
    """Synchronous discard.  Returns 0; raises BlockError on failure.
    QEMU: blk_pdiscard."""
    return _check(bdrv_poll_co(blk.ctx, blk_co_pdiscard, blk, offset, count))


def blk_drain(blk: BlockBackend) -> None:
    """Run the loop until every request of ``blk`` has completed.
    Context: loop.  QEMU: blk_drain."""
    aio_wait_while(blk.ctx, lambda: blk.in_flight > 0)
    bs = blk_bs(blk)
    if bs is not None:
        bdrv_drain(bs)
