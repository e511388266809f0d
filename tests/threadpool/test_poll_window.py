"""The poll window of a blocking aio_poll (AioContext.poll_max_ns).

When only thread-pool requests can wake the loop, aio_poll first waits
for them on a lock, without the hub; a worker that finishes then releases
that lock instead of sending the libev async event.  These tests see
which way a completion came by counting the hub's wake-ups of the context
(``ctx._wake``) and the poll waits; none depends on timing: every
completion is released by a helper thread only once the loop is known to
be in the state under test.
"""
from __future__ import annotations

import threading
import time

import gevent
import pytest

from gqemu.aio import (POLL_MAX_NS, QEMU_CLOCK_REALTIME, SCALE_MS, aio_context_new,
                       aio_poll, aio_timer_new, aio_wait_while,
                       qemu_clock_get_ns, timer_mod)
from gqemu.coroutine import qemu_coroutine_create, qemu_coroutine_enter
from gqemu.threadpool import (ThreadPool, thread_pool_free,
                              thread_pool_submit_aio, thread_pool_submit_co)

LONG_NS = 60 * 10**9        # a window no test should ever see run out


@pytest.fixture
def pool():
    ctx = aio_context_new()
    p = ThreadPool(ctx)
    yield p
    ctx.poll_max_ns = 0
    aio_wait_while(ctx, lambda: ctx.external > 0)
    thread_pool_free(p)


def _count(ctx):
    """Count the hub's wake-ups of ``ctx`` and its poll waits (and their
    results)."""
    seen = {"wake": 0, "poll": []}
    wake, poll_wait = ctx._wake, ctx._poll_wait

    def counting_wake():
        seen["wake"] += 1
        wake()

    def counting_poll_wait(budget):
        r = poll_wait(budget)
        seen["poll"].append(r)
        return r
    ctx._wake = counting_wake
    ctx._poll_wait = counting_poll_wait
    return seen


def _when(cond, action):
    """Run ``action()`` in a thread once ``cond()`` holds."""
    def run():
        while not cond():
            time.sleep(0.001)
        action()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _gated(gate, ret=0):
    def func(_arg):
        gate.wait(30)
        return ret
    return func


def _complete_in_window(pool, ret):
    """One request whose worker finishes only once the loop waits in the
    poll window; returns (results delivered, _count's record)."""
    ctx = pool.ctx
    gate = threading.Event()
    got = []
    thread_pool_submit_aio(pool, _gated(gate, ret), None, lambda _o, r: got.append(r), None)
    seen = _count(ctx)
    t = _when(lambda: ctx._polling, gate.set)
    aio_wait_while(ctx, lambda: not got)
    t.join()
    return got, seen


@pytest.mark.timeout(30)
def test_completion_in_the_window_bypasses_the_hub(pool):
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    got, seen = _complete_in_window(pool, 5)
    assert got == [5]
    assert seen["poll"][-1] is True and seen["wake"] == 0
    assert ctx.external == 0 and ctx.poll_external == 0


@pytest.mark.timeout(30)
def test_window_run_out_falls_back_to_the_hub(pool):
    ctx = pool.ctx
    ctx.poll_max_ns = 1000          # 1 us: runs out before the gate opens
    gate = threading.Event()
    got = []
    thread_pool_submit_aio(pool, _gated(gate, 3), None, lambda _o, r: got.append(r), None)
    seen = _count(ctx)
    # Opened only once the loop sleeps on the hub, after its window.
    t = _when(lambda: bool(ctx._waiters), gate.set)
    aio_wait_while(ctx, lambda: not got)
    t.join()
    assert got == [3]
    assert seen["poll"] and seen["poll"][0] is False
    assert seen["wake"] >= 1


@pytest.mark.timeout(30)
def test_no_window_when_0(pool):
    ctx = pool.ctx
    ctx.poll_max_ns = 0
    gate = threading.Event()
    got = []
    thread_pool_submit_aio(pool, _gated(gate), None, lambda _o, r: got.append(r), None)
    seen = _count(ctx)
    t = _when(lambda: bool(ctx._waiters), gate.set)
    aio_wait_while(ctx, lambda: not got)
    t.join()
    assert got == [0] and seen["poll"] == [] and seen["wake"] >= 1


