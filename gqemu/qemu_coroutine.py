"""Coroutines on raw greenlets, with QEMU's semantics: the coroutine, its
pool, entering and yielding, and waking (``aio_co_*``).

A ``Coroutine`` (gqemu.coroutine_ucontext) is a raw greenlet whose run
function is ``coroutine_trampoline``.  ``qemu_coroutine_enter`` records
the caller and switches in; ``qemu_coroutine_yield`` switches back to that
caller; when the entry function returns, control goes to whoever entered the
coroutine last, and the coroutine (greenlet and all) goes back to a pool to be
reused, because creating a greenlet costs far more than a switch.

Entering follows today's ``qemu_aio_coroutine_enter``: coroutines woken from
inside a coroutine (``aio_co_wake``, ``qemu_co_queue_next``...) go on the
waker's ``co_queue_wakeup`` list and run, depth first and without stack
growth, when the waker yields or terminates.  Waking (``aio_co_wake``,
``aio_co_enter``, ``aio_co_schedule``) only needs the target AioContext's
loop thread, run queue and a method to schedule its BH
(``AioContext.schedule_co_bh``).

Which thread runs which AioContext is per thread (``thread_state.ctx``, set
by gqemu.aio): under ``GQEMU_DEBUG``/``GQEMU_STRESS`` the ``coroutine_fn``
wrapper consults the current context's ``debug`` flag and ``sched_point``.

Import the public names from gqemu.coroutine.  Must not import: anything in
gqemu except ``gqemu.trace`` and ``gqemu.coroutine_ucontext``.

QEMU: util/qemu-coroutine.c, util/async.c (aio_co_schedule, aio_co_wake,
aio_co_enter).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from threading import get_ident
from typing import Any, Callable, Optional, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

from gqemu.coroutine_ucontext import COROUTINE_TERMINATE, Coroutine, CoroutineError
from gqemu.trace import trace_add_listener, trace_event

trace_qemu_coroutine_enter = trace_event(
    "qemu_coroutine_enter", "from %p to %p opaque %p")
trace_qemu_coroutine_yield = trace_event("qemu_coroutine_yield", "from %p to %p")
trace_qemu_coroutine_terminate = trace_event("qemu_coroutine_terminate", "co %p")
trace_aio_co_schedule = trace_event("aio_co_schedule", "ctx %p co %p")

# One module-level flag for the three events: the enter/yield fast paths
# test it instead of looking up each event's state.
_tracing = False


def _trace_changed() -> None:
    global _tracing
    _tracing = (trace_qemu_coroutine_enter.enabled
                or trace_qemu_coroutine_yield.enabled
                or trace_qemu_coroutine_terminate.enabled)


trace_add_listener(_trace_changed)

# QEMU keeps 64 coroutines per batch in 2.8; we keep one free list.
POOL_MAX = 256

# Whether ``coroutine_fn`` wraps the functions it marks.  Wrapping costs a
# call on every coroutine_fn call, so it is decided once, when the modules
# are imported: GQEMU_DEBUG=1 or GQEMU_STRESS=1 in the environment then.
# What a wrapper does is decided per AioContext (``ctx.debug``,
# ``ctx.sched_point``), which reads the environment when it is created.
DEBUG = bool(os.environ.get("GQEMU_DEBUG"))
STRESS = bool(os.environ.get("GQEMU_STRESS"))

F = TypeVar("F", bound=Callable[..., Any])


_MAIN_THREAD = threading.main_thread().ident

# Free coroutines, per thread (a greenlet runs only in the thread that made
# it): the main thread's here, any other's in thread_state.pool.  Until a
# second thread runs coroutines, creating one does not ask which thread.
_pool: "list[Coroutine]" = []
_threads = False


def coroutine_thread_init() -> None:
    """Note that the calling thread runs coroutines.  A thread other than
    the main one must call it before its first qemu_coroutine_create;
    gqemu.aio does when a context is made or made current there."""
    global _threads
    if get_ident() != _MAIN_THREAD:
        _threads = True


class _ThreadState(threading.local):
    # The AioContext current on this thread (gqemu.aio sets it; None until
    # the thread first asks for one) and the ones it replaced.
    ctx: Any = None

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.pool: list[Any] = []       # free coroutines (not the main thread's)
        coroutine_thread_init()


thread_state = _ThreadState()


def coroutine_fn(func: F) -> F:
    """Mark a function that may yield: call it only from a coroutine.

    An annotation, as in QEMU, and free: it returns ``func`` itself, unless
    ``GQEMU_DEBUG=1`` or ``GQEMU_STRESS=1`` was in the environment when it
    was imported.  Then each call consults the current AioContext: with its
    ``debug`` flag, the call checks that it runs in a coroutine; with its
    ``sched_point`` hook set (a stress run), the call is a point where the
    stress scheduler may yield and reschedule the coroutine.
    """
    if not DEBUG and not STRESS:
        return func
    name = func.__name__

    def checked(*args: Any, **kwargs: Any) -> Any:
        inside = getattr(getcurrent(), "caller", None) is not None
        ctx = thread_state.ctx
        if not inside:
            if ctx.debug if ctx is not None else DEBUG:
                raise CoroutineError("%s called outside coroutine context" % name)
        elif ctx is not None and ctx.sched_point is not None:
            ctx.sched_point(name)
        return func(*args, **kwargs)
    checked.__name__ = func.__name__
    checked.__qualname__ = func.__qualname__
    checked.__module__ = func.__module__
    checked.__doc__ = func.__doc__
    checked.__wrapped__ = func  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


def coroutine_pool_size() -> int:
    """How many finished coroutines wait in the pool for reuse."""
    return len(_pool if get_ident() == _MAIN_THREAD else thread_state.pool)


def qemu_coroutine_create(entry: Callable[[Any], Any],
                          opaque: Any = None) -> Coroutine:
    """Make a coroutine that will run ``entry(opaque)``; do not start it.

    Context: anywhere.  QEMU: qemu_coroutine_create.
    """
    if _threads and get_ident() != _MAIN_THREAD:
        pool = thread_state.pool
        co = pool.pop() if pool else Coroutine(pool)
    else:
        co = _pool.pop() if _pool else Coroutine(_pool)
    co.entry = entry
    co.entry_arg = opaque
    return co


def _release(co: Coroutine) -> None:
    if co.locks_held:
        raise CoroutineError("coroutine terminated with %d locks held"
                             % co.locks_held)
    co.ctx = None
    pool = co.pool
    if len(pool) < POOL_MAX:
        pool.append(co)


def qemu_aio_coroutine_enter(ctx: Any, co: "Coroutine | deque[Coroutine]",
                             current: Optional[greenlet] = None) -> None:
    """Enter ``co`` and every coroutine it wakes, depth first.

    Returns when ``co`` has yielded or terminated and its wake-up list is
    empty.  An exception raised inside a coroutine propagates from here.
    ``current`` is the calling greenlet, passed by a caller that has it
    already (QEMU reads it from a thread-local; getcurrent() is not free).

    Context: anywhere but inside ``co`` itself.
    QEMU: util/qemu-coroutine.c qemu_aio_coroutine_enter.
    """
    if current is None:
        current = getcurrent()
    # ``pending`` is made only when something is woken (one coroutine, the
    # usual case, allocates nothing).
    pending: Optional[deque[Coroutine]]
    to: Optional[Coroutine]
    if isinstance(co, deque):
        pending = co
        to = pending.popleft() if pending else None
    else:
        pending = None
        to = co
    while to is not None:
        if to.scheduled is not None:
            raise CoroutineError("qemu_aio_coroutine_enter: Co-routine was "
                                 "already scheduled in '%s'" % to.scheduled)
        if to.caller is not None:
            raise CoroutineError("Co-routine re-entered recursively")
        to.caller = current
        if ctx is not None:
            to.ctx = ctx
        if trace_qemu_coroutine_enter.enabled:
            trace_qemu_coroutine_enter(current, to, to.entry_arg)
        ret = to.switch()
        wakeup = to.co_queue_wakeup
        if wakeup is not None:
            # Prepend, keeping their order: depth first, no stack growth.
            to.co_queue_wakeup = None
            if pending:
                wakeup.reverse()
                pending.extendleft(wakeup)
            else:
                pending = wakeup
        if ret == COROUTINE_TERMINATE:
            _terminated(to)
        to = pending.popleft() if pending else None


def _terminated(co: Coroutine) -> None:
    # Back to the pool; re-raise what escaped the entry function, if anything.
    if trace_qemu_coroutine_terminate.enabled:
        trace_qemu_coroutine_terminate(co)
    exc = co.exception
    if exc is not None:
        co.exception = None
        co.locks_held = 0
        _release(co)
        raise exc
    _release(co)


def qemu_coroutine_enter(co: Coroutine) -> None:
    """Switch into ``co``; return when it yields or terminates.

    The common cases (no wake-ups queued, no tracing; the coroutine
    yields, or ends without an exception or a lock held and goes back to
    the pool) are inlined here; everything else goes through
    qemu_aio_coroutine_enter or _after_switch.

    Context: anywhere.  QEMU: qemu_coroutine_enter.
    """
    if co.caller is None and co.scheduled is None and not _tracing:
        co.caller = getcurrent()
        ret = co.switch()
        if co.co_queue_wakeup is None:
            if not ret:                                  # yielded, nothing woken
                return
            if (co.exception is None and not co.locks_held
                    and not _tracing):                   # ended cleanly: _release
                co.ctx = None
                pool = co.pool
                if len(pool) < POOL_MAX:
                    pool.append(co)
                return
        _after_switch(co, ret)
        return
    qemu_aio_coroutine_enter(None, co)


def _after_switch(co: Coroutine, ret: int) -> None:
    # The slow tail of an enter: release on exit, then run the wake-ups.
    pending = co.co_queue_wakeup or ()
    co.co_queue_wakeup = None
    if ret == COROUTINE_TERMINATE:
        _terminated(co)
    if pending:
        qemu_aio_coroutine_enter(None, pending)


def qemu_coroutine_yield() -> None:
    """Switch back to whoever entered the current coroutine.

    Context: coroutine.  QEMU: qemu_coroutine_yield.
    """
    self = getcurrent()
    try:
        caller = self.caller
    except AttributeError:
        caller = None
    if caller is None:
        raise CoroutineError("Co-routine is yielding to no one")
    if _tracing:
        trace_qemu_coroutine_yield(self, caller)
    self.caller = None
    caller.switch()




def qemu_coroutine_self() -> greenlet:
    """The current coroutine, or the current greenlet outside coroutines
    (QEMU's per-thread leader).  QEMU: qemu_coroutine_self."""
    return getcurrent()


def qemu_in_coroutine() -> bool:
    """True inside an entered coroutine.  QEMU: qemu_in_coroutine."""
    return getattr(getcurrent(), "caller", None) is not None


def qemu_coroutine_entered(co: Coroutine) -> bool:
    """True while ``co`` is entered (also while it waits on a coroutine it
    entered).  QEMU: qemu_coroutine_entered."""
    return co.caller is not None


def qemu_coroutine_discard(co: Coroutine) -> None:
    """Unwind a coroutine that will never be entered again (a failed stress
    run's): raise GreenletExit at its yield, so its ``finally`` blocks run
    now, inside the caller, rather than whenever the garbage collector
    finds it.  Whatever it wakes while unwinding is dropped with it (they
    are discarded too); what it raises is dropped.  The coroutine then
    goes back to the pool.  Context: outside ``co``, on its thread.
    """
    if co.caller is not None:
        raise CoroutineError("qemu_coroutine_discard: coroutine is running")
    co.scheduled = None
    me = getcurrent()
    for _ in range(64):                  # a finally block may yield again
        if co.entry is None or not co:   # not in an entry, or never started
            break
        co.caller = me
        try:
            co.parent = me               # where it goes if it ends for good
        except ValueError:               # ``me`` runs inside ``co``'s children
            pass
        ret = co.throw(GreenletExit)
        co.co_queue_wakeup = None
        if ret == COROUTINE_TERMINATE:
            break
    ended = co.entry is None and bool(co)   # back in the trampoline's loop
    co.entry = co.entry_arg = None
    co.caller = None
    co.exception = None
    co.locks_held = 0
    co.co_queue_wakeup = None
    if ended:
        _release(co)
    else:
        co.ctx = None


# ------------------------------------------------------- waking coroutines


def aio_co_schedule(ctx: Any, co: Coroutine) -> None:
    """Enter ``co`` from ``ctx``'s next poll; safe from any thread.
    QEMU: aio_co_schedule."""
    if trace_aio_co_schedule.enabled:
        trace_aio_co_schedule(ctx, co)
    if co.scheduled is not None:
        raise CoroutineError("aio_co_schedule: Co-routine was already "
                             "scheduled in '%s'" % co.scheduled)
    co.scheduled = "aio_co_schedule"
    ctx.scheduled_coroutines.append(co)
    ctx.schedule_co_bh()


def aio_co_enter(ctx: Any, co: Coroutine) -> None:
    """Run ``co`` in ``ctx``: now if outside coroutines, after the current
    coroutine yields if inside one, from ``ctx``'s next poll if called from
    a thread other than its loop's.  ``ctx`` None (a coroutine never entered
    through a context) means the calling thread's loop.
    QEMU: aio_co_enter."""
    if ctx is not None:
        if ctx.loop_thread != get_ident():
            aio_co_schedule(ctx, co)
            return
    elif _threads and co.pool is not (_pool if get_ident() == _MAIN_THREAD
                                      else thread_state.pool):
        raise CoroutineError("aio_co_enter: %r belongs to another thread and "
                             "has no AioContext to be scheduled in" % co)
    self = getcurrent()
    try:
        inside = self.caller is not None
    except AttributeError:                          # not a coroutine
        inside = False
    if inside:
        if self is co:
            raise CoroutineError("aio_co_enter: coroutine enters itself")
        q = self.co_queue_wakeup
        if q is None:
            self.co_queue_wakeup = q = deque()
        q.append(co)
        return
    qemu_aio_coroutine_enter(ctx, co, self)


def aio_co_wake(co: Coroutine) -> None:
    """Wake ``co`` in the context it last ran in.  QEMU: aio_co_wake."""
    aio_co_enter(co.ctx, co)
