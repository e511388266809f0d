"""What a coroutine switch costs in Python calls, counted with
``sys.setprofile`` (deterministic; the speed itself is ``gqemu bench
coroutine``, never timed here): an enter+yield round trip runs
qemu_coroutine_enter and qemu_coroutine_yield and nothing else, and a pooled
coroutine's create+enter+terminate runs no helper besides its entry."""
from __future__ import annotations

import gqemu.coroutine as coroutine_mod
from gqemu.coroutine import (qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_coroutine_yield)

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
