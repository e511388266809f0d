"""What a coroutine switch costs in Python calls, counted with
``sys.setprofile`` (deterministic; the speed itself is ``gqemu bench
coroutine``, never timed here): an enter+yield round trip runs
qemu_coroutine_enter and qemu_coroutine_yield and nothing else, and a pooled
coroutine's create+enter+terminate runs no helper besides its entry."""
from __future__ import annotations

import gqemu.coroutine as coroutine_mod
from gqemu.coroutine import (aio_co_wake, qemu_coroutine_create,
                             qemu_coroutine_enter, qemu_coroutine_yield)

from .callcount import c_calls
from .callcount import python_calls as calls


def test_enter_yield_round_trip_calls_nothing_else():
    def yield_loop(_: object) -> None:
        while True:
            qemu_coroutine_yield()
    co = qemu_coroutine_create(yield_loop)
    qemu_coroutine_enter(co)
    assert calls(lambda: qemu_coroutine_enter(co)) == [
        "<lambda>", "qemu_coroutine_enter", "qemu_coroutine_yield"]
    assert co.caller is None                  # suspended, not entered
    coroutine_mod.qemu_coroutine_discard(co)


def test_pooled_lifecycle_calls_only_the_entry():
    ran = []

    def entry(arg: object) -> None:
        ran.append(arg)
    qemu_coroutine_enter(qemu_coroutine_create(entry, 0))     # one in the pool
    got = calls(lambda: qemu_coroutine_enter(qemu_coroutine_create(entry, 1)))
    assert got == ["<lambda>", "qemu_coroutine_create", "qemu_coroutine_enter", "entry"]
    assert ran == [0, 1]
    assert coroutine_mod.coroutine_pool_size() >= 1          # went back to the pool


def _suspended() -> "coroutine_mod.Coroutine":
    def yield_loop(_: object) -> None:
        while True:
            qemu_coroutine_yield()
    co = qemu_coroutine_create(yield_loop)
    qemu_coroutine_enter(co)
    return co


def test_round_trip_asks_for_the_current_greenlet_twice():
    # enter records its caller, yield finds itself: one getcurrent() each,
    # as QEMU reads its thread-local ``current`` once in each.
    co = _suspended()
    assert sorted(c_calls(lambda: qemu_coroutine_enter(co))) == [
        "getcurrent", "getcurrent", "switch", "switch"]
    coroutine_mod.qemu_coroutine_discard(co)


def test_waking_from_outside_asks_for_the_current_greenlet_once():
    # aio_co_wake outside coroutines (a completion BH's) looks up the
    # calling greenlet once and hands it to qemu_aio_coroutine_enter.
    co = _suspended()
    got = c_calls(lambda: aio_co_wake(co))
    assert got.count("getcurrent") == 2, got      # aio_co_enter's + the yield's
    assert got.count("switch") == 2
    coroutine_mod.qemu_coroutine_discard(co)
