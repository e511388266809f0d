"""One seeded schedule of one workload, with its invariants.

:func:`run_one` builds a :class:`~gqemu.sched.StressScheduler` from the
seed, installs it on the main AioContext (BH and completion order, held
thread-pool requests, ``coroutine_fn`` scheduling points, virtual time),
runs the workload until it finishes, drains, checks the end-of-run
invariants, and returns a :class:`RunResult`.  The same seed, options,
workload spec and ``allowed`` perturbations give the same run, decision
for decision: ``RunResult.fingerprint`` hashes every decision taken.

A failed run may leave coroutines suspended and work queued; the engine
then retires the whole AioContext (and keeps what it references alive, so
no suspended greenlet is ever collected) and the next run starts on a
fresh one.
"""
from __future__ import annotations

import gc
import importlib
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from gqemu import aio, coroutine, plant
from gqemu.aio import AioDeadlockError, aio_poll, aio_wait_while, qemu_get_aio_context
from gqemu.coroutine import (Coroutine, CoroutineError, qemu_coroutine_create,
                             qemu_in_coroutine, set_sched_point)
from gqemu.sched import StressScheduler
from gqemu.stress import vclock
from gqemu.stress.invariants import Checker, InvariantViolation
from gqemu.threadpool import aio_get_thread_pool, thread_pool_free
from gqemu.threadpool.pool import thread_pool_run_held

__all__ = ["Options", "RunResult", "Env", "Workload", "run_one", "WORKLOADS",
           "workload_class"]

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
        self.thorough = seed % 16 == 0 or not coroutine.STRESS
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


# Everything a failed run left behind, kept alive on purpose.
_graveyard: list[Any] = []
_stranded: set[int] = set()


def live_coroutines() -> list[Coroutine]:
    """Coroutines created or running but not finished (pooled ones have no
    entry), except those stranded by earlier failed runs."""
    return [o for o in gc.get_objects()
            if type(o) is Coroutine and o.entry is not None
            and id(o) not in _stranded]


def _retire_context(ctx: Any, sched: StressScheduler, keep: list[Any]) -> None:
    """Abandon ``ctx`` after a failure; the next run gets a fresh one.

    Whoever still holds the old context (a test fixture, a device) finds
    it quiet: the scheduler's parking BH is unscheduled, the coroutines the
    failed run left scheduled are dropped, and the requests it still held
    no longer count as in flight (so a later wait on it reports a deadlock
    instead of hanging)."""
    for co in live_coroutines():
        _stranded.add(id(co))
        keep.append(co)
    _graveyard.append((ctx, keep))
    sched.bh.scheduled = False
    ctx._bh_list = [bh for bh in ctx._bh_list if bh is not sched.bh]
    ctx.scheduled_coroutines.clear()
    for pool, _req in sched.held:
        ctx.external_dec()
        with pool.lock:
            pool.queued -= 1
    sched.held.clear()
    sched.parked.clear()
    if ctx.thread_pool is not None:
        thread_pool_free(ctx.thread_pool)
    aio.qemu_aio_context_discard(ctx)


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


def run_one(seed: int, opts: Options, spec: Optional[dict[str, Any]] = None,
            allowed: Optional[Any] = None, install: bool = True) -> RunResult:
    """Run ``seed`` once.  ``spec`` overrides the generated workload (for
    shrinking and reproducers); ``allowed`` limits the perturbations.
    ``install=False`` runs the same workload on the normal scheduler (real
    concurrent workers, natural BH order, real time; the bench's anchor):
    the scheduler object then only starts the workload's coroutines."""
    cls = workload_class(opts.workload)
    if spec is None:
        spec = cls.generate(seed, opts)
    res = RunResult(seed=seed, spec=spec)
    plant.clear()
    for name in opts.plant:
        plant.plant(name)
    ctx = qemu_get_aio_context()
    sched = StressScheduler(ctx, seed, opts.policy, run_held=thread_pool_run_held,
                            yield_prob=opts.yield_prob, pct_depth=opts.pct_depth,
                            pct_steps=max(10, opts.requests * cls.points_per_request),
                            allowed=allowed)
    env = Env(ctx, sched, opts, seed)
    env.installed = install
    wl: Optional[Workload] = None
    t0 = time.perf_counter()
    if install:
        vclock.install(sched)
        ctx.sched = sched
        set_sched_point(sched.sched_point if coroutine.STRESS else None)
    failed = False
    from gqemu.block.driver import set_error_sink
    old_sink = set_error_sink(lambda msg: res.errors.append(msg.rstrip("\n")))
    try:
        wl = cls(env, spec)
        wl.run()
        _drain(env)
        wl.finish()
        ctx.sched = None
        wl.close(False)
    except InvariantViolation as e:
        failed = True
        res.invariant, res.message = e.name, e.message
        res.where = _where(e)
    except AioDeadlockError as e:
        failed = True
        res.invariant, res.message = "deadlock", str(e)
    except CoroutineError as e:
        failed = True
        res.invariant, res.message = "coroutine_misuse", str(e)
        res.where = _where(e)
    except Exception as e:   # a crash anywhere in the stack is a finding
        failed = True
        res.invariant = "exception"
        res.message = "%s: %s" % (type(e).__name__, e)
        res.where = _where(e)
    finally:
        if install:
            set_sched_point(None)
            ctx.sched = None
            vclock.uninstall()
        plant.clear()
        set_error_sink(old_sink)
        if wl is not None:
            res.trace = wl.trace
            if failed:
                try:
                    wl.close(True)
                except Exception:   # best effort after a failure
                    pass
        if failed:
            _retire_context(ctx, sched, [sched, wl, env, list(sched.parked),
                                         list(sched.held)])
    res.ok = not failed
    res.elapsed = time.perf_counter() - t0
    res.requests = env.requests
    res.faults = env.faults
    res.checks = env.checker.checks
    res.steps = sched.steps
    res.points = sched.points
    res.candidates = sched.candidates
    res.applied = list(sched.applied)
    res.fingerprint = sched.fingerprint
    return res
