"""One seeded schedule of one workload, with its invariants.

A :class:`StressRun` is a context manager that owns everything a run
changes: a fresh AioContext, current on the calling thread while the run
is entered, carrying the run's :class:`~gqemu.sched.StressScheduler` (BH
and completion order, held thread-pool requests, ``coroutine_fn``
scheduling points, virtual time), its planted bugs and its error sink
(error_report() lines go to ``RunResult.errors``).  Nothing process-wide
is patched, so runs may follow each other (or run on several threads) in
one process.  :func:`run_one` is ``with StressRun(...) as run: run.run()``:
it runs the workload until it finishes, drains, checks the end-of-run
invariants, and returns a :class:`RunResult`.  The same seed, options,
workload spec and ``allowed`` perturbations give the same run, decision
for decision: ``RunResult.fingerprint`` hashes every decision taken.

A failed run may leave coroutines suspended and work queued.  On leaving,
the run unwinds the coroutines it left suspended (their ``finally`` blocks
run then, inside the dead context, instead of whenever the garbage
collector finds them), stops its thread pool and closes its context; the
next run starts on a fresh one and nothing is kept.
"""
from __future__ import annotations

import gc
import importlib
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from gqemu import plant
from gqemu.aio import (AioContext, AioDeadlockError, aio_context_new,
                       aio_context_unref, aio_poll, aio_wait_while)
from gqemu.coroutine import (Coroutine, CoroutineError, qemu_coroutine_create,
                             qemu_coroutine_discard, qemu_in_coroutine)
from gqemu.sched import StressScheduler
from gqemu.stress import vclock
from gqemu.stress.invariants import Checker, InvariantViolation
from gqemu.threadpool import aio_get_thread_pool, thread_pool_free
from gqemu.threadpool.pool import THREAD_DONE, thread_pool_run_held

__all__ = ["Options", "RunResult", "Env", "Workload", "StressRun", "run_one",
           "WORKLOADS", "workload_class"]

# name -> module defining WORKLOAD (a Workload subclass); imported lazily.
WORKLOADS = {
    "runtime": "gqemu.stress.wl_runtime",
    "block": "gqemu.stress.wl_block",
    "ide": "gqemu.stress.wl_ide",
    "virtio": "gqemu.stress.wl_virtio",
}


@dataclass
class Options:
    """What a seed is run with (everything but the seed itself)."""

    workload: str = "runtime"
    policy: str = "uniform"
    requests: int = 24          # requests (operations) per schedule
    depth: int = 6              # coroutines / requests in flight
    vcpus: int = 2
    faults: float = 0.0         # probability of a fault per injectable event
    fmt: str = "raw"            # block and ide workloads: raw or qcow2
    yield_prob: float = 0.25
    pct_depth: int = 3
    plant: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plant"] = list(self.plant)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Options":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "plant" in kw:
            kw["plant"] = tuple(kw["plant"])
        return cls(**kw)


@dataclass
class RunResult:
    seed: int
    ok: bool = True
    invariant: str = ""
    message: str = ""
    where: str = ""
    requests: int = 0
    faults: int = 0
    checks: int = 0
    steps: int = 0
    points: int = 0
    candidates: int = 0
    applied: list[int] = field(default_factory=list)
    fingerprint: int = 0
    elapsed: float = 0.0
    spec: Any = None
    trace: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)    # error_report() lines


class Env:
    """What a workload runs against: the context, pool, scheduler, checker."""

    def __init__(self, ctx: Any, sched: StressScheduler, opts: Options,
                 seed: int) -> None:
        self.ctx = ctx
        self.pool = aio_get_thread_pool(ctx)
        self.sched = sched
        self.opts = opts
        self.seed = seed
        self.checker = Checker()
        self.check = self.checker.check
        self.requests = 0
        self.faults = 0
        self.installed = True
        # Coroutines that were live before this run (another test's, say)
        # are not this run's leaks; the thorough drain scan skips them.
        self.thorough = seed % 16 == 0 or not ctx.stress
        self.preexisting = ({id(c) for c in live_coroutines()}
                            if self.thorough else set())

    def point(self, name: str = "") -> None:
        """An explicit scheduling point (inside a coroutine)."""
        if self.installed and qemu_in_coroutine():
            self.sched.sched_point(name)


