"""Coroutines on raw greenlets, with QEMU's semantics.

A :class:`Coroutine` is a raw ``greenlet.greenlet`` whose run function is
:func:`coroutine_trampoline`, as ``util/coroutine-ucontext.c`` starts every
coroutine stack in ``coroutine_trampoline``.  ``qemu_coroutine_enter`` records
the caller and switches in; ``qemu_coroutine_yield`` switches back to that
caller; when the entry function returns, control goes to whoever entered the
coroutine last, and the coroutine (greenlet and all) goes back to a pool to be
reused, because creating a greenlet costs far more than a switch.

Entering follows today's ``qemu_aio_coroutine_enter``: coroutines woken from
inside a coroutine (``aio_co_wake``, ``qemu_co_queue_next``...) go on the
waker's ``co_queue_wakeup`` list and run, depth first and without stack
growth, when the waker yields or terminates.

The lock types (``CoQueue``, ``CoMutex``, ``CoRwlock``) follow today's QEMU:
the mutex hands ownership to the longest waiter (FIFO, no barging) and the
rwlock supports upgrade and downgrade.

Waking a coroutine (``aio_co_wake``, ``aio_co_enter``, ``aio_co_schedule``)
lives here too, next to the entering code and the locks that wake: it
only needs the target AioContext's loop thread, run queue and a method to
schedule its BH (``AioContext.schedule_co_bh``).

Which thread runs which AioContext is per thread (``thread_state.ctx``, set
by gqemu.aio): under ``GQEMU_DEBUG``/``GQEMU_STRESS`` the ``coroutine_fn``
wrapper consults the current context's ``debug`` flag and ``sched_point``
hook, and the planted ``comutex_barging`` switch is the current context's.

Sleeping needs a timer and a thread's current AioContext needs making:
gqemu.aio, the layer above, hands both down when it is imported
(``coroutine_set_aio_hooks``), so this module never imports it.

Must not import: anything in gqemu except ``gqemu.trace``.

QEMU: util/qemu-coroutine.c, util/coroutine-ucontext.c,
util/qemu-coroutine-lock.c, util/qemu-coroutine-sleep.c, util/async.c
(aio_co_schedule, aio_co_wake, aio_co_enter).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from threading import get_ident
from typing import Any, Callable, Optional, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

from gqemu.trace import trace_add_listener, trace_event

__all__ = [
    "Coroutine", "CoroutineError", "coroutine_fn", "coroutine_trampoline",
    "qemu_coroutine_create", "qemu_coroutine_enter", "qemu_aio_coroutine_enter",
    "qemu_coroutine_yield", "qemu_coroutine_self", "qemu_in_coroutine",
    "qemu_coroutine_entered",
    "CoQueue", "qemu_co_queue_init", "qemu_co_queue_wait", "qemu_co_queue_next",
    "qemu_co_queue_restart_all", "qemu_co_queue_empty", "qemu_co_enter_next",
    "qemu_co_enter_all", "qemu_coroutine_discard",
    "CoMutex", "qemu_co_mutex_init", "qemu_co_mutex_lock", "qemu_co_mutex_unlock",
    "CoRwlock", "qemu_co_rwlock_init", "qemu_co_rwlock_rdlock",
    "qemu_co_rwlock_wrlock", "qemu_co_rwlock_unlock", "qemu_co_rwlock_upgrade",
    "qemu_co_rwlock_downgrade", "qemu_co_sleep_ns", "coroutine_pool_size",
    "aio_co_enter", "aio_co_wake", "aio_co_schedule", "thread_state",
    "coroutine_thread_init", "coroutine_set_aio_hooks", "current_aio_context",
]

trace_qemu_coroutine_enter = trace_event(
    "qemu_coroutine_enter", "from %p to %p opaque %p")
trace_qemu_coroutine_yield = trace_event("qemu_coroutine_yield", "from %p to %p")
trace_qemu_coroutine_terminate = trace_event("qemu_coroutine_terminate", "co %p")
trace_aio_co_schedule = trace_event("aio_co_schedule", "ctx %p co %p")

# What a coroutine's greenlet hands back to its enterer: a yield switches
# with no value (the enterer's ``switch()`` returns ``()``, false; a switch
# without arguments is the cheapest), an ending coroutine with this one.
COROUTINE_TERMINATE = 2

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


class CoroutineError(RuntimeError):
    """Misuse of the coroutine API; QEMU prints the message and aborts."""


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
    checked.__doc__ = func.__doc__
    checked.__wrapped__ = func  # type: ignore[attr-defined]
    return checked  # type: ignore[return-value]


class Coroutine(greenlet):
    """One coroutine: a greenlet running :func:`coroutine_trampoline`.

    ``caller`` is set exactly while the coroutine is entered.
    ``co_queue_wakeup`` holds coroutines to run when this one yields or ends.
    """

    __slots__ = ("entry", "entry_arg", "caller", "ctx", "scheduled",
                 "locks_held", "co_queue_wakeup", "exception", "pool")

    def __init__(self, pool: "list[Coroutine]") -> None:
        super().__init__(run=coroutine_trampoline)
        self.pool = pool                # its thread's free list
        self.entry: Optional[Callable[[Any], Any]] = None
        self.entry_arg: Any = None
        self.caller: Optional[greenlet] = None
        self.ctx: Any = None
        self.scheduled: Optional[str] = None
        self.locks_held = 0
        self.co_queue_wakeup: Optional[deque[Coroutine]] = None
        self.exception: Optional[BaseException] = None

    def __repr__(self) -> str:
        return "<Coroutine 0x%x entry=%s>" % (
            id(self), getattr(self.entry, "__qualname__", self.entry))


def coroutine_pool_size() -> int:
    """How many finished coroutines wait in the pool for reuse."""
    return len(_pool if get_ident() == _MAIN_THREAD else thread_state.pool)


def coroutine_trampoline() -> None:
    """Run function of every coroutine greenlet: run entries until killed.

    Context: the coroutine's own greenlet.
    QEMU: util/coroutine-ucontext.c coroutine_trampoline.
    """
    self = getcurrent()
    while True:
        entry, arg = self.entry, self.entry_arg
        try:
            entry(arg)  # type: ignore[misc]
        except BaseException as e:  # handed to the enterer, which re-raises
            self.exception = e
        # Drop the references now, not when the pooled coroutine is reused.
        entry = arg = None
        self.entry = self.entry_arg = None
        caller = self.caller
        self.caller = None
        if caller is None:
            # Killed while suspended (greenlet collected it): nobody to
            # hand the end to; the greenlet just ends.
            self.exception = None
            return
        caller.switch(COROUTINE_TERMINATE)


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

    The common cases (no wake-ups queued; the coroutine yields, or ends
    without an exception or a lock held and goes back to the pool) are
    inlined here; everything else goes through qemu_aio_coroutine_enter or
    _after_switch.  While a coroutine trace event is enabled this body is
    swapped for one that traces (see _trace_changed).

    Context: anywhere.  QEMU: qemu_coroutine_enter.
    """
    if co.caller is None and co.scheduled is None:
        co.caller = getcurrent()
        ret = co.switch()
        if co.co_queue_wakeup is None:
            if not ret:                                  # yielded, nothing woken
                return
            if co.exception is None and not co.locks_held:   # ended cleanly: _release
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
    self.caller = None
    caller.switch()


