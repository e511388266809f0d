"""``qemu-img compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt]
[-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2``.

The images are walked by block status through their backing chains, so a
range that reads as zero in both is skipped without reading it (a 4 GiB
sparse image compares in a moment); where one side is allocated and the
other not, the allocated side must read as zero; data on both sides is
read and compared in chunks of at most 2 MiB.  Then, if the sizes differ,
the rest of the longer image must read as zero.  Exit status: 0 identical,
1 different, 2 an image could not be opened, 3 block status failed, 4 a
read failed.  What QEMU prints on stdout (the verdict, ``-p``) comes after
the error messages, as a piped C stdout does.

QEMU: qemu-img.c img_compare, check_empty_sectors, compare_buffers (7.2).
"""
from __future__ import annotations

import os
import struct
import sys
from typing import Any

from gqemu.block.io_status import bdrv_co_block_status_above
from gqemu.cli.qemu_img_map import IO_BUF_SIZE
from gqemu.cli.qemu_img_out import run_co
from gqemu.cli.qemu_img_tool import (ImgError, blk_close, error_report, img_open, parse_args,
                                     usage_error)

BDRV_SECTOR_SIZE = 512


class CompareFailed(Exception):
    """Stops the walk with an exit status (1 differ, 3 status, 4 read)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def img_compare(argv: list[str]) -> int:
    """QEMU: img_compare."""
    opts, args = parse_args(argv, "hf:F:T:pqsU", ["help", "object=", "image-opts",
                                                  "force-share"], object_status=2)
    fmt1 = fmt2 = None
    cache = "writeback"
    strict = quiet = progress = image_opts = force_share = False
    for o, v in opts:
        if o == "-f":
            fmt1 = v
        elif o == "-F":
            fmt2 = v
        elif o == "-T":
            cache = v
        elif o == "-p":
            progress = True
        elif o == "-q":
            quiet = True
        elif o == "-s":
            strict = True
        elif o == "--image-opts":
            image_opts = True
        elif o in ("-U", "--force-share"):
            force_share = True
    if quiet:
        progress = False
    if len(args) != 2:
        raise usage_error("Expecting two image file names")
    from gqemu.block.drive_opts import CACHE_MODES
    from gqemu.cli.qemu_img_convert import QemuProgress
    prog = QemuProgress(progress, 2.0)
    out = CompareOutput(quiet, prog)
    try:
        if cache not in CACHE_MODES:
            error_report("Invalid source cache option: %s" % cache)
            return 2
        b1 = _open(args[0], fmt1, image_opts, force_share, cache)
        try:
            b2 = _open(args[1], fmt2, image_opts, force_share, cache)
            try:
                return run_co(compare_co, b1, b2, args[0], args[1], strict, out)
            finally:
                blk_close(b2)
        finally:
            blk_close(b1)
    finally:
        out.flush()
        prog.qemu_progress_end()


def _open(filename: str, fmt: Any, image_opts: bool, force_share: bool, cache: str) -> Any:
    try:
        return img_open(filename, fmt, image_opts=image_opts, force_share=force_share,
                        cache=cache)
    except ImgError as e:
        raise ImgError(str(e), 2)


class CompareOutput:
    """stdout held back until the end (qprintf and the progress lines)."""

    def __init__(self, quiet: bool, prog: Any) -> None:
        self.quiet = quiet
        self.prog = prog
        self.text: list[str] = []

    def qprintf(self, text: str) -> None:
        if not self.quiet:
            self.text.append(text)

    def progress(self, delta: float) -> None:
        saved = sys.stdout
        sys.stdout = _Collect(self.text)        # type: ignore[assignment]
        try:
            self.prog.qemu_progress_print(delta, 100)
        finally:
            sys.stdout = saved

    def flush(self) -> None:
        sys.stdout.write("".join(self.text))
        self.text = []


class _Collect:
    def __init__(self, into: list[str]) -> None:
        self.into = into

    def write(self, text: str) -> int:
        self.into.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def _f32(v: float) -> float:
    return float(struct.unpack("f", struct.pack("f", v))[0])


def _share(chunk: int, base: int) -> float:
    """((float) chunk / progress_base) * 100 in C floats."""
    return _f32(_f32(_f32(chunk) / _f32(base)) * 100)


def compare_co(b1: Any, b2: Any, name1: str, name2: str, strict: bool,
               out: CompareOutput) -> int:
    """The walk.  Context: coroutine.  Returns the exit status."""
    from gqemu.block import blk_bs, blk_getlength
    size1, size2 = blk_getlength(b1), blk_getlength(b2)
    for size, name in ((size1, name1), (size2, name2)):
        if size < 0:
            error_report("Can't get size of %s: %s" % (name, os.strerror(-size)))
            return 4
    total = min(size1, size2)
    base = max(size1, size2)
    out.progress(0)
    if strict and size1 != size2:
        out.qprintf("Strict mode: Image size mismatch!\n")
        return 1
    bs1, bs2 = blk_bs(b1), blk_bs(b2)
    try:
        offset = 0
        while offset < total:
            st1, pnum1 = _status(bs1, offset, size1 - offset, name1)
            st2, pnum2 = _status(bs2, offset, size2 - offset, name2)
            chunk = min(pnum1, pnum2)
            alloc1, alloc2 = st1 & _ALLOCATED, st2 & _ALLOCATED
            if strict and st1 != st2:
                out.qprintf("Strict mode: Offset %d block status mismatch!\n" % offset)
                return 1
            if st1 & _ZERO and st2 & _ZERO:
                pass
            elif alloc1 == alloc2:
                if alloc1:
                    chunk = min(chunk, IO_BUF_SIZE)
                    buf1 = _pread(b1, offset, chunk, name1)
                    buf2 = _pread(b2, offset, chunk, name2)
                    differs, pnum = compare_buffers(buf1, buf2, chunk)
                    if differs or pnum != chunk:
                        out.qprintf("Content mismatch at offset %d!\n"
                                    % (offset + (0 if differs else pnum)))
                        return 1
            else:
                chunk = min(chunk, IO_BUF_SIZE)
                if alloc1:
                    check_empty_sectors(b1, offset, chunk, name1, out)
                else:
                    check_empty_sectors(b2, offset, chunk, name2, out)
            offset += chunk
            out.progress(_share(chunk, base))
        if size1 != size2:
            out.qprintf("Warning: Image size mismatch!\n")
            over, name_over = (b1, name1) if size1 > size2 else (b2, name2)
            while offset < base:
                st, chunk = _status(blk_bs(over), offset, base - offset, name_over)
                if st & _ALLOCATED and not st & _ZERO:
                    chunk = min(chunk, IO_BUF_SIZE)
                    check_empty_sectors(over, offset, chunk, name_over, out)
                offset += chunk
                out.progress(_share(chunk, base))
    except CompareFailed as e:
        return e.status
    out.qprintf("Images are identical.\n")
    return 0


_ALLOCATED = 0x10
_ZERO = 0x02


def _status(bs: Any, offset: int, nbytes: int, name: str) -> tuple[int, int]:
    ret, pnum = bdrv_co_block_status_above(bs, None, offset, nbytes)
    if ret < 0 or pnum <= 0:
        error_report("Sector allocation test failed for %s" % name)
        raise CompareFailed(3)
    return ret, pnum


def _pread(blk: Any, offset: int, nbytes: int, name: str) -> bytearray:
    from gqemu.block import blk_co_preadv
    from gqemu.block.qiov import qemu_iovec_init_buf
    buf = bytearray(nbytes)
    ret = blk_co_preadv(blk, offset, nbytes, qemu_iovec_init_buf(buf), 0)
    if ret < 0:
        error_report("Error while reading offset %d of %s: %s"
                     % (offset, name, os.strerror(-ret)))
        raise CompareFailed(4)
    return buf


def check_empty_sectors(blk: Any, offset: int, nbytes: int, name: str,
                        out: CompareOutput) -> None:
    """The range must read as zero, else "Content mismatch" at the sector
    of the first non-zero byte.  QEMU: check_empty_sectors."""
    buf = _pread(blk, offset, nbytes, name)
    idx = find_nonzero(buf)
    if idx >= 0:
        out.qprintf("Content mismatch at offset %d!\n" % (offset + idx))
        raise CompareFailed(1)


def find_nonzero(buf: bytearray) -> int:
    """-1 if ``buf`` is all zeroes, else the start (in the buffer) of the
    first 512-byte sector holding a non-zero byte.  QEMU: find_nonzero."""
    nonzero = len(buf) - len(buf.lstrip(b"\0"))
    if nonzero == len(buf):
        return -1
    return nonzero // BDRV_SECTOR_SIZE * BDRV_SECTOR_SIZE


def compare_buffers(buf1: bytearray, buf2: bytearray, nbytes: int) -> tuple[bool, int]:
    """Whether the first 512-byte sector differs, and how many bytes from
    the start (whole sectors, or the rest) share that state.
    QEMU: compare_buffers."""
    mv1, mv2 = memoryview(buf1), memoryview(buf2)
    i = min(nbytes, BDRV_SECTOR_SIZE)
    res = mv1[:i] != mv2[:i]
    if not res and mv1[:nbytes] == mv2[:nbytes]:
        return False, nbytes                   # the common case: all equal
    while i < nbytes:
        n = min(nbytes - i, BDRV_SECTOR_SIZE)
        if (mv1[i:i + n] != mv2[i:i + n]) != res:
            break
        i += n
    return res, i