class Workload:
    """Base of the workloads.  A spec is a JSON-able dict whose
    ``programs`` list (one program per coroutine or vCPU, each a list of
    operations) is what the shrinker cuts down."""

    name = ""
    # About how many scheduling points a request makes (PCT's k estimate:
    # its change points are drawn among the first requests * this many).
    points_per_request = 3

    @classmethod
    def generate(cls, seed: int, opts: Options) -> dict[str, Any]:
        raise NotImplementedError

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        self.env = env
        self.spec = spec
        self.trace: list[Any] = []      # what a reproducer file records

    def run(self) -> None:
        """Start the workload and run the loop until it is done."""
        self.start()
        aio_wait_while(self.env.ctx, lambda: not self.done())

    def start(self) -> None:
        raise NotImplementedError

    def done(self) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """End-of-run invariants, after drain."""

    def close(self, failed: bool) -> None:
        """Release files and devices.  After a failure (``failed``) the
        loop may hold work that will never run: release without polling."""


class CoroutineWorkload(Workload):
    """A workload whose programs each run in a coroutine of their own:
    ``program_entry((i, program))``, which decrements ``running`` when the
    program ends."""

    def __init__(self, env: Env, spec: dict[str, Any]) -> None:
        super().__init__(env, spec)
        self.running = 0

    def start(self) -> None:
        for i, prog in enumerate(self.spec["programs"]):
            self.running += 1
            self.env.sched.spawn(qemu_coroutine_create(self.program_entry, (i, prog)))

    def done(self) -> bool:
        return self.running == 0

    def program_entry(self, arg: tuple[int, list[Any]]) -> None:
        raise NotImplementedError


def workload_class(name: str) -> type[Workload]:
    try:
        mod = importlib.import_module(WORKLOADS[name])
    except KeyError:
        raise ValueError("unknown workload '%s' (known: %s)"
                         % (name, ", ".join(WORKLOADS))) from None
    return mod.WORKLOAD  # type: ignore[no-any-return]


def live_coroutines() -> list[Coroutine]:
    """Coroutines created or running but not finished (pooled ones have no
    entry)."""
    return [o for o in gc.get_objects()
            if type(o) is Coroutine and o.entry is not None]


def _drain(env: Env) -> None:
    ctx, sched = env.ctx, env.sched
    aio_wait_while(ctx, lambda: sched.busy() or ctx.external > 0)
    while aio_poll(ctx, False):
        pass
    check = env.check
    check(ctx.external == 0, "drain_in_flight",
          "%d thread-pool requests still in flight after drain", ctx.external)
    check(not sched.parked and not sched.held, "drain_in_flight",
          "scheduler still holds work after drain")
    left = [c for c in sched.seen if c.entry is not None]
    if not left and env.thorough:      # the thorough (slower) scan
        left = [c for c in live_coroutines() if id(c) not in env.preexisting]
    check(not left, "drain_live_coroutine",
          "%d coroutine(s) left after drain: %s", len(left),
          ", ".join(repr(c) for c in left[:3]))


def _where(exc: BaseException) -> str:
    tb = [f for f in traceback.extract_tb(exc.__traceback__)
          if not f.filename.endswith("stress/invariants.py")]
    if not tb:
        return ""
    f = tb[-1]
    return "%s:%s in %s" % (f.filename.rsplit("/gqemu/", 1)[-1], f.lineno, f.name)


