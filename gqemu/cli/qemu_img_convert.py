"""gqemu-img convert, as qemu-img 7.2 does it: options, target creation,
``-p`` progress; the copy itself is in qemu_img_copy.

Zero and unallocated source ranges are not written to a fresh target that
reads as zeroes; data buffers skip runs of at least ``-S`` zero bytes
(default 4k; ``-S 0`` writes everything).  ``-m`` coroutines (default 8)
copy, writing in order unless ``-W``.  With ``-n`` the target is not
created and may hold data, so zero ranges are written with write_zeroes.
``-B``/``-F`` create the target on a backing file and leave what the
source's own backing chain provides unallocated.

QEMU: qemu-img.c img_convert; util/qemu-progress.c.
"""
from __future__ import annotations

import struct
import sys
from typing import Any, Optional

from gqemu.cli.qemu_img_copy import (BDRV_SECTOR_SIZE, ImgConvertState, convert_do_copy)
from gqemu.cli.qemu_img_tool import (ImgError, ImgOptError, accumulate_options, blk_close,
                                     cvtnum, has_help_option,
                                     img_open, parse_args, parse_o, parse_snapshot_param,
                                     qemu_strtol)

MAX_BUF_SECTORS = 32768
MAX_COROUTINES = 16


def _f32(v: float) -> float:
    return float(struct.unpack("f", struct.pack("f", v))[0])


