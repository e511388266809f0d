"""qcow2 interoperability with the real qemu-img / qemu-io.

Images QEMU writes read identically through gqemu; images gqemu writes pass
``qemu-img check`` with no errors and no leaks and equal a shadow file under
``qemu-img compare``.
"""
from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

import gqemu.block as blk_api
from gqemu.block.driver import BDRV_REQ_MAY_UNMAP

pytestmark = pytest.mark.timeout(120)


def run(*cmd: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    assert p.returncode in ok, "%s -> %d\n%s%s" % (cmd, p.returncode, p.stdout, p.stderr)
    return p


def gqemu_read_all(path: Path, fmt: str = "qcow2") -> bytes:
    blk = blk_api.blk_new_open(str(path), {"format": fmt, "readonly": "on"})
    try:
        return blk_api.blk_pread(blk, 0, blk_api.blk_getlength(blk))
    finally:
        blk_api.blk_unref(blk)


def qemu_raw(qemu_img: str, path: Path, tmp: Path) -> bytes:
    out = tmp / ("%s.raw" % path.name)
    run(qemu_img, "convert", "-O", "raw", path, out)
    return out.read_bytes()


def qemu_io_writes(qemu_io: str, path: Path, seed: int, size: int, n: int,
                   zero: bool) -> None:
    rnd = random.Random(seed)
    cmds = []
    for i in range(n):
        off = rnd.randrange(0, size // 512) * 512
        ln = min(rnd.randrange(1, 300) * 512, size - off)
        if zero and i % 4 == 3:
            cmds += ["-c", "write -z %d %d" % (off, ln)]
        else:
            cmds += ["-c", "write -P %d %d %d" % (rnd.randrange(1, 256), off, ln)]
    run(qemu_io, "-f", "qcow2", *cmds, path)


# --------------------------------------------------------- QEMU writes, we read


@pytest.mark.parametrize("cluster_size", [512, 1024, 4096, 65536, 2 * 1024 * 1024])
@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_read_qemu_written(qemu_img, qemu_io, tmp_path, cluster_size, compat):
    img = tmp_path / "q.qcow2"
    size = 8 * 1024 * 1024
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o",
        "cluster_size=%d,compat=%s" % (cluster_size, compat), img, str(size))
    qemu_io_writes(qemu_io, img, cluster_size, size, 40, zero=compat == "1.1")
    assert gqemu_read_all(img) == qemu_raw(qemu_img, img, tmp_path)


@pytest.mark.parametrize("opts", ["cluster_size=16384,extended_l2=on",
                                  "cluster_size=65536,extended_l2=on",
                                  "refcount_bits=1,cluster_size=4096",
                                  "refcount_bits=64", "lazy_refcounts=on"])
def test_read_qemu_written_options(qemu_img, qemu_io, tmp_path, opts):
    img = tmp_path / "q.qcow2"
    size = 16 * 1024 * 1024
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
    qemu_io_writes(qemu_io, img, 7, size, 60, zero=True)
    assert gqemu_read_all(img) == qemu_raw(qemu_img, img, tmp_path)


def test_read_compressed_and_backing_chain(qemu_img, qemu_io, tmp_path):
    base, mid, top, comp = (tmp_path / n for n in ("b.qcow2", "m.qcow2", "t.qcow2", "c.qcow2"))
    run(qemu_img, "create", "-q", "-f", "qcow2", base, "6M")
    run(qemu_io, "-c", "write -P 0x11 0 5M", base)
    run(qemu_img, "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", mid, "8M")
    run(qemu_io, "-c", "write -P 0x22 1M 100k", "-c", "write -z 2M 64k", mid)
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", mid.name,
        "-F", "qcow2", top)
    run(qemu_io, "-c", "write -P 0x33 4000 10000", "-c", "write -P 0x44 7M 4k", top)
    want = qemu_raw(qemu_img, top, tmp_path)
    assert gqemu_read_all(top) == want
    assert want[0x100000:0x100010] == b"\x22" * 16 and want[5 << 20:(5 << 20) + 4] == bytes(4)
    run(qemu_img, "convert", "-c", "-O", "qcow2", top, comp)
    assert "compressed" in run(qemu_img, "check", comp).stdout
    assert gqemu_read_all(comp) == want


