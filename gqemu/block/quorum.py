"""The ``quorum`` driver: N data children hold the same image.  A write goes
to every child and succeeds when ``vote-threshold`` of them succeed; a read
(``read-pattern=quorum``) reads every child and returns the version that at
least ``vote-threshold`` children agree on (-EIO otherwise; with
``rewrite-corrupted`` the outvoted children are rewritten), or with
``read-pattern=fifo`` the first child that reads without error.
``blkverify=on`` (two children, threshold 2) ends the process on the first
mismatch, printing where.  Children are read one after the other (QEMU
issues them in parallel; the vote is the same).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/quorum.c.
"""
from __future__ import annotations

import errno
import sys
from collections import Counter
from typing import Any

from gqemu.block.block_int import (BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, BDRV_REQ_FUA,
                                   BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK)
from gqemu.block.driver import (BlockDriver, BlockDriverState, BlockError, bdrv_attach_child,
                                bdrv_child_flags, bdrv_getlength, bdrv_register)
from gqemu.block.perms import bdrv_filter_default_perms
from gqemu.block.driver_open import bdrv_open
from gqemu.block.io import bdrv_co_flush, bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_status import bdrv_co_block_status_above
from gqemu.block.qiov import (QEMUIOVector, qemu_iovec_from_buf, qemu_iovec_init_buf,
                              qemu_iovec_to_buf)
from gqemu.coroutine import coroutine_fn

