"""Discard, block status, drain and the synchronous wrappers; the flush
with write generations (bdrv_co_flush) is in io_flush.py, re-exported here.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/io.c (2.8): bdrv_co_pdiscard, bdrv_drain; block status
(7.2's bdrv_co_block_status) is in io_status.py, re-exported here.
"""
from __future__ import annotations

import errno
from typing import Any, Callable, TypeVar

from gqemu.aio import AioContext, aio_wait_while
from gqemu.block.driver import (BDRV_O_UNMAP, INT_MAX, BdrvChild, BlockDriverState,
                                bdrv_set_sync_io)
from gqemu.block.block_int import BDRV_MAX_LENGTH
from gqemu.block.io import NOT_DONE, bdrv_co_preadv, bdrv_co_pwritev
from gqemu.block.io_status import bdrv_co_get_block_status  # noqa: F401 (re-exported)
from gqemu.block.io_flush import (CoroutineIOCompletion,  # noqa: F401 (re-exported)
                                  bdrv_co_flush, bdrv_co_io_em_complete,
                                  bdrv_dec_in_flight)
from gqemu.block.io_tracked import (BDRV_TRACKED_DISCARD, tracked_request_begin,
                                    tracked_request_end, wait_serialising_requests)
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_init_buf
from gqemu.coroutine import (coroutine_fn, qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_in_coroutine)

__all__ = ["bdrv_pread", "bdrv_pwrite", "bdrv_run_co", "bdrv_poll_co", "bdrv_co_flush", "bdrv_flush", "bdrv_co_pdiscard", "bdrv_pdiscard",
           "bdrv_co_get_block_status", "bdrv_drain", "bdrv_requests_pending",
           "bdrv_drained_begin", "bdrv_drained_end", "bdrv_pwrite_sync"]

_T = TypeVar("_T")


@coroutine_fn
def bdrv_co_pdiscard(bs: BlockDriverState, offset: int, count: int) -> int:
    """Discard, advisory: nothing without BDRV_O_UNMAP or driver support.
    The request reaches the driver in pieces: the unaligned head and tail
    (cut to request_alignment where they can be) as pieces of their own,
    which the driver may ignore (-ENOTSUP; qcow2 does, except an image's
    partial last cluster; file-posix punches them), the middle in
    max_pdiscard chunks.  Context: coroutine.
    Returns: 0 or -errno (-EPERM read-only, unless discard is off or the
    driver has none: then 0 first).  QEMU: bdrv_co_pdiscard."""
    if bs.drv is None:
        return -errno.ENOMEDIUM
    # 64-bit bounds (QEMU's bdrv_check_request): a discard is not limited
    # to BDRV_REQUEST_MAX_BYTES; qcow2 queues freed ranges merged, and one
    # can span gigabytes
    if offset < 0 or count < 0 or offset + count > BDRV_MAX_LENGTH:
        return -errno.EIO
    drv = bs.drv
    if not bs.open_flags & BDRV_O_UNMAP or drv.bdrv_co_pdiscard is None:
        return 0        # before the read-only check (QEMU's write_req_prepare)
    if bs.read_only:
        return -errno.EPERM
    if bs.dirty_bitmaps:                # the whole request, as bdrv_co_write_req_finish
        from gqemu.block.dirty_bitmap import bdrv_set_dirty
        bdrv_set_dirty(bs, offset, count)
    req_align = bs.bl.request_alignment
    align = max(bs.bl.pdiscard_alignment, req_align)
    head = offset % align
    tail = (offset + count) % align
    bs.in_flight += 1
    req = tracked_request_begin(bs, offset, count, BDRV_TRACKED_DISCARD)
    try:
        # QEMU 2.8 did not wait here, so a discard could start inside an
        # unaligned write's read-modify-write and trip its assertion; later
        # QEMU waits (bdrv_co_write_req_prepare), and so do we.
        wait_serialising_requests(req)
        for notifier in bs.before_write_notifiers:
            ret = notifier(req)
            if ret < 0:
                return ret
        max_pdiscard = min(bs.bl.max_pdiscard or INT_MAX, INT_MAX) // align * align
        while count > 0:
            num = count
            if head:                    # small pieces up to the boundary
                num = min(count, align - head)
                if num % req_align:
                    num %= req_align
                head = (head + num) % align
            elif tail:
                if num > align:         # up to the last aligned boundary
                    num -= tail
                elif tail % req_align and tail > req_align:
                    tail %= req_align
                    num -= tail
            num = min(num, max_pdiscard)
            if bs.drv is None:          # taken out of service by the last part
                return -errno.ENOMEDIUM
            ret = drv.bdrv_co_pdiscard(bs, offset, num)
            if ret and ret != -errno.ENOTSUP:
                return ret
            offset += num
            count -= num
        return 0
    finally:
        bs.write_gen += 1
        tracked_request_end(req)
        bdrv_dec_in_flight(bs)


# ------------------------------------------------ synchronous edge helpers


