"""AioContext on the gevent hub: bottom halves, notification, the hub
wait and the poll window, and entering coroutines scheduled into a context.

Everything an AioContext runs (bottom halves, timers, completions, the
coroutines they enter) runs in the greenlet that calls ``aio_poll``
(gqemu.aio_posix), never in the hub: when ``aio_poll`` must block it parks
that greenlet on the hub until :func:`aio_notify` or a timer wakes it, so
the hub only ever does the waiting.  Notifying is cheap and coalesced:
worker threads call :func:`qemu_bh_schedule`, which queues the BH on a
thread-safe list and sends one libev async event; a burst of completions
costs one hub wake-up.  The poll window (``poll_max_ns``, ``_park``,
``_poll_wait``) is described in docs/runtime.md.

Bottom halves follow today's QEMU ordering (reference §2.1): a poll takes the
list of scheduled BHs and runs them newest-scheduled first; a BH scheduled
while the list runs waits for the next poll.

Import the public names from gqemu.aio.

QEMU: util/async.c.
"""
from __future__ import annotations

import itertools
import os
from _thread import allocate_lock
from collections import deque
from threading import get_ident
from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.coroutine_ucontext import Coroutine, CoroutineError
from gqemu.plant import Planted
from gqemu.qemu_coroutine import coroutine_thread_init, qemu_aio_coroutine_enter
from gqemu.qemu_coroutine import thread_state
from gqemu.qemu_timer import QEMUTimer, _host_clock_ns
from gqemu.trace import trace_event

trace_aio_co_schedule_bh_cb = trace_event("aio_co_schedule_bh_cb", "ctx %p co %p")

# How long a blocking aio_poll waits for the thread pool without the hub
# (AioContext.poll_max_ns); 0 turns the poll window off.
POLL_MAX_NS = 200000


class QEMUBH:
    """A bottom half: ``cb(opaque)`` run once by the next poll after it is
    scheduled.  QEMU: QEMUBH."""

    __slots__ = ("ctx", "cb", "opaque", "scheduled", "deleted", "oneshot")

    def __init__(self, ctx: "AioContext", cb: Callable[[Any], Any],
                 opaque: Any, oneshot: bool = False) -> None:
        self.ctx = ctx
        self.cb = cb
        self.opaque = opaque
        self.scheduled = False
        self.deleted = False
        self.oneshot = oneshot


