"""qcow2 open: the header checks of ``qcow2_do_open`` in QEMU's order
(reliability 2.1), loading L1, refcount table and snapshots, and opening the
backing chain (relative names, format from the header, loop and depth
limits, no probing a backing file as raw).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2.c qcow2_do_open; block.c bdrv_open_backing_file.
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.driver import (BDRV_O_CHECK, BDRV_O_NO_BACKING, BDRV_O_RDWR, BlockError,
                                bdrv_attach_child, bdrv_child_flags)
from gqemu.block.driver_open import bdrv_open
from gqemu.block.qcow2_crypto import (
    qcow2_crypto_check_method, qcow2_crypto_luks_open, qcow2_crypto_open,
    qcow2_crypto_update_options)
from gqemu.block.qcow2_options import qcow2_update_options
from gqemu.block.qcow2_overlap import (
    qcow2_co_flush_file, qcow2_co_pread_file, qcow2_co_pwrite_file)
from gqemu.block.qcow2_header import (
    INT_MAX, L1E_SIZE, QCOW2_AUTOCLEAR_MASK, QCOW2_EXT_MAGIC_CRYPTO_HEADER, QCOW2_HEADER_SIZE,
    QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DATA_FILE, QCOW2_INCOMPAT_EXTL2,
    QCOW2_INCOMPAT_MASK, QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER, QCOW_MAX_L1_SIZE,
    QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOTS, QCowHeader, Qcow2OpenError,
    qcow2_check_header_fields,
    qcow2_header_unpack, qcow2_probe, qcow2_read_extensions, qcow2_validate_table,
    report_unsupported_feature, size_to_l1)
from gqemu.block.qcow2_refcount import qcow2_refcount_init
from gqemu.block.qcow2_snapshot_table import qcow2_read_snapshots
from gqemu.block.qcow2_state import Qcow2BDS, Qcow2State

ENOTSUP = errno.ENOTSUP
BACKING_CHAIN_MAX = 100
QCOW2_CHAIN_KEY = "x-gqemu-backing-chain"


@coroutine_fn
def qcow2_do_open(bs: Qcow2BDS, flags: int,
                  options: Optional[dict] = None
                  ) -> Optional[Qcow2OpenError | BlockError]:
    """The checks and loads of qcow2_do_open, in QEMU's order; the qcow2
    runtime options are taken out of ``options``.
    Returns: None, or the Qcow2OpenError / BlockError (an option's) to raise.
    QEMU: qcow2_do_open."""
    try:
        _qcow2_do_open(bs, flags, {} if options is None else options)
    except (Qcow2OpenError, BlockError) as e:
        return e
    return None


@coroutine_fn
def _qcow2_do_open(bs: Qcow2BDS, flags: int, options: dict) -> None:
    """QEMU's qcow2_do_open, step by step; each step raises Qcow2OpenError
    and runs only when the ones before it passed, so the first failing
    check is QEMU's."""
    s = bs.opaque
    h, cluster0 = _open_read_header(bs)
    ext_end = h.backing_file_offset or s.cluster_size
    _open_check_features(s, h, cluster0, ext_end, flags)
    _open_set_geometry(s, h)
    _open_check_tables(s, h, flags)
    _open_read_l1_table(bs)
    _open_init_caches(bs, h.size, options, flags)
    _open_read_extensions(bs, s, h, cluster0, ext_end, flags)
    qcow2_crypto_open(s, flags)
    if not flags & BDRV_O_CHECK:        # check reads (and repairs) the table itself
        s.nb_snapshots = h.nb_snapshots
        s.snapshots_offset = h.snapshots_offset
        s.snapshots = qcow2_read_snapshots(bs, h.nb_snapshots, h.snapshots_offset)
    _open_clear_autoclear(bs)


@coroutine_fn
def _open_read_header(bs: Qcow2BDS) -> tuple[QCowHeader, bytearray]:
    """Read and check the header, then read the whole first cluster (where
    the extensions and the backing file name live).  Sets the version,
    cluster size and feature fields.  QEMU: qcow2_do_open (header)."""
    s = bs.opaque
    ret, buf = qcow2_co_pread_file(bs, 0, QCOW2_HEADER_SIZE)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not read qcow2 header: %s" % os.strerror(-ret))
    h = qcow2_header_unpack(buf)
    qcow2_check_header_fields(h)
    s.header = h
    s.qcow_version = h.version
    s.cluster_bits = h.cluster_bits
    s.cluster_size = 1 << h.cluster_bits
    ret, cluster0 = qcow2_co_pread_file(bs, 0, s.cluster_size)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not read qcow2 header: %s" % os.strerror(-ret))
    s.unknown_header_fields = bytes(cluster0[QCOW2_HEADER_SIZE:h.header_length]) \
        if h.header_length > QCOW2_HEADER_SIZE else b""
    s.incompatible_features = h.incompatible_features
    s.compatible_features = h.compatible_features
    s.autoclear_features = h.autoclear_features
    return h, cluster0


def _open_check_features(s: Qcow2State, h: QCowHeader, cluster0: bytearray, ext_end: int,
                         flags: int) -> None:
    """Unknown incompatible features (named from the feature table), the
    corrupt bit, subclusters, refcount width and encryption.
    QEMU: qcow2_do_open (feature checks)."""
    if s.incompatible_features & ~QCOW2_INCOMPAT_MASK:
        try:
            table = qcow2_read_extensions(cluster0, h.header_length, ext_end).feature_table
        except Qcow2OpenError:
            table = None
        raise Qcow2OpenError(ENOTSUP, report_unsupported_feature(
            table, s.incompatible_features & ~QCOW2_INCOMPAT_MASK))
    if s.incompatible_features & QCOW2_INCOMPAT_CORRUPT and flags & BDRV_O_RDWR \
            and not flags & BDRV_O_CHECK:
        raise Qcow2OpenError(errno.EACCES, "qcow2: Image is corrupt; cannot be opened read/write")
    s.extended_l2 = bool(s.incompatible_features & QCOW2_INCOMPAT_EXTL2)
    s.subclusters_per_cluster = QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER if s.extended_l2 else 1
    s.subcluster_size = s.cluster_size // s.subclusters_per_cluster
    s.subcluster_bits = s.subcluster_size.bit_length() - 1
    if s.subcluster_size < 512:
        raise Qcow2OpenError(errno.EINVAL, "Unsupported subcluster size: %d" % s.subcluster_size)
    if h.refcount_order > 6:
        raise Qcow2OpenError(errno.EINVAL, "Reference count entry width too large; "
                             "may not exceed 64 bits")
    s.refcount_order = h.refcount_order
    s.refcount_bits = 1 << h.refcount_order
    s.refcount_max = (1 << s.refcount_bits) - 1
    qcow2_crypto_check_method(s, h.crypt_method)


def _open_set_geometry(s: Qcow2State, h: QCowHeader) -> None:
    """The sizes derived from the cluster size and refcount width.
    QEMU: qcow2_do_open (geometry)."""
    cb = s.cluster_bits
    s.l2_entry_size = 16 if s.extended_l2 else 8
    s.l2_bits = cb - (4 if s.extended_l2 else 3)
    s.l2_size = 1 << s.l2_bits
    s.refcount_block_bits = cb - (s.refcount_order - 3)
    s.refcount_block_size = 1 << s.refcount_block_bits
    s.size = h.size
    s.csize_shift = 62 - (cb - 8)
    s.csize_mask = (1 << (cb - 8)) - 1
    s.cluster_offset_mask = (1 << s.csize_shift) - 1
    s.refcount_table_offset = h.refcount_table_offset
    s.refcount_table_size = h.refcount_table_clusters << (cb - 3)


def _open_check_tables(s: Qcow2State, h: QCowHeader, flags: int) -> None:
    """Refcount table, snapshot table and active L1 table inside the file
    and within their limits; the L1 table covers the disk.
    QEMU: qcow2_do_open (validate_table_offset, l1_vm_state_index)."""
    cs = s.cluster_size
    if h.refcount_table_clusters == 0 and not flags & BDRV_O_CHECK:
        raise Qcow2OpenError(errno.EINVAL, "Image does not contain a reference count table")
    qcow2_validate_table(h.refcount_table_offset, h.refcount_table_clusters, cs,
                         QCOW_MAX_REFTABLE_SIZE, cs, "Reference count table")
    if not flags & BDRV_O_CHECK:
        qcow2_validate_table(h.snapshots_offset, h.nb_snapshots, 40, 40 * QCOW_MAX_SNAPSHOTS,
                             cs, "Snapshot table")
    qcow2_validate_table(h.l1_table_offset, h.l1_size, L1E_SIZE, QCOW_MAX_L1_SIZE, cs,
                         "Active L1 table")
    s.l1_size = h.l1_size
    s.l1_table_offset = h.l1_table_offset
    # QEMU passes the uint64_t size as an int64_t and keeps the index in a
    # uint64_t: a size just under 2^64 passes here and fails later as a
    # total sector count (EFBIG)
    s.l1_vm_state_index = size_to_l1(s.cluster_bits, s.l2_bits,
                                     h.size - (h.size >> 63 << 64)) & ((1 << 64) - 1)
    if s.l1_vm_state_index > INT_MAX:
        raise Qcow2OpenError(errno.EFBIG, "Image is too big")
    if s.l1_size < s.l1_vm_state_index:
        raise Qcow2OpenError(errno.EINVAL, "L1 table is too small")


@coroutine_fn
def _open_read_l1_table(bs: Qcow2BDS) -> None:
    """QEMU: qcow2_do_open (read the L1 table)."""
    s = bs.opaque
    if s.l1_size:
        ret, l1 = qcow2_co_pread_file(bs, s.l1_table_offset, s.l1_size * 8)
        if ret < 0:
            raise Qcow2OpenError(-ret, "Could not read L1 table: %s" % os.strerror(-ret))
        s.l1_table = list(struct.unpack(">%dQ" % s.l1_size, l1))


@coroutine_fn
def _open_init_caches(bs: Qcow2BDS, size: int, options: dict, flags: int) -> None:
    """The runtime options (cache sizes, lazy refcounts, discard, overlap
    checks), then the refcount table.
    QEMU: qcow2_do_open (qcow2_update_options, qcow2_refcount_init)."""
    bs.total_sectors = size // 512
    qcow2_crypto_update_options(bs.opaque, options)
    qcow2_update_options(bs, options, flags)
    ret = qcow2_refcount_init(bs)
    if ret < 0:
        raise Qcow2OpenError(-ret, "Could not initialize refcount handling: %s"
                             % os.strerror(-ret))


def _open_read_extensions(bs: Qcow2BDS, s: Qcow2State, h: QCowHeader, cluster0: bytearray,
                          ext_end: int, flags: int) -> None:
    """The header extensions (refusing encryption; the external data
    file's name is kept) and the backing file name.  QEMU: qcow2_do_open (qcow2_read_extensions,
    backing file)."""
    s.ext = ext = qcow2_read_extensions(cluster0, h.header_length, ext_end)
    s.image_data_file = ext.data_file      # the data file opens in qcow2_open
    s.has_data_file = bool(s.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
    crypto_ext = next((data for magic, data in ext.unknown
                       if magic == QCOW2_EXT_MAGIC_CRYPTO_HEADER), None)
    qcow2_crypto_luks_open(s, crypto_ext, flags,
                           lambda off, n: qcow2_co_pread_file(bs, off, n)[1])
    s.backing_format = ext.backing_format
    if ext.bitmaps is not None:
        from gqemu.block.qcow2_bitmap import bitmap_ext_parse
        bitmap_ext_parse(s, ext.bitmaps)
    if h.backing_file_offset:
        n = h.backing_file_size
        if n > min(1023, s.cluster_size - h.backing_file_offset):
            raise Qcow2OpenError(errno.EINVAL, "Backing file name too long")
        s.backing_file = bytes(cluster0[h.backing_file_offset:h.backing_file_offset + n]
                               ).decode("utf-8", "replace")


@coroutine_fn
def _open_clear_autoclear(bs: Qcow2BDS) -> None:
    """A writable v3 image drops the autoclear bits it does not know (their
    metadata may now go stale); then the persistent dirty bitmaps are loaded
    (qcow2_bitmap.py).  A stale bitmaps extension is dropped by a rewrite of
    the header.  QEMU: qcow2_do_open (autoclear, qcow2_load_dirty_bitmaps)."""
    from gqemu.block.qcow2_bitmap import Qcow2BitmapError
    from gqemu.block.qcow2_bitmap_sync import qcow2_load_dirty_bitmaps
    s = bs.opaque
    update = bool(s.autoclear_features & ~QCOW2_AUTOCLEAR_MASK or s.bitmaps_stale)
    update = update and not s.read_only
    if update:
        s.autoclear_features &= QCOW2_AUTOCLEAR_MASK
    try:
        header_updated = qcow2_load_dirty_bitmaps(bs)
    except Qcow2BitmapError as e:
        raise Qcow2OpenError(errno.EINVAL, e.msg)
    if update and not header_updated:
        if s.bitmaps_stale:
            from gqemu.block.qcow2_header_update import qcow2_update_header
            ret = qcow2_update_header(bs)
            if ret < 0:
                raise Qcow2OpenError(-ret, "Could not update qcow2 header: %s"
                                     % os.strerror(-ret))
        elif s.qcow_version >= 3:
            qcow2_co_pwrite_file(bs, 88, struct.pack(">Q", s.autoclear_features))
            qcow2_co_flush_file(bs)


def backing_reference_error(options: dict, backing_opts: dict, flags: int) -> None:
    """``backing=NAME`` names an existing node to use as the backing file;
    an opened image has none to offer (with ``backing.*`` options or not,
    with or without a backing file in the header).  Raises BlockError.
    QEMU: bdrv_open_backing_file (reference) -> bdrv_open_inherit."""
    ref = options.pop("backing", None)
    if ref is None or ref == "" or flags & BDRV_O_NO_BACKING:
        return
    why = ("Cannot reference an existing block device with additional options or a "
           "new filename" if backing_opts else
           "Cannot find device='%s' nor node-name='%s'" % (ref, ref))
    raise BlockError(errno.EINVAL, "Could not open backing file: " + why)


def qcow2_open_backing(bs: Qcow2BDS, s: Qcow2State, flags: int, chain: tuple,
                       backing_opts: Optional[dict] = None) -> None:
    """Open the backing file read-only: its name relative to the image's
    folder, its format from the header extension (or ``backing.driver``);
    refuse loops, chains deeper than BACKING_CHAIN_MAX (QEMU has no
    limit; Python's recursion has one, and 100 levels leave it a wide
    margin), and unnamed formats that would probe as raw.  ``backing_opts`` are the ``backing.*`` options.
    QEMU: bdrv_open_backing_file (block.c)."""
    backing_opts = dict(backing_opts or {})
    name = s.backing_file or ""
    child_flags = bdrv_child_flags(flags) & ~BDRV_O_RDWR & ~BDRV_O_CHECK
    if name.startswith("json:"):               # options, not a file name
        from gqemu.block.open_opts import bdrv_fill_options
        jname, jopts = bdrv_fill_options(name, {})
        jopts.update(backing_opts)
        if s.backing_format and "driver" not in jopts:
            jopts["driver"] = s.backing_format
        try:
            child = bdrv_open(jname or "", jopts, child_flags)
        except BlockError as e:
            raise BlockError(e.errno, "Could not open backing file: %s" % e.msg)
        bs.backing = bdrv_attach_child(bs, child, "backing")
        return
    if ":" in name.split("/")[0]:
        raise BlockError(errno.EINVAL, "Backing file name '%s' is not a plain file name" % name)
    if not os.path.isabs(name):
        from gqemu.block.refresh_filename import _leaf, bdrv_dirname
        if bdrv_dirname(bs) is None:
            raise BlockError(errno.EINVAL, "Cannot generate a base directory for %s nodes"
                             % _leaf(bs).drv.format_name)
    base_dir = os.path.dirname(bs.filename)
    path = name if os.path.isabs(name) or not base_dir else os.path.join(base_dir, name)
    me = os.path.realpath(bs.filename)
    target = os.path.realpath(path)
    chain = tuple(chain) + (me,)
    if target in chain:
        raise BlockError(errno.EINVAL, "Backing file '%s' creates an infinite loop" % name)
    if len(chain) > BACKING_CHAIN_MAX:
        raise BlockError(errno.EINVAL, "Backing chain of '%s' is longer than %d"
                         % (bs.filename, BACKING_CHAIN_MAX))
    fmt = backing_opts.pop("driver", None) or s.backing_format or None   # "": probe
    opts: dict = backing_opts
    if fmt is None:
        try:
            with open(path, "rb") as f:
                head = f.read(512)
        except OSError as e:
            raise BlockError(e.errno or errno.ENOENT, "Could not open backing file: "
                             "Could not open '%s': %s" % (path, e.strerror))
        # no format recorded: the backing file is probed (QEMU:
        # bdrv_open_inherit's find_image_format).  A qcow version 1 image
        # never records one, and its backing file may probe as raw, as in
        # QEMU.  A qcow2 image that lost its backing-format extension must
        # not expose a host file that way (reliability T16, CVE-2015-1851
        # class: QEMU would), so a raw result is refused there.
        fmt = "qcow2" if qcow2_probe(head, path) == 100 else None
        if fmt is None and getattr(s, "format_name", "") != "qcow":
            from gqemu.block.driver_registry import bdrv_probe_all
            probed = bdrv_probe_all(head, path)
            if probed is None or probed.format_name == "raw":
                raise BlockError(errno.EINVAL, "Backing file '%s' has no backing format and "
                                 "would be probed as raw; refusing (set backing_fmt)" % name)
    if fmt == "qcow2":
        opts[QCOW2_CHAIN_KEY] = chain
    if fmt is not None:
        opts["format"] = fmt
    try:
        child = bdrv_open(path, opts, child_flags)
    except BlockError as e:
        raise BlockError(e.errno, "Could not open backing file: %s" % e.msg)
    bs.backing = bdrv_attach_child(bs, child, "backing")

