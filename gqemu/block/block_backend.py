"""BlockBackend's request wrappers: the coroutine ones (``blk_co_*``:
writethrough as FUA), the asynchronous ones that never call back before
they return (``blk_aio_*``, their ``_entry`` coroutines), and the
synchronous edge wrappers (``blk_pread``, ``blk_flush``, ...).  The
object itself, opening, permissions, closing and the range check are in
block_backend_attach.py, re-exported here; the rerror/werror policy with
a visible stopped state is blk_error.py's.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/block-backend.c (2.8).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable, Optional

from gqemu.aio import AioContext, AIOCBInfo, BlockAIOCB, aio_bh_schedule_oneshot
from gqemu.block.block_backend_attach import (  # noqa: F401 (re-exported)
    BlockBackend, blk_bs, blk_check_byte_request, blk_drain, blk_enable_write_cache,
    blk_get_aio_context, blk_get_stats, blk_getlength, blk_is_available, blk_is_inserted,
    blk_is_read_only, blk_nb_sectors, blk_new_open, blk_set_enable_write_cache, blk_set_perm,
    blk_unref)
from gqemu.block.driver import BDRV_REQ_FUA, BDRV_REQ_ZERO_WRITE, BlockError
from gqemu.block.io import NOT_DONE, bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_misc import bdrv_co_flush, bdrv_co_pdiscard, bdrv_poll_co
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
