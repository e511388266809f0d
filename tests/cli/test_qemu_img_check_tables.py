"""qemu-img check on images whose L2 tables and refcount blocks lie one after
the other (the check reads and counts those a table at a time, and hands any
table that holds something unusual back to the entry-by-entry code): the
same report, counts, exit codes and repairs as the real qemu-img, on clean
images and with damage in the middle of a run of tables."""
from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(240)

COPIED = 1 << 63
OFFSET_MASK = 0x00FFFFFFFFFFFE00


def ok(*cmd, cwd=None) -> str:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert p.returncode == 0, "%s: %s%s" % (cmd, p.stdout, p.stderr)
    return p.stdout


class Img:
    """Just enough of the qcow2 layout to find and damage entries."""

    def __init__(self, path: Path) -> None:
        self.path = path
        h = self.read(0, 104)
        self.cluster_bits = struct.unpack_from(">I", h, 20)[0]
        self.cs = 1 << self.cluster_bits
        self.l1_size, self.l1_offset, self.reft_offset = struct.unpack_from(">IQQ", h, 36)
        self.refcount_order = struct.unpack_from(">I", h, 96)[0]

    def read(self, off: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def write(self, off: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def l1(self) -> list[int]:
        return list(struct.unpack(">%dQ" % self.l1_size, self.read(self.l1_offset,
                                                                      self.l1_size * 8)))

    def l2(self, l2_offset: int) -> list[int]:
        return list(struct.unpack(">%dQ" % (self.cs // 8), self.read(l2_offset, self.cs)))

    def data_entries(self) -> list[tuple[int, int]]:
        """(entry offset in the file, entry) of every allocated L2 entry."""
        out = []
        for e in self.l1():
            t = e & OFFSET_MASK
            if t:
                out += [(t + 8 * i, w) for i, w in enumerate(self.l2(t)) if w & OFFSET_MASK]
        return out

    def refcount_at(self, cluster: int) -> tuple[int, int, int]:
        """(byte offset, bit shift, width) of a cluster's refcount."""
        bits = 1 << self.refcount_order
        per_block = self.cs * 8 // bits
        rb = struct.unpack(">Q", self.read(self.reft_offset + 8 * (cluster // per_block),
                                           8))[0]
        assert rb, cluster
        i = cluster % per_block
        return rb + i * bits // 8, (i * bits) % 8 if bits < 8 else 0, bits

    def set_refcount(self, cluster: int, value: int) -> None:
        off, shift, bits = self.refcount_at(cluster)
        if bits >= 8:
            self.write(off, value.to_bytes(bits // 8, "big"))
        else:
            b = self.read(off, 1)[0] & ~(((1 << bits) - 1) << shift)
            self.write(off, bytes([b | value << shift]))

    def get_refcount(self, cluster: int) -> int:
        off, shift, bits = self.refcount_at(cluster)
        if bits >= 8:
            return int.from_bytes(self.read(off, bits // 8), "big")
        return (self.read(off, 1)[0] >> shift) & ((1 << bits) - 1)


def build_runs(d: Path, opts: str) -> Path:
    """512-byte clusters: 40 L2 tables allocated one after the other
    (zero writes), data over several of them, compressed and zero
    clusters, a snapshot sharing tables, and writes after it."""
    img = d / "t.qcow2"
    ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512" + opts, img, "4M")
    ok("qemu-io", *sum((["-c", "write -z %d 512" % (i * 32768)] for i in range(40)), []),
       img)
    ok("qemu-io", "-c", "write -P 1 0 96k", "-c", "write -P 2 130k 3k",
       "-c", "write -c -P 3 200k 1k", "-c", "write -z 300k 2k", "-c", "write -P 4 1M 40k",
       "-c", "discard 1030k 1k", img)
    if "refcount_bits=1" not in opts:     # QEMU cannot share a cluster then
        ok("qemu-img", "snapshot", "-c", "s1", img)
    ok("qemu-io", "-c", "write -P 5 40k 4k", "-c", "write -P 6 600k 10k", img)
    return img


def build_044(d: Path) -> Path:
    """iotest 044's layout, scaled down: a refcount table of 4 clusters, its
    refcount blocks, an L1 of 8192 entries and their L2 tables, each run in
    one piece, most L2 tables empty; then a write past what the refcount
    blocks cover (the refcount table grows)."""
    img = d / "t.qcow2"
    ok("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "64M")
    rt_clusters, l1_size = 2, 4096
    off_reftable = 512
    off_refblock = off_reftable + 512 * rt_clusters
    off_l1 = off_refblock + 512 * rt_clusters * 64
    off_l2 = off_l1 + l1_size * 8
    off_data = off_l2 + l1_size * 512
    file_size = rt_clusters * 64 * 256 * 512
    with open(img, "r+b") as f:
        f.seek(36)
        f.write(struct.pack(">IQQI", l1_size, off_l1, off_reftable, rt_clusters))
        f.seek(off_reftable)
        f.write(struct.pack(">%dQ" % (rt_clusters * 64),
                            *(off_refblock + i * 512 for i in range(rt_clusters * 64))))
        f.write(struct.pack(">H", 1) * (rt_clusters * 64 * 256))
        f.write(struct.pack(">%dQ" % l1_size,
                            *(COPIED | off_l2 + 512 * j for j in range(l1_size))))
        n = (file_size - off_data) // 512
        f.write(struct.pack(">%dQ" % n, *(COPIED | off_data + 512 * j for j in range(n))))
        f.truncate(file_size)
    ok("qemu-io", "-c", "write 50M 64k", img)
    return img


def damage(img: Path, case: str) -> None:
    m = Img(img)
    ents = m.data_entries()
    l2_off, ent = ents[len(ents) // 2]
    cluster = (ent & OFFSET_MASK) >> m.cluster_bits
    if case == "leak":                  # a data cluster counted twice
        m.set_refcount(cluster, m.get_refcount(cluster) + 1)
    elif case == "leak_end":            # refcount on the last cluster of a block, unused
        last = Path(img).stat().st_size // m.cs - 1
        m.set_refcount(last, 1)
    elif case == "copied":              # COPIED cleared on an entry with refcount 1
        copied = [(o, w) for o, w in ents if w & COPIED]
        o, w = copied[len(copied) // 2]
        m.write(o, struct.pack(">Q", w & ~COPIED))
    elif case == "l1copied":
        l1 = m.l1()
        k = [i for i, e in enumerate(l1) if e & COPIED][-2]
        m.write(m.l1_offset + 8 * k, struct.pack(">Q", l1[k] & ~COPIED))
    elif case == "refzero":             # a data cluster's refcount lost
        m.set_refcount(cluster, 0)
    elif case == "reserved":            # a reserved bit in an L2 entry
        m.write(l2_off, struct.pack(">Q", ent | 2))
    elif case == "dup_l1":              # two L1 entries name the same L2 table
        l1 = m.l1()
        used = [i for i, e in enumerate(l1) if e]
        m.write(m.l1_offset + 8 * used[3], struct.pack(">Q", l1[used[2]]))
    elif case == "compressed_copied":   # a compressed entry with COPIED set
        comp = [(o, w) for o, w in ents if w & (1 << 62)]
        m.write(comp[0][0], struct.pack(">Q", comp[0][1] | COPIED))
    elif case == "fragment":            # two entries of a table swapped
        t = [e for e in m.l1() if e][1] & OFFSET_MASK
        a, b = m.l2(t)[4:6]
        m.write(t + 32, struct.pack(">QQ", b, a))
    else:
        assert case == "clean"


CASES = [
    ("runs", "", "clean"), ("runs", "", "leak"), ("runs", "", "leak_end"),
    ("runs", "", "copied"), ("runs", "", "l1copied"), ("runs", "", "refzero"),
    ("runs", "", "reserved"), ("runs", "", "dup_l1"), ("runs", "", "compressed_copied"),
    ("runs", "", "fragment"),
    ("runs", ",refcount_bits=1", "clean"), ("runs", ",refcount_bits=1", "copied"),
    ("runs", ",refcount_bits=4", "leak"), ("runs", ",refcount_bits=8", "leak"),
    ("runs", ",refcount_bits=32", "leak"), ("runs", ",refcount_bits=64", "leak"),
    ("runs", ",refcount_bits=64", "refzero"),
    ("044", "", "clean"), ("044", "", "leak"), ("044", "", "copied"), ("044", "", "dup_l1"),
]


@pytest.fixture(scope="module")
def base_images(tmp_path_factory) -> dict:
    """The undamaged images, each built once (by the real tools)."""
    made: dict = {}

    def get(layout: str, opts: str) -> Path:
        if (layout, opts) not in made:
            d = tmp_path_factory.mktemp("base")
            made[layout, opts] = build_044(d) if layout == "044" else build_runs(d, opts)
        return made[layout, opts]
    return get


@pytest.mark.parametrize("layout,opts,case", CASES,
                         ids=["%s%s-%s" % (a, b.replace(",refcount_bits=", "-rb"), c)
                              for a, b, c in CASES])
def test_check_table_runs_same_as_qemu_img(tmp_path, qemu_img, qemu_io, monkeypatch, capsys,
                                           base_images, layout, opts, case):
    img = tmp_path / "t.qcow2"
    shutil.copy(base_images(layout, opts), img)
    damage(img, case)
    dirs = {}
    for who in ("q", "g"):
        dirs[who] = tmp_path / who
        dirs[who].mkdir()
        shutil.copy(img, dirs[who] / "t.qcow2")
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    for args in (["check"], ["check", "--output=json"], ["check", "-r", "leaks"],
                 ["check", "-r", "all"], ["check"]):
        q = subprocess.run(["qemu-img", *args, "t.qcow2"], capture_output=True, text=True,
                           cwd=dirs["q"])
        monkeypatch.chdir(dirs["g"])
        rc = gimg.main([*args, "t.qcow2"])
        out, err = capsys.readouterr()
        assert rc == q.returncode, (args, out, err, q.stdout, q.stderr)
        assert out == q.stdout, args
        assert err.replace("gqemu-img", "qemu-img") == q.stderr, args
    # the repairs wrote the same bytes (a rebuilt refcount structure laid
    # out as QEMU's; a leaked cluster repaired down to 0 discarded)
    assert (dirs["q"] / "t.qcow2").read_bytes() == (dirs["g"] / "t.qcow2").read_bytes()
