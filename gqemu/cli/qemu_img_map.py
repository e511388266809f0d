"""gqemu-img compare and map, and the block-status walk down a backing
chain that map and convert share.

QEMU: qemu-img.c img_compare, img_map (get_block_status); block/io.c
bdrv_co_common_block_status_above.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from gqemu.cli.qemu_img_tool import ImgError, blk_close, img_open, parse_args, usage_error
from gqemu.cli.qemu_img_out import run_co

if TYPE_CHECKING:                       # the block layer is imported on use
    from gqemu.block.block_backend import BlockBackend

IO_BUF_SIZE = 2 * 1024 * 1024


def _block_status(bs: Any, offset: int, nbytes: int) -> tuple[int, int]:
    """One node's status with ALLOCATED added, and ZERO for an unallocated
    range of a format without (or past the end of) its backing file.
    Context: coroutine.  Returns: (status or -errno, bytes).
    QEMU: bdrv_co_block_status (want_zero)."""
    from gqemu.block.driver import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA,
                                    BDRV_BLOCK_ZERO, bdrv_getlength)
    from gqemu.block.io_misc import bdrv_co_get_block_status
    ret, pnum, _ = bdrv_co_get_block_status(bs, offset, nbytes)
    if ret < 0 or pnum <= 0:
        return ret, max(pnum, 0)
    if ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO):
        ret |= BDRV_BLOCK_ALLOCATED
    elif bs.drv.supports_backing:
        if bs.backing is None:
            ret |= BDRV_BLOCK_ZERO
        else:
            size2 = bdrv_getlength(bs.backing.bs)
            if 0 <= size2 <= offset:
                ret |= BDRV_BLOCK_ZERO
    return ret, pnum


def bdrv_co_block_status_above(bs: Any, base: Any, offset: int,
                               nbytes: int) -> tuple[int, int]:
    """The status of ``[offset, offset + nbytes)`` as seen through the
    backing chain from ``bs`` down to (not including) ``base``; a layer
    shorter than the range reads as allocated zeroes.  Context: coroutine.
    Returns: (status or -errno, bytes it covers).
    QEMU: bdrv_co_common_block_status_above (include_base = false)."""
    from gqemu.block.driver import BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_ZERO
    ret, pnum = _block_status(bs, offset, nbytes)
    if ret < 0 or pnum == 0 or ret & BDRV_BLOCK_ALLOCATED or bs is base:
        return ret, pnum
    nbytes = pnum
    p = bs.backing.bs if bs.backing is not None else None
    while p is not None and p is not base:
        ret, pnum = _block_status(p, offset, nbytes)
        if ret < 0:
            return ret, pnum
        if pnum == 0:
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, nbytes
        if ret & BDRV_BLOCK_ALLOCATED:
            break
        nbytes = pnum
        p = p.backing.bs if p.backing is not None else None
    return ret, pnum


# ----------------------------------------------------------------- compare


def img_compare(argv: list[str]) -> int:
    """QEMU: img_compare (0 identical, 1 different, 2 error)."""
    opts, args = parse_args(argv, "hf:F:sqpU", ["help", "object=", "force-share",
                                                "image-opts"])
    fmt1 = fmt2 = None
    strict = quiet = False
    for o, v in opts:
        if o == "-f":
            fmt1 = v
        elif o == "-F":
            fmt2 = v
        elif o == "-s":
            strict = True
        elif o == "-q":
            quiet = True
    if len(args) != 2:
        raise usage_error("Expecting two image file names")
    try:
        b1 = img_open(args[0], fmt1)
    except ImgError as e:
        raise ImgError(str(e), 2)
    try:
        try:
            b2 = img_open(args[1], fmt2)
        except ImgError as e:
            raise ImgError(str(e), 2)
        try:
            ret, msg = run_co(compare_co, b1, b2, strict)
        finally:
            blk_close(b2)
    finally:
        blk_close(b1)
    if ret < 0:
        raise ImgError(msg, 2)
    if not quiet:
        sys.stdout.write(msg)
    return ret


def compare_co(b1: Any, b2: Any, strict: bool) -> tuple[int, str]:
    """Compare contents chunk by chunk.  Context: coroutine."""
    from gqemu.block import blk_co_preadv, blk_getlength
    from gqemu.block.qiov import qemu_iovec_init_buf
    l1, l2 = blk_getlength(b1), blk_getlength(b2)
    out = ""
    if l1 != l2:
        if strict:
            return 1, "Strict mode: Image size mismatch!\n"
        out += "Warning: Image size mismatch!\n"
    total = max(l1, l2)
    buf1, buf2 = bytearray(IO_BUF_SIZE), bytearray(IO_BUF_SIZE)
    off = 0
    while off < total:
        n = min(IO_BUF_SIZE, total - off)
        v1, v2 = memoryview(buf1)[:n], memoryview(buf2)[:n]
        for blk, ln, v, name in ((b1, l1, v1, 1), (b2, l2, v2, 2)):
            m = max(0, min(n, ln - off))
            v[m:] = bytes(n - m)
            if m:
                ret = blk_co_preadv(blk, off, m, qemu_iovec_init_buf(v[:m]), 0)
                if ret < 0:
                    return -1, "error while reading offset %d of image %d: %s" % (
                        off, name, os.strerror(-ret))
        if buf1[:n] != buf2[:n]:
            i = next(k for k in range(n) if buf1[k] != buf2[k])
            return 1, out + "Content mismatch at offset %d!\n" % ((off + i) & ~511)
        off += n
    return 0, out + "Images are identical.\n"


# --------------------------------------------------------------------- map


def img_map(argv: list[str]) -> int:
    """QEMU: img_map."""
    opts, args = parse_args(argv, "hf:U", ["help", "output=", "object=", "image-opts",
                                           "force-share", "start-offset=", "max-length="])
    fmt, output = None, "human"
    for o, v in opts:
        if o == "-f":
            fmt = v
        elif o == "--output":
            output = v
    if output not in ("human", "json"):
        raise ImgError("--output must be used with human or json as argument.")
    if len(args) != 1:
        raise usage_error("Expecting one image file name")
    blk = img_open(args[0], fmt)
    try:
        ret, text = run_co(map_co, blk, output)
    finally:
        blk_close(blk)
    sys.stdout.write(text)
    if ret == 1:
        raise ImgError("File contains external, encrypted or compressed clusters.")
    if ret < 0:
        raise ImgError("Could not read file metadata: %s" % os.strerror(-ret))
    return 0


def get_block_status(bs: Any, offset: int, nbytes: int) -> tuple[int, dict]:
    """One map entry, looking down the backing chain.  Context: coroutine.
    QEMU: get_block_status (qemu-img.c) over bdrv_block_status."""
    from gqemu.block.driver import (BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA,
                                    BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO, bdrv_getlength)
    from gqemu.block.io_misc import bdrv_co_get_block_status
    depth = 0
    while True:
        ret, n, f = bdrv_co_get_block_status(bs, offset, nbytes)
        if ret < 0:
            return ret, {}
        if n <= 0:
            n, ret, f = nbytes, BDRV_BLOCK_ZERO, None
        nbytes = n
        if ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO):
            ret |= BDRV_BLOCK_ALLOCATED
            break
        if bs.drv.supports_backing:
            if bs.backing is None:
                ret |= BDRV_BLOCK_ZERO
                break
            if offset >= bdrv_getlength(bs.backing.bs):
                ret |= BDRV_BLOCK_ZERO
                break
        if bs.backing is None:
            break
        bs = bs.backing.bs
        depth += 1
    has_offset = bool(ret & BDRV_BLOCK_OFFSET_VALID)
    e = {"start": offset, "length": nbytes, "depth": depth,
         "present": bool(ret & BDRV_BLOCK_ALLOCATED), "zero": bool(ret & BDRV_BLOCK_ZERO),
         "data": bool(ret & BDRV_BLOCK_DATA), "has_offset": has_offset,
         "offset": ret & ~0x1FF & ((1 << 63) - 1) if has_offset else 0,
         "filename": f.filename if f is not None and has_offset else None}
    return 0, e


def _mergeable(c: dict, n: dict) -> bool:
    if not c["length"]:
        return False
    for k in ("zero", "data", "depth", "present", "has_offset", "filename"):
        if c[k] != n[k]:
            return False
    return not c["has_offset"] or c["offset"] + c["length"] == n["offset"]


def _dump(output: str, e: dict, nxt: Any, out: list[str]) -> int:
    if output == "human":
        if e["data"] and not e["has_offset"]:
            return -1
        if e["data"] and not e["zero"]:
            out.append("%-16s%-16s%-16s%s\n" % (_hx(e["start"]), _hx(e["length"]),
                                               _hx(e["offset"]), e["filename"]))
        if nxt is not None and (not nxt["data"] or nxt["zero"]):
            nxt["data"], nxt["zero"] = False, True
        return 0
    s = ('{ "start": %d, "length": %d, "depth": %d, "present": %s, "zero": %s, "data": %s'
         % (e["start"], e["length"], e["depth"], _b(e["present"]), _b(e["zero"]), _b(e["data"])))
    if e["has_offset"]:
        s += ', "offset": %d' % e["offset"]
    out.append(s + "}" + (",\n" if nxt is not None else ""))
    return 0


def _hx(v: int) -> str:
    return "%#x" % v if v else "0"


def _b(v: bool) -> str:
    return "true" if v else "false"


def map_co(blk: BlockBackend, output: str) -> tuple[int, str]:
    """Context: coroutine.  QEMU: img_map's loop."""
    from gqemu.block import blk_bs, blk_getlength
    bs = blk_bs(blk)
    length = blk_getlength(blk)
    out = ["%-16s%-16s%-16s%s\n" % ("Offset", "Length", "Mapped to", "File")
           if output == "human" else "["]
    curr: dict = {"start": 0, "length": 0}
    while curr["start"] + curr["length"] < length:
        off = curr["start"] + curr["length"]
        ret, nxt = get_block_status(bs, off, length - off)
        if ret < 0:
            return ret, "".join(out)
        if curr["length"] and _mergeable(curr, nxt):
            curr["length"] += nxt["length"]
            continue
        if curr["length"] and _dump(output, curr, nxt, out) < 0:
            return 1, "".join(out)
        curr = nxt
    if curr["length"] and _dump(output, curr, None, out) < 0:
        return 1, "".join(out)
    if output == "json":
        out.append("]\n")
    return 0, "".join(out)
