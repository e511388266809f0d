"""gqemu-img image creation (``create``, and the target of ``convert`` and
``dd``): the generic checks, then the raw or the qcow2 part, each printing
qemu-img's "Formatting ..." line with the options in QEMU's order.

Raises ImgError / ImgOptError with qemu-img's one-line messages.
QEMU: block.c bdrv_img_create; block/file-posix.c raw_co_create_opts;
block/qcow2.c qcow2_co_create_opts.
"""
from __future__ import annotations

import errno
import os
import sys
from typing import Optional

from gqemu.cli.qemu_img_tool import (OPT_WARNINGS, ImgError, ImgOptError, blk_close,
                                     error_report, parse_option_size)



def _repeat_opt_warnings() -> None:
    sys.stdout.flush()
    for w in OPT_WARNINGS:
        error_report("warning: " + w)
    del OPT_WARNINGS[:]


def _int64(v: int) -> int:
    """A QemuOpts size as ``qemu_opts_print`` shows it (signed 64-bit)."""
    return v - (v >> 63 << 64)


def create_image(filename: str, fmt: str, size: Optional[int], backing: Optional[str],
                 backing_fmt: Optional[str], o: dict[str, str], quiet: bool,
                 open_backing: bool = False) -> None:
    """qemu-img create (``open_backing``: unless -u, the backing image is
    opened first, for its size and to check it exists; convert creates
    without opening it).  QEMU: bdrv_img_create."""
    if fmt not in ("raw", "qcow2", "qcow"):
        from gqemu.cli.qemu_img_out import creation_error
        raise ImgError("%s: %s" % (filename, creation_error(fmt)))
    _check_create_opts(filename, fmt, o)
    if backing is not None and fmt == "raw":
        raise ImgError("%s: Backing file not supported for file format 'raw'" % filename)
    if backing_fmt is not None and fmt == "raw":
        raise ImgError("%s: Backing file format not supported for file format 'raw'"
                       % filename)
    if backing == filename:                 # an image would be its own backing file
        raise ImgError("%s: Error: Trying to create an image with the same filename as "
                       "the backing file" % filename)
    if backing is not None and not backing:
        raise ImgError("%s: Expected backing file name, got empty string" % filename)
    if backing and open_backing:
        bsize, detected = _backing_size(filename, backing, backing_fmt)
        if not backing_fmt:
            raise ImgError("%s: Backing file specified without backing format" % filename,
                           tail="Detected format of %s." % detected)
        size = bsize if size is None else size
    if backing and not backing_fmt:
        raise ImgError("%s: Backing file specified without backing format" % filename)
    if size is None:
        raise ImgError("%s: Image creation needs a size parameter" % filename)
    if fmt == "raw":
        _create_raw(filename, size, o, quiet)
    elif fmt == "qcow":
        from gqemu.cli.qemu_img_create_qcow import create_qcow
        create_qcow(filename, size, backing, backing_fmt, o, quiet, _repeat_opt_warnings,
                    _host_path(filename))
    else:
        _create_qcow2(filename, size, backing, backing_fmt, o, quiet)


_BOOLS = ("on", "off", "true", "false", "yes", "no")


def _check_create_opts(filename: str, fmt: str, o: dict[str, str]) -> None:
    """The ``-o`` names and values against the format's and the protocol's
    create options, in the order given, before anything else (the size
    included) is checked.  Raises ImgOptError.  QEMU: bdrv_img_create's
    qemu_opts_do_parse."""
    from gqemu.block import bdrv_drivers
    from gqemu.block.block_int import BlockError, parse_option_size
    from gqemu.block.driver import bdrv_find_protocol
    drv = bdrv_drivers.get(fmt)
    proto = bdrv_find_protocol(_host_path(filename) if filename.startswith("file:")
                               else filename)
    types = {d[0]: d[1] for d in list(drv.create_opts if drv else ())
             + list(proto.create_opts if proto else ())}
    for k, v in o.items():
        t = types.get(k)
        if t is None:
            raise ImgOptError("%s: Invalid parameter '%s'" % (filename, k))
        if t == "bool" and v not in _BOOLS:
            raise ImgOptError("%s: Parameter '%s' expects 'on' or 'off'" % (filename, k))
        if t == "num":
            from gqemu.cutils import qemu_strtol
            if qemu_strtol(v)[0] < 0:
                raise ImgOptError("%s: Parameter '%s' expects a number" % (filename, k))
        if t == "size":
            try:
                parse_option_size(k, v)
            except BlockError as e:
                raise ImgOptError("%s: %s" % (filename, e.msg), tail=e.hint)


