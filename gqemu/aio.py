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

Must not import: gqemu.threadpool, gqemu.block, gqemu.hw, gqemu.kvm (higher
layers).  gevent is used here for the hub, in gqemu.threadpool for worker
threads and in gqemu.kvm for the vCPU greenlets.

QEMU: util/async.c, util/aio-posix.c, util/qemu-timer.c, block/aio.h.
"""
from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from _thread import allocate_lock
from collections import deque
from threading import get_ident
from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.coroutine import (Coroutine, CoroutineError, aio_co_enter,
                             aio_co_schedule, aio_co_wake,
                             coroutine_set_aio_hooks, coroutine_thread_init,
                             qemu_aio_coroutine_enter,
                             thread_state)
from gqemu.plant import Planted
from gqemu.trace import trace_event

__all__ = [
    "AioContext", "QEMUBH", "QEMUTimer", "AioDeadlockError",
    "qemu_get_aio_context", "qemu_get_current_aio_context", "aio_context_new",
    "aio_context_acquire", "aio_context_release", "aio_context_unref",
    "aio_compute_timeout", "aio_set_clock_source", "aio_context_set_poll_params",
    "POLL_MAX_NS", "aio_bh_new",
    "aio_bh_schedule_oneshot", "qemu_bh_schedule", "qemu_bh_cancel", "qemu_bh_delete", "aio_bh_poll", "aio_poll",
    "aio_notify", "aio_wait_while", "aio_co_wake", "aio_co_schedule",
    "aio_co_enter", "QEMU_CLOCK_REALTIME", "QEMU_CLOCK_VIRTUAL",
    "QEMU_CLOCK_HOST", "QEMU_CLOCK_VIRTUAL_RT", "SCALE_NS", "SCALE_US",
    "SCALE_MS", "qemu_clock_get_ns", "aio_timer_new", "timer_mod", "timer_del",
    "timer_pending", "AIOCBInfo", "BlockAIOCB", "qemu_aio_get", "qemu_aio_ref",
    "qemu_aio_unref", "bdrv_aio_cancel", "bdrv_aio_cancel_async",
]

trace_aio_co_schedule_bh_cb = trace_event("aio_co_schedule_bh_cb", "ctx %p co %p")

QEMU_CLOCK_REALTIME = 0
QEMU_CLOCK_VIRTUAL = 1
QEMU_CLOCK_HOST = 2
QEMU_CLOCK_VIRTUAL_RT = 3
SCALE_NS = 1
SCALE_US = 1000
SCALE_MS = 1000000

_MAIN_THREAD = threading.main_thread().ident

# How long a blocking aio_poll waits for the thread pool without the hub
# (AioContext.poll_max_ns); 0 turns the poll window off.
POLL_MAX_NS = 200000


class AioDeadlockError(RuntimeError):
    """aio_wait_while found nothing that could ever make its condition false."""


def aio_set_clock_source(source: Optional[Callable[[int], int]],
                         ctx: Optional["AioContext"] = None) -> None:
    """Read every clock of ``ctx`` (default: the current context) from
    ``source(clock)`` instead of the host (the stress scheduler's virtual
    time); ``None`` restores the host clocks."""
    (ctx or qemu_get_current_aio_context()).clock_source = source


def _host_clock_ns(clock: int) -> int:
    if clock == QEMU_CLOCK_HOST:
        return time.time_ns()
    return time.monotonic_ns()


def qemu_clock_get_ns(clock: int, ctx: Optional["AioContext"] = None) -> int:
    """Now, in ns, on ``clock`` as ``ctx`` (default: the current context)
    reads it.  QEMU: qemu_clock_get_ns."""
    if ctx is None:
        ctx = thread_state.ctx
    if ctx is not None and ctx.clock_source is not None:
        return ctx.clock_source(clock)  # type: ignore[no-any-return]
    return _host_clock_ns(clock)


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


class QEMUTimer:
    """A timer on one clock of one AioContext.  QEMU: QEMUTimer."""

    __slots__ = ("ctx", "clock", "scale", "cb", "opaque", "expire_time",
                 "_key")

    def __init__(self, ctx: "AioContext", clock: int, scale: int,
                 cb: Callable[[Any], Any], opaque: Any) -> None:
        self.ctx = ctx
        self.clock = clock
        self.scale = scale
        self.cb = cb
        self.opaque = opaque
        self.expire_time = -1          # ns; -1 when not pending
        self._key = 0


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
        try:
            waiter.get()
        except LoopExit:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if timer is not None:
                timer.close()
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

    # -- timers --------------------------------------------------------------

    def _next_deadline(self) -> Optional[float]:
        timers = self._timers
        while timers:
            expire, key, ts = timers[0]
            if ts._key != key or ts.expire_time < 0:
                heapq.heappop(timers)
                continue
            now = self.clock_ns(ts.clock)
            return max(0, expire - now) / 1e9
        return None

    def _run_timers(self) -> bool:
        timers = self._timers
        progress = False
        now: dict[int, int] = {}
        while timers:
            expire, key, ts = timers[0]
            if ts._key != key or ts.expire_time < 0:
                heapq.heappop(timers)
                continue
            t = now.get(ts.clock)
            if t is None:
                t = now[ts.clock] = self.clock_ns(ts.clock)
            if expire > t:
                break
            heapq.heappop(timers)
            ts.expire_time = -1
            progress = True
            ts.cb(ts.opaque)
        return progress


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


def aio_context_unref(ctx: AioContext) -> None:
    """Close ``ctx``: drop its hub watcher and everything still queued.
    Its thread pool must have been freed (thread_pool_free).  Context: its
    loop thread, not current anywhere.  QEMU: aio_context_unref."""
    ctx._close_hub()
    ctx._bh_list = []
    ctx._ts_queue.clear()
    ctx._timers = []
    ctx.scheduled_coroutines.clear()
    ctx.sched = None
    ctx.sched_point = None


def aio_compute_timeout(ctx: AioContext) -> int:
    """How long, in ns, a blocking poll of ``ctx`` may sleep: 0 when a BH is
    ready, -1 when no timer is armed.  QEMU: aio_compute_timeout."""
    if ctx._bh_list or ctx._ts_queue:
        return 0
    deadline = ctx._next_deadline()
    return -1 if deadline is None else int(deadline * 1e9)


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


# ------------------------------------------------------------ bottom halves


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
            progress = ctx._run_timers() or progress
        if progress or not blocking:
            return progress
        while True:
            if not ctx._bh_list and not ctx._ts_queue:
                if ctx.sched is not None and ctx.sched.idle(ctx):
                    continue            # the scheduler released held work
                deadline = ctx._next_deadline()
                if deadline is None and ctx.external == 0:
                    return False        # nothing could ever wake us
                if not ctx._park(deadline):
                    return False
            progress = aio_bh_poll(ctx)
            if ctx._timers:
                progress = ctx._run_timers() or progress
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
                    and ctx._next_deadline() is None):
                raise AioDeadlockError(
                    "aio_wait_while: nothing left that could make progress")


# ------------------------------------------------------- coroutine wake-up


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


# ---------------------------------------------------------------- timers


def aio_timer_new(ctx: AioContext, clock: int, scale: int,
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
    aio_notify(ctx)


def timer_del(ts: QEMUTimer) -> None:
    """Disarm ``ts``.  QEMU: timer_del."""
    ts.expire_time = -1


def timer_pending(ts: QEMUTimer) -> bool:
    return ts.expire_time >= 0


def _co_sleep_timer(ctx: AioContext, ns: int, clock: Optional[int],
                    wake: Callable[[Any], None]) -> None:
    # qemu_co_sleep_ns's timer (gqemu.coroutine cannot import this module).
    clock = QEMU_CLOCK_REALTIME if clock is None else clock
    ts = aio_timer_new(ctx, clock, SCALE_NS, wake, None)
    timer_mod(ts, qemu_clock_get_ns(clock, ctx) + ns)


coroutine_set_aio_hooks(qemu_get_current_aio_context, _co_sleep_timer)


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
