"""gqemu traces the refdata run exactly as QEMU 7.2 did: same events, same
formats, same order (pointers renamed by first appearance, timestamps and
QEMU's pci_cfg_* events dropped; compared from the first register access,
after the machine-construction resets)."""
from __future__ import annotations

import io
import lzma
import re

import pytest

from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output, trace_reset
from tests.hw.replay_helper import load_exits, replay_exits
from tests.hw.rig import Rig, decompress

_PREFIX = re.compile(r"^\d+@\d+\.\d+:")
_PTR = re.compile(r"0x[0-9a-f]{9,}")


def normalize(lines):
    names: dict[str, str] = {}
    out = []
    started = False
    for line in lines:
        line = _PREFIX.sub("", line.rstrip("\n"))
        if not line or line.startswith("pci_cfg_"):
            continue
        if not started:
            if not line.startswith("ide_ioport"):
                continue
            started = True
        out.append(_PTR.sub(lambda m: names.setdefault(m.group(0), "P%d" % len(names)), line))
    return out


@pytest.fixture
def traced():
    buf = io.StringIO()
    trace_init_output(buf, "log")
    trace_enable_events("ide_*")
    trace_enable_events("bmdma_*")
    try:
        yield buf
    finally:
        trace_reset()
        trace_close_output()


@pytest.mark.parametrize("readahead", [0, 16])
def test_trace_matches_qemu_log(traced, refdata, tmp_path, readahead):
    disk = decompress(refdata / "mbr/out/disk-pristine.img.xz", tmp_path / "disk.img")
    rig = Rig([disk], readahead=readahead)
    try:
        assert list(replay_exits(rig, load_exits(refdata / "mbr/out/exits-raw.jsonl.xz"))) == []
        rig.settle()
    finally:
        rig.close()
    with lzma.open(refdata / "mbr/out/trace-raw.log.xz", "rt") as f:
        want = normalize(f)
    got = normalize(traced.getvalue().splitlines())
    assert len(want) > 5000
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "line %d differs:\n got  %s\n want %s" % (i, g, w)
    assert len(got) == len(want)
