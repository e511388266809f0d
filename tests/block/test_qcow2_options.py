"""qcow2 runtime options have their effect: the overlap-check bits decide
which writes over metadata are refused, pass-discard-* decides whether
freed clusters are discarded in the file, and the cache sizes decide how
many tables the caches hold.  Effects are compared with real qemu-io on the
same images (output, exit status, file contents, allocated blocks); cache
table counts with QEMU 7.2's read_cache_sizes rules worked by hand.

The messages of every option (open -o, json:, reopen) are compared with
real qemu-io by the corpus scripts tests/qemu-io/qcow2_options_*.qio and
qcow2_reopen_options.qio."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.block import blk_bs, blk_new_open, blk_unref

pytestmark = pytest.mark.timeout(120)

GQEMU_IO = ("import sys; sys.argv[0] = 'qemu-io'; "
            "from gqemu.cli.qemu_io import main; sys.exit(main())")


def run_io(tool: str, cwd: Path, args: list[str]) -> tuple[int, str, str]:
    exe = [sys.executable, "-c", GQEMU_IO] if tool == "gqemu" else [tool]
    r = subprocess.run(exe + args, cwd=cwd, capture_output=True, text=True, timeout=60)
    out = "\n".join(line.split(",")[0] if line.endswith("ops/sec)") else line
                    for line in r.stdout.splitlines())
    return r.returncode, out, r.stderr


def both(tmp_path: Path, qemu_io: str, qemu_img: str, setup, args: list[str]):
    """Run ``args`` through real qemu-io and gqemu-io, each on its own copy
    of the image ``setup(dir)`` makes; (results, image paths)."""
    res, imgs = [], []
    for tool in (qemu_io, "gqemu"):
        d = tmp_path / ("q" if tool == qemu_io else "g")
        d.mkdir()
        setup(d)
        res.append(run_io(tool, d, args))
        imgs.append(d / "t.qcow2")
    return res, imgs


def data_clusters(path: Path, cs: int = 65536) -> list[int]:
    """The file's 64 KiB clusters that hold data (SEEK_DATA / SEEK_HOLE)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end, out, pos = os.fstat(fd).st_size, set(), 0
        while pos < end:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:                     # ENXIO: only a hole is left
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.update(range(d // cs, (h + cs - 1) // cs))
            pos = h
        return sorted(out)
    finally:
        os.close(fd)


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("opts, refused", [
    ("overlap-check=cached", True),
    ("overlap-check=constant", True),
    ("overlap-check=none", False),
    ("overlap-check.refcount-table=off", False),
    ("overlap-check.template=none,overlap-check.refcount-table=on", True),
    ("overlap-check=all,overlap-check.refcount-table=off", False),
])
def test_overlap_check_bits(tmp_path, qemu_io, qemu_img, opts, refused) -> None:
    """The refcount of the refcount table's cluster is zeroed, so the next
    L2 table is allocated over the refcount table: the refcount-table
    check refuses that write (marking the image corrupt); without it the
    write goes through, as in QEMU."""
    def setup(d: Path) -> None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "t.qcow2", "64M"],
                       cwd=d, check=True)
        poke(d / "t.qcow2", 0x20002, b"\0\0")      # refcount of cluster 1 (0x10000)
    (q, g), (qi, gi) = both(tmp_path, qemu_io, qemu_img, setup,
                            ["-c", "open -o %s t.qcow2" % opts, "-c", "write -P 0x5a 64k 64k"])
    assert g == q
    assert ("Preventing invalid write on metadata (overlaps with refcount table)"
            in g[2]) == refused
    assert qi.read_bytes() == gi.read_bytes()


@pytest.mark.parametrize("opts, refused", [
    ("overlap-check=cached", False),
    ("overlap-check=all", True),
    ("overlap-check.inactive-l2=on", True),
    ("overlap-check=all,overlap-check.inactive-l2=off", False),
])
def test_overlap_check_inactive_l2(tmp_path, qemu_io, qemu_img, opts, refused) -> None:
    """After a snapshot and a write, the old L2 table (0x40000) belongs to
    the snapshot only; with its refcount zeroed the next data cluster is
    allocated over it.  Only the inactive-L2 check (part of 'all', which
    reads the snapshots' L1 tables) refuses that write, as in QEMU."""
    def setup(d: Path) -> None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "t.qcow2", "64M"],
                       cwd=d, check=True)
        subprocess.run([qemu_io, "-c", "write -P 1 0 64k", "t.qcow2"], cwd=d, check=True,
                       capture_output=True)
        subprocess.run([qemu_img, "snapshot", "-c", "s", "t.qcow2"], cwd=d, check=True)
        subprocess.run([qemu_io, "-c", "write -P 2 0 64k", "t.qcow2"], cwd=d, check=True,
                       capture_output=True)
        poke(d / "t.qcow2", 0x20008, b"\0\0")      # refcount of cluster 4 (0x40000)
    (q, g), (qi, gi) = both(tmp_path, qemu_io, qemu_img, setup,
                            ["-c", "open -o %s t.qcow2" % opts, "-c", "write -P 3 1M 64k"])
    assert g == q
    assert ("(overlaps with inactive L2 table)" in g[2]) == refused
    for img in (qi, gi):
        assert (img.read_bytes()[0x40000:0x50000] == b"\3" * 0x10000) == (not refused)


