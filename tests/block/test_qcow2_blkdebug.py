"""qcow2 error paths under blkdebug (the shape of qemu-iotests 026,
reliability T32), differential: the same blkdebug config and qemu-io
commands go through the real ``qemu-io`` and through ``gqemu-io`` on
identical images; tool output, exit status and the real ``qemu-img check``
report of both images must match (see tests/qemu-io/blkdebug_matrix.py).

CI runs a slice that raises every event at least once (each event in the
layout that reaches it, errno / once / immediately rotating); the whole
event x errno x once x immediately x layout matrix runs with
``GQEMU_BLKDEBUG_MATRIX=1`` (or ``python tests/qemu-io/blkdebug_matrix.py``).
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gqemu.block as blk_api
from gqemu.block.driver import BlockError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qemu-io"))
import blkdebug_matrix as bm  # noqa: E402

pytestmark = pytest.mark.timeout(300)

# the layout in which each event matters most (default: a fresh image)
_WHERE = {
    "l1_grow_alloc_table": "l1grow", "l1_grow_write_table": "l1grow",
    "l1_grow_activate_table": "l1grow", "vmstate_save": "fresh_vmstate",
    "l2_load": "allocated", "refblock_load": "allocated",
    "l2_alloc_cow_read": "snapshot", "cluster_free": "snapshot",
    "read_aio": "prealloc", "read_backing_aio": "backing", "cow_read": "backing",
    "cow_write": "backing", "cluster_alloc_space": "partial", "pwritev_zero": "partial",
    "refblock_alloc_write_blocks": "refgrow_small",
    "refblock_alloc_write_table": "refgrow_small",
    "refblock_alloc_switch_table": "refgrow_small",
    "reftable_grow": "refgrow_small", "refblock_alloc_hookup": "refgrow_small",
}
_COMBOS = list(itertools.product((5, 28), (True, False), (False, True)))


def _slice() -> list:
    cases = []
    for i, ev in enumerate(bm.EVENTS):
        err, once, imm = _COMBOS[i % len(_COMBOS)]
        cases.append(bm.Case(_WHERE.get(ev, "fresh"), ev, err, once, imm))
    # 026's main loop in full for the events it lists
    for ev in ("l1_update", "l2_update", "l2_alloc_write", "write_aio",
               "refblock_update_part", "refblock_alloc", "cluster_alloc"):
        for err, once, imm in _COMBOS:
            c = bm.Case("fresh", ev, err, once, imm)
            if c not in cases and not imm:
                cases.append(c)
    cases.append(bm.Case("twice", "write_aio", 5, False, False))
    # a COW of zeroes is a write-zeroes in QEMU: no cow_read/cow_write I/O
    for ev in ("cow_read", "cow_write", "cluster_alloc"):
        cases.append(bm.Case("partial", ev, 5, False, False))
    for ev in ("write_aio", "cluster_alloc_space", "l2_update"):
        cases.append(bm.Case("extl2", ev, 5, False, False))
    return cases


CI_CASES = _slice()
ALL_CASES = bm.all_cases() if os.environ.get("GQEMU_BLKDEBUG_MATRIX") else []


def _run(c, qemu_img, qemu_io, tmp_path):
    problems = bm.run_case(c, tmp_path, qemu_img, qemu_io)
    assert not problems, "%s:\n%s" % (c.name, "\n".join(problems))


@pytest.mark.parametrize("case", CI_CASES, ids=lambda c: c.name)
def test_026_differential(case, qemu_img, qemu_io, tmp_path):
    _run(case, qemu_img, qemu_io, tmp_path)


@pytest.mark.skipif(not ALL_CASES, reason="set GQEMU_BLKDEBUG_MATRIX=1 for the full matrix")
@pytest.mark.parametrize("case", ALL_CASES or [None], ids=lambda c: c.name if c else "off")
def test_026_full_matrix(case, qemu_img, qemu_io, tmp_path):
    _run(case, qemu_img, qemu_io, tmp_path)


SET_STATE_CHAIN = """[set-state]
event = "write_aio"
state = "1"
new_state = "2"

[inject-error]
event = "write_aio"
state = "2"
errno = "5"
"""


@pytest.mark.parametrize("layout", ["fresh3", "overwrite3"])
def test_set_state_chain_fails_second_and_third_write(layout, qemu_img, qemu_io, tmp_path):
    """The first write_aio moves the state to 2, which arms the error for
    the next ones: QEMU fails the 2nd and 3rd write, allocating or not."""
    cmds = ["write -P 1 0 4k", "write -P 2 64k 4k", "write -P 3 128k 4k",
            "read -P 1 0 4k"]
    lay = bm.Layout(layout, [], "1G", cmds,
                    prep=["write 0 192k"] if layout == "overwrite3" else [])
    outputs: dict = {}
    problems = bm.run_config(lay, SET_STATE_CHAIN, tmp_path, qemu_img, qemu_io, outputs)
    assert not problems, "\n".join(problems)
    out = outputs["gqemu"][0].stdout.splitlines()
    assert out[0].startswith("wrote 4096/4096 bytes at offset 0")
    assert out[2:4] == ["write failed: Input/output error"] * 2, out


def test_leaks_after_injected_errors_are_repaired(qemu_img, qemu_io, tmp_path):
    """Errors on every refcount-block write while allocating: at worst leaks
    (as QEMU: the matrix compares the reports), and ``gqemu-img check -r
    leaks`` repairs them to a clean image."""
    c = bm.Case("fresh", "refblock_update_part", 5, False, False)
    assert not bm.run_case(c, tmp_path, qemu_img, qemu_io)
    img = tmp_path / "gqemu" / "test.img"
    subprocess.run([sys.executable, "-c",
                    "import sys; from gqemu.cli.qemu_img import main; sys.exit(main())",
                    "check", "-r", "leaks", str(img)], capture_output=True)
    assert subprocess.run([qemu_img, "check", str(img)]).returncode == 0


def test_blkdebug_open_errors_are_block_errors(tmp_path):
    with pytest.raises(BlockError):
        blk_api.blk_new_open("blkdebug:%s:%s" % (tmp_path / "none.conf", tmp_path / "x"),
                             {"format": "qcow2"})