__all__ = ["BdrvQuorum"]


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(prefix + "." + k if prefix else k, v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten("%s.%d" % (prefix, i), v, out)
    else:
        out[prefix] = value


def _children_options(options: dict) -> list[dict]:
    """The ``children.N.*`` options, one dict a child.
    QEMU: qdict_array_entries(options, "children.")."""
    flat: dict = {}
    for k in [k for k in options if k == "children" or k.startswith("children.")]:
        _flatten(k, options.pop(k), flat)
    groups: dict[int, dict] = {}
    for k, v in flat.items():
        parts = k.split(".", 2)
        if len(parts) < 3 or not parts[1].isdigit() or str(int(parts[1])) != parts[1]:
            raise BlockError(errno.EINVAL, "Option children is not a valid array")
        groups.setdefault(int(parts[1]), {})[parts[2]] = v
    if sorted(groups) != list(range(len(groups))):
        raise BlockError(errno.EINVAL, "Option children is not a valid array")
    return [groups[i] for i in range(len(groups))]


def _opt_number(options: dict, key: str) -> int:
    v = options.pop(key, 0)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BlockError(errno.EINVAL, "Parameter '%s' expects a number" % key) from None


@bdrv_register
class BdrvQuorum(BlockDriver):
    """QEMU: bdrv_quorum (BDRVQuorumState is this instance)."""

    format_name = "quorum"

    def __init__(self) -> None:
        self.threshold = 0
        self.is_blkverify = False
        self.rewrite_corrupted = False
        self.fifo = False
        self.strong_opts: dict = {}

    def quorum_open(self, bs: BlockDriverState, filename: str, options: dict,
                    flags: int) -> None:
        """Check the options, open the children.  QEMU: quorum_open."""
        from gqemu.block.block_int import qemu_opt_bool
        given = set(options)
        children = _children_options(options)
        if len(children) < 1:
            raise BlockError(errno.EINVAL, "Number of provided children must be 1 or more")
        self.threshold = _opt_number(options, "vote-threshold")
        pattern = options.pop("read-pattern", "quorum")
        if pattern not in ("quorum", "fifo"):
            raise BlockError(errno.EINVAL, "Please set read-pattern as fifo or quorum")
        self.fifo = pattern == "fifo"
        if self.threshold < 1:
            raise BlockError(errno.ERANGE, "Parameter 'vote-threshold' expects a value >= 1")
        if self.threshold > len(children):
            raise BlockError(errno.ERANGE, "threshold may not exceed children count")
        self.is_blkverify = qemu_opt_bool(options, "blkverify", False)
        if self.is_blkverify and (len(children) != 2 or self.threshold != 2):
            raise BlockError(errno.EINVAL, "blkverify=on can only be set if there are "
                             "exactly two files and vote-threshold is 2")
        self.rewrite_corrupted = qemu_opt_bool(options, "rewrite-corrupted", False)
        if self.rewrite_corrupted and self.is_blkverify:
            raise BlockError(errno.EINVAL, "rewrite-corrupted=on cannot be used with "
                             "blkverify=on")
        # the strong options given, for the node's json: name
        self.strong_opts = {k: v for k, v in (
            ("vote-threshold", self.threshold), ("read-pattern", pattern),
            ("blkverify", self.is_blkverify), ("rewrite-corrupted", self.rewrite_corrupted))
            if k in given}
        for i, copts in enumerate(children):
            child = bdrv_open(str(copts.pop("filename", "")) if "driver" not in copts
                              else "", copts, bdrv_child_flags(flags))
            bdrv_attach_child(bs, child, "children.%d" % i)
        zero = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK
        for c in bs.children:
            zero &= c.bs.supported_zero_flags
        bs.supported_zero_flags = zero       # QEMU: quorum_refresh_flags

    bdrv_file_open = quorum_open

    def quorum_child_perm(self, bs: BlockDriverState, child: object, role: str,
                          perm: int, shared: int) -> tuple[int, int]:
        return bdrv_filter_default_perms(bs, child, role, perm, shared)  # type: ignore[arg-type]

    bdrv_child_perm = quorum_child_perm

    def quorum_getlength(self, bs: BlockDriverState) -> int:
        """Every child must have the same length.  QEMU: quorum_getlength."""
        result = bdrv_getlength(bs.children[0].bs)
        if result < 0:
            return result
        for c in bs.children[1:]:
            if bdrv_getlength(c.bs) != result:
                return -errno.EIO
        return result

    bdrv_getlength = quorum_getlength

    def _vote_error(self, errors: list[int]) -> int:
        """The most frequent error.  QEMU: quorum_vote_error."""
        return Counter(errors).most_common(1)[0][0] if errors else -errno.EIO

    @coroutine_fn
    def quorum_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                         qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: quorum_co_preadv (read_fifo_child / read_quorum_children)."""
        if self.fifo:
            ret = -errno.EIO
            for c in bs.children:
                ret = bdrv_co_preadv(c, offset, nbytes, qiov, flags)
                if ret >= 0:
                    return 0
            return ret
        bufs: list[Any] = []
        errors: list[int] = []
        for c in bs.children:
            buf = bytearray(nbytes)
            ret = bdrv_co_preadv(c, offset, nbytes, qemu_iovec_init_buf(buf), flags)
            bufs.append(buf if ret >= 0 else None)
            if ret < 0:
                errors.append(ret)
        good = [i for i, b in enumerate(bufs) if b is not None]
        if len(good) < self.threshold:
            return self._vote_error(errors)
        first = bufs[good[0]]
        agree = True
        for i in good[1:]:
            if bufs[i] != first:
                if self.is_blkverify:
                    at = next(k for k in range(nbytes) if bufs[i][k] != first[k])
                    sys.stdout.flush()
                    sys.stderr.write("quorum: offset=%d bytes=%d contents mismatch at "
                                     "offset %d\n" % (offset, nbytes, offset + at))
                    sys.stderr.flush()
                    raise SystemExit(1)
                agree = False
                break
        if agree:
            qemu_iovec_from_buf(qiov, 0, first, nbytes)
            return 0
        # the most votes; on a tie the version seen last (QEMU puts each
        # new version at the head of its list and keeps the first maximum)
        votes = Counter(bytes(bufs[i]) for i in good)
        order = list(dict.fromkeys(bytes(bufs[i]) for i in good))
        winner = max(reversed(order), key=lambda v: votes[v])
        count = votes[winner]
        if count < self.threshold:
            return -errno.EIO
        qemu_iovec_from_buf(qiov, 0, winner, nbytes)
        if self.rewrite_corrupted:
            for i in good:
                if bytes(bufs[i]) != winner:
                    bdrv_co_pwritev(bs.children[i], offset, nbytes,
                                    qemu_iovec_init_buf(bytearray(winner)), 0)
        return 0

    bdrv_co_preadv = quorum_co_preadv

    @coroutine_fn
    def _write_all(self, bs: BlockDriverState, offset: int, nbytes: int,
                   qiov: Any, flags: int) -> int:
        errors = []
        for c in bs.children:
            if qiov is None:
                ret = bdrv_co_pwrite_zeroes(c, offset, nbytes, flags)
            else:
                ret = bdrv_co_pwritev(c, offset, nbytes, qiov, flags)
            if ret < 0:
                errors.append(ret)
        if len(bs.children) - len(errors) < self.threshold:
            return self._vote_error(errors)
        return 0

    @coroutine_fn
    def quorum_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                          qiov: QEMUIOVector, flags: int) -> int:
        """Write every child (each from its own copy of the data).
        QEMU: quorum_co_pwritev."""
        buf = bytearray(nbytes)
        qemu_iovec_to_buf(qiov, 0, buf, nbytes)
        return self._write_all(bs, offset, nbytes, qemu_iovec_init_buf(buf), flags)

    bdrv_co_pwritev = quorum_co_pwritev

    @coroutine_fn
    def quorum_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                                flags: int) -> int:
        return self._write_all(bs, offset, nbytes, None, flags)

    bdrv_co_pwrite_zeroes = quorum_co_pwrite_zeroes

    @coroutine_fn
    def quorum_co_flush(self, bs: BlockDriverState) -> int:
        """QEMU: quorum_co_flush."""
        errors = [r for r in (bdrv_co_flush(c.bs) for c in bs.children) if r < 0]
        if len(bs.children) - len(errors) >= self.threshold:
            return 0
        return self._vote_error(errors)

    bdrv_co_flush = quorum_co_flush

    @coroutine_fn
    def quorum_co_block_status(self, bs: BlockDriverState, offset: int,
                               nbytes: int) -> tuple[int, int, int, Any]:
        """Zero where every child reads as zero (the shortest such run),
        else data (the longest run).  QEMU: quorum_co_block_status."""
        pnum_zero, pnum_data = nbytes, 0
        for c in bs.children:
            ret, pnum = bdrv_co_block_status_above(c.bs, None, offset, nbytes)
            if ret < 0:
                pnum_data = nbytes
                break
            if ret & BDRV_BLOCK_ZERO:
                pnum_zero = min(pnum_zero, pnum)
            else:
                pnum_data = max(pnum_data, pnum)
        if pnum_data:
            return BDRV_BLOCK_DATA, pnum_data, 0, None
        return BDRV_BLOCK_ZERO, pnum_zero, 0, None

    bdrv_co_get_block_status = quorum_co_block_status
