"""The qcow2 overlap check's per-table index of L2 / refblock targets
(qcow2_overlap._table_targets): answers as QEMU's loop over the table
would, under any sequence of in-place changes, growth and replacement of
the table; costs Python work per changed entry, not per table entry
(counted with ``sys.setprofile``, never timed); and an image whose
preallocation changes the tables thousands of times is one real qemu-img
checks clean."""
from __future__ import annotations

import subprocess
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from gqemu.block.qcow2_header import L1E_OFFSET_MASK
from gqemu.block.qcow2_overlap import _table_overlaps
from gqemu.cli.qemu_img import main as img_main

from tests.runtime.callcount import python_calls

CS = 4096


def qemu_loop(table: list[int], mask: int, offset: int, end: int) -> bool:
    """QEMU 7.2 qcow2_check_metadata_overlap's loop for the active L2
    tables / refcount blocks: any entry's cluster overlapping [offset, end)."""
    for e in table:
        o = e & mask
        if o and o < end and offset < o + CS:
            return True
    return False


def query(s: SimpleNamespace, table: list[int], offset: int, nbytes: int) -> bool:
    end = (offset + nbytes + CS - 1) & ~(CS - 1)
    offset &= ~(CS - 1)
    return _table_overlaps(s, "l1", table, L1E_OFFSET_MASK, offset, end,
                           lambda o, n: n > 0 and o < end and offset < o + n)


# entries: 0, aligned targets (some shared by two entries, some with flag
# bits), and a few unaligned ones (a corrupt image)
entry = st.one_of(st.just(0), st.integers(1, 40).map(lambda c: c * CS),
                  st.integers(1, 40).map(lambda c: c * CS | 1 << 63),
                  st.integers(1, 40 * CS).map(lambda o: o | 0x200))
op = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 200), entry),
    st.tuples(st.just("append"), entry, st.integers(1, 5)),
    st.tuples(st.just("truncate"), st.integers(0, 200)),
    st.tuples(st.just("replace"), st.lists(entry, max_size=60)),
    st.tuples(st.just("query"), st.integers(0, 44 * CS), st.integers(1, 3 * CS)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(entry, max_size=60), st.lists(op, max_size=40))
def test_index_answers_as_qemus_loop(initial, ops):
    s = SimpleNamespace(cluster_size=CS, overlap_sets={})
    table = list(initial)
    for o in ops + [("query", 0, 45 * CS)]:
        if o[0] == "set" and table:
            table[o[1] % len(table)] = o[2]
        elif o[0] == "append":
            table.extend([o[1]] * o[2])
        elif o[0] == "truncate":
            del table[o[1]:]
        elif o[0] == "replace":
            table = list(o[1])
        elif o[0] == "query":
            for off in range(o[1], o[1] + o[2], 1536):
                assert query(s, table, off, o[2]) == qemu_loop(
                    table, L1E_OFFSET_MASK, off & ~(CS - 1),
                    (off + o[2] + CS - 1) & ~(CS - 1)), (table, o)


def allocation_calls(n_entries: int) -> int:
    """Python calls of 64 L2 allocations (one new L1 entry, then the
    overlap check of a one-cluster metadata write) in an L1 table of
    ``n_entries`` half-used entries."""
    table = [(1000 + i) * CS if i % 2 else 0 for i in range(n_entries)]
    s = SimpleNamespace(cluster_size=CS, overlap_sets={})
    query(s, table, 0, CS)                                 # index built

    def allocate() -> None:
        for k in range(64):
            table[2 * k] = (10 * n_entries + k) * CS
            assert query(s, table, (10 * n_entries + k) * CS, 512)
            assert not query(s, table, 3 * CS, 512)
    return len(python_calls(allocate))


def test_an_allocation_costs_python_work_for_its_entry_not_the_table():
    """Before, every change of the table rebuilt the index with a Python
    generator over all its targets (preallocating 256M of 512-byte clusters
    spent most of its CPU there)."""
    small, big = allocation_calls(256), allocation_calls(16384)
    assert big == small, (small, big)
    assert small < 64 * 40, small


def test_preallocated_image_with_thousands_of_table_changes_checks_clean(tmp_path, qemu_img):
    """preallocation=metadata with 512-byte clusters and 64-bit refcounts:
    ~1000 L2 tables and ~1000 refblocks allocated, each one a change of the
    L1 or refcount table followed by overlap-checked metadata writes; any
    wrong answer of the index would refuse a write (corrupt image) or let
    one clobber metadata, and real qemu-img check finds neither."""
    img = tmp_path / "p.qcow2"
    assert img_main(["create", "-q", "-f", "qcow2", "-o",
                     "refcount_bits=64,cluster_size=512,preallocation=metadata",
                     str(img), "32M"]) == 0
    p = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No errors were found on the image." in p.stdout
    assert "65536/65536 = 100.00% allocated" in p.stdout, p.stdout
