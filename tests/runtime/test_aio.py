"""AioContext: bottom halves, timers, aio_poll's progress rule, coroutine
wake-ups (QEMU tests/unit/test-aio.c cases that apply)."""
from __future__ import annotations

import threading

import pytest

from gqemu.aio import (QEMU_CLOCK_REALTIME, SCALE_MS, SCALE_NS,
                       AioDeadlockError, aio_bh_new, aio_bh_schedule_oneshot,
                       aio_co_enter, aio_co_schedule, aio_co_wake,
                       aio_context_new, aio_notify, aio_poll, aio_timer_new,
                       aio_wait_while, qemu_bh_cancel, qemu_bh_delete,
                       qemu_bh_schedule, qemu_clock_get_ns, timer_del,
                       timer_mod, timer_pending)
from gqemu.coroutine import (CoroutineError, qemu_co_sleep_ns,
                             qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_coroutine_yield)


@pytest.fixture
def ctx():
    return aio_context_new()


def test_aio_notify_is_not_progress(ctx):            # /aio/notify
    aio_notify(ctx)
    assert aio_poll(ctx, False) is False
    assert aio_poll(ctx, True) is False       # nothing could ever wake it


def test_aio_bh_schedule(ctx):                        # /aio/bh/schedule
    n = []
    bh = aio_bh_new(ctx, lambda o: n.append(o), "x")
    qemu_bh_schedule(bh)
    assert n == []                            # never inside the scheduler
    assert aio_poll(ctx, True) is True
    assert n == ["x"]
    assert aio_poll(ctx, False) is False


def test_aio_bh_schedule10(ctx):                      # /aio/bh/schedule10
    n = [0]

    def cb(bh):
        n[0] += 1
        if n[0] < 10:
            qemu_bh_schedule(bh)              # runs on the next poll

    bh = aio_bh_new(ctx, None, None)
    bh.cb, bh.opaque = cb, bh
    qemu_bh_schedule(bh)
    polls = 0
    while aio_poll(ctx, False):
        polls += 1
    assert n[0] == 10 and polls == 10


def test_aio_bh_cancel_and_delete(ctx):               # /aio/bh/cancel, /aio/bh/delete
    n = []
    bh = aio_bh_new(ctx, n.append, 1)
    qemu_bh_schedule(bh)
    qemu_bh_cancel(bh)
    assert aio_poll(ctx, False) is False and n == []
    qemu_bh_schedule(bh)
    qemu_bh_delete(bh)
    assert aio_poll(ctx, False) is False and n == []
    qemu_bh_schedule(bh)                      # a deleted BH stays dead
    assert aio_poll(ctx, False) is False and n == []


def test_bh_order_is_newest_scheduled_first(ctx):
    """Today's QEMU: a poll runs the scheduled BHs in reverse order."""
    order = []
    bhs = [aio_bh_new(ctx, order.append, i) for i in range(4)]
    for i in (2, 0, 3, 1):
        qemu_bh_schedule(bhs[i])
    aio_poll(ctx, False)
    assert order == [1, 3, 0, 2]


def test_oneshot_bh_runs_once(ctx):
    n = []
    aio_bh_schedule_oneshot(ctx, n.append, 7)
    assert aio_poll(ctx, False) and n == [7]
    assert not aio_poll(ctx, False) and n == [7]


def test_bh_exception_propagates_and_later_bhs_survive(ctx):
    """Never printed and dropped: the loop's driver sees the exception."""
    n = []
    qemu_bh_schedule(aio_bh_new(ctx, n.append, "later"))
    qemu_bh_schedule(aio_bh_new(ctx, lambda o: 1 / 0, None))
    with pytest.raises(ZeroDivisionError):
        aio_poll(ctx, False)
    assert aio_poll(ctx, False) and n == ["later"]


def test_coroutine_exception_propagates_from_aio_poll(ctx):
    def entry(_):
        qemu_coroutine_yield()
        raise KeyError("in coroutine")
    co = qemu_coroutine_create(entry)
    qemu_coroutine_enter(co)
    aio_co_schedule(ctx, co)
    with pytest.raises(KeyError):
        aio_poll(ctx, True)


def test_timer_schedule(ctx):                         # /aio/timer/schedule
    fired = []
    ts = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS, fired.append, "t")
    timer_mod(ts, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + 2_000_000)
    assert timer_pending(ts)
    assert aio_poll(ctx, False) is False and fired == []
    assert aio_poll(ctx, True) is True        # waits the 2 ms
    assert fired == ["t"] and not timer_pending(ts)
    timer_mod(ts, 0)
    timer_del(ts)
    assert aio_poll(ctx, False) is False and fired == ["t"]


