"""Linux io_uring: the file driver's ``aio=io_uring`` engine.

``luring_co_submit`` puts one SQE on the ring of the request's AioContext
and hands it to the kernel with ``io_uring_enter``; then it looks at the
completion ring at once (``ioq_submit`` -> ``luring_process_completions``).
A buffered read of cached data is completed by the kernel during the
submission, so the coroutine finds its result there and never yields: no
thread, no wake-up.  Other requests complete in the kernel's io-wq workers;
the context's poll finds their CQEs (the ring is an fd handler whose
``io_poll`` reads the CQ head and tail) and wakes the coroutines, and a
parked poll watches the ring's fd.  Requests in flight count in the
context's ``external``, as thread-pool requests do.

QEMU's short-read rule is kept: the rest of a short read is submitted again
and a read that reaches the end of the file is padded with zeroes; a short
write fails with -ENOSPC; -EINTR and -EAGAIN resubmit.  Reads and writes
use ``IORING_OP_READV``/``WRITEV`` as QEMU's (``IORING_OP_READ``/``WRITE``
when the request is one buffer: the same transfer without building a C
iovec array), flushes ``IORING_OP_FSYNC`` with ``IORING_FSYNC_DATASYNC``; discards and write-zeroes stay on the thread
pool (as in QEMU), and so do misaligned O_DIRECT requests.

There is no liburing: gqemu.block.io_uring_ring sets the ring up with the
raw system calls.

QEMU's ``completion_bh`` (scheduled while completions run, so that a
nested event loop sees the rest) is not needed: gqemu's loop polls the CQ
ring itself, and a nested poll does so again.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/io_uring.c (7.2), util/async.c (aio_get_linux_io_uring).
"""
from __future__ import annotations

import ctypes
import errno
from collections import deque
from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.aio import (AioContext, aio_bh_schedule_oneshot, aio_co_wake,
                       aio_set_fd_handler)
from gqemu.block.io_uring_ring import (IORING_FSYNC_DATASYNC, IORING_OP_FSYNC, IORING_OP_READ,
                                      IORING_OP_READV, IORING_OP_WRITE, IORING_OP_WRITEV, IO_URING_SQE,
                                      IoUring, iovec_array)
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_memset
from gqemu.coroutine import coroutine_fn, qemu_coroutine_entered, qemu_coroutine_yield
from gqemu.threadpool.aiocb import QEMU_AIO_FLUSH, QEMU_AIO_READ, QEMU_AIO_WRITE
from gqemu.trace import trace_event

__all__ = ["LuringState", "LuringAIOCB", "luring_init", "luring_cleanup",
           "luring_co_submit", "luring_aio_flush", "aio_setup_linux_io_uring",
           "aio_get_linux_io_uring"]

trace_luring_init_state = trace_event("luring_init_state", "s %p size %zu")
trace_luring_cleanup_state = trace_event("luring_cleanup_state", "%p freed")
trace_luring_do_submit = trace_event(
    "luring_do_submit", "LuringState %p blocked %d plugged %d queued %d inflight %d")
trace_luring_do_submit_done = trace_event("luring_do_submit_done",
                                          "LuringState %p submitted to kernel %d")
trace_luring_co_submit = trace_event(
    "luring_co_submit", "bs %p s %p luringcb %p fd %d offset %d nbytes %zd type %d")
trace_luring_process_completion = trace_event("luring_process_completion",
                                              "LuringState %p luringcb %p ret %d")
trace_luring_io_uring_submit = trace_event("luring_io_uring_submit", "LuringState %p ret %d")
trace_luring_resubmit_short_read = trace_event("luring_resubmit_short_read",
                                               "LuringState %p luringcb %p nread %d")

MAX_ENTRIES = 128                      # the ring's size, as QEMU's

