"""AioContext on the gevent hub: bottom halves, timers, aio_poll, coroutine
wake-ups, and the AIOCB base of QEMU's block/aio.h.

Everything an AioContext runs (bottom halves, timers, completions, the
coroutines they enter) runs in the greenlet that calls :func:`aio_poll`,
never in the hub: when ``aio_poll`` must block it parks that greenlet on the
hub until :func:`aio_notify` or a timer wakes it, so the hub only ever does
the waiting.  Notifying is cheap and coalesced: worker threads call
:func:`qemu_bh_schedule`, which queues the BH on a thread-safe list and sends
one libev async event; a burst of completions costs one hub wake-up.

The poll window (QEMU's adaptive polling, ``poll-max-ns``): when only
thread-pool requests can wake a blocking poll (``external`` is all
``poll_external``, no other poll of the context parked, nothing ready in
the hub), ``aio_poll`` first blocks on a plain lock, without the GIL, for
at most ``poll_max_ns`` (and never past the next timer); a worker that
queues a BH meanwhile releases that lock instead of sending the async
event, so the completion runs without the eventfd, epoll and hub switches.
If the window runs out the poll parks on the hub as before.  QEMU
busy-waits in its window; this wait costs no CPU, so it is not adapted.

Bottom halves follow today's QEMU ordering (reference §2.1): a poll takes the
list of scheduled BHs and runs them newest-scheduled first; a BH scheduled
while the list runs waits for the next poll.  ``aio_poll`` dispatches BHs,
then expired timers, and returns whether it made progress (a bare notify is
not progress).  An exception raised by a BH, timer or coroutine propagates
out of ``aio_poll`` to whoever drives the loop: it is never printed and
dropped, as gevent's hub would do.

The context is explicit.  Each AioContext has one loop thread
(``loop_thread``: the thread that made it, or the last one to make it
current with ``with ctx:`` / :func:`aio_context_acquire`); from any other
thread, scheduling a BH, notifying or entering a coroutine goes through the
thread-safe queue.  Each thread has a current context
(:func:`qemu_get_current_aio_context`): the one it made current, else its
own, made on first use (the main thread's is the main loop's context,
:func:`qemu_get_aio_context`).  A context also owns what used to be
process-wide: the clock source (a stress run's virtual time), the stress
scheduler (``sched``) and its ``coroutine_fn`` hook (``sched_point``), the
planted-bug switches (``plant``), where error_report() and blkdebug print
(``error_sink``, ``blkdebug_output``; None: stderr/stdout), and the
``GQEMU_DEBUG``/``GQEMU_STRESS`` flags, read when it is created.

The public names are imported from here; the code lives in one module per
QEMU file, and this one keeps which context is current on each thread
(``qemu_get_current_aio_context``...), the AIOCB and cancellation:

| module | QEMU |
| --- | --- |
| ``gqemu.qemu_timer`` | util/qemu-timer.c: clocks, QEMUTimer, the timer heap |
| ``gqemu.aio_context`` | util/async.c: AioContext, BHs, notify, the hub wait and poll window |
| ``gqemu.aio_posix`` | util/aio-posix.c: aio_poll, aio_wait_while (AIO_WAIT_WHILE) |
| ``gqemu.aio`` | the current context per thread, AIOCB, bdrv_aio_cancel |

Must not import: gqemu.threadpool, gqemu.block, gqemu.hw, gqemu.kvm (higher
layers).  gevent is used here for the hub, in gqemu.threadpool for worker
threads and in gqemu.kvm for the vCPU greenlets.

QEMU: util/async.c, util/aio-posix.c, util/qemu-timer.c, block/aio.h.
"""
from __future__ import annotations

import itertools
import threading
from threading import get_ident
from typing import Any, Callable, Optional

from gqemu.aio_context import (POLL_MAX_NS, QEMUBH, AioContext, aio_bh_new, aio_bh_poll,
                               aio_bh_schedule_oneshot, aio_context_acquire,
                               aio_context_release, aio_notify, qemu_bh_cancel,
                               qemu_bh_delete, qemu_bh_schedule)
