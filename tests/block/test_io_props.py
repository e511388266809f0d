"""Property test: batches of concurrent, overlapping, aligned and unaligned
reads, writes, zero writes, discards and flushes through blk -> raw -> file
(optionally with blkdebug in between enforcing the alignment it was given),
with request_alignment 1, 512, 4096 and a small max_transfer.  After every
batch the image (read through gqemu and straight from the host file) equals
a bytearray shadow.

Bytes written by one request of a batch must hold exactly that request's
data, even when other requests share their alignment block (read-modify-
write must be serialised); bytes that several requests of the batch wrote
must hold one of their values; a read must see, per byte, the old value or
one written by a request of its own batch.
"""
from __future__ import annotations

import errno
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gqemu.block import (BDRV_REQ_MAY_UNMAP, QEMUIOVector, blk_aio_flush,
                         blk_aio_pdiscard, blk_aio_preadv, blk_aio_pwrite_zeroes,
                         blk_aio_pwritev, blk_drain, blk_new_open, blk_pread,
                         blk_unref)
from gqemu.block.driver import bdrv_refresh_limits

SIZE = 64 * 1024
MAXLEN = 20 * 1024

# (name, request_alignment, max_transfer, blkdebug in the stack?)
STACKS = [
    ("file-a1", 1, 3000, False),
    ("file-a512", 512, 4096, False),
    ("file-a4096", 4096, 8192, False),
    ("blkdebug-a512", 512, 2048, True),
    ("blkdebug-a4096", 4096, 8192, True),
    ("odirect", 0, 0, False),
]

