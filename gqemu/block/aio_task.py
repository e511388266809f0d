"""A pool of coroutines running the parts of one request concurrently: a
task starts at once (in its own coroutine, up to ``max_busy_tasks`` at a
time) and runs until its first wait; the request goes on meanwhile.  The
first error is the pool's status.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: block/aio_task.c.
"""
from __future__ import annotations

from typing import Any, Callable

from gqemu.aio import aio_co_wake
from gqemu.coroutine import (coroutine_fn, qemu_coroutine_create, qemu_coroutine_enter,
                             qemu_coroutine_self, qemu_coroutine_yield)

__all__ = ["AioTaskPool", "aio_task_pool_new", "aio_task_pool_start_task",
           "aio_task_pool_wait_all", "aio_task_pool_status"]


class AioTaskPool:
    """QEMU: AioTaskPool."""

    __slots__ = ("main_co", "status", "max_busy_tasks", "busy_tasks", "waiting")

    def __init__(self, max_busy_tasks: int) -> None:
        self.main_co = qemu_coroutine_self()
        self.status = 0
        self.max_busy_tasks = max_busy_tasks
        self.busy_tasks = 0
        self.waiting = False


def aio_task_pool_new(max_busy_tasks: int) -> AioTaskPool:
    """Context: the coroutine that will wait for the tasks."""
    return AioTaskPool(max_busy_tasks)


def aio_task_pool_status(pool: "AioTaskPool | None") -> int:
    """0, or the first task error.  QEMU: aio_task_pool_status."""
    return pool.status if pool is not None else 0


@coroutine_fn
def _wait_one(pool: AioTaskPool) -> None:
    assert pool.busy_tasks > 0 and qemu_coroutine_self() is pool.main_co
    pool.waiting = True
    qemu_coroutine_yield()


@coroutine_fn
def aio_task_pool_wait_all(pool: AioTaskPool) -> None:
    """QEMU: aio_task_pool_wait_all."""
    while pool.busy_tasks > 0:
        _wait_one(pool)


@coroutine_fn
def aio_task_pool_start_task(pool: AioTaskPool, func: Callable[[], int]) -> None:
    """Wait for a free slot, then run ``func()`` in a new coroutine until it
    first waits.  QEMU: aio_task_pool_start_task."""
    if pool.busy_tasks >= pool.max_busy_tasks:
        _wait_one(pool)

    def task_co(_: Any) -> None:
        pool.busy_tasks += 1
        ret = func()
        pool.busy_tasks -= 1
        if ret < 0 and pool.status == 0:
            pool.status = ret
        if pool.waiting:
            pool.waiting = False
            aio_co_wake(pool.main_co)

    qemu_coroutine_enter(qemu_coroutine_create(task_co))
