"""The generic request path of a node: alignment padding, read-modify-write
under serialising tracked requests, ``max_transfer`` splitting, zero writes
(``bdrv_co_do_zero_pwritev``, ``bdrv_co_pwrite_zeroes``).

``bdrv_co_preadv`` -> ``bdrv_aligned_preadv`` -> ``bdrv_driver_preadv`` ->
the driver's ``*_co_preadv``, and the same for writes, as block/io.c.
The driver calls (FUA emulation, the zero-write bounce-buffer fallback)
and copy-on-read are in ``io_driver.py`` (re-exported here); tracked
requests are in ``io_tracked.py``; the flush and the in-flight counter in
``io_flush.py``; discard, drain, block status and the
synchronous helpers are in ``io_misc.py``.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/io.c (2.8).
"""
from __future__ import annotations

import errno
from typing import Optional

from gqemu.aio import aio_notify
from gqemu.block.blkdebug_events import (BLKDBG_PWRITEV, BLKDBG_PWRITEV_DONE,
                                         BLKDBG_PWRITEV_RMW_AFTER_HEAD,
                                         BLKDBG_PWRITEV_RMW_AFTER_TAIL,
                                         BLKDBG_PWRITEV_RMW_HEAD, BLKDBG_PWRITEV_RMW_TAIL,
                                         BLKDBG_PWRITEV_ZERO)
from gqemu.block.driver import (BDRV_O_UNMAP, BDRV_REQ_COPY_ON_READ, BDRV_REQ_FUA,
                                BDRV_REQ_MAY_UNMAP,
                                BDRV_REQ_NO_FALLBACK, BDRV_REQ_NO_SERIALISING,
                                BDRV_REQ_WRITE_COMPRESSED, BDRV_REQ_ZERO_WRITE,
                                BDRV_REQUEST_MAX_BYTES, BDRV_SECTOR_SIZE, INT_MAX,
                                BdrvChild, BdrvTrackedRequest, BlockDriverState,
                                bdrv_debug_event, bdrv_getlength)
from gqemu.block.block_int import BDRV_MAX_LENGTH
from gqemu.block.dirty_bitmap import bdrv_set_dirty
from gqemu.block.io_driver import (MAX_BOUNCE_BUFFER,  # noqa: F401 (re-exported)
                                   MAX_WRITE_ZEROES_BOUNCE_BUFFER, NOT_DONE,
                                   bdrv_check_byte_request, bdrv_co_do_copy_on_readv,
                                   bdrv_co_do_pwrite_zeroes, bdrv_co_is_allocated,
                                   bdrv_driver_preadv, bdrv_driver_pwritev,
                                   bdrv_driver_pwritev_compressed, bdrv_get_cluster_size,
                                   qemu_blockalign)
from gqemu.block.io_flush import (bdrv_co_flush, bdrv_dec_in_flight,  # noqa: F401
                                  bdrv_inc_in_flight)
from gqemu.block.io_tracked import (BDRV_TRACKED_READ, BDRV_TRACKED_WRITE,
                                    mark_request_serialising, tracked_request_begin,
                                    tracked_request_end, wait_serialising_requests)
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_add, qemu_iovec_concat,
                              qemu_iovec_init_buf, qemu_iovec_is_zero,
                              qemu_iovec_memset)
from gqemu.block.trace_events import (trace_bdrv_co_preadv, trace_bdrv_co_pwrite_zeroes,
                                      trace_bdrv_co_pwritev)
from gqemu.coroutine import coroutine_fn

__all__ = [
    "bdrv_co_preadv", "bdrv_co_pwritev", "bdrv_aligned_preadv",
    "bdrv_aligned_pwritev", "bdrv_driver_preadv", "bdrv_driver_pwritev",
    "bdrv_co_pwrite_zeroes", "bdrv_co_do_pwrite_zeroes", "bdrv_check_byte_request",
    "bdrv_inc_in_flight", "bdrv_dec_in_flight", "qemu_blockalign", "NOT_DONE",
]