def test_timer_order_by_expiry(ctx):
    fired = []
    now = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) // SCALE_MS
    for name, delta in (("b", 2), ("a", 1), ("c", 3)):
        timer_mod(aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS, fired.append, name),
                  now + delta)
    aio_wait_while(ctx, lambda: len(fired) < 3)
    assert fired == ["a", "b", "c"]


def test_co_sleep_ns(ctx):
    done = []

    def entry(_):
        t0 = qemu_clock_get_ns(QEMU_CLOCK_REALTIME)
        qemu_co_sleep_ns(1_000_000)
        done.append(qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - t0)

    co = qemu_coroutine_create(entry)
    co.ctx = ctx
    qemu_coroutine_enter(co)
    assert done == []
    aio_wait_while(ctx, lambda: not done)
    assert done[0] >= 1_000_000


def test_co_schedule_is_fifo_and_double_schedule_aborts(ctx):
    order = []
    cos = []
    for i in range(3):
        co = qemu_coroutine_create(lambda i: (qemu_coroutine_yield(), order.append(i)), i)
        qemu_coroutine_enter(co)
        cos.append(co)
    for co in cos:
        aio_co_schedule(ctx, co)
    with pytest.raises(CoroutineError, match="already scheduled in 'aio_co_schedule'"):
        aio_co_schedule(ctx, cos[0])
    aio_poll(ctx, False)
    assert order == [0, 1, 2]


def test_wake_from_coroutine_runs_after_waker_yields(ctx):
    log = []
    sleeper = qemu_coroutine_create(lambda _: (qemu_coroutine_yield(), log.append("sleeper")))
    qemu_coroutine_enter(sleeper)

    def waker(_):
        aio_co_wake(sleeper)
        log.append("waker before yield")
        qemu_coroutine_yield()
        log.append("waker resumed")

    w = qemu_coroutine_create(waker)
    qemu_coroutine_enter(w)
    assert log == ["waker before yield", "sleeper"]
    qemu_coroutine_enter(w)


def test_coroutine_queue_chaining_no_stack_growth(ctx):   # /aio/coroutine/queue-chaining
    """25000 coroutines each waking the next from inside a coroutine: run
    iteratively by the enter loop, not recursively."""
    n = 25000
    count = [0]
    cos = []

    def entry(i):
        qemu_coroutine_yield()
        count[0] += 1
        if i + 1 < n:
            aio_co_enter(ctx, cos[i + 1])

    for i in range(n):
        co = qemu_coroutine_create(entry, i)
        qemu_coroutine_enter(co)
        cos.append(co)
    qemu_coroutine_enter(cos[0])
    assert count[0] == n


def test_worker_thread_co_enter(ctx):                 # /aio/coroutine/worker-thread-co-enter
    done = []
    co = qemu_coroutine_create(lambda _: (qemu_coroutine_yield(), done.append(1)))
    qemu_coroutine_enter(co)
    co.ctx = ctx
    ctx.external_inc()                         # the thread below will notify
    t = threading.Thread(target=aio_co_enter, args=(ctx, co))
    t.start()
    t.join()
    ctx.external_dec()
    assert aio_poll(ctx, True) is True
    assert done == [1]
    assert aio_poll(ctx, False) is False


def test_aio_wait_while_detects_deadlock(ctx):
    with pytest.raises(AioDeadlockError):
        aio_wait_while(ctx, lambda: True)


def test_two_greenlets_parked_on_one_context_both_wake(ctx):
    """A notify wakes every parked poll (main loop and vCPUs may both
    block on the same context); none of them may be lost."""
    import gevent
    from gqemu.threadpool import ThreadPool, thread_pool_free, thread_pool_submit_aio
    pool = ThreadPool(ctx)
    gate = threading.Event()
    done = []
    thread_pool_submit_aio(pool, lambda _: gate.wait(10) and 0, None,
                           lambda o, r: done.append(r), None)
    woke = []

    def poller(name):
        aio_poll(ctx, True)
        woke.append(name)

    g1 = gevent.spawn(poller, "a")
    g2 = gevent.spawn(poller, "b")
    gevent.sleep(0)                     # both park now
    assert len(ctx._waiters) == 2
    gate.set()
    gevent.joinall([g1, g2], timeout=10)
    assert sorted(woke) == ["a", "b"] and done == [0]
    thread_pool_free(pool)
