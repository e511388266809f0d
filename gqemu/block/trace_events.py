"""Trace events of the block layer, one line each, with QEMU's names and
formats (block/trace-events; ``%"PRId64"`` written as ``%d``).

``blk_aio_prwv`` and ``blk_aio_complete`` are gqemu's: the two ends of a
``blk_aio_*`` request, which the JSON output draws as a slice.
``handle_aiocb_rw`` (no QEMU event; gqemu adds it so that the worker
side of a request shows up in a ``--trace`` log) is declared in
gqemu/threadpool/aiocb.py, the layer that emits it.

Must not import: anything above gqemu.trace.
"""
from __future__ import annotations

from gqemu.trace import trace_event

# block/block-backend.c
trace_blk_co_preadv = trace_event("blk_co_preadv", "blk %p bs %p offset %d bytes %u flags 0x%x")
trace_blk_co_pwritev = trace_event("blk_co_pwritev", "blk %p bs %p offset %d bytes %u flags 0x%x")
# gqemu's own (no QEMU event): a blk_aio_* request from submission to its
# callback, the ends of the request slice in the JSON output (trace_json.py)
trace_blk_aio_prwv = trace_event("blk_aio_prwv", "blk %p acb %p co %p offset %d bytes %u entry %s")
trace_blk_aio_complete = trace_event("blk_aio_complete", "blk %p acb %p ret %d")
# block.c
trace_bdrv_open_common = trace_event("bdrv_open_common", "bs %p filename \"%s\" flags 0x%x format_name \"%s\"")
# block/io.c
trace_bdrv_co_preadv = trace_event("bdrv_co_preadv", "bs %p offset %d nbytes %d flags 0x%x")
trace_bdrv_co_pwritev = trace_event("bdrv_co_pwritev", "bs %p offset %d nbytes %d flags 0x%x")
trace_bdrv_co_pwrite_zeroes = trace_event("bdrv_co_pwrite_zeroes", "bs %p offset %d count %d flags 0x%x")
trace_bdrv_co_do_copy_on_readv = trace_event("bdrv_co_do_copy_on_readv", "bs %p offset %d bytes %u cluster_offset %d cluster_bytes %u")
# block/raw-posix.c (file-posix.c)
trace_paio_submit_co = trace_event("paio_submit_co", "offset %d count %d type %d")
trace_paio_submit = trace_event("paio_submit", "acb %p opaque %p offset %d count %d type %d")
# block/blkdebug.c (later QEMU)
trace_blkdebug_debug_event = trace_event("blkdebug_debug_event", "event \"%s\" state %d new_state %d")
trace_blkdebug_inject_error = trace_event("blkdebug_inject_error", "offset %d bytes %d errno %d iotype 0x%x")
