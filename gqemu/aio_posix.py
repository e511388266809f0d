"""Polling an AioContext: ``aio_poll`` and the waits built on it.

``aio_poll`` dispatches BHs, then ready fd handlers, then expired timers,
and returns whether it made progress (a bare notify is not progress); when
it must block it parks its greenlet on the hub (``AioContext._park``: first
the poll window, then the hub, which then also watches the handlers' fds).

Fd handlers (:func:`aio_set_fd_handler`) are polled, as QEMU's poll
handlers are: each poll asks ``io_poll(opaque)`` whether the handler has
work (for io_uring: a completion in the CQ ring, two reads of shared
memory) and runs ``io_poll_ready(opaque)`` when it has; only a parked poll
watches the fd itself, and when the hub sees it readable the woken poll
runs ``io_read(opaque)`` (which must consume what made it readable, e.g.
clear an eventfd).  Work a handler waits for must be
counted in the context's ``external`` (as thread-pool requests are), or a
blocking poll has nothing to wait for and returns False.  An exception raised by a BH, timer or coroutine propagates out
of ``aio_poll`` to whoever drives the loop: it is never printed and
dropped, as gevent's hub would do.

Import the public names from gqemu.aio.

QEMU: util/aio-posix.c, include/block/aio-wait.h (AIO_WAIT_WHILE).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from gqemu.aio_context import AioContext, aio_bh_poll
from gqemu.qemu_timer import timerlist_deadline, timerlist_run_timers


class AioDeadlockError(RuntimeError):
    """aio_wait_while found nothing that could ever make its condition false."""


class AioHandler:
    """A file descriptor a context polls.  QEMU: AioHandler."""

    __slots__ = ("fd", "io_read", "io_poll", "io_poll_ready", "opaque", "watcher", "revents")

    def __init__(self, fd: int, io_read: Callable[[Any], Any],
                 io_poll: Callable[[Any], bool], io_poll_ready: Callable[[Any], Any],
                 opaque: Any) -> None:
        self.fd = fd
        self.io_read = io_read
        self.io_poll = io_poll
        self.io_poll_ready = io_poll_ready
        self.opaque = opaque
        self.watcher: Any = None        # the hub's io watcher, while there is a hub
        self.revents = False            # the watcher saw the fd readable

    def watch(self, ctx: AioContext, loop: Any) -> None:
        """Have the hub wake ``ctx``'s parked polls when the fd is
        readable (AioContext._park, while it waits)."""
        if self.watcher is None:
            self.watcher = loop.io(self.fd, 1)
            self.watcher.ref = False    # what it waits for counts in external
        self.watcher.start(self._readable, ctx)

    def _readable(self, ctx: AioContext) -> None:
        # Runs in the hub; io_read runs from the woken poll
        # (aio_dispatch_handlers).
        self.revents = True
        ctx._wake()

    def unwatch(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


def aio_set_fd_handler(ctx: AioContext, fd: int, is_external: bool,
                       io_read: Optional[Callable[[Any], Any]],
                       io_write: Optional[Callable[[Any], Any]],
                       io_poll: Optional[Callable[[Any], bool]],
                       io_poll_ready: Optional[Callable[[Any], Any]],
                       opaque: Any) -> None:
    """Watch ``fd`` for reading in ``ctx`` (replacing its handler), or stop
    watching it when ``io_read`` is None.  gqemu's loop finds work by
    polling, so ``io_poll`` and ``io_poll_ready`` are required and
    ``io_write`` is not supported.  Context: ``ctx``'s loop thread.
    QEMU: aio_set_fd_handler."""
    if io_write is not None:
        raise ValueError("aio_set_fd_handler: gqemu watches fds for reading only")
    for h in ctx.handlers:
        if h.fd == fd:
            ctx.handlers = [x for x in ctx.handlers if x is not h]
            if h.watcher is not None:
                h.watcher.stop()
                h.watcher.close()
                h.watcher = None
            break
    if io_read is not None:
        if io_poll is None or io_poll_ready is None:
            raise ValueError("aio_set_fd_handler: gqemu needs io_poll and io_poll_ready")
        ctx.handlers = ctx.handlers + [AioHandler(fd, io_read, io_poll, io_poll_ready, opaque)]


def aio_dispatch_handlers(ctx: AioContext) -> bool:
    """Run ``io_read`` of every handler whose fd the hub saw readable, and
    ``io_poll_ready`` of every handler whose ``io_poll`` says it has work.
    QEMU: aio_dispatch_ready_handlers (with run_poll_handlers_once)."""
    progress = False
    for h in ctx.handlers:
        if h.revents:
            h.revents = False
            h.io_read(h.opaque)
            progress = True
        elif h.io_poll(h.opaque):
            h.io_poll_ready(h.opaque)
            progress = True
    return progress


def _handlers_ready(ctx: AioContext) -> bool:
    for h in ctx.handlers:
        if h.revents or h.io_poll(h.opaque):
            return True
    return False


def aio_compute_timeout(ctx: AioContext) -> int:
    """How long, in ns, a blocking poll of ``ctx`` may sleep: 0 when a BH or
    a handler is ready, -1 when no timer is armed.  QEMU: aio_compute_timeout."""
    if ctx._bh_list or ctx._ts_queue or (ctx.handlers and _handlers_ready(ctx)):
        return 0
    deadline = timerlist_deadline(ctx)
    return -1 if deadline is None else int(deadline * 1e9)


def aio_poll(ctx: AioContext, blocking: bool) -> bool:
    """Dispatch ready BHs and expired timers; with ``blocking``, first wait
    until there is something to dispatch.  Returns whether progress was
    made.  A blocking poll with nothing in the process that could ever wake
    it returns False instead of hanging.

    Context: a normal greenlet (main loop or vCPU), never the hub.
    QEMU: aio_poll.
    """
    ctx.poll_depth += 1
    try:
        progress = aio_bh_poll(ctx)
        if ctx.handlers:
            progress = aio_dispatch_handlers(ctx) or progress
        if ctx._timers:
            progress = timerlist_run_timers(ctx) or progress
        if progress or not blocking:
            return progress
        while True:
            if not ctx._bh_list and not ctx._ts_queue and not (
                    ctx.handlers and _handlers_ready(ctx)):
                if ctx.sched is not None and ctx.sched.idle(ctx):
                    continue            # the scheduler released held work
                deadline = timerlist_deadline(ctx)
                if deadline is None and ctx.external == 0:
                    return False        # nothing could ever wake us
                if not ctx._park(deadline):
                    return False
            progress = aio_bh_poll(ctx)
            if ctx.handlers:
                progress = aio_dispatch_handlers(ctx) or progress
            if ctx._timers:
                progress = timerlist_run_timers(ctx) or progress
            if progress:
                return True
    finally:
        ctx.poll_depth -= 1


def aio_wait_while(ctx: AioContext, cond: Callable[[], bool]) -> None:
    """Poll ``ctx`` (blocking) while ``cond()`` is true.

    Raises AioDeadlockError if the condition can never become false (no
    BH, timer, thread-pool request or greenlet left that could act).
    QEMU: AIO_WAIT_WHILE / BDRV_POLL_WHILE.
    """
    while cond():
        if not aio_poll(ctx, True) and cond():
            if (not ctx._bh_list and not ctx._ts_queue and ctx.external == 0
                    and timerlist_deadline(ctx) is None):
                raise AioDeadlockError(
                    "aio_wait_while: nothing left that could make progress")