def test_read_after_qemu_snapshots(qemu_img, qemu_io, tmp_path):
    img = tmp_path / "s.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", img, "4M")
    run(qemu_io, "-c", "write -P 1 0 1M", img)
    run(qemu_img, "snapshot", "-c", "one", img)
    run(qemu_io, "-c", "write -P 2 512k 1M", img)
    assert gqemu_read_all(img) == qemu_raw(qemu_img, img, tmp_path)
    run(qemu_img, "snapshot", "-a", "one", img)
    data = gqemu_read_all(img)
    assert data[:1 << 20] == b"\x01" * (1 << 20) and data[1 << 20:] == bytes(3 << 20)


# --------------------------------------------------------- we write, QEMU checks


def gqemu_workload(img: Path, shadow: Path, size: int, seed: int, n: int,
                   zeroes: bool = True) -> None:
    rnd = random.Random(seed)
    sh = bytearray(shadow.read_bytes()) if shadow.exists() else bytearray(size)
    blk = blk_api.blk_new_open(str(img), {"format": "qcow2", "discard": "unmap"})
    try:
        for i in range(n):
            off = rnd.randrange(0, size - 1)
            ln = rnd.randrange(1, min(200000, size - off) + 1)
            kind = rnd.random()
            if zeroes and kind < 0.1:
                assert blk_api.blk_pwrite_zeroes(blk, off, ln, BDRV_REQ_MAY_UNMAP) == 0
                sh[off:off + ln] = bytes(ln)
            elif zeroes and kind < 0.15:
                assert blk_api.blk_pdiscard(blk, off, ln) == 0
                cs = blk_api.blk_bs(blk).drv.cluster_size
                a, b = -(-off // cs) * cs, (off + ln) // cs * cs
                if off + ln == size:
                    b = size
                if b > a:
                    sh[a:b] = bytes(b - a)
            else:
                data = bytes([rnd.randrange(256)]) * ln
                blk_api.blk_pwrite(blk, off, data)
                sh[off:off + ln] = data
            if i % 17 == 0:
                assert blk_api.blk_flush(blk) == 0
    finally:
        blk_api.blk_unref(blk)
    shadow.write_bytes(bytes(sh))


@pytest.mark.parametrize("opts", [
    "cluster_size=512", "cluster_size=512,refcount_bits=1", "cluster_size=4096",
    "cluster_size=65536", "cluster_size=2097152", "compat=0.10,cluster_size=1024",
    "refcount_bits=64,cluster_size=8192", "refcount_bits=2,cluster_size=2048",
    "lazy_refcounts=on", "extended_l2=on,cluster_size=32768",
    "preallocation=metadata,cluster_size=16384"])
def test_gqemu_writes_pass_qemu_check(qemu_img, tmp_path, opts):
    img, shadow = tmp_path / "g.qcow2", tmp_path / "g.raw"
    size = 24 * 1024 * 1024
    run("gqemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, str(size))
    gqemu_workload(img, shadow, size, seed=len(opts), n=120,
                   zeroes="compat=0.10" not in opts)
    p = run(qemu_img, "check", img)
    assert "No errors were found on the image." in p.stdout, p.stdout + p.stderr
    run(qemu_img, "compare", img, shadow)
    assert gqemu_read_all(img) == shadow.read_bytes()


def test_gqemu_writes_over_backing_chain(qemu_img, qemu_io, tmp_path):
    base, top, shadow = tmp_path / "b.qcow2", tmp_path / "t.qcow2", tmp_path / "t.raw"
    size = 8 * 1024 * 1024
    run(qemu_img, "create", "-q", "-f", "qcow2", base, str(size))
    run(qemu_io, "-c", "write -P 0x5a 0 8M", base)
    run("gqemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096",
        "-b", base.name, "-F", "qcow2", top)
    shadow.write_bytes(b"\x5a" * size)
    gqemu_workload(top, shadow, size, seed=3, n=80)
    assert run(qemu_img, "check", top).returncode == 0
    run(qemu_img, "compare", top, shadow)


def test_grow_refcount_table(qemu_img, tmp_path):
    """512-byte clusters and 64-bit refcounts: the first refcount table
    covers 2 MiB, so 7 MiB of writes make it grow several times."""
    img, shadow = tmp_path / "g.qcow2", tmp_path / "g.raw"
    size = 8 * 1024 * 1024
    run("gqemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64",
        img, str(size))
    blk = blk_api.blk_new_open(str(img), {"format": "qcow2", "cache": "unsafe"})
    try:
        for i in range(7):
            blk_api.blk_pwrite(blk, i * 1024 * 1024, bytes([i + 1]) * (1024 * 1024))
    finally:
        blk_api.blk_unref(blk)
    assert int.from_bytes(img.read_bytes()[56:60], "big") > 1     # the table grew
    shadow.write_bytes(b"".join(bytes([i + 1]) * (1 << 20) for i in range(7)) + bytes(1 << 20))
    assert run(qemu_img, "check", img).returncode == 0
    run(qemu_img, "compare", img, shadow)


def test_snapshots_create_apply_delete(qemu_img, qemu_io, tmp_path):
    img = tmp_path / "s.qcow2"
    run("gqemu-img", "create", "-q", "-f", "qcow2", img, "8M")
    run(qemu_io, "-c", "write -P 7 0 3M", img)
    run("gqemu-img", "snapshot", "-c", "a", img)
    run(qemu_io, "-c", "write -P 8 1M 3M", img)
    run("gqemu-img", "snapshot", "-c", "b", img)
    assert run(qemu_img, "check", img).returncode == 0
    listing = run("gqemu-img", "snapshot", "-l", img).stdout
    assert listing.splitlines()[0] == "Snapshot list:" and " a " in listing
    run("gqemu-img", "snapshot", "-a", "a", img)
    assert run(qemu_img, "check", img).returncode == 0
    run(qemu_io, "-c", "read -P 7 0 3M", "-c", "read -P 0 3M 1M", img)
    run("gqemu-img", "snapshot", "-d", "a", img)
    assert run(qemu_img, "check", img).returncode == 0
    run("gqemu-img", "snapshot", "-a", "b", img)
    run(qemu_io, "-c", "read -P 7 0 1M", "-c", "read -P 8 1M 3M", img)
    run("gqemu-img", "snapshot", "-d", "b", img)
    p = run(qemu_img, "check", img)
    assert "No errors" in p.stdout
    assert run(qemu_img, "snapshot", "-l", img).stdout == ""
    p = run("gqemu-img", "snapshot", "-a", "nope", img, ok=(1,))
    assert p.stderr == "gqemu-img: Could not apply snapshot 'nope': Failed to load " \
                       "snapshot: No such file or directory\n"


def test_convert_compressed_roundtrip(qemu_img, qemu_io, tmp_path):
    src, dst, raw = tmp_path / "s.qcow2", tmp_path / "d.qcow2", tmp_path / "d.raw"
    run(qemu_img, "create", "-q", "-f", "qcow2", src, "5M")
    run(qemu_io, "-c", "write -P 3 0 1M", "-c", "write -P 9 2M 100k", src)
    rnd = random.Random(1)
    noise = bytes(rnd.randrange(256) for _ in range(65536))
    blk = blk_api.blk_new_open(str(src), {"format": "qcow2"})
    blk_api.blk_pwrite(blk, 3 << 20, noise)           # incompressible: a normal cluster
    blk_api.blk_unref(blk)
    run("gqemu-img", "convert", "-c", "-O", "qcow2", src, dst)
    p = run(qemu_img, "check", dst)
    assert "No errors" in p.stdout and "compressed clusters" in p.stdout
    run(qemu_img, "compare", src, dst)
    run("gqemu-img", "convert", "-O", "raw", dst, raw)
    run(qemu_img, "compare", "-f", "qcow2", "-F", "raw", src, raw)


@pytest.mark.parametrize("opts", ["cluster_size=65536", "cluster_size=4096",
                                  "cluster_size=65536,extended_l2=on", "compat=0.10"])
def test_concurrent_allocating_writes(qemu_img, qemu_io, tmp_path, opts):
    """32 requests in flight at a time, many sharing new clusters (their
    copy-on-write must wait for each other: iotest 046), some over a
    backing file: the result equals the shadow and checks clean."""
    from gqemu.aio import aio_poll, qemu_get_aio_context
    from gqemu.block.qiov import qemu_iovec_init_buf
    base, img, shadow = tmp_path / "b.qcow2", tmp_path / "c.qcow2", tmp_path / "c.raw"
    size = 8 * 1024 * 1024
    run(qemu_img, "create", "-q", "-f", "qcow2", base, str(size))
    run(qemu_io, "-c", "write -P 0x5a 0 4M", base)
    run("gqemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", base.name, "-F", "qcow2",
        img)
    rnd = random.Random(opts)
    sh = bytearray(b"\x5a" * (4 << 20) + bytes(4 << 20))
    segs, pos = [], 0
    while pos < size:
        n = min(rnd.randrange(1, 80) * 512, size - pos)
        if rnd.random() < 0.7:
            segs.append((pos, n, rnd.randrange(1, 256)))
        pos += n
    rnd.shuffle(segs)
    blk = blk_api.blk_new_open(str(img), {"format": "qcow2"})
    ctx = qemu_get_aio_context()
    results: list[int] = []
    try:
        for i in range(0, len(segs), 32):
            batch = segs[i:i + 32]
            bufs = [bytearray([v]) * n for _, n, v in batch]
            for (off, n, v), buf in zip(batch, bufs):
                blk_api.blk_aio_pwritev(blk, off, qemu_iovec_init_buf(buf), 0,
                                        lambda _o, ret: results.append(ret), None)
                sh[off:off + n] = buf
            while len(results) < i + len(batch):
                aio_poll(ctx, True)
        assert results and all(r == 0 for r in results)
        assert blk_api.blk_pread(blk, 0, size) == bytes(sh)
    finally:
        blk_api.blk_unref(blk)
    shadow.write_bytes(bytes(sh))
    p = run(qemu_img, "check", img)
    assert "No errors" in p.stdout
    run(qemu_img, "compare", img, shadow)


def test_vmstate_grows_l1(qemu_img, qemu_io, tmp_path):
    """The VM state area lies past the disk: saving it grows the L1 table
    (QEMU: qcow2_grow_l1_table) and QEMU reads it back."""
    from gqemu.block.io_misc import bdrv_run_co
    from gqemu.block.qiov import qemu_iovec_init_buf
    img = tmp_path / "vm.qcow2"
    run(qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    assert int.from_bytes(img.read_bytes()[36:40], "big") == 1
    blk = blk_api.blk_new_open(str(img), {"format": "qcow2"})
    try:
        bs = blk_api.blk_bs(blk)
        data = bytearray(b"\x5a" * 8192)
        assert bdrv_run_co(bs, bs.drv.bdrv_co_writev_vmstate, bs,
                           qemu_iovec_init_buf(data), 4096) == 0
        back = bytearray(8192)
        assert bdrv_run_co(bs, bs.drv.bdrv_co_readv_vmstate, bs,
                           qemu_iovec_init_buf(back), 4096) == 0
        assert back == data
    finally:
        blk_api.blk_unref(blk)
    assert int.from_bytes(img.read_bytes()[36:40], "big") > 1
    assert "No errors" in run(qemu_img, "check", img).stdout
    run(qemu_io, "-c", "read -b -P 0x5a 4096 8192", "-c", "read -b -P 0 0 4096", img)