# --------------------------------------------------------------- tracing
#
# The enter/yield bodies above test no trace state at all.  While one of
# the coroutine events is enabled, the two functions run the bodies below
# instead: their code objects are swapped in place, so every module that
# imported ``qemu_coroutine_enter``/``qemu_coroutine_yield`` by name gets
# the traced body too, and a disabled trace costs the hot path nothing.


def _qemu_coroutine_enter_traced(co: Coroutine) -> None:
    qemu_aio_coroutine_enter(None, co)      # traces enter and terminate


def _qemu_coroutine_yield_traced() -> None:
    self = getcurrent()
    try:
        caller = self.caller
    except AttributeError:
        caller = None
    if caller is None:
        raise CoroutineError("Co-routine is yielding to no one")
    trace_qemu_coroutine_yield(self, caller)
    self.caller = None
    caller.switch()


def _as(fn: Callable[..., Any], name: str) -> Any:
    return fn.__code__.replace(co_name=name, co_qualname=name)


# (plain body, traced body) of each function, by tracing state.
_BODIES = (
    (qemu_coroutine_enter, qemu_coroutine_enter.__code__,
     _as(_qemu_coroutine_enter_traced, "qemu_coroutine_enter")),
    (qemu_coroutine_yield, qemu_coroutine_yield.__code__,
     _as(_qemu_coroutine_yield_traced, "qemu_coroutine_yield")),
)


def _trace_changed() -> None:
    tracing = (trace_qemu_coroutine_enter.enabled
               or trace_qemu_coroutine_yield.enabled
               or trace_qemu_coroutine_terminate.enabled)
    for fn, plain, traced in _BODIES:
        fn.__code__ = traced if tracing else plain


trace_add_listener(_trace_changed)


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


_wake = aio_co_wake


def _barging() -> bool:
    # The planted 2.8 unfair-mutex bug, switched per AioContext.
    ctx = thread_state.ctx
    return ctx is not None and ctx.plant.comutex_barging


