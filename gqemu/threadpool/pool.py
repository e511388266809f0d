"""The thread pool: blocking work in worker threads, completions in the loop.

Each worker is one long-running ``worker_thread`` task (at most 64 per
pool, QEMU's ``max_threads``) hosted by a ``gevent.threadpool.ThreadPool``
shared by the pools of the contexts of one loop thread.  It
takes requests from a FIFO, runs ``func(arg)`` and puts the finished request
on the pool's done list.  Only the first completion of a burst schedules
``thread_pool_completion_bh`` (one wake-up of the loop: the release of the
lock its poll window waits on, else one libev async event and hub wake-up);
that BH, running in the AioContext, delivers every finished request's
callback.  Requests in flight count in the context's ``external`` and
``poll_external`` (what lets its poll wait for them without the hub).
Worker code never touches greenlets, the hub or the loop's objects: it sees
only its request and two thread-safe queues.

A request goes THREAD_QUEUED -> THREAD_ACTIVE -> THREAD_DONE.  When several requests are
done at once, the newest submitted completes first, as in QEMU.  Cancelling a
queued request (today's QEMU: any queued one) marks it done with
-ECANCELED and the worker that later pops it skips it; an active request is
not interrupted and completes normally.

A ``func`` that raises (anything: ``aio_worker`` turns only OSError into
-errno) does not kill its worker or lose the request: the worker keeps the
exception with the request, and the completion BH delivers it to the code
waiting for the request -- raised inside the coroutine of a
``thread_pool_submit_co``, else raised by the BH in place of the callback
-- so it comes out of ``aio_poll`` like any other exception of the loop.

Must not import: gqemu.block or anything above it.
QEMU: util/thread-pool.c (2.8 thread-pool.c).
"""
from __future__ import annotations

import errno
import queue
import threading
from collections import deque
from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.aio import (AioContext, AIOCBInfo, BlockAIOCB, aio_bh_new,
                       aio_co_wake, qemu_aio_unref, qemu_bh_schedule)
from gqemu.coroutine import coroutine_fn, qemu_coroutine_yield
from gqemu.trace import trace_event

__all__ = [
    "ThreadPool", "ThreadPoolElement", "aio_get_thread_pool",
    "thread_pool_submit_aio", "thread_pool_submit_co", "thread_pool_submit",
    "thread_pool_free", "thread_pool_run_held", "THREAD_QUEUED", "THREAD_ACTIVE", "THREAD_DONE",
]

trace_thread_pool_submit = trace_event(
    "thread_pool_submit", "pool %p req %p opaque %p")
trace_thread_pool_complete = trace_event(
    "thread_pool_complete", "pool %p req %p opaque %p ret %d")
# gqemu's own (no QEMU event): a worker's call of the request's function and
# the end of its completion callback, slice ends in the JSON output
trace_thread_pool_work = trace_event("thread_pool_work", "pool %p req %p")
trace_thread_pool_work_done = trace_event("thread_pool_work_done", "pool %p req %p ret %d")
trace_thread_pool_complete_done = trace_event("thread_pool_complete_done", "pool %p req %p")
trace_thread_pool_cancel = trace_event("thread_pool_cancel", "req %p opaque %p")

THREAD_QUEUED = 0
THREAD_ACTIVE = 1
THREAD_DONE = 2

MAX_THREADS = 64
IDLE_TIMEOUT = 10.0        # seconds a worker waits for work before exiting

_STOP = object()


def thread_pool_cancel(acb: BlockAIOCB) -> None:
    """Cancel a request that has not started.  QEMU: thread_pool_cancel."""
    req: ThreadPoolElement = acb  # type: ignore[assignment]
    pool = req.pool
    trace_thread_pool_cancel(req, req.opaque)
    with pool.lock:
        if req.state != THREAD_QUEUED:
            return          # active: it will complete normally
        req.state = THREAD_DONE
        req.ret = -errno.ECANCELED
        pool.queued -= 1
        pool.done.append(req)
    qemu_bh_schedule(pool.completion_bh)


def thread_pool_get_aio_context(acb: BlockAIOCB) -> AioContext:
    return acb.pool.ctx  # type: ignore[attr-defined,no-any-return]


thread_pool_aiocb_info = AIOCBInfo(cancel_async=thread_pool_cancel,
                                   get_aio_context=thread_pool_get_aio_context)


class ThreadPoolElement(BlockAIOCB):
    """One request.  QEMU: ThreadPoolElement."""

    __slots__ = ("pool", "func", "arg", "state", "ret", "exc", "finished",
                 "seq")

    def __init__(self, pool: "ThreadPool", func: Callable[[Any], int],
                 arg: Any, cb: Optional[Callable[[Any, int], Any]],
                 opaque: Any) -> None:
        BlockAIOCB.__init__(self, thread_pool_aiocb_info, cb, opaque)
        self.pool = pool
        self.func = func
        self.arg = arg
        self.state = THREAD_QUEUED
        self.ret = -errno.EINPROGRESS
        self.exc: Optional[BaseException] = None
        self.finished: Optional[threading.Event] = None
        pool.submitted += 1
        self.seq = pool.submitted


