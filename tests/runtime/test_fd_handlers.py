"""Fd handlers (gqemu.aio_posix.aio_set_fd_handler): polled by every
aio_poll, watched on the hub only while a poll is parked, io_read run when
the hub saw the fd readable.  The io_uring and Linux AIO engines are built
on them (tests/block/test_io_uring.py, test_linux_aio.py)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from gqemu.aio import (aio_context_new, aio_context_unref, aio_poll, aio_set_fd_handler,
                       aio_wait_while, qemu_get_aio_context)

pytestmark = pytest.mark.timeout(30)


class _Pipe:
    """A pipe whose read end is a handler: io_poll says whether a byte
    arrived (counted by the writer), io_read/io_poll_ready consume it."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.sent = 0
        self.got = b""
        self.reads = self.polls_ready = 0

    def io_poll(self, _o: object) -> bool:
        return self.sent > len(self.got)

    def _drain(self) -> None:
        try:
            self.got += os.read(self.r, 4096)
        except BlockingIOError:
            pass

    def io_read(self, _o: object) -> None:
        self.reads += 1
        self._drain()

    def io_poll_ready(self, _o: object) -> None:
        self.polls_ready += 1
        self._drain()

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_parked_poll_wakes_on_fd_and_runs_io_read() -> None:
    """Nothing but a thread writing to the pipe 50 ms later can end the
    wait: the blocking poll parks on the hub, the hub sees the fd readable
    and the woken poll runs io_read."""
    ctx = qemu_get_aio_context()
    p = _Pipe()
    aio_set_fd_handler(ctx, p.r, False, p.io_read, None, p.io_poll, p.io_poll_ready, None)
    ctx.external_inc()                  # the write we wait for

    def writer() -> None:
        time.sleep(0.05)
        os.write(p.w, b"x")             # before "sent": io_poll cannot see it yet
        time.sleep(0.05)
        p.sent += 1
    t = threading.Thread(target=writer)
    try:
        t.start()
        aio_wait_while(ctx, lambda: p.got != b"x")
        assert p.reads == 1 and p.polls_ready == 0
    finally:
        t.join()
        ctx.external_dec()
        aio_set_fd_handler(ctx, p.r, False, None, None, None, None, None)
        p.close()
    assert ctx.handlers == []


def test_ready_handler_is_polled_without_the_hub() -> None:
    """Work io_poll can see is run by a non-blocking poll (io_poll_ready),
    and a blocking poll with it pending does not park."""
    ctx = qemu_get_aio_context()
    p = _Pipe()
    aio_set_fd_handler(ctx, p.r, False, p.io_read, None, p.io_poll, p.io_poll_ready, None)
    try:
        assert aio_poll(ctx, False) is False
        os.write(p.w, b"ab")
        p.sent = 2
        assert aio_poll(ctx, True) is True
        assert (p.got, p.polls_ready, p.reads) == (b"ab", 1, 0)
        assert aio_poll(ctx, False) is False
    finally:
        aio_set_fd_handler(ctx, p.r, False, None, None, None, None, None)
        p.close()


def test_handler_replaced_removed_and_checked() -> None:
    ctx = aio_context_new()
    p = _Pipe()
    try:
        with pytest.raises(ValueError):
            aio_set_fd_handler(ctx, p.r, False, p.io_read, p.io_read, p.io_poll,
                               p.io_poll_ready, None)
        with pytest.raises(ValueError):
            aio_set_fd_handler(ctx, p.r, False, p.io_read, None, None, None, None)
        aio_set_fd_handler(ctx, p.r, False, p.io_read, None, p.io_poll, p.io_poll_ready, 1)
        aio_set_fd_handler(ctx, p.r, False, p.io_read, None, p.io_poll, p.io_poll_ready, 2)
        assert [h.opaque for h in ctx.handlers] == [2]
        aio_set_fd_handler(ctx, p.r, False, None, None, None, None, None)
        assert ctx.handlers == []
    finally:
        aio_context_unref(ctx)
        p.close()
