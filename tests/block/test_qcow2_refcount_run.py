"""refcount_run (the block-at-a-time free-cluster scan of
alloc_clusters_noref) against a shadow model: the per-entry loop over
get_refcount_ro that QEMU's alloc_clusters_noref does."""
from __future__ import annotations

import random

import pytest

from gqemu.block.qcow2_refcount_ro import (get_refcount_ro, refcount_block_bytes, refcount_run,
                                           refcount_values, set_refcount_ro)


def _shadow(block: bytearray, order: int, index: int, end: int, want: int) -> tuple[bool, int]:
    zero = get_refcount_ro(block, order, index) == 0
    n = 1
    while index + n < end and (get_refcount_ro(block, order, index + n) == 0) == zero:
        if zero and n >= want:
            break
        n += 1
    return zero, n


def test_refcount_run_matches_per_entry_scan() -> None:
    rng = random.Random(7)
    for order in range(7):
        bits = 1 << order
        entries = 64 * 8 // bits              # a 64-byte block
        for _ in range(200):
            block = bytearray(64)
            p_used = rng.choice((0.0, 0.1, 0.5, 0.9, 1.0))
            for i in range(entries):
                if rng.random() < p_used:
                    # values whose bytes are partly zero (0x0100...) too
                    v = rng.choice((1, (1 << bits) - 1, 1 << (bits - 1), rng.randrange(1, 1 << bits)))
                    set_refcount_ro(block, order, i, v)
            index = rng.randrange(entries)
            want = rng.randrange(1, entries + 2)
            assert refcount_run(block, order, index, entries, want) == \
                _shadow(block, order, index, entries, want), (order, index, want, block.hex())


@pytest.mark.parametrize("order", range(7))
def test_whole_block_encode_decode_match_the_per_entry_functions(order):
    """refcount_block_bytes / refcount_values (a whole block at once, used
    by the check and the refcount rebuild) agree with set_refcount_ro /
    get_refcount_ro entry by entry, at every width."""
    rnd = random.Random(order)
    size = 512
    n = size * 8 >> order
    values = [rnd.randrange(1 << (1 << order)) for _ in range(n - 3)]
    shadow = bytearray(size)
    for i, v in enumerate(values):
        set_refcount_ro(shadow, order, i, v)
    assert refcount_block_bytes(values, order, size) == shadow
    assert refcount_values(bytes(shadow), order) == values + [0, 0, 0]
    assert [get_refcount_ro(shadow, order, i) for i in range(n)] == values + [0, 0, 0]
