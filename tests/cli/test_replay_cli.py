"""``gqemu replay``: 0 / 1 / 2, one-line reasons for bad traces, reports."""
from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from gqemu.cli.main import main
from gqemu.machine import make_scratch_disk
from gqemu.replay.format import MAGIC, REC_END, REC_IO, VERSION

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def recorded(tmp_path, capsys):
    trace = tmp_path / "t.gqt"
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / "write_flush_readback.py", "--record", trace)
    assert rc == 0, err
    return trace


def test_ok(recorded, capsys):
    rc, out, err = gqemu(capsys, "replay", recorded)
    assert rc == 0 and err == ""           # no progress bar when not a terminal
    assert out.endswith("records replayed, no divergence\n")


def test_quiet(recorded, capsys):
    rc, out, err = gqemu(capsys, "replay", "-q", recorded)
    assert (rc, out, err) == (0, "", "")


def cut_reason(data, keep):
    """What the reader must say about ``data[:keep]``, worked out from the
    record boundaries an independent msgpack parse of ``data`` finds."""
    u = msgpack.Unpacker(raw=False)
    u.feed(data)
    starts = []
    while True:
        pos = u.tell()
        try:
            u.unpack()
        except msgpack.OutOfData:
            break
        starts.append(pos)
    records = [s for s in starts[1:] if s < keep]          # starts[0]: header
    if keep in starts:
        return ("trace ends without an end record after %d records "
                "(the recording was cut short)" % len(records))
    return "truncated record at byte %d (after %d complete records)" % (
        records[-1], len(records) - 1)


def test_truncated_trace_exits_2(recorded, tmp_path, capsys):
    data = recorded.read_bytes()
    for cut in (3, len(data) // 2, len(data) // 2 + 1):
        bad = tmp_path / "cut.gqt"
        keep = len(data) - cut
        bad.write_bytes(data[:keep])
        rc, out, err = gqemu(capsys, "replay", bad)
        assert (rc, out) == (2, ""), out + err
        assert err == "gqemu replay: %s: %s\n" % (bad, cut_reason(data, keep))


def test_unknown_version_exits_2_before_replaying(tmp_path, capsys):
    t = tmp_path / "v9.gqt"
    t.write_bytes(msgpack.packb([MAGIC, 9, {"machine": "pc"}]) +
                  msgpack.packb([REC_IO, 0, 1, 1, 0x1F7, 0x20]) + msgpack.packb([REC_END, 1]))
    rc, out, err = gqemu(capsys, "replay", t)
    assert rc == 2 and out == ""
    assert err == "gqemu replay: %s: header: unsupported trace version 9 " \
                  "(this gqemu reads version 1)\n" % t


def test_corrupted_record_exits_2_with_its_index(recorded, tmp_path, capsys):
    # rebuild the recording with record 7 replaced by a port out of range
    u = msgpack.Unpacker(open(recorded, "rb"), raw=False)
    items = list(u)
    items[1 + 7] = [REC_IO, 0, 1, 1, 0x10000, 0]
    bad = tmp_path / "bad.gqt"
    bad.write_bytes(b"".join(msgpack.packb(x, use_bin_type=True) for x in items))
    rc, out, err = gqemu(capsys, "replay", bad)
    assert rc == 2
    assert err == "gqemu replay: %s: record 7: bad port 65536\n" % bad


def test_garbage_file_exits_2(tmp_path, capsys):
    t = tmp_path / "junk"
    t.write_bytes(b"\xc1\xc1\xc1 this is not msgpack")
    rc, _out, err = gqemu(capsys, "replay", t)
    assert rc == 2 and err.count("\n") == 1 and "not a gqemu trace" in err


def test_missing_file_exits_2(capsys):
    rc, _out, err = gqemu(capsys, "replay", "/nonexistent.gqt")
    assert rc == 2 and "No such file" in err


def test_divergence_exits_1_with_report(recorded, tmp_path, capsys):
    """Alter the data the recorded guest wrote: the replay writes that, and
    the recorded read-back then disagrees at its first word."""
    u = msgpack.Unpacker(open(recorded, "rb"), raw=False)
    items = list(u)
    # find the first string OUT (rep outsw of the write) and flip its first byte
    for i, it in enumerate(items[1:-1]):
        if it[0] == 2 and it[2] == 1:
            data = bytearray(it[6])
            data[0] ^= 0xFF
            it[6] = bytes(data)
            break
    first_in = next(j for j, it in enumerate(items[1:-1])
                    if j > i and it[0] == 2 and it[2] == 0)
    bad = tmp_path / "bad.gqt"
    bad.write_bytes(b"".join(msgpack.packb(x, use_bin_type=True) for x in items))
    rc, out, err = gqemu(capsys, "replay", bad)
    assert rc == 1, out + err
    lines = out.splitlines()
    assert lines[0].startswith("divergence at record %d: cpu0 ins  port 0x01f0 size 2 count 256"
                               % first_in)
    assert lines[1] == "  expected element 0 = 0xa55a"     # what the guest read back
    assert lines[2] == "  actual   element 0 = 0xa5a5"     # what the altered write left
    assert lines[3] == "  records before:"
    assert len(lines) == 4 + 5


def test_given_drive_that_differs_warns(recorded, tmp_path, capsys):
    d = tmp_path / "other.img"
    make_scratch_disk(str(d))
    with open(d, "r+b") as f:
        f.write(b"\x00" * 512)
    rc, _out, err = gqemu(capsys, "replay", recorded, "--drive", "file=%s,format=raw" % d)
    assert rc == 0                      # LBA 0 is never read by this script
    assert "warning: drive 0's contents differ" in err


def test_progress_bar_only_on_a_terminal():
    import io

    from gqemu.cli.progress import Progress
    quiet = io.StringIO()
    p = Progress("replay", total=1000, unit="B", stream=quiet)
    p.update(500)
    p.close()
    assert quiet.getvalue() == ""              # not a TTY: nothing at all
    tty = io.StringIO()
    p = Progress("replay", total=1000, unit="B", stream=tty, force=True)
    p.update(500, "42 records")
    assert "[###############...............]  50%" in tty.getvalue()
    assert "42 records" in tty.getvalue()
    p.close()
    assert tty.getvalue().endswith("\r\x1b[K")


def test_ram_store_outside_guest_ram_is_bad_input(tmp_path, capsys):
    t = tmp_path / "ram.gqt"
    t.write_bytes(msgpack.packb([MAGIC, VERSION, {"machine": "pc", "drives": [
        {"index": 0, "scratch": "mkdisk-16M"}], "ram_size": 1 << 20}]) +
        msgpack.packb([8, 0, (1 << 20) - 4, b"12345678"], use_bin_type=True) +
        msgpack.packb([REC_END, 1]))
    rc, _out, err = gqemu(capsys, "replay", t)
    assert rc == 2
    assert "record 0: guest RAM store at 0xffffc outside the 1048576 bytes of RAM" in err


def test_allow_truncated_replays_the_prefix(recorded, tmp_path, capsys):
    data = recorded.read_bytes()
    bad = tmp_path / "cut.gqt"
    bad.write_bytes(data[:len(data) // 2 + 3])
    rc, out, err = gqemu(capsys, "replay", "--allow-truncated", bad)
    assert rc == 0, out + err
    reason = cut_reason(data, len(data) // 2 + 3)
    assert err == "gqemu replay: warning: %s: %s\n" % (bad, reason)
    complete = int(reason.split("after ")[1].split()[0])
    assert out == "%s: %d records replayed, no divergence\n" % (bad, complete)
