"""``gqemu bench --trace-one FILE``: the Perfetto trace (Chrome JSON) of one
request of the block suite's ``4k randread qd1`` workload, to see where its
time goes: ``blk_aio_preadv`` -> coroutine -> worker thread's ``aio_worker``
-> completion bottom half -> the coroutine's wake-up -> the callback.

The image is small and written first (its pages are cached, as in the
suite), and a few requests run untraced first, so the traced one finds the
worker thread started and the coroutine pool filled, as a request in the
middle of the benchmark does.
"""
from __future__ import annotations

import mmap
import os
import shutil
import tempfile

from gqemu.aio import aio_wait_while
from gqemu.block import QEMUIOVector, blk_aio_preadv, blk_new_open, blk_unref
from gqemu.trace import (trace_close_output, trace_enable_events, trace_init_output,
                         trace_reset)

SIZE = 4 << 20
BUFSIZE = 4096
WARM = 8


def write_trace(path: str) -> int:
    """Write the trace of one 4 KiB read to ``path``; return its status."""
    d = tempfile.mkdtemp(prefix="gqemu-trace-one-", dir="/tmp")
    img = os.path.join(d, "bench.raw")
    try:
        with open(img, "wb") as f:
            f.write(bytes(range(256)) * (SIZE // 256))
        blk = blk_new_open(img, {"format": "raw", "cache": "writeback"})
        buf = mmap.mmap(-1, BUFSIZE)
        qiov = QEMUIOVector([memoryview(buf)])
        try:
            done: list[int] = []

            def cb(_opaque: object, ret: int) -> None:
                done.append(ret)
            for i in range(WARM + 1):
                if i == WARM:
                    with open(path, "w", encoding="utf-8") as out:
                        trace_init_output(out, "json")
                        trace_enable_events("*")
                        try:
                            blk_aio_preadv(blk, (i * 7919 * BUFSIZE) % SIZE, qiov, 0, cb, None)
                            aio_wait_while(blk.ctx, lambda: len(done) <= i)
                        finally:
                            trace_close_output()
                            trace_reset()
                else:
                    blk_aio_preadv(blk, (i * 7919 * BUFSIZE) % SIZE, qiov, 0, cb, None)
                    aio_wait_while(blk.ctx, lambda: len(done) <= i)
        finally:
            blk_unref(blk)
        return 0 if all(r == 0 for r in done) else 1
    finally:
        shutil.rmtree(d, ignore_errors=True)
