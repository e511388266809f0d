"""qcow2 external data files through every qemu-img command, against the
real qemu-img/qemu-io: each scenario runs its steps once with QEMU's tools
(in q/) and once with gqemu's (in g/, in process) and asserts, after every
step, the same exit code and output and the same bytes in every file (the
qcow2 files and their data files).

Covers convert (a data-file image as source and as target, with
data_file_raw, preallocation and -n), commit (into a base with a data file,
and emptying an overlay with one), rebase and amend of the backing file on a
raw data file, zero writes and discards through qemu-io, resize of a raw
data file image and shrinks, measure, compare, dd, map and check; a file
the convert reads is never its target nor its data file, the data file can
be named in the options (--image-opts, --target-image-opts, -o data-file.*),
and a flush reaches it."""
from __future__ import annotations

import json
import shutil
import struct

import pytest

from test_qcow2_data_file import run, twin  # noqa: F401  (twin: the fixture)

pytestmark = pytest.mark.timeout(300)

IMG, IO = "qemu-img", "qemu-io"
CREATE = [IMG, "create", "-q", "-f", "qcow2"]
MAP = [IMG, "map", "--output=json"]


def _src(opts: str = "data_file=s.raw", size: str = "4M") -> list:
    """A source image with data, a zero cluster and unallocated space."""
    return [CREATE + ["-o", opts, "s.qcow2", size],
            [IO, "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 1M 128k",
             "-c", "write -z 2M 64k", "s.qcow2"]]


def _convert(opts: str) -> list:
    return _src() + [[IMG, "convert", "-O", "qcow2", "-o", opts, "s.qcow2", "o.qcow2"],
                     MAP + ["o.qcow2"], [IMG, "check", "o.qcow2"], [IMG, "info", "o.qcow2"],
                     [IMG, "compare", "s.qcow2", "o.qcow2"]]


def _commit_base(opts: str) -> list:
    """A base with a data file under a plain overlay that holds data, zero
    clusters (one with -u) and a discard."""
    return [CREATE + ["-o", opts, "b.qcow2", "4M"],
            [IO, "-c", "write -P 0x11 0 192k", "-c", "write -P 0x12 1M 64k", "b.qcow2"],
            CREATE + ["-b", "b.qcow2", "-F", "qcow2", "o.qcow2"],
            [IO, "-c", "write -P 0x55 2M 64k", "-c", "write -z 0 64k",
             "-c", "write -z -u 128k 64k", "-c", "discard 1M 64k", "o.qcow2"],
            [IMG, "commit", "o.qcow2"], MAP + ["b.qcow2"], [IMG, "check", "b.qcow2"],
            MAP + ["o.qcow2"]]


