"""Amending an open qcow2 image (``qemu-img amend``): the option table,
the version upgrade and downgrade, lazy refcounts, resizing, and the
progress bookkeeping across the steps.

Options arrive parsed (``{name: value}``, only those given, values typed by
``QCOW2_AMEND_OPTS``); they are applied in QEMU's order: upgrade, refcount
width (``qcow2_refcount_order.py``), header rewrite, backing check, lazy
refcounts, size, downgrade (zero clusters expanded by
``qcow2_expand.py``).  Every failure is ``(-errno, message)`` with QEMU's
message (a second line is the hint qemu-img prints after it).

Context: coroutine (the image's only user).
Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_amend_options, qcow2_upgrade, qcow2_downgrade,
qcow2_amend_helper_cb, qcow2_amend_opts).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.io_truncate import bdrv_co_truncate
from gqemu.block.qcow2_data_file import qcow2_amend_data_file_apply, qcow2_amend_data_file_check
from gqemu.block.qcow2_expand import qcow2_expand_zero_clusters
from gqemu.block.qcow2_header import (
    QCOW2_COMPAT_LAZY_REFCOUNTS, QCOW2_INCOMPAT_COMPRESSION, QCOW2_INCOMPAT_DIRTY)
from gqemu.block.qcow2_header_update import qcow2_mark_clean, qcow2_update_header
from gqemu.block.qcow2_refcount_order import qcow2_change_refcount_order
from gqemu.block.qcow2_snapshot import qcow2_write_snapshots
from gqemu.block.qcow2_state import Qcow2BDS

# (name, type, help) as qemu-img lists them; types "str", "bool", "num",
# "size".  QEMU: QCOW_COMMON_OPTIONS, in its order (amend walks them so).
QCOW2_COMMON_OPTS: tuple[tuple[str, str, str], ...] = (
    ("size", "size", "Virtual disk size"),
    ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
    ("backing_file", "str", "File name of a base image"),
    ("backing_fmt", "str", "Image format of the base image"),
    ("data_file", "str", "File name of an external data file"),
    ("data_file_raw", "bool", "The external data file must stay valid as a raw image"),
    ("lazy_refcounts", "bool", "Postpone refcount updates"),
    ("refcount_bits", "num", "Width of a reference count entry in bits"),
)
_ITER_TIME = ("encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds")

# The driver's create_opts.  QEMU: qcow2_create_opts.
QCOW2_CREATE_OPTS: tuple[tuple[str, str, str], ...] = QCOW2_COMMON_OPTS + (
    ("encryption", "bool", "Encrypt the image with format 'aes'. (Deprecated in favor "
                           "of encrypt.format=aes)"),
    ("encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"),
    ("encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase"),
    ("encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"),
    ("encrypt.cipher-mode", "str", "Name of encryption cipher mode"),
    ("encrypt.ivgen-alg", "str", "Name of IV generator algorithm"),
    ("encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"),
    ("encrypt.hash-alg", "str", "Name of encryption hash algorithm"),
    _ITER_TIME,
    ("cluster_size", "size", "qcow2 cluster size"),
    ("extended_l2", "bool", "Extended L2 tables"),
    ("preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, "
                             "full)"),
    ("compression_type", "str", "Compression method used for image cluster compression"),
)

# The driver's amend_opts.  QEMU: qcow2_amend_opts (the LUKS keyslot
# options, then QCOW_COMMON_OPTIONS), walked in this order.
QCOW2_AMEND_OPTS: tuple[tuple[str, str, str], ...] = (
    ("encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"),
    ("encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"),
    ("encrypt.old-secret", "str", "Select all keyslots that match this password"),
    ("encrypt.new-secret", "str",
     "New secret to set in the matching keyslots. Empty string to erase"),
    _ITER_TIME,
) + QCOW2_COMMON_OPTS

# The creation-only options (name, type): an amend option list that parses
# with these added gets qemu-img's "only supported for image creation" hint.
QCOW2_CREATE_ONLY_OPTS: tuple[tuple[str, str], ...] = tuple(
    (name, typ) for name, typ, _ in QCOW2_CREATE_OPTS
    if name not in {a[0] for a in QCOW2_AMEND_OPTS})

# BlockDriverAmendStatusCB: (bs, offset, total_work_size)
StatusCB = Callable[[Any, int, int], None]

QCOW2_NO_OPERATION, QCOW2_UPGRADING, QCOW2_CHANGING_REFCOUNT_ORDER, QCOW2_DOWNGRADING = 0, 1, 3, 4


class Qcow2AmendHelperCBInfo:
    """Folds the progress of each step into one figure for the whole
    amendment, projecting the steps not started yet from those done.
    QEMU: Qcow2AmendHelperCBInfo + qcow2_amend_helper_cb."""

    def __init__(self, status_cb: StatusCB, total_operations: int) -> None:
        self.original_status_cb = status_cb
        self.total_operations = total_operations
        self.current_operation = QCOW2_NO_OPERATION
        self.last_operation = QCOW2_NO_OPERATION
        self.operations_completed = 0
        self.offset_completed = 0
        self.last_work_size = 0

    def __call__(self, bs: Any, operation_offset: int, operation_work_size: int) -> None:
        if self.current_operation != self.last_operation:
            if self.last_operation != QCOW2_NO_OPERATION:
                self.offset_completed += self.last_work_size
                self.operations_completed += 1
            self.last_operation = self.current_operation
        assert 0 <= self.operations_completed < self.total_operations
        self.last_work_size = operation_work_size
        current = self.offset_completed + operation_work_size
        projected = (current * (self.total_operations - self.operations_completed - 1)
                     // (self.operations_completed + 1))
        self.original_status_cb(bs, self.offset_completed + operation_offset,
                                current + projected)


def _strerror(ret: int, what: str) -> tuple[int, str]:
    return ret, "%s: %s" % (what, os.strerror(-ret))


@coroutine_fn
def qcow2_upgrade(bs: Qcow2BDS, target_version: int, status_cb: StatusCB) -> tuple[int, str]:
    """v2 -> v3: snapshot entries get their v3 extra data (VM state size and
    disk size), then the header is rewritten.  QEMU: qcow2_upgrade."""
    s = bs.opaque
    current_version = s.qcow_version
    assert target_version == 3 and current_version < 3
    status_cb(bs, 0, 2)
    if any(sn.extra_data_size < 16 for sn in s.snapshots):
        ret = qcow2_write_snapshots(bs, list(s.snapshots))
        if ret < 0:
            return _strerror(ret, "Failed to update the snapshot table")
    status_cb(bs, 1, 2)
    s.qcow_version = target_version
    ret = qcow2_update_header(bs)
    if ret < 0:
        s.qcow_version = current_version
        return _strerror(ret, "Failed to update the image header")
    status_cb(bs, 2, 2)
    return 0, ""


@coroutine_fn
def qcow2_downgrade(bs: Qcow2BDS, target_version: int, status_cb: StatusCB) -> tuple[int, str]:
    """v3 -> v2: refused while a v3-only feature is in use; otherwise the
    dirty bit is cleared, compatible and autoclear bits dropped, zero
    clusters turned into data (or unallocated) clusters, and the header
    rewritten.  QEMU: qcow2_downgrade."""
    s = bs.opaque
    current_version = s.qcow_version
    assert target_version == 2 and current_version > 2
    if s.refcount_order != 4:
        return -errno.ENOTSUP, "compat=0.10 requires refcount_bits=16"
    if s.has_data_file:
        return -errno.ENOTSUP, "Cannot downgrade an image with a data file"
    for sn in s.snapshots:
        if sn.vm_state_size > 0xFFFFFFFF or sn.disk_size != bs.total_sectors * 512:
            return -errno.ENOTSUP, "Internal snapshots prevent downgrade of image"
    if s.incompatible_features & QCOW2_INCOMPAT_DIRTY:
        ret = qcow2_mark_clean(bs)
        if ret < 0:
            return _strerror(ret, "Failed to make the image clean")
    other = s.incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION
    if other:
        return -errno.ENOTSUP, ("Cannot downgrade an image with incompatible features "
                                "0x%x set" % other)
    s.compatible_features = 0
    s.autoclear_features = 0
    ret = qcow2_expand_zero_clusters(bs, status_cb)
    if ret < 0:
        return _strerror(ret, "Failed to turn zero into data clusters")
    # QCOW2_INCOMPAT_COMPRESSION (zstd) cannot be set: gqemu opens zlib images only
    s.qcow_version = target_version
    ret = qcow2_update_header(bs)
    if ret < 0:
        s.qcow_version = current_version
        return _strerror(ret, "Failed to update the image header")
    return 0, ""


def _c_int(v: int) -> int:
    """A uint64 option value stored in a C ``int``."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


