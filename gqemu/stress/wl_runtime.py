"""Runtime workload: coroutines contending for CoMutex, CoRwlock and a
CoQueue channel, and thread-pool requests (submit_co, submit_aio with
callbacks, cancellation).

Invariants checked as the run goes:

- ``comutex_exclusion``: at most one holder of a CoMutex;
- ``comutex_fifo``: a CoMutex is handed to the coroutines that found it
  taken in the order they asked (QEMU >= 2.9 hand-off, no barging);
- ``corwlock_exclusion``: a writer excludes readers and other writers;
- ``coqueue_exactly_once``: every item put on the channel is taken once;
- ``completion_once``: every thread-pool callback runs exactly once, with
  the worker's result (or -ECANCELED when the request was cancelled);

and after drain, that every program ran to its end.  Each check calls the
lock functions' undecorated bodies, so no scheduling point falls between
the model's bookkeeping and the real operation.
"""
from __future__ import annotations

import errno
import random
from collections import deque
from typing import Any

from greenlet import getcurrent

from gqemu.aio import aio_co_wake, bdrv_aio_cancel_async
from gqemu.coroutine import (CoMutex, CoQueue, CoRwlock, qemu_co_mutex_lock,
                             qemu_co_mutex_unlock, qemu_co_queue_next,
                             qemu_co_queue_wait, qemu_co_rwlock_downgrade,
                             qemu_co_rwlock_rdlock, qemu_co_rwlock_unlock,
                             qemu_co_rwlock_upgrade, qemu_co_rwlock_wrlock,
                             qemu_co_sleep_ns, qemu_coroutine_yield)
from gqemu.stress.engine import CoroutineWorkload, Env, Options
from gqemu.threadpool import thread_pool_submit_aio, thread_pool_submit_co


def _raw(f: Any) -> Any:
    return getattr(f, "__wrapped__", f)


mutex_lock, mutex_unlock = _raw(qemu_co_mutex_lock), _raw(qemu_co_mutex_unlock)
rd_lock, wr_lock = _raw(qemu_co_rwlock_rdlock), _raw(qemu_co_rwlock_wrlock)
rw_unlock, rw_upgrade = _raw(qemu_co_rwlock_unlock), _raw(qemu_co_rwlock_upgrade)
rw_downgrade = _raw(qemu_co_rwlock_downgrade)

N_MUTEX = 2
N_RWLOCK = 2


def stress_work(arg: int) -> int:
    """The worker function of every thread-pool request.
    Context: worker thread.  Returns: a value the loop can check."""
    return (arg * 7919 + 13) % 100003


class ModelMutex:
    __slots__ = ("m", "holder", "queue")

    def __init__(self) -> None:
        self.m = CoMutex()
        self.holder: Any = None
        self.queue: deque[Any] = deque()


class ModelRwlock:
    __slots__ = ("lock", "readers", "writer")

    def __init__(self) -> None:
        self.lock = CoRwlock()
        self.readers = 0
        self.writer: Any = None


class Req:
    __slots__ = ("n", "ret", "co", "waiting", "expect", "cancelled")

    def __init__(self, co: Any, expect: int) -> None:
        self.n = 0
        self.ret = -errno.EINPROGRESS
        self.co = co
        self.waiting = False
        self.expect = expect
        self.cancelled = False


