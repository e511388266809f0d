"""qcow2 image creation (``qemu-img create -f qcow2``).

Lays out a fresh image as qemu-img does: header (with the feature-name
table and backing-format extension) in cluster 0, then the refcount table,
the refcount blocks that cover every metadata cluster, and the L1 table;
with ``preallocation`` also the L2 tables and data clusters.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c qcow2_co_create / qcow2_co_create_opts.
"""
from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass
from typing import Optional

from gqemu.block.qcow2_header import (
    QCOW2_COMPAT_LAZY_REFCOUNTS, QCOW2_HEADER_SIZE, QCOW2_INCOMPAT_EXTL2,
    QCOW_L2_BITMAP_ALL_ALLOC, QCOW_OFLAG_COPIED, QCowHeader, Qcow2OpenError,
    qcow2_build_header_cluster, size_to_l1)


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


def qcow2_validate_create_options(o: Qcow2CreateOptions) -> None:
    """QEMU's create-time checks, with its messages.  Raises Qcow2OpenError."""
    cs = o.cluster_size
    if cs < 512 or cs > 2 * 1024 * 1024 or cs & (cs - 1):
        raise Qcow2OpenError(errno.EINVAL, "Cluster size must be a power of two between "
                             "512 and 2048k")
    rb = o.refcount_bits
    if rb < 1 or rb > 64 or rb & (rb - 1):
        raise Qcow2OpenError(errno.EINVAL, "Refcount width must be a power of two and may "
                             "not exceed 64 bits")
    if o.version < 3:
        if rb != 16:
            raise Qcow2OpenError(errno.EINVAL, "Different refcount widths than 16 bits "
                                 "require compatibility level 1.1 or above (use version=v3 "
                                 "or greater)")
        if o.lazy_refcounts:
            raise Qcow2OpenError(errno.EINVAL, "Lazy refcounts only supported with "
                                 "compatibility level 1.1 and above (use version=v3 or "
                                 "greater)")
        if o.extended_l2:
            raise Qcow2OpenError(errno.EINVAL, "Extended L2 entries are only supported with"
                                 " compatibility level 1.1 and above (use version=v3 or "
                                 "greater)")
    if o.extended_l2 and cs < 16384:
        raise Qcow2OpenError(errno.EINVAL, "Extended L2 entries are only supported with "
                             "cluster sizes of at least 16384 bytes")
    if o.preallocation not in ("off", "metadata", "falloc", "full"):
        raise Qcow2OpenError(errno.EINVAL, "Invalid parameter '%s'" % o.preallocation)
    if o.backing_file and o.preallocation != "off":
        raise Qcow2OpenError(errno.EINVAL, "Backing file and preallocation can only be "
                             "used at the same time if extended_l2 is on")
    if o.size % 512:
        o.size = (o.size + 511) & ~511
    if o.backing_fmt and not o.backing_file:
        raise Qcow2OpenError(errno.EINVAL, "Backing format cannot be used without "
                             "backing file")


def _set_rc(block: bytearray, order: int, idx: int) -> None:
    from gqemu.block.qcow2_refcount import set_refcount_ro
    set_refcount_ro(block, order, idx, 1)


def qcow2_create_file(filename: str, o: Qcow2CreateOptions) -> None:
    """Write a new qcow2 image to ``filename`` (created or truncated).
    Raises Qcow2OpenError (option errors) or OSError.  Context: loop/tool."""
    qcow2_validate_create_options(o)
    cs = o.cluster_size
    cb = cs.bit_length() - 1
    order = o.refcount_bits.bit_length() - 1
    l2_bits = cb - (4 if o.extended_l2 else 3)
    l1_size = size_to_l1(cb, l2_bits, o.size)
    if l1_size * 8 > 32 * 1024 * 1024:
        raise Qcow2OpenError(errno.EFBIG, "Could not resize image: Image is too big")
    l1_clusters = max(1, (l1_size * 8 + cs - 1) // cs) if l1_size else 0
    rbs = cs * 8 // o.refcount_bits
    prealloc = o.preallocation != "off"
    l2_count = l1_size if prealloc else 0
    data_clusters = ((o.size + cs - 1) // cs) if prealloc else 0
    meta = 1 + l1_clusters + l2_count
    nb_blocks = table_clusters = 1
    while True:
        total = meta + nb_blocks + table_clusters + data_clusters
        nb = (total + rbs - 1) // rbs
        tc = (nb * 8 + cs - 1) // cs
        if nb <= nb_blocks and tc <= table_clusters:
            break
        nb_blocks, table_clusters = max(nb, nb_blocks), max(tc, table_clusters)
    reftable_off = cs
    refblocks_off = reftable_off + table_clusters * cs
    l1_off = refblocks_off + nb_blocks * cs
    l2_off = l1_off + l1_clusters * cs
    data_off = l2_off + l2_count * cs
    total = data_off // cs + data_clusters
    h = QCowHeader(version=o.version, cluster_bits=cb, size=o.size, l1_size=l1_size,
                   l1_table_offset=l1_off if l1_size else 0,
                   refcount_table_offset=reftable_off,
                   refcount_table_clusters=table_clusters, refcount_order=order,
                   header_length=QCOW2_HEADER_SIZE if o.version >= 3 else 72)
    if o.lazy_refcounts:
        h.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS
    if o.extended_l2:
        h.incompatible_features |= QCOW2_INCOMPAT_EXTL2
    cluster0 = qcow2_build_header_cluster(h, cs, o.backing_fmt, [], o.backing_file)
    reftable = [refblocks_off + i * cs for i in range(nb_blocks)]
    reftable += [0] * (table_clusters * cs // 8 - nb_blocks)
    blocks = bytearray(nb_blocks * cs)
    view = memoryview(blocks)
    for k in range(total):
        b, idx = divmod(k, rbs)
        _set_rc(view[b * cs:(b + 1) * cs], order, idx)  # type: ignore[arg-type]
    l1 = [0] * l1_size
    fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, cluster0, 0)
        os.pwrite(fd, struct.pack(">%dQ" % len(reftable), *reftable), reftable_off)
        os.pwrite(fd, bytes(blocks), refblocks_off)
        if prealloc:
            esz = 16 if o.extended_l2 else 8
            per_l2 = 1 << l2_bits
            for i in range(l1_size):
                l1[i] = (l2_off + i * cs) | QCOW_OFLAG_COPIED
                l2 = bytearray(cs)
                for j in range(per_l2):
                    c = i * per_l2 + j
                    if c >= data_clusters:
                        break
                    struct.pack_into(">Q", l2, j * esz, (data_off + c * cs) | QCOW_OFLAG_COPIED)
                    if o.extended_l2:
                        struct.pack_into(">Q", l2, j * esz + 8, QCOW_L2_BITMAP_ALL_ALLOC)
                os.pwrite(fd, bytes(l2), l2_off + i * cs)
        if l1_size:
            os.pwrite(fd, struct.pack(">%dQ" % l1_size, *l1), l1_off)
        end = total * cs if prealloc else max(os.fstat(fd).st_size, l1_off + l1_clusters * cs)
        os.ftruncate(fd, end)
        if o.preallocation in ("falloc", "full") and data_clusters:
            os.posix_fallocate(fd, data_off, data_clusters * cs)
        os.fsync(fd)
    finally:
        os.close(fd)
