"""The io_uring engine (gqemu.block.io_uring, ``aio=io_uring``) against
QEMU 7.2's: what the engine changes that a user sees (a short write is
-ENOSPC, not the thread pool's -EFBIG; a failed ring set-up), reads that
end past the end of the file, requests the kernel completes during their
submission or later, and the loop state after.  The command-level
sessions are in tests/qemu-io/io_uring_*.qio (run against real qemu-io
by tests/cli/test_qemu_io_corpus.py)."""
from __future__ import annotations

import mmap
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.aio import aio_wait_while, qemu_get_aio_context
from gqemu.block import QEMUIOVector, blk_aio_preadv, blk_new_open, blk_pread, blk_unref
from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output

pytestmark = pytest.mark.timeout(120)

DATA = Path(__file__).resolve().parents[1] / "data" / "aio_engines"
ROOT = Path(__file__).resolve().parents[2]


def _gqemu(tool: str, args: list[str], cwd: Path, fail_setup: bool = False,
           **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    """Run gqemu-io/gqemu-img (named as QEMU's tool) as a process; with
    ``fail_setup`` io_uring_setup fails as when the kernel refuses it."""
    code = ["import sys, errno", "sys.path.insert(0, %r)" % str(ROOT),
            "sys.argv[0] = %r" % tool.replace("g", "", 1)]
    if fail_setup:
        code += ["import gqemu.block.io_uring as u",
                 "def refuse(self, entries): raise OSError(errno.EPERM, 'refused')",
                 "u.IoUring.__init__ = refuse"]
    code += ["from gqemu.cli.%s import main" % tool[1:].replace("-", "_"),
             "sys.exit(main())"]
    return subprocess.run([sys.executable, "-c", "\n".join(code)] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=60, **kw)


def test_ring_setup_failure_as_qemu(tmp_path: Path) -> None:
    """QEMU 7.2's words when io_uring_setup fails (recorded by
    tests/data/aio_engines/record.sh with kernel.io_uring_disabled=2)."""
    (tmp_path / "test.img").write_bytes(bytes(1 << 20))
    got = []
    for tool, args in (("gqemu-io", ["-i", "io_uring", "-f", "raw", "-c", "read 0 512",
                                     "test.img"]),
                       ("gqemu-img", ["bench", "-i", "io_uring", "-f", "raw", "-c", "1",
                                      "test.img"])):
        r = _gqemu(tool, args, tmp_path, fail_setup=True)
        got += [r.stdout + r.stderr, "exit %d\n" % r.returncode]
    assert "".join(got) == (DATA / "setup-failed.txt").read_text()


def _fsize_limit() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    lim = (1 << 20) + 4096
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))


@pytest.mark.parametrize("cache", ["writeback", "none"])
def test_short_write_is_enospc_on_aio_engines_efbig_on_threads(tmp_path: Path, qemu_io: str,
                                                               cache: str) -> None:
    """A write the kernel takes only in part (RLIMIT_FSIZE cuts it at 1 MiB
    + 2 KiB): QEMU's io_uring and Linux AIO engines report -ENOSPC, its
    thread pool the retried write's -EFBIG; the file ends the same.  Under
    O_DIRECT (-t none) this also needs qemu-io's buffers aligned as
    QEMU's (qemu_io_alloc), or the requests take the thread pool's bounce
    path."""
    cmds = ["-c", "write -P 1 1M 8k", "-c", "write -P 2 1032192 32k",
            "-c", "write -P 3 1032192 16k", "-c", "writev -P 4 1036288 4k 8k"]
    engines = ("io_uring", "threads") + (("native",) if cache == "none" else ())
    for engine in engines:
        outs = []
        for which in ("real", "gqemu"):
            img = tmp_path / ("%s-%s.img" % (which, engine))
            img.write_bytes(b"")
            os.truncate(img, 2 << 20)
            args = ["-f", "raw", "-t", cache, "-i", engine] + cmds + [img.name]
            if which == "real":
                r = subprocess.run([qemu_io] + args, cwd=tmp_path, capture_output=True,
                                   text=True, timeout=60, preexec_fn=_fsize_limit)
            else:
                r = _gqemu("gqemu-io", args, tmp_path, preexec_fn=_fsize_limit)
            lines = [ln for ln in r.stdout.splitlines() if "ops/sec" not in ln]
            outs.append((r.returncode, lines, r.stderr, img.read_bytes()))
        assert outs[0] == outs[1], engine
        assert outs[0][1][0] == ("write failed: File too large" if engine == "threads"
                                 else "write failed: No space left on device")


