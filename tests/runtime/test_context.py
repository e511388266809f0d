"""The explicit AioContext: each context has its own loop thread, clock,
planted-bug switches and sinks; a node runs in its opener's context; a
whole block stack runs on a non-main thread while the main thread's
context is busy too (what the KVM vCPU thread and Dask workers need)."""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from gqemu import plant
from gqemu.aio import (QEMU_CLOCK_VIRTUAL, aio_bh_new, aio_context_new,
                       aio_poll, aio_set_clock_source, aio_wait_while,
                       qemu_bh_schedule, qemu_clock_get_ns, qemu_get_aio_context,
                       qemu_get_current_aio_context)
from gqemu.block import (blk_get_aio_context, blk_new_open, blk_pread,
                         blk_pwrite, blk_unref)
from gqemu.block.driver import bdrv_get_aio_context, error_report, set_error_sink
from gqemu.coroutine import (CoMutex, qemu_co_mutex_lock, qemu_co_mutex_unlock,
                             qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_coroutine_entered, qemu_coroutine_yield)

MiB = 1 << 20


def run_in_thread(fn):
    """Run ``fn()`` on a new OS thread; return its result or re-raise."""
    box = {}

    def main():
        try:
            box["ret"] = fn()
        except BaseException as e:      # handed to the test
            box["exc"] = e
    t = threading.Thread(target=main)
    t.start()
    return t, box


def join(t, box):
    t.join()
    if "exc" in box:
        raise box["exc"]
    return box.get("ret")


def qemu_io_cmd(qemu_io, fmt, path, cmd):
    p = subprocess.run([qemu_io, "-f", fmt, "-c", cmd, path],
                       capture_output=True, text=True, check=True)
    assert "fail" not in p.stdout.lower() + p.stderr.lower(), p.stdout + p.stderr
    return p.stdout


def test_each_thread_has_its_own_context():
    main = qemu_get_aio_context()
    assert main is qemu_get_current_aio_context()
    assert main.loop_thread == threading.get_ident()
    t, box = run_in_thread(lambda: (qemu_get_aio_context(), threading.get_ident()))
    other, ident = join(t, box)
    assert other is not main and other.loop_thread == ident
    ctx = aio_context_new()
    with ctx:
        assert qemu_get_aio_context() is ctx
        with main:
            assert qemu_get_aio_context() is main
        assert qemu_get_aio_context() is ctx
    assert qemu_get_aio_context() is main


def test_bh_scheduled_from_main_runs_on_the_contexts_loop_thread():
    ran = []
    ready = threading.Event()

    def loop():
        with aio_context_new() as ctx:
            box["ctx"] = ctx
            ctx.external_inc()          # something will notify from outside
            ready.set()
            aio_wait_while(ctx, lambda: not ran)
            ctx.external_dec()
            return threading.get_ident()
    box = {}
    t, tbox = run_in_thread(loop)
    ready.wait()
    bh = aio_bh_new(box["ctx"], lambda _: ran.append(threading.get_ident()), None)
    qemu_bh_schedule(bh)                # from a thread that is not its loop's
    ident = join(t, tbox)
    assert ran == [ident] and ident != threading.get_ident()


def test_clock_plant_and_error_sink_belong_to_the_context():
    main = qemu_get_aio_context()
    ctx = aio_context_new()
    got = []
    with ctx:
        aio_set_clock_source(lambda clock: 42)
        plant.plant("comutex_barging")
        set_error_sink(got.append)
        assert qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) == 42
        assert plant.comutex_barging
        error_report("inside")
    assert ctx.plant.comutex_barging and not main.plant.comutex_barging
    assert not plant.comutex_barging
    assert qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) != 42
    assert main.clock_source is None and main.error_sink is not got.append
    assert got == ["inside\n"]


def test_planted_barging_only_in_its_context():
    # The 2.8 unfair mutex lets the unlocker take the lock straight back,
    # ahead of the waiter it woke; FIFO hand-off (the default) does not.
    def order(ctx):
        with ctx:
            m, log = CoMutex(), []

            def holder(_):
                qemu_co_mutex_lock(m)
                qemu_coroutine_yield()
                qemu_co_mutex_unlock(m)
                qemu_co_mutex_lock(m)           # straight back
                log.append("holder")
                qemu_co_mutex_unlock(m)

            def waiter(_):
                qemu_co_mutex_lock(m)
                log.append("waiter")
                qemu_co_mutex_unlock(m)
            h = qemu_coroutine_create(holder)
            qemu_coroutine_enter(h)
            qemu_coroutine_enter(qemu_coroutine_create(waiter))
            qemu_coroutine_enter(h)
            aio_wait_while(ctx, lambda: len(log) < 2)
            return log
    barging = aio_context_new()
    plant.plant("comutex_barging", switches=barging.plant)
    assert order(aio_context_new()) == ["waiter", "holder"]
    assert order(barging) == ["holder", "waiter"]


def test_node_inherits_its_openers_context(tmp_path, qemu_img):
    base = tmp_path / "base.raw"
    top = tmp_path / "top.qcow2"
    base.write_bytes(b"\0" * MiB)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", str(base), str(top)], check=True)
    ctx = aio_context_new()
    blk = blk_new_open(str(top), {"format": "qcow2"}, ctx=ctx)
    try:
        bs = blk.root.bs
        nodes = [bs, bs.file.bs, bs.backing.bs, bs.backing.bs.file.bs]
        assert all(bdrv_get_aio_context(n) is ctx for n in nodes)
        assert blk_get_aio_context(blk) is ctx
        with ctx:                          # default: the current context
            blk2 = blk_new_open(str(base), {"format": "raw", "readonly": "on"})
        assert blk_get_aio_context(blk2) is ctx
        blk_unref(blk2)
    finally:
        with ctx:
            blk_unref(blk)