class LuringAIOCB:
    """One request on the ring: a coroutine waiting in luring_co_submit, or
    (a flush through the 2.8-style AIO interface) a callback.
    QEMU: LuringAIOCB."""

    __slots__ = ("co", "ret", "qiov", "is_read", "total_read", "sqeq", "iov",
                 "cb", "opaque", "token")

    def __init__(self, co: Any, qiov: Optional[QEMUIOVector], is_read: bool) -> None:
        self.co = co
        self.ret = -errno.EINPROGRESS
        self.qiov = qiov
        self.is_read = is_read
        self.total_read = 0
        self.sqeq: list[int] = []       # opcode, fd, off, addr, len, rw_flags
        self.iov: Any = None            # the C iovec array and the buffers it points at
        self.cb: Optional[Callable[[Any, int], Any]] = None
        self.opaque: Any = None
        self.token = 0


class LuringState:
    """An AioContext's ring and its submission queue.  QEMU: LuringState."""

    def __init__(self, ctx: AioContext) -> None:
        self.ring = IoUring(MAX_ENTRIES)
        self.aio_context = ctx
        self.submit_queue: deque[LuringAIOCB] = deque()
        self.plugged = 0
        self.in_queue = 0
        self.in_flight = 0
        self.blocked = False
        self.requests: dict[int, LuringAIOCB] = {}    # user_data -> request
        self.on_ring: deque[LuringAIOCB] = deque()    # in SQEs the kernel has not taken
        self._next = 0
        aio_set_fd_handler(ctx, self.ring.fd, False, qemu_luring_completion_cb, None,
                           qemu_luring_poll_cb, qemu_luring_poll_ready, self)

    def close(self) -> None:
        luring_cleanup(self)


def luring_init(ctx: AioContext) -> LuringState:
    """A ring of MAX_ENTRIES for ``ctx``.  Raises OSError (io_uring_setup's
    error).  QEMU: luring_init + luring_attach_aio_context."""
    s = LuringState(ctx)
    if trace_luring_init_state.enabled:
        trace_luring_init_state(s, MAX_ENTRIES)
    return s


def luring_cleanup(s: LuringState) -> None:
    """Detach the ring from its context and close it.  QEMU:
    luring_detach_aio_context + luring_cleanup."""
    ctx = s.aio_context
    aio_set_fd_handler(ctx, s.ring.fd, False, None, None, None, None, s)
    if ctx.linux_io_uring is s:
        ctx.linux_io_uring = None
    s.ring.close()
    if trace_luring_cleanup_state.enabled:
        trace_luring_cleanup_state(s)


def aio_setup_linux_io_uring(ctx: AioContext) -> LuringState:
    """The context's ring, made on first use.  Raises OSError.
    QEMU: aio_setup_linux_io_uring."""
    s = ctx.linux_io_uring
    if s is None:
        s = ctx.linux_io_uring = luring_init(ctx)
    return s  # type: ignore[no-any-return]


def aio_get_linux_io_uring(ctx: AioContext) -> LuringState:
    """QEMU: aio_get_linux_io_uring (which asserts it was set up; a node
    moved to another context gets a ring there on first use)."""
    return aio_setup_linux_io_uring(ctx)


def _complete(s: LuringState, cb: LuringAIOCB, ret: int) -> None:
    cb.ret = ret
    cb.iov = None
    if cb.cb is not None:
        # A callback request: never call back from inside its own submission.
        aio_bh_schedule_oneshot(s.aio_context, _deliver, cb)
    elif not qemu_coroutine_entered(cb.co):
        aio_co_wake(cb.co)          # else it is in ioq_submit and sees cb.ret


def _deliver(cb: LuringAIOCB) -> None:
    cb.cb(cb.opaque, cb.ret)  # type: ignore[misc]


