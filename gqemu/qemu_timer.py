"""Timers and clocks of an AioContext.

A :class:`QEMUTimer` fires ``cb(opaque)`` from its context's ``aio_poll``
once its clock reaches ``expire_time``.  A context keeps its armed timers in
a heap (``ctx._timers``, entries invalidated by a key when re-armed or
deleted); ``aio_poll`` asks :func:`timerlist_deadline` how long it may
sleep and runs :func:`timerlist_run_timers`.  Every clock of a context is
read through ``ctx.clock_ns`` (a stress run's virtual time).  Arming a
timer notifies the context (``ctx.timerlist_notify()``), as QEMU's
TimerList calls its notify_cb: this module never imports the context's.

Import the public names from gqemu.aio.

QEMU: util/qemu-timer.c, include/qemu/timer.h.
"""
from __future__ import annotations

import heapq
import time
from typing import Any, Callable, Optional

from gqemu.qemu_coroutine import thread_state

QEMU_CLOCK_REALTIME = 0
QEMU_CLOCK_VIRTUAL = 1
QEMU_CLOCK_HOST = 2
QEMU_CLOCK_VIRTUAL_RT = 3
SCALE_NS = 1
SCALE_US = 1000
SCALE_MS = 1000000


def _host_clock_ns(clock: int) -> int:
    if clock == QEMU_CLOCK_HOST:
        return time.time_ns()
    return time.monotonic_ns()


def qemu_clock_get_ns(clock: int, ctx: Any = None) -> int:
    """Now, in ns, on ``clock`` as ``ctx`` (default: the current context)
    reads it.  QEMU: qemu_clock_get_ns."""
    if ctx is None:
        ctx = thread_state.ctx
    if ctx is not None and ctx.clock_source is not None:
        return ctx.clock_source(clock)  # type: ignore[no-any-return]
    return _host_clock_ns(clock)


class QEMUTimer:
    """A timer on one clock of one AioContext.  QEMU: QEMUTimer."""

    __slots__ = ("ctx", "clock", "scale", "cb", "opaque", "expire_time",
                 "_key")

    def __init__(self, ctx: Any, clock: int, scale: int,
                 cb: Callable[[Any], Any], opaque: Any) -> None:
        self.ctx = ctx
        self.clock = clock
        self.scale = scale
        self.cb = cb
        self.opaque = opaque
        self.expire_time = -1          # ns; -1 when not pending
        self._key = 0


def aio_timer_new(ctx: Any, clock: int, scale: int,
                  cb: Callable[[Any], Any], opaque: Any) -> QEMUTimer:
    """A timer that calls ``cb(opaque)`` from ``ctx``'s poll.
    QEMU: aio_timer_new."""
    return QEMUTimer(ctx, clock, scale, cb, opaque)


def timer_mod(ts: QEMUTimer, expire_time: int) -> None:
    """(Re)arm ``ts`` to fire at ``expire_time`` (in its scale).
    QEMU: timer_mod."""
    ctx = ts.ctx
    ts.expire_time = max(0, expire_time * ts.scale)
    ts._key = next(ctx._timer_seq)
    heapq.heappush(ctx._timers, (ts.expire_time, ts._key, ts))
    ctx.timerlist_notify()


def timer_del(ts: QEMUTimer) -> None:
    """Disarm ``ts``.  QEMU: timer_del."""
    ts.expire_time = -1


def timer_pending(ts: QEMUTimer) -> bool:
    return ts.expire_time >= 0


def co_sleep_timer(ctx: Any, ns: int, clock: Optional[int],
                    wake: Callable[[Any], None]) -> None:
    # qemu_co_sleep_ns's timer (handed down to gqemu.qemu_coroutine_sleep
    # by gqemu.aio).
    clock = QEMU_CLOCK_REALTIME if clock is None else clock
    ts = aio_timer_new(ctx, clock, SCALE_NS, wake, None)
    timer_mod(ts, qemu_clock_get_ns(clock, ctx) + ns)


def timerlist_deadline(ctx: Any) -> Optional[float]:
    """Seconds until the earliest armed timer of ``ctx`` is due (0 when
    overdue), None when none is armed.  QEMU: timerlistgroup_deadline_ns."""
    timers = ctx._timers
    while timers:
        expire, key, ts = timers[0]
        if ts._key != key or ts.expire_time < 0:
            heapq.heappop(timers)
            continue
        now = ctx.clock_ns(ts.clock)
        return max(0, expire - now) / 1e9
    return None


def timerlist_run_timers(ctx: Any) -> bool:
    """Fire the due timers of ``ctx``; True if any fired.
    QEMU: timerlistgroup_run_timers."""
    timers = ctx._timers
    progress = False
    now: dict[int, int] = {}
    while timers:
        expire, key, ts = timers[0]
        if ts._key != key or ts.expire_time < 0:
            heapq.heappop(timers)
            continue
        t = now.get(ts.clock)
        if t is None:
            t = now[ts.clock] = ctx.clock_ns(ts.clock)
        if expire > t:
            break
        heapq.heappop(timers)
        ts.expire_time = -1
        progress = True
        ts.cb(ts.opaque)
    return progress
