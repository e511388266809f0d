"""``gqemu bench replay``: replay speed and memory, run exits per second,
and what recording costs.

- replay: records per second for a trace of single-byte register accesses
  (``out``/``in`` of the sector count register), against the anchor of
  merely decoding the same file with msgpack; target >= 300,000 records/s
  (all rates are per CPU second: the machine is shared);
- memory: the peak RSS growth while replaying, for a trace 10x longer
  (target: independent of length, ratio <= 1.5);
- run: exits per second of ``gqemu run`` on a PIO example (READ SECTORS
  loops, polling like SeaBIOS) and on a register-only loop (no block I/O),
  against a bare greenlet switch round trip (the floor of one simulated
  KVM_RUN);
- record: the same runs with ``--record`` (target: <= 1.2x the time of the
  PIO example); the register loop is shown as the worst case (every exit a
  record and no I/O to wait for), without a target.
"""
from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import msgpack

from gqemu.bench.common import (RATIO_HEADER, fmt_num, progress, progress_done,
                                ratio_row, table)

REG_LOOP = '''
N = %d
def guest(cpu):
    for i in range(N):
        cpu.outb(0x1f2, i & 0xff)
        cpu.inb(0x1f2)
'''

PIO_LOOP = '''
from gqemu.guest.ata import ATA
N = %d
def guest(cpu):
    ata = ATA(cpu)
    for i in range(N):
        ata.read_sectors(i %% 64, 1)
'''


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _write_trace(path: str, n: int) -> int:
    pairs = b"".join(msgpack.packb([1, 0, 1, 1, 0x1F2, v]) + msgpack.packb([1, 0, 0, 1, 0x1F2, v])
                     for v in range(256))
    reps = -(-n // 512)
    with open(path, "wb") as f:
        f.write(msgpack.packb(["gqemu-trace", 1, {"machine": "pc", "drives": []}]))
        for _ in range(reps):
            f.write(pairs)
        f.write(msgpack.packb([0, reps * 512]))
    return reps * 512


def _replay(path: str, disk: str) -> tuple[float, int, int]:
    """(records/s, records, peak RSS growth in bytes)."""
    from gqemu.machine import Machine, drive_config
    from gqemu.replay.format import TraceReader
    from gqemu.replay.replayer import Replayer
    m = Machine(drive_config(["file=%s,format=raw" % disk]))
    try:
        gc.collect()
        base = _rss()
        peak = [base]

        def sample(i: int) -> None:
            peak[0] = max(peak[0], _rss())
        with open(path, "rb") as f:
            reader = TraceReader(f)
            t0 = time.process_time()      # CPU time: the machine is shared
            res = Replayer(m.kvm, m.ram, progress=sample, progress_every=20_000).run(reader)
            dt = time.process_time() - t0
        assert res.divergence is None, res.divergence.report()
        return res.records / dt, res.records, peak[0] - base
    finally:
        m.close()


def _decode(path: str) -> float:
    with open(path, "rb") as f:
        u = msgpack.Unpacker(f, max_buffer_size=1 << 20, raw=False)
        t0 = time.process_time()
        n = sum(1 for _ in u)
        return n / (time.process_time() - t0)


def _run(script: str, disk: str, record: str | None) -> tuple[float, int]:
    """(CPU seconds, exits) of one in-process run of ``script``."""
    from gqemu.guest.script import load_script
    from gqemu.machine import Machine, drive_config
    guests, _ns = load_script(script)
    m = Machine(drive_config(["file=%s,format=raw" % disk]))
    f = None
    try:
        for g in guests:
            m.add_cpu(g)
        w = None
        if record:
            from gqemu.replay.format import TraceWriter
            from gqemu.replay.record import Recorder
            f = open(record, "wb")
            w = TraceWriter(f, {"machine": "pc", "drives": [], "irq": True})
            Recorder(w, m.kvm, m.memories)
        t0 = time.process_time()          # CPU time: less noisy on a shared machine
        m.run()
        if w is not None:
            w.close()
        dt = time.process_time() - t0
        for c in m.kvm.cpus:
            assert c.error is None, c.error
        return dt, m.kvm.nr_exits
    finally:
        m.close()
        if f is not None:
            f.close()


def _median(runs: list[tuple[float, int]]) -> tuple[float, int]:
    return sorted(runs)[len(runs) // 2]


def _switch_rate(n: int) -> float:
    from gqemu.bench.coroutine import _bare_round_trips
    t0 = time.process_time()
    _bare_round_trips(n)
    return n / (time.process_time() - t0)


def run_bench(args: argparse.Namespace) -> int:
    from gqemu.machine import make_scratch_disk
    quick = bool(getattr(args, "quick", False))
    n = 100_000 if quick else 1_000_000
    reads = 200 if quick else 2000
    with tempfile.TemporaryDirectory(prefix="gqemu-bench-") as tmp:
        disk = os.path.join(tmp, "disk.img")
        make_scratch_disk(disk)
        big = os.path.join(tmp, "big.gqt")
        small = os.path.join(tmp, "small.gqt")
        progress("replay: writing traces")
        n = _write_trace(big, n)
        _write_trace(small, n // 10)
        progress("replay: decoding")
        dec = _decode(big)
        progress("replay: replaying %d records" % n)
        rate, _recs, grow_big = _replay(big, disk)
        _r2, _n2, grow_small = _replay(small, disk)
        script = os.path.join(tmp, "pio.py")
        with open(script, "w") as f:
            f.write(PIO_LOOP % reads)
        regs = os.path.join(tmp, "regs.py")
        with open(regs, "w") as f:
            f.write(REG_LOOP % (n // 20))
        rec = os.path.join(tmp, "rec.gqt")
        progress("replay: gqemu run")
        _run(script, disk, None)                       # warm-up
        # interleaved, median of 7: the machine is shared, timings are noisy
        plain, recd, rplain, rrecd = [], [], [], []
        for _ in range(3 if quick else 7):
            plain.append(_run(script, disk, None))
            recd.append(_run(script, disk, rec))
            rplain.append(_run(regs, disk, None))
            rrecd.append(_run(regs, disk, rec))
        t_plain, exits = _median(plain)
        t_rec = _median(recd)[0]
        r_plain, r_exits = _median(rplain)
        r_rec = _median(rrecd)[0]
        sw = _switch_rate(200_000)
        progress_done()
    rows = [
        ratio_row("replay, 1-byte registers", rate, "msgpack decode only", dec, "rec/s"),
        ["replay vs target", "%s rec/s" % fmt_num(rate), "target", "300.0k rec/s",
         "%.2fx" % (rate / 300_000), "met" if rate >= 300_000 else "MISSED"],
        ["replay peak RSS growth", "%.1f MiB (%d rec)" % (grow_big / 2**20, n),
         "%d records" % (n // 10), "%.1f MiB" % (grow_small / 2**20),
         "%.2fx" % (max(grow_big, 1 << 20) / max(grow_small, 1 << 20)),
         "met" if grow_big <= 1.5 * max(grow_small, 1 << 20) else "MISSED"],
        ratio_row("gqemu run, PIO example", exits / t_plain, "greenlet switch round trip",
                  sw, "exits/s"),
        ratio_row("gqemu run, register loop", r_exits / r_plain, "greenlet switch round trip",
                  sw, "exits/s"),
        ["record cost, PIO example", "%.3f s" % t_rec, "run without", "%.3f s" % t_plain,
         "%.2fx" % (t_rec / t_plain), "met" if t_rec <= 1.2 * t_plain else "MISSED"],
        ["record cost, register loop", "%.3f s" % r_rec, "run without", "%.3f s" % r_plain,
         "%.2fx" % (r_rec / r_plain), "(worst case: no target)"],
    ]
    table("gqemu bench replay (%s)" % ("quick" if quick else "full"), RATIO_HEADER, rows)
    return 0
