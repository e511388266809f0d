"""FLUSH CACHE makes acknowledged writes durable (reliability.md 5, T34).

A write log records, from the worker threads, every ``pwrite``/``pwritev``
that reaches an image file and every ``fdatasync``/``fsync`` of it.  A
power cut at any moment keeps at least what was written before the last
completed sync: the crash image is the pristine file plus exactly those
writes (the later ones may or may not survive; the pessimistic image drops
them all).  After a guest's FLUSH CACHE has completed, the crash image must
hold every sector the guest wrote before it, and for qcow2 be an image that
real ``qemu-img check`` finds free of corruption and real ``qemu-img
convert`` reads the data from.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.hw.rig import Rig, make_disk

NSECT = 2048


class WriteLog:
    """Writes and syncs of files, in the order they completed."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple] = []
        real_pwrite, real_pwritev = os.pwrite, os.pwritev
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def ino(fd):
            return os.fstat(fd).st_ino

        def pwrite(fd, data, offset):
            n = real_pwrite(fd, data, offset)
            self.events.append(("write", ino(fd), offset, bytes(memoryview(data)[:n])))
            return n

        def pwritev(fd, buffers, offset):
            buffers = list(buffers)
            n = real_pwritev(fd, buffers, offset)
            data = b"".join(bytes(b) for b in buffers)[:n]
            self.events.append(("write", ino(fd), offset, data))
            return n

        def fdatasync(fd):
            real_fdatasync(fd)
            self.events.append(("sync", ino(fd)))

        def fsync(fd):
            real_fsync(fd)
            self.events.append(("sync", ino(fd)))

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "pwritev", pwritev)
        monkeypatch.setattr(os, "fdatasync", fdatasync)
        monkeypatch.setattr(os, "fsync", fsync)

    def crash_image(self, pristine: bytes, inode: int, upto: int) -> bytes:
        """The file after a power cut once ``events[:upto]`` happened: the
        writes before its last sync, and nothing after."""
        events = self.events[:upto]
        syncs = [i for i, e in enumerate(events) if e[0] == "sync" and e[1] == inode]
        img = bytearray(pristine)
        for e in events[:syncs[-1] if syncs else 0]:
            if e[0] == "write" and e[1] == inode:
                _, _, off, data = e
                if off + len(data) > len(img):
                    img.extend(bytes(off + len(data) - len(img)))
                img[off:off + len(data)] = data
        return bytes(img)


def pio_write(rig, lba, data):
    rig.outb(0x1F2, len(data) // 512)
    rig.outb(0x1F3, lba & 0xFF)
    rig.outb(0x1F4, lba >> 8 & 0xFF)
    rig.outb(0x1F5, lba >> 16 & 0xFF)
    rig.outb(0x1F6, 0xE0)
    rig.outb(0x1F7, 0x30)
    for i in range(0, len(data), 512):
        rig.settle()
        assert rig.inb(0x3F6) == 0x58
        rig.outsw(0x1F0, data[i:i + 512])
    rig.settle()
    assert rig.inb(0x1F7) == 0x50


def flush_cache(rig):
    rig.outb(0x1F7, 0xE7)
    rig.settle()
    assert (rig.inb(0x1F7), rig.inb(0x1F1)) == (0x50, 0x00)


@pytest.fixture
def raw_disk(tmp_path):
    return make_disk(tmp_path / "d.img", NSECT)


@pytest.fixture
def qcow2_disk(tmp_path, qemu_img):
    p = tmp_path / "d.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o",
                    "cluster_size=65536,lazy_refcounts=off", str(p), str(NSECT * 512)],
                   check=True)
    return p


PAYLOAD = bytes(range(256)) * 16          # 8 sectors


def test_raw_flush_cache_makes_the_write_durable(raw_disk, monkeypatch):
    pristine = raw_disk.read_bytes()
    inode = raw_disk.stat().st_ino
    log = WriteLog(monkeypatch)
    rig = Rig([raw_disk])
    try:
        pio_write(rig, 100, PAYLOAD)
        before_flush = len(log.events)
        flush_cache(rig)
        after_flush = len(log.events)
        pio_write(rig, 300, b"\x99" * 512)     # not flushed: may be lost
    finally:
        rig.close()
    assert any(e[0] == "write" and e[1] == inode for e in log.events[:before_flush])
    lost = log.crash_image(pristine, inode, before_flush)
    assert lost[100 * 512:108 * 512] == pristine[100 * 512:108 * 512]
    crash = log.crash_image(pristine, inode, after_flush)
    assert crash[100 * 512:108 * 512] == PAYLOAD
    assert crash[:100 * 512] == pristine[:100 * 512]
    assert crash[108 * 512:] == pristine[108 * 512:]


def test_qcow2_flush_cache_leaves_a_consistent_durable_image(qcow2_disk, monkeypatch,
                                                             tmp_path, qemu_img):
    """Allocating writes on qcow2 (data, L2, refcounts), FLUSH CACHE, power
    cut: real qemu-img check finds no corruption and real qemu-img convert
    reads the data back."""
    pristine = qcow2_disk.read_bytes()
    inode = qcow2_disk.stat().st_ino
    log = WriteLog(monkeypatch)
    rig = Rig([qcow2_disk], {"format": "qcow2"})
    try:
        pio_write(rig, 100, PAYLOAD)
        pio_write(rig, 1500, PAYLOAD[:1024])   # another cluster, another L2 entry
        flush_cache(rig)
        upto = len(log.events)
    finally:
        rig.close()
    crash = tmp_path / "crash.qcow2"
    crash.write_bytes(log.crash_image(pristine, inode, upto))
    chk = subprocess.run([qemu_img, "check", str(crash)], capture_output=True, text=True)
    assert chk.returncode in (0, 3), chk.stdout + chk.stderr     # 3: leaked clusters only
    back = subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(crash),
                           str(tmp_path / "crash.raw")], capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    raw = (tmp_path / "crash.raw").read_bytes()
    assert raw[100 * 512:108 * 512] == PAYLOAD
    assert raw[1500 * 512:1502 * 512] == PAYLOAD[:1024]


def test_unsafe_cache_mode_never_syncs(raw_disk, monkeypatch):
    """cache=unsafe drops flushes (QEMU's cache.no-flush): FLUSH CACHE still
    succeeds, but nothing is durable -- the log tells the two apart."""
    pristine = raw_disk.read_bytes()
    inode = raw_disk.stat().st_ino
    log = WriteLog(monkeypatch)
    rig = Rig([raw_disk], {"cache": "unsafe"})
    try:
        pio_write(rig, 100, PAYLOAD)
        flush_cache(rig)
        upto = len(log.events)
    finally:
        rig.close()
    assert not any(e[0] == "sync" for e in log.events[:upto])
    assert log.crash_image(pristine, inode, upto) == pristine


def test_writethrough_syncs_before_the_write_completes(raw_disk, monkeypatch):
    """cache=writethrough (WCE off): every write is durable when the guest
    sees it complete, without a FLUSH CACHE."""
    pristine = raw_disk.read_bytes()
    inode = raw_disk.stat().st_ino
    log = WriteLog(monkeypatch)
    rig = Rig([raw_disk], {"cache": "writethrough"})
    try:
        pio_write(rig, 100, PAYLOAD[:512])
        upto = len(log.events)
    finally:
        rig.close()
    assert log.crash_image(pristine, inode, upto)[100 * 512:101 * 512] == PAYLOAD[:512]