def luring_process_completions(s: LuringState) -> None:
    """Consume every CQE and finish its request.  Safe to re-enter from a
    nested poll: each CQE is consumed before its request is finished.
    QEMU: luring_process_completions."""
    ring = s.ring
    while True:
        cqe = ring.pop_cqe()
        if cqe is None:
            break
        cb = s.requests.pop(cqe[0])
        ret = cqe[1]
        s.in_flight -= 1
        s.aio_context.external_dec()
        if trace_luring_process_completion.enabled:
            trace_luring_process_completion(s, cb, ret)
        total = ret + cb.total_read
        if ret < 0:
            if ret == -errno.EINTR or ret == -errno.EAGAIN:
                luring_resubmit(s, cb)
                continue
        elif cb.qiov is None:
            pass
        elif total == cb.qiov.size:
            ret = 0
        elif cb.is_read:
            if ret > 0:
                luring_resubmit_short_read(s, cb, ret)
                continue
            qemu_iovec_memset(cb.qiov, total, 0, cb.qiov.size - total)   # end of file
            ret = 0
        else:
            ret = -errno.ENOSPC
        _complete(s, cb, ret)


def luring_resubmit(s: LuringState, cb: LuringAIOCB) -> None:
    """Queue ``cb`` again; the caller submits.  QEMU: luring_resubmit."""
    s.requests[cb.token] = cb
    s.submit_queue.append(cb)
    s.in_queue += 1


def luring_resubmit_short_read(s: LuringState, cb: LuringAIOCB, nread: int) -> None:
    """Read the rest of a short read.  QEMU: luring_resubmit_short_read."""
    if trace_luring_resubmit_short_read.enabled:
        trace_luring_resubmit_short_read(s, cb, nread)
    cb.total_read += nread
    assert cb.qiov is not None
    cb.iov, addr, n = iovec_array(cb.qiov.iov, cb.total_read)
    sqe = cb.sqeq
    sqe[0] = IORING_OP_READV
    sqe[2] += nread
    sqe[3] = addr
    sqe[4] = n
    luring_resubmit(s, cb)


def ioq_submit(s: LuringState) -> int:
    """Move queued requests onto the ring and enter the kernel; then finish
    whatever already completed.  Returns io_uring_submit's last result.
    QEMU: ioq_submit."""
    ring = s.ring
    ctx = s.aio_context
    ret = 0
    q = s.submit_queue
    on_ring = s.on_ring
    retries = 0
    while s.in_queue > 0:
        while q:
            off = ring.get_sqe()
            if off < 0:
                break
            cb = q.popleft()
            on_ring.append(cb)
            op, fd, offset, addr, n, rw_flags = cb.sqeq
            IO_URING_SQE.pack_into(ring.sqes, off, op, 0, 0, fd, offset, addr, n, rw_flags,
                           cb.token, 0, 0, 0, 0, 0)
        ret = ring.submit()
        if trace_luring_io_uring_submit.enabled:
            trace_luring_io_uring_submit(s, ret)
        if ret <= 0:
            # nothing taken: the requests go back to the queue, in order
            ring.unpublish()
            q.extendleft(reversed(on_ring))
            on_ring.clear()
            retries += 1
            if (ret == -errno.EAGAIN or ret == -errno.EINTR) and retries < 1000:
                continue
            break
        for _ in range(ret):
            on_ring.popleft()
            ctx.external_inc()
        s.in_flight += ret
        s.in_queue -= ret
    s.blocked = s.in_queue > 0
    if s.in_flight:
        luring_process_completions(s)
        if s.in_queue > 0 and not s.blocked and not s.plugged:
            # A completion was queued again (the rest of a short read, or
            # -EAGAIN).  QEMU 7.2 leaves it queued here until some other
            # completion comes, so a short read at the end of a file with
            # nothing else in flight never completes (qemu-io hangs); gqemu
            # submits it now.
            return ioq_submit(s)
    return ret


def qemu_luring_completion_cb(s: LuringState) -> None:
    """The ring's fd is readable.  QEMU: qemu_luring_completion_cb."""
    luring_process_completions_and_submit(s)


def qemu_luring_poll_cb(s: LuringState) -> bool:
    """QEMU: qemu_luring_poll_cb."""
    return s.ring.cq_ready()


def qemu_luring_poll_ready(s: LuringState) -> None:
    """QEMU: qemu_luring_poll_ready."""
    luring_process_completions_and_submit(s)