class QemuProgress:
    """qemu-img's ``-p``: ``    (NN.NN/100%)`` + CR, redrawn when it moved
    by more than ``min_skip`` since the last one or hit 0 or 100 (deltas too
    small to show still add up); a newline at the end.
    QEMU keeps the figures in C floats.  QEMU: util/qemu-progress.c."""

    def __init__(self, enabled: bool, min_skip: float) -> None:
        self.enabled = enabled
        self.min_skip = _f32(min_skip)
        self.current = 0.0
        self.last_print = 0.0

    def qemu_progress_print(self, delta: float, maximum: int) -> None:
        delta = _f32(delta)
        current = delta if maximum == 0 else _f32(self.current + _f32(_f32(delta / 100) * maximum))
        current = min(current, 100.0)
        self.current = current                  # kept even when not printed
        if (current > _f32(self.last_print + self.min_skip)
                or current < _f32(self.last_print - self.min_skip)
                or current == 100 or current == 0):
            self.last_print = current
            if self.enabled:
                sys.stdout.write("    (%3.2f/100%%)\r" % current)
                sys.stdout.flush()

    def qemu_progress_end(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()



# ------------------------------------------------------------- the command


def _pow2floor(v: int) -> int:
    return 1 << (v.bit_length() - 1) if v > 0 else 0


def img_convert(argv: list[str]) -> int:
    """QEMU: img_convert (the source images are concatenated)."""
    opts, args = parse_args(argv, "hf:O:B:Cco:l:S:pt:T:F:nm:WUqr:",
                            ["help", "object=", "image-opts", "target-image-opts", "force-share",
                             "target-is-zero", "salvage", "bitmaps", "skip-broken-bitmaps"])
    s = ImgConvertState()
    fmt, out_fmt, backing, backing_fmt = None, None, None, None
    olist: list[str] = []
    progress = quiet = skip_create = explicit_zero = False
    image_opts = tgt_image_opts = False
    copy_range = explicit_sparse = False
    cache = "unsafe"
    sn_opts: Optional[dict] = None
    snapshot_name: Optional[str] = None
    for o, v in opts:
        if o == "-l":
            if v.startswith("snapshot."):
                sn_opts = parse_snapshot_param(v)
            else:
                snapshot_name = v
        elif o == "-f":
            fmt = v
        elif o == "-O":
            out_fmt = v
        elif o == "-o":
            accumulate_options(olist, v)
        elif o == "-C":
            copy_range = s.copy_range = True
        elif o == "--bitmaps":
            s.bitmaps = True
        elif o == "--skip-broken-bitmaps":
            s.skip_broken = True
        elif o == "-B":
            backing = v
        elif o == "-F":
            backing_fmt = v
        elif o == "-c":
            s.compressed = True
        elif o == "-p":
            progress = True
        elif o == "-q":
            quiet = True
        elif o == "-n":
            skip_create = True
        elif o == "--image-opts":
            image_opts = True
        elif o == "--target-image-opts":
            tgt_image_opts = True
        elif o == "-t":
            cache = v
        elif o == "-T":
            s.src_cache = v
        elif o == "-W":
            s.wr_in_order = False
        elif o == "--target-is-zero":
            explicit_zero = True
        elif o == "--salvage":
            s.salvage = True
        elif o == "-S":
            sval = cvtnum("buffer size for sparse output", v)
            if sval % BDRV_SECTOR_SIZE or sval // BDRV_SECTOR_SIZE > MAX_BUF_SECTORS:
                raise ImgError("Invalid buffer size for sparse output specified. Valid sizes "
                               "are multiples of %d up to %d. Select 0 to disable sparse "
                               "detection (fully allocates output)."
                               % (BDRV_SECTOR_SIZE, MAX_BUF_SECTORS * BDRV_SECTOR_SIZE))
            s.min_sparse = sval // BDRV_SECTOR_SIZE
            explicit_sparse = True
        elif o == "-r":
            cvtnum("rate limit", v)     # checked; copying is not throttled
        elif o == "-m":
            m = qemu_strtol(v)
            if m is None or not 1 <= m <= MAX_COROUTINES:
                raise ImgError("Invalid number of coroutines. Allowed number of coroutines "
                               "is between 1 and %d" % MAX_COROUTINES)
            s.num_coroutines = m
    if out_fmt is None and not tgt_image_opts:
        out_fmt = "raw"
    if s.skip_broken and not s.bitmaps:
        raise ImgError("Use of --skip-broken-bitmaps requires --bitmaps")
    if s.compressed and copy_range:
        raise ImgError("Cannot enable copy offloading when -c is used")
    if explicit_sparse and copy_range:
        raise ImgError("Cannot enable copy offloading when -S is used")
    if copy_range and s.salvage:
        raise ImgError("Cannot use copy offloading in salvaging mode")
    if tgt_image_opts and not skip_create:
        raise ImgError("--target-image-opts requires use of -n flag")
    if skip_create and olist:
        raise ImgError("-o has no effect when skipping image creation")
    if explicit_zero and not skip_create:
        raise ImgError("--target-is-zero requires use of -n flag")
    if olist and has_help_option(",".join(olist)):
        from gqemu.cli.qemu_img_opts_help import print_block_option_help
        return print_block_option_help(args[-1] if len(args) > 1 else None,
                                       out_fmt or "raw")   # (-n refuses -o first)
    if len(args) < 2:
        raise ImgError("Must specify image file name")
    from gqemu.block.drive_opts import CACHE_MODES
    if s.src_cache not in CACHE_MODES:
        raise ImgError("Invalid source cache option: %s" % s.src_cache)
    s.has_zero_init = explicit_zero
    s.quiet = quiet
    s.progress = QemuProgress(progress and not quiet, 1.0)
    s.progress.qemu_progress_print(0, 100)
    ok = False
    try:
        _convert(s, args[:-1], args[-1], fmt, out_fmt, parse_o(olist), backing, backing_fmt,
                 skip_create, cache, (sn_opts, snapshot_name), (image_opts, tgt_image_opts))
        ok = True
    finally:
        if ok:
            s.progress.qemu_progress_print(100, 0)
        s.progress.qemu_progress_end()
    return 0


def _load_snapshot(s: ImgConvertState, nsrc: int, snapshot: tuple) -> None:
    """``-l``: read the first source from an internal snapshot.
    QEMU: img_convert (bdrv_snapshot_load_tmp[_by_id_or_name])."""
    sn_opts, name = snapshot
    if sn_opts is None and name is None:
        return
    if sn_opts is None and nsrc > 1:
        raise ImgError("No support for concatenating multiple snapshot")
    from gqemu.block import blk_bs
    from gqemu.block.qcow2_snapshot_tmp import bdrv_snapshot_load_tmp
    from gqemu.cli.qemu_img_out import run_co
    bs = blk_bs(s.src[0])
    assert bs is not None                       # img_open opened it
    if sn_opts is not None:
        ret, msg = run_co(bdrv_snapshot_load_tmp, bs, sn_opts.get("id"), sn_opts.get("name"))
    else:
        ret, msg = run_co(bdrv_snapshot_load_tmp, bs, None, name, True)
    if ret < 0:
        raise ImgError("Failed to load snapshot: %s" % msg)


def _convert(s: ImgConvertState, src_names: list[str], dst_name: str, fmt: Optional[str],
             out_fmt: Optional[str], o: dict[str, str], backing: Optional[str],
             backing_fmt: Optional[str], skip_create: bool, cache: str,
             snapshot: tuple, image_opts: tuple[bool, bool]) -> None:
    """``image_opts``: (--image-opts, --target-image-opts); without -O the
    latter leaves ``out_fmt`` None (the options name the driver)."""
    from gqemu.block import blk_bs, blk_getlength, blk_new_open
    from gqemu.block.block_int import BDRV_O_NO_SHARE
    from gqemu.block.driver import BlockError
    try:
        for name in src_names:
            blk = img_open(name, fmt, False, BDRV_O_NO_SHARE, image_opts=image_opts[0],
                           cache=s.src_cache)
            s.src.append(blk)
            bs = blk_bs(blk)
            assert bs is not None
            s.src_sectors.append(-(-blk_getlength(blk) // BDRV_SECTOR_SIZE))
            s.src_alignment.append(max(-(-bs.bl.request_alignment // BDRV_SECTOR_SIZE),
                                       getattr(bs.drv, "cluster_size", 0) // BDRV_SECTOR_SIZE,
                                       1))
        s.total_sectors = sum(s.src_sectors)
        _load_snapshot(s, len(src_names), snapshot)
        if not skip_create:
            assert out_fmt is not None          # --target-image-opts needs -n
            if out_fmt not in ("raw", "qcow2", "qcow"):
                from gqemu.cli.qemu_img_out import creation_error
                raise ImgError(creation_error(out_fmt))
            from gqemu.cli.qemu_img_create import _check_create_opts
            try:                    # QEMU parses -o before anything below
                _check_create_opts(dst_name, out_fmt, o)
            except ImgOptError as e:
                raise ImgError(str(e)[len(dst_name) + 2:], tail=e.tail) from None
            o.pop("size", None)     # replaced by the sources' size
            if backing and out_fmt == "raw":
                raise ImgError("Backing file not supported for file format 'raw'")
            if backing_fmt and out_fmt == "raw":
                raise ImgError("Backing file format not supported for file format 'raw'")
            backing = o.pop("backing_file", backing)
            backing_fmt = o.pop("backing_fmt", backing_fmt)
        s.target_has_backing = bool(backing)
        if s.has_zero_init and s.target_has_backing:
            raise ImgError("Cannot use --target-is-zero when the destination image has a "
                           "backing file")
        if len(s.src) > 1 and s.target_has_backing:
            raise ImgError("Having a backing file for the target makes no sense when "
                           "concatenating multiple input images")
        if s.target_has_backing and not backing_fmt and not skip_create:
            raise ImgError("Use of backing file requires explicit backing format")
        if s.compressed and not skip_create and out_fmt not in ("qcow2", "qcow"):
            raise ImgError("Compression not supported for this file format")
        if s.bitmaps:
            if len(s.src) > 1:
                raise ImgError("Copying bitmaps only possible with single source")
            from gqemu.cli.qemu_img_bitmap import convert_check_bitmaps
            convert_check_bitmaps(blk_bs(s.src[0]), s.skip_broken)
        if out_fmt is not None and not skip_create:
            from gqemu.cli.qemu_img_create import create_image
            try:
                create_image(dst_name, out_fmt, s.total_sectors * BDRV_SECTOR_SIZE,
                             backing, backing_fmt, o, True)
            except ImgError as e:
                msg = str(e)
                if msg.startswith(dst_name + ": "):
                    msg = msg[len(dst_name) + 2:]
                if isinstance(e, ImgOptError):
                    raise ImgError(msg, tail=e.tail)
                raise ImgError("%s: error while converting %s: %s" % (dst_name, out_fmt, msg),
                               tail=e.tail)
        s.target_is_new = not skip_create
        from gqemu.block.drive_opts import CACHE_MODES
        if cache not in CACHE_MODES:        # -t, parsed when the target is opened
            raise ImgError("Invalid cache option: %s" % cache)
        if image_opts[1]:
            from gqemu.block.driver import BDRV_O_UNMAP
            s.target = img_open(dst_name, out_fmt, True, BDRV_O_UNMAP if s.min_sparse else 0,
                                image_opts=True, cache=cache)
        else:
            opts = {"format": out_fmt, "cache": cache}
            if s.min_sparse:
                opts["discard"] = "unmap"
            try:
                s.target = blk_new_open(dst_name, opts)
            except BlockError as e:
                hint = e.hint + ("\n" if e.hint and not e.hint.endswith("\n") else "")
                raise ImgError("Could not open '%s': %s" % (dst_name, e.msg),
                               tail=hint) from None
        try:
            out_bs: Any = blk_bs(s.target)
            if s.bitmaps and not (out_bs.drv.format_name == "qcow2"
                                  and out_bs.drv.qcow_version >= 3):
                raise ImgError("Format driver '%s' does not support bitmaps"
                               % out_bs.drv.format_name)
            if s.compressed and out_bs.drv.format_name not in ("qcow2", "qcow"):
                raise ImgError("Compression not supported for this file format")
            _convert_open(s, skip_create)
            if s.bitmaps:
                from gqemu.cli.qemu_img_bitmap import convert_copy_bitmaps
                convert_copy_bitmaps(blk_bs(s.src[0]), out_bs, s.skip_broken)
        finally:
            blk_close(s.target)
    finally:
        for blk in s.src:
            blk_close(blk)


def _convert_open(s: ImgConvertState, skip_create: bool) -> None:
    from gqemu.block import blk_bs, blk_getlength
    from gqemu.block.driver import bdrv_getlength
    out_bs: Any = blk_bs(s.target)
    bl = out_bs.bl
    s.buf_sectors = min(MAX_BUF_SECTORS, max(s.buf_sectors, bl.opt_transfer >> 9,
                                             bl.pdiscard_alignment >> 9))
    s.alignment = max(_pow2floor(s.min_sparse), -(-bl.request_alignment // BDRV_SECTOR_SIZE))
    if skip_create and -(-blk_getlength(s.target) // BDRV_SECTOR_SIZE) < s.total_sectors:
        raise ImgError("output file is smaller than input file")
    s.target_backing_sectors = -1
    if s.target_has_backing and s.target_is_new and out_bs.backing is not None:
        n = bdrv_getlength(out_bs.backing.bs)
        s.target_backing_sectors = -(-n // BDRV_SECTOR_SIZE) if n >= 0 else -1
    cs = getattr(out_bs.drv, "cluster_size", 0)
    if cs:
        s.cluster_sectors = cs // BDRV_SECTOR_SIZE
    if convert_do_copy(s) < 0:
        raise ImgError("", 1)