# -------------------------------------------------------------------- read


@coroutine_fn
def bdrv_aligned_preadv(bs: BlockDriverState, req: BdrvTrackedRequest,
                        offset: int, nbytes: int, align: int,
                        qiov: QEMUIOVector, flags: int) -> int:
    """Read an aligned range, splitting at max_transfer and zero-filling
    past the end of the node.  Context: coroutine.  Returns: 0 or -errno.
    QEMU: bdrv_aligned_preadv."""
    assert offset & (align - 1) == 0 and nbytes & (align - 1) == 0
    assert qiov.size == nbytes, "qiov size %d != %d" % (qiov.size, nbytes)
    if flags & BDRV_REQ_COPY_ON_READ:
        # The copy rewrites whole clusters: nothing may write into them meanwhile.
        mark_request_serialising(req, bdrv_get_cluster_size(bs))
    if not flags & BDRV_REQ_NO_SERIALISING and bs.serialising_in_flight:
        wait_serialising_requests(req)
    total_bytes = bdrv_getlength(bs)
    if total_bytes < 0:
        return total_bytes
    if flags & BDRV_REQ_COPY_ON_READ:
        ret, pnum = bdrv_co_is_allocated(bs, offset, nbytes)
        if ret < 0:
            return ret
        if not ret or pnum != nbytes:
            return bdrv_co_do_copy_on_readv(bs, offset, nbytes, qiov)
    # The common case first: inside the node and within max_transfer (nbytes
    # is a multiple of align, so it fits the rounded limits below exactly
    # when it fits these).
    if (offset + nbytes <= total_bytes and nbytes <= (bs.bl.max_transfer or INT_MAX)
            and nbytes <= INT_MAX):
        ret = bdrv_driver_preadv(bs, offset, nbytes, qiov, 0)
        return ret if ret < 0 else 0
    max_bytes = -(-max(0, total_bytes - offset) // align) * align
    max_transfer = (min(bs.bl.max_transfer or INT_MAX, INT_MAX) // align) * align
    if nbytes <= max_bytes and nbytes <= max_transfer:
        ret = bdrv_driver_preadv(bs, offset, nbytes, qiov, 0)
        return ret if ret < 0 else 0
    remaining = nbytes
    ret = 0
    while remaining:
        done = nbytes - remaining
        max_bytes = -(-max(0, total_bytes - (offset + done)) // align) * align
        if max_bytes:
            num = min(remaining, max_bytes, max_transfer)
            local = QEMUIOVector()
            qemu_iovec_concat(local, qiov, done, num)
            ret = bdrv_driver_preadv(bs, offset + done, num, local, 0)
        else:
            num = remaining
            ret = qemu_iovec_memset(qiov, done, 0, remaining)
        if ret < 0:
            return ret
        remaining -= num
    return 0


@coroutine_fn
def bdrv_co_preadv(child: BdrvChild, offset: int, nbytes: int,
                   qiov: QEMUIOVector, flags: int) -> int:
    """Read through ``child``, padding to the node's request_alignment.
    Context: coroutine.  Returns: 0 or -errno.  QEMU: bdrv_co_preadv."""
    bs = child.bs
    if trace_bdrv_co_preadv.enabled:
        trace_bdrv_co_preadv(bs, offset, nbytes, flags)
    if bs.drv is None:
        return -errno.ENOMEDIUM
    # bdrv_check_byte_request, inlined (the node has a driver); an offset
    # past BDRV_MAX_LENGTH is EIO, never a pread of what no file can hold
    if nbytes > BDRV_REQUEST_MAX_BYTES or nbytes < 0 or offset < 0 \
            or offset > BDRV_MAX_LENGTH - nbytes:
        return -errno.EIO
    if nbytes == 0 and offset & (bs.bl.request_alignment - 1):
        return 0        # aligning a zero-length request is nonsense (QEMU 7.2)
    bs.in_flight += 1
    if bs.copy_on_read:
        flags |= BDRV_REQ_COPY_ON_READ
    align = bs.bl.request_alignment
    head = offset & (align - 1)
    tail = (offset + nbytes) & (align - 1)
    if head or tail:
        local = QEMUIOVector()
        if head:
            head_buf = qemu_blockalign(bs, align)
            qemu_iovec_add(local, head_buf, head)
            offset -= head
            nbytes += head
        qemu_iovec_concat(local, qiov, 0, qiov.size)
        if tail:
            tail_buf = qemu_blockalign(bs, align)
            qemu_iovec_add(local, tail_buf, align - tail)
            nbytes += align - tail
        qiov = local
    req = tracked_request_begin(bs, offset, nbytes, BDRV_TRACKED_READ)
    try:
        ret = bdrv_aligned_preadv(bs, req, offset, nbytes, align, qiov, flags)
    finally:
        tracked_request_end(req)
        bs.in_flight -= 1                  # bdrv_dec_in_flight, inlined
        if not bs.in_flight and bs.quiesce_counter:
            aio_notify(bs.aio_context)
    return ret


# ------------------------------------------------------------------- write


@coroutine_fn
def bdrv_aligned_pwritev(bs: BlockDriverState, req: BdrvTrackedRequest,
                         offset: int, nbytes: int, align: int,
                         qiov: Optional[QEMUIOVector], flags: int) -> int:
    """Write an aligned range (or zero it when ``qiov`` is None).
    Context: coroutine.  Returns: 0 or -errno.  QEMU: bdrv_aligned_pwritev."""
    drv = bs.drv
    if drv is None:
        return -errno.ENOMEDIUM
    assert offset & (align - 1) == 0 and nbytes & (align - 1) == 0
    assert qiov is None or qiov.size == nbytes
    waited = wait_serialising_requests(req)
    assert not waited or not req.serialising
    ret = 0
    for notifier in bs.before_write_notifiers:
        ret = notifier(req)
        if ret < 0:
            break
    if (ret == 0 and bs.detect_zeroes != "off" and not flags & BDRV_REQ_ZERO_WRITE
            and drv.bdrv_co_pwrite_zeroes is not None and qiov is not None
            and qemu_iovec_is_zero(qiov)):
        flags |= BDRV_REQ_ZERO_WRITE
        if bs.detect_zeroes == "unmap" and bs.open_flags & BDRV_O_UNMAP:
            flags |= BDRV_REQ_MAY_UNMAP
    max_transfer = (min(bs.bl.max_transfer or INT_MAX, INT_MAX) // align) * align
    if ret < 0:
        pass
    elif flags & BDRV_REQ_ZERO_WRITE:
        bdrv_debug_event(bs, BLKDBG_PWRITEV_ZERO)
        ret = bdrv_co_do_pwrite_zeroes(bs, offset, nbytes, flags)
    elif flags & BDRV_REQ_WRITE_COMPRESSED:
        ret = bdrv_driver_pwritev_compressed(bs, offset, nbytes, qiov)  # type: ignore[arg-type]
    elif nbytes <= max_transfer:
        bdrv_debug_event(bs, BLKDBG_PWRITEV)
        ret = bdrv_driver_pwritev(bs, offset, nbytes, qiov, flags)  # type: ignore[arg-type]
    else:
        bdrv_debug_event(bs, BLKDBG_PWRITEV)
        remaining = nbytes
        while remaining:
            done = nbytes - remaining
            num = min(remaining, max_transfer)
            local_flags = flags
            if num < remaining and flags & BDRV_REQ_FUA and \
                    not bs.supported_write_flags & BDRV_REQ_FUA:
                local_flags &= ~BDRV_REQ_FUA   # FUA only on the last chunk
            local = QEMUIOVector()
            qemu_iovec_concat(local, qiov, done, num)  # type: ignore[arg-type]
            ret = bdrv_driver_pwritev(bs, offset + done, num, local, local_flags)
            if ret < 0:
                break
            remaining -= num
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE)
    bs.write_gen += 1
    if bs.wr_highest_offset < offset + nbytes:
        bs.wr_highest_offset = offset + nbytes
    if bs.dirty_bitmaps:
        bdrv_set_dirty(bs, offset, nbytes)
    if ret >= 0:
        end_sector = -(-(offset + nbytes) // BDRV_SECTOR_SIZE)
        if end_sector > bs.total_sectors:
            bs.total_sectors = end_sector
        ret = 0
    return ret


@coroutine_fn
def bdrv_co_do_zero_pwritev(bs: BlockDriverState, offset: int, nbytes: int,
                            flags: int, req: BdrvTrackedRequest) -> int:
    """Zero a range: RMW of the unaligned head and tail blocks, one aligned
    zero request for the middle.  QEMU: bdrv_co_do_zero_pwritev."""
    align = bs.bl.request_alignment
    head_pad = offset & (align - 1)
    tail_pad = (align - (offset + nbytes)) & (align - 1)
    assert flags & BDRV_REQ_ZERO_WRITE
    if not bs.open_flags & BDRV_O_UNMAP:
        flags &= ~BDRV_REQ_MAY_UNMAP
    buf = None
    local = None
    if head_pad or tail_pad:
        buf = qemu_blockalign(bs, align)
        local = qemu_iovec_init_buf(buf)
        mark_request_serialising(req, align)
        wait_serialising_requests(req)
    if head_pad:
        offset &= ~(align - 1)
        ret = bdrv_aligned_preadv(bs, req, offset, align, align, local, 0)  # type: ignore[arg-type]
        if ret < 0:
            return ret
        zero_bytes = min(align - head_pad, nbytes)
        qemu_iovec_memset(local, head_pad, 0, zero_bytes)  # type: ignore[arg-type]
        ret = bdrv_aligned_pwritev(bs, req, offset, align, align, local,
                                   flags & ~BDRV_REQ_ZERO_WRITE & ~BDRV_REQ_MAY_UNMAP)
        if ret < 0:
            return ret
        offset += align
        nbytes -= zero_bytes
    if nbytes >= align:
        aligned = nbytes & ~(align - 1)
        ret = bdrv_aligned_pwritev(bs, req, offset, aligned, align, None, flags)
        if ret < 0:
            return ret
        nbytes -= aligned
        offset += aligned
    if nbytes:
        assert local is not None
        ret = bdrv_aligned_preadv(bs, req, offset, align, align, local, 0)
        if ret < 0:
            return ret
        qemu_iovec_memset(local, 0, 0, nbytes)
        ret = bdrv_aligned_pwritev(bs, req, offset, align, align, local,
                                   flags & ~BDRV_REQ_ZERO_WRITE & ~BDRV_REQ_MAY_UNMAP)
        if ret < 0:
            return ret
    return 0


def bdrv_padding_rmw_read(bs: BlockDriverState, req: BdrvTrackedRequest, aligned_offset: int,
                          align: int, tail: bool,
                          after_head: bool = False) -> tuple[int, bytearray]:
    """Read the aligned block at ``aligned_offset`` that an unaligned write's
    head (or ``tail``; ``after_head`` when the write had a head too) only
    partly covers, serialising the request first so no overlapping write
    slips in between the read and the write back.  Returns (0 or -errno,
    the block).  Context: coroutine (a plain helper: as a ``coroutine_fn`` it
    would add a stress scheduling point between the write's tracking and its
    serialisation, which the serialising-wait invariant of
    bdrv_aligned_pwritev does not allow).  QEMU: bdrv_padding_rmw_read."""
    if not bs.aio_context.plant.rmw_unserialised:   # planted bug (stress)
        mark_request_serialising(req, align)
        waited = wait_serialising_requests(req)
        assert not waited or not after_head         # the head's wait covered it
    buf = qemu_blockalign(bs, align)
    bdrv_debug_event(bs, BLKDBG_PWRITEV_RMW_TAIL if tail else BLKDBG_PWRITEV_RMW_HEAD)
    ret = bdrv_aligned_preadv(bs, req, aligned_offset, align, align,
                              qemu_iovec_init_buf(buf), 0)
    if ret >= 0:
        bdrv_debug_event(bs, BLKDBG_PWRITEV_RMW_AFTER_TAIL if tail
                         else BLKDBG_PWRITEV_RMW_AFTER_HEAD)
    return ret, buf


@coroutine_fn
def bdrv_co_pwritev(child: BdrvChild, offset: int, nbytes: int,
                    qiov: Optional[QEMUIOVector], flags: int) -> int:
    """Write through ``child``; unaligned heads and tails are read, merged
    and written back under a serialising request.  ``qiov`` None means zero
    the range (with BDRV_REQ_ZERO_WRITE).  Context: coroutine.
    Returns: 0 or -errno (-EPERM on a read-only node).
    QEMU: bdrv_co_pwritev."""
    bs = child.bs
    if trace_bdrv_co_pwritev.enabled:
        trace_bdrv_co_pwritev(bs, offset, nbytes, flags)
    if bs.drv is None:
        return -errno.ENOMEDIUM
    if bs.read_only:
        return -errno.EPERM
    ret = bdrv_check_byte_request(bs, offset, nbytes)
    if ret < 0:
        return ret
    if flags & BDRV_REQ_NO_FALLBACK and (offset | nbytes) & (bs.bl.request_alignment - 1):
        return -errno.ENOTSUP           # a misaligned request cannot be efficient
    if nbytes == 0 and offset & (bs.bl.request_alignment - 1):
        return 0        # aligning a zero-length request is nonsense (QEMU 7.2)
    bs.in_flight += 1
    req = tracked_request_begin(bs, offset, nbytes, BDRV_TRACKED_WRITE)
    try:
        if qiov is None:
            return bdrv_co_do_zero_pwritev(bs, offset, nbytes, flags, req)
        align = bs.bl.request_alignment
        head = offset & (align - 1)
        tail = (offset + nbytes) & (align - 1)
        if head or tail:
            local = QEMUIOVector()
            if head:
                ret, head_buf = bdrv_padding_rmw_read(bs, req, offset - head, align, False)
                if ret < 0:
                    return ret
                qemu_iovec_add(local, head_buf, head)
                offset -= head
                nbytes += head
            qemu_iovec_concat(local, qiov, 0, qiov.size)
            if tail:
                ret, tail_buf = bdrv_padding_rmw_read(bs, req, (offset + nbytes) & ~(align - 1),
                                                      align, True, bool(head))
                if ret < 0:
                    return ret
                qemu_iovec_add(local, memoryview(tail_buf)[tail:])
                nbytes += align - tail
            qiov = local
        return bdrv_aligned_pwritev(bs, req, offset, nbytes, align, qiov, flags)
    finally:
        tracked_request_end(req)
        bdrv_dec_in_flight(bs)


@coroutine_fn
def bdrv_co_pwrite_zeroes(child: BdrvChild, offset: int, count: int, flags: int) -> int:
    """Zero a range.  Context: coroutine.  Returns: 0 or -errno.
    QEMU: bdrv_co_pwrite_zeroes."""
    trace_bdrv_co_pwrite_zeroes(child.bs, offset, count, flags)
    if not child.bs.open_flags & BDRV_O_UNMAP:
        flags &= ~BDRV_REQ_MAY_UNMAP
    return bdrv_co_pwritev(child, offset, count, None, BDRV_REQ_ZERO_WRITE | flags)
