"""Coroutines on raw greenlets, with QEMU's semantics: the public names.

A :class:`Coroutine` is a raw greenlet whose run function is
``coroutine_trampoline``; ``qemu_coroutine_enter`` records the caller and
switches in, ``qemu_coroutine_yield`` switches back; a finished coroutine
goes back to a per-thread pool.  Coroutines woken inside a coroutine run,
depth first, when the waker yields or terminates (today's
``qemu_aio_coroutine_enter``).  The locks follow today's QEMU (FIFO mutex
hand-off, rwlock upgrade/downgrade).

The code lives in one module per QEMU file:

| module | QEMU |
| --- | --- |
| ``gqemu.coroutine_ucontext`` | util/coroutine-ucontext.c |
| ``gqemu.qemu_coroutine`` | util/qemu-coroutine.c, aio_co_* of util/async.c |
| ``gqemu.qemu_coroutine_lock`` | util/qemu-coroutine-lock.c |
| ``gqemu.qemu_coroutine_sleep`` | util/qemu-coroutine-sleep.c |

Must not import: anything in gqemu except ``gqemu.trace`` and those four.
"""
from __future__ import annotations

from gqemu.coroutine_ucontext import Coroutine, CoroutineError, coroutine_trampoline
from gqemu.qemu_coroutine import (aio_co_enter, aio_co_schedule, aio_co_wake,
                                  coroutine_fn, coroutine_pool_size,
                                  coroutine_thread_init, qemu_aio_coroutine_enter,
                                  qemu_coroutine_create, qemu_coroutine_discard,
                                  qemu_coroutine_enter, qemu_coroutine_entered,
                                  qemu_coroutine_self, qemu_coroutine_yield,
                                  qemu_in_coroutine, thread_state)
from gqemu.qemu_coroutine_lock import (CoMutex, CoQueue, CoRwlock, qemu_co_enter_all,
                                       qemu_co_enter_next, qemu_co_mutex_init,
                                       qemu_co_mutex_lock, qemu_co_mutex_unlock,
                                       qemu_co_queue_empty, qemu_co_queue_init,
                                       qemu_co_queue_next, qemu_co_queue_restart_all,
                                       qemu_co_queue_wait, qemu_co_rwlock_downgrade,
                                       qemu_co_rwlock_init, qemu_co_rwlock_rdlock,
                                       qemu_co_rwlock_unlock, qemu_co_rwlock_upgrade,
                                       qemu_co_rwlock_wrlock)
# Decided once, at import (GQEMU_DEBUG / GQEMU_STRESS); read from here too.
from gqemu.qemu_coroutine import DEBUG, STRESS  # noqa: F401
from gqemu.qemu_coroutine_sleep import (coroutine_set_aio_hooks, current_aio_context,
                                        qemu_co_sleep_ns)

__all__ = [
    "Coroutine", "CoroutineError", "coroutine_fn", "coroutine_trampoline",
    "qemu_coroutine_create", "qemu_coroutine_enter", "qemu_aio_coroutine_enter",
    "qemu_coroutine_yield", "qemu_coroutine_self", "qemu_in_coroutine",
    "qemu_coroutine_entered",
    "CoQueue", "qemu_co_queue_init", "qemu_co_queue_wait", "qemu_co_queue_next",
    "qemu_co_queue_restart_all", "qemu_co_queue_empty", "qemu_co_enter_next",
    "qemu_co_enter_all", "qemu_coroutine_discard",
    "CoMutex", "qemu_co_mutex_init", "qemu_co_mutex_lock", "qemu_co_mutex_unlock",
    "CoRwlock", "qemu_co_rwlock_init", "qemu_co_rwlock_rdlock",
    "qemu_co_rwlock_wrlock", "qemu_co_rwlock_unlock", "qemu_co_rwlock_upgrade",
    "qemu_co_rwlock_downgrade", "qemu_co_sleep_ns", "coroutine_pool_size",
    "aio_co_enter", "aio_co_wake", "aio_co_schedule", "thread_state",
    "coroutine_thread_init", "coroutine_set_aio_hooks", "current_aio_context",
]
