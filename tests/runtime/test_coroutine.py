"""Port of QEMU's tests/unit/test-coroutine.c (2.8 and today's cases).

Each test is named after the original GLib test path.
"""
from __future__ import annotations

import pytest

from gqemu.coroutine import (CoMutex, CoroutineError, CoRwlock, CoQueue,
                             coroutine_pool_size, qemu_co_mutex_lock,
                             qemu_co_mutex_unlock, qemu_co_queue_next,
                             qemu_co_queue_wait, qemu_co_rwlock_downgrade,
                             qemu_co_rwlock_rdlock, qemu_co_rwlock_unlock,
                             qemu_co_rwlock_upgrade, qemu_co_rwlock_wrlock,
                             qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_coroutine_entered, qemu_coroutine_self,
                             qemu_coroutine_yield, qemu_in_coroutine)


def test_basic_in_coroutine():                       # /basic/in_coroutine
    seen = []
    assert not qemu_in_coroutine()
    qemu_coroutine_enter(qemu_coroutine_create(lambda _: seen.append(qemu_in_coroutine())))
    assert seen == [True]


def test_basic_self():                               # /basic/self
    box = {}

    def verify_self(_):
        box["self"] = qemu_coroutine_self()
    co = qemu_coroutine_create(verify_self)
    qemu_coroutine_enter(co)
    assert box["self"] is co


def test_basic_entered():                            # /basic/entered
    checks = []

    def step2(caller):
        checks.append(qemu_coroutine_entered(caller))
        checks.append(qemu_coroutine_entered(qemu_coroutine_self()))
        qemu_coroutine_yield()
        checks.append(qemu_coroutine_entered(caller))
        checks.append(qemu_coroutine_entered(qemu_coroutine_self()))

    def step1(_):
        me = qemu_coroutine_self()
        checks.append(qemu_coroutine_entered(me))
        co = qemu_coroutine_create(step2, me)
        checks.append(not qemu_coroutine_entered(co))
        qemu_coroutine_enter(co)
        checks.append(not qemu_coroutine_entered(co))
        qemu_coroutine_enter(co)

    co = qemu_coroutine_create(step1)
    assert not qemu_coroutine_entered(co)
    qemu_coroutine_enter(co)
    assert checks == [True] * 7
    assert not qemu_coroutine_entered(co)


def test_basic_nesting():                            # /basic/nesting
    nd = {"n_enter": 0, "n_return": 0, "max": 128}

    def nest(nd):
        nd["n_enter"] += 1
        if nd["n_enter"] < nd["max"]:
            qemu_coroutine_enter(qemu_coroutine_create(nest, nd))
        nd["n_return"] += 1

    qemu_coroutine_enter(qemu_coroutine_create(nest, nd))
    assert nd["n_enter"] == nd["max"] == nd["n_return"]


def test_basic_yield():                              # /basic/yield
    done = []

    def yield_5_times(_):
        for _i in range(5):
            qemu_coroutine_yield()
        done.append(True)

    co = qemu_coroutine_create(yield_5_times)
    i = -1
    while not done:
        qemu_coroutine_enter(co)
        i += 1
    assert i == 5


def test_basic_no_dangling_access():                 # /basic/no-dangling-access
    """c1 enters c2, c2 yields, c1 ends; c1 is then reused for something
    else; re-entering c2 must return to its new enterer, not to dead c1."""
    log = []
    c2 = qemu_coroutine_create(lambda _: (qemu_coroutine_yield(), log.append("c2 end")))
    c1 = qemu_coroutine_create(lambda c2: qemu_coroutine_enter(c2), c2)
    qemu_coroutine_enter(c1)
    assert c1.entry is None                      # terminated, back in the pool
    reused = qemu_coroutine_create(lambda _: log.append("reused"))
    assert reused is c1                          # the pool hands c1 out again
    qemu_coroutine_enter(c2)
    assert log == ["c2 end"]
    qemu_coroutine_enter(reused)
    assert log == ["c2 end", "reused"]


def test_basic_lifecycle():                          # /basic/lifecycle
    for _ in range(2):
        done = []
        qemu_coroutine_enter(qemu_coroutine_create(lambda d: d.append(1), done))
        assert done == [1]


def test_basic_order():                              # /basic/order
    records = []

    def co_order_test(_):
        records.append((2, 1))
        assert qemu_in_coroutine()
        qemu_coroutine_yield()
        records.append((2, 2))
        assert qemu_in_coroutine()

    co = qemu_coroutine_create(co_order_test)
    records.append((1, 1))
    qemu_coroutine_enter(co)
    records.append((1, 2))
    assert not qemu_in_coroutine()
    qemu_coroutine_enter(co)
    records.append((1, 3))
    assert records == [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)]


