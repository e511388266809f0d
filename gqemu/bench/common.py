"""Shared helpers for ``gqemu bench`` suites: timing, progress, tables.

Every figure is printed next to the anchor it is judged against, both
measured in the same process run, as a ratio: absolute speeds vary from
machine to machine, ratios much less.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, Sequence


def rate(fn: Callable[[int], None], n: int, repeat: int = 3) -> float:
    """Best-of-``repeat`` operations per second of ``fn(n)`` (which does n ops)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return n / best if best > 0 else float("inf")


def rates_interleaved(fns: list[Callable[[int], None]], n: int, repeat: int = 7) -> list[float]:
    """Best-of-``repeat`` operations per CPU second of each ``fn(n)``, the
    functions run in turn so that a busy moment of a shared host hits them
    alike; CPU time of this thread (``time.thread_time``), steadier than
    wall time there.  For work that stays in the calling thread."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            fn(n)
            best[i] = min(best[i], time.thread_time() - t0)
    return [n / b if b > 0 else float("inf") for b in best]


def progress(msg: str) -> None:
    """A one-line status on a terminal; nothing when stderr is piped."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K" + msg)
        sys.stderr.flush()


def progress_done() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def fmt_num(x: float) -> str:
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e3:
        return "%.1fk" % (x / 1e3)
    return "%.1f" % x


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print an aligned table under ``title``."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = sys.stdout
    out.write("\n%s\n" % title)
    line = "  ".join(str(h).ljust(w) for h, w in zip(header, widths))
    out.write(line + "\n" + "-" * len(line) + "\n")
    for r in rows:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "\n")
    out.flush()


def verdict(ratio: float, target: float, higher_is_better: bool = True) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "%s (target %s %.2fx)" % ("met" if ok else "MISSED",
                                     ">=" if higher_is_better else "<=", target)


def ratio_row(name: str, ours: float, anchor_name: str, anchor: float,
              unit: str, target: Optional[float] = None,
              higher_is_better: bool = True) -> list[str]:
    r = ours / anchor if anchor else float("inf")
    return [name, "%s %s" % (fmt_num(ours), unit), anchor_name,
            "%s %s" % (fmt_num(anchor), unit), "%.2fx" % r,
            verdict(r, target, higher_is_better) if target is not None else ""]


RATIO_HEADER = ["measure", "gqemu", "anchor", "anchor value", "ratio", "target"]


def make_lba_image(path: str, nsect: int) -> None:
    """A raw image whose every sector holds its LBA (u32 LE) 128 times: a
    read shows which sector it came from.  Used by the ide and virtio suites."""
    with open(path, "wb") as f:
        chunk = bytearray()
        for lba in range(nsect):
            chunk += lba.to_bytes(4, "little") * 128
            if len(chunk) >= 1 << 20:
                f.write(chunk)
                chunk = bytearray()
        f.write(chunk)
