"""Shared fixtures.

Interop tests need QEMU's own tools, and some tests the shared reference
data.  Locally a missing ``qemu-img``/``qemu-io``/``shared/`` piece skips
them; under ``CI=true`` it fails them, so a CI machine that lost its
``qemu-utils`` cannot go green by skipping.

Every test that passes must also leave the main loop as it found it
(``no_loop_leaks``, autouse): no scheduled bottom half, no armed timer, no
scheduled or parked coroutine, no request in the thread pool, and no image
file descriptor left open.  A test that needs otherwise says so with
``@pytest.mark.allow_loop_leaks``.
"""
from __future__ import annotations

import os
import shutil
import weakref
from pathlib import Path

from typing import Any

import pytest

from gqemu.coroutine import Coroutine

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFDATA = SHARED / "refdata"
SEED_DIR = SHARED / "seed"


def _missing(msg: str,
             ci_hint: str = "the README's test command provides it under CI") -> None:
    """Skip locally, fail under CI: CI must never go green by skipping."""
    if os.environ.get("CI") == "true":
        pytest.fail("%s (%s)" % (msg, ci_hint))
    pytest.skip(msg)


def _need_tool(name: str, package: str = "Debian package qemu-utils") -> str:
    path = shutil.which(name)
    if not path:
        _missing("%s is not installed (%s)" % (name, package))
    return path  # type: ignore[return-value]


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """Path of the real ``qemu-img``."""
    return _need_tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io() -> str:
    """Path of the real ``qemu-io``."""
    return _need_tool("qemu-io")


@pytest.fixture(scope="session")
def qemu_system() -> str:
    """Path of the real ``qemu-system-x86_64`` (scripts/test installs it)."""
    return _need_tool("qemu-system-x86_64", "Debian package qemu-system-x86")


@pytest.fixture(scope="session")
def kvm() -> None:
    """/dev/kvm, for the KVM accelerator's tests: they skip on a machine
    without it, but CI's machine has it, so there they fail instead."""
    if not os.path.exists("/dev/kvm"):
        _missing("/dev/kvm is absent on this machine", "CI's machine runs KVM")


@pytest.fixture(scope="session")
def nasm() -> str:
    """Path of ``nasm`` (scripts/test installs it)."""
    return _need_tool("nasm", "Debian package nasm")


@pytest.fixture(scope="session")
def gqemu_io_exe() -> str:
    """Path of the installed ``gqemu-io`` console script."""
    return _need_tool("gqemu-io", "pip install -e .")


@pytest.fixture(scope="session")
def refdata() -> Path:
    """``../shared/refdata`` next to the project root."""
    if not REFDATA.is_dir():
        _missing("shared/refdata is missing next to the project")
    return REFDATA


@pytest.fixture(scope="session")
def seed_text() -> str:
    """The seed's GDB backtraces (``../shared/seed``)."""
    files = sorted(SEED_DIR.glob("*.txt")) if SEED_DIR.is_dir() else []
    if not files:
        _missing("shared/seed is missing next to the project")
    return files[0].read_text(encoding="utf-8")


# ------------------------------------------------------------ leak check

_coroutines: "weakref.WeakSet[Coroutine]" = weakref.WeakSet()
_coroutine_init = Coroutine.__init__


def _tracked_init(self: Coroutine, *args: Any, **kwargs: Any) -> None:
    _coroutine_init(self, *args, **kwargs)
    _coroutines.add(self)


Coroutine.__init__ = _tracked_init      # type: ignore[method-assign]
_reported: "weakref.WeakSet[Coroutine]" = weakref.WeakSet()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_loop_leaks: skip the no_loop_leaks check")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,  # type: ignore[no-untyped-def]
                              call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._gqemu_call_passed = rep.passed     # type: ignore[attr-defined]


