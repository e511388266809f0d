"""The copy engine of gqemu-img convert: the walk by block status, zero
detection in read buffers, and the coroutines that read and write in order.

Zero and unallocated source ranges are never read; on a target that reads
as zeroes they are not written either.  Data buffers are scanned for runs
of at least ``min_sparse`` zero sectors, which are skipped (or zeroed with
write_zeroes when the target may hold data, as with ``-n``).

Context: the tool's main loop and its coroutines.
QEMU: qemu-img.c convert_do_copy, convert_co_do_copy,
convert_iteration_sectors, convert_co_read, convert_co_write,
is_allocated_sectors, is_allocated_sectors_min.
"""
from __future__ import annotations

import os
from typing import Any

from gqemu.block import blk_bs, blk_co_preadv, blk_co_pwrite_zeroes, blk_co_pwritev
from gqemu.block.driver import BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, BDRV_REQ_MAY_UNMAP
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.cli.qemu_img_tool import error_report
from gqemu.block.io_status import bdrv_co_block_status_above
from gqemu.cli.qemu_img_out import run_co

BDRV_SECTOR_SIZE = 512
IO_BUF_SIZE = 2 * 1024 * 1024
BDRV_REQUEST_MAX_SECTORS = (2**31 - 1) >> 9
EINPROGRESS = -115

BLK_DATA, BLK_ZERO, BLK_BACKING_FILE = 0, 1, 2

_ZERO_SECTOR = bytes(BDRV_SECTOR_SIZE)
_zero_buf = bytes(IO_BUF_SIZE)


# ------------------------------------------------------------ zero detection


def _zero(n: int) -> bytes:
    global _zero_buf
    if len(_zero_buf) < n:
        _zero_buf = bytes(n)
    return _zero_buf if len(_zero_buf) == n else _zero_buf[:n]