from gqemu.aio_posix import (AioDeadlockError, AioHandler, aio_compute_timeout, aio_poll,
                             aio_set_fd_handler, aio_wait_while)
from gqemu.qemu_coroutine import aio_co_enter, aio_co_schedule, aio_co_wake, thread_state
from gqemu.qemu_coroutine_sleep import coroutine_set_aio_hooks
from gqemu.qemu_timer import (QEMU_CLOCK_HOST, QEMU_CLOCK_REALTIME, QEMU_CLOCK_VIRTUAL,
                              QEMU_CLOCK_VIRTUAL_RT, SCALE_MS, SCALE_NS, SCALE_US,
                              QEMUTimer, aio_timer_new, co_sleep_timer, qemu_clock_get_ns,
                              timer_del, timer_mod, timer_pending)

__all__ = [
    "AioContext", "QEMUBH", "QEMUTimer", "AioDeadlockError",
    "qemu_get_aio_context", "qemu_get_current_aio_context", "aio_context_new",
    "aio_context_acquire", "aio_context_release", "aio_context_unref",
    "aio_compute_timeout", "aio_set_clock_source", "aio_context_set_poll_params",
    "POLL_MAX_NS", "aio_bh_new",
    "aio_bh_schedule_oneshot", "qemu_bh_schedule", "qemu_bh_cancel", "qemu_bh_delete", "aio_bh_poll", "aio_poll",
    "aio_notify", "aio_wait_while", "aio_co_wake", "aio_co_schedule",
    "AioHandler", "aio_set_fd_handler",
    "aio_co_enter", "QEMU_CLOCK_REALTIME", "QEMU_CLOCK_VIRTUAL",
    "QEMU_CLOCK_HOST", "QEMU_CLOCK_VIRTUAL_RT", "SCALE_NS", "SCALE_US",
    "SCALE_MS", "qemu_clock_get_ns", "aio_timer_new", "timer_mod", "timer_del",
    "timer_pending", "AIOCBInfo", "BlockAIOCB", "qemu_aio_get", "qemu_aio_ref",
    "qemu_aio_unref", "bdrv_aio_cancel", "bdrv_aio_cancel_async",
]

_MAIN_THREAD = threading.main_thread().ident


def aio_set_clock_source(source: Optional[Callable[[int], int]],
                         ctx: Optional["AioContext"] = None) -> None:
    """Read every clock of ``ctx`` (default: the current context) from
    ``source(clock)`` instead of the host (the stress scheduler's virtual
    time); ``None`` restores the host clocks."""
    (ctx or qemu_get_current_aio_context()).clock_source = source


_main_ctx: Optional[AioContext] = None
_ctx_lock = threading.Lock()


def qemu_get_current_aio_context() -> AioContext:
    """The calling thread's current AioContext: the one it made current
    (``with ctx:``), else its own, made on first use -- on the main thread
    the main loop's.  QEMU: qemu_get_current_aio_context."""
    ctx = thread_state.ctx
    if ctx is None:
        global _main_ctx
        if get_ident() == _MAIN_THREAD:
            with _ctx_lock:
                if _main_ctx is None:
                    _main_ctx = AioContext("main")
            ctx = _main_ctx
        else:
            ctx = AioContext("thread%d" % next(_ctx_ids))
        thread_state.ctx = ctx
    return ctx


def qemu_get_aio_context() -> AioContext:
    """The AioContext whose loop the calling thread runs: the main loop's
    on the main thread, unless a context was made current there (a stress
    run's); a vCPU or worker thread's own otherwise.  Code that opens
    nodes, creates devices or waits uses it by default.
    QEMU: qemu_get_aio_context (QEMU has one main thread; here any thread
    may run a loop)."""
    return qemu_get_current_aio_context()


