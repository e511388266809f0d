"""The seeded scheduler on its own: one seed fixes every decision, the
``allowed`` set turns perturbations off, held thread-pool requests run one
at a time, virtual time jumps to the next timer."""
from __future__ import annotations

from collections import deque

import pytest

from gqemu.aio import (SCALE_NS, QEMU_CLOCK_VIRTUAL, aio_bh_new, aio_context_new,
                       aio_timer_new, aio_wait_while, qemu_bh_schedule, timer_mod)
from gqemu.sched import StressScheduler, VCLOCK_START_NS
from gqemu.stress import vclock
from gqemu.threadpool import ThreadPool, thread_pool_free, thread_pool_submit_aio
from gqemu.threadpool.pool import thread_pool_run_held


def _orders(seed, policy="uniform", allowed=None, n=8, rounds=20):
    ctx = aio_context_new()
    s = StressScheduler(ctx, seed, policy, allowed=allowed)
    out = []
    for _ in range(rounds):
        out.append(tuple(s.order_bhs(list(range(n)))))
        d = deque(range(n))
        s.order_completions(d)
        out.append(tuple(d))
    return out, s


@pytest.mark.parametrize("policy", ["uniform", "pct"])
def test_same_seed_same_decisions(policy):
    a, sa = _orders(7, policy)
    b, sb = _orders(7, policy)
    c, _ = _orders(8, policy)
    assert a == b and sa.fingerprint == sb.fingerprint
    assert a != c
    assert all(sorted(x) == list(range(8)) for x in a)      # permutations


def test_no_perturbations_allowed_is_the_normal_order():
    out, s = _orders(7, allowed=[])
    assert all(x == tuple(range(8)) for x in out)
    assert s.applied == [] and s.candidates > 0


def test_allowed_subset_applies_only_those():
    full, s = _orders(3)
    some = s.applied[:3]
    out, s2 = _orders(3, allowed=some)
    assert s2.applied == some
    assert sum(x != tuple(range(8)) for x in out) == 3


def test_pct_change_points():
    ctx = aio_context_new()
    s = StressScheduler(ctx, 1, "pct", pct_depth=4, pct_steps=100)
    assert len(s.change_points) == 3
    assert all(1 <= k <= 100 for k in s.change_points)
    with pytest.raises(ValueError):
        StressScheduler(ctx, 1, "random")


def _work(arg):
    arg.append(len(arg))
    return len(arg)


def test_held_requests_run_one_at_a_time_in_seeded_order():
    def run(seed):
        ctx = aio_context_new()
        pool = ThreadPool(ctx)
        s = StressScheduler(ctx, seed, run_held=thread_pool_run_held)
        ctx.sched = s
        log, done = [], []
        try:
            for i in range(6):
                thread_pool_submit_aio(pool, _work, log, lambda o, r: done.append((o, r)), i)
            assert len(s.held) == 6 and not log           # nothing ran yet
            aio_wait_while(ctx, lambda: len(done) < 6)
        finally:
            ctx.sched = None
            thread_pool_free(pool)
        # each worker saw the ones before it: they ran strictly one by one
        assert sorted(r for _, r in done) == list(range(1, 7))
        return done, s.fingerprint
    a, fa = run(11)
    b, fb = run(11)
    assert a == b and fa == fb
    orders = {tuple(o for o, _ in run(seed)[0]) for seed in range(8)}
    assert len(orders) > 1


def test_virtual_time_jumps_to_the_next_timer():
    ctx = aio_context_new()
    s = StressScheduler(ctx, 0)
    ctx.sched = s
    vclock.install(s)
    fired = []
    try:
        for ns in (5_000_000_000, 1_000, 3_000_000):   # 5 s, 1 us, 3 ms
            t = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS,
                              lambda o: fired.append((o, s.now_ns)), ns)
            timer_mod(t, s.now_ns + ns)
        aio_wait_while(ctx, lambda: len(fired) < 3)
    finally:
        ctx.sched = None
        vclock.uninstall(s)
    assert [o for o, _ in fired] == [1_000, 3_000_000, 5_000_000_000]
    for ns, at in fired:                       # fired at its deadline, not later
        assert VCLOCK_START_NS + ns <= at <= VCLOCK_START_NS + ns + 2


def test_bhs_run_in_the_scheduler_order():
    ctx = aio_context_new()
    s = StressScheduler(ctx, 5)
    ctx.sched = s
    ran = []
    try:
        bhs = [aio_bh_new(ctx, ran.append, i) for i in range(6)]
        for bh in bhs:
            qemu_bh_schedule(bh)
        expect = StressScheduler(aio_context_new(), 5).order_bhs(list(bhs))
        aio_wait_while(ctx, lambda: len(ran) < 6)
    finally:
        ctx.sched = None
    assert ran == [bh.opaque for bh in reversed(expect)]
