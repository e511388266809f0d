"""Linux AIO: the file driver's ``aio=native`` engine (O_DIRECT only).

``laio_co_submit`` prepares an ``iocb`` (``IOCB_CMD_PREADV``/``PWRITEV``,
its completion signalled on the context's eventfd) and hands it to the
kernel with ``io_submit``; the coroutine yields until the completion is
reaped.  Completions are read straight from the kernel's completion ring,
which ``io_setup`` maps into the process (``struct aio_ring`` at the
address of the AIO context), as QEMU's ``io_getevents_peek`` does: the
context's poll checks the ring's head and tail (``qemu_laio_poll_cb``) and
the hub watches the eventfd while the loop sleeps.  Requests in flight
count in the context's ``external``.

QEMU's completion rules: a short read is padded with zeroes (O_DIRECT reads
end only at the end of the file), a short write is -ENOSPC; when
``io_submit`` refuses a request with an error other than -EAGAIN, that
request fails with it and the rest are submitted again.  Flushes,
discards, write-zeroes and misaligned requests go to the thread pool, as in
QEMU 7.2.  ``io_setup``, ``io_submit`` and ``io_destroy`` are called
through ctypes (no libaio); the numbers are x86-64's.  QEMU 7.2 has no
trace events here.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/linux-aio.c (7.2), util/async.c (aio_get_linux_aio).
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections import deque
from typing import Any, Optional

from greenlet import getcurrent

from gqemu.aio import AioContext, aio_co_wake, aio_set_fd_handler
from gqemu.block.io_uring_ring import iovec_array, libc_syscall
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_memset
from gqemu.coroutine import coroutine_fn, qemu_coroutine_entered, qemu_coroutine_yield
from gqemu.threadpool.aiocb import QEMU_AIO_READ, QEMU_AIO_WRITE
__all__ = ["LinuxAioState", "laio_init", "laio_cleanup", "laio_co_submit",
           "aio_setup_linux_aio", "aio_get_linux_aio"]

MAX_EVENTS = 1024                      # QEMU's
AIO_RING_MAGIC = 0xa10a10a1
IOCB_CMD_PREADV = 7
IOCB_CMD_PWRITEV = 8
IOCB_FLAG_RESFD = 1 << 0
_NR_IO_SETUP = 206                     # x86-64
_NR_IO_DESTROY = 207
_NR_IO_SUBMIT = 209

# struct iocb: aio_data, aio_key, aio_rw_flags, aio_lio_opcode, aio_reqprio,
# aio_fildes, aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags,
# aio_resfd
_IOCB = struct.Struct("<QIIHhIQQqQII")
# struct aio_ring header: id, nr, head, tail, magic, compat, incompat, header_length
_RING = struct.Struct("<8I")
_EVENT = struct.Struct("<QQqq")        # data, obj, res, res2

_syscall: Any = None


def _sys(*args: int) -> int:
    global _syscall
    if _syscall is None:
        _syscall = libc_syscall(6)
    ret = _syscall(*(args + (0,) * (6 - len(args))))
    return ret if ret >= 0 else -ctypes.get_errno()  # type: ignore[no-any-return]


class LinuxAioCB:
    """One request.  QEMU: struct qemu_laiocb."""

    __slots__ = ("co", "ret", "nbytes", "qiov", "is_read", "iocb", "keep", "token")

    def __init__(self, co: Any, qiov: QEMUIOVector, is_read: bool) -> None:
        self.co = co
        self.ret = -errno.EINPROGRESS
        self.nbytes = qiov.size
        self.qiov = qiov
        self.is_read = is_read
        self.iocb: Any = None           # the C iocb the kernel was given
        self.keep: Any = None           # the C iovec array and the buffers it points at
        self.token = 0


class LinuxAioState:
    """An AioContext's Linux AIO context and eventfd.  QEMU: LinuxAioState."""

    def __init__(self, ctx: AioContext) -> None:
        self.aio_context = ctx
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        ctx_id = ctypes.c_ulong(0)
        rc = _sys(_NR_IO_SETUP, MAX_EVENTS, ctypes.addressof(ctx_id))
        if rc < 0:
            os.close(self.efd)
            raise OSError(-rc, "failed to create linux AIO context")
        self.ctx_id = ctx_id.value
        hdr = _RING.unpack(ctypes.string_at(self.ctx_id, _RING.size))
        # QEMU reads the ring only when its magic says it may (else it
        # would have to ask io_getevents); Linux has always mapped it.
        if hdr[4] != AIO_RING_MAGIC:
            self.close_context()
            raise OSError(errno.ENOSYS, "failed to create linux AIO context")
        self.nr = hdr[1]
        self.ring = (ctypes.c_char * (_RING.size + self.nr * _EVENT.size)).from_address(
            self.ctx_id)
        self.ring32 = memoryview(self.ring).cast("B").cast("I")
        self.pending: deque[LinuxAioCB] = deque()
        self.in_queue = 0
        self.in_flight = 0
        self.blocked = False
        self.plugged = 0
        self.requests: dict[int, LinuxAioCB] = {}
        self._next = 0
        aio_set_fd_handler(ctx, self.efd, False, qemu_laio_completion_cb, None,
                           qemu_laio_poll_cb, qemu_laio_poll_ready, self)

    def close_context(self) -> None:
        _sys(_NR_IO_DESTROY, self.ctx_id)
        os.close(self.efd)

    def close(self) -> None:
        laio_cleanup(self)