class StressRun:
    """One seeded run, as a context manager owning its AioContext.

    ``with StressRun(seed, opts) as run: res = run.run()``.  Entering makes
    a fresh AioContext current on this thread, with the scheduler (when
    ``install``), virtual time, planted bugs and error sink installed on
    it; leaving discards it, whatever happened.  ``spec`` overrides the
    generated workload (for shrinking and reproducers); ``allowed`` limits
    the perturbations.  ``install=False`` runs the same workload on the
    normal scheduler (real concurrent workers, natural BH order, real
    time; the bench's anchor): the scheduler object then only starts the
    workload's coroutines.
    """

    def __init__(self, seed: int, opts: Options,
                 spec: Optional[dict[str, Any]] = None,
                 allowed: Optional[Any] = None, install: bool = True) -> None:
        self.cls = workload_class(opts.workload)
        if spec is None:
            spec = self.cls.generate(seed, opts)
        self.seed, self.opts, self.allowed, self.install = seed, opts, allowed, install
        self.result = RunResult(seed=seed, spec=spec)
        self.ctx: Optional[AioContext] = None
        self.sched: Optional[StressScheduler] = None
        self.env: Optional[Env] = None
        self.wl: Optional[Workload] = None
        self.failed = False

    def __enter__(self) -> "StressRun":
        opts, res = self.opts, self.result
        ctx = self.ctx = aio_context_new()
        ctx.__enter__()
        for name in opts.plant:
            plant.plant(name, switches=ctx.plant)
        ctx.error_sink = lambda msg: res.errors.append(msg.rstrip("\n"))
        sched = self.sched = StressScheduler(
            ctx, self.seed, opts.policy, run_held=thread_pool_run_held,
            yield_prob=opts.yield_prob, pct_depth=opts.pct_depth,
            pct_steps=max(10, opts.requests * self.cls.points_per_request),
            allowed=self.allowed)
        self.env = Env(ctx, sched, opts, self.seed)
        self.env.installed = self.install
        if self.install:
            vclock.install(sched)
            ctx.sched = sched
            if ctx.stress:
                ctx.sched_point = sched.sched_point
        return self

    def run(self) -> RunResult:
        """Run the workload, drain, check; the result (also ``.result``)."""
        env, res = self.env, self.result
        assert env is not None and self.ctx is not None
        t0 = time.perf_counter()
        try:
            self.wl = self.cls(env, res.spec)
            self.wl.run()
            _drain(env)
            self.wl.finish()
            self.ctx.sched = None
            self.wl.close(False)
        except InvariantViolation as e:
            self._fail(e.name, e.message, _where(e))
        except AioDeadlockError as e:
            self._fail("deadlock", str(e), "")
        except CoroutineError as e:
            self._fail("coroutine_misuse", str(e), _where(e))
        except Exception as e:   # a crash anywhere in the stack is a finding
            self._fail("exception", "%s: %s" % (type(e).__name__, e), _where(e))
        finally:
            res.elapsed = time.perf_counter() - t0
        return res

    def _fail(self, invariant: str, message: str, where: str) -> None:
        self.failed = True
        res = self.result
        res.invariant, res.message, res.where = invariant, message, where

    def __exit__(self, *exc: Any) -> None:
        ctx, sched, env, wl, res = self.ctx, self.sched, self.env, self.wl, self.result
        assert ctx is not None and sched is not None and env is not None
        failed = self.failed or exc[0] is not None
        ctx.sched = None
        ctx.sched_point = None
        if wl is not None:
            res.trace = wl.trace
            if failed:
                try:
                    wl.close(True)
                except Exception:   # best effort after a failure
                    pass
        if failed:
            _discard_leftovers(ctx, sched, env)
        ctx.__exit__(None, None, None)
        if ctx.thread_pool is not None:
            thread_pool_free(ctx.thread_pool)
        vclock.uninstall(sched)
        aio_context_unref(ctx)
        res.ok = not failed
        res.requests = env.requests
        res.faults = env.faults
        res.checks = env.checker.checks
        res.steps = sched.steps
        res.points = sched.points
        res.candidates = sched.candidates
        res.applied = list(sched.applied)
        res.fingerprint = sched.fingerprint


def _discard_leftovers(ctx: AioContext, sched: StressScheduler, env: Env) -> None:
    """Unwind the coroutines a failed run left suspended, and forget the
    thread-pool requests the scheduler still held (never run)."""
    for _pool, req in sched.held:
        req.state = THREAD_DONE             # never run
    sched.held.clear()
    sched.parked.clear()
    ctx.scheduled_coroutines.clear()
    mine = {c for c in sched.seen if type(c) is Coroutine}
    if env.thorough:
        mine.update(c for c in live_coroutines() if id(c) not in env.preexisting)
    else:
        mine.update(c for c in live_coroutines() if c.ctx is ctx)
    for co in mine:
        if co.entry is not None and co.caller is None:
            qemu_coroutine_discard(co)
    sched.seen.clear()


def run_one(seed: int, opts: Options, spec: Optional[dict[str, Any]] = None,
            allowed: Optional[Any] = None, install: bool = True) -> RunResult:
    """Run ``seed`` once (see :class:`StressRun`)."""
    with StressRun(seed, opts, spec, allowed, install) as run:
        run.run()
    return run.result