# --------------------------------------------------------------- CoQueue


class CoQueue:
    """A FIFO of coroutines waiting for something.  QEMU: CoQueue."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: deque[Coroutine] = deque()


def qemu_co_queue_init(queue: CoQueue) -> None:
    queue.entries = deque()


@coroutine_fn
def qemu_co_queue_wait(queue: CoQueue, lock: Any = None) -> None:
    """Wait at the tail of ``queue``, dropping ``lock`` (a CoMutex) while
    asleep and taking it again after.  Context: coroutine."""
    queue.entries.append(getcurrent())
    if lock is not None:
        qemu_co_mutex_unlock(lock)
    qemu_coroutine_yield()
    if lock is not None:
        qemu_co_mutex_lock(lock)


def qemu_co_queue_next(queue: CoQueue) -> bool:
    """Wake the head waiter; it runs after the current coroutine yields.
    Returns False if nobody waited.  QEMU: qemu_co_queue_next."""
    if not queue.entries:
        return False
    _wake(queue.entries.popleft())
    return True


def qemu_co_queue_restart_all(queue: CoQueue) -> None:
    """Wake every waiter, in order.  QEMU: qemu_co_queue_restart_all."""
    while queue.entries:
        _wake(queue.entries.popleft())


def qemu_co_enter_next(queue: CoQueue) -> bool:
    """Enter the head waiter now (usable outside coroutines).
    QEMU: qemu_co_enter_next_impl."""
    if not queue.entries:
        return False
    co = queue.entries.popleft()
    qemu_coroutine_enter(co)
    return True


def qemu_co_enter_all(queue: CoQueue) -> None:
    """Enter every waiter now, in order.  QEMU: qemu_co_enter_all."""
    while qemu_co_enter_next(queue):
        pass


def qemu_co_queue_empty(queue: CoQueue) -> bool:
    return not queue.entries


# --------------------------------------------------------------- CoMutex


class CoMutex:
    """A coroutine mutex with FIFO hand-off (QEMU >= 2.9): unlock passes
    ownership straight to the longest waiter, so a newcomer cannot barge in.
    """

    __slots__ = ("locked", "holder", "waiters")

    def __init__(self) -> None:
        self.locked = False
        self.holder: Optional[greenlet] = None
        self.waiters: deque[Coroutine] = deque()


def qemu_co_mutex_init(mutex: CoMutex) -> None:
    mutex.locked = False
    mutex.holder = None
    mutex.waiters = deque()


@coroutine_fn
def qemu_co_mutex_lock(mutex: CoMutex) -> None:
    """Take the mutex, waiting in FIFO order.  Context: coroutine.
    QEMU: qemu_co_mutex_lock."""
    self = getcurrent()
    if not mutex.locked:
        mutex.locked = True
    else:
        mutex.waiters.append(self)
        qemu_coroutine_yield()      # ownership arrives with the wake-up
        if _barging():
            while mutex.locked:     # 2.8's unfair re-check; loser re-queues
                mutex.waiters.append(self)
                qemu_coroutine_yield()
            mutex.locked = True
    mutex.holder = self
    self.locks_held += 1


@coroutine_fn
def qemu_co_mutex_unlock(mutex: CoMutex) -> None:
    """Release the mutex; the head waiter owns it from now on and runs after
    the current coroutine yields.  QEMU: qemu_co_mutex_unlock."""
    self: Any = getcurrent()
    co_self: Any = self                 # (not narrowed by the check below)
    if not mutex.locked or mutex.holder is not self:
        raise CoroutineError("qemu_co_mutex_unlock: mutex not held by caller")
    mutex.holder = None
    co_self.locks_held -= 1
    if mutex.waiters:
        if _barging():
            # Planted bug: release, and let the woken waiter race for it.
            mutex.locked = False
            co = mutex.waiters.popleft()
            _wake(co)
            return
        _wake(mutex.waiters.popleft())   # stays locked: handed off
    else:
        mutex.locked = False


# --------------------------------------------------------------- CoRwlock


class CoRwlock:
    """Reader/writer lock with upgrade and downgrade (QEMU >= 6.0).

    ``owners`` is -1 for a writer, N > 0 for N readers, 0 when free.  Waiters
    queue as tickets in FIFO order; a new reader enters only if no ticket is
    queued, so writers do not starve.
    """

    __slots__ = ("owners", "tickets")

    def __init__(self) -> None:
        self.owners = 0
        self.tickets: deque[tuple[bool, Coroutine]] = deque()


def qemu_co_rwlock_init(lock: CoRwlock) -> None:
    lock.owners = 0
    lock.tickets = deque()


def _rwlock_maybe_wake_one(lock: CoRwlock) -> None:
    # Wake the head ticket if it can run now; it takes ownership here so
    # nobody can slip in between the wake-up and its running.
    if not lock.tickets:
        return
    is_reader, co = lock.tickets[0]
    if is_reader and lock.owners >= 0:
        lock.owners += 1
    elif not is_reader and lock.owners == 0:
        lock.owners = -1
    else:
        return
    lock.tickets.popleft()
    _wake(co)


@coroutine_fn
def qemu_co_rwlock_rdlock(lock: CoRwlock) -> None:
    self = getcurrent()
    if lock.owners >= 0 and not lock.tickets:
        lock.owners += 1
    else:
        lock.tickets.append((True, self))
        qemu_coroutine_yield()
        # Woken readers cascade: let the next reader in too.
        _rwlock_maybe_wake_one(lock)
    self.locks_held += 1


@coroutine_fn
def qemu_co_rwlock_wrlock(lock: CoRwlock) -> None:
    self = getcurrent()
    if lock.owners == 0 and not lock.tickets:
        lock.owners = -1
    else:
        lock.tickets.append((False, self))
        qemu_coroutine_yield()
    self.locks_held += 1


@coroutine_fn
def qemu_co_rwlock_unlock(lock: CoRwlock) -> None:
    self = getcurrent()
    if lock.owners == 0:
        raise CoroutineError("qemu_co_rwlock_unlock: lock not held")
    self.locks_held -= 1
    if lock.owners == -1:
        lock.owners = 0
    else:
        lock.owners -= 1
    _rwlock_maybe_wake_one(lock)


@coroutine_fn
def qemu_co_rwlock_downgrade(lock: CoRwlock) -> None:
    """Turn the write lock held by the caller into a read lock."""
    if lock.owners != -1:
        raise CoroutineError("qemu_co_rwlock_downgrade: not write-locked")
    lock.owners = 1
    _rwlock_maybe_wake_one(lock)


@coroutine_fn
def qemu_co_rwlock_upgrade(lock: CoRwlock) -> None:
    """Turn the caller's read lock into the write lock.

    Immediate when the caller is the sole reader and nobody queues;
    otherwise the read side is released, the caller queues as a writer and
    sleeps until it is its turn.
    """
    if lock.owners <= 0:
        raise CoroutineError("qemu_co_rwlock_upgrade: not read-locked")
    if lock.owners == 1 and not lock.tickets:
        lock.owners = -1
        return
    lock.owners -= 1
    lock.tickets.append((False, getcurrent()))
    _rwlock_maybe_wake_one(lock)
    qemu_coroutine_yield()


# --------------------------------------------------------------- sleep


def _no_aio(*_args: Any) -> Any:
    raise CoroutineError("no AioContext: gqemu.aio is not imported")


# Handed down by gqemu.aio when it is imported: the calling thread's current
# AioContext (made on first use), and arming a one-shot timer in a context.
_aio_current_context: Callable[[], Any] = _no_aio
_aio_sleep_timer: Callable[[Any, int, Optional[int], Callable[[Any], None]],
                           None] = _no_aio


def coroutine_set_aio_hooks(
        current_context: Callable[[], Any],
        sleep_timer: Callable[[Any, int, Optional[int], Callable[[Any], None]],
                              None]) -> None:
    """Called by gqemu.aio: ``current_context()`` returns the calling
    thread's current AioContext; ``sleep_timer(ctx, ns, clock, cb)`` calls
    ``cb(None)`` from ``ctx``'s loop ``ns`` nanoseconds from now on
    ``clock`` (None: realtime)."""
    global _aio_current_context, _aio_sleep_timer
    _aio_current_context = current_context
    _aio_sleep_timer = sleep_timer


def current_aio_context() -> Any:
    """The calling thread's current AioContext (gqemu.aio's
    qemu_get_current_aio_context, handed down)."""
    return _aio_current_context()


@coroutine_fn
def qemu_co_sleep_ns(ns: int, clock: Optional[int] = None) -> None:
    """Sleep ``ns`` nanoseconds on ``clock`` (realtime by default) in the
    coroutine's AioContext.  Context: coroutine.  QEMU: qemu_co_sleep_ns."""
    co = getcurrent()
    ctx = co.ctx or _aio_current_context()

    def wake(_opaque: Any) -> None:
        co.scheduled = None
        aio_co_wake(co)

    co.scheduled = "qemu_co_sleep_ns"
    _aio_sleep_timer(ctx, ns, clock, wake)
    qemu_coroutine_yield()