class RuntimeWorkload(CoroutineWorkload):
    name = "runtime"

    @classmethod
    def generate(cls, seed: int, opts: Options) -> dict[str, Any]:
        rng = random.Random("gqemu-work:runtime:%d" % seed)
        nprog = max(2, opts.depth)
        programs: list[list[list[Any]]] = [[] for _ in range(nprog)]
        for i in range(max(1, opts.requests)):
            p = programs[rng.randrange(nprog)]
            kind = rng.choice(("mutex", "mutex", "relock", "rd", "wr", "upgrade",
                               "downgrade", "pc", "co", "aio", "aio", "burst",
                               "sleep"))
            k = rng.randrange(3)
            if kind in ("mutex", "relock"):
                p.append([kind, rng.randrange(N_MUTEX), k])
            elif kind in ("rd", "wr", "upgrade", "downgrade"):
                p.append([kind, rng.randrange(N_RWLOCK), k])
            elif kind == "pc":
                p.append([kind, 1 + rng.randrange(3)])
            elif kind == "co":
                p.append([kind, rng.randrange(1000)])
            elif kind == "aio":
                p.append([kind, rng.randrange(1000), int(rng.random() < 0.25)])
            elif kind == "burst":
                p.append([kind, [rng.randrange(1000) for _ in range(2 + k)]])
            else:
                p.append([kind, rng.choice((0, 1000, 50000, 1000000))])
        return {"programs": [p for p in programs if p]}

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        super().__init__(env, spec)
        self.mutexes = [ModelMutex() for _ in range(N_MUTEX)]
        self.rwlocks = [ModelRwlock() for _ in range(N_RWLOCK)]
        self.chan: deque[int] = deque()
        self.chan_lock = CoMutex()
        self.chan_queue = CoQueue()
        self.next_item = 0
        self.taken: set[int] = set()
        self.finished = 0
        self.reqs: list[Req] = []
        self.names: dict[Any, str] = {}

    def finish(self) -> None:
        check = self.env.check
        check(self.finished == len(self.spec["programs"]), "program_finished",
              "%d of %d programs finished", self.finished, len(self.spec["programs"]))
        check(len(self.taken) == self.next_item and not self.chan,
              "coqueue_exactly_once", "%d items put, %d taken, %d left",
              self.next_item, len(self.taken), len(self.chan))
        for r in self.reqs:
            check(r.n == 1, "completion_once", "request completed %d times", r.n)

    # -- the program interpreter (runs in its coroutine) ---------------------

    def program_entry(self, arg: tuple[int, list[list[Any]]]) -> None:
        i, prog = arg
        self.names[getcurrent()] = "program %d" % i
        for j, op in enumerate(prog):
            self.trace.append([i, j, op[0]])
            getattr(self, "op_" + op[0])(*op[1:])
        self.running -= 1
        self.finished += 1

    def _steps(self, k: int) -> None:
        for _ in range(k):
            self.env.point("work")

    def _lock(self, mm: ModelMutex) -> None:
        me = getcurrent()
        self.env.point("qemu_co_mutex_lock")
        contended = mm.holder is not None or bool(mm.queue)
        if contended:
            mm.queue.append(me)
        mutex_lock(mm.m)
        check = self.env.check
        check(mm.holder is None, "comutex_exclusion",
              "%s took a CoMutex held by %s", self.names.get(me),
              self.names.get(mm.holder))
        if mm.queue:
            check(mm.queue[0] is me, "comutex_fifo",
                  "%s took the CoMutex ahead of %s, which waited first"
                  " (no FIFO hand-off)", self.names.get(me),
                  self.names.get(mm.queue[0]))
            mm.queue.popleft()
        mm.holder = me

    def _unlock(self, mm: ModelMutex) -> None:
        self.env.point("qemu_co_mutex_unlock")
        self.env.check(mm.holder is getcurrent(), "comutex_exclusion",
                       "unlock by a coroutine that does not hold the CoMutex")
        mm.holder = None
        mutex_unlock(mm.m)

    def op_mutex(self, m: int, k: int) -> None:
        mm = self.mutexes[m]
        self._lock(mm)
        self._steps(k)
        self._unlock(mm)

    def op_relock(self, m: int, k: int) -> None:
        mm = self.mutexes[m]
        for _ in range(2):
            self._lock(mm)
            self._steps(k)
            self._unlock(mm)

    def _rd_acquired(self, rw: ModelRwlock) -> None:
        self.env.check(rw.writer is None, "corwlock_exclusion",
                       "reader entered while a writer holds the CoRwlock")
        rw.readers += 1

    def _wr_acquired(self, rw: ModelRwlock) -> None:
        self.env.check(rw.writer is None and rw.readers == 0, "corwlock_exclusion",
                       "writer entered with %d readers and writer %s",
                       rw.readers, self.names.get(rw.writer))
        rw.writer = getcurrent()

    def _read_section(self, rw: ModelRwlock, k: int) -> None:
        self._rd_acquired(rw)
        self._steps(k)
        rw.readers -= 1

    def _write_section(self, rw: ModelRwlock, k: int) -> None:
        self._wr_acquired(rw)
        self._steps(k)
        rw.writer = None

    def op_rd(self, r: int, k: int) -> None:
        rw = self.rwlocks[r]
        self.env.point("qemu_co_rwlock_rdlock")
        rd_lock(rw.lock)
        self._read_section(rw, k)
        rw_unlock(rw.lock)

    def op_wr(self, r: int, k: int) -> None:
        rw = self.rwlocks[r]
        self.env.point("qemu_co_rwlock_wrlock")
        wr_lock(rw.lock)
        self._write_section(rw, k)
        rw_unlock(rw.lock)

    def op_upgrade(self, r: int, k: int) -> None:
        rw = self.rwlocks[r]
        self.env.point("qemu_co_rwlock_rdlock")
        rd_lock(rw.lock)
        self._read_section(rw, k)
        rw_upgrade(rw.lock)
        self._write_section(rw, k)
        rw_unlock(rw.lock)

    def op_downgrade(self, r: int, k: int) -> None:
        rw = self.rwlocks[r]
        self.env.point("qemu_co_rwlock_wrlock")
        wr_lock(rw.lock)
        self._write_section(rw, k)
        rw_downgrade(rw.lock)
        self._read_section(rw, k)
        rw_unlock(rw.lock)

    def op_pc(self, n: int) -> None:
        """Put ``n`` items on the channel, then take ``n`` (balanced, so the
        whole workload cannot deadlock)."""
        for _ in range(n):
            qemu_co_mutex_lock(self.chan_lock)
            self.chan.append(self.next_item)
            self.next_item += 1
            qemu_co_queue_next(self.chan_queue)
            qemu_co_mutex_unlock(self.chan_lock)
            self.env.point("produce")
        for _ in range(n):
            qemu_co_mutex_lock(self.chan_lock)
            while not self.chan:
                qemu_co_queue_wait(self.chan_queue, self.chan_lock)
            item = self.chan.popleft()
            self.env.check(item not in self.taken, "coqueue_exactly_once",
                           "item %d taken twice", item)
            self.taken.add(item)
            qemu_co_mutex_unlock(self.chan_lock)

    def op_sleep(self, ns: int) -> None:
        qemu_co_sleep_ns(ns)

    def op_co(self, v: int) -> None:
        self.env.requests += 1
        ret = thread_pool_submit_co(self.env.pool, stress_work, v)
        self.env.check(ret == stress_work(v), "completion_result",
                       "submit_co(%d) returned %d, expected %d", v, ret, stress_work(v))

    def _submit(self, v: int) -> tuple[Req, Any]:
        self.env.requests += 1
        r = Req(getcurrent(), stress_work(v))
        self.reqs.append(r)
        acb = thread_pool_submit_aio(self.env.pool, stress_work, v, self._req_cb, r)
        return r, acb

    def _req_cb(self, r: Req, ret: int) -> None:
        r.n += 1
        self.env.check(r.n == 1, "completion_once",
                       "thread-pool callback delivered %d times", r.n)
        ok = ret == r.expect or (r.cancelled and ret == -errno.ECANCELED)
        self.env.check(ok, "completion_result", "callback ret %d, expected %d",
                       ret, r.expect)
        r.ret = ret
        if r.waiting:
            r.waiting = False
            aio_co_wake(r.co)

    def _wait(self, r: Req) -> None:
        while r.n == 0:
            r.waiting = True
            qemu_coroutine_yield()

    def op_aio(self, v: int, cancel: int) -> None:
        r, acb = self._submit(v)
        if cancel:
            self.env.point("cancel")
            if r.n == 0:
                r.cancelled = True
                bdrv_aio_cancel_async(acb)
        self._wait(r)

    def op_burst(self, vals: list[int]) -> None:
        rs = [self._submit(v)[0] for v in vals]
        for r in rs:
            self._wait(r)


WORKLOAD = RuntimeWorkload
