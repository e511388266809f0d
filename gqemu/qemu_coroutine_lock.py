"""CoQueue, CoMutex and CoRwlock, as today's QEMU has them: the mutex hands
ownership to the longest waiter (FIFO, no barging; the 2.8 barging is a
planted bug, switched per AioContext) and the rwlock supports upgrade and
downgrade.  Waiters are woken with ``aio_co_wake``: they run when the waker
yields or terminates.

Import the public names from gqemu.coroutine.

QEMU: util/qemu-coroutine-lock.c.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Optional

from greenlet import getcurrent, greenlet

from gqemu.coroutine_ucontext import Coroutine, CoroutineError
from gqemu.qemu_coroutine import (aio_co_wake, coroutine_fn, qemu_coroutine_enter,
                                  qemu_coroutine_yield, thread_state)

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
