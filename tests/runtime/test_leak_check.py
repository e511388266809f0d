"""The autouse ``no_loop_leaks`` check (tests/conftest.py) sees each kind of
leftover, and stops seeing it once it is gone."""
from __future__ import annotations

import threading

from gqemu.aio import (QEMU_CLOCK_REALTIME, SCALE_NS, aio_bh_schedule_oneshot, aio_co_wake,
                       aio_poll, aio_timer_new, aio_wait_while, qemu_bh_schedule,
                       qemu_get_aio_context, timer_del, timer_mod)
from gqemu.coroutine import qemu_coroutine_create, qemu_coroutine_enter, qemu_coroutine_yield
from gqemu.threadpool import aio_get_thread_pool, thread_pool_submit_aio


def test_scheduled_bh(leak_check):
    ctx = qemu_get_aio_context()
    ran = []
    aio_bh_schedule_oneshot(ctx, ran.append, 1)
    found = leak_check()
    assert any("1 scheduled bottom half" in f and "append" in f for f in found), found
    aio_poll(ctx, False)
    assert ran == [1] and leak_check() == []


def test_armed_timer(leak_check):
    ctx = qemu_get_aio_context()
    ts = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS, lambda _: None, None)
    timer_mod(ts, 1 << 62)
    assert any("1 armed timer" in f for f in leak_check())
    timer_del(ts)
    assert leak_check() == []


def test_request_in_the_thread_pool(leak_check):
    ctx = qemu_get_aio_context()
    go = threading.Event()
    done = []
    thread_pool_submit_aio(aio_get_thread_pool(ctx), lambda _: go.wait() and 0, None,
                           lambda _o, ret: done.append(ret), None)
    assert any("ctx.external == 1" in f for f in leak_check())
    go.set()
    aio_wait_while(ctx, lambda: not done)
    assert done == [0] and leak_check() == []


def test_parked_coroutine(leak_check):
    def entry(_):
        qemu_coroutine_yield()

    co = qemu_coroutine_create(entry, None)
    qemu_coroutine_enter(co)
    found = leak_check()
    assert any("1 coroutine(s) parked mid-entry, running test_parked_coroutine.<locals>.entry"
               in f for f in found), found
    aio_co_wake(co)
    aio_poll(qemu_get_aio_context(), False)
    assert leak_check() == []


def test_open_file(leak_check, tmp_path):
    p = tmp_path / "img"
    p.write_bytes(b"x")
    with open(p, "rb"):
        assert leak_check() == ["file(s) left open: %s" % p]
    assert leak_check() == []


def test_idle_completion_bh_is_not_a_leak(leak_check):
    """The pool's completion BH reschedules itself before each callback (as
    QEMU's does) and may stay scheduled with nothing left to deliver."""
    ctx = qemu_get_aio_context()
    pool = aio_get_thread_pool(ctx)
    qemu_bh_schedule(pool.completion_bh)
    assert not pool.done and leak_check() == []
    aio_poll(ctx, False)
