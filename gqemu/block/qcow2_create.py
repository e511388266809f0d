"""qcow2 image creation (``qemu-img create -f qcow2``).

Makes the image as qemu-img does, through the qcow2 driver itself: a
three-cluster image (header, refcount table, refcount block) that the
driver opens, counts, and grows to the image size, so the L1 table,
preallocated L2 tables and data land where QEMU's allocator puts them.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2 (the driver is
opened by name).

QEMU: block/qcow2.c qcow2_co_create / qcow2_co_create_opts.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Any, Optional

from gqemu.block.qcow2_header import (
    QCOW2_COMPAT_LAZY_REFCOUNTS, QCOW2_HEADER_SIZE, QCOW2_INCOMPAT_COMPRESSION,
    QCOW2_INCOMPAT_EXTL2, QCowHeader,
    Qcow2OpenError, qcow2_header_pack)


@dataclass
class Qcow2CreateOptions:
    """The ``-o`` options of ``qemu-img create -f qcow2``."""

    size: int = 0
    version: int = 3
    cluster_size: int = 65536
    refcount_bits: int = 16
    lazy_refcounts: bool = False
    extended_l2: bool = False
    preallocation: str = "off"
    backing_file: Optional[str] = None
    backing_fmt: Optional[str] = None
    data_file: Optional[str] = None          # external data file (qcow2_data_file.py)
    data_file_raw: bool = False
    compression_type: int = 0            # QCOW2_COMPRESSION_TYPE_*


def _v3_only(what: str, conj: str = "and") -> Qcow2OpenError:
    return Qcow2OpenError(errno.EINVAL, "%s compatibility level 1.1 %s above (use "
                          "version=v3 or greater)" % (what, conj))


def qcow2_validate_create_options(o: Qcow2CreateOptions) -> None:
    """QEMU's create-time checks, in its order, with its messages (an
    unknown ``preallocation`` is the option visitor's, so it comes first).
    Raises Qcow2OpenError.  QEMU: qcow2_co_create."""
    if o.preallocation not in ("off", "metadata", "falloc", "full"):
        raise Qcow2OpenError(errno.EINVAL, "Parameter 'preallocation' does not accept "
                             "value '%s'" % o.preallocation)
    if o.size % 512:
        o.size = (o.size + 511) & ~511
    if o.extended_l2 and o.version < 3:
        raise _v3_only("Extended L2 entries are only supported with")
    cs = o.cluster_size
    if cs < 512 or cs > 2 * 1024 * 1024 or cs & (cs - 1):
        raise Qcow2OpenError(errno.EINVAL, "Cluster size must be a power of two between "
                             "512 and 2048k")
    if o.extended_l2 and cs < 16384:
        raise Qcow2OpenError(errno.EINVAL, "Extended L2 entries are only supported with "
                             "cluster sizes of at least 16384 bytes")
    if o.backing_file and o.preallocation != "off" and not o.extended_l2:
        raise Qcow2OpenError(errno.EINVAL, "Backing file and preallocation can only be "
                             "used at the same time if extended_l2 is on")
    if o.backing_fmt and not o.backing_file:
        raise Qcow2OpenError(errno.EINVAL, "Backing format cannot be used without "
                             "backing file")
    if o.lazy_refcounts and o.version < 3:
        raise _v3_only("Lazy refcounts only supported with")
    rb = o.refcount_bits
    if rb < 1 or rb > 64 or rb & (rb - 1):
        raise Qcow2OpenError(errno.EINVAL, "Refcount width must be a power of two and may "
                             "not exceed 64 bits")
    if rb != 16 and o.version < 3:
        raise _v3_only("Different refcount widths than 16 bits require", "or")
    from gqemu.block.driver import BlockError
    from gqemu.block.qcow2_data_file import qcow2_check_data_file_create
    try:
        o.preallocation = qcow2_check_data_file_create(
            o.version, o.data_file, o.data_file_raw, o.backing_file, o.preallocation)
    except BlockError as e:
        raise Qcow2OpenError(e.errno, e.msg) from None
    if o.compression_type and o.version < 3:
        raise Qcow2OpenError(errno.EINVAL, "Non-zlib compression type is only supported "
                             "with compatibility level 1.1 and above (use version=v3 or "
                             "greater)")


class Qcow2CreateFileError(Qcow2OpenError):
    """A host file could not be created; ``delete``: the files made so far
    (a file that was not created, e.g. one another user holds, stays)."""

    def __init__(self, err: int, msg: str, hint: str, delete: tuple) -> None:
        super().__init__(err, msg, hint)
        self.delete = delete


def qcow2_create_file(filename: str, o: Qcow2CreateOptions) -> None:
    """Write a new qcow2 image to ``filename`` (created or truncated) as
    qemu-img does: a minimal image of three clusters (header, refcount
    table, one refcount block) is opened, its clusters are counted, the
    full header is written, and the image is grown to its size (which
    allocates the L1 table and, if asked, preallocates) by the driver's own
    truncate; then the backing file is set.  So the file is the one QEMU
    makes, byte for byte.  Raises Qcow2OpenError (option errors; EFBIG for
    an image too large; Qcow2CreateFileError when a file cannot be made) or
    OSError.  Context: loop/tool.
    QEMU: qcow2_co_create_opts, qcow2_co_create."""
    from gqemu.block.block_int import BDRV_O_NO_BACKING, BDRV_O_RDWR, BDRV_O_RESIZE, BlockError
    from gqemu.block.io_truncate import raw_create_open
    from gqemu.block.qcow2_data_file import (qcow2_create_data_file,
                                             qcow2_data_file_create_options)
    # as QEMU: the image file, then the data file, then the options' checks
    # (a file another user holds is refused before any of them)
    try:
        os.close(raw_create_open(filename))
    except BlockError as e:
        raise Qcow2CreateFileError(e.errno, e.msg, e.hint, ()) from None
    if o.data_file is not None:
        try:
            qcow2_create_data_file(o.data_file, o.size, o.preallocation)
        except BlockError as e:
            raise Qcow2CreateFileError(e.errno, e.msg, e.hint, (filename,)) from None
    qcow2_validate_create_options(o)
    cs = o.cluster_size
    h = QCowHeader(version=o.version, cluster_bits=cs.bit_length() - 1,
                   refcount_table_offset=cs, refcount_table_clusters=1,
                   refcount_order=o.refcount_bits.bit_length() - 1,
                   header_length=QCOW2_HEADER_SIZE)
    if o.lazy_refcounts:
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS
    if o.extended_l2:
        h.incompatible_features |= QCOW2_INCOMPAT_EXTL2
    incompat, autoclear, data_opts = qcow2_data_file_create_options(o.data_file,
                                                                    o.data_file_raw)
    h.incompatible_features |= incompat
    h.autoclear_features |= autoclear
    if o.compression_type:
        h.compression_type = o.compression_type
        h.incompatible_features |= QCOW2_INCOMPAT_COMPRESSION
    fd = os.open(filename, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.pwrite(fd, qcow2_header_pack(h).ljust(cs, b"\0"), 0)
        os.pwrite(fd, struct.pack(">Q", 2 * cs).ljust(2 * cs, b"\0"), cs)
    finally:
        os.close(fd)
    from gqemu.aio import qemu_get_aio_context
    from gqemu.block.driver import bdrv_unref
    from gqemu.block.driver_open import bdrv_open
    from gqemu.block.io_misc import bdrv_poll_co
    try:
        bs = bdrv_open("file:" + filename, {"format": "qcow2", **data_opts},   # a host path
                       BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_NO_BACKING)
    except BlockError as e:
        raise Qcow2OpenError(e.errno, e.msg) from None
    try:
        ret, msg = bdrv_poll_co(qemu_get_aio_context(), _qcow2_co_create_on, bs, o)
    finally:
        bdrv_unref(bs)
    if ret < 0:
        raise Qcow2OpenError(-ret, msg)


def _qcow2_co_create_on(bs: Any, o: Qcow2CreateOptions) -> tuple[int, str]:
    """The steps of qcow2_co_create on the opened three-cluster image."""
    from gqemu.block.io_truncate import bdrv_co_truncate
    from gqemu.block.qcow2_header_update import qcow2_change_backing_file, qcow2_update_header
    from gqemu.block.qcow2_refcount import qcow2_alloc_clusters
    ret = qcow2_alloc_clusters(bs, 3 * o.cluster_size)
    bs.opaque.image_data_file = o.data_file       # the header extension names it
    if ret < 0:
        return ret, "Could not allocate clusters for qcow2 header and refcount table: %s" \
            % os.strerror(-ret)
    ret = qcow2_update_header(bs)
    if ret < 0:
        return ret, "Could not write qcow2 header: %s" % os.strerror(-ret)
    # the size (uint64_t, rounded up to a sector) goes in as an int64_t
    offset = o.size - (1 << 64) if o.size >> 63 else o.size
    ret, msg = bdrv_co_truncate(bs, offset, False, o.preallocation)
    if ret < 0:
        return ret, "Could not resize image: %s" % msg
    if o.backing_file:
        ret = qcow2_change_backing_file(bs, o.backing_file, o.backing_fmt)
        if ret < 0:
            return ret, "Could not assign backing file '%s' with format '%s': %s" % (
                o.backing_file, o.backing_fmt or "", os.strerror(-ret))
    return 0, ""
