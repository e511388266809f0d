"""Random corruption of a small qcow2 (header, refcount table and block, L1,
L2, data, snapshot table): opening, reading, writing, flushing, checking,
repairing and mapping it never raise, never hang, never print a traceback
or an internal error, and never grow the file by more than the writes
justify (reliability: "never a traceback, a hang, unbounded growth")."""
from __future__ import annotations

import contextlib
import io
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import gqemu.block as b
from gqemu.block.driver import BlockError
from gqemu.cli import qemu_img as gimg

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def base_image(tmp_path_factory, qemu_img, qemu_io) -> bytes:
    d = tmp_path_factory.mktemp("fz")
    img = d / "base.qcow2"
    for cmd in ([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "2M"],
                [qemu_io, "-c", "write -P 1 0 300k", "-c", "write -z 400k 8k", img],
                [qemu_img, "snapshot", "-c", "s", img],
                [qemu_io, "-c", "write -P 2 100k 20k", img]):
        p = subprocess.run([str(c) for c in cmd], capture_output=True)
        assert p.returncode == 0, (cmd, p.stderr)
    return img.read_bytes()


def mutate(src: bytes, rnd: random.Random) -> bytearray:
    d = bytearray(src)
    for _ in range(rnd.randrange(1, 6)):
        lo, n = rnd.choice([(0, 512), (0x1000, 0x1000), (0x2000, 0x1000), (0x3000, 0x1000),
                            (0x4000, 0x1000), (0, len(d))])
        off = rnd.randrange(lo, min(len(d), lo + n))
        kind = rnd.random()
        if kind < 0.5:
            d[off] ^= 1 << rnd.randrange(8)
        elif kind < 0.8:
            d[off] = rnd.choice([0, 0xFF, 0x80, 0x7F, 1])
        else:
            d[off:off + 8] = rnd.randbytes(8)
    return d


def _may_fail(fn: Callable[..., object], *args: object) -> None:
    """A request on a corrupt image may fail, with a BlockError only."""
    try:
        fn(*args)
    except BlockError:
        pass


def exercise(path: Path) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        for ro in ("on", "off"):
            try:
                blk = b.blk_new_open(str(path), {"format": "qcow2", "readonly": ro})
            except BlockError as e:
                assert "\n" not in e.msg
                continue
            try:
                n = b.blk_getlength(blk)
                for off in range(0, min(n, 1 << 20), 64 << 10):
                    _may_fail(b.blk_prw, blk, off, bytearray(65536), min(65536, n - off),
                              False)
                if ro == "off":
                    for off in (0, 150 << 10, 1 << 20):
                        if off < n:
                            _may_fail(b.blk_prw, blk, off, bytearray(b"\x09" * 8192),
                                      min(8192, n - off), True)
                    try:
                        b.blk_flush(blk)
                    except BlockError:
                        pass
            finally:
                b.blk_unref(blk)
        for args in (["check"], ["check", "-r", "all"], ["map"], ["info"],
                     ["snapshot", "-l"]):
            rc = gimg.main([*args, str(path)])
            assert rc in (0, 1, 2, 3), (args, rc)
    return err.getvalue()


@pytest.mark.parametrize("seed", range(4))
def test_random_corruption_is_handled(base_image, tmp_path, monkeypatch, seed):
    monkeypatch.setattr(sys, "argv", ["gqemu-img"])
    rnd = random.Random(seed)
    path = tmp_path / "f.qcow2"
    for _ in range(40):
        data = mutate(base_image, rnd)
        path.write_bytes(bytes(data))
        err = exercise(path)
        assert "Traceback" not in err and "internal error" not in err, err[-2000:]
        assert path.stat().st_size <= len(data) + (8 << 20)
