"""Property tests: random enter/yield/wake/mutex programs against a shadow
model of QEMU's caller-chain and hand-off rules."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gqemu.coroutine import (CoMutex, CoroutineError, qemu_co_mutex_lock,
                             qemu_co_mutex_unlock, qemu_coroutine_create,
                             qemu_coroutine_enter, qemu_coroutine_yield,
                             qemu_coroutine_self)
from gqemu.aio import aio_co_wake

N = 4
op = st.one_of(st.just(("yield",)), st.tuples(st.just("enter"), st.integers(0, N - 1)))
programs = st.lists(st.lists(op, max_size=5), min_size=N, max_size=N)
drivers = st.lists(st.integers(0, N - 1), max_size=12)


class Shadow:
    """QEMU semantics as a plain interpreter with an explicit caller chain."""

    def __init__(self, progs):
        self.progs = progs
        self.pc = [0] * N
        self.entered = [False] * N
        self.done = [False] * N
        self.log = []

    def enter(self, j):
        if self.entered[j]:
            self.log.append(("error", j))
            return "error"
        if self.done[j]:
            return "skip"
        self.entered[j] = True
        while self.pc[j] < len(self.progs[j]):
            o = self.progs[j][self.pc[j]]
            self.pc[j] += 1
            self.log.append((j, o))
            if o[0] == "yield":
                self.entered[j] = False
                self.log.append(("back-from", j))
                return "yield"
            r = self.enter(o[1])
            if r == "error":
                self.entered[j] = False
                self.done[j] = True
                return "error"
        self.entered[j] = False
        self.done[j] = True
        self.log.append(("end", j))
        return "end"


@pytest.mark.allow_loop_leaks      # drivers may stop with coroutines parked
@settings(max_examples=150, deadline=None)
@given(programs, drivers)
def test_enter_yield_matches_caller_chain_model(progs, driver):
    shadow = Shadow(progs)
    real_log = []
    done = [False] * N
    cos = [None] * N

    def entry(j):
        for o in progs[j]:
            real_log.append((j, o))
            if o[0] == "yield":
                real_log.append(("back-from", j))
                qemu_coroutine_yield()
            else:
                k = o[1]
                if not done[k]:
                    qemu_coroutine_enter(cos[k])
        done[j] = True
        real_log.append(("end", j))

    for j in range(N):
        cos[j] = qemu_coroutine_create(entry, j)
    for j in driver:
        r = shadow.enter(j)
        if r == "skip":
            continue
        try:
            qemu_coroutine_enter(cos[j])
        except CoroutineError as e:
            assert "re-entered recursively" in str(e)
            real_log.append(("error", None))
            # The error unwinds everything up to here: both sides stop.
            break
        if r == "error":
            break
    shadow_log = [x if x[0] != "error" else ("error", None) for x in shadow.log]
    assert real_log == shadow_log[:len(real_log)]
    if not any(x[0] == "error" for x in shadow.log):
        assert real_log == shadow_log


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=2, max_size=6),
       st.lists(st.integers(0, 5), max_size=40))
def test_comutex_fifo_handoff_and_exclusion(yields, driver):
    """Each coroutine: lock, yield k times, unlock.  The driver enters
    coroutines that are runnable (not waiting for the lock).  Owners must
    follow the order in which the lock was asked for, and never overlap."""
    m = CoMutex()
    n = len(yields)
    holder = [None]
    acquired = []
    asked = []
    state = ["new"] * n   # new -> asked -> holding -> done

    def entry(i):
        state[i] = "asked"
        asked.append(i)
        qemu_co_mutex_lock(m)
        assert holder[0] is None, "two holders"
        holder[0] = i
        state[i] = "holding"
        acquired.append(i)
        for _ in range(yields[i]):
            qemu_coroutine_yield()
        holder[0] = None
        qemu_co_mutex_unlock(m)
        state[i] = "done"

    cos = [qemu_coroutine_create(entry, i) for i in range(n)]
    for pick in driver:
        i = pick % n
        if state[i] == "new" or (state[i] == "holding" and cos[i].caller is None
                                  and yields[i] > 0):
            qemu_coroutine_enter(cos[i])
    # Finish: keep entering holders until everyone is done.
    for _ in range(10 * n * 3):
        for i in range(n):
            if state[i] == "new" or state[i] == "holding":
                qemu_coroutine_enter(cos[i])
    assert state == ["done"] * n
    assert acquired == asked, "ownership must follow request order (FIFO)"
    assert not m.locked and holder[0] is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=8))
def test_wake_inside_coroutine_runs_after_waker_yields(order):
    """aio_co_wake from a coroutine defers the wakee to the waker's yield,
    in wake order."""
    sleepers = []
    log = []
    for k in range(4):
        co = qemu_coroutine_create(lambda k: (qemu_coroutine_yield(), log.append(k)), k)
        qemu_coroutine_enter(co)
        sleepers.append(co)
    woken = []

    def waker(_):
        for k in order:
            if k not in woken:
                woken.append(k)
                aio_co_wake(sleepers[k])
        log.append("waker-yield")
        qemu_coroutine_yield()

    w = qemu_coroutine_create(waker)
    qemu_coroutine_enter(w)
    assert log == ["waker-yield"] + woken
    qemu_coroutine_enter(w)
    for k in range(4):
        if k not in woken:
            qemu_coroutine_enter(sleepers[k])
