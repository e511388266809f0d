"""qcow2 runtime options: the cache sizes, lazy refcounts, discard
pass-through and overlap checks an open (or reopen) sets, with QEMU 7.2's
parsing, validation and error messages.

``qcow2_update_options_prepare`` parses and validates everything and builds
the new caches without touching the image's state (a failed reopen leaves
the old settings); ``qcow2_update_options_commit`` installs them.
``qcow2_join_options`` merges a reopen's options with the old explicit ones
as QEMU does (a new overlap template drops the old per-check flags, a new
``cache-size`` drops the old split).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.
QEMU: block/qcow2.c (qcow2_runtime_opts, read_cache_sizes,
qcow2_update_options_prepare/commit, qcow2_join_options).
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gqemu.coroutine import coroutine_fn
from gqemu.block.block_int import BlockError, parse_option_size, warn_report
from gqemu.block.qcow2_cache import qcow2_cache_create, qcow2_cache_flush
from gqemu.block.qcow2_header import INT_MAX, QCOW2_COMPAT_LAZY_REFCOUNTS
from gqemu.block.qcow2_state import (
    QCOW2_DISCARD_MAX, QCOW2_OL_ALL, QCOW2_OL_CACHED, QCOW2_OL_CONSTANT, Qcow2BDS,
    Qcow2Cache)

MIN_L2_CACHE_SIZE = 2               # tables (cache entries)
MIN_REFCOUNT_CACHE_SIZE = 4         # clusters
DEFAULT_L2_CACHE_MAX_SIZE = 32 * 1024 * 1024
DEFAULT_CACHE_CLEAN_INTERVAL = 600  # seconds
MIN_CLUSTER_BITS = 9
UINT_MAX = (1 << 32) - 1
# gqemu's caches make one object per entry up front: more entries than this
# is refused as QEMU refuses a cache it cannot allocate (4 KiB slices: 1 GiB)
MAX_CACHE_ENTRIES = 1 << 18

# One name per overlap-check bit (bit i is QCOW2_OL_* 1 << i).
# QEMU: overlap_bool_option_names
overlap_bool_option_names = (
    "overlap-check.main-header", "overlap-check.active-l1", "overlap-check.active-l2",
    "overlap-check.refcount-table", "overlap-check.refcount-block",
    "overlap-check.snapshot-table", "overlap-check.inactive-l1",
    "overlap-check.inactive-l2", "overlap-check.bitmap-directory")

OVERLAP_TEMPLATES = {"none": 0, "constant": QCOW2_OL_CONSTANT, "cached": QCOW2_OL_CACHED,
                     "all": QCOW2_OL_ALL}

_BOOL, _STRING, _SIZE, _NUMBER = "bool", "string", "size", "number"

# name -> type, in QEMU's table order.  QEMU: qcow2_runtime_opts
qcow2_runtime_opts: dict[str, str] = {
    "lazy-refcounts": _BOOL,
    "pass-discard-request": _BOOL,
    "pass-discard-snapshot": _BOOL,
    "pass-discard-other": _BOOL,
    "overlap-check": _STRING,
    "overlap-check.template": _STRING,
    **{name: _BOOL for name in overlap_bool_option_names},
    "cache-size": _SIZE,
    "l2-cache-size": _SIZE,
    "l2-cache-entry-size": _SIZE,
    "refcount-cache-size": _SIZE,
    "cache-clean-interval": _NUMBER,
}


def _parse_number(name: str, value: str) -> int:
    """strtoull over the whole string, base 0 (a minus sign wraps, as in
    C).  QEMU: parse_option_number over qemu_strtou64."""
    from gqemu.cutils import _strtol0
    _, val, end = _strtol0(value)
    if end == 0 or end != len(value) or not -(1 << 64) < val < (1 << 64):
        raise BlockError(errno.EINVAL, "Parameter '%s' expects a number" % name)
    return val & ((1 << 64) - 1)


def _parse_bool(name: str, value: str) -> bool:
    if value in ("on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise BlockError(errno.EINVAL, "Parameter '%s' expects 'on' or 'off'" % name)


def qemu_opts_absorb_qdict(options: dict) -> dict[str, Any]:
    """Take every qcow2 runtime option out of ``options``, parsed by type
    (what is left is for the generic layer, which refuses unknown keys).
    Raises BlockError with QemuOpts' messages.
    QEMU: qemu_opts_absorb_qdict over qcow2_runtime_opts."""
    opts: dict[str, Any] = {}
    for key in [k for k in options if k in qcow2_runtime_opts]:
        value = options.pop(key)
        text = value if isinstance(value, str) else \
            ("on" if value else "off") if isinstance(value, bool) else str(value)
        kind = qcow2_runtime_opts[key]
        if kind == _BOOL:
            opts[key] = _parse_bool(key, text)
        elif kind == _SIZE:
            n, warning = parse_option_size(key, text)
            if warning:
                warn_report(warning)
            opts[key] = n
        elif kind == _NUMBER:
            opts[key] = _parse_number(key, text)
        else:
            opts[key] = text
    return opts


class Qcow2ReopenState:
    """The settings an open or reopen computed, not yet installed.
    QEMU: Qcow2ReopenState."""

    def __init__(self) -> None:
        self.l2_table_cache: Optional[Qcow2Cache] = None
        self.refcount_block_cache: Optional[Qcow2Cache] = None
        self.l2_slice_size = 0              # L2 entries per cache entry
        self.l2_cache_entry_size = 0
        self.use_lazy_refcounts = False
        self.overlap_check = 0
        self.discard_passthrough = [False] * QCOW2_DISCARD_MAX
        self.cache_clean_interval = DEFAULT_CACHE_CLEAN_INTERVAL


def read_cache_sizes(bs: Qcow2BDS, opts: dict[str, Any]) -> tuple[int, int, int]:
    """(l2 cache bytes, l2 cache entry size, refcount cache bytes) from the
    options and the disk size.  Raises BlockError.  QEMU: read_cache_sizes."""
    s = bs.opaque
    cs = s.cluster_size
    min_refcount_cache = MIN_REFCOUNT_CACHE_SIZE * cs
    max_l2_entries = -(-(bs.total_sectors * 512) // cs)
    # whole L2 tables: a multiple of the cluster size
    max_l2_cache = -(-(max_l2_entries * s.l2_entry_size) // cs) * cs
    combined_set = "cache-size" in opts
    l2_set = "l2-cache-size" in opts
    refcount_set = "refcount-cache-size" in opts
    combined = opts.get("cache-size", 0)
    l2_max_setting = opts.get("l2-cache-size", DEFAULT_L2_CACHE_MAX_SIZE)
    refcount_cache = opts.get("refcount-cache-size", 0)
    entry_size = opts.get("l2-cache-entry-size", cs)
    l2_cache = min(max_l2_cache, l2_max_setting)
    if combined_set:
        if l2_set and refcount_set:
            raise BlockError(errno.EINVAL, "cache-size, l2-cache-size and "
                             "refcount-cache-size may not be set at the same time")
        if l2_set and l2_max_setting > combined:
            raise BlockError(errno.EINVAL, "l2-cache-size may not exceed cache-size")
        if refcount_cache > combined:
            raise BlockError(errno.EINVAL, "refcount-cache-size may not exceed cache-size")
        if l2_set:
            refcount_cache = combined - l2_cache
        elif refcount_set:
            l2_cache = combined - refcount_cache
        elif combined >= max_l2_cache + min_refcount_cache:
            # as much as possible for L2, the rest for refcounts
            l2_cache, refcount_cache = max_l2_cache, combined - max_l2_cache
        else:
            refcount_cache = min(combined, min_refcount_cache)
            l2_cache = combined - refcount_cache
    # a cache that cannot hold every table works in 4 KiB slices by default
    if l2_cache < max_l2_cache and "l2-cache-entry-size" not in opts:
        entry_size = min(cs, 4096)
    if entry_size < 1 << MIN_CLUSTER_BITS or entry_size > cs or entry_size & (entry_size - 1):
        raise BlockError(errno.EINVAL, "L2 cache entry size must be a power of two "
                         "between %d and the cluster size (%d)" % (1 << MIN_CLUSTER_BITS, cs))
    return l2_cache, entry_size, refcount_cache


def _overlap_check(opts: dict[str, Any]) -> int:
    """The overlap-check bits: a template, each bit overridable.
    QEMU: qcow2_update_options_prepare (overlap check options)."""
    mode = opts.get("overlap-check")
    template = opts.get("overlap-check.template")
    if mode is not None and template is not None and mode != template:
        raise BlockError(errno.EINVAL, "Conflicting values for qcow2 options "
                         "'overlap-check' ('%s') and 'overlap-check.template' ('%s')"
                         % (mode, template))
    if mode is None:
        mode = template if template is not None else "cached"
    if mode not in OVERLAP_TEMPLATES:
        raise BlockError(errno.EINVAL, "Unsupported value '%s' for qcow2 option "
                         "'overlap-check'. Allowed are any of the following: "
                         "none, constant, cached, all" % mode)
    bits = OVERLAP_TEMPLATES[mode]
    result = 0
    for i, name in enumerate(overlap_bool_option_names):
        if opts.get(name, bool(bits & (1 << i))):
            result |= 1 << i
    return result


@coroutine_fn
def qcow2_update_options_prepare(bs: Qcow2BDS, r: Qcow2ReopenState, options: dict,
                                 flags: int) -> None:
    """Parse ``options`` (taking the qcow2 keys out) into ``r``; write back
    the old caches (they are replaced on commit).  Raises BlockError.
    Context: coroutine.  QEMU: qcow2_update_options_prepare."""
    from gqemu.block.driver import BDRV_O_UNMAP
    s = bs.opaque
    opts = qemu_opts_absorb_qdict(options)
    l2_cache, entry_size, refcount_cache = read_cache_sizes(bs, opts)
    l2_tables = max(l2_cache // entry_size, MIN_L2_CACHE_SIZE)
    if l2_tables > INT_MAX:
        raise BlockError(errno.EINVAL, "L2 cache size too big")
    refcount_blocks = max(refcount_cache // s.cluster_size, MIN_REFCOUNT_CACHE_SIZE)
    if refcount_blocks > INT_MAX:
        raise BlockError(errno.EINVAL, "Refcount cache size too big")
    if max(l2_tables, refcount_blocks) > MAX_CACHE_ENTRIES:
        raise BlockError(errno.ENOMEM, "Could not allocate metadata caches")
    _flush_old_caches(bs)
    r.l2_slice_size = entry_size // s.l2_entry_size
    r.l2_cache_entry_size = entry_size
    r.l2_table_cache = qcow2_cache_create(bs, l2_tables, entry_size, "l2")
    r.refcount_block_cache = qcow2_cache_create(bs, refcount_blocks, s.cluster_size,
                                                "refcount")
    r.cache_clean_interval = opts.get("cache-clean-interval", DEFAULT_CACHE_CLEAN_INTERVAL)
    if r.cache_clean_interval > UINT_MAX:
        raise BlockError(errno.EINVAL, "Cache clean interval too big")
    r.use_lazy_refcounts = opts.get(
        "lazy-refcounts", bool(s.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS))
    if r.use_lazy_refcounts and s.qcow_version < 3:
        raise BlockError(errno.EINVAL, "Lazy refcounts require a qcow2 image with at "
                         "least qemu 1.1 compatibility level")
    # (QEMU marks the image clean here when a reopen turns lazy refcounts
    # off; gqemu's reopen closes the node first, and close does that)
    r.overlap_check = _overlap_check(opts)
    r.discard_passthrough = [False, True,
                             opts.get("pass-discard-request", bool(flags & BDRV_O_UNMAP)),
                             opts.get("pass-discard-snapshot", True),
                             opts.get("pass-discard-other", False)]


@coroutine_fn
def _flush_old_caches(bs: Qcow2BDS) -> None:
    import os
    s = bs.opaque
    for c, what in ((getattr(s, "l2_table_cache", None), "the L2 table cache"),
                    (getattr(s, "refcount_block_cache", None), "the refcount block cache")):
        if c is not None:
            ret = qcow2_cache_flush(bs, c)
            if ret < 0:
                raise BlockError(-ret, "Failed to flush %s: %s" % (what, os.strerror(-ret)))


def qcow2_update_options_commit(bs: Qcow2BDS, r: Qcow2ReopenState) -> None:
    """Install what prepare computed.  QEMU: qcow2_update_options_commit."""
    s = bs.opaque
    assert r.l2_table_cache is not None and r.refcount_block_cache is not None
    s.l2_table_cache = r.l2_table_cache
    s.refcount_block_cache = r.refcount_block_cache
    s.l2_slice_size = r.l2_slice_size
    s.l2_cache_entry_size = r.l2_cache_entry_size
    s.overlap_check = r.overlap_check
    s.use_lazy_refcounts = r.use_lazy_refcounts
    s.discard_passthrough = list(r.discard_passthrough)
    s.cache_clean_interval = r.cache_clean_interval


@coroutine_fn
def qcow2_update_options(bs: Qcow2BDS, options: dict, flags: int) -> None:
    """Prepare and commit in one step (open).  Raises BlockError.
    QEMU: qcow2_update_options."""
    r = Qcow2ReopenState()
    qcow2_update_options_prepare(bs, r, options, flags)
    qcow2_update_options_commit(bs, r)


def qcow2_join_options(options: dict, old_options: dict) -> dict:
    """A reopen's options over the old explicit ones: a new overlap
    template replaces every old overlap option, a new ``cache-size`` the
    old split, and an old ``cache-size`` goes when any cache size remains
    set and ``cache-size`` is not new.  QEMU: qcow2_join_options."""
    old = dict(old_options)
    new_total = "cache-size" in options
    if "overlap-check" in options or "overlap-check.template" in options:
        for key in ("overlap-check", "overlap-check.template") + overlap_bool_option_names:
            old.pop(key, None)
    if new_total:
        old.pop("l2-cache-size", None)
        old.pop("refcount-cache-size", None)
    joined = dict(old)
    joined.update(options)
    if not new_total and any(k in joined for k in ("cache-size", "l2-cache-size",
                                                   "refcount-cache-size")):
        joined.pop("cache-size", None)
    return joined