@pytest.mark.timeout(60)
def test_block_stack_on_a_non_main_thread(tmp_path, qemu_img, qemu_io):
    """blk_new_open + blk_pread/blk_pwrite on raw and qcow2, on a thread
    with its own context, while the main thread does I/O in its own."""
    raw = tmp_path / "t.raw"
    qcow = tmp_path / "t.qcow2"
    mine = tmp_path / "main.raw"
    raw.write_bytes(b"\0" * (4 * MiB))
    mine.write_bytes(b"\0" * (4 * MiB))
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(qcow), "4M"],
                   check=True)
    qemu_io_cmd(qemu_io, "raw", str(raw), "write -P 0x11 0 64k")
    qemu_io_cmd(qemu_io, "qcow2", str(qcow), "write -P 0x22 1M 64k")
    go = threading.Event()

    def worker():
        ctx = aio_context_new()
        out = {"ctx": ctx, "ident": threading.get_ident()}
        go.wait()
        for fmt, path, pat, off in (("raw", raw, 0x11, 0), ("qcow2", qcow, 0x22, MiB)):
            blk = blk_new_open(str(path), {"format": fmt}, ctx=ctx)
            try:
                out[fmt + "_ctx"] = blk_get_aio_context(blk)
                out[fmt + "_read"] = blk_pread(blk, off, 65536) == bytes([pat]) * 65536
                for i in range(8):         # overlapping, unaligned writes
                    assert blk_pwrite(blk, 2 * MiB + i * 4000, bytes([0x40 + i]) * 5000) == 5000
            finally:
                blk_unref(blk)
        return out
    t, box = run_in_thread(worker)
    main_ctx = qemu_get_aio_context()
    blk = blk_new_open(str(mine), {"format": "raw"})
    try:
        go.set()
        n = 0
        while t.is_alive() or n < 8:       # the main context busy meanwhile
            assert blk_pwrite(blk, n * 512, bytes([n & 0xff]) * 512) == 512
            assert blk_pread(blk, n * 512, 512) == bytes([n & 0xff]) * 512
            n += 1
        assert blk_get_aio_context(blk) is main_ctx
    finally:
        blk_unref(blk)
    out = join(t, box)
    ctx = out["ctx"]
    assert ctx is not main_ctx and ctx.loop_thread == out["ident"]
    assert out["raw_ctx"] is ctx and out["qcow2_ctx"] is ctx
    assert out["raw_read"] and out["qcow2_read"]
    assert ctx.external == 0 and main_ctx.external == 0
    # Real qemu-io sees what the thread wrote (the last write wins).
    for fmt, path in (("raw", raw), ("qcow2", qcow)):
        qemu_io_cmd(qemu_io, fmt, str(path), "read -P 0x40 %d 4000" % (2 * MiB))
        qemu_io_cmd(qemu_io, fmt, str(path), "read -P 0x47 %d 5000" % (2 * MiB + 28000))
        subprocess.run([qemu_img, "check", "-q", "-f", fmt, str(path)], check=True) \
            if fmt == "qcow2" else None
    assert os.path.getsize(raw) == 4 * MiB
    aio_poll(main_ctx, False)


def test_discard_unwinds_a_suspended_coroutine_now():
    """qemu_coroutine_discard runs the finally blocks at once, in the
    caller; what the coroutine wakes while unwinding is dropped."""
    from gqemu.coroutine import CoQueue, qemu_co_queue_next, qemu_co_queue_wait, \
        qemu_coroutine_discard
    log, q = [], CoQueue()

    def sleeper(_):
        qemu_co_queue_wait(q)
        log.append("woken")

    def victim(_):
        try:
            qemu_coroutine_yield()
            log.append("resumed")
        finally:
            log.append("finally")
            qemu_co_queue_next(q)          # a wake-up while unwinding
    s = qemu_coroutine_create(sleeper)
    qemu_coroutine_enter(s)
    v = qemu_coroutine_create(victim)
    qemu_coroutine_enter(v)
    qemu_coroutine_discard(v)
    assert log == ["finally"] and v.entry is None
    assert not qemu_coroutine_entered(v)
    qemu_coroutine_discard(s)               # the dropped wake-up's target
    assert log == ["finally"] and s.entry is None
    reused = qemu_coroutine_create(lambda _: log.append("reused"))
    assert reused in (s, v)                 # back in the pool, usable
    qemu_coroutine_enter(reused)
    assert log == ["finally", "reused"]


def test_waking_another_threads_contextless_coroutine_is_an_error():
    """A coroutine entered without a context cannot be scheduled from a
    foreign thread: a clear CoroutineError, not a greenlet switch error."""
    from gqemu.coroutine import CoroutineError, aio_co_wake
    co = qemu_coroutine_create(lambda _: qemu_coroutine_yield())
    qemu_coroutine_enter(co)
    t, box = run_in_thread(lambda: (aio_context_new(), aio_co_wake(co)))
    with pytest.raises(CoroutineError, match="belongs to another thread"):
        join(t, box)
    qemu_coroutine_enter(co)                # still fine on its own thread
