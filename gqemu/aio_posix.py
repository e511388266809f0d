"""Polling an AioContext: ``aio_poll`` and the waits built on it.

``aio_poll`` dispatches BHs, then expired timers, and returns whether it
made progress (a bare notify is not progress); when it must block it parks
its greenlet on the hub (``AioContext._park``: first the poll window, then
the hub).  An exception raised by a BH, timer or coroutine propagates out
of ``aio_poll`` to whoever drives the loop: it is never printed and
dropped, as gevent's hub would do.

Import the public names from gqemu.aio.

QEMU: util/aio-posix.c, include/block/aio-wait.h (AIO_WAIT_WHILE).
"""
from __future__ import annotations

from typing import Callable

from gqemu.aio_context import AioContext, aio_bh_poll
from gqemu.qemu_timer import timerlist_deadline, timerlist_run_timers


class AioDeadlockError(RuntimeError):
    """aio_wait_while found nothing that could ever make its condition false."""


def aio_compute_timeout(ctx: AioContext) -> int:
    """How long, in ns, a blocking poll of ``ctx`` may sleep: 0 when a BH is
    ready, -1 when no timer is armed.  QEMU: aio_compute_timeout."""
    if ctx._bh_list or ctx._ts_queue:
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
        if ctx._timers:
            progress = timerlist_run_timers(ctx) or progress
        if progress or not blocking:
            return progress
        while True:
            if not ctx._bh_list and not ctx._ts_queue:
                if ctx.sched is not None and ctx.sched.idle(ctx):
                    continue            # the scheduler released held work
                deadline = timerlist_deadline(ctx)
                if deadline is None and ctx.external == 0:
                    return False        # nothing could ever wake us
                if not ctx._park(deadline):
                    return False
            progress = aio_bh_poll(ctx)
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
