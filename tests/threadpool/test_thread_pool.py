"""Port of QEMU's tests/unit/test-thread-pool.c.

The originals sleep to let threads start; here the workers block on an
event instead, so the tests are deterministic and fast.
"""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from gqemu.aio import aio_context_new, aio_poll, aio_wait_while
from gqemu.coroutine import qemu_coroutine_create, qemu_coroutine_enter
from gqemu.threadpool import (THREAD_DONE, ThreadPool, bdrv_aio_cancel,
                              bdrv_aio_cancel_async, thread_pool_free,
                              thread_pool_submit, thread_pool_submit_aio,
                              thread_pool_submit_co)


class WorkerTestData:
    def __init__(self):
        self.n = 0
        self.ret = -errno.EINPROGRESS
        self.aiocb = None


@pytest.fixture
def pool():
    ctx = aio_context_new()
    p = ThreadPool(ctx)
    yield p
    aio_wait_while(ctx, lambda: ctx.external > 0)
    thread_pool_free(p)


def worker_cb(data):
    data.n += 1
    return 0


def test_thread_pool_submit(pool):                    # /thread-pool/submit
    data = WorkerTestData()
    thread_pool_submit(pool, worker_cb, data)
    aio_wait_while(pool.ctx, lambda: data.n == 0)
    assert data.n == 1


def test_thread_pool_submit_aio(pool):                # /thread-pool/submit-aio
    active = [1]
    data = WorkerTestData()

    def done_cb(d, ret):
        assert d.ret == -errno.EINPROGRESS
        d.ret = ret
        active[0] -= 1

    thread_pool_submit_aio(pool, worker_cb, data, done_cb, data)
    assert data.ret == -errno.EINPROGRESS      # callbacks only run in poll
    aio_wait_while(pool.ctx, lambda: data.ret == -errno.EINPROGRESS)
    assert active[0] == 0 and data.n == 1 and data.ret == 0


def test_thread_pool_submit_co(pool):                 # /thread-pool/submit-co
    active = [1]
    data = WorkerTestData()
    seen = []

    def co_test_cb(d):
        d.ret = -errno.EINPROGRESS
        ret = thread_pool_submit_co(pool, worker_cb, d)
        seen.append(d.n)
        d.ret = ret
        active[0] -= 1

    co = qemu_coroutine_create(co_test_cb, data)
    qemu_coroutine_enter(co)
    # The coroutine has yielded: the request is in flight.
    assert active[0] == 1 and data.ret == -errno.EINPROGRESS
    aio_wait_while(pool.ctx, lambda: active[0] > 0)
    assert seen == [1] and data.ret == 0


def test_thread_pool_submit_many(pool):               # /thread-pool/submit-many
    datas = [WorkerTestData() for _ in range(100)]
    active = [100]

    def done_cb(d, ret):
        d.ret = ret
        active[0] -= 1

    for d in datas:                                  # more than 64 threads
        thread_pool_submit_aio(pool, worker_cb, d, done_cb, d)
    aio_wait_while(pool.ctx, lambda: active[0] > 0)
    assert all(d.n == 1 and d.ret == 0 for d in datas)
    assert pool.cur_threads <= 64


def _do_test_cancel(pool, sync):
    test_thread_pool_submit_many(pool)
    ctx = pool.ctx
    release = threading.Event()
    started = threading.Semaphore(0)
    lock = threading.Lock()
    active = [100]
    datas = [WorkerTestData() for _ in range(100)]

    def long_cb(d):
        with lock:
            if d.n != 0:
                return 0
            d.n = 1
        started.release()
        release.wait(10)
        with lock:
            d.n |= 2
        return 0

    def done_cb(d, ret):
        assert d.ret in (-errno.EINPROGRESS, -errno.ECANCELED)
        d.ret = ret
        d.aiocb = None
        active[0] -= 1

    for d in datas:
        d.aiocb = thread_pool_submit_aio(pool, long_cb, d, done_cb, d)
    aio_poll(ctx, False)
    assert active[0] == 100
    # Every worker the pool has is now busy.  (How many it has depends on
    # GIL timing: a submit starts a thread only when it sees none idle, and
    # a worker leaves the idle count only once it gets to run.)
    assert started.acquire(timeout=10)
    n_started = 1
    deadline = time.monotonic() + 10
    while n_started < pool.cur_threads and time.monotonic() < deadline:
        if started.acquire(timeout=0.05):
            n_started += 1
    assert n_started == pool.cur_threads
    num_canceled = 0
    for d in datas:
        with lock:
            not_started = d.n == 0
            if not_started:
                d.n = 4
        if not_started:
            d.ret = -errno.ECANCELED
            (bdrv_aio_cancel if sync else bdrv_aio_cancel_async)(d.aiocb)
            num_canceled += 1
    assert active[0] > 0
    assert 0 < num_canceled < 100
    release.set()
    for d in datas:
        if d.aiocb is not None and d.n < 4:
            (bdrv_aio_cancel if sync else bdrv_aio_cancel_async)(d.aiocb)
    aio_wait_while(ctx, lambda: active[0] > 0)
    for d in datas:
        if d.n == 3:
            assert d.ret == 0
        else:
            assert d.n == 4, "Callback not canceled but never started?"
            assert d.ret == -errno.ECANCELED
    assert num_canceled == sum(d.n == 4 for d in datas) == 100 - n_started