class AioContext:
    """An event loop for bottom halves, timers and coroutines.

    ``external`` counts what can notify from outside the polling greenlet:
    thread-pool requests in flight, and running vCPU greenlets (the vCPU
    layer counts those).  While it is zero and no BH or timer is pending, a
    blocking poll has nothing to wait for and returns False at once.
    ``sched``, when set, is the stress scheduler (gqemu/sched.py): it orders
    ready BHs (``order_bhs``) and thread-pool completions
    (``order_completions``), holds submitted thread-pool requests
    (``thread_pool_submit``) and releases held work when the loop would
    otherwise block (``idle``).

    ``loop_thread`` is the ident of the thread that runs this context's
    loop: the creating thread, until another makes it current (``with
    ctx:``, :func:`aio_context_acquire`).  The other per-context state is
    described in the module docstring.
    """

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.loop_thread = get_ident()
        coroutine_thread_init()
        self.clock_source: Optional[Callable[[int], int]] = None
        self.sched_point: Optional[Callable[[str], None]] = None
        self.plant = Planted()
        self.error_sink: Optional[Callable[[str], Any]] = None
        self.blkdebug_output: Optional[Callable[[str], Any]] = None
        self.debug = bool(os.environ.get("GQEMU_DEBUG"))
        self.stress = bool(os.environ.get("GQEMU_STRESS"))
        self._bh_list: list[QEMUBH] = []
        self._ts_queue: deque[QEMUBH] = deque()   # BHs scheduled by threads
        self._timers: list[tuple[int, int, QEMUTimer]] = []
        self._timer_seq = itertools.count()
        self._waiters: list[Any] = []              # gevent Waiters of parked polls
        self._wake_pending = False
        self._async: Any = None                    # libev async watcher
        self._hub: Any = None
        self.external = 0
        self.poll_external = 0      # of which thread-pool requests
        self.poll_max_ns = _poll_max_ns_default()
        self._poll_lock = allocate_lock()
        self._poll_lock.acquire()
        self._polling = False                      # blocked on _poll_lock
        self._hub_callbacks: Any = ()              # the hub loop's callback FIFO
        self._hub_loop: Any = None
        self.scheduled_coroutines: deque[Coroutine] = deque()
        self.co_schedule_bh = QEMUBH(self, co_schedule_bh_cb, self)
        self.thread_pool: Any = None
        self.linux_io_uring: Any = None            # gqemu.block.io_uring's LuringState
        self.linux_aio: Any = None                 # gqemu.block.linux_aio's LinuxAioState
        self.handlers: list[Any] = []              # gqemu.aio_posix.AioHandler
        self.sched: Any = None
        self.poll_depth = 0

    def __repr__(self) -> str:
        return "<AioContext %s>" % self.name

    def __enter__(self) -> "AioContext":
        aio_context_acquire(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        aio_context_release(self)

    def schedule_co_bh(self) -> None:
        # aio_co_schedule (gqemu.coroutine) queued a coroutine.
        qemu_bh_schedule(self.co_schedule_bh)

    def clock_ns(self, clock: int) -> int:
        """Now on ``clock`` as this context reads it."""
        src = self.clock_source
        return src(clock) if src is not None else _host_clock_ns(clock)

    def _set_loop_thread(self, ident: int) -> None:
        if ident == self.loop_thread:
            return
        if self._hub is not None:
            # Its hub belongs to the old thread: drop it, if nothing waits.
            if self.external or self._waiters:
                raise CoroutineError("%r moved to another thread with work "
                                     "in flight" % self)
            self._close_hub()
        self.loop_thread = ident

    def _close_hub(self) -> None:
        for h in self.handlers:             # their watchers belong to the hub
            h.watcher = None
        if self._async is not None:
            try:
                self._async.stop()
                self._async.close()
            except Exception:   # closed with its loop already
                pass
        self._async = self._hub = None

    # -- waiting on the hub -------------------------------------------------

    def _ensure_hub(self) -> Any:
        if self._hub is None:
            global _gevent_waiting
            from gevent import get_hub
            from gevent.exceptions import LoopExit
            from gevent.hub import Waiter
            _gevent_waiting = (Waiter, LoopExit)
            self._hub = get_hub()
            self._async = self._hub.loop.async_()
            self._async.start(self._on_async)
            self._async.ref = self.external > 0
            self._hub_loop = self._hub.loop
            self._hub_callbacks = self._hub_loop._callbacks
        return self._hub

    def _on_async(self) -> None:
        # Runs in the hub: only wake the parked greenlet.
        self._wake()


    def _wake(self) -> None:
        # Every parked poll wakes and re-checks; each was parked by a
        # different greenlet (main loop, vCPUs draining), so none may be lost.
        self._wake_pending = False
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for w in waiters:
                w.switch(None)

    def external_inc(self) -> None:
        """Work that will notify from another thread has started."""
        self.external += 1
        if self.external == 1 and self._async is not None:
            self._async.ref = True

    def external_dec(self) -> None:
        self.external -= 1
        if self.external == 0 and self._async is not None:
            self._async.ref = False

    def _park(self, timeout: Optional[float]) -> bool:
        """Sleep on the hub until notified or ``timeout`` s pass.
        Returns False when nothing could ever wake us (gevent's LoopExit)."""
        hub = self._ensure_hub()
        Waiter, LoopExit = _gevent_waiting
        if getcurrent() is hub:
            raise CoroutineError("aio_poll called from the gevent hub")
        if self._ts_queue:          # a thread queued work before the hub existed
            return True
        if (self.poll_external and self.external == self.poll_external
                and self.poll_max_ns and not self._waiters
                and not self._hub_callbacks and not self._hub_loop.pendingcnt):
            # Only worker threads can wake us and nothing else in this
            # thread is ready to run: wait for them without the hub first.
            budget = self.poll_max_ns / 1e9
            if timeout is not None and timeout <= budget:
                self._poll_wait(timeout)
                return True         # notified, or a timer is due
            if self._poll_wait(budget):
                return True
            if timeout is not None:
                timeout -= budget
        waiter = Waiter(hub)
        self._waiters.append(waiter)
        timer = None
        if timeout is not None:
            timer = hub.loop.timer(max(timeout, 0.0))
            timer.start(waiter.switch, None)
        handlers = self.handlers
        for h in handlers:          # watch their fds only while parked
            h.watch(self, hub.loop)
        try:
            waiter.get()
        except LoopExit:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if timer is not None:
                timer.close()
            for h in handlers:
                h.unwatch()
        return True

    def _poll_wait(self, budget: float) -> bool:
        """Block on the poll lock, without the GIL, for at most ``budget``
        s; True when a worker thread queued something meanwhile."""
        lock = self._poll_lock
        lock.acquire(False)         # a late release meant for an earlier wait
        self._polling = True
        if self._ts_queue:          # queued before the flag was seen
            self._polling = False
            return True
        try:
            got = lock.acquire(True, budget)
        finally:                    # also when a signal interrupts the wait
            self._polling = False
        # A notifier that read the flag before it was cleared queued its
        # BH first: seen here, even if its release comes later.
        return got or bool(self._ts_queue)

    def timerlist_notify(self) -> None:
        """A timer of this context was armed: wake a blocked poll.
        QEMU: aio_timerlist_notify (the TimerList's notify_cb)."""
        aio_notify(self)


def _poll_max_ns_default() -> int:
    v = os.environ.get("GQEMU_POLL_MAX_NS")
    try:
        return max(0, int(v)) if v else POLL_MAX_NS
    except ValueError:
        return POLL_MAX_NS


# gevent's Waiter and LoopExit, imported with the first hub (not at import:
# one-shot commands that never wait do not pay for gevent; not per park
# either: an import statement in _park cost ~1-2 us on every request).
_gevent_waiting: Any = None


def aio_context_acquire(ctx: AioContext) -> None:
    """Make ``ctx`` the calling thread's current context, and the calling
    thread its loop thread, until the matching aio_context_release.
    Nestable.  QEMU: aio_context_acquire (a lock there; here the context
    simply moves to the thread that takes it)."""
    ctx._set_loop_thread(get_ident())
    coroutine_thread_init()
    thread_state.stack.append(thread_state.ctx)
    thread_state.ctx = ctx


def aio_context_release(ctx: AioContext) -> None:
    """Undo the matching aio_context_acquire(ctx) on this thread."""
    if thread_state.ctx is not ctx or not thread_state.stack:
        raise CoroutineError("aio_context_release: %r is not current" % ctx)
    thread_state.ctx = thread_state.stack.pop()


def aio_bh_new(ctx: AioContext, cb: Callable[[Any], Any],
               opaque: Any) -> QEMUBH:
    """A bottom half, not yet scheduled.  QEMU: aio_bh_new."""
    return QEMUBH(ctx, cb, opaque)


def aio_bh_schedule_oneshot(ctx: AioContext, cb: Callable[[Any], Any],
                            opaque: Any) -> None:
    """Run ``cb(opaque)`` once on the next poll.
    QEMU: aio_bh_schedule_oneshot."""
    bh = QEMUBH(ctx, cb, opaque, True)
    if get_ident() != ctx.loop_thread:
        qemu_bh_schedule(bh)
        return
    # qemu_bh_schedule from the loop thread, inlined (a new BH is neither
    # scheduled nor deleted): one per request completed from a BH.
    bh.scheduled = True
    ctx._bh_list.append(bh)
    if ctx._waiters:
        _notify_from_loop_thread(ctx)


def _notify_from_loop_thread(ctx: AioContext) -> None:
    # Wake parked polls on the hub's next turn, once per burst.
    if ctx._waiters and not ctx._wake_pending:
        ctx._wake_pending = True
        ctx._hub.loop.run_callback(ctx._wake)


def _notify_from_other_thread(ctx: AioContext) -> None:
    # The loop thread polls the context (AioContext._poll_wait): release
    # its lock.  Else one libev async event (an eventfd write, coalesced by
    # libev).  Callers queue their work before this, and the poll clears
    # the flag before it looks at the queue a last time, so nothing is
    # missed when both happen at once (the GIL orders the two threads).
    if ctx._polling:
        ctx._polling = False
        try:
            ctx._poll_lock.release()
        except RuntimeError:    # another thread released it first
            pass
    elif ctx._async is not None:
        ctx._async.send()


def qemu_bh_schedule(bh: QEMUBH) -> None:
    """Schedule ``bh``; safe from any thread.  QEMU: qemu_bh_schedule."""
    if bh.scheduled or bh.deleted:
        return
    ctx = bh.ctx
    if get_ident() != ctx.loop_thread:
        ctx._ts_queue.append(bh)         # the loop moves it to _bh_list
        _notify_from_other_thread(ctx)
        return
    bh.scheduled = True
    ctx._bh_list.append(bh)
    _notify_from_loop_thread(ctx)


def qemu_bh_cancel(bh: QEMUBH) -> None:
    """Unschedule ``bh``.  QEMU: qemu_bh_cancel."""
    bh.scheduled = False


def qemu_bh_delete(bh: QEMUBH) -> None:
    """Unschedule ``bh`` for good.  QEMU: qemu_bh_delete."""
    bh.scheduled = False
    bh.deleted = True


def aio_bh_poll(ctx: AioContext) -> bool:
    """Run the BHs scheduled so far, newest first.  QEMU: aio_bh_poll."""
    ts = ctx._ts_queue
    while ts:
        bh = ts.popleft()
        if not bh.scheduled and not bh.deleted:
            bh.scheduled = True
            ctx._bh_list.append(bh)
    lst = ctx._bh_list
    if not lst:
        return False
    ctx._bh_list = []
    if ctx.sched is not None:
        lst = ctx.sched.order_bhs(lst)
    progress = False
    i = len(lst)
    try:
        while i:
            i -= 1
            bh = lst[i]
            if not bh.scheduled:
                continue
            bh.scheduled = False
            progress = True
            if bh.oneshot:
                bh.deleted = True
            bh.cb(bh.opaque)
    except BaseException:
        # Keep what did not run yet for the next poll.
        ctx._bh_list[:0] = lst[:i]
        raise
    return progress


def aio_notify(ctx: AioContext) -> None:
    """Wake a poll blocked on ``ctx``; safe from any thread.
    QEMU: aio_notify."""
    if get_ident() != ctx.loop_thread:
        _notify_from_other_thread(ctx)
    else:
        _notify_from_loop_thread(ctx)


def co_schedule_bh_cb(ctx: AioContext) -> None:
    """Enter every coroutine scheduled into ``ctx``, in FIFO order.
    QEMU: co_schedule_bh_cb."""
    q = ctx.scheduled_coroutines
    while q:
        co = q.popleft()
        if trace_aio_co_schedule_bh_cb.enabled:
            trace_aio_co_schedule_bh_cb(ctx, co)
        co.scheduled = None
        qemu_aio_coroutine_enter(ctx, co)


# aio_co_schedule, aio_co_enter and aio_co_wake live in gqemu.coroutine,
# next to the entering code and the locks that wake (exported from here too).
