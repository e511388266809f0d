"""``gqemu bench threadpool``: thread-pool round trips against gevent's own
``ThreadPool.spawn(...).get()``, at depth 1 and with 64 requests in flight.

A third anchor is the floor of any design that runs Python in a worker
thread: one bare ``threading.Thread`` taking a no-op from a
``queue.SimpleQueue`` and releasing a lock the caller blocks on (no gevent,
no coroutine, no completion BH).  Each round trip is two cross-thread
wake-ups plus the GIL hand-offs they imply; on a VM whose idle vCPUs halt,
the wake-ups dominate, and they bound the faithful block path's QD1 latency.

QEMU: tests/unit/test-thread-pool.c; the completion BH design of
util/thread-pool.c is what the depth-64 figure measures.
"""
from __future__ import annotations

import argparse
import queue
import threading
import time
from typing import Any

from gqemu.aio import aio_context_new, aio_wait_while
from gqemu.bench.common import RATIO_HEADER, progress, progress_done, ratio_row, table
from gqemu.coroutine import qemu_coroutine_create, qemu_coroutine_enter
from gqemu.threadpool import ThreadPool, thread_pool_free, thread_pool_submit_co


def _noop(_: Any) -> int:
    return 0


def _ours(pool: ThreadPool, depth: int, per: int) -> float:
    left = [depth]

    def entry(_: Any) -> None:
        submit = thread_pool_submit_co
        for _i in range(per):
            submit(pool, _noop, None)
        left[0] -= 1

    t0 = time.perf_counter()
    for _ in range(depth):
        qemu_coroutine_enter(qemu_coroutine_create(entry))
    aio_wait_while(pool.ctx, lambda: left[0] > 0)
    return depth * per / (time.perf_counter() - t0)


def _gevent(gpool: Any, depth: int, per: int) -> float:
    import gevent

    def worker() -> None:
        spawn = gpool.spawn
        for _i in range(per):
            spawn(_noop, None).get()

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(depth)])
    return depth * per / (time.perf_counter() - t0)


def _bare_thread(per: int) -> float:
    """No-op round trips through one bare worker thread: the floor."""
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    done = threading.Lock()
    done.acquire()

    def worker() -> None:
        while True:
            func = requests.get()
            if func is None:
                return
            func(None)
            done.release()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        put, wait = requests.put, done.acquire
        put(_noop)
        wait()
        t0 = time.perf_counter()
        for _i in range(per):
            put(_noop)
            wait()
        return per / (time.perf_counter() - t0)
    finally:
        requests.put(None)
        t.join()


def run_bench(args: argparse.Namespace) -> int:
    from gevent.threadpool import ThreadPool as GeventThreadPool
    n = 2000 if args.quick else 20000
    ctx = aio_context_new()
    pool = ThreadPool(ctx)
    gpool = GeventThreadPool(64)
    rows = []
    try:
        # Warm both pools so thread start-up is not measured.
        _ours(pool, 64, 10)
        _gevent(gpool, 64, 10)
        best = {"o1": 0.0, "g1": 0.0, "o64": 0.0, "g64": 0.0, "b1": 0.0}
        for i in range(3):
            progress("threadpool: round %d/3" % (i + 1))
            best["o1"] = max(best["o1"], _ours(pool, 1, n))
            best["g1"] = max(best["g1"], _gevent(gpool, 1, n))
            best["b1"] = max(best["b1"], _bare_thread(n))
            best["o64"] = max(best["o64"], _ours(pool, 64, max(1, 4 * n // 64)))
            best["g64"] = max(best["g64"], _gevent(gpool, 64, max(1, 4 * n // 64)))
        progress_done()
        lat_o, lat_g = 1e6 / best["o1"], 1e6 / best["g1"]
        rows.append(["submit_co no-op round trip", "%.1f us" % lat_o,
                     "spawn().get()", "%.1f us" % lat_g, "%.2fx" % (lat_o / lat_g),
                     "%s (target <= 1.20x)" % ("met" if lat_o / lat_g <= 1.2 else "MISSED")])
        lat_b = 1e6 / best["b1"]
        rows.append(["submit_co no-op round trip", "%.1f us" % lat_o,
                     "bare thread + lock (floor)", "%.1f us" % lat_b,
                     "%.2fx" % (lat_o / lat_b), ""])
        rows.append(ratio_row("completions/s, 64 in flight", best["o64"],
                              "64 greenlets spawn().get()", best["g64"], "/s", 2.0))
    finally:
        thread_pool_free(pool)
        gpool.kill()
    table("gqemu bench threadpool (best of 3)", RATIO_HEADER, rows)
    return 0