def test_thread_pool_cancel(pool):                    # /thread-pool/cancel
    _do_test_cancel(pool, sync=True)


def test_thread_pool_cancel_async(pool):              # /thread-pool/cancel-async
    _do_test_cancel(pool, sync=False)


def _wait_all_done(reqs):
    """Let every worker finish before the loop runs at all (no polling)."""
    for _ in range(10_000_000):
        if all(r.state == THREAD_DONE for r in reqs):
            return
        os.sched_yield()


def test_completions_coalesce_into_one_bh_run(pool):
    """A burst of finished requests is delivered by one completion BH run,
    not one hub wake-up per request (QEMU's design)."""
    gate = threading.Event()
    delivered = []
    reqs = [thread_pool_submit_aio(pool, lambda _: gate.wait(10) and 0, None,
                                   lambda o, r: delivered.append(r), None)
            for _ in range(8)]
    aio_poll(pool.ctx, False)
    runs = [0]
    bh = pool.completion_bh
    orig = bh.cb

    def counting(p):
        runs[0] += 1
        orig(p)
    bh.cb = counting
    gate.set()
    _wait_all_done(reqs)
    aio_wait_while(pool.ctx, lambda: len(delivered) < 8)
    assert delivered == [0] * 8
    assert runs[0] == 1


def test_done_requests_complete_newest_submitted_first(pool):
    """thread_pool_completion_bh scans from the newest submission: of the
    requests that are done together, the newest submitted completes first."""
    gate = threading.Event()
    order = []
    reqs = [thread_pool_submit_aio(pool, lambda _: gate.wait(10) and 0, None,
                                   lambda i, r: order.append(i), i)
            for i in range(6)]
    aio_poll(pool.ctx, False)
    gate.set()
    _wait_all_done(reqs)
    aio_wait_while(pool.ctx, lambda: len(order) < 6)
    assert order == [5, 4, 3, 2, 1, 0]


def test_worker_error_code_is_delivered(pool):
    got = []
    thread_pool_submit_aio(pool, lambda _: -errno.EIO, None, lambda o, r: got.append(r), None)
    aio_wait_while(pool.ctx, lambda: not got)
    assert got == [-errno.EIO]


# ------------------------------------------- a worker function that raises


def raises_type_error(_arg):
    raise TypeError("not a buffer")     # what aio_worker does not catch


@pytest.mark.timeout(30)
def test_worker_exception_raised_in_the_waiting_coroutine(pool):
    """The exception comes out inside thread_pool_submit_co, in the loop's
    thread; the pool stays usable and nothing stays in flight."""
    got = []

    def co_entry(_):
        try:
            thread_pool_submit_co(pool, raises_type_error, None)
        except TypeError as e:
            got.append((str(e), threading.get_ident()))
        got.append(thread_pool_submit_co(pool, lambda _: 7, None))
    qemu_coroutine_enter(qemu_coroutine_create(co_entry))
    aio_wait_while(pool.ctx, lambda: len(got) < 2)
    assert got == [("not a buffer", threading.get_ident()), 7]
    assert pool.ctx.external == 0