def aio_context_unref(ctx: AioContext) -> None:
    """Close ``ctx``: drop its hub watcher and everything still queued.
    Its thread pool must have been freed (thread_pool_free).  Context: its
    loop thread, not current anywhere.  QEMU: aio_context_unref (with
    aio_ctx_finalize's cleanup of the io_uring ring)."""
    if ctx.linux_io_uring is not None:
        ctx.linux_io_uring.close()      # gqemu.block.io_uring.luring_cleanup
    if ctx.linux_aio is not None:
        ctx.linux_aio.close()           # gqemu.block.linux_aio.laio_cleanup
    ctx._close_hub()
    ctx._bh_list = []
    ctx._ts_queue.clear()
    ctx._timers = []
    ctx.scheduled_coroutines.clear()
    ctx.sched = None
    ctx.sched_point = None


def aio_context_set_poll_params(ctx: AioContext, max_ns: int) -> None:
    """Set how long a blocking poll of ``ctx`` waits for the thread pool
    before it sleeps on the hub (``poll_max_ns``; 0: not at all).
    QEMU: aio_context_set_poll_params (its grow/shrink factors adapt a
    busy-wait; this wait costs no CPU, so it is not adapted)."""
    if max_ns < 0:
        raise ValueError("poll-max-ns must be >= 0")
    ctx.poll_max_ns = max_ns


def aio_context_new() -> AioContext:
    """A new, separate AioContext.  QEMU: aio_context_new."""
    return AioContext("ctx%d" % next(_ctx_ids))


_ctx_ids = itertools.count(1)


coroutine_set_aio_hooks(qemu_get_current_aio_context, co_sleep_timer)


# ------------------------------------------------------------------ AIOCB


class AIOCBInfo:
    """Per-type operations of an AIOCB.  QEMU: AIOCBInfo."""

    __slots__ = ("cancel_async", "get_aio_context")

    def __init__(self, cancel_async: Optional[Callable[[Any], None]] = None,
                 get_aio_context: Optional[Callable[[Any], AioContext]] = None
                 ) -> None:
        self.cancel_async = cancel_async
        self.get_aio_context = get_aio_context


class BlockAIOCB:
    """The handle of an asynchronous request.  QEMU: BlockAIOCB."""

    __slots__ = ("aiocb_info", "cb", "opaque", "refcnt", "__weakref__")

    def __init__(self, aiocb_info: AIOCBInfo,
                 cb: Optional[Callable[[Any, int], Any]], opaque: Any) -> None:
        self.aiocb_info = aiocb_info
        self.cb = cb
        self.opaque = opaque
        self.refcnt = 1


def qemu_aio_get(aiocb_info: AIOCBInfo, cb: Any, opaque: Any,
                 cls: type = BlockAIOCB) -> Any:
    return cls(aiocb_info, cb, opaque)


def qemu_aio_ref(acb: BlockAIOCB) -> None:
    acb.refcnt += 1


def qemu_aio_unref(acb: BlockAIOCB) -> None:
    acb.refcnt -= 1
    assert acb.refcnt >= 0, "AIOCB released twice"


def bdrv_aio_cancel_async(acb: BlockAIOCB) -> None:
    """Ask for ``acb`` to be cancelled; its callback still runs exactly once
    (with -ECANCELED if the cancel won).  QEMU: bdrv_aio_cancel_async."""
    if acb.aiocb_info.cancel_async is not None:
        acb.aiocb_info.cancel_async(acb)


def bdrv_aio_cancel(acb: BlockAIOCB) -> None:
    """Cancel ``acb`` and wait until its callback has run.
    Context: loop (not a coroutine).  QEMU: bdrv_aio_cancel."""
    qemu_aio_ref(acb)
    bdrv_aio_cancel_async(acb)
    info = acb.aiocb_info
    ctx = (info.get_aio_context(acb) if info.get_aio_context is not None
           else qemu_get_current_aio_context())
    try:
        aio_wait_while(ctx, lambda: acb.refcnt > 1)
    finally:
        qemu_aio_unref(acb)
