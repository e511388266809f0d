"""What QEMU 7.2's iotest 154 checks, against the real tools: a zero write
that covers only part of a qcow2 cluster turns the whole cluster into a
zero cluster when the rest of it already reads as zero through the backing
chain (unallocated down the chain, or past the end of a shorter backing
file), and is written as data otherwise; the image maps (real ``qemu-img
map``) equal the ones QEMU's qemu-io leaves."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

GQEMU_IO = [sys.executable, "-m", "gqemu.cli.qemu_io"]

# (backing writes, overlay zero writes): 154's cases on 4k clusters
ZERO_CASES = {
    "backing_zero": ([], ["0 2k", "10k 2k", "17k 2k", "27k 2k"]),
    "data_before": (["-P 0x11 32k 1k", "-P 0x11 65k 1k"], ["34k 1k", "66k 1k"]),
    "data_after": (["-P 0x11 35k 1k", "-P 0x11 68k 1k"], ["33k 1k", "66k 1k"]),
    "two_clusters": (["-P 0x11 32k 1k", "-P 0x11 60k 1k"], ["35k 2k", "63k 2k", "70k 4k"]),
    "allocated_top": ([], ["-P 0x22 40k 1k", "-z 41k 1k"]),
}


def _run(argv: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


@pytest.mark.parametrize("case", sorted(ZERO_CASES))
def test_partial_cluster_zero_write_with_backing_maps_as_qemu(qemu_img, qemu_io, tmp_path,
                                                              case):
    base_writes, top_writes = ZERO_CASES[case]
    maps = []
    for tool in ([qemu_io], GQEMU_IO):
        d = tmp_path / ("want" if tool == [qemu_io] else "got")
        d.mkdir()
        base, top = d / "t.qcow2.base", d / "t.qcow2"
        _run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(base),
              "128M"])
        _run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
              str(base), "-F", "qcow2", str(top)])
        if base_writes:
            _run([qemu_io] + [a for w in base_writes for a in ("-c", "write " + w)]
                 + [str(base)])
        _run(tool + [a for w in top_writes
                     for a in ("-c", "write " + (w if w.startswith("-") else "-z " + w))]
             + [str(top)])
        maps.append(_run([qemu_img, "map", "--output=json", str(top)]).stdout
                    .replace(str(d), "DIR"))
        assert _run([qemu_img, "check", str(top)]).returncode == 0
    assert maps[1] == maps[0]
    if case == "backing_zero":
        assert '"zero": true, "data": false}' in maps[0].splitlines()[0]


def test_partial_zero_write_past_short_backing_file(qemu_img, qemu_io, tmp_path):
    """The part of the cluster past the end of a shorter backing file reads
    as zero (154's 'backing file is shorter' cases)."""
    maps = []
    for tool in ([qemu_io], GQEMU_IO):
        d = tmp_path / ("want" if tool == [qemu_io] else "got")
        d.mkdir()
        base, top = d / "b.qcow2", d / "t.qcow2"
        _run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(base),
              str(128 << 20)])
        _run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
              str(base), "-F", "qcow2", str(top), str((128 << 20) + 2048)])
        _run([qemu_io, "-c", "write -P 0x11 %d 512" % ((128 << 20) - 512), str(base)])
        _run(tool + ["-c", "write -z %d 512" % ((128 << 20) + 1536),
                     "-c", "write -z %d 512" % ((128 << 20) - 4096), str(top)])
        maps.append(_run([qemu_img, "map", "--output=json", str(top)]).stdout)
    assert maps[1] == maps[0]
