"""The thread pool layer: the only place that starts threads.

Must not import: gqemu.block, gqemu.hw, gqemu.kvm or anything above.
QEMU: util/thread-pool.c.
"""
from gqemu.aio import bdrv_aio_cancel, bdrv_aio_cancel_async
from gqemu.threadpool.pool import (THREAD_ACTIVE, THREAD_DONE, THREAD_QUEUED,
                                   ThreadPool, ThreadPoolElement,
                                   aio_get_thread_pool, thread_pool_free,
                                   thread_pool_submit, thread_pool_submit_aio,
                                   thread_pool_submit_co)

__all__ = [
    "ThreadPool", "ThreadPoolElement", "aio_get_thread_pool",
    "thread_pool_submit_aio", "thread_pool_submit_co", "thread_pool_submit",
    "thread_pool_free", "bdrv_aio_cancel", "bdrv_aio_cancel_async",
    "THREAD_QUEUED", "THREAD_ACTIVE", "THREAD_DONE",
]
