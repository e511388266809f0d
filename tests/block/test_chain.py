"""The call chains of one read are the seed's GDB backtraces (chains 2, 3.1
and 3.2 of ../shared/seed), compared name by name: the expected lists are
parsed from the seed file itself, not written here."""
from __future__ import annotations

import os
import re
import threading
import traceback

import pytest

import gqemu.threadpool.pool as pool_mod
from gqemu.block import (QEMUIOVector, blk_aio_preadv, blk_drain, blk_new_open,
                         blk_unref)

# Frames that exist only in C (libc, the kernel entry) or only in Python
# (the GQEMU_DEBUG/STRESS coroutine_fn wrapper).
C_ONLY = {"start_thread", "clone", "??", "pread64"}


def seed_chain(seed_text: str, title: str) -> list[str]:
    """Function names of one backtrace, outermost first."""
    start = seed_text.index(title)
    block = seed_text[start:]
    names = []
    for line in block.splitlines()[2:]:
        m = re.match(r"#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(", line)
        if m:
            names.append(m.group(1))
        elif names and line.startswith("---"):
            break
    return [n for n in reversed(names) if n not in C_ONLY]


def names_from(stack: traceback.StackSummary, first: str) -> list[str]:
    names = [f.name for f in stack if f.name != "checked"]
    return names[names.index(first):]


def test_seed_parser_sees_three_chains(seed_text: str) -> None:
    c2 = seed_chain(seed_text, "2. [(start from a coroutine)")
    assert c2[0] == "coroutine_trampoline" and c2[-1] == "thread_pool_submit_aio"
    assert len(c2) == 15


@pytest.mark.timeout(30)
def test_coroutine_chain_is_seed_chain_2(make_image, monkeypatch, seed_text: str) -> None:
    expected = seed_chain(seed_text, "2. [(start from a coroutine)")
    captured: list[list[str]] = []
    real = pool_mod.thread_pool_submit_aio

    def thread_pool_submit_aio(pool, func, arg, cb, opaque):  # noqa: ANN001
        stack = traceback.extract_stack()
        # extract_stack() ends with this stand-in, named as the real one.
        captured.append(names_from(stack, "coroutine_trampoline"))
        return real(pool, func, arg, cb, opaque)
    monkeypatch.setattr(pool_mod, "thread_pool_submit_aio", thread_pool_submit_aio)
    img = make_image(1 << 20)
    blk = blk_new_open(str(img), {"format": "raw"})
    buf = bytearray(512)
    blk_aio_preadv(blk, 0, QEMUIOVector([buf]), 0, None, None)
    blk_drain(blk)
    blk_unref(blk)
    assert captured, "no request reached the thread pool"
    assert captured[0] == expected


@pytest.mark.timeout(30)
@pytest.mark.parametrize("niov,title", [
    (3, "3.1. [(start from a thread)"),
    (1, "3.2. [(start from a thread)"),
])
def test_worker_chain_is_seed_chain_3(make_image, monkeypatch, seed_text: str,
                                      niov: int, title: str) -> None:
    expected = seed_chain(seed_text, title)
    captured: list[list[str]] = []
    real_preadv = os.preadv
    main = threading.main_thread()

    def preadv(fd, buffers, offset, *flags):  # noqa: ANN001
        if threading.current_thread() is not main:
            captured.append(names_from(traceback.extract_stack(), "worker_thread"))
        return real_preadv(fd, buffers, offset, *flags)
    img = make_image(1 << 20)
    blk = blk_new_open(str(img), {"format": "raw"})
    monkeypatch.setattr(os, "preadv", preadv)
    bufs = [bytearray(512) for _ in range(niov)]
    blk_aio_preadv(blk, 0x4000, QEMUIOVector(bufs), 0, None, None)
    blk_drain(blk)
    monkeypatch.undo()
    blk_unref(blk)
    assert captured, "no preadv ran in a worker thread"
    # Drop our os.preadv stand-in; the seed's pread64 (libc) is dropped from
    # the expected list, as the linear path reads with os.preadv into the
    # caller's buffer.
    assert captured[0][:-1] == expected