def _bdrv_prwv(child: BdrvChild | BlockDriverState, offset: int, qiov: QEMUIOVector,
               is_write: bool, flags: int) -> int:
    if not isinstance(child, BdrvChild):        # a node: use a bare edge
        child = BdrvChild(child, "sync", None)
    fn = bdrv_co_pwritev if is_write else bdrv_co_preadv
    return bdrv_poll_co(child.bs.aio_context, fn, child, offset, qiov.size, qiov, flags)


def bdrv_pread(child: BdrvChild | BlockDriverState, offset: int, buf: Any, nbytes: int) -> int:
    """Synchronous read into ``buf`` through ``child`` (a BdrvChild, or a
    node); runs directly inside a coroutine, else drives the loop.
    Returns: nbytes or -errno.  QEMU: bdrv_pread."""
    ret = _bdrv_prwv(child, offset, qemu_iovec_init_buf(memoryview(buf)[:nbytes]), False, 0)
    return ret if ret < 0 else nbytes


def bdrv_pwrite(child: BdrvChild | BlockDriverState, offset: int, buf: Any, nbytes: int,
                flags: int = 0) -> int:
    """Synchronous write through ``child`` (as bdrv_pread).
    Returns: nbytes or -errno.  QEMU: bdrv_pwrite."""
    ret = _bdrv_prwv(child, offset, qemu_iovec_init_buf(memoryview(buf)[:nbytes]), True, flags)
    return ret if ret < 0 else nbytes


# --------------------------------------------------------- sync wrappers


def bdrv_poll_co(ctx: AioContext, fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn(*args)`` in a coroutine and drive ``ctx`` until it returns
    (directly when already in a coroutine).  Context: loop or coroutine.
    Returns: fn's result.  QEMU: bdrv_poll_co (the generated coroutine
    wrappers' BDRV_POLL_WHILE)."""
    if qemu_in_coroutine():
        return fn(*args)
    box: list[Any] = [NOT_DONE]

    def entry(_: Any) -> None:
        box[0] = fn(*args)
    co = qemu_coroutine_create(entry, None)
    qemu_coroutine_enter(co)
    aio_wait_while(ctx, lambda: box[0] is NOT_DONE)
    return box[0]  # type: ignore[no-any-return]


def bdrv_run_co(bs: BlockDriverState, fn: Any, *args: Any) -> Any:
    """bdrv_poll_co on ``bs``'s AioContext.  Context: loop or coroutine.
    Returns: fn's result.  QEMU: the bdrv_*() coroutine wrappers."""
    return bdrv_poll_co(bs.aio_context, fn, *args)


def bdrv_flush(bs: BlockDriverState) -> int:
    """Synchronous flush.  Returns: 0 or -errno.  QEMU: bdrv_flush."""
    return bdrv_run_co(bs, bdrv_co_flush, bs)  # type: ignore[no-any-return]


def bdrv_pdiscard(bs: BlockDriverState, offset: int, count: int) -> int:
    """Synchronous discard.  QEMU: bdrv_pdiscard."""
    return bdrv_run_co(bs, bdrv_co_pdiscard, bs, offset, count)  # type: ignore[no-any-return]


def bdrv_pwrite_sync(child: BdrvChild | BlockDriverState, offset: int, buf: Any,
                     nbytes: int) -> int:
    """Write then flush the node.  Returns: nbytes... 0 or -errno.
    QEMU: bdrv_pwrite_sync."""
    ret = bdrv_pwrite(child, offset, buf, nbytes)
    if ret < 0:
        return ret
    bs = child.bs if isinstance(child, BdrvChild) else child
    ret = bdrv_flush(bs)
    return ret if ret < 0 else 0


# ------------------------------------------------------------------ drain


def bdrv_requests_pending(bs: BlockDriverState) -> bool:
    """QEMU: bdrv_requests_pending."""
    if bs.in_flight:
        return True
    return any(bdrv_requests_pending(c.bs) for c in bs.children)


def bdrv_drain(bs: BlockDriverState) -> None:
    """Run the loop until no request is in flight on ``bs`` or below.
    Context: loop, not a coroutine.  QEMU: bdrv_drain."""
    assert not qemu_in_coroutine(), "bdrv_drain inside a coroutine"
    bs.quiesce_counter += 1
    try:
        aio_wait_while(bs.aio_context, lambda: bdrv_requests_pending(bs))
    finally:
        bs.quiesce_counter -= 1


def bdrv_drained_begin(bs: BlockDriverState) -> None:
    """QEMU: bdrv_drained_begin."""
    bs.quiesce_counter += 1
    aio_wait_while(bs.aio_context, lambda: bdrv_requests_pending(bs))


def bdrv_drained_end(bs: BlockDriverState) -> None:
    """QEMU: bdrv_drained_end."""
    assert bs.quiesce_counter > 0
    bs.quiesce_counter -= 1


bdrv_set_sync_io(bdrv_flush, bdrv_pread)