@pytest.mark.parametrize("args", [
    ["-c", "open t.qcow2"],
    ["-c", "open -o pass-discard-request=off t.qcow2"],
    ["-c", "open -d ignore t.qcow2"],
    ["-c", "open -d ignore -o pass-discard-request=on t.qcow2"],
    ["-c", "open -o pass-discard-request=on,pass-discard-other=off t.qcow2"],
])
def test_pass_discard_request(tmp_path, qemu_io, qemu_img, args) -> None:
    """A discard frees the clusters; whether they are discarded in the file
    (the file shrinks in allocated blocks) follows pass-discard-request,
    whose default is the discard mode (qemu-io: unmap; with -d ignore the
    discard does not reach qcow2 at all and the data stays)."""
    def setup(d: Path) -> None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "t.qcow2", "4M"],
                       cwd=d, check=True)
    (q, g), (qi, gi) = both(tmp_path, qemu_io, qemu_img, setup,
                            args + ["-c", "write -P 1 0 2M", "-c", "discard 0 2M",
                                    "-c", "read -P 0 0 2M"])
    assert g == q
    assert data_clusters(gi) == data_clusters(qi)
    # st_blocks itself varies by a few KiB from run to run (ext4 places the
    # partly written metadata blocks differently, for qemu-io too)
    assert abs(os.stat(gi).st_blocks - os.stat(qi).st_blocks) * 512 < 65536
    assert os.stat(gi).st_size == os.stat(qi).st_size


def _caches(path: Path, **opts: str) -> tuple[int, int, int]:
    blk = blk_new_open(str(path), dict(opts, format="qcow2"))
    try:
        s = blk_bs(blk).opaque
        return (len(s.l2_table_cache.entries), len(s.refcount_block_cache.entries),
                s.l2_cache_entry_size)
    finally:
        blk_unref(blk)


def test_cache_sizes(tmp_path, qemu_img) -> None:
    """(L2 cache entries, refcount cache blocks, L2 entry size) from QEMU
    7.2's rules (read_cache_sizes, qcow2_update_options_prepare) for a
    64 MiB and a 1 TiB image with 64 KiB clusters.  64 MiB: the whole L2 is 1024 entries * 8 bytes, one
    cluster (max_l2_cache = 64 KiB); at least 2 L2 tables and 4 refcount
    blocks."""
    small, big = tmp_path / "s.qcow2", tmp_path / "b.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(small), "64M"], check=True)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(big), "1T"], check=True)
    k = 1024
    assert _caches(small) == (2, 4, 64 * k)
    # cache-size 1M >= 64k + 4 * 64k: L2 gets 64k, refcounts the other 960k
    assert _caches(small, **{"cache-size": "1M"}) == (2, 15, 64 * k)
    # cache-size 0: refcount min(0, 256k) = 0 -> 4 blocks; L2 0 -> 2 tables
    assert _caches(small, **{"cache-size": "0"}) == (2, 4, 4 * k)
    assert _caches(small, **{"refcount-cache-size": "1M"}) == (2, 16, 64 * k)
    # cache-size 2M with refcount 1M: L2 gets the other 1M (16 tables)
    assert _caches(small, **{"cache-size": "2M", "refcount-cache-size": "1M"}) \
        == (16, 16, 64 * k)
    # 1 TiB: the whole L2 is 16M entries * 8 = 128 MiB; the default budget
    # is 32 MiB, which does not cover it: 4 KiB slices, 8192 of them
    assert _caches(big) == (8192, 4, 4 * k)
    assert _caches(big, **{"l2-cache-size": "1M", "l2-cache-entry-size": "64k"}) \
        == (16, 4, 64 * k)
    # cache-size 8M < 128M + 256k: refcounts min(8M, 256k), L2 the rest
    # (7936 KiB in 4 KiB slices)
    assert _caches(big, **{"cache-size": "8M"}) == (1984, 4, 4 * k)
    assert _caches(big, **{"l2-cache-size": "1M", "l2-cache-entry-size": "512"}) \
        == (2048, 4, 512)


def test_lazy_refcounts_reopen_failure_keeps_old(tmp_path, qemu_io, qemu_img) -> None:
    """A reopen that fails (an invalid overlap-check) changes nothing:
    lazy refcounts stay off, so the image is clean after a write and a
    kill, as in QEMU (qemu-iotests 137, 'transaction semantics')."""
    def setup(d: Path) -> None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "t.qcow2", "64M"],
                       cwd=d, check=True)
    args = ["-c", "reopen -o lazy-refcounts=on,overlap-check=blubb",
            "-c", "write -P 0x5a 0 512", "-c", "sigraise 9", "t.qcow2"]
    (q, g), (qi, gi) = both(tmp_path, qemu_io, qemu_img, setup, args)
    assert (g[0], g[2]) == (q[0], q[2])
    assert "Unsupported value 'blubb'" in g[2]
    for img in (qi, gi):                       # incompatible features: 0 (not dirty)
        assert img.read_bytes()[72:80] == bytes(8)
    # and the reopen that works does turn them on: the kill leaves it dirty
    (tmp_path / "2").mkdir()
    (q, g), (qi, gi) = both(tmp_path / "2", qemu_io, qemu_img, setup,
                            [a.replace(",overlap-check=blubb", "") for a in args])
    assert (g[0], g[2]) == (q[0], q[2])
    for img in (qi, gi):
        assert img.read_bytes()[72:80] == (1).to_bytes(8, "big")


def test_cache_beyond_gqemu_limit_is_refused(tmp_path, qemu_img) -> None:
    """gqemu makes every cache entry up front, so a budget of more than
    2^18 entries (QEMU allocates it lazily and accepts it) is refused with
    QEMU's allocation-failure message instead of building millions of
    objects; 2^18 entries still open."""
    img = tmp_path / "h.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(img), "1P"], check=True)
    r = subprocess.run([sys.executable, "-c", GQEMU_IO, "-c",
                        "open -o l2-cache-size=2G %s" % img], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "qemu-io: can't open device %s: Could not allocate metadata caches\n" % img)
    assert _caches(img, **{"l2-cache-size": "1G"}) == (1 << 18, 4, 4096)