def _open_files() -> dict[int, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/")) \
                and os.path.isfile(target):
            out[int(fd)] = target
    return out


def loop_leaks(before_fds: dict[int, str]) -> list[str]:
    """What the main loop, the thread pool and the coroutines still hold."""
    from gqemu.aio import _main_ctx  # noqa: PLC0415 (only if a test made one)
    from gqemu.coroutine import qemu_in_coroutine
    found = []
    if qemu_in_coroutine():
        found.append("the test ended inside a coroutine")
    ctx = _main_ctx
    if ctx is not None:
        pool = ctx.thread_pool
        # the pool's completion BH reschedules itself before each callback
        # (as QEMU's does), so it may be left scheduled with nothing to do:
        # the pool check below covers it
        idle_bh = pool.completion_bh if pool is not None and not pool.done else None
        bhs = [bh for bh in ctx._bh_list if bh.scheduled and not bh.deleted]
        bhs += list(ctx._ts_queue)
        bhs = [bh for bh in bhs if bh is not idle_bh]
        if bhs:
            found.append("%d scheduled bottom half(s): %s"
                         % (len(bhs), ", ".join(sorted({getattr(bh.cb, "__name__", "?")
                                                         for bh in bhs}))))
        timers = [ts for _e, key, ts in ctx._timers if ts._key == key and ts.expire_time >= 0]
        if timers:
            found.append("%d armed timer(s): %s" % (
                len(timers), ", ".join(sorted({getattr(t.cb, "__name__", "?") for t in timers}))))
        if ctx.scheduled_coroutines:
            found.append("%d coroutine(s) scheduled on the context"
                         % len(ctx.scheduled_coroutines))
        if ctx.external:
            found.append("ctx.external == %d (requests still in flight)" % ctx.external)
        if pool is not None and (pool.queued or pool.done):
            found.append("thread pool not idle: %d queued, %d done but not delivered"
                         % (pool.queued, len(pool.done)))
    parked = [co for co in list(_coroutines)
              if co and co.entry is not None and co not in _reported]
    if parked:
        _reported.update(parked)
        entries = sorted({getattr(co.entry, "__qualname__", repr(co.entry)) for co in parked})
        found.append("%d coroutine(s) parked mid-entry, running %s"
                     % (len(parked), ", ".join(entries[:3] + ["..."] * (len(entries) > 3))))
    fds = {fd: t for fd, t in _open_files().items() if before_fds.get(fd) != t}
    if fds:
        found.append("file(s) left open: %s" % ", ".join(sorted(set(fds.values()))))
    return found


def _close_aio_engines() -> None:
    """Close the main context's io_uring ring and Linux AIO context, which
    (as in QEMU) live as long as the context: the next test's loop should
    not poll a ring an earlier test made (tests/block/test_request_cost.py
    counts the Python calls of a request)."""
    from gqemu.aio import _main_ctx
    ctx = _main_ctx
    if ctx is None or ctx.external:
        return
    for s in (ctx.linux_io_uring, ctx.linux_aio):
        if s is not None:
            s.close()


def _reset_loop() -> None:
    """Forget what a leaking test left, so the next test starts clean."""
    from gqemu.aio import _main_ctx
    ctx = _main_ctx
    if ctx is None:
        return
    for bh in ctx._bh_list:
        bh.scheduled = False
    ctx._bh_list = []
    ctx._ts_queue.clear()
    for _e, _k, ts in ctx._timers:
        ts.expire_time = -1
    ctx._timers.clear()
    ctx.scheduled_coroutines.clear()


@pytest.fixture(autouse=True)
def no_loop_leaks(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Fail a passing test that leaves work behind in the main loop."""
    before = _open_files()
    yield
    if request.node.get_closest_marker("allow_loop_leaks"):
        _reported.update(co for co in list(_coroutines) if co and co.entry is not None)
        _reset_loop()
        return
    found = loop_leaks(before)
    _close_aio_engines()
    if found:
        _reset_loop()
        if getattr(request.node, "_gqemu_call_passed", False):
            pytest.fail("the test left the main loop dirty:\n  " + "\n  ".join(found),
                        pytrace=False)


@pytest.fixture
def leak_check():
    """``leak_check()`` -> what ``no_loop_leaks`` would report now (for the
    tests of the check itself)."""
    before = _open_files()
    return lambda: loop_leaks(before)