SCENARIOS = {
    # a data-file target: data clusters lie beyond the end of the qcow2 file
    "convert-raw": _convert("data_file=o.raw,data_file_raw=on"),
    "convert-metadata": _convert("data_file=o.raw,preallocation=metadata"),
    "convert-full": _convert("data_file=o.raw,preallocation=full"),
    "convert-falloc": _convert("data_file=o.raw,preallocation=falloc"),
    "convert-plain": _convert("data_file=o.raw") + [
        [IMG, "convert", "-O", "qcow2", "s.qcow2", "p.qcow2"], MAP + ["p.qcow2"],
        [IMG, "convert", "-O", "raw", "s.qcow2", "p.raw"],
        [IMG, "convert", "-O", "qcow2", "-c", "-o", "data_file=c.raw", "s.qcow2", "c.qcow2"],
        [IMG, "convert", "-O", "qcow2", "-o", "data_file_raw=on", "s.qcow2", "e.qcow2"]],
    "convert-n-raw": _src() + [
        CREATE + ["-o", "data_file=n.raw,data_file_raw=on", "n.qcow2", "4M"],
        [IMG, "convert", "-n", "-O", "qcow2", "s.qcow2", "n.qcow2"],
        MAP + ["n.qcow2"], [IMG, "check", "n.qcow2"]],
    # commit into a base whose data file the overlay's chain holds open
    "commit-base": _commit_base("data_file=b.raw"),
    # ... a raw one: zero writes that may unmap drop cluster 0 too
    "commit-base-raw": _commit_base("data_file=b.raw,data_file_raw=on"),
    # emptying an overlay with a data file discards every cluster, L2
    # tables are allocated for the whole image, the data file is discarded
    "commit-overlay": [
        CREATE + ["b.qcow2", "8M"],
        CREATE + ["-b", "b.qcow2", "-F", "qcow2", "-o", "data_file=o.raw,cluster_size=4k",
                  "o.qcow2"],
        [IO, "-c", "write -P 0x33 0 128k", "o.qcow2"],
        [IMG, "commit", "o.qcow2"], MAP + ["o.qcow2"], [IMG, "check", "o.qcow2"],
        MAP + ["b.qcow2"]],
    # commit -b through a middle image with a data file: its zero clusters
    # stay zero clusters in the base (the status of the whole chain)
    "commit-chain": [
        CREATE + ["b.qcow2", "4M"], [IO, "-c", "write -P 1 0 1M", "b.qcow2"],
        CREATE + ["-b", "b.qcow2", "-F", "qcow2", "-o", "data_file=m.raw", "m.qcow2"],
        # one data run only: QEMU's commit copies chunks in parallel, so with
        # two the base's cluster order varies from run to run (seen: 4 of 6)
        [IO, "-c", "write -z 3M 64k", "-c", "write -z 128k 64k", "m.qcow2"],
        CREATE + ["-b", "m.qcow2", "-F", "qcow2", "-o", "data_file=t.raw", "t.qcow2"],
        [IO, "-c", "write -P 3 1M 128k", "t.qcow2"],
        [IMG, "commit", "-b", "b.qcow2", "t.qcow2"], MAP + ["b.qcow2"],
        [IMG, "compare", "-s", "t.qcow2", "b.qcow2"]],
    # a backing file cannot be added to an image with a raw data file
    "rebase-raw": [
        CREATE + ["b.qcow2", "4M"],
        CREATE + ["-o", "data_file=r.raw,data_file_raw=on", "r.qcow2", "4M"],
        [IMG, "rebase", "-b", "b.qcow2", "-F", "qcow2", "r.qcow2"],
        [IMG, "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "r.qcow2"],
        [IMG, "amend", "-o", "backing_file=b.qcow2,backing_fmt=qcow2", "r.qcow2"],
        [IMG, "info", "r.qcow2"],
        CREATE + ["-b", "b.qcow2", "-F", "qcow2", "-o", "data_file=o.raw", "o.qcow2"],
        [IO, "-c", "write -P 0x5 64k 64k", "o.qcow2"],
        [IMG, "rebase", "-b", "", "o.qcow2"], MAP + ["o.qcow2"],
        [IMG, "rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "o.qcow2"],
        [IMG, "info", "--backing-chain", "--output=json", "o.qcow2"]],
    # the data file's cluster 0 (offset 0 with COPIED) is allocated
    "zero-discard-cluster0": [
        CREATE + ["-o", "data_file=d.raw", "d.qcow2", "1M"],
        [IO, "-c", "write -P 0x11 0 192k", "-c", "write -z -u 0 64k", "d.qcow2"],
        MAP + ["d.qcow2"],
        [IO, "-c", "write -P 0x22 0 64k", "-c", "discard 0 128k", "d.qcow2"],
        MAP + ["d.qcow2"], [IMG, "check", "d.qcow2"],
        CREATE + ["-o", "data_file=r.raw,data_file_raw=on", "r.qcow2", "1M"],
        [IO, "-c", "write -P 0x11 0 192k", "-c", "write -z -u 0 64k",
         "-c", "discard 64k 64k", "-c", "write -c 128k 64k", "r.qcow2"],
        MAP + ["r.qcow2"], [IO, "-c", "map", "r.qcow2"], [IMG, "check", "r.qcow2"],
        [IMG, "compare", "d.qcow2", "r.qcow2"], [IMG, "compare", "r.qcow2", "r.raw"]],
    # growing an image with a raw data file maps the new clusters
    "resize-raw": [
        CREATE + ["-o", "data_file=t.raw,data_file_raw=on", "t.qcow2", "1M"],
        [IMG, "resize", "t.qcow2", "3M"], MAP + ["t.qcow2"],
        [IMG, "resize", "--shrink", "t.qcow2", "512k"], MAP + ["t.qcow2"],
        [IMG, "check", "t.qcow2"]],
    # a shrink's discard allocates the L2 table of the new last cluster
    "shrink": [
        CREATE + ["-o", "data_file=s.raw,cluster_size=512", "s.qcow2", "1M"],
        [IMG, "resize", "s.qcow2", "1500k"],
        [IO, "-c", "write -P 0x55 1000k 500k", "s.qcow2"],
        [IMG, "resize", "--shrink", "s.qcow2", "600k"], [IMG, "check", "s.qcow2"],
        CREATE + ["a.qcow2", "1G"], [IMG, "resize", "--shrink", "a.qcow2", "600M"],
        [IMG, "check", "a.qcow2"]],
    # a file the convert reads is refused as its target or data file, untouched
    "convert-onto-source": _src() + [
        [IMG, "convert", "-O", "qcow2", "-o", "data_file=s.qcow2", "s.qcow2", "o.qcow2"],
        [IMG, "convert", "-O", "qcow2", "-o", "data_file=s.raw", "s.qcow2", "o.qcow2"],
        [IMG, "convert", "-O", "qcow2", "s.qcow2", "s.qcow2"],
        [IMG, "convert", "-O", "qcow2", "-o", "cluster_size=3", "s.qcow2", "s.qcow2"],
        [IMG, "convert", "-O", "raw", "s.raw", "s.raw"],
        [IMG, "convert", "-O", "qcow2", "-o", "data_file=s.raw", "s.raw", "o.qcow2"],
        [IMG, "create", "-f", "qcow2", "-o", "data_file=", "e.qcow2", "1M"],
        [IO, "-c", "read -P 0x11 0 64k", "s.qcow2"]],
    # the data file named in the options: --image-opts, -o data-file.*
    "image-opts": _src() + [
        [IMG, "amend", "-o", "data_file=", "s.qcow2"],
        [IMG, "convert", "-O", "qcow2", "s.qcow2", "o.qcow2"],
        [IMG, "convert", "-O", "qcow2", "--image-opts",
         "driver=qcow2,file.filename=s.qcow2,data-file.filename=s.raw", "o.qcow2"],
        CREATE + ["-o", "data_file=t.raw", "t.qcow2", "4M"],
        [IMG, "convert", "-n", "--target-image-opts", "o.qcow2",
         "driver=qcow2,file.filename=t.qcow2,data-file.filename=n.raw"],
        [IMG, "convert", "--target-image-opts", "o.qcow2", "driver=qcow2,file.filename=t.qcow2"],
        [IMG, "create", "-q", "-f", "raw", "n.raw", "4M"],
        [IMG, "convert", "-n", "--target-image-opts", "o.qcow2",
         "driver=qcow2,file.filename=t.qcow2,data-file.filename=n.raw"],
        MAP + ["t.qcow2"], [IMG, "compare", "o.qcow2", "n.raw"],
        [IO, "-c", "open -o data-file.filename=inexistent o.qcow2"],
        [IO, "-c", "open -o data-file.filename=n.raw o.qcow2"]],
    # a flush reaches the data file (a blkdebug node fails it)
    "flush": [
        CREATE + ["-o", "data_file=t.raw", "t.qcow2", "1M"],
        [IO, "-t", "writeback", "-c", "write 0 512", "-c", "flush", "json:" + json.dumps({
            "driver": "qcow2", "file": {"driver": "file", "filename": "t.qcow2"},
            "data-file": {"driver": "blkdebug", "inject-error": [
                {"event": "none", "iotype": "flush"}],
                "image": {"driver": "file", "filename": "t.raw"}}})]],
    # qemu-img bench: its requests (and what they write) and its messages
    "bench": [
        CREATE + ["-o", "data_file=d.raw", "d.qcow2", "4M"],
        [IMG, "bench", "-c", "10", "-w", "-s", "64k", "d.qcow2"],
        [IMG, "bench", "-c", "100", "-d", "4", "-w", "-S", "192k", "-o", "100k",
         "--pattern", "7", "d.qcow2"],
        [IMG, "bench", "-c", "100", "-d", "4", "-w", "--flush-interval", "8", "--no-drain",
         "--pattern", "9", "-s", "512", "-S", "1M", "d.qcow2"],
        [IMG, "bench", "-c", "100", "-d", "4", "-w", "--flush-interval", "8", "-t", "none",
         "-n", "d.qcow2"],
        MAP + ["d.qcow2"], [IMG, "check", "d.qcow2"],
        CREATE + ["-o", "data_file=r.raw,data_file_raw=on", "r.qcow2", "4M"],
        [IMG, "bench", "-c", "10", "-w", "-s", "64k", "-S", "128k", "--pattern", "0x5a",
         "r.qcow2"], MAP + ["r.qcow2"],
        [IMG, "bench", "-c", "20", "-q", "-i", "io_uring", "--image-opts",
         "driver=qcow2,file.filename=d.qcow2"],
        [IMG, "bench", "-c", "3", "-U", "-f", "raw", "d.raw"],
        [IMG, "bench", "-c", "2", "-s", "8M", "-w", "d.qcow2"]]
    + [[IMG, "bench"] + a + ["d.qcow2"] for a in (
        ["-n"], ["-t", "bogus"], ["-i", "foo"], ["-c", "-1"], ["-s", "3G"], ["-s", "foo"],
        ["--pattern", "256"], ["--flush-interval", "3"], ["-w", "--flush-interval", "3"],
        ["-o", "-1"], ["-w", "-U"], ["-c", "0", "-d", "0"])] + [[IMG, "bench"]],
    "measure-dd": _src() + [
        [IMG, "measure", "-O", "qcow2", "s.qcow2"],
        [IMG, "measure", "-O", "qcow2", "-o", "data_file=x.raw,data_file_raw=on", "s.qcow2"],
        [IMG, "measure", "-O", "qcow2", "-o", "data_file=x.raw,preallocation=full",
         "--size", "1G"],
        [IMG, "measure", "-O", "qcow2", "-o", "data_file_raw=on", "--size", "1G"],
        [IMG, "dd", "if=s.qcow2", "of=o.raw", "bs=64k"],
        [IMG, "dd", "-O", "qcow2", "if=s.qcow2", "of=o.qcow2", "bs=64k", "count=20",
         "skip=1"], MAP + ["o.qcow2"], [IMG, "compare", "s.qcow2", "s.raw"]],
}


def _same_files(q, g) -> None:
    names = sorted(p.name for p in q.iterdir())
    assert names == sorted(p.name for p in g.iterdir())
    for name in names:
        assert (q / name).read_bytes() == (g / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_data_file_commands(twin, name):
    for step in SCENARIOS[name]:
        twin(step[0], step[1:])
        _same_files(twin.q, twin.g)


def _poke(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_data_file_corrupt_images(twin, qemu_img, qemu_io):
    """check and map of damaged data-file images, and an image with both
    snapshots and a data file (made by the real tools, copied to both
    folders: the snapshot's date differs between runs)."""
    q = twin.q.parent / "src"
    q.mkdir()
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "data_file=d.raw", "d.qcow2", "4M"], q)
    run([qemu_io, "-c", "write -P 1 0 128k", "-c", "write -P 2 1M 64k", "d.qcow2"], q)
    _poke(q / "d.qcow2", 0x40000 + 8 * 16, struct.pack(">Q", 1 << 62 | 0x100000))
    shutil.copy(q / "d.qcow2", q / "e.qcow2")
    _poke(q / "e.qcow2", 0x40000 + 8 * 1, struct.pack(">Q", 1 << 63 | 0x30000))
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,data_file=x.raw",
         "x.qcow2", "1M"], q)
    run([qemu_io, "-c", "write -P 1 0 64k", "x.qcow2"], q)
    _poke(q / "x.qcow2", 0x40008, struct.pack(">Q", 1 << 32 | 1))     # both bits of one
    run([qemu_img, "create", "-q", "-f", "qcow2", "sn.qcow2", "1M"], q)
    run([qemu_img, "snapshot", "-c", "s1", "sn.qcow2"], q)
    _poke(q / "sn.qcow2", 79, b"\x04")         # incompatible bit 2: a data file
    run([qemu_img, "create", "-q", "-f", "raw", "sn.raw", "1M"], q)
    for name in ("d.qcow2", "d.raw", "e.qcow2", "sn.qcow2", "sn.raw", "x.qcow2", "x.raw"):
        for d in (twin.q, twin.g):
            shutil.copy(q / name, d / name)
    sn = "driver=qcow2,file.filename=sn.qcow2,data-file.filename=sn.raw"
    for step in ([IMG, "check", "d.qcow2"],               # a compressed entry
                 [IMG, "check", "-r", "all", "d.qcow2"],
                 [IO, "-c", "read 1M 64k", "d.qcow2"],
                 MAP + ["e.qcow2"],                       # host != guest offset
                 [IO, "-c", "read 64k 64k", "e.qcow2"],
                 [IMG, "check", "x.qcow2"],               # an invalid subcluster bitmap
                 [IMG, "check", "--image-opts", sn],      # snapshots with a data file
                 [IMG, "info", "sn.qcow2"],
                 [IMG, "info", "--output=json", "sn.qcow2"],
                 [IMG, "snapshot", "-l", "--image-opts", sn],
                 [IMG, "snapshot", "-a", "s1", "--image-opts", sn],
                 [IMG, "snapshot", "-d", "s1", "--image-opts", sn]):
        twin(step[0], step[1:])
        _same_files(twin.q, twin.g)
