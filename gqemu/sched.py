"""The seeded stress scheduler: one seed fixes every ordering decision.

Installed as ``AioContext.sched`` (and, for ``coroutine_fn`` scheduling
points, as ``AioContext.sched_point``), a
:class:`StressScheduler` decides

- the order ready bottom halves run in (``order_bhs``),
- the order finished thread-pool requests are delivered
  (``order_completions``),
- when each submitted thread-pool request runs: requests are *held*
  (``thread_pool_submit``) and released one at a time, each run to the end
  in a real worker thread before the loop goes on, so the workers are
  deterministic (``idle`` and the release points in ``order_bhs``),
- whether a coroutine yields and is rescheduled at a scheduling point
  (``sched_point``), and which parked coroutine runs next,
- virtual time: the clock stands still and jumps to the next timer
  deadline when the loop would otherwise sleep (``now_ns``).

Every decision has a *default* (what the normal scheduler would do: BHs
and completions in their natural order, no extra yields, held requests
released first in, first out, all at once).  A decision that differs from
its default is a *perturbation*; perturbations are numbered in the order
they arise, and ``allowed`` (a set of those numbers, or None for all)
says which ones are applied.  The shrinker replays a failing seed with
fewer allowed perturbations; random numbers are drawn whether or not a
perturbation is applied, so the rest of the schedule shifts as little as
possible.

Policies:

- ``uniform``: every decision is drawn uniformly (a yield with probability
  ``yield_prob`` at each scheduling point, a random permutation of the BHs,
  a random subset of the held requests released at each poll).
- ``pct``: probabilistic concurrency testing (Burckhardt et al., ASPLOS
  2010).  Every coroutine, BH and request gets a random priority on first
  sight; the highest-priority ready entity always runs next, and at
  ``pct_depth - 1`` random steps the running coroutine's priority drops
  below every other, which finds any bug of depth d with probability at
  least 1/(n k^(d-1)).

Must not import: anything in gqemu but gqemu.coroutine, gqemu.aio,
gqemu.trace and gqemu.plant (it is part of the runtime layer).  The
thread-pool function that runs a held request is handed in by the caller.
"""
from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Iterable, Optional

from greenlet import getcurrent

from gqemu.aio import (AioContext, aio_bh_new, aio_bh_schedule_oneshot,
                       aio_compute_timeout, qemu_bh_schedule)
from gqemu.coroutine import Coroutine, qemu_aio_coroutine_enter, qemu_coroutine_yield

__all__ = ["StressScheduler", "POLICIES", "VCLOCK_START_NS"]

POLICIES = ("uniform", "pct")
VCLOCK_START_NS = 1_000_000_000

# coroutine_fn calls that are not scheduling points.  Coroutines are
# cooperative: code between two real yields is atomic, and block/io.c
# relies on it from tracked_request_begin() (and mark_request_serialising())
# to the end of wait_serialising_requests(), and CoQueue callers from their
# condition check to the queueing in qemu_co_queue_wait().  None of these
# functions can yield before that point, so a yield at their entry is an
# interleaving QEMU cannot produce.  (Found by this scheduler: a lost
# CoQueue wake-up, and bdrv_aligned_pwritev's "assert(!waited ||
# !req->serialising)" failing when a read parked between its tracked
# request's start and its wait.)
NO_YIELD = frozenset({"qemu_co_queue_wait", "wait_serialising_requests",
                      "bdrv_aligned_preadv", "bdrv_aligned_pwritev",
                      "bdrv_co_do_zero_pwritev"})

# Decision kinds, mixed into the schedule fingerprint.
K_YIELD, K_PICK, K_BHS, K_DONE, K_RELEASE, K_IDLE, K_TIME = range(1, 8)
_MASK = (1 << 64) - 1


