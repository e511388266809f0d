"""Optional PIO read-ahead (a gqemu option, off by default).

QEMU reads one DRQ block per request (``ide_sector_read``), so a READ
SECTORS of 256 sectors costs 256 block requests.  With
``IDEState.readahead_max = N`` the first block of a run fetches up to N
sectors of the same command at once into a private window, and the
following blocks are served from it.  What the guest sees stays QEMU's:
every block still goes through ``ide_sector_read`` (traced, range-checked
per block), is BSY until the main loop runs a completion (a bottom half),
then DRQ + IRQ from ``ide_sector_read_cb``.  A failed read-ahead is
forgotten and the block is read alone through the normal path, so errors and
the rerror policy hit the same block as in QEMU.  The window lives only for
one command (``ide_exec_cmd`` and every reset drop it).

What differs is below the device: fewer, larger block requests (a blkdebug
rule counting reads, for one, sees fewer of them).

Must not import: gqemu.kvm or anything above hw.
QEMU: none (hw/ide/core.c's ide_sector_read is the faithful path).
"""
from __future__ import annotations

from gqemu.aio import aio_bh_schedule_oneshot
from gqemu.block.block_backend import blk_aio_preadv
from gqemu.block.qiov import qemu_iovec_init_buf
from gqemu.hw.ide.core import ide_buffered_readv, ide_sector_read_cb
from gqemu.hw.ide.internal import IDEState

__all__ = ["ide_readahead_read", "RAWindow"]


class RAWindow:
    """Sectors ``[start, start + count)`` in ``buf``, for generation ``gen``."""

    __slots__ = ("s", "gen", "start", "count", "buf", "pending", "want", "nblk")

    def __init__(self, s: IDEState) -> None:
        self.s = s
        self.gen = s.gen
        self.start = -1
        self.count = 0
        self.buf = bytearray()
        self.pending = False
        self.want = -1           # the block waiting for this window
        self.nblk = 0


def _serve(ra: RAWindow) -> None:
    """The bottom half that completes a block served from the window."""
    s = ra.s
    if s.ra is not ra or ra.gen != s.gen or ra.want < 0:
        return
    off = (ra.want - ra.start) * 512
    n = ra.nblk
    ra.want = -1
    s.io_buffer[0:n * 512] = ra.buf[off:off + n * 512]
    ide_sector_read_cb(s, 0)


def _fill_cb(opaque: RAWindow, ret: int) -> None:
    ra = opaque
    s = ra.s
    ra.pending = False
    if s.ra is not ra or ra.gen != s.gen or ra.want < 0:
        return
    if ret < 0:
        # forget it and read the block alone: errors follow QEMU's path
        want, n = ra.want, ra.nblk
        s.ra = None
        _read_alone(s, want, n)
        return
    _serve(ra)


def _read_alone(s: IDEState, sector_num: int, n: int) -> None:
    s.pio_aiocb = ide_buffered_readv(s, sector_num, memoryview(s.io_buffer)[:n * 512], n,
                                     ide_sector_read_cb, s)


def ide_readahead_read(s: IDEState, sector_num: int, n: int) -> None:
    """Read block ``[sector_num, +n)`` of a PIO read through the window.
    The caller has set BSY and checked the range.  Context: vCPU or loop."""
    ra = s.ra
    if (ra is not None and ra.gen == s.gen and not ra.pending
            and ra.start <= sector_num and sector_num + n <= ra.start + ra.count):
        ra.want, ra.nblk = sector_num, n
        s.pio_aiocb = ra
        aio_bh_schedule_oneshot(s.bus.ctx, _serve, ra)
        return
    m = min(max(n, s.readahead_max), s.nsector, s.nb_sectors - sector_num)
    if m <= n:
        s.ra = None
        _read_alone(s, sector_num, n)
        return
    ra = RAWindow(s)
    ra.start, ra.count = sector_num, m
    ra.buf = bytearray(m * 512)
    ra.pending = True
    ra.want, ra.nblk = sector_num, n
    s.ra = ra
    s.pio_aiocb = ra
    blk_aio_preadv(s.blk, sector_num << 9, qemu_iovec_init_buf(ra.buf), 0, _fill_cb, ra)

