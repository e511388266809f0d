"""A small progress bar on stderr, shown only when stderr is a terminal.

    bar = Progress("replay", total=os.path.getsize(path), unit="B")
    bar.update(done)            # cheap: redraws at most 10 times a second
    bar.close()                 # clears the line

Anyone may use it; it never writes anything when stderr is not a TTY, so
output captured by tests and pipes stays clean.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Optional


class Progress:
    """One-line progress: label, percentage (when ``total`` is known),
    count and rate."""

    def __init__(self, label: str, total: Optional[int] = None, unit: str = "",
                 stream: Optional[IO[str]] = None, force: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        try:
            tty = self.stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.enabled = tty or force
        self.label = label
        self.total = total
        self.unit = unit
        self.t0 = time.monotonic()
        self.last = 0.0
        self.shown = False

    def update(self, done: int, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        if self.total:
            frac = min(max(done / self.total, 0.0), 1.0)
            width = 30
            fill = int(frac * width)
            bar = "[%s%s] %3d%%" % ("#" * fill, "." * (width - fill), int(frac * 100))
        else:
            bar = ""
        text = "%s %s %s %s/s %s" % (self.label, bar, _si(done, self.unit),
                                     _si(rate, self.unit), extra)
        self.stream.write("\r" + text.rstrip()[:120] + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _si(n: float, unit: str) -> str:
    for suffix in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return ("%d%s%s" if suffix == "" else "%.1f%s%s") % (n, suffix, unit)
        n /= 1000.0
    return "%.1fT%s" % (n, unit)
