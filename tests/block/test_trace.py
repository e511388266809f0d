"""Block trace events carry QEMU's names and formats and fire on the path
(including the worker thread's handle_aiocb_rw)."""
from __future__ import annotations

import io
import re

import pytest

from gqemu.block import (blk_flush, blk_new_open, blk_pread, blk_pwrite, blk_pwrite_zeroes,
                         blk_unref)
from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output, trace_reset

pytestmark = pytest.mark.timeout(60)

P = r"0x[0-9a-f]+"


def test_block_events_on_the_path(make_image) -> None:
    img = make_image(1 << 20)
    out = io.StringIO()
    trace_init_output(out, "log")
    trace_enable_events("blk_co_*,bdrv_co_*,paio_submit*,handle_aiocb_rw,bdrv_open_common")
    try:
        blk = blk_new_open(str(img), {"format": "raw"})
        blk_pread(blk, 0, 512)
        blk_pwrite(blk, 4096, b"x" * 512)
        blk_pwrite_zeroes(blk, 8192, 100, 0)
        blk_flush(blk)
        blk_unref(blk)
    finally:
        trace_close_output()
        trace_reset()
    lines = out.getvalue().splitlines()
    want = [
        r"bdrv_open_common bs %s filename \"%s\" flags 0x2 format_name \"file\"" % (P, img),
        r"bdrv_open_common bs %s filename \"%s\" flags 0x2 format_name \"raw\"" % (P, img),
        r"blk_co_preadv blk %s bs %s offset 0 bytes 512 flags 0x0" % (P, P),
        r"bdrv_co_preadv bs %s offset 0 nbytes 512 flags 0x0" % P,
        r"paio_submit_co offset 0 count 512 type 1",
        r"handle_aiocb_rw fd \d+ offset 0 count 512 type 1 niov 1",
        r"blk_co_pwritev blk %s bs %s offset 4096 bytes 512 flags 0x0" % (P, P),
        r"bdrv_co_pwritev bs %s offset 4096 nbytes 512 flags 0x0" % P,
        r"paio_submit_co offset 4096 count 512 type 2",
        r"handle_aiocb_rw fd \d+ offset 4096 count 512 type 2 niov 1",
        r"blk_co_pwritev blk %s bs %s offset 8192 bytes 100 flags 0x2" % (P, P),
        r"bdrv_co_pwrite_zeroes bs %s offset 8192 count 100 flags 0x0" % P,
        r"paio_submit_co offset 8192 count 100 type 32",
        r"paio_submit acb %s opaque %s offset 0 count 0 type 8" % (P, P),
    ]
    pos = 0
    for pattern in want:
        while pos < len(lines) and not re.fullmatch(pattern, lines[pos]):
            pos += 1
        assert pos < len(lines), "missing, in order: %s\n%s" % (pattern, "\n".join(lines))
        pos += 1
