"""Request flags the generic layer acts on: FUA, WRITE_COMPRESSED,
NO_FALLBACK, MAY_UNMAP without discard=unmap."""
from __future__ import annotations

import errno

import pytest

import gqemu.threadpool.aiocb as aiocb_mod
from gqemu.block import (BDRV_REQ_FUA, BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK,
                         BDRV_REQ_WRITE_COMPRESSED, BlockError, blk_new_open, blk_pread, blk_prw,
                         blk_pwrite_zeroes, blk_unref)

pytestmark = pytest.mark.timeout(60)


def test_fua_flushes_once(make_image, monkeypatch) -> None:
    img = make_image(65536)
    calls: list = []
    real = aiocb_mod.handle_aiocb_flush
    monkeypatch.setattr(aiocb_mod, "handle_aiocb_flush",
                        lambda a: calls.append(1) or real(a))
    blk = blk_new_open(str(img), {"format": "raw"})
    assert blk_prw(blk, 0, b"a" * 512, 512, True) == 0 and calls == []
    assert blk_prw(blk, 0, b"b" * 512, 512, True, BDRV_REQ_FUA) == 0 and calls == [1]
    blk_unref(blk)


def test_compressed_write_needs_driver_support(make_image) -> None:
    img = make_image(65536)
    before = img.read_bytes()
    blk = blk_new_open(str(img), {"format": "raw"})
    with pytest.raises(BlockError) as e:
        blk_prw(blk, 0, b"c" * 65536, 65536, True, BDRV_REQ_WRITE_COMPRESSED)
    assert e.value.errno == errno.ENOTSUP
    blk_unref(blk)
    assert img.read_bytes() == before


def test_no_fallback_zero_write(make_image) -> None:
    img = make_image(65536)
    blk = blk_new_open(str(img), {"format": "raw"})
    file_state = blk.root.bs.file.bs.opaque
    assert blk_pwrite_zeroes(blk, 4096, 4096, BDRV_REQ_NO_FALLBACK) == 0   # fallocate works
    file_state.has_write_zeroes = False                  # as a host without fallocate
    with pytest.raises(BlockError) as e:
        blk_pwrite_zeroes(blk, 8192, 4096, BDRV_REQ_NO_FALLBACK)
    assert e.value.errno == errno.ENOTSUP
    assert blk_pread(blk, 8192, 4) != bytes(4)
    assert blk_pwrite_zeroes(blk, 8192, 4096, 0) == 0    # falls back to writing zeroes
    assert blk_pread(blk, 4096, 8192) == bytes(8192)
    blk_unref(blk)


def test_may_unmap_dropped_without_unmap(make_image, monkeypatch) -> None:
    img = make_image(65536)
    types: list = []
    real = aiocb_mod.aio_worker

    import gqemu.block.file_posix as fp
    monkeypatch.setattr(fp, "aio_worker", lambda a: types.append(a.aio_type) or real(a))
    blk = blk_new_open(str(img), {"format": "raw"})      # discard=ignore
    assert blk_pwrite_zeroes(blk, 0, 4096, BDRV_REQ_MAY_UNMAP) == 0
    blk_unref(blk)
    blk = blk_new_open(str(img), {"format": "raw", "discard": "unmap"})
    assert blk_pwrite_zeroes(blk, 0, 4096, BDRV_REQ_MAY_UNMAP) == 0
    blk_unref(blk)
    # (closing a node flushes it, as QEMU's bdrv_close does)
    types = [t for t in types if t != aiocb_mod.QEMU_AIO_FLUSH]
    assert types == [aiocb_mod.QEMU_AIO_WRITE_ZEROES, aiocb_mod.QEMU_AIO_DISCARD]
