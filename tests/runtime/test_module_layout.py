"""The runtime is split along QEMU's files (util/qemu-coroutine.c,
util/coroutine-ucontext.c, util/qemu-coroutine-lock.c,
util/qemu-coroutine-sleep.c, util/async.c, util/aio-posix.c,
util/qemu-timer.c), each module under the ~400-line guideline, while every
public name is still imported from gqemu.coroutine and gqemu.aio
(ARCHITECTURE section 3) as the very object its home module defines."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import gqemu.aio
import gqemu.coroutine

PKG = Path(gqemu.coroutine.__file__).parent
RUNTIME = ("coroutine", "coroutine_ucontext", "qemu_coroutine", "qemu_coroutine_lock",
           "qemu_coroutine_sleep", "aio", "aio_context", "aio_posix", "qemu_timer")


@pytest.mark.parametrize("name", RUNTIME)
def test_runtime_module_stays_near_400_lines(name):
    n = (PKG / (name + ".py")).read_text(encoding="utf-8").count("\n")
    assert n <= 430, "%s.py has %d lines" % (name, n)


@pytest.mark.parametrize("facade", [gqemu.coroutine, gqemu.aio])
def test_public_names_come_from_the_facade(facade):
    for name in facade.__all__:
        obj = getattr(facade, name)
        home = getattr(obj, "__module__", None)
        if home is not None and callable(obj):
            # The very object its home module defines (one of RUNTIME).
            assert home.split(".")[-1] in RUNTIME, (name, home)
            assert getattr(importlib.import_module(home), obj.__name__) is obj, name


def test_documented_coroutine_names_import():
    # ARCHITECTURE section 3's list for gqemu.coroutine and gqemu.aio.
    from gqemu.aio import (AioContext, aio_bh_new, aio_bh_schedule_oneshot,  # noqa: F401
                           aio_co_enter, aio_co_schedule, aio_co_wake,
                           aio_context_new, aio_poll, aio_timer_new,
                           aio_wait_while, qemu_bh_cancel, qemu_bh_delete,
                           qemu_bh_schedule, qemu_get_aio_context, timer_del,
                           timer_mod)
    from gqemu.coroutine import (CoMutex, CoQueue, CoRwlock, Coroutine,  # noqa: F401
                                 CoroutineError, coroutine_fn, qemu_co_mutex_init,
                                 qemu_co_mutex_lock, qemu_co_mutex_unlock,
                                 qemu_co_enter_next, qemu_co_queue_empty,
                                 qemu_co_queue_init, qemu_co_queue_next,
                                 qemu_co_queue_restart_all, qemu_co_queue_wait,
                                 qemu_co_rwlock_downgrade, qemu_co_rwlock_init,
                                 qemu_co_rwlock_rdlock, qemu_co_rwlock_unlock,
                                 qemu_co_rwlock_upgrade, qemu_co_rwlock_wrlock,
                                 qemu_co_sleep_ns, qemu_coroutine_create,
                                 qemu_coroutine_enter, qemu_coroutine_entered,
                                 qemu_coroutine_self, qemu_coroutine_yield,
                                 qemu_in_coroutine)


def test_every_name_the_code_takes_from_the_facades_is_there():
    # ``from gqemu.coroutine import X`` and ``coroutine.X`` after ``from gqemu
    # import coroutine`` (gqemu.cli.stress reads coroutine.STRESS), anywhere
    # in gqemu, tests and scripts.
    facades = {"coroutine": gqemu.coroutine, "aio": gqemu.aio}
    root = PKG.parent
    files = [*PKG.rglob("*.py"), *(root / "tests").rglob("*.py"),
             root / "scripts" / "mutate"]
    missing = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in (
                    "gqemu.coroutine", "gqemu.aio"):
                mod = facades[node.module.rpartition(".")[2]]
                missing += [(str(path), a.name) for a in node.names
                            if a.name != "*" and not hasattr(mod, a.name)]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in facades
                  and not hasattr(facades[node.value.id], node.attr)):
                missing.append((str(path), node.value.id + "." + node.attr))
    assert not missing