@pytest.mark.timeout(30)
def test_no_window_while_other_work_can_wake_the_loop(pool):
    """A running vCPU (counted in ``external``, not a thread-pool request)
    or a greenlet ready in the hub: the loop parks on the hub at once."""
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    seen = _count(ctx)
    ctx.external_inc()                  # what a running vCPU counts
    try:
        gate = threading.Event()
        got = []
        thread_pool_submit_aio(pool, _gated(gate), None, lambda _o, r: got.append(r), None)
        t = _when(lambda: bool(ctx._waiters), gate.set)
        aio_wait_while(ctx, lambda: not got)
        t.join()
        assert got == [0] and seen["poll"] == []
    finally:
        ctx.external_dec()
    # a greenlet ready to run: the hub must get to it, and it finishes the
    # request
    gate = threading.Event()
    got = []
    ran = []
    thread_pool_submit_aio(pool, _gated(gate), None, lambda _o, r: got.append(r), None)
    g = gevent.spawn(lambda: (ran.append(1), gate.set()))
    aio_wait_while(ctx, lambda: not got)
    g.join()
    assert ran == [1] and got == [0] and seen["poll"] == []


@pytest.mark.timeout(30)
def test_timer_due_in_the_window_fires(pool):
    """The window ends at the next timer: the timer fires on time and may
    be what lets the request finish."""
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    gate = threading.Event()
    got = []
    fired = []
    thread_pool_submit_aio(pool, _gated(gate, 9), None, lambda _o, r: got.append(r), None)
    seen = _count(ctx)
    ts = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS,
                       lambda _: (fired.append(1), gate.set()), None)
    timer_mod(ts, qemu_clock_get_ns(QEMU_CLOCK_REALTIME, ctx) // 10**6 + 20)
    aio_wait_while(ctx, lambda: not got)
    assert fired == [1] and got == [9]
    assert seen["poll"] and seen["wake"] == 0


def _raises(_arg):
    raise TypeError("not a buffer")


@pytest.mark.timeout(30)
def test_worker_exception_through_the_window(pool):
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    gate = threading.Event()
    got = []

    def func(arg):
        gate.wait(30)
        _raises(arg)

    def co_entry(_):
        try:
            thread_pool_submit_co(pool, func, None)
        except TypeError as e:
            got.append(str(e))
    qemu_coroutine_enter(qemu_coroutine_create(co_entry))
    seen = _count(ctx)
    t = _when(lambda: ctx._polling, gate.set)
    aio_wait_while(ctx, lambda: not got)
    t.join()
    assert got == ["not a buffer"] and seen["wake"] == 0 and ctx.external == 0


@pytest.mark.timeout(30)
def test_late_release_is_a_spurious_wake_only(pool):
    """A notifier that saw the flag of an earlier window releases the lock
    late: the next window wakes early, finds nothing, and waits again."""
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    ctx._poll_lock.release()            # the late release
    got, seen = _complete_in_window(pool, 1)
    assert got == [1] and seen["wake"] == 0


@pytest.mark.timeout(60)
def test_many_requests_in_flight_all_complete_once(pool):
    """Completions racing the window's start and end (64 in flight, short
    windows): each delivered exactly once, newest of a burst first is
    covered elsewhere; here nothing is lost or doubled."""
    ctx = pool.ctx
    ctx.poll_max_ns = 20000
    got = []
    n = 3000

    def entry(i):
        for j in range(n // 60):
            got.append(thread_pool_submit_co(pool, lambda a: a, i * 1000 + j))
    for i in range(60):
        qemu_coroutine_enter(qemu_coroutine_create(entry, i))
    aio_wait_while(ctx, lambda: len(got) < 60 * (n // 60))
    assert sorted(got) == sorted(i * 1000 + j for i in range(60) for j in range(n // 60))
    assert ctx.external == 0


def test_poll_max_ns_from_the_environment(monkeypatch):
    monkeypatch.setenv("GQEMU_POLL_MAX_NS", "1234")
    assert aio_context_new().poll_max_ns == 1234
    monkeypatch.setenv("GQEMU_POLL_MAX_NS", "0")
    assert aio_context_new().poll_max_ns == 0
    monkeypatch.setenv("GQEMU_POLL_MAX_NS", "lots")
    assert aio_context_new().poll_max_ns == POLL_MAX_NS
    monkeypatch.delenv("GQEMU_POLL_MAX_NS")
    assert aio_context_new().poll_max_ns > 0


def test_nonblocking_poll_does_not_wait(pool):
    ctx = pool.ctx
    ctx.poll_max_ns = LONG_NS
    gate = threading.Event()
    got = []
    thread_pool_submit_aio(pool, _gated(gate), None, lambda _o, r: got.append(r), None)
    assert aio_poll(ctx, False) is False
    gate.set()
    aio_wait_while(ctx, lambda: not got)
    assert got == [0]
