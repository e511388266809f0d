"""file-posix: EOF rounding and zero-filled short reads (as qemu-io shows),
short writes, discard and write-zeroes through fallocate, O_DIRECT bounce
buffers, and the RWF_NOWAIT fast path."""
from __future__ import annotations

import errno
import mmap
import os
import subprocess

import pytest

import gqemu.block.file_posix as fp
import gqemu.threadpool.aiocb as aiocb_mod
from gqemu.block import (BDRV_REQ_MAY_UNMAP, BlockError, QEMUIOVector, blk_aio_preadv,
                         blk_drain, blk_getlength, blk_new_open, blk_pdiscard, blk_pread,
                         blk_prw, blk_pwrite, blk_pwrite_zeroes, blk_unref)
from gqemu.threadpool.aiocb import (QEMU_AIO_MISALIGNED, QEMU_AIO_READ, QEMU_AIO_WRITE,
                                    RawPosixAIOData, aio_worker)

pytestmark = pytest.mark.timeout(60)


def test_odd_sized_file_like_qemu_io(tmp_path, qemu_io) -> None:
    data = os.urandom(1000)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.write_bytes(data)
    theirs.write_bytes(data)
    r = subprocess.run([qemu_io, "-f", "raw", "-c", "length", "-c", "read -P 0 1000 24",
                        "-c", "read 1000 25", "-c", "write -P 1 1020 4", str(theirs)],
                       capture_output=True, text=True, timeout=30)
    lines = r.stdout.splitlines()
    assert lines[0] == "1 KiB" and lines[3] == "read failed: Input/output error"
    blk = blk_new_open(str(ours), {"format": "raw", "cache": "writethrough"})
    assert blk_getlength(blk) == 1024
    assert blk_pread(blk, 1000, 24) == bytes(24)
    with pytest.raises(BlockError) as e:
        blk_prw(blk, 1000, bytearray(25), 25, False)
    assert e.value.errno == errno.EIO
    blk_pwrite(blk, 1020, b"\x01" * 4)
    blk_unref(blk)
    assert ours.read_bytes() == theirs.read_bytes()


def test_short_read_zero_filled_short_write_einval(tmp_path, monkeypatch) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"\x55" * 100)
    fd = os.open(p, os.O_RDWR)
    try:
        bufs = [bytearray(b"\xff" * 64), bytearray(b"\xff" * 64)]
        acb = RawPosixAIOData(fd, 0, 128, 1, [memoryview(b) for b in bufs])
        assert aio_worker(acb) == 0
        assert bytes(bufs[0]) + bytes(bufs[1]) == b"\x55" * 100 + bytes(28)
        calls = []

        def pwrite(fd_, buf, off):  # noqa: ANN001
            calls.append(off)
            return 10 if len(calls) == 1 else 0       # then the disk is "full"
        monkeypatch.setattr(os, "pwrite", pwrite)
        acb = RawPosixAIOData(fd, 0, 100, QEMU_AIO_WRITE, [memoryview(b"x" * 100)])
        assert aio_worker(acb) == -errno.EINVAL
        assert calls == [0, 10]
        monkeypatch.undo()
        ro = os.open(p, os.O_RDONLY)
        acb = RawPosixAIOData(ro, 0, 4, QEMU_AIO_WRITE, [memoryview(b"abcd")])
        assert aio_worker(acb) == -errno.EBADF
        os.close(ro)
    finally:
        os.close(fd)


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_discard_punches_hole_and_zero_writes(tmp_path) -> None:
    p = tmp_path / "img"
    p.write_bytes(os.urandom(1 << 20))
    os.sync()
    before = allocated(p)
    blk = blk_new_open(str(p), {"format": "raw", "discard": "unmap"})
    assert blk_pdiscard(blk, 65536, 262144) == 0
    assert blk_pread(blk, 65536, 262144) == bytes(262144)
    assert allocated(p) <= before - 262144 + 4096
    assert blk_pwrite_zeroes(blk, 700000, 5000, 0) == 0
    assert blk_pwrite_zeroes(blk, 800001, 70000, BDRV_REQ_MAY_UNMAP) == 0
    data = blk_pread(blk, 0, 1 << 20)
    assert data[700000:705000] == bytes(5000) and data[800001:870001] == bytes(70000)
    assert data[699999] != 0 or data[705000] != 0 or data[870001] != 0
    blk_unref(blk)
    assert p.stat().st_size == 1 << 20


