"""Replay: the real QEMU recording, round trips of every example, the
first divergence at the right index, flat memory over a million records."""
from __future__ import annotations

import filecmp
import gc

import msgpack
import pytest
from replay_helpers import EXAMPLES, gqemu, unxz

from gqemu.machine import Machine, drive_config
from gqemu.replay.format import REC_IO, TraceReader, TraceWriter, open_trace
from gqemu.replay.replayer import Replayer

EXAMPLE_SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


@pytest.fixture
def refdata_trace(refdata, tmp_path, capsys):
    """The refdata QEMU log imported, plus fresh pristine and after images."""
    out = refdata / "mbr" / "out"
    trace = tmp_path / "ref.gqt"
    rc, _o, err = gqemu(capsys, "import-qemu-trace", out / "trace-raw.log.xz", "-o", trace)
    assert rc == 0, err
    disk = unxz(out / "disk-pristine.img.xz", tmp_path / "disk.img")
    after = unxz(out / "disk-after.img.xz", tmp_path / "after.img")
    return trace, disk, after


def test_refdata_replays_with_zero_divergences(refdata_trace, capsys):
    trace, disk, after = refdata_trace
    assert not filecmp.cmp(disk, after, shallow=False)
    rc, out, err = gqemu(capsys, "replay", trace, "--drive", "file=%s,format=raw" % disk)
    assert rc == 0, out + err
    assert "5076 records replayed, no divergence" in out
    assert filecmp.cmp(disk, after, shallow=False), "disk differs from disk-after.img"


def test_refdata_replay_on_qcow2_gives_the_same_disk(refdata_trace, qemu_img, tmp_path, capsys):
    """refdata/README: the same program on qcow2 leaves a byte-identical disk."""
    import subprocess
    trace, disk, after = refdata_trace
    q = tmp_path / "disk.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(disk), str(q)],
                   check=True)
    rc, out, err = gqemu(capsys, "replay", trace, "--drive", "file=%s,format=qcow2" % q)
    assert rc == 0, out + err
    back = tmp_path / "back.img"
    subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(q), str(back)],
                   check=True)
    assert filecmp.cmp(back, after, shallow=False)


def first_boot_data_word(trace, word):
    """Index of data word ``word`` of SeaBIOS's READ SECTORS of LBA 0, found
    from the protocol: the first 'out 0x1f7 <- 0x20', then the word reads."""
    f, r = open_trace(str(trace))
    with f:
        seen_cmd = False
        n = 0
        for i, rec in enumerate(r):
            if rec[0] != REC_IO:
                continue
            if not seen_cmd and rec[2] == 1 and rec[4] == 0x1F7 and rec[5] == 0x20:
                seen_cmd = True
            elif seen_cmd and rec[2] == 0 and rec[4] == 0x1F0 and rec[3] == 2:
                if n == word:
                    return i, rec[5]
                n += 1
    raise AssertionError("no READ SECTORS in the trace")


def test_other_disk_reports_first_divergence_at_the_right_index(refdata_trace, capsys):
    trace, disk, _after = refdata_trace
    with open(disk, "r+b") as f:               # change boot sector word 50
        f.seek(100)
        old = f.read(2)
        f.seek(100)
        f.write(bytes(b ^ 0xFF for b in old))
    index, expected = first_boot_data_word(trace, 50)
    actual = expected ^ 0xFFFF
    rc, out, err = gqemu(capsys, "replay", trace, "--drive", "file=%s,format=raw" % disk)
    assert rc == 1, out + err
    lines = out.splitlines()
    assert lines[0] == ("divergence at record %d: cpu0 in  port 0x01f0 size 2 -> 0x%04x"
                        % (index, expected))
    assert lines[1].split() == ["expected", "0x%04x" % expected]
    assert lines[2].split() == ["actual", "0x%04x" % actual]
    assert lines[3] == "  records before:"
    before = [int(line.split()[0]) for line in lines[4:]]
    assert before == list(range(index - 5, index))


@pytest.mark.parametrize("script", EXAMPLE_SCRIPTS)
def test_record_replay_round_trip(script, tmp_path, capsys):
    trace = tmp_path / "t.gqt"
    rc, _out, err = gqemu(capsys, "run", EXAMPLES / script, "--record", trace)
    assert rc == 0, err
    f, r = open_trace(str(trace))
    with f:
        n = sum(1 for _ in r)
        assert r.ended and r.meta["irq"] is True
    rc, out, err = gqemu(capsys, "replay", trace)
    assert rc == 0, out + err
    assert "%d records replayed, no divergence" % n in out


def test_round_trip_on_given_drives_leaves_the_same_disk(scratch, tmp_path, capsys):
    d1, d2 = scratch("run.img"), scratch("replay.img")
    trace = tmp_path / "t.gqt"
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / "write_flush_readback.py", "--record", trace,
                        "--drive", "file=%s,format=raw" % d1)
    assert rc == 0, err
    assert not filecmp.cmp(d1, d2, shallow=False)
    rc, out, err = gqemu(capsys, "replay", trace, "--drive", "file=%s,format=raw" % d2)
    assert rc == 0, out + err
    assert err == ""                   # same pristine disk: no warning
    assert filecmp.cmp(d1, d2, shallow=False)


