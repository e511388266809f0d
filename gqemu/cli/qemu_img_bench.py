"""``qemu-img bench [-c count] [-d depth] [-f fmt] [--flush-interval=flushes]
[-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size]
[-S step_size] [-t cache] [-U] [-w] [--image-opts] filename``.

Keeps ``depth`` asynchronous reads (or writes of the pattern byte) of
``buffer_size`` bytes in flight until ``count`` have completed, each at the
previous offset plus ``step_size`` (default: the buffer size) modulo the
image size; ``--flush-interval`` flushes after every N completions (first
draining the queue unless ``--no-drain``).  Prints what it sends and the
wall time.  A failed request ends the program (exit 1).

QEMU: qemu-img.c (img_bench, bench_cb).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from gqemu.cli.qemu_img_tool import (ImgError, blk_close, cvtnum, img_open, parse_args,
                                     qemu_strtol, usage_error)

INT_MAX = 2 ** 31 - 1


def _count(text: str, what: str, top: int = INT_MAX) -> int:
    """QEMU: qemu_strtoul then a range check."""
    v = qemu_strtol(text)
    if v is None or not 0 <= v <= top:
        raise ImgError("Invalid %s specified" % what)
    return v


def _size(name: str, text: str) -> int:
    """QEMU: cvtnum_full(name, text, 0, INT_MAX)."""
    return cvtnum(name, text, INT_MAX)


class BenchData:
    """QEMU: BenchData."""

    def __init__(self, blk: Any, image_size: int, write: bool, bufsize: int, step: int,
                 depth: int, count: int, offset: int, flush_interval: int,
                 drain: bool, qiov: Any) -> None:
        self.blk, self.image_size, self.write = blk, image_size, write
        self.bufsize, self.step, self.nrreq, self.n = bufsize, step, depth, count
        self.offset, self.flush_interval, self.drain_on_flush = offset, flush_interval, drain
        self.qiov = qiov
        self.in_flight = 0
        self.in_flush = False
        self.failed = ""


def _fail(b: BenchData, msg: str) -> None:
    """QEMU exits from the callback; here the loop stops and reports."""
    if not b.failed:
        b.failed = msg
    b.n = 0


def _undrained_flush_cb(b: BenchData, ret: int) -> None:
    if ret < 0:
        _fail(b, "Failed flush request: %s" % os.strerror(-ret))


def bench_cb(b: BenchData, ret: int) -> None:
    """One completion: count it, flush when due, submit more.  QEMU: bench_cb."""
    from gqemu.block import blk_aio_flush, blk_aio_preadv, blk_aio_pwritev
    if b.failed:
        return
    if ret < 0:
        _fail(b, "Failed request: %s" % os.strerror(-ret))
        return
    if b.in_flush:
        b.in_flush = False
    elif b.in_flight > 0:
        remaining = b.n - b.in_flight
        b.n -= 1
        b.in_flight -= 1
        if b.flush_interval and remaining % b.flush_interval == 0:
            if not b.in_flight or not b.drain_on_flush:
                if b.drain_on_flush:
                    b.in_flush = True
                    blk_aio_flush(b.blk, bench_cb, b)
                else:
                    blk_aio_flush(b.blk, _undrained_flush_cb, b)
            if b.drain_on_flush:
                return
    while b.n > b.in_flight and b.in_flight < b.nrreq:
        offset = b.offset
        b.in_flight += 1
        b.offset = (b.offset + b.step) % b.image_size
        # every request uses the first buffer, as QEMU's does
        if b.write:
            blk_aio_pwritev(b.blk, offset, b.qiov, 0, bench_cb, b)
        else:
            blk_aio_preadv(b.blk, offset, b.qiov, 0, bench_cb, b)


def img_bench(argv: list[str]) -> int:
    """QEMU: img_bench."""
    opts, args = parse_args(argv, "hc:d:f:ni:o:qs:S:t:wU",
                            ["help", "flush-interval=", "image-opts", "pattern=", "no-drain",
                             "force-share", "object="])
    fmt = None
    quiet = image_opts = is_write = force_share = False
    from gqemu.block.block_int import BDRV_O_IO_URING, BDRV_O_NATIVE_AIO
    aio_flags = 0               # QEMU: bdrv_parse_aio ORs into the open flags
    count, depth, offset, bufsize, pattern, step = 75000, 64, 0, 4096, 0, 0
    flush_interval, drain = 0, True
    cache = "writeback"
    for o, v in opts:
        if o == "-c":
            count = _count(v, "request count")
        elif o == "-d":
            depth = _count(v, "queue depth")
        elif o == "-f":
            fmt = v
        elif o == "-n":
            aio_flags |= BDRV_O_NATIVE_AIO
        elif o == "-i":
            if v not in ("native", "threads", "io_uring"):
                raise ImgError("Invalid aio option: %s" % v)
            aio_flags |= (BDRV_O_NATIVE_AIO if v == "native" else
                          BDRV_O_IO_URING if v == "io_uring" else 0)
        elif o == "-o":
            offset = cvtnum("offset", v)
        elif o == "-q":
            quiet = True
        elif o == "-s":
            bufsize = _size("buffer size", v)
        elif o == "-S":
            step = _size("step_size", v)
        elif o == "-t":
            from gqemu.block.drive_opts import CACHE_MODES
            if v not in CACHE_MODES:
                raise ImgError("Invalid cache mode")
            cache = v
        elif o == "-w":
            is_write = True
        elif o in ("-U", "--force-share"):
            force_share = True
        elif o == "--pattern":
            pattern = _count(v, "pattern byte", 0xff)
        elif o == "--flush-interval":
            flush_interval = _count(v, "flush interval")
        elif o == "--no-drain":
            drain = False
        elif o == "--image-opts":
            image_opts = True
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    if not is_write and flush_interval:
        raise ImgError("--flush-interval is only available in write tests")
    if flush_interval and flush_interval < depth:
        raise ImgError("Flush interval can't be smaller than depth")
    if count and not depth:     # gqemu: QEMU would wait forever for no request
        raise ImgError("Invalid queue depth specified")
    return _run(args[0], fmt, is_write, image_opts, force_share, cache, aio_flags, quiet,
                BenchData(None, 0, is_write, bufsize, step or bufsize, depth, count, offset,
                          flush_interval, drain, None), pattern)


def _run(filename: str, fmt: Any, is_write: bool, image_opts: bool, force_share: bool,
         cache: str, aio_flags: int, quiet: bool, b: BenchData, pattern: int) -> int:
    from gqemu.block import blk_getlength
    from gqemu.block.drive_opts import bdrv_parse_cache_mode
    from gqemu.block.driver import BDRV_O_NATIVE_AIO, BDRV_O_NOCACHE
    from gqemu.block.qiov import QEMUIOVector
    if aio_flags & BDRV_O_NATIVE_AIO and not bdrv_parse_cache_mode(cache)[0] & BDRV_O_NOCACHE:
        raise ImgError("Could not open '%s': aio=native was specified, but it requires "
                       "cache.direct=on, which was not specified." % filename)
    blk = img_open(filename, fmt, is_write, extra_flags=aio_flags, image_opts=image_opts,
                   force_share=force_share, cache=cache)
    try:
        size = blk_getlength(blk)
        if size < 0:
            return 1
        b.blk, b.image_size = blk, size
        sys.stdout.write("Sending %d %s requests, %d bytes each, %d in parallel (starting at "
                         "offset %d, step size %d)\n" % (b.n, "write" if b.write else "read",
                                                         b.bufsize, b.nrreq, b.offset, b.step))
        if b.flush_interval:
            sys.stdout.write("Sending flush every %d requests\n" % b.flush_interval)
        sys.stdout.flush()
        if not size and b.n:    # gqemu: QEMU divides by the size (SIGFPE)
            raise ImgError("Cannot send requests to an empty image")
        b.qiov = QEMUIOVector([bytearray([pattern]) * b.bufsize])
        t1 = time.time()
        _loop(b)
        t2 = time.time()
        if b.failed:
            raise ImgError(b.failed)
        sys.stdout.write("Run completed in %3.3f seconds.\n" % (t2 - t1))
        return 0
    finally:
        blk_close(blk)


def _loop(b: BenchData) -> None:
    """Submit the first requests, then run the loop until every request
    (and a drained flush) has completed.  QEMU: main_loop_wait."""
    from gqemu.aio import aio_poll
    from gqemu.block import blk_drain, blk_get_aio_context
    ctx = blk_get_aio_context(b.blk)
    bench_cb(b, 0)
    while b.n > 0:
        aio_poll(ctx, True)
    blk_drain(b.blk)        # after a failure, or an undrained flush: let them finish
