"""Trace events: the one table, glob enabling, QEMU log lines and Chrome JSON."""
from __future__ import annotations

import io
import json
import os
import re

import pytest

from gqemu import trace
from gqemu.aio import aio_context_new, aio_wait_while
from gqemu.coroutine import qemu_coroutine_create, qemu_coroutine_enter
from gqemu.threadpool import ThreadPool, thread_pool_free, thread_pool_submit_co


@pytest.fixture(autouse=True)
def clean_trace():
    trace.trace_reset()
    yield
    trace.trace_close_output()
    trace.trace_reset()


def test_formats_follow_printf():
    ev = trace.TraceEvent("x", "IDE PIO rd @ 0x%x (%s); val 0x%02x; bus %p")
    obj = object()
    assert ev.format((0x1f7, "Status", 0x50, obj)) == \
        "IDE PIO rd @ 0x1f7 (Status); val 0x50; bus 0x%x" % id(obj)
    ev2 = trace.TraceEvent("y", "sector=%" "u nsectors=%d ret %" "lld")
    assert ev2.format((100, 1, -5)) == "sector=100 nsectors=1 ret -5"


def test_disabled_events_emit_nothing_and_enabling_by_glob():
    out = io.StringIO()
    fa = trace.trace_event("test_alpha_one", "a %d")
    fb = trace.trace_event("test_beta_one", "b %d")
    trace.trace_init_output(out, "log")
    fa(1)
    fb(1)
    assert out.getvalue() == ""
    trace.trace_enable_events("test_alpha_*")
    assert fa.enabled and not fb.enabled
    fa(2)
    fb(2)
    trace.trace_enable_events("test_*,-test_alpha_*")
    fa(3)
    fb(3)
    assert out.getvalue() == "test_alpha_one a 2\ntest_beta_one b 3\n"


def test_pattern_set_before_declaration_applies():
    out = io.StringIO()
    trace.trace_init_output(out, "log")
    trace.trace_enable_events("test_late_*")
    late = trace.trace_event("test_late_event", "v %x")
    late(255)
    assert out.getvalue() == "test_late_event v ff\n"


def test_log_timestamps_match_qemu_msg_timestamp_format():
    out = io.StringIO()
    trace.trace_init_output(out, "log", timestamps=True)
    trace.trace_enable_events("test_ts")
    trace.trace_event("test_ts", "val 0x%02x")(0x50)
    assert re.fullmatch(r"%d@\d+\.\d{6}:test_ts val 0x50\n" % os.getpid(),
                        out.getvalue())


def test_runtime_events_and_chrome_json_tracks():
    out = io.StringIO()
    trace.trace_init_output(out, "json")
    trace.trace_enable_events("qemu_coroutine_*")
    trace.trace_enable_events("thread_pool_*")
    ctx = aio_context_new()
    pool = ThreadPool(ctx)
    done = []
    co = qemu_coroutine_create(lambda _: done.append(thread_pool_submit_co(pool, lambda a: 0, None)))
    qemu_coroutine_enter(co)
    aio_wait_while(ctx, lambda: not done)
    thread_pool_free(pool)
    trace.trace_close_output()
    events = json.loads(out.getvalue())
    names = [e["name"] for e in events if e["ph"] == "i"]
    for want in ("qemu_coroutine_enter", "thread_pool_submit", "qemu_coroutine_yield",
                 "thread_pool_complete", "qemu_coroutine_terminate"):
        assert want in names
    assert names.index("thread_pool_submit") < names.index("thread_pool_complete")
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert "main loop" in tracks and any(t.startswith("coroutine") for t in tracks)


def test_bad_format_name_is_refused():
    with pytest.raises(ValueError):
        trace.trace_init_output(io.StringIO(), "xml")