def test_discard_ignored_without_unmap(tmp_path) -> None:
    p = tmp_path / "img"
    p.write_bytes(b"\x01" * 65536)
    blk = blk_new_open(str(p), {"format": "raw"})            # -drive default: ignore
    assert blk_pdiscard(blk, 0, 65536) == 0
    assert blk_pread(blk, 0, 4) == b"\x01" * 4
    blk_unref(blk)


def test_odirect_aligned_and_bounced(tmp_path, monkeypatch) -> None:
    p = tmp_path / "img"
    ref = os.urandom(1 << 20)
    p.write_bytes(ref)
    seen: list[int] = []
    real = aiocb_mod.handle_aiocb_rw

    def handle_aiocb_rw(aiocb):  # noqa: ANN001
        seen.append(aiocb.aio_type)
        return real(aiocb)
    monkeypatch.setattr(aiocb_mod, "handle_aiocb_rw", handle_aiocb_rw)
    blk = blk_new_open(str(p), {"format": "raw", "cache": "none"})
    aligned = mmap.mmap(-1, 8192)
    blk_aio_preadv(blk, 4096, QEMUIOVector([memoryview(aligned)]), 0, None, None)
    blk_drain(blk)
    assert bytes(aligned) == ref[4096:12288] and not seen[-1] & QEMU_AIO_MISALIGNED
    odd = bytearray(8193)
    blk_aio_preadv(blk, 4096, QEMUIOVector([memoryview(odd)[1:]]), 0, None, None)
    blk_drain(blk)
    assert bytes(odd[1:]) == ref[4096:12288] and seen[-1] & QEMU_AIO_MISALIGNED
    blk_pwrite(blk, 3, b"z" * 10)                    # bytes: read-only buffer, bounced
    assert blk_pread(blk, 0, 16) == ref[:3] + b"z" * 10 + ref[13:16]
    blk_unref(blk)


def test_nowait_fast_path(tmp_path, monkeypatch) -> None:
    if not getattr(os, "RWF_NOWAIT", 0):
        pytest.skip("no RWF_NOWAIT on this host")
    p = tmp_path / "img"
    ref = os.urandom(1 << 20)
    p.write_bytes(ref)
    submits: list[int] = []
    real = fp.thread_pool_submit_co

    def thread_pool_submit_co(pool, func, arg):  # noqa: ANN001
        submits.append(arg.aio_type)
        return real(pool, func, arg)
    monkeypatch.setattr(fp, "thread_pool_submit_co", thread_pool_submit_co)
    blk = blk_new_open(str(p), {"format": "raw", "aio": "nowait"})
    s = blk.root.bs.file.bs.opaque
    assert s.use_nowait
    assert blk_pread(blk, 0, 65536) == ref[:65536]        # page cache is warm
    assert s.nowait_hits == 1 and submits == []
    blk_pwrite(blk, 0, b"w" * 10)                           # writes use the pool
    assert submits == [QEMU_AIO_WRITE]
    os.fsync(s.fd)                                          # clean pages can be dropped
    os.posix_fadvise(s.fd, 0, 0, os.POSIX_FADV_DONTNEED)    # drop them: EAGAIN
    assert blk_pread(blk, 524288, 4096) == ref[524288:528384]
    assert (s.nowait_hits, s.nowait_misses) == (1, 1)       # the miss goes to the pool
    assert submits == [QEMU_AIO_WRITE, QEMU_AIO_READ]
    blk_unref(blk)
    blk = blk_new_open(str(p), {"format": "raw"})           # the default: the pool
    assert not blk.root.bs.file.bs.opaque.use_nowait
    blk_unref(blk)
