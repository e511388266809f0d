"""``gqemu bench qcow2``: the qcow2 driver against its anchors, same run.

1. Sequential reads of a fully allocated qcow2 (1 GiB; 128 MiB with
   ``--quick``) at 4 KiB, 64 KiB and 1 MiB, QD1, through
   BlockBackend -> qcow2 -> file-posix -> thread pool, beside
   dissect.hypervisor's pure-Python qcow2 reader (optional: the ``bench``
   extra, ``pip install -e '.[bench]'``; when it is missing the bench says
   so and skips that anchor, it never installs anything) and ``qemu-img bench -f qcow2 -i threads``.
2. 4 KiB QD1 reads vs ``qemu-img bench -d 1 -s 4096 -i threads``.
3. ``gqemu-img convert`` vs ``qemu-img convert``, qcow2 -> raw.

Targets (issue 4): reads >= dissect at every size; convert within 3x of
qemu-img; 4 KiB QD1 >= 0.7x qemu-img bench.  The page cache is warmed first
so every reader sees the same memory-speed file.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

from gqemu.bench.common import RATIO_HEADER, fmt_num, progress, progress_done, ratio_row, table
from gqemu.bench.startup import _entry

MiB = 1 << 20


def _make_image(d: str, size: int) -> str:
    raw = os.path.join(d, "src.raw")
    img = os.path.join(d, "src.qcow2")
    chunk = bytes((i * 131 + 7) & 0xFF or 1 for i in range(MiB))
    with open(raw, "wb") as f:
        for _ in range(size // MiB):
            f.write(chunk)
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, img], check=True)
    os.unlink(raw)
    with open(img, "rb") as f:                       # warm the page cache
        while f.read(16 * MiB):
            pass
    return img


def gqemu_seq_read(img: str, bs: int, total: int, aio: str = "threads") -> float:
    """Bytes/s of QD1 sequential reads through the block layer."""
    from gqemu.block import blk_co_preadv, blk_new_open, blk_unref
    from gqemu.block.qiov import qemu_iovec_init_buf
    from gqemu.cli.qemu_img_out import run_co
    blk = blk_new_open(img, {"format": "qcow2", "readonly": "on", "cache": "writeback",
                             "aio": aio})
    buf = bytearray(bs)
    qiov = qemu_iovec_init_buf(buf)

    def loop() -> float:
        t0 = time.perf_counter()
        for off in range(0, total, bs):
            ret = blk_co_preadv(blk, off, bs, qiov, 0)
            assert ret >= 0, ret
        return time.perf_counter() - t0
    try:
        run_co(loop)                                 # warm the L2 cache
        dt = min(run_co(loop) for _ in range(2))
    finally:
        blk_unref(blk)
    return total / dt


def dissect_seq_read(img: str, bs: int, total: int) -> Optional[float]:
    try:
        from dissect.hypervisor.disk.qcow2 import QCow2  # type: ignore
    except ImportError:
        return None
    with open(img, "rb") as fh:
        stream = QCow2(fh).open()
        best = float("inf")
        for _ in range(2):
            stream.seek(0)
            t0 = time.perf_counter()
            for _off in range(0, total, bs):
                stream.read(bs)
            best = min(best, time.perf_counter() - t0)
    return total / best


def qemu_img_bench(img: str, bs: int, count: int, depth: int = 1) -> Optional[float]:
    """Requests/s of ``qemu-img bench`` (sequential, ``-i threads``)."""
    if not shutil.which("qemu-img"):
        return None
    p = subprocess.run(["qemu-img", "bench", "-f", "qcow2", "-i", "threads", "-t", "writeback",
                        "-d", str(depth), "-s", str(bs), "-c", str(count), img],
                       capture_output=True, text=True)
    m = re.search(r"Run completed in ([0-9.]+) seconds", p.stdout)
    if p.returncode or not m:
        return None
    return count / max(float(m.group(1)), 1e-9)


def _time_cmd(cmd: list[str]) -> Optional[float]:
    if not shutil.which(cmd[0]):
        return None
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True)
        if p.returncode:
            return None
        best = min(best, time.perf_counter() - t0)
    return best


def have_dissect() -> bool:
    """Whether the optional dissect.hypervisor anchor can be imported.  The
    bench never installs it: that would change the user's environment."""
    try:
        from dissect.hypervisor.disk.qcow2 import QCow2  # type: ignore  # noqa: F401
    except ImportError:
        return False
    return True


DISSECT_MISSING = ("gqemu bench qcow2: note: dissect.hypervisor is not installed; "
                   "skipping its anchor (pip install -e '.[bench]')")


def run_bench(args: argparse.Namespace) -> int:
    quick = bool(getattr(args, "quick", False))
    size = 128 * MiB if quick else 1024 * MiB
    dissect_ok = have_dissect()
    if not dissect_ok:
        sys.stderr.write(DISSECT_MISSING + "\n")
    d = tempfile.mkdtemp(prefix="gqemu-bench-qcow2-")
    try:
        progress("qcow2: building a %d MiB fully allocated image" % (size // MiB))
        img = _make_image(d, size)
        rows = []
        amounts = {4096: 16 * MiB if quick else 64 * MiB, 65536: size // 2, MiB: size}
        qd1_iops: dict[str, float] = {}              # the 4 KiB rows' rates, as IOPS
        qb_4k: Optional[float] = None
        for bs, total in amounts.items():
            label = "%s seq read" % ("4 KiB" if bs == 4096 else "64 KiB" if bs == 65536 else "1 MiB")
            progress("qcow2: %s" % label)
            dis = dissect_seq_read(img, bs, total) if dissect_ok else None
            qb = qemu_img_bench(img, bs, total // bs)
            if bs == 4096:
                qb_4k = qb
            for aio in ("threads", "nowait", "io_uring"):
                rate = gqemu_seq_read(img, bs, total, aio)
                if bs == 4096:
                    qd1_iops[aio] = rate / 4096
                ours = rate / MiB
                name = "%s aio=%s" % (label, aio)
                if dis is not None:
                    rows.append(ratio_row(name, ours, "dissect.hypervisor", dis / MiB,
                                          "MiB/s", 1.0))
                elif not dissect_ok:
                    rows.append([name, "%s MiB/s" % fmt_num(ours), "dissect.hypervisor",
                                 "skipped (not installed)", "-", ""])
                if qb is not None:
                    rows.append(ratio_row(name, ours, "qemu-img bench", qb * bs / MiB, "MiB/s"))
        if qb_4k is not None:
            for aio, ours_iops in qd1_iops.items():
                rows.append(ratio_row("4 KiB QD1 read aio=%s" % aio, ours_iops,
                                      "qemu-img bench -i threads", qb_4k, "IOPS", 0.7))
        progress("qcow2: convert to raw")
        # gqemu-img through this interpreter, as an installed console script
        # runs it (not whatever "gqemu-img" on PATH is, e.g. a pyenv shim).
        ours_t = _time_cmd([sys.executable, "-c", _entry("gqemu.cli.qemu_img", "gqemu-img"),
                            "convert", "-O", "raw", img, os.path.join(d, "g.raw")])
        qemu_t = _time_cmd(["qemu-img", "convert", "-O", "raw", img, os.path.join(d, "q.raw")])
        if ours_t is not None and qemu_t is not None:
            rows.append(ratio_row("convert %d MiB qcow2->raw" % (size // MiB), ours_t,
                                  "qemu-img convert", qemu_t, "s", 3.0, higher_is_better=False))
        progress_done()
        table("qcow2 (QD1, page cache warm, image %d MiB)" % (size // MiB), RATIO_HEADER, rows)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0