def laio_init(ctx: AioContext) -> LinuxAioState:
    """Raises OSError with QEMU's words.  QEMU: laio_init +
    laio_attach_aio_context."""
    return LinuxAioState(ctx)


def laio_cleanup(s: LinuxAioState) -> None:
    """QEMU: laio_detach_aio_context + laio_cleanup."""
    ctx = s.aio_context
    aio_set_fd_handler(ctx, s.efd, False, None, None, None, None, s)
    if ctx.linux_aio is s:
        ctx.linux_aio = None
    s.ring32.release()
    s.close_context()


def aio_setup_linux_aio(ctx: AioContext) -> LinuxAioState:
    """The context's Linux AIO state, made on first use.  Raises OSError.
    QEMU: aio_setup_linux_aio."""
    s = ctx.linux_aio
    if s is None:
        s = ctx.linux_aio = laio_init(ctx)
    return s  # type: ignore[no-any-return]


aio_get_linux_aio = aio_setup_linux_aio


def _peek(s: LinuxAioState) -> int:
    """How many completions wait in the ring.  QEMU: io_getevents_peek."""
    r = s.ring32
    head, tail = r[2], r[3]
    return (tail - head) % s.nr if tail != head else 0


def qemu_laio_process_completion(s: LinuxAioState, cb: LinuxAioCB) -> None:
    """Turn the byte count into 0/-errno and wake the coroutine.
    QEMU: qemu_laio_process_completion."""
    ret = cb.ret
    if ret != -errno.ECANCELED:
        if ret == cb.nbytes:
            ret = 0
        elif ret >= 0:
            if cb.is_read:                   # short read: the rest reads as zero
                qemu_iovec_memset(cb.qiov, ret, 0, cb.qiov.size - ret)
                ret = 0
            else:
                ret = -errno.ENOSPC
    cb.ret = ret
    cb.keep = cb.iocb = None
    if not qemu_coroutine_entered(cb.co):
        aio_co_wake(cb.co)


def qemu_laio_process_completions(s: LinuxAioState) -> None:
    """Reap every completion in the ring, one at a time (a nested poll may
    reap the rest).  QEMU: qemu_laio_process_completions."""
    r = s.ring32
    while True:
        head, tail = r[2], r[3]
        if head == tail:
            break
        data, _obj, res, res2 = _EVENT.unpack_from(
            s.ring, _RING.size + (head % s.nr) * _EVENT.size)
        r[2] = (head + 1) % s.nr
        cb = s.requests.pop(data)
        s.in_flight -= 1
        s.aio_context.external_dec()
        # QEMU: io_event_ret, res2 above res (0 on 64-bit hosts)
        v = ((res2 << 32) | (res & 0xffffffffffffffff)) & 0xffffffffffffffff
        cb.ret = v - (1 << 64) if v >> 63 else v
        qemu_laio_process_completion(s, cb)


