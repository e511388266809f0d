"""The shadow disk follows QEMU's ordering rules for overlapping requests."""
from __future__ import annotations

from gqemu.stress.shadow import INITIAL, ZERO, ShadowDisk, pattern

U = 256


def data_of(wid, first, n):
    return pattern(wid, first, n, U)


def test_sequential_writes_leave_only_the_last():
    sh = ShadowDisk(16 * U, U, INITIAL)
    a, _ = sh.write_begin(0, 4 * U)
    sh.write_end(a, 0)
    b, _ = sh.write_begin(2 * U, 4 * U)
    sh.write_end(b, 0)
    r = sh.read_begin(0, 6 * U)
    assert sh.read_end(r, data_of(a, 0, 2) + data_of(b, 2, 4)) is None
    r = sh.read_begin(0, 6 * U)
    err = sh.read_end(r, data_of(a, 0, 4) + data_of(b, 4, 2))
    assert err and "unit 2" in err and "write #%d" % b in err


def test_concurrent_overlapping_writes_may_land_in_either_order():
    sh = ShadowDisk(16 * U, U, INITIAL)
    a, _ = sh.write_begin(0, 4 * U)
    b, _ = sh.write_begin(0, 4 * U)
    sh.write_end(a, 0)
    sh.write_end(b, 0)
    for wid in (a, b):
        r = sh.read_begin(0, 4 * U)
        assert sh.read_end(r, data_of(wid, 0, 4)) is None
    r = sh.read_begin(0, 4 * U)
    assert sh.read_end(r, data_of(INITIAL, 0, 4)) is not None


def test_read_during_write_sees_old_or_new_unit_by_unit():
    sh = ShadowDisk(16 * U, U, INITIAL)
    r = sh.read_begin(0, 4 * U)
    a, _ = sh.write_begin(0, 4 * U)
    sh.write_end(a, 0)
    assert sh.read_end(r, data_of(INITIAL, 0, 2) + data_of(a, 2, 2)) is None
    r = sh.read_begin(0, 4 * U)
    assert "initial data" in sh.read_end(r, data_of(INITIAL, 0, 4))


def test_failed_write_and_discard_may_or_may_not_land():
    sh = ShadowDisk(16 * U, U, INITIAL)
    a, _ = sh.write_begin(0, 2 * U)
    sh.write_end(a, -5)
    d, _ = sh.write_begin(2 * U, 2 * U, "discard")
    sh.write_end(d, 0, "discard")
    for data in (data_of(INITIAL, 0, 2) + bytes(2 * U), data_of(a, 0, 2) + data_of(INITIAL, 2, 2)):
        r = sh.read_begin(0, 4 * U)
        assert sh.read_end(r, data) is None
    z, _ = sh.write_begin(0, 2 * U, "zero")
    sh.write_end(z, 0, "zero")
    r = sh.read_begin(0, 2 * U)
    assert "zeroes" not in (sh.read_end(r, bytes(2 * U)) or "")
    r = sh.read_begin(0, 2 * U)
    assert sh.read_end(r, data_of(a, 0, 2)) is not None


def test_lost_update_is_caught():
    """Two read-modify-writes of one block that both read the old block:
    the second write puts back stale data over the first one's units."""
    sh = ShadowDisk(16 * U, U, ZERO)
    a, _ = sh.write_begin(0, U)           # units 0 of block [0, 4)
    b, _ = sh.write_begin(2 * U, U)       # unit 2 of the same block
    sh.write_end(a, 0)
    sh.write_end(b, 0)
    r = sh.read_begin(0, 4 * U)
    stale = bytes(U) + bytes(U) + data_of(b, 2, 1) + bytes(U)   # a's unit lost
    err = sh.read_end(r, stale)
    assert err and "unit 0" in err and "zeroes" in err


def test_garbage_is_caught():
    sh = ShadowDisk(4 * U, U, INITIAL)
    r = sh.read_begin(0, U)
    assert "garbage" in sh.read_end(r, b"\x01" * U)