class _MutexState:
    locked = False
    done = 0


def _do_test_co_mutex(entry, opaque, st):
    c1 = qemu_coroutine_create(entry, opaque)
    c2 = qemu_coroutine_create(entry, opaque)
    qemu_coroutine_enter(c1)
    assert st.locked
    qemu_coroutine_enter(c2)
    # Unlock queues c2; it runs when c1 yields or terminates.
    qemu_coroutine_enter(c1)
    assert st.done == 1
    assert st.locked
    qemu_coroutine_enter(c2)
    assert st.done == 2
    assert not st.locked


def test_locking_co_mutex():                         # /locking/co-mutex
    st = _MutexState()
    m = CoMutex()

    def mutex_fn(m):
        qemu_co_mutex_lock(m)
        assert not st.locked
        st.locked = True
        qemu_coroutine_yield()
        st.locked = False
        qemu_co_mutex_unlock(m)
        st.done += 1

    _do_test_co_mutex(mutex_fn, m, st)


def test_locking_co_mutex_lockable():                # /locking/co-mutex/lockable
    """QemuLockable's Python form: CoQueue waits drop and retake a CoMutex."""
    st = _MutexState()
    m = CoMutex()
    q = CoQueue()

    def lockable_fn(m):
        qemu_co_mutex_lock(m)
        assert not st.locked
        st.locked = True
        qemu_coroutine_yield()
        st.locked = False
        qemu_co_mutex_unlock(m)
        st.done += 1

    _do_test_co_mutex(lockable_fn, m, st)
    # The queue variant: a waiter sleeps without the lock and wakes with it.
    order = []

    def waiter(_):
        qemu_co_mutex_lock(m)
        qemu_co_queue_wait(q, m)
        order.append(("waiter holds", m.holder is qemu_coroutine_self()))
        qemu_co_mutex_unlock(m)

    def waker(_):
        qemu_co_mutex_lock(m)
        order.append("waker locked")
        qemu_co_queue_next(q)
        qemu_co_mutex_unlock(m)

    qemu_coroutine_enter(qemu_coroutine_create(waiter))
    assert not m.locked
    qemu_coroutine_enter(qemu_coroutine_create(waker))
    assert order == ["waker locked", ("waiter holds", True)]
    assert not m.locked


def test_locking_co_rwlock_upgrade():                # /locking/co-rwlock/upgrade
    lock = CoRwlock()
    c1_done, c2_done = [], []

    def rwlock_yield_upgrade(done):
        qemu_co_rwlock_rdlock(lock)
        qemu_coroutine_yield()
        qemu_co_rwlock_upgrade(lock)
        qemu_co_rwlock_unlock(lock)
        done.append(True)

    def rwlock_wrlock_yield(done):
        qemu_co_rwlock_wrlock(lock)
        qemu_coroutine_yield()
        qemu_co_rwlock_unlock(lock)
        done.append(True)

    c1 = qemu_coroutine_create(rwlock_yield_upgrade, c1_done)
    c2 = qemu_coroutine_create(rwlock_wrlock_yield, c2_done)
    qemu_coroutine_enter(c1)
    qemu_coroutine_enter(c2)
    qemu_coroutine_enter(c1)          # c1 must now sleep
    assert not c1_done
    qemu_coroutine_enter(c2)
    assert c1_done and c2_done
    assert lock.owners == 0


def test_locking_co_rwlock_downgrade():              # /locking/co-rwlock/downgrade
    lock = CoRwlock()
    done = {i: False for i in range(1, 5)}

    def rdlock_yield(_):
        qemu_co_rwlock_rdlock(lock)
        qemu_coroutine_yield()
        qemu_co_rwlock_unlock(lock)
        qemu_coroutine_yield()
        done[1] = True

    def wrlock_downgrade(_):
        qemu_co_rwlock_wrlock(lock)
        qemu_co_rwlock_downgrade(lock)
        qemu_co_rwlock_unlock(lock)
        done[2] = True

    def rdlock(_):
        qemu_co_rwlock_rdlock(lock)
        qemu_co_rwlock_unlock(lock)
        done[3] = True

    def wrlock(_):
        qemu_co_rwlock_wrlock(lock)
        qemu_co_rwlock_unlock(lock)
        done[4] = True

    cos = [qemu_coroutine_create(f) for f in (rdlock_yield, wrlock_downgrade, rdlock, wrlock)]
    for co in cos:
        qemu_coroutine_enter(co)
    qemu_coroutine_enter(cos[0])
    assert done[2] and done[3] and done[4]
    qemu_coroutine_enter(cos[0])
    assert done[1]
    assert lock.owners == 0