def qemu_laio_process_completions_and_submit(s: LinuxAioState) -> None:
    """QEMU: qemu_laio_process_completions_and_submit."""
    qemu_laio_process_completions(s)
    if not s.plugged and s.pending:
        ioq_submit(s)


def qemu_laio_completion_cb(s: LinuxAioState) -> None:
    """The eventfd is readable: clear it and reap.  QEMU: qemu_laio_completion_cb."""
    try:
        os.eventfd_read(s.efd)
    except BlockingIOError:
        return
    qemu_laio_process_completions_and_submit(s)


def qemu_laio_poll_cb(s: LinuxAioState) -> bool:
    """QEMU: qemu_laio_poll_cb."""
    return _peek(s) > 0


def qemu_laio_poll_ready(s: LinuxAioState) -> None:
    """QEMU: qemu_laio_poll_ready."""
    qemu_laio_process_completions_and_submit(s)


def ioq_submit(s: LinuxAioState) -> None:
    """Submit the pending requests (at most MAX_EVENTS in flight); a
    request the kernel refuses fails with its error and the rest go again.
    QEMU: ioq_submit (linux-aio.c)."""
    ctx = s.aio_context
    while s.pending:
        n = min(len(s.pending), MAX_EVENTS - s.in_flight)
        if n <= 0:
            break
        batch = [s.pending[i] for i in range(n)]
        ptrs = (ctypes.c_void_p * n)(*[ctypes.addressof(cb.iocb) for cb in batch])
        ret = _sys(_NR_IO_SUBMIT, s.ctx_id, n, ctypes.addressof(ptrs))
        if ret == -errno.EAGAIN:
            break
        if ret < 0:
            # Fail the first request, retry the rest
            cb = s.pending.popleft()
            s.requests.pop(cb.token, None)
            s.in_queue -= 1
            cb.ret = ret
            qemu_laio_process_completion(s, cb)
            continue
        for _ in range(ret):
            s.pending.popleft()
            ctx.external_inc()
        s.in_flight += ret
        s.in_queue -= ret
        if ret < n:
            break
    s.blocked = s.in_queue > 0
    if s.in_flight:
        qemu_laio_process_completions(s)


def laio_do_submit(fd: int, cb: LinuxAioCB, offset: int, type_: int, s: LinuxAioState) -> None:
    """Prepare ``cb``'s iocb and queue it; submit unless blocked or
    plugged.  QEMU: laio_do_submit."""
    keep, addr, n = iovec_array(cb.qiov.iov, 0)
    s._next = token = (s._next + 1) & 0xffffffffffffffff
    cb.token = token
    cb.keep = keep
    cb.iocb = ctypes.create_string_buffer(_IOCB.pack(
        token, 0, 0, IOCB_CMD_PREADV if type_ == QEMU_AIO_READ else IOCB_CMD_PWRITEV, 0,
        fd, addr, n, offset, 0, IOCB_FLAG_RESFD, s.efd))
    s.requests[token] = cb
    s.pending.append(cb)
    s.in_queue += 1
    if not s.blocked and not s.plugged:
        ioq_submit(s)


@coroutine_fn
def laio_co_submit(bs: Any, s: LinuxAioState, fd: int, offset: int,
                   qiov: Optional[QEMUIOVector], type_: int) -> int:
    """Submit one read or write and yield until it completes.
    Context: coroutine.  Returns: 0 or -errno.  QEMU: laio_co_submit."""
    if qiov is None or type_ not in (QEMU_AIO_READ, QEMU_AIO_WRITE):
        raise ValueError("laio_co_submit: invalid AIO request type 0x%x" % type_)
    cb = LinuxAioCB(getcurrent(), qiov, type_ == QEMU_AIO_READ)
    laio_do_submit(fd, cb, offset, type_, s)
    if cb.ret == -errno.EINPROGRESS:
        qemu_coroutine_yield()
    return cb.ret