@coroutine_fn
def qcow2_amend_options(bs: Qcow2BDS, opts: dict[str, Any], status_cb: StatusCB,
                        force: bool = False) -> tuple[int, str]:
    """Apply the options given (``opts``: name -> typed value).
    Returns: (0, "") or (-errno, QEMU's message).  QEMU: qcow2_amend_options."""
    s = bs.opaque
    old_version = new_version = s.qcow_version
    new_size = 0
    backing_file: Optional[str] = None
    backing_format: Optional[str] = None
    lazy_refcounts = s.use_lazy_refcounts
    refcount_bits = s.refcount_bits
    for name, _type, _help in QCOW2_AMEND_OPTS:
        if name not in opts:
            continue
        value = opts[name]
        if name == "compat":
            if value in ("0.10", "v2"):
                new_version = 2
            elif value in ("1.1", "v3"):
                new_version = 3
            else:
                return -errno.EINVAL, "Unknown compatibility level %s" % value
        elif name == "size":
            new_size = value
        elif name == "backing_file":
            backing_file = value
        elif name == "backing_fmt":
            backing_format = value
        elif name.startswith("encrypt."):
            if not s.crypt_method_header:
                return -errno.EINVAL, "Can't amend encryption options - encryption not present"
            # gqemu opens legacy AES images only (LUKS options are the amendable ones)
            return -errno.EINVAL, "Only LUKS encryption options can be amended"
        elif name == "lazy_refcounts":
            lazy_refcounts = value
        elif name == "refcount_bits":
            refcount_bits = _c_int(value)
            if refcount_bits <= 0 or refcount_bits > 64 or refcount_bits & (refcount_bits - 1):
                return -errno.EINVAL, ("Refcount width must be a power of two and may not "
                                       "exceed 64 bits")
        elif name in ("data_file", "data_file_raw"):
            ret, msg = qcow2_amend_data_file_check(bs, name, value)
            if ret < 0:
                return ret, msg

    info = Qcow2AmendHelperCBInfo(status_cb, (new_version != old_version)
                                  + (s.refcount_bits != refcount_bits))
    if new_version > old_version:
        info.current_operation = QCOW2_UPGRADING
        ret, msg = qcow2_upgrade(bs, new_version, info)
        if ret < 0:
            return ret, msg
    if s.refcount_bits != refcount_bits:
        if new_version < 3 and refcount_bits != 16:
            return -errno.EINVAL, ("Refcount widths other than 16 bits require compatibility "
                                   "level 1.1 or above (use compat=1.1 or greater)")
        info.current_operation = QCOW2_CHANGING_REFCOUNT_ORDER
        ret, msg = qcow2_change_refcount_order(bs, refcount_bits.bit_length() - 1, info)
        if ret < 0:
            return ret, msg
    qcow2_amend_data_file_apply(bs, opts)
    ret = qcow2_update_header(bs)
    if ret < 0:
        return _strerror(ret, "Failed to update the image header")
    if backing_file is not None or backing_format is not None:
        if backing_file != s.backing_file or backing_format != s.backing_format:
            return -errno.EINVAL, ("Cannot amend the backing file\n"
                                   "You can use 'qemu-img rebase' instead.")
    if s.use_lazy_refcounts != lazy_refcounts:
        ret, msg = _set_lazy_refcounts(bs, lazy_refcounts, new_version)
        if ret < 0:
            return ret, msg
    if new_size:
        ret, msg = bdrv_co_truncate(bs, new_size, True, "off")
        if ret < 0:
            return ret, msg
    if new_version < old_version:
        info.current_operation = QCOW2_DOWNGRADING
        ret, msg = qcow2_downgrade(bs, new_version, info)
        if ret < 0:
            return ret, msg
    return 0, ""


@coroutine_fn
def _set_lazy_refcounts(bs: Qcow2BDS, on: bool, new_version: int) -> tuple[int, str]:
    """Turn lazy refcounts on (v3 only) or off (after making the image
    clean).  QEMU: the lazy_refcounts step of qcow2_amend_options."""
    s = bs.opaque
    if on:
        if new_version < 3:
            return -errno.EINVAL, ("Lazy refcounts only supported with compatibility level "
                                   "1.1 and above (use compat=1.1 or greater)")
        s.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS
        ret = qcow2_update_header(bs)
        if ret < 0:
            s.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS
            return _strerror(ret, "Failed to update the image header")
        s.use_lazy_refcounts = True
        return 0, ""
    ret = qcow2_mark_clean(bs)
    if ret < 0:
        return _strerror(ret, "Failed to make the image clean")
    s.compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS
    ret = qcow2_update_header(bs)
    if ret < 0:
        s.compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS
        return _strerror(ret, "Failed to update the image header")
    s.use_lazy_refcounts = False
    return 0, ""
