"""The Linux AIO engine (gqemu.block.linux_aio, ``aio=native``, O_DIRECT)
against QEMU 7.2's: the set-up failure as real QEMU words it, and many
O_DIRECT requests in flight reaped from the kernel's completion ring.  The
command-level sessions are tests/qemu-io/native_direct.qio (run against
real qemu-io by tests/cli/test_qemu_io_corpus.py)."""
from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gqemu.block.linux_aio as laio
from gqemu.aio import aio_wait_while, qemu_get_aio_context
from gqemu.block import QEMUIOVector, blk_aio_preadv, blk_aio_pwritev, blk_new_open, blk_unref

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parents[1] / "data" / "aio_engines"
ROOT = Path(__file__).resolve().parents[2]


def test_io_setup_failure_as_qemu(tmp_path: Path) -> None:
    """QEMU 7.2's words when io_setup fails (-EAGAIN: recorded by
    tests/data/aio_engines/record.sh with fs.aio-max-nr=0)."""
    (tmp_path / "test.img").write_bytes(bytes(1 << 20))
    got = []
    for tool, args in (("io", ["-i", "native", "-t", "none", "-f", "raw", "-c", "read 0 512",
                               "test.img"]),
                       ("img", ["bench", "-i", "native", "-t", "none", "-f", "raw", "-c", "1",
                                "test.img"])):
        code = "\n".join([
            "import sys, errno", "sys.path.insert(0, %r)" % str(ROOT),
            "sys.argv[0] = 'qemu-%s'" % tool,
            "import gqemu.block.linux_aio as la",
            "real = la._sys",
            "la._sys = lambda *a: -errno.EAGAIN if a[0] == la._NR_IO_SETUP else real(*a)",
            "from gqemu.cli.qemu_%s import main" % tool, "sys.exit(main())"])
        r = subprocess.run([sys.executable, "-c", code] + args, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        got += [r.stdout + r.stderr, "exit %d\n" % r.returncode]
    assert "".join(got) == (DATA / "native-setup-failed.txt").read_text()


def test_direct_requests_in_flight_through_linux_aio(tmp_path: Path, monkeypatch) -> None:
    """200 page-aligned O_DIRECT writes, then 200 reads, all in flight at
    once: each goes through laio_co_submit, completes from the kernel's
    ring, and nothing stays counted in flight."""
    p = tmp_path / "f.raw"
    p.write_bytes(bytes(2 << 20))
    calls = []
    orig = laio.laio_co_submit

    def counting(*a):  # noqa: ANN002, ANN202
        calls.append(a[4])
        return orig(*a)
    monkeypatch.setattr(laio, "laio_co_submit", counting)
    ctx = qemu_get_aio_context()
    blk = blk_new_open(str(p), {"format": "raw", "aio": "native", "cache": "none"})
    try:
        rets: list[int] = []
        bufs = []
        for i in range(200):
            b = mmap.mmap(-1, 4096)
            b.write(bytes((i & 0xff,)) * 4096)
            bufs.append(b)
            blk_aio_pwritev(blk, (i * 37 % 512) * 4096, QEMUIOVector([memoryview(b)]), 0,
                            lambda _o, ret: rets.append(ret), None)
        aio_wait_while(ctx, lambda: len(rets) < 200)
        outs = [mmap.mmap(-1, 4096) for _ in range(200)]
        for i, b in enumerate(outs):
            blk_aio_preadv(blk, (i * 37 % 512) * 4096, QEMUIOVector([memoryview(b)]), 0,
                           lambda _o, ret: rets.append(ret), None)
        aio_wait_while(ctx, lambda: len(rets) < 400)
        assert rets == [0] * 400
        assert all(b[:] == bytes((i & 0xff,)) * 4096 for i, b in enumerate(outs))
        assert len(calls) == 400
        assert ctx.external == 0 and not ctx.linux_aio.requests
    finally:
        blk_unref(blk)
    data = p.read_bytes()
    assert all(data[(i * 37 % 512) * 4096:][:4096] == bytes((i & 0xff,)) * 4096
               for i in range(200))
