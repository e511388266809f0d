"""Tracked requests: every request in flight on a node, and the
serialisation that read-modify-write and copy-on-read need (a serialising
request and any request overlapping its widened range run one at a time).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/io.c (2.8) tracked_request_*, mark_request_serialising,
wait_serialising_requests.
"""
from __future__ import annotations

from greenlet import getcurrent

from gqemu.block.driver import BdrvTrackedRequest, BlockDriverState
from gqemu.coroutine import (CoQueue, coroutine_fn, qemu_co_queue_restart_all,
                             qemu_co_queue_wait, qemu_coroutine_self)

__all__ = ["tracked_request_begin", "tracked_request_end", "mark_request_serialising",
           "wait_serialising_requests", "BDRV_TRACKED_READ", "BDRV_TRACKED_WRITE",
           "BDRV_TRACKED_FLUSH", "BDRV_TRACKED_IOCTL", "BDRV_TRACKED_DISCARD"]

BDRV_TRACKED_READ = 0
BDRV_TRACKED_WRITE = 1
BDRV_TRACKED_FLUSH = 2
BDRV_TRACKED_IOCTL = 3
BDRV_TRACKED_DISCARD = 4


def tracked_request_begin(bs: BlockDriverState, offset: int, nbytes: int,
                          rtype: int) -> BdrvTrackedRequest:
    """QEMU: tracked_request_begin (inserted at the head of the list)."""
    req = BdrvTrackedRequest()
    req.bs = bs
    req.offset = offset
    req.bytes = nbytes
    req.type = rtype
    req.serialising = False
    req.overlap_offset = offset
    req.overlap_bytes = nbytes
    req.co = getcurrent()                  # qemu_coroutine_self()
    req.wait_queue = None          # made by the first waiter (most never have one)
    req.waiting_for = None
    bs.tracked_requests.insert(0, req)
    return req


def tracked_request_end(req: BdrvTrackedRequest) -> None:
    """QEMU: tracked_request_end."""
    bs = req.bs
    if req.serialising:
        bs.serialising_in_flight -= 1
    bs.tracked_requests.remove(req)
    if req.wait_queue is not None:
        qemu_co_queue_restart_all(req.wait_queue)


def mark_request_serialising(req: BdrvTrackedRequest, align: int) -> None:
    """Widen the overlap range to ``align`` and make ``req`` serialising.
    QEMU: mark_request_serialising."""
    overlap_offset = req.offset & ~(align - 1)
    overlap_bytes = -(-(req.offset + req.bytes) // align) * align - overlap_offset
    if not req.serialising:
        req.bs.serialising_in_flight += 1
        req.serialising = True
    req.overlap_offset = min(req.overlap_offset, overlap_offset)
    req.overlap_bytes = max(req.overlap_bytes, overlap_bytes)


def _overlaps(req: BdrvTrackedRequest, offset: int, nbytes: int) -> bool:
    if offset >= req.overlap_offset + req.overlap_bytes:
        return False
    if req.overlap_offset >= offset + nbytes:
        return False
    return True


@coroutine_fn
def wait_serialising_requests(self: BdrvTrackedRequest) -> bool:
    """Wait for overlapping requests when either side is serialising.
    Context: coroutine.  Returns whether it waited.
    QEMU: wait_serialising_requests."""
    bs = self.bs
    if not bs.serialising_in_flight:
        return False
    waited = False
    retry = True
    while retry:
        retry = False
        for req in bs.tracked_requests:
            if req is self or (not req.serialising and not self.serialising):
                continue
            if _overlaps(req, self.overlap_offset, self.overlap_bytes):
                assert qemu_coroutine_self() is not req.co
                if req.waiting_for is None:
                    self.waiting_for = req
                    if req.wait_queue is None:
                        req.wait_queue = CoQueue()
                    qemu_co_queue_wait(req.wait_queue)
                    self.waiting_for = None
                    retry = True
                    waited = True
                    break
    return waited