def test_read_past_end_of_file_is_zero_padded(tmp_path: Path, qemu_io: str) -> None:
    """A raw file of 999 bytes reads as 1 KiB: the kernel returns 231 of
    the 256 bytes asked at 768, the rest is asked again
    (luring_resubmit_short_read), gets 0 and is padded with zeroes.  QEMU
    7.2's io_uring engine never completes that request (the resubmission
    stays queued while nothing else is in flight: qemu-io hangs), so the
    reference is real qemu-io's thread-pool engine, which pads the same."""
    data = bytes(range(256)) * 3 + b"\xa5" * 231
    (tmp_path / "f.raw").write_bytes(data)
    cmds = ["-c", "read -v 768 256", "-c", "readv -v 768 100 156", "-c", "read -P 0 999 25",
            "-c", "length"]
    real = subprocess.run([qemu_io, "-f", "raw", "-i", "threads"] + cmds + ["f.raw"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    ours = _gqemu("gqemu-io", ["-f", "raw", "-i", "io_uring", "--trace",
                               "luring_resubmit_short_read"] + cmds + ["f.raw"], tmp_path)

    def strip(s: str) -> list[str]:
        return [ln for ln in s.splitlines() if "ops/sec" not in ln]
    assert strip(ours.stdout) == strip(real.stdout) and ours.returncode == real.returncode == 0
    assert [ln.split("nread ")[1] for ln in ours.stderr.splitlines()
            if ln.startswith("luring_resubmit_short_read")] == ["231", "231"]


def _events(tmp_path: Path, fn) -> list[str]:  # noqa: ANN001
    log = tmp_path / "trace.log"
    with open(log, "w") as out:
        trace_init_output(out)
        trace_enable_events("luring_*")
        trace_enable_events("qemu_coroutine_yield")
        try:
            fn()
        finally:
            trace_close_output()
    return [ln.split()[0] for ln in log.read_text().splitlines()]


def test_cached_read_completes_inside_its_submission(tmp_path: Path) -> None:
    """A read of page-cached data: the kernel completes it inside
    io_uring_enter, ioq_submit finds the CQE at once and the coroutine
    never yields (QEMU: luring_co_submit yields only while ret is
    -EINPROGRESS)."""
    p = tmp_path / "f.raw"
    p.write_bytes(os.urandom(1 << 20))
    blk = blk_new_open(str(p), {"format": "raw", "aio": "io_uring"})
    try:
        got: list[bytes] = []
        names = _events(tmp_path, lambda: got.append(blk_pread(blk, 4096, 8192)))
        assert got == [p.read_bytes()[4096:12288]]
        i = names.index("luring_co_submit")
        assert names[i:i + 5] == ["luring_co_submit", "luring_do_submit", "luring_io_uring_submit",
                                  "luring_process_completion", "luring_do_submit_done"]
        assert "qemu_coroutine_yield" not in names[i:]
    finally:
        blk_unref(blk)


def test_direct_reads_in_flight_complete_through_the_loop(tmp_path: Path) -> None:
    """300 O_DIRECT reads in flight at once (more than the ring's 128 SQ
    entries): the kernel completes them after submission, each coroutine
    yields and is woken from the loop's poll of the CQ ring, every buffer
    holds its data, and nothing is left counted in flight."""
    p = tmp_path / "f.raw"
    data = os.urandom(4 << 20)
    p.write_bytes(data)
    os.sync()
    ctx = qemu_get_aio_context()
    blk = blk_new_open(str(p), {"format": "raw", "aio": "io_uring", "cache": "none"})
    try:
        bufs = [mmap.mmap(-1, 4096) for _ in range(300)]
        rets: list[int] = []
        for i, b in enumerate(bufs):
            blk_aio_preadv(blk, (i * 7919 % 1024) * 4096, QEMUIOVector([memoryview(b)]), 0,
                           lambda _o, ret: rets.append(ret), None)
        aio_wait_while(ctx, lambda: len(rets) < len(bufs))
        assert rets == [0] * 300
        for i, b in enumerate(bufs):
            off = (i * 7919 % 1024) * 4096
            assert b[:] == data[off:off + 4096], i
        assert ctx.external == 0 and not ctx.linux_io_uring.requests
    finally:
        blk_unref(blk)