class StressScheduler:
    """Owns the ordering decisions of one AioContext for one seeded run.

    ``run_held(pool, req)`` runs one held thread-pool request in a worker
    and waits for it (gqemu.threadpool.pool.thread_pool_run_held).
    """

    def __init__(self, ctx: AioContext, seed: int, policy: str = "uniform", *,
                 run_held: Optional[Callable[[Any, Any], None]] = None,
                 yield_prob: float = 0.25, hold_prob: float = 0.5,
                 pct_depth: int = 3, pct_steps: int = 2000,
                 allowed: Optional[Iterable[int]] = None) -> None:
        if policy not in POLICIES:
            raise ValueError("unknown policy '%s' (known: %s)"
                             % (policy, ", ".join(POLICIES)))
        self.ctx = ctx
        self.policy = policy
        self.pct = policy == "pct"
        self.rng = random.Random("gqemu-sched:%d" % seed)
        self.run_held = run_held
        self.yield_prob = yield_prob
        self.hold_prob = hold_prob
        self.allowed = None if allowed is None else frozenset(allowed)
        self.parked: deque[Coroutine] = deque()
        self.seen: set[Any] = set()     # coroutines met (for leak checks)
        self.held: list[tuple[Any, Any]] = []
        self.bh = aio_bh_new(ctx, self._run_parked, None)
        self.now_ns = VCLOCK_START_NS
        # Counters: decisions taken, perturbations that arose, applied.
        self.steps = 0
        self.points = 0
        self.candidates = 0
        self.applied: list[int] = []
        self.fingerprint = 0
        self.released = 0
        # Optional watcher of the workload: on_submit(pool, req) is called
        # in the submitting coroutine, on_run(req) after a held request ran.
        self.observer: Any = None
        # PCT state: priorities by entity, the change points.
        self._prio: dict[Any, tuple[Any, float]] = {}
        self._low = 0.0
        self.change_points: frozenset[int] = frozenset()
        if self.pct and pct_depth > 1:
            n = max(pct_steps, pct_depth)
            self.change_points = frozenset(
                self.rng.sample(range(1, n + 1), pct_depth - 1))

    # -- bookkeeping ---------------------------------------------------------

    def _decide(self, kind: int, default: Any, choice: Any) -> Any:
        """Apply ``choice`` if it equals the default or is an allowed
        perturbation; otherwise the default.  Logs the outcome."""
        self.steps += 1
        out = default
        if choice != default:
            j = self.candidates
            self.candidates += 1
            if self.allowed is None or j in self.allowed:
                self.applied.append(j)
                out = choice
        v = out if isinstance(out, int) else hash(tuple(out))
        self.fingerprint = ((self.fingerprint * 1000003) ^ (kind << 56) ^ v) & _MASK
        return out

    def _priority(self, ent: Any, tag: Any = None) -> float:
        """PCT priority of ``ent``; a pooled coroutine reused for another
        entry (``tag`` differs) is a new entity."""
        got = self._prio.get(ent)
        if got is None or got[0] is not tag:
            got = (tag, self.rng.random())
            self._prio[ent] = got
        return got[1]

    def _co_priority(self, co: Any) -> float:
        return self._priority(co, getattr(co, "entry_arg", None))

    def _lower(self, co: Any) -> None:
        self._low -= 1.0
        self._prio[co] = (getattr(co, "entry_arg", None), self._low)

    def _pick(self, n: int, priority: Callable[[int], float]) -> int:
        """Which of ``n`` (>= 1) entities the policy would run next: the
        highest ``priority(k)`` under PCT, else a uniform draw."""
        if n == 1:
            return 0
        if self.pct:
            return max(range(n), key=priority)
        return self.rng.randrange(n)

    def busy(self) -> bool:
        """Whether parked coroutines or held requests remain."""
        return bool(self.parked or self.held)

    @property
    def perturbations(self) -> int:
        return len(self.applied)

    # -- coroutines ----------------------------------------------------------

    def spawn(self, co: Coroutine) -> None:
        """Start ``co`` (not yet entered) when the scheduler picks it."""
        co.scheduled = "stress_spawn"
        self.seen.add(co)
        self.parked.append(co)
        qemu_bh_schedule(self.bh)

    def sched_point(self, name: str = "") -> None:
        """A point where the running coroutine may yield and be
        rescheduled.  Context: coroutine."""
        if name in NO_YIELD:
            return
        co = getcurrent()
        self.seen.add(co)
        self.points += 1
        if self.pct:
            if self.points in self.change_points:
                self._lower(co)
            mine = self._co_priority(co)
            want = any(self._co_priority(p) > mine for p in self.parked)
        else:
            want = self.rng.random() < self.yield_prob
        if self._decide(K_YIELD, False, want):
            co.scheduled = "stress_sched_point"
            self.parked.append(co)
            qemu_bh_schedule(self.bh)
            qemu_coroutine_yield()

    def _run_parked(self, _opaque: Any) -> None:
        parked = self.parked
        if not parked:
            return
        i = self._decide(K_PICK, 0,
                         self._pick(len(parked), lambda k: self._co_priority(parked[k])))
        co = parked[i]
        del parked[i]
        if parked:
            qemu_bh_schedule(self.bh)
        co.scheduled = None
        qemu_aio_coroutine_enter(self.ctx, co)

    # -- decisions for higher layers (vCPU stepping) -------------------------

    def choose(self, items: list[Any]) -> int:
        """Which of ``items`` (e.g. runnable vCPUs) goes next; the default
        is the first.  PCT picks the highest priority."""
        if len(items) < 2:
            return 0
        return self._decide(K_PICK, 0,
                            self._pick(len(items), lambda k: self._priority(items[k])))

    def flip(self, p: float) -> bool:
        """A yes/no decision that is yes with probability ``p`` (default
        no), e.g. "let the loop run before the next vCPU step"."""
        return self._decide(K_YIELD, False, self.rng.random() < p)

    # -- hooks called by aio.py and threadpool/pool.py ------------------------

    def _permute(self, kind: int, items: list[Any], first_last: bool) -> list[Any]:
        # PCT puts the highest priority where it runs first: at the end of
        # the list when ``first_last`` (BHs), at the start otherwise.
        n = len(items)
        ident = tuple(range(n))
        if self.pct:
            sign = 1.0 if first_last else -1.0
            perm = tuple(sorted(ident, key=lambda k: sign * self._priority(items[k])))
        elif self.rng.random() < 0.5:
            shuffled = list(ident)
            self.rng.shuffle(shuffled)
            perm = tuple(shuffled)
        else:
            perm = ident
        perm = self._decide(kind, ident, perm)
        return [items[k] for k in perm] if perm != ident else items

    def order_bhs(self, bhs: list[Any]) -> list[Any]:
        """Reorder the ready BHs (aio_bh_poll runs the result from its end)
        and release held thread-pool requests that run now."""
        if self.held:
            self._release_some()
        if len(bhs) < 2:
            return bhs
        return self._permute(K_BHS, bhs, True)

    def order_completions(self, done: deque[Any]) -> None:
        """Reorder, in place, finished requests awaiting their callbacks."""
        if len(done) < 2:
            return
        lst = self._permute(K_DONE, list(done), False)
        done.clear()
        done.extend(lst)

    def thread_pool_submit(self, pool: Any, req: Any) -> None:
        """Hold a submitted request until the scheduler releases it."""
        self.held.append((pool, req))
        self.seen.add(getcurrent())
        if self.observer is not None:
            self.observer.on_submit(pool, req)

    def _release(self, i: int) -> None:
        pool, req = self.held.pop(i)
        self.released += 1
        if self.run_held is None:
            raise RuntimeError("StressScheduler: no run_held function")
        self.run_held(pool, req)
        if self.observer is not None:
            self.observer.on_run(req)

    def _release_some(self) -> None:
        # Default: release everything, first in first out (eager workers).
        held = self.held
        n = len(held)
        if self.pct:
            top = max((self._co_priority(p) for p in self.parked), default=-1e9)
            keep = tuple(k for k in range(n) if self._priority(held[k][1]) < top)
        else:
            keep = tuple(k for k in range(n) if self.rng.random() < self.hold_prob)
        keep = self._decide(K_RELEASE, (), keep)
        order = [k for k in range(n) if k not in keep]
        if not self.pct and len(order) > 1 and self.rng.random() < 0.5:
            shuffled = order[:]
            self.rng.shuffle(shuffled)
            order = self._decide(K_RELEASE, tuple(order), tuple(shuffled))
        elif self.pct and len(order) > 1:
            by = tuple(sorted(order, key=lambda k: -self._priority(held[k][1])))
            order = self._decide(K_RELEASE, tuple(order), by)
        chosen = [held[k] for k in order]
        for item in chosen:
            self._release(self.held.index(item))

    def idle(self, ctx: AioContext) -> bool:
        """The loop would sleep: release one held request, or jump the
        virtual clock to the next timer.  Returns False when nothing is
        left that the scheduler could release."""
        held = self.held
        if held:
            i = self._pick(len(held), lambda k: self._priority(held[k][1]))
            self._release(self._decide(K_IDLE, 0, i))
            return True
        timeout = aio_compute_timeout(ctx)
        if timeout >= 0:
            step = timeout + 1
            self.now_ns += step
            self.fingerprint = ((self.fingerprint * 1000003) ^ (K_TIME << 56)
                                ^ self.now_ns) & _MASK
            aio_bh_schedule_oneshot(ctx, _noop, None)
            return True
        return False


def _noop(_opaque: Any) -> None:
    pass