def _backing_size(filename: str, backing: str, backing_fmt: Optional[str]
                  ) -> tuple[int, str]:
    """The size and format of the backing image, named relative to the new
    image's folder, opened read-only and shared.  QEMU: bdrv_img_create."""
    path = backing if os.path.isabs(backing) or backing.startswith("json:") \
        else os.path.join(os.path.dirname(filename), backing)
    from gqemu.block import blk_bs, blk_getlength, blk_new_open
    from gqemu.block.driver import BlockError
    opts = {"readonly": "on"}
    if not path.startswith("json:"):       # force-share (a json: graph keeps its locks)
        opts["locking"] = "off"
    if backing_fmt:
        opts["format"] = backing_fmt
    try:
        blk = blk_new_open(path, opts, 0)
    except BlockError as e:
        raise ImgError("%s: %s" % (filename, e.msg), tail="Could not open backing image.\n")
    size = blk_getlength(blk)
    bs = blk_bs(blk)
    fmt = bs.drv.format_name if bs is not None and bs.drv is not None else "raw"
    blk_close(blk)
    return size, fmt


def _host_path(filename: str) -> str:
    """The host file a name creates: without an explicit ``file:``
    protocol prefix.  QEMU: raw_co_create_opts (strstart "file:")."""
    return filename[5:] if filename.startswith("file:") else filename


def _create_raw(filename: str, size: int, o: dict[str, str], quiet: bool) -> None:
    """A raw image: a host file of ``size`` bytes.  QEMU: raw_co_create_opts
    (file-posix)."""
    prealloc = o.pop("preallocation", None)
    if "extent_size_hint" in o:            # an XFS hint: checked, not modelled
        parse_option_size("extent_size_hint", o.pop("extent_size_hint"))
    if o:
        raise ImgOptError("%s: Invalid parameter '%s'" % (filename, next(iter(o))))
    if not quiet:
        sys.stdout.write("Formatting '%s', fmt=raw size=%d%s\n" % (
            filename, _int64(size), " preallocation=%s" % prealloc if prealloc else ""))
    _repeat_opt_warnings()
    from gqemu.block.driver import BlockError
    from gqemu.block.io_truncate import raw_create_open
    try:        # a file another user holds is refused before it is emptied
        os.close(raw_create_open(_host_path(filename)))
    except BlockError as e:
        raise ImgError("%s: %s" % (filename, e.msg), tail=e.hint + "\n" if e.hint else "")
    # file-posix creates whole sectors: the size rounded up to 512 (in
    # uint64_t), then truncated to as an int64_t offset
    size = -(-size // 512) * 512
    if prealloc and prealloc != "off":      # falloc / full: file-posix's create
        from gqemu.block.io_truncate import file_create
        if size >> 63:                      # a negative offset: "shrinking"
            raise ImgError("%s: Cannot use preallocation for shrinking files" % filename)
        ret, msg = file_create(_host_path(filename), size, prealloc)
        if ret == -errno.EFBIG:             # bdrv_img_create's message for EFBIG
            raise ImgError("%s: The image size is too large for file format 'raw'"
                           % filename)
        if ret < 0:
            raise ImgError("%s: %s" % (filename, msg))
        return
    with open(_host_path(filename), "wb") as f:
        try:
            if size >> 63:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            f.truncate(size)
        except OSError as e:
            if e.errno == errno.EFBIG:
                raise ImgError("%s: The image size is too large for file format 'raw'"
                               % filename)
            raise ImgError("%s: Could not resize file: %s" % (filename, e.strerror))
        if size:                # as file-posix does, for alignment probing
            f.write(bytes(512 if size < 4096 else 4096))


def _create_qcow2(filename: str, size: int, backing: Optional[str],
                  backing_fmt: Optional[str], o: dict[str, str], quiet: bool) -> None:
    """A qcow2 image: its options, line and errors live in
    ``qemu_img_create_qcow2.py``.  QEMU: qcow2_co_create_opts."""
    from gqemu.cli.qemu_img_create_qcow2 import create_qcow2
    create_qcow2(filename, size, backing, backing_fmt, o, quiet, _repeat_opt_warnings,
                 _host_path(filename))
