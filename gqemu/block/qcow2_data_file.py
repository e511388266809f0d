"""qcow2 external data files: the guest data of an image whose
incompatible bit 2 is set lives in another file (the ``data-file`` child),
at host offset == guest offset; the qcow2 file keeps only the metadata.
With autoclear bit 1 (``data_file_raw``) that file stays a valid raw image:
every cluster is mapped and zero writes and discards go through to it.

Here: the child's open (``data-file`` option, or the name from the header
extension, relative to the working directory, opened as a protocol node
and never probed), the helpers the I/O paths use, the create-time option
checks and the data file's creation, amend of ``data_file`` /
``data_file_raw``, and the info fields.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_do_open "Open external data file",
qcow2_co_create, qcow2_amend_options, qcow2_get_specific_info),
block/qcow2.h (has_data_file, data_file_is_raw).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Optional

from gqemu.block.driver import (BDRV_O_CHECK, BDRV_O_NO_IO, BdrvChild, BlockError,
                                bdrv_attach_child, bdrv_getlength)
from gqemu.block.driver_open import bdrv_open
from gqemu.block.io import bdrv_co_pwrite_zeroes
from gqemu.block.qcow2_header import (QCOW2_AUTOCLEAR_DATA_FILE_RAW,
                                      QCOW2_INCOMPAT_DATA_FILE)
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

DATA_FILE_KEY = "data-file"


def has_data_file(bs: Qcow2BDS) -> bool:
    """Whether the image keeps its data in an external file (even when
    that file was not opened, as for ``qemu-img info``).  QEMU: has_data_file."""
    return bool(bs.opaque.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)


def data_file_is_raw(s: Qcow2State) -> bool:
    """QEMU: data_file_is_raw."""
    return bool(s.autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW)


def qcow2_data_child(bs: Qcow2BDS) -> BdrvChild:
    """The child guest data is read from and written to: the data file,
    or the image file itself.  QEMU: s->data_file."""
    child = bs.opaque.data_file
    return bs.file if child is None else child


def qcow2_data_file_length(bs: Qcow2BDS) -> int:
    """How far a data cluster may lie in the data file: its length, or the
    image's size when that is larger (a data cluster sits at its guest
    offset; a shorter data file grows when it is written).  -errno."""
    ret = bdrv_getlength(qcow2_data_child(bs).bs)
    return ret if ret < 0 else max(ret, bs.total_sectors * 512)


def qcow2_take_data_file_options(options: dict) -> tuple[Optional[str], dict]:
    """Take ``data-file`` (a file name, gqemu: QEMU takes a node name
    there) and ``data-file.*`` out of the open options."""
    sub = {}
    for k in [k for k in options if k.startswith(DATA_FILE_KEY + ".")]:
        sub[k[len(DATA_FILE_KEY) + 1:]] = options.pop(k)
    ref = options.pop(DATA_FILE_KEY, None)
    return (None if ref is None else str(ref)), sub


def _open_child(bs: Qcow2BDS, name: str, opts: dict, flags: int) -> BdrvChild:
    """Open the data file as a protocol node (a data file is never probed:
    its bytes are guest data)."""
    opts = dict(opts)
    if "filename" in opts:
        name = str(opts.pop("filename"))
    if "driver" not in opts and "file.filename" not in opts:
        opts["driver"] = "file"
    if not name and opts.get("driver") == "file":
        raise BlockError(errno.EINVAL, "The 'file' block driver requires a file name")
    child = bdrv_open(name, opts, flags & ~BDRV_O_CHECK)
    return bdrv_attach_child(bs, child, DATA_FILE_KEY)


def qcow2_open_data_file(bs: Qcow2BDS, ref: Optional[str], opts: dict, flags: int) -> None:
    """Open (or refuse) the external data file after the header
    extensions were read.  Raises BlockError.  QEMU: qcow2_do_open
    ("Open external data file"; BDRV_O_NO_IO opens none)."""
    s = bs.opaque
    if flags & BDRV_O_NO_IO:
        return                  # qemu-img info names the file, never opens it
    # a data file given in the options is opened first, whatever the image
    child = None if ref is None and not opts else _open_child(bs, ref or "", opts, flags)
    if s.incompatible_features & QCOW2_INCOMPAT_DATA_FILE:
        if child is None and s.image_data_file:
            # the name the image gives is a plain file name: never parsed as
            # json: options or a protocol prefix (CVE-2024-4467's fix)
            child = bdrv_attach_child(bs, bdrv_open("", {"driver": "file",
                                                         "filename": s.image_data_file},
                                                    flags & ~BDRV_O_CHECK), DATA_FILE_KEY)
        if child is None:
            raise BlockError(errno.EINVAL, "'data-file' is required for this image")
        s.data_file = child
        return
    if child is not None:
        raise BlockError(errno.EINVAL, "'data-file' can only be set for images with an "
                         "external data file")
    if data_file_is_raw(s):
        raise BlockError(errno.EINVAL, "data-file-raw requires a data file")


def qcow2_data_file_info(bs: Qcow2BDS, info: dict) -> None:
    """The "data file" / "data file raw" lines of qemu-img info (after
    the refcount bits).  QEMU: qcow2_get_specific_info."""
    s = bs.opaque
    if s.image_data_file:
        info["data file"] = s.image_data_file
    if has_data_file(bs):
        info["data file raw"] = data_file_is_raw(s)


# ------------------------------------------------------------------ create


def qcow2_check_data_file_create(version: int, data_file: Optional[str],
                                 data_file_raw: bool, backing_file: Optional[str],
                                 preallocation: str) -> str:
    """qcow2_co_create's data file checks; returns the preallocation to use
    (a raw data file needs every cluster mapped).  Raises BlockError."""
    if data_file is not None and version < 3:
        raise BlockError(errno.EINVAL, "External data files are only supported with "
                         "compatibility level 1.1 and above (use version=v3 or greater)")
    if data_file_raw:
        if data_file is None:
            raise BlockError(errno.EINVAL, "data-file-raw requires data-file")
        if backing_file:
            raise BlockError(errno.EINVAL, "Backing file and data-file-raw cannot be used "
                             "at the same time")
        if preallocation == "off":
            return "metadata"
    return preallocation


def qcow2_create_data_file(path: str, size: int, preallocation: str) -> None:
    """The data file, made as ``bdrv_create_file`` makes a raw file of the
    image's size with its preallocation (a file another user holds, e.g.
    the source of a convert, is refused untouched).  Raises BlockError or
    OSError.  QEMU: qcow2_co_create_opts (bdrv_create_file), raw_co_create."""
    from gqemu.block.io_truncate import raw_create_open
    fd = raw_create_open(path)
    try:
        if preallocation == "full":
            chunk = b"\0" * (1 << 20)
            off = 0
            while off < size:
                off += os.pwrite(fd, chunk[:min(len(chunk), size - off)], off)
        elif preallocation == "falloc" and size:
            os.posix_fallocate(fd, 0, size)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def qcow2_data_file_create_options(data_file: Optional[str], data_file_raw: bool
                                   ) -> tuple[int, int, dict]:
    """(incompatible bits, autoclear bits, open options) of a new image
    with an external data file."""
    if data_file is None:
        return 0, 0, {}
    return (QCOW2_INCOMPAT_DATA_FILE,
            QCOW2_AUTOCLEAR_DATA_FILE_RAW if data_file_raw else 0,
            {DATA_FILE_KEY + ".driver": "file", DATA_FILE_KEY + ".filename": data_file})


# ------------------------------------------------------------------- amend


def qcow2_amend_data_file_check(bs: Qcow2BDS, name: str, value: Any) -> tuple[int, str]:
    """The checks of the data_file / data_file_raw amend options.
    QEMU: qcow2_amend_options."""
    s = bs.opaque
    if name == "data_file" and value is not None and not has_data_file(bs):
        return -errno.EINVAL, ("data-file can only be set for images that use an external "
                               "data file")
    if name == "data_file_raw" and value and not data_file_is_raw(s):
        return -errno.EINVAL, "data-file-raw cannot be set on existing images"
    return 0, ""


def qcow2_amend_data_file_apply(bs: Qcow2BDS, opts: dict) -> None:
    """Set the new data file name ("" drops it) and the raw bit in the
    state; the caller rewrites the header.  QEMU: qcow2_amend_options."""
    s = bs.opaque
    if opts.get("data_file") is not None:
        s.image_data_file = opts["data_file"] or None
    raw = opts.get("data_file_raw", data_file_is_raw(s))
    if raw:
        s.autoclear_features |= QCOW2_AUTOCLEAR_DATA_FILE_RAW
    else:
        s.autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW


# --------------------------------------------------------------------- I/O


def qcow2_data_file_write_zeroes(bs: Qcow2BDS, offset: int, nbytes: int, flags: int) -> int:
    """A raw data file must read as the guest sees it: zero writes go
    through to it before the clusters are zeroed in the L2 tables.
    Context: coroutine.  QEMU: qcow2_subcluster_zeroize (data_file_is_raw)."""
    s = bs.opaque
    if not data_file_is_raw(s) or s.data_file is None:
        return 0
    return min(bdrv_co_pwrite_zeroes(s.data_file, offset, nbytes, flags), 0)