class ThreadPool:
    """The worker threads of one AioContext.  QEMU: ThreadPool."""

    def __init__(self, ctx: AioContext, max_threads: int = MAX_THREADS) -> None:
        self.ctx = ctx
        self.max_threads = max_threads
        self.lock = threading.Lock()
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Finished requests: workers append at the right (one atomic
        # append each, no lock); the completion BH takes from the left.
        self.done: deque[ThreadPoolElement] = deque()
        self.completion_bh = aio_bh_new(ctx, thread_pool_completion_bh, self)
        self.cur_threads = 0
        # One entry per worker waiting for a request (appended and popped
        # by the workers without the lock; see idle_threads).
        self.idle: list[None] = []
        self.submitted = 0         # submission counter: completion order
        self.queued = 0
        self.kicked = False        # completion_bh scheduled by a worker
        self._gpool: Any = None

    @property
    def idle_threads(self) -> int:
        """Workers waiting for a request.  QEMU: ThreadPool.idle_threads."""
        return len(self.idle)

    def _spawn_thread(self) -> None:
        # Called with the lock held, from the loop's thread.
        if self._gpool is None:
            self.ctx._ensure_hub()
            self._gpool = _host_threads()
        self.cur_threads += 1
        self._gpool.spawn(worker_thread, self)


class _Hosts(threading.local):
    gpool: Any = None


_hosts = _Hosts()
# OS threads hosting the workers of every ThreadPool whose context runs on
# this thread: a context's pool stops its workers when freed, and the next
# context's (the next stress run's) reuses the threads instead of starting
# new ones.  Room for a few pools at their maximum at once.
HOST_THREADS = 4 * MAX_THREADS


def _host_threads() -> Any:
    gpool = _hosts.gpool
    if gpool is None:
        from gevent.threadpool import ThreadPool as GeventThreadPool
        gpool = _hosts.gpool = GeventThreadPool(HOST_THREADS)
    return gpool


def worker_thread(pool: ThreadPool) -> None:
    """A worker: run queued requests until idle for 10 s.

    One lock section per request (taking it: the cancel race); the
    finished request is published with single atomic steps (the GIL's),
    and the wake-up of the loop comes last, so the loop does not wake only
    to wait for this thread.
    Context: worker thread.  QEMU: thread-pool.c worker_thread.
    """
    get = pool.requests.get
    lock = pool.lock
    done = pool.done
    idle = pool.idle
    bh = pool.completion_bh
    with lock:          # not while a submit holds it (it may be spawning us)
        idle.append(None)
    while True:
        try:
            req = get(True, IDLE_TIMEOUT)
        except queue.Empty:
            req = None
        with lock:
            idle.pop()
            if req is None and pool.queued:
                # Timed out just as a request came: submit saw this thread
                # idle and started none, so it must not exit now.
                idle.append(None)
                continue
            if req is None or req is _STOP:
                pool.cur_threads -= 1
                return
            if req.state != THREAD_QUEUED:     # cancelled while queued
                idle.append(None)
                continue
            req.state = THREAD_ACTIVE
            pool.queued -= 1
        if trace_thread_pool_work.enabled:
            trace_thread_pool_work(pool, req)
        try:
            ret = req.func(req.arg)
        except BaseException as e:   # delivered by the completion BH
            req.exc = e
            ret = -errno.EIO
        if trace_thread_pool_work_done.enabled:
            trace_thread_pool_work_done(pool, req, ret)
        req.ret = ret
        req.state = THREAD_DONE
        done.append(req)
        idle.append(None)
        finished = req.finished
        # The first of a burst schedules the BH: one wake-up for all.  The
        # BH clears ``kicked`` before it empties ``done``, so a request
        # appended while ``kicked`` reads True is still delivered (two
        # workers kicking at once cost a duplicate notify, nothing else).
        if not pool.kicked:
            pool.kicked = True
            qemu_bh_schedule(bh)
        if finished is not None:
            finished.set()


def _newest_first(req: ThreadPoolElement) -> int:
    return -req.seq


def thread_pool_completion_bh(pool: ThreadPool) -> None:
    """Deliver every finished request's callback, in the AioContext.

    Reschedules itself before each callback in case the callback polls the
    loop, as QEMU does.  QEMU: thread_pool_completion_bh.
    """
    ctx = pool.ctx
    pool.kicked = False
    done = pool.done
    if len(done) > 1 or ctx.sched is not None:
        # Workers append meanwhile (no lock): reorder what is there now
        # apart, then put it back in front of what they added since.
        batch = deque(done.popleft() for _ in range(len(done)))
        if len(batch) > 1:
            # QEMU scans its request list from the newest submission, so of
            # the requests that are done the newest submitted completes first.
            batch = deque(sorted(batch, key=_newest_first))
        if ctx.sched is not None:
            ctx.sched.order_completions(batch)
        done.extendleft(reversed(batch))
    while done:
        req = done.popleft()
        if done:
            qemu_bh_schedule(pool.completion_bh)
        ctx.external_dec()
        ctx.poll_external -= 1
        if trace_thread_pool_complete.enabled:
            trace_thread_pool_complete(pool, req, req.opaque, req.ret)
        cb = req.cb
        exc = req.exc
        if exc is not None:
            req.exc = None
            if cb is thread_pool_co_cb:
                req.opaque.exc = exc             # raised in the coroutine
            else:
                qemu_aio_unref(req)
                raise exc
        if cb is not None:
            cb(req.opaque, req.ret)
            if ctx.plant.completion_twice:
                cb(req.opaque, req.ret)          # planted bug
        if trace_thread_pool_complete_done.enabled:
            trace_thread_pool_complete_done(pool, req)
        qemu_aio_unref(req)


def thread_pool_submit_aio(pool: ThreadPool, func: Callable[[Any], int],
                           arg: Any, cb: Optional[Callable[[Any, int], Any]],
                           opaque: Any) -> ThreadPoolElement:
    """Run ``func(arg)`` in a worker; ``cb(opaque, ret)`` later in the loop.

    Context: the loop's thread (coroutine or not).
    Returns: the request, usable with bdrv_aio_cancel(_async).
    QEMU: thread_pool_submit_aio.
    """
    req = ThreadPoolElement(pool, func, arg, cb, opaque)
    ctx = pool.ctx
    ctx.external_inc()
    ctx.poll_external += 1
    with pool.lock:
        pool.queued += 1
        # a new worker only when none is idle (an idle one takes the
        # request, even with more queued), as QEMU's thread_pool_submit_aio
        if not pool.idle and pool.cur_threads < pool.max_threads:
            pool._spawn_thread()
    if trace_thread_pool_submit.enabled:
        trace_thread_pool_submit(pool, req, opaque)
    sched = ctx.sched
    if sched is not None:
        sched.thread_pool_submit(pool, req)     # held until it says so
    else:
        pool.requests.put(req)
    return req


def thread_pool_run_held(pool: ThreadPool, req: ThreadPoolElement) -> None:
    """Run one request the stress scheduler held, in a worker, and wait for
    it to finish; its completion is then queued as usual.  Running held
    requests one at a time keeps a seeded run deterministic.

    Context: the loop's thread, outside worker code.
    """
    if req.state != THREAD_QUEUED:
        return                                   # cancelled while held
    finished = threading.Event()
    req.finished = finished
    pool.requests.put(req)
    finished.wait()


class ThreadPoolCo:
    """QEMU: ThreadPoolCo."""

    __slots__ = ("co", "ret", "exc")

    def __init__(self, co: Any) -> None:
        self.co = co
        self.ret = -errno.EINPROGRESS
        self.exc: Optional[BaseException] = None


def thread_pool_co_cb(opaque: ThreadPoolCo, ret: int) -> None:
    opaque.ret = ret
    aio_co_wake(opaque.co)


@coroutine_fn
def thread_pool_submit_co(pool: ThreadPool, func: Callable[[Any], int],
                          arg: Any) -> int:
    """Run ``func(arg)`` in a worker and yield until it is done.

    Context: coroutine.  Returns: func's result, or -ECANCELED; raises
    what ``func`` raised.  QEMU: thread_pool_submit_co.
    """
    tpc = ThreadPoolCo(getcurrent())
    thread_pool_submit_aio(pool, func, arg, thread_pool_co_cb, tpc)
    qemu_coroutine_yield()
    if tpc.exc is not None:
        raise tpc.exc
    return tpc.ret


def thread_pool_submit(pool: ThreadPool, func: Callable[[Any], int],
                       arg: Any) -> None:
    """Run ``func(arg)`` in a worker with no completion callback.
    QEMU: thread_pool_submit."""
    thread_pool_submit_aio(pool, func, arg, None, None)


def aio_get_thread_pool(ctx: AioContext) -> ThreadPool:
    """The context's pool, made on first use.  QEMU: aio_get_thread_pool."""
    pool = ctx.thread_pool
    if pool is None:
        pool = ctx.thread_pool = ThreadPool(ctx)
    return pool  # type: ignore[no-any-return]


def thread_pool_free(pool: ThreadPool) -> None:
    """Stop the workers (after in-flight requests are delivered).
    QEMU: thread_pool_free."""
    with pool.lock:
        n = pool.cur_threads
    for _ in range(n):
        pool.requests.put(_STOP)
    pool._gpool = None          # the host threads stay, for the next pool
    if pool.ctx.thread_pool is pool:
        pool.ctx.thread_pool = None