def _first_zero_sector(buf: bytearray, start: int, end: int) -> int:
    """The first all-zero sector in [start, end) (``end`` if none)."""
    pos, lim = start * BDRV_SECTOR_SIZE, end * BDRV_SECTOR_SIZE
    while True:
        p = buf.find(_ZERO_SECTOR, pos, lim)
        if p < 0:
            return end
        s = -(-p // BDRV_SECTOR_SIZE)       # a zero sector starts at or after p
        if s >= end:
            return end
        if buf[s * BDRV_SECTOR_SIZE:(s + 1) * BDRV_SECTOR_SIZE] == _ZERO_SECTOR:
            return s
        pos = (s + 1) * BDRV_SECTOR_SIZE


def _first_nonzero_sector(buf: bytearray, start: int, end: int) -> int:
    """The first sector in [start, end) holding a non-zero byte (``end`` if
    none): memcmp over halves rather than a Python loop per sector."""
    def zero(a: int, b: int) -> bool:
        n = (b - a) * BDRV_SECTOR_SIZE
        return buf[a * BDRV_SECTOR_SIZE:b * BDRV_SECTOR_SIZE] == _zero(n)
    if zero(start, end):
        return end
    lo, hi = start, end                     # [lo, hi) holds a non-zero byte
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if zero(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


def is_allocated_sectors(buf: bytearray, first: int, n: int, sector_num: int,
                         alignment: int) -> tuple[bool, int]:
    """Whether sector ``first`` of ``buf`` holds data, and how many sectors
    from there share that state, the end aligned to ``alignment`` where the
    run does not cover the whole buffer.  QEMU: is_allocated_sectors."""
    if n <= 0:
        return False, 0
    is_zero = buf[first * BDRV_SECTOR_SIZE:(first + 1) * BDRV_SECTOR_SIZE] == _ZERO_SECTOR
    if is_zero:
        i = _first_nonzero_sector(buf, first + 1, first + n) - first
    else:
        i = _first_zero_sector(buf, first + 1, first + n) - first
    if i == n:
        return not is_zero, n
    tail = (sector_num + i) & (alignment - 1)
    if tail:
        if is_zero and i <= tail:
            is_zero = False                 # the data after it rewrites this tail anyway
        if not is_zero:
            i = min(i + alignment - tail, n)
        else:
            i -= tail
    return not is_zero, i


def is_allocated_sectors_min(buf: bytearray, first: int, n: int, min_sparse: int,
                             sector_num: int, alignment: int) -> tuple[bool, int]:
    """As is_allocated_sectors, but a data run swallows zero runs shorter
    than ``min_sparse`` sectors so writes are not split for small holes.
    QEMU: is_allocated_sectors_min."""
    min_sparse = min(min_sparse, n)
    ret, pnum = is_allocated_sectors(buf, first, n, sector_num, alignment)
    if not ret:
        return ret, pnum
    num_used = num_checked = pnum
    first, n, sector_num = first + pnum, n - pnum, sector_num + pnum
    while n > 0:
        ret, pnum = is_allocated_sectors(buf, first, n, sector_num, alignment)
        first, n, sector_num = first + pnum, n - pnum, sector_num + pnum
        num_checked += pnum
        if ret:
            num_used = num_checked
        elif pnum >= min_sparse:
            break
    return True, num_used


# ------------------------------------------------------------------ state


class ImgConvertState:
    """QEMU: ImgConvertState (the sources are concatenated)."""

    def __init__(self) -> None:
        self.src: list[Any] = []             # BlockBackends
        self.src_sectors: list[int] = []
        self.src_alignment: list[int] = []
        self.total_sectors = 0
        self.allocated_sectors = 0
        self.allocated_done = 0
        self.sector_num = 0
        self.wr_offs = 0
        self.status = BLK_DATA
        self.sector_next_status = 0
        self.target: Any = None
        self.has_zero_init = False
        self.compressed = False
        self.copy_range = False             # -C
        self.src_cache = "writeback"        # -T
        self.target_is_new = False
        self.target_has_backing = False
        self.target_backing_sectors = -1
        self.wr_in_order = True
        self.salvage = False
        self.bitmaps = self.skip_broken = False     # --bitmaps, --skip-broken-bitmaps
        self.quiet = False
        self.min_sparse = 8                 # 4k of zeroes make a hole
        self.alignment = 1
        self.cluster_sectors = 0
        self.buf_sectors = IO_BUF_SIZE // BDRV_SECTOR_SIZE
        self.num_coroutines = 8
        self.running_coroutines = 0
        self.co: list[Any] = []
        self.wait_sector_num: list[int] = []
        self.lock: Any = None
        self.ret = 0
        self.progress: Any = None            # a QemuProgress


def convert_select_part(s: ImgConvertState, sector_num: int) -> tuple[int, int]:
    """The source holding ``sector_num`` and its first sector in the
    concatenation.  QEMU: convert_select_part."""
    cur, cur_offset = 0, 0
    while cur < len(s.src) - 1 and sector_num - cur_offset >= s.src_sectors[cur]:
        cur_offset += s.src_sectors[cur]
        cur += 1
    return cur, cur_offset


def convert_iteration_sectors(s: ImgConvertState, sector_num: int) -> int:
    """The length of the next run of one status (BLK_DATA runs capped at
    the buffer), asking block status only when the cached answer ran out.
    Context: coroutine.  Returns: sectors, or -errno.
    QEMU: convert_iteration_sectors."""
    assert s.total_sectors > sector_num
    cur, cur_offset = convert_select_part(s, sector_num)
    n = min(s.total_sectors - sector_num, BDRV_REQUEST_MAX_SECTORS,
            s.src_sectors[cur] - (sector_num - cur_offset))
    post_backing_zero = False
    if s.target_backing_sectors >= 0:
        if sector_num >= s.target_backing_sectors:
            post_backing_zero = True
        elif sector_num + n > s.target_backing_sectors:
            n = s.target_backing_sectors - sector_num
    if s.sector_next_status <= sector_num:
        src_bs = blk_bs(s.src[cur])
        assert src_bs is not None
        offset = (sector_num - cur_offset) * BDRV_SECTOR_SIZE
        base = None
        if s.target_has_backing and src_bs.backing is not None:
            base = src_bs.backing.bs
        while True:
            ret, count = bdrv_co_block_status_above(src_bs, base, offset,
                                                    n * BDRV_SECTOR_SIZE)
            if ret >= 0:
                break
            if not s.salvage:
                error_report("error while reading block status at offset %d: %s"
                             % (offset, os.strerror(-ret)))
                return ret
            if n > 1:
                n = -(-n // 4)              # retry on a shorter range
                continue
            if not s.quiet:
                error_report("warning: error while reading block status at offset %d: %s"
                             % (offset, os.strerror(-ret)))
            ret, count = BDRV_BLOCK_DATA, BDRV_SECTOR_SIZE   # just try to read it
            break
        n = -(-count // BDRV_SECTOR_SIZE)
        tail = (sector_num - cur_offset + n) % s.src_alignment[cur]
        if n > tail:
            n -= tail
        if ret & BDRV_BLOCK_ZERO:
            s.status = BLK_BACKING_FILE if post_backing_zero else BLK_ZERO
        elif ret & BDRV_BLOCK_DATA:
            s.status = BLK_DATA
        else:
            s.status = BLK_BACKING_FILE if s.target_has_backing else BLK_DATA
        s.sector_next_status = sector_num + n
    n = min(n, s.sector_next_status - sector_num)
    if s.status == BLK_DATA:
        n = min(n, s.buf_sectors)
    if s.compressed:
        if n < s.cluster_sectors:
            n = min(s.cluster_sectors, s.total_sectors - sector_num)
            s.status = BLK_DATA
        else:
            n -= n % s.cluster_sectors
    return n


def convert_co_read(s: ImgConvertState, sector_num: int, nb_sectors: int,
                    buf: bytearray) -> int:
    """Read a run of the concatenated sources into ``buf``.  With --salvage
    a failed read is repeated sector by sector and a sector that still
    fails reads as zeroes (with a warning).  Context: coroutine.
    Returns: 0 or -errno.  QEMU: convert_co_read."""
    single_read_until = 0
    pos = 0
    while nb_sectors > 0:
        cur, cur_offset = convert_select_part(s, sector_num)
        n = min(nb_sectors, s.src_sectors[cur] - (sector_num - cur_offset))
        offset = (sector_num - cur_offset) * BDRV_SECTOR_SIZE
        if single_read_until > offset:
            n = 1
        view = memoryview(buf)[pos:pos + n * BDRV_SECTOR_SIZE]
        ret = blk_co_preadv(s.src[cur], offset, n * BDRV_SECTOR_SIZE,
                            qemu_iovec_init_buf(view), 0)
        if ret < 0:
            if not s.salvage:
                return ret
            if n > 1:
                single_read_until = offset + n * BDRV_SECTOR_SIZE
                continue
            if not s.quiet:
                error_report("warning: error while reading offset %d: %s"
                             % (offset, os.strerror(-ret)))
            view[:] = _zero(BDRV_SECTOR_SIZE)
        sector_num += n
        nb_sectors -= n
        pos += n * BDRV_SECTOR_SIZE
    return 0


def convert_co_write(s: ImgConvertState, sector_num: int, nb_sectors: int,
                     buf: bytearray, status: int) -> int:
    """Write one run: data where it is not a long enough zero run, and
    zero runs only when the target does not already read as zeroes.
    Context: coroutine.  Returns: 0 or -errno.  QEMU: convert_co_write."""
    first = 0
    while nb_sectors > 0:
        n = nb_sectors
        off, view = sector_num * BDRV_SECTOR_SIZE, memoryview(buf)[first * BDRV_SECTOR_SIZE:]
        ret = 0
        if status == BLK_BACKING_FILE:
            assert s.target_has_backing      # the target's backing file shows through
        else:
            write_data = False
            if status == BLK_DATA and s.copy_range and not _copy_range_ok(s):
                s.copy_range = False            # QEMU falls back for good
            if status == BLK_DATA:
                if not s.min_sparse or s.copy_range:
                    # copy offloading copies data ranges as they are, zeroes too
                    write_data = True
                elif s.compressed:
                    write_data = view[:n * BDRV_SECTOR_SIZE] != _zero(n * BDRV_SECTOR_SIZE)
                else:
                    write_data, n = is_allocated_sectors_min(buf, first, n, s.min_sparse,
                                                             sector_num, s.alignment)
            nbytes = n * BDRV_SECTOR_SIZE
            if write_data:
                qiov = qemu_iovec_init_buf(view[:nbytes])
                if s.compressed:
                    bs: Any = blk_bs(s.target)
                    ret = bs.drv.bdrv_co_pwritev_compressed(bs, off, nbytes, qiov)
                else:
                    ret = blk_co_pwritev(s.target, off, nbytes, qiov, 0)
            elif not s.has_zero_init:
                ret = blk_co_pwrite_zeroes(s.target, off, nbytes, BDRV_REQ_MAY_UNMAP)
        if ret < 0:
            return ret
        sector_num += n
        nb_sectors -= n
        first += n
    return 0


def convert_co_do_copy(s: ImgConvertState) -> None:
    """One worker: claim the next run under the lock, read it, wait for
    its turn (in-order writes) and write it.  Context: coroutine.
    QEMU: convert_co_do_copy."""
    from gqemu.coroutine import (qemu_co_mutex_lock, qemu_co_mutex_unlock,
                                 qemu_coroutine_enter, qemu_coroutine_self,
                                 qemu_coroutine_yield)
    index = s.co.index(qemu_coroutine_self())
    s.running_coroutines += 1
    buf = bytearray(s.buf_sectors * BDRV_SECTOR_SIZE)
    while True:
        qemu_co_mutex_lock(s.lock)
        if s.ret != EINPROGRESS or s.sector_num >= s.total_sectors:
            qemu_co_mutex_unlock(s.lock)
            break
        n = convert_iteration_sectors(s, s.sector_num)
        if n < 0:
            qemu_co_mutex_unlock(s.lock)
            s.ret = n
            break
        sector_num, status = s.sector_num, s.status
        if not s.min_sparse and status == BLK_ZERO:
            n = min(n, s.buf_sectors)
        s.sector_num += n
        qemu_co_mutex_unlock(s.lock)
        if status == BLK_DATA or (not s.min_sparse and status == BLK_ZERO):
            s.allocated_done += n
            s.progress.qemu_progress_print(
                100.0 * s.allocated_done / s.allocated_sectors, 0)
        if status == BLK_DATA:
            ret = convert_co_read(s, sector_num, n, buf)
            if ret < 0:
                error_report("error while reading at byte %d: %s"
                             % (sector_num * BDRV_SECTOR_SIZE, os.strerror(-ret)))
                s.ret = ret
        elif not s.min_sparse and status == BLK_ZERO:
            status = BLK_DATA
            buf[:n * BDRV_SECTOR_SIZE] = _zero(n * BDRV_SECTOR_SIZE)
        if s.wr_in_order:
            while s.wr_offs != sector_num and s.ret == EINPROGRESS:
                s.wait_sector_num[index] = sector_num
                qemu_coroutine_yield()
            s.wait_sector_num[index] = -1
        if s.ret == EINPROGRESS:
            ret = convert_co_write(s, sector_num, n, buf, status)
            if ret < 0:
                error_report("error while writing at byte %d: %s"
                             % (sector_num * BDRV_SECTOR_SIZE, os.strerror(-ret)))
                s.ret = ret
        if s.wr_in_order:
            s.wr_offs = sector_num + n
            for i, co in enumerate(s.co):
                if co is not None and s.wait_sector_num[i] == s.wr_offs:
                    qemu_coroutine_enter(co)
                    break
    s.co[index] = None
    s.running_coroutines -= 1
    if not s.running_coroutines and s.ret == EINPROGRESS:
        s.ret = 0


def _count_allocated(s: ImgConvertState) -> int:
    """Context: coroutine.  Returns: 0 or -errno."""
    sector_num = 0
    while sector_num < s.total_sectors:
        n = convert_iteration_sectors(s, sector_num)
        if n < 0:
            return n
        if s.status == BLK_DATA or (not s.min_sparse and s.status == BLK_ZERO):
            s.allocated_sectors += n
        sector_num += n
    return 0


def convert_do_copy(s: ImgConvertState) -> int:
    """Context: main loop.  Returns: 0 or -errno.  QEMU: convert_do_copy."""
    from gqemu.aio import aio_wait_while, qemu_get_aio_context
    from gqemu.block import blk_bs, blk_co_flush
    from gqemu.coroutine import CoMutex, qemu_co_mutex_init, qemu_coroutine_create, \
        qemu_coroutine_enter
    if not s.has_zero_init and s.target_is_new and s.min_sparse and not s.target_has_backing:
        s.has_zero_init = bdrv_has_zero_init(blk_bs(s.target))
    if s.compressed:
        if s.cluster_sectors <= 0 or s.cluster_sectors > s.buf_sectors:
            error_report("invalid cluster size")
            return -22
        s.buf_sectors = s.cluster_sectors
    ret = run_co(_count_allocated, s)
    if ret < 0:
        return ret
    s.sector_next_status = 0
    s.ret = EINPROGRESS
    s.lock = CoMutex()
    qemu_co_mutex_init(s.lock)
    s.co = [None] * s.num_coroutines
    s.wait_sector_num = [-1] * s.num_coroutines
    for i in range(s.num_coroutines):
        s.co[i] = qemu_coroutine_create(lambda _: convert_co_do_copy(s), None)
        qemu_coroutine_enter(s.co[i])
    aio_wait_while(qemu_get_aio_context(), lambda: s.running_coroutines > 0)
    if s.ret == 0 and s.compressed:
        ret = _signal_eof(blk_bs(s.target))
        if ret < 0:
            return ret
    if s.ret == 0:
        ret = run_co(blk_co_flush, s.target)
        if ret < 0:
            error_report("error while writing at byte %d: %s"
                         % (s.total_sectors * BDRV_SECTOR_SIZE, os.strerror(-ret)))
            return ret
    return s.ret


def _copy_range_ok(s: ImgConvertState) -> bool:
    """Whether blk_co_copy_range works between the sources and the target:
    file-posix below raw or qcow2 on both sides (qcow has no copy_range; a
    qcow2 compressed or encrypted cluster refuses it).  QEMU:
    bdrv_co_copy_range_from/to, qcow2_co_copy_range_from/to."""
    from gqemu.block import blk_bs
    for blk in list(s.src) + [s.target]:
        bs: Any = blk_bs(blk)
        if bs is None or bs.drv is None or bs.drv.format_name not in ("raw", "qcow2", "file"):
            return False
        if getattr(bs.drv, "crypt_method_header", 0):
            return False
    return True


def _signal_eof(bs: Any) -> int:
    """The zero-length compressed write that ends a compressed convert:
    qcow2 rounds its file up to whole sectors; qcow refuses it (-EINVAL: not
    the image's end), and QEMU 7.2's convert fails, silently.
    QEMU: convert_do_copy's blk_pwrite_compressed(s->target, 0, 0, NULL)."""
    if bs.drv.format_name == "qcow":
        from gqemu.block.qiov import qemu_iovec_init_buf
        return run_co(bs.drv.bdrv_co_pwritev_compressed, bs, 0, 0,
                      qemu_iovec_init_buf(bytearray()))
    _align_file_end(bs)
    return 0


def _align_file_end(bs: Any) -> None:
    """Round the image file up to whole sectors once compressed clusters
    are written.  QEMU: the zero-length blk_pwrite_compressed at the end of
    convert_do_copy (qcow2_co_pwritev_compressed_part truncating its file)."""
    while bs is not None and not hasattr(bs.drv, "fd"):
        bs = bs.file.bs if bs.file is not None else None
    if bs is not None:
        size = os.fstat(bs.drv.fd).st_size
        if size % BDRV_SECTOR_SIZE:
            os.ftruncate(bs.drv.fd, size + BDRV_SECTOR_SIZE - size % BDRV_SECTOR_SIZE)


def bdrv_has_zero_init(bs: Any) -> bool:
    """Whether a fresh image reads as zeroes.  QEMU: bdrv_has_zero_init."""
    while bs is not None and bs.drv is not None:
        if bs.backing is not None:
            return False
        if bs.drv.bdrv_has_zero_init is not None:
            return bool(bs.drv.bdrv_has_zero_init(bs))
        bs = bs.file.bs if bs.file is not None else None
    return False
