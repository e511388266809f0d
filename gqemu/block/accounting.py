"""Per-device I/O statistics: ops, bytes, latency, failed and invalid
requests, per operation type.  The device model brackets each request with
``block_acct_start`` and one of ``block_acct_done/failed``.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/accounting.c (2.8).
"""
from __future__ import annotations

from typing import Optional

from gqemu.aio import QEMU_CLOCK_REALTIME, qemu_clock_get_ns

__all__ = ["BLOCK_ACCT_READ", "BLOCK_ACCT_WRITE", "BLOCK_ACCT_FLUSH",
           "BLOCK_MAX_IOTYPE", "BlockAcctStats", "BlockAcctCookie",
           "block_acct_start", "block_acct_done", "block_acct_failed",
           "block_acct_invalid", "block_acct_merge_done"]

BLOCK_ACCT_READ = 0
BLOCK_ACCT_WRITE = 1
BLOCK_ACCT_FLUSH = 2
BLOCK_MAX_IOTYPE = 3


class BlockAcctStats:
    """Counters indexed by BLOCK_ACCT_*.  QEMU: BlockAcctStats."""

    def __init__(self, clock: int = QEMU_CLOCK_REALTIME) -> None:
        n = BLOCK_MAX_IOTYPE
        self.nr_bytes = [0] * n
        self.nr_ops = [0] * n
        self.invalid_ops = [0] * n
        self.failed_ops = [0] * n
        self.total_time_ns = [0] * n
        self.merged = [0] * n
        self.last_access_time_ns = 0
        self.account_invalid = True
        self.account_failed = True
        self.clock = clock

    def as_dict(self) -> dict:
        names = ("rd", "wr", "flush")
        out: dict = {}
        for i, p in enumerate(names):
            out.update({"%s_bytes" % p: self.nr_bytes[i], "%s_operations" % p: self.nr_ops[i],
                        "invalid_%s_operations" % p: self.invalid_ops[i],
                        "failed_%s_operations" % p: self.failed_ops[i],
                        "%s_total_time_ns" % p: self.total_time_ns[i],
                        "%s_merged" % p: self.merged[i]})
        return out


class BlockAcctCookie:
    """One request being accounted.  QEMU: BlockAcctCookie."""

    __slots__ = ("bytes", "start_time_ns", "type")

    def __init__(self) -> None:
        self.bytes = 0
        self.start_time_ns = 0
        self.type = BLOCK_ACCT_READ


def block_acct_start(stats: BlockAcctStats, cookie: Optional[BlockAcctCookie],
                     nbytes: int, acct_type: int) -> BlockAcctCookie:
    """Fill (or create) ``cookie`` for a request of ``nbytes``.
    QEMU: block_acct_start."""
    assert 0 <= acct_type < BLOCK_MAX_IOTYPE
    if cookie is None:
        cookie = BlockAcctCookie()
    cookie.bytes = nbytes
    cookie.start_time_ns = qemu_clock_get_ns(stats.clock)
    cookie.type = acct_type
    return cookie


def block_acct_done(stats: BlockAcctStats, cookie: BlockAcctCookie) -> None:
    """QEMU: block_acct_done."""
    now = qemu_clock_get_ns(stats.clock)
    t = cookie.type
    stats.nr_bytes[t] += cookie.bytes
    stats.nr_ops[t] += 1
    stats.total_time_ns[t] += now - cookie.start_time_ns
    stats.last_access_time_ns = now


def block_acct_failed(stats: BlockAcctStats, cookie: BlockAcctCookie) -> None:
    """QEMU: block_acct_failed."""
    t = cookie.type
    stats.failed_ops[t] += 1
    if stats.account_failed:
        now = qemu_clock_get_ns(stats.clock)
        stats.total_time_ns[t] += now - cookie.start_time_ns
        stats.last_access_time_ns = now


def block_acct_invalid(stats: BlockAcctStats, acct_type: int) -> None:
    """A request rejected before submission.  QEMU: block_acct_invalid."""
    stats.invalid_ops[acct_type] += 1
    if stats.account_invalid:
        stats.last_access_time_ns = qemu_clock_get_ns(stats.clock)


def block_acct_merge_done(stats: BlockAcctStats, acct_type: int, num_requests: int) -> None:
    """QEMU: block_acct_merge_done."""
    stats.merged[acct_type] += num_requests
