"""What one 4 KiB read costs in Python calls on the loop thread, from
blk_aio_preadv to its callback, counted with ``sys.setprofile``
(deterministic; the speed itself is ``gqemu bench block``/``qcow2``, never
timed here).  The budgets hold the request path to its QEMU frames plus a
few helpers; the frames the seed's backtrace shows stay on the path."""
from __future__ import annotations

import mmap
import subprocess
from typing import Any

from gqemu.aio import aio_wait_while
from gqemu.block import QEMUIOVector, blk_aio_preadv, blk_new_open, blk_unref

from tests.runtime.callcount import python_calls

# blk_aio_read_entry .. raw_co_prw: the coroutine chain of
# tests/golden/backtrace-chains.txt, outermost first, without the pool.
CHAIN = ["blk_aio_read_entry", "blk_co_preadv", "bdrv_co_preadv", "bdrv_aligned_preadv",
         "bdrv_driver_preadv", "raw_co_preadv", "bdrv_co_preadv", "bdrv_aligned_preadv",
         "bdrv_driver_preadv", "raw_co_preadv", "raw_co_prw"]


def read_calls(blk: Any, offset: int) -> list[str]:
    """The Python functions one read runs on this thread (coroutine_fn
    debug wrappers left out), from blk_aio_preadv on."""
    qiov = QEMUIOVector([memoryview(mmap.mmap(-1, 4096))])
    done: list[int] = []

    def one_read() -> None:
        blk_aio_preadv(blk, offset, qiov, 0, lambda _o, ret: done.append(ret), None)
        aio_wait_while(blk.ctx, lambda: not done)
    names = python_calls(one_read)[1:]          # without one_read itself
    assert done == [0]
    return names


def cheapest_read(path: str, fmt: str) -> list[str]:
    # aio=nowait reads page-cached data in the coroutine: no thread hop, so
    # the count is the same every time; the cheapest of a few reads leaves
    # out a page the kernel did not have (that one goes to the pool).
    blk = blk_new_open(path, {"format": fmt, "cache": "writeback", "aio": "nowait"})
    try:
        for off in range(0, 4 * 65536, 65536):
            read_calls(blk, off)                     # warm: pool, caches
        return min((read_calls(blk, off) for off in range(0, 8 * 65536, 65536)), key=len)
    finally:
        blk_unref(blk)


def in_order(names: list[str], chain: list[str]) -> bool:
    it = iter(names)
    return all(n in it for n in chain)


def test_raw_read_call_budget(make_image):
    names = cheapest_read(str(make_image(1 << 20)), "raw")
    assert in_order(names, ["blk_aio_preadv", "blk_aio_prwv", "qemu_coroutine_create"]
                    + CHAIN + ["blk_aio_complete"])
    assert len(names) <= 40, names               # 62 before the path was flattened


def test_qcow2_read_call_budget(make_image, qemu_img, tmp_path):
    raw = make_image(1 << 20)
    img = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "convert", "-O", "qcow2", str(raw), str(img)], check=True)
    names = cheapest_read(str(img), "qcow2")
    assert in_order(names, ["blk_aio_read_entry", "blk_co_preadv", "bdrv_co_preadv",
                            "bdrv_aligned_preadv", "bdrv_driver_preadv", "qcow2_co_preadv",
                            "qcow2_get_host_offset", "l2_load", "qcow2_cache_get",
                            "bdrv_co_preadv", "raw_co_prw", "blk_aio_complete"])
    assert len(names) <= 45, names               # 70 before