def luring_process_completions_and_submit(s: LuringState) -> None:
    """QEMU: luring_process_completions_and_submit."""
    luring_process_completions(s)
    if not s.plugged and s.in_queue > 0:
        ioq_submit(s)


def luring_do_submit(fd: int, cb: LuringAIOCB, s: LuringState, offset: int,
                     type_: int) -> int:
    """Prepare ``cb``'s SQE and queue it; submit unless plugged.
    QEMU: luring_do_submit."""
    if type_ == QEMU_AIO_READ or type_ == QEMU_AIO_WRITE:
        assert cb.qiov is not None
        iov = cb.qiov.iov
        if len(iov) == 1 and len(iov[0]):
            buf = iov[0]
            try:
                c = ctypes.c_char.from_buffer(buf)
            except TypeError:           # read-only (a write's): copied
                c = ctypes.c_char.from_buffer(bytearray(buf))
            cb.iov = c
            cb.sqeq = [IORING_OP_READ if type_ == QEMU_AIO_READ else IORING_OP_WRITE,
                       fd, offset, ctypes.addressof(c), len(buf), 0]
        else:
            cb.iov, addr, n = iovec_array(iov, 0)
            cb.sqeq = [IORING_OP_READV if type_ == QEMU_AIO_READ else IORING_OP_WRITEV,
                       fd, offset, addr, n, 0]
    elif type_ == QEMU_AIO_FLUSH:
        cb.sqeq = [IORING_OP_FSYNC, fd, 0, 0, 0, IORING_FSYNC_DATASYNC]
    else:
        raise ValueError("luring_do_submit: invalid AIO request type 0x%x" % type_)
    s._next = token = (s._next + 1) & 0xffffffffffffffff
    cb.token = token
    s.requests[token] = cb
    s.submit_queue.append(cb)
    s.in_queue += 1
    if trace_luring_do_submit.enabled:
        trace_luring_do_submit(s, s.blocked, s.plugged, s.in_queue, s.in_flight)
    if not s.blocked and (not s.plugged or s.in_flight + s.in_queue >= MAX_ENTRIES):
        ret = ioq_submit(s)
        if trace_luring_do_submit_done.enabled:
            trace_luring_do_submit_done(s, ret)
        if ret <= 0 and cb in s.submit_queue:
            # refused: the request never reached the kernel
            s.submit_queue.remove(cb)
            s.in_queue -= 1
            s.requests.pop(token, None)
            s.blocked = s.in_queue > 0
            return ret if ret < 0 else -errno.EIO
        return 0 if ret > 0 else ret
    return 0


@coroutine_fn
def luring_co_submit(bs: Any, s: LuringState, fd: int, offset: int,
                     qiov: Optional[QEMUIOVector], type_: int) -> int:
    """Submit one request and yield until it completes (not at all when
    the kernel completed it during the submission).
    Context: coroutine.  Returns: 0 or -errno.  QEMU: luring_co_submit."""
    cb = LuringAIOCB(getcurrent(), qiov, type_ == QEMU_AIO_READ)
    if trace_luring_co_submit.enabled:
        trace_luring_co_submit(bs, s, cb, fd, offset, qiov.size if qiov is not None else 0,
                               type_)
    ret = luring_do_submit(fd, cb, s, offset, type_)
    if ret < 0:
        return ret
    if cb.ret == -errno.EINPROGRESS:
        qemu_coroutine_yield()
    return cb.ret


def luring_aio_flush(s: LuringState, fd: int, cb: Callable[[Any, int], Any],
                     opaque: Any) -> Optional[LuringAIOCB]:
    """An fdatasync on the ring; ``cb(opaque, ret)`` from the loop.
    None when the kernel refused the submission.  (QEMU 7.2 submits its
    flush from a coroutine, raw_co_flush_to_disk; gqemu's file driver
    keeps 2.8's AIO flush.)"""
    acb = LuringAIOCB(None, None, False)
    acb.cb = cb
    acb.opaque = opaque
    if luring_do_submit(fd, acb, s, 0, QEMU_AIO_FLUSH) < 0:
        return None
    return acb