def test_busy_polls_are_answered_while_in_flight(scratch, tmp_path, capsys):
    """A recording with many BSY polls replays them all as BSY (the loop is
    not run ahead), and the ready poll after them waits for the flush."""
    d = scratch()
    with open(tmp_path / "t.gqt", "wb") as f:
        w = TraceWriter(f, {"machine": "pc", "drives": []})
        w.write([REC_IO, 0, 1, 1, 0x3F6, 0x02])
        w.write([REC_IO, 0, 1, 1, 0x1F7, 0xE7])               # FLUSH CACHE
        for _ in range(500):
            w.write([REC_IO, 0, 0, 1, 0x1F7, 0xC0])           # busy
        w.write([REC_IO, 0, 0, 1, 0x1F7, 0x50])               # ready
        w.close()
    rc, out, err = gqemu(capsys, "replay", tmp_path / "t.gqt", "--drive", "file=%s" % d)
    assert rc == 0, out + err


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_million_records_replay_in_flat_memory(scratch, tmp_path):
    d = scratch()
    path = tmp_path / "big.gqt"
    reps = -(-1_000_000 // 512)
    n = reps * 512                     # just over a million
    pairs = [msgpack.packb([REC_IO, 0, 1, 1, 0x1F2, v]) +     # sector count:
             msgpack.packb([REC_IO, 0, 0, 1, 0x1F2, v])        # reads back
             for v in range(256)]
    with open(path, "wb") as f:
        f.write(msgpack.packb(["gqemu-trace", 1, {"machine": "pc", "drives": []}]))
        f.write(b"".join(pairs) * reps)
        f.write(msgpack.packb([0, n]))
    assert path.stat().st_size > 7_000_000
    m = Machine(drive_config(["file=%s,format=raw" % d]))
    samples = []
    try:
        gc.collect()
        base = _rss()
        with open(path, "rb") as f:
            reader = TraceReader(f)
            res = Replayer(m.kvm, m.ram, progress=lambda i: samples.append(_rss()),
                           progress_every=50_000).run(reader)
    finally:
        m.close()
    assert res.divergence is None and res.records == n
    assert len(samples) == n // 50_000 + 1
    # 1M records kept in memory would take well over 100 MiB
    assert max(samples) - base < 16 << 20, (base, max(samples))
    # and memory does not creep up as the replay goes on
    assert samples[-1] - samples[2] < 4 << 20, samples


def test_replay_without_drives_asks_for_them(refdata_trace, capsys):
    trace, _disk, _after = refdata_trace
    rc, _out, err = gqemu(capsys, "replay", trace)
    assert rc == 2
    assert err.count("\n") == 1 and "--drive" in err


@pytest.fixture
def slow_disk(monkeypatch):
    """Make every worker-thread request take 20 ms longer: a slow host.
    (The delay runs in the worker thread; the test itself never sleeps.)"""
    import time

    import gqemu.threadpool.aiocb as aiocb
    orig = aiocb.handle_aiocb_rw

    def slow(aiocb_arg):
        time.sleep(0.02)
        return orig(aiocb_arg)

    def set_slow(on: bool) -> None:
        if on:
            monkeypatch.setattr(aiocb, "handle_aiocb_rw", slow)
        else:
            monkeypatch.setattr(aiocb, "handle_aiocb_rw", orig)
    return set_slow


def _busy_polls(trace) -> int:
    f, r = open_trace(str(trace))
    with f:
        return sum(1 for rec in r if rec[0] == REC_IO and rec[2] == 0
                   and rec[4] in (0x1F7, 0x3F6) and rec[5] & 0x80)


@pytest.mark.parametrize("record_slow", [True, False])
def test_replay_does_not_depend_on_host_speed(slow_disk, record_slow, tmp_path, capsys):
    """Recorded on a slow host (many BSY polls) and replayed on a fast one,
    or the other way round: no divergence either way."""
    trace = tmp_path / "t.gqt"
    slow_disk(record_slow)
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / "write_flush_readback.py", "--record", trace)
    assert rc == 0, err
    if record_slow:
        assert _busy_polls(trace) > 50
    slow_disk(not record_slow)
    rc, out, err = gqemu(capsys, "replay", trace)
    assert rc == 0, out + err


def test_recorded_on_qcow2_replays_on_raw(scratch, qemu_img, tmp_path, capsys):
    """The guest sees the same disk whatever the format: a trace recorded
    with a qcow2 image (made by the real qemu-img) replays on the raw one."""
    import subprocess
    raw = scratch("a.img")
    q = tmp_path / "a.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)],
                   check=True)
    trace = tmp_path / "t.gqt"
    rc, out, err = gqemu(capsys, "run", EXAMPLES / "dma.py", "--record", trace,
                         "--drive", "file=%s,format=qcow2" % q)
    assert rc == 0, err
    assert "sectors say [16, 17" in out
    rc, out, err = gqemu(capsys, "replay", trace, "--drive", "file=%s,format=raw" % raw)
    assert rc == 0, out + err
    subprocess.run([qemu_img, "compare", "-f", "qcow2", "-F", "raw", str(q), str(raw)],
                   check=True, capture_output=True)