@pytest.mark.timeout(30)
def test_worker_exception_comes_out_of_aio_poll(pool):
    """Uncaught in the coroutine, or with a callback (not called), the
    exception comes out of the poll that delivers the completion."""
    ctx = pool.ctx
    qemu_coroutine_enter(qemu_coroutine_create(
        lambda _: thread_pool_submit_co(pool, raises_type_error, None)))
    with pytest.raises(TypeError, match="not a buffer"):
        aio_wait_while(ctx, lambda: ctx.external > 0)
    called = []
    thread_pool_submit_aio(pool, raises_type_error, None,
                           lambda _o, ret: called.append(ret), None)
    with pytest.raises(TypeError, match="not a buffer"):
        aio_wait_while(ctx, lambda: ctx.external > 0)
    assert called == [] and ctx.external == 0
    data = WorkerTestData()
    thread_pool_submit(pool, worker_cb, data)          # the pool still works
    aio_wait_while(ctx, lambda: data.n == 0)
    assert data.n == 1


@pytest.mark.timeout(30)
def test_worker_exception_of_a_held_request():
    """Under the stress scheduler (a held request run synchronously) the
    loop does not wait forever for a worker that raised."""
    from gqemu.sched import StressScheduler
    from gqemu.threadpool.pool import thread_pool_run_held
    ctx = aio_context_new()
    p = ThreadPool(ctx)
    ctx.sched = StressScheduler(ctx, 1, run_held=thread_pool_run_held)
    try:
        got = []

        def co_entry(_):
            try:
                thread_pool_submit_co(p, raises_type_error, None)
            except TypeError:
                got.append("raised")
        qemu_coroutine_enter(qemu_coroutine_create(co_entry))
        aio_wait_while(ctx, lambda: not got)
        assert got == ["raised"] and ctx.external == 0
    finally:
        ctx.sched = None
        thread_pool_free(p)


class _HoldAll:
    """A stand-in for the stress scheduler: holds every submitted request."""

    def __init__(self):
        self.held = []

    def thread_pool_submit(self, pool, req):
        self.held.append(req)

    def order_completions(self, done):
        pass


def test_thread_pool_spawns_only_without_idle_worker(pool):
    # QEMU 7.2 thread_pool_submit_aio spawns a worker only when
    # idle_threads == 0: two requests submitted while one worker is idle
    # (the requests held, so it cannot wake and take one) start no thread.
    test_thread_pool_submit(pool)              # one worker, now idle
    assert pool.cur_threads == 1 and pool.idle_threads == 1
    hold = _HoldAll()
    pool.ctx.sched = hold
    datas = [WorkerTestData() for _ in range(3)]
    for d in datas:
        thread_pool_submit(pool, worker_cb, d)
    assert pool.cur_threads == 1
    pool.ctx.sched = None
    for req in hold.held:
        pool.requests.put(req)
    aio_wait_while(pool.ctx, lambda: any(d.n == 0 for d in datas))
    assert [d.n for d in datas] == [1, 1, 1]


class _StallAfterTimeout:
    """The pool's lock, stalling a worker's first acquisition once armed
    (the worker is then between its idle timeout and its bookkeeping)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.armed = False
        self.stalled = threading.Event()
        self.go = threading.Event()
        self.main = threading.get_ident()

    def __enter__(self):
        if self.armed and threading.get_ident() != self.main:
            self.armed = False
            self.stalled.set()
            self.go.wait(30)
        self._lock.acquire()

    def __exit__(self, *exc):
        self._lock.release()


@pytest.mark.timeout(60)
def test_worker_timing_out_as_a_request_comes_takes_it(monkeypatch):
    """The last idle worker times out just as a request is submitted:
    submit saw it idle and started no thread, so it must stay for the
    request instead of exiting (which stranded the request forever)."""
    from gqemu.threadpool import pool as pool_mod
    monkeypatch.setattr(pool_mod, "IDLE_TIMEOUT", 0.05)
    ctx = aio_context_new()
    p = ThreadPool(ctx)
    lock = p.lock = _StallAfterTimeout()
    try:
        first = WorkerTestData()
        thread_pool_submit(p, worker_cb, first)
        aio_wait_while(ctx, lambda: first.n == 0)
        lock.armed = True
        assert lock.stalled.wait(30)            # timed out, not yet counted
        data = WorkerTestData()
        thread_pool_submit(p, worker_cb, data)
        assert p.cur_threads == 1               # it was idle: no new thread
        lock.go.set()
        aio_wait_while(ctx, lambda: data.n == 0)
        assert data.n == 1
    finally:
        lock.go.set()
        thread_pool_free(p)
