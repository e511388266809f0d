"""A stress run owns its AioContext (StressRun): many runs in one process,
failing ones included, leave nothing behind, and a run on another thread
is the same run."""
from __future__ import annotations

import gc
import threading

from gqemu import plant
from gqemu.aio import AioContext, qemu_get_aio_context
from gqemu.coroutine import Coroutine, thread_state
from gqemu.stress.engine import Options, StressRun, run_one


def live_contexts() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is AioContext)


def suspended_coroutines() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is Coroutine and o.entry is not None)


def test_sequential_runs_leave_no_state_behind():
    main = qemu_get_aio_context()
    sink = main.error_sink
    barging = Options(workload="runtime", plant=("comutex_barging",))
    run_one(0, barging)                               # warm up
    threads = threading.active_count()
    gc.collect()
    before = (live_contexts(), suspended_coroutines())
    failed = 0
    for seed in range(24):
        r = run_one(seed, barging if seed % 2 else Options(workload="runtime"))
        failed += not r.ok
        assert seed % 2 or r.ok, (seed, r.invariant, r.message)
    assert failed >= 2                                 # some runs did fail
    gc.collect()
    assert (live_contexts(), suspended_coroutines()) == before
    assert qemu_get_aio_context() is main and thread_state.ctx is main
    assert main.sched is None and main.sched_point is None
    assert main.clock_source is None and main.error_sink is sink
    assert not any(getattr(main.plant, n) for n in plant.NAMES)
    assert not plant.comutex_barging
    assert threading.active_count() <= threads + 1     # host threads reused


def test_stress_run_is_a_context_manager_owning_its_context():
    opts = Options(workload="runtime", plant=("comutex_barging",))
    main = qemu_get_aio_context()
    with StressRun(1, opts) as run:
        ctx = run.ctx
        assert qemu_get_aio_context() is ctx and ctx is not main
        assert ctx.plant.comutex_barging and not main.plant.comutex_barging
        assert ctx.sched is run.sched
        res = run.run()
    assert qemu_get_aio_context() is main
    assert ctx.sched is None and ctx.thread_pool is None
    assert res is run.result and res.requests > 0


def test_same_seed_on_another_thread_is_the_same_run():
    opts = Options(workload="block")
    here = run_one(3, opts)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run_one(3, opts)))
    t.start()
    t.join()
    there = box["r"]
    assert here.ok and there.ok, (there.invariant, there.message)
    assert (there.fingerprint, there.trace, there.steps) == \
        (here.fingerprint, here.trace, here.steps)