offsets = st.one_of(
    st.integers(0, SIZE),
    st.integers(0, SIZE // 512).map(lambda x: x * 512),
    st.integers(0, SIZE // 4096).map(lambda x: x * 4096 - 1).filter(lambda x: x >= 0),
)
lengths = st.one_of(st.integers(0, MAXLEN), st.sampled_from([1, 511, 512, 513, 4096, 8192]))
op = st.tuples(st.sampled_from(["read", "read", "write", "write", "write", "zero",
                                "zero_unmap", "discard", "flush"]),
               offsets, lengths, st.integers(1, 255))
batches = st.lists(st.lists(op, min_size=1, max_size=8), min_size=1, max_size=5)


def open_stack(path: str, align: int, max_transfer: int, blkdebug: bool):
    opts = {"format": "raw", "discard": "unmap", "cache": "writeback"}
    if align == 0:
        opts["cache"] = "none"
        return blk_new_open(path, opts)
    if blkdebug:
        opts["file.align"] = str(align)
        opts["file.max-transfer"] = str(max_transfer)
        return blk_new_open("blkdebug::" + path, opts)
    blk = blk_new_open(path, opts)
    file_bs = blk.root.bs.file.bs
    file_bs.opaque.request_alignment = align      # as if the device needed it
    file_bs.opaque.max_transfer = max_transfer
    bdrv_refresh_limits(file_bs)
    bdrv_refresh_limits(blk.root.bs)
    return blk


def data_for(seed: int, offset: int, n: int) -> bytes:
    """Request data that differs per request and per position."""
    return bytes(((offset + i) * 13 + seed) & 0xff or 1 for i in range(n))


def check_batch(shadow: bytearray, ops: list, align: int, actual: bytes) -> None:
    old = bytes(shadow)
    """Check ``actual`` against ``shadow`` and the batch's writers; update
    ``shadow`` to ``actual``."""
    writers = []   # (start, end, data bytes over [start, end))
    for kind, off, n, seed, ret, _buf in ops:
        if kind in ("read", "flush") or ret != 0:
            continue
        if kind == "write":
            writers.append((off, off + n, data_for(seed, off, n)))
        elif kind in ("zero", "zero_unmap"):
            writers.append((off, off + n, bytes(n)))
        elif kind == "discard":
            a = max(align, 1)
            s = -(-off // a) * a
            e = (off + n) // a * a
            if e > s:
                writers.append((s, e, bytes(e - s)))
    bounds = sorted({0, SIZE} | {w[0] for w in writers} | {w[1] for w in writers})
    for lo, hi in zip(bounds, bounds[1:]):
        cover = [w for w in writers if w[0] <= lo and hi <= w[1]]
        got = actual[lo:hi]
        if not cover:
            assert got == shadow[lo:hi], "bytes %d..%d changed with no writer" % (lo, hi)
        elif len(cover) == 1:
            w = cover[0]
            assert got == w[2][lo - w[0]:hi - w[0]], \
                "bytes %d..%d lost their only writer's data" % (lo, hi)
        else:
            for i in range(lo, hi):
                assert got[i - lo] in [w[2][i - w[0]] for w in cover], \
                    "byte %d holds a value nobody wrote" % i
    shadow[:] = actual
    # reads: per byte old value or a batch writer's value
    for kind, off, n, seed, ret, buf in ops:
        if kind != "read" or ret != 0:
            continue
        for lo, hi in zip(bounds, bounds[1:]):
            s, e = max(lo, off), min(hi, off + n)
            if s >= e:
                continue
            cover = [w for w in writers if w[0] <= s and e <= w[1]]
            if not cover:
                assert buf[s - off:e - off] == old[s:e], \
                    "read of %d..%d saw bytes nobody wrote" % (s, e)
            else:
                for i in range(s, e):
                    ok = [old[i]] + [w[2][i - w[0]] for w in cover]
                    assert buf[i - off] in ok


def run_batches(align: int, max_transfer: int, blkdebug: bool, script: list) -> None:
    fd, path = tempfile.mkstemp(prefix="gqemu-prop-", dir="/var/tmp")
    try:
        init = bytes((i * 7 + i // 4096) & 0xff for i in range(SIZE))
        os.write(fd, init)
        os.close(fd)
        blk = open_stack(path, align, max_transfer, blkdebug)
        # discard granularity: file-posix punches every piece it is handed,
        # unaligned heads and tails too (real qemu-io -t none zeroes a
        # discard of 100+1000: test_discard.py), blkdebug drops the pieces
        # shorter than its alignment
        eff_align = align if blkdebug else 1
        shadow = bytearray(init)
        for batch in script:
            results = []
            for kind, off, n, seed in batch:
                rec = [kind, off, n, seed, None, None]
                results.append(rec)
                cb = (lambda r: (lambda _o, ret: r.__setitem__(4, ret)))(rec)
                if kind == "read":
                    rec[5] = bytearray(n)
                    blk_aio_preadv(blk, off, QEMUIOVector([rec[5]]), 0, cb, None)
                elif kind == "write":
                    blk_aio_pwritev(blk, off, QEMUIOVector([data_for(seed, off, n)]), 0,
                                    cb, None)
                elif kind == "zero":
                    blk_aio_pwrite_zeroes(blk, off, n, 0, cb, None)
                elif kind == "zero_unmap":
                    blk_aio_pwrite_zeroes(blk, off, n, BDRV_REQ_MAY_UNMAP, cb, None)
                elif kind == "discard":
                    blk_aio_pdiscard(blk, off, n, cb, None)
                else:
                    blk_aio_flush(blk, cb, None)
            blk_drain(blk)
            for kind, off, n, seed, ret, _ in results:
                inside = off + n <= SIZE or kind == "flush"
                assert ret == (0 if inside else -errno.EIO), (kind, off, n, ret)
            for bs in (blk.root.bs, blk.root.bs.file.bs):
                assert bs.in_flight == 0 and not bs.tracked_requests
                assert bs.serialising_in_flight == 0
            actual = blk_pread(blk, 0, SIZE)
            check_batch(shadow, [tuple(r) for r in results], eff_align, actual)
            with open(path, "rb") as f:
                assert f.read() == bytes(shadow)
        blk_unref(blk)
    finally:
        os.unlink(path)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name,align,max_transfer,blkdebug", STACKS,
                         ids=[s[0] for s in STACKS])
@settings(max_examples=int(os.environ.get("GQEMU_PROP_EXAMPLES", "25")), deadline=None,
          database=None,
          suppress_health_check=list(HealthCheck))
@given(script=batches)
def test_concurrent_requests_match_shadow(name: str, align: int, max_transfer: int,
                                          blkdebug: bool, script: list) -> None:
    run_batches(align, max_transfer, blkdebug, script)


@pytest.mark.timeout(60)
def test_rmw_neighbours_in_one_block_keep_both() -> None:
    """iotest 077's point: two unaligned writes in one 4 KiB block, in
    flight together, both land."""
    script = [[("write", 100, 10, 5), ("write", 300, 10, 9), ("write", 4000, 200, 3),
               ("read", 0, 8192, 1)]]
    run_batches(4096, 8192, False, script)
    run_batches(4096, 8192, True, script)