def test_co_rwlock_new_reader_queues_behind_a_waiting_writer():
    """Since QEMU 6.0 waiters are FIFO tickets: while a writer waits, a new
    reader waits too (readers cannot starve the writer)."""
    lock = CoRwlock()
    order = []

    def reader(name):
        qemu_co_rwlock_rdlock(lock)
        order.append(name)
        qemu_coroutine_yield()
        qemu_co_rwlock_unlock(lock)

    def writer(name):
        qemu_co_rwlock_wrlock(lock)
        order.append(name)
        qemu_co_rwlock_unlock(lock)

    r1, w, r2 = (qemu_coroutine_create(reader, "r1"), qemu_coroutine_create(writer, "w"),
                 qemu_coroutine_create(reader, "r2"))
    qemu_coroutine_enter(r1)          # holds the lock for reading
    qemu_coroutine_enter(w)           # waits
    qemu_coroutine_enter(r2)          # must wait behind w, not join r1
    assert order == ["r1"]
    qemu_coroutine_enter(r1)          # r1 unlocks: w, then r2
    assert order == ["r1", "w", "r2"]
    qemu_coroutine_enter(r2)
    assert lock.owners == 0


# ---- misuse: QEMU aborts with these messages; we raise CoroutineError


def test_reenter_running_coroutine_raises():
    def entry(_):
        qemu_coroutine_enter(qemu_coroutine_self())
    with pytest.raises(CoroutineError, match="Co-routine re-entered recursively"):
        qemu_coroutine_enter(qemu_coroutine_create(entry))


def test_yield_outside_coroutine_raises():
    with pytest.raises(CoroutineError, match="Co-routine is yielding to no one"):
        qemu_coroutine_yield()


def test_exception_in_coroutine_reaches_enterer_and_pool_survives():
    def boom(_):
        raise ValueError("boom")
    with pytest.raises(ValueError, match="boom"):
        qemu_coroutine_enter(qemu_coroutine_create(boom))
    done = []
    qemu_coroutine_enter(qemu_coroutine_create(lambda _: done.append(1)))
    assert done == [1]


def test_finished_coroutines_are_pooled_and_reused():
    cos = [qemu_coroutine_create(lambda _: None) for _ in range(4)]
    for co in cos:
        qemu_coroutine_enter(co)
    before = coroutine_pool_size()
    again = [qemu_coroutine_create(lambda _: None) for _ in range(4)]
    assert set(map(id, again)) <= set(map(id, cos)) | set()
    assert coroutine_pool_size() == before - 4
    for co in again:
        qemu_coroutine_enter(co)


def test_terminated_coroutine_returns_to_last_enterer():
    """Entry returns to whoever entered last, not the creator."""
    log = []
    inner = qemu_coroutine_create(lambda _: (qemu_coroutine_yield(), log.append("inner done")))

    def first(_):
        qemu_coroutine_enter(inner)           # inner yields back here
        log.append("first done")

    qemu_coroutine_enter(qemu_coroutine_create(first))

    def second(_):
        qemu_coroutine_enter(inner)           # inner terminates back here
        log.append("second resumed")

    qemu_coroutine_enter(qemu_coroutine_create(second))
    assert log == ["first done", "inner done", "second resumed"]


def test_mutex_fifo_handoff_no_barging():
    """Unlock hands the mutex to the longest waiter; a newcomer queues."""
    m = CoMutex()
    order = []

    def holder(_):
        qemu_co_mutex_lock(m)
        qemu_coroutine_yield()
        qemu_co_mutex_unlock(m)

    def waiter(name):
        qemu_co_mutex_lock(m)
        order.append(name)
        qemu_coroutine_yield()
        qemu_co_mutex_unlock(m)

    h = qemu_coroutine_create(holder)
    qemu_coroutine_enter(h)
    w1 = qemu_coroutine_create(waiter, "w1")
    w2 = qemu_coroutine_create(waiter, "w2")
    qemu_coroutine_enter(w1)
    qemu_coroutine_enter(w2)
    qemu_coroutine_enter(h)                 # unlock: w1 owns it, runs, yields
    assert order == ["w1"]
    barger = qemu_coroutine_create(waiter, "barger")
    qemu_coroutine_enter(barger)            # must queue behind w2
    assert order == ["w1"]
    qemu_coroutine_enter(w1)                # hand-off to w2, not barger
    assert order == ["w1", "w2"]
    qemu_coroutine_enter(w2)
    assert order == ["w1", "w2", "barger"]
    qemu_coroutine_enter(barger)
    assert not m.locked
