"""``gqemu import-qemu-trace``: output, refusals with line numbers, nothing
left behind on failure."""
from __future__ import annotations

import lzma
import os

from gqemu.cli.main import main
from gqemu.replay.format import open_trace

GOOD = ("29247@1795567158.223756:ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x50; "
        "bus 0x55e47ad68f50 IDEState 0x55e47ad68fd8\n")


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_plain_and_xz(tmp_path, capsys):
    log = tmp_path / "trace.log"
    log.write_text(GOOD * 3)
    with lzma.open(tmp_path / "trace2.log.xz", "wt") as f:
        f.write(GOOD * 3)
    for src in (log, tmp_path / "trace2.log.xz"):
        out = tmp_path / (src.name + ".gqt")
        rc, _o, err = gqemu(capsys, "import-qemu-trace", src, "-o", out)
        assert rc == 0, err
        assert "3 records from 3 lines" in err
        f, r = open_trace(str(out))
        with f:
            assert [x[2:] for x in r] == [[0, 1, 0x1F7, 0x50]] * 3
            assert r.meta["source"] == "qemu-log:" + src.name
            assert r.meta["drives"] == []
        assert oct(out.stat().st_mode & 0o777) != "0o600"


def test_default_output_name(tmp_path, capsys, monkeypatch):
    log = tmp_path / "in" / "run.log.xz"
    log.parent.mkdir()
    with lzma.open(log, "wt") as f:
        f.write(GOOD)
    monkeypatch.chdir(tmp_path)
    rc, _o, err = gqemu(capsys, "import-qemu-trace", "-q", log)
    assert rc == 0 and err == ""
    assert (tmp_path / "run.gqtrace").is_file()


def test_refused_line_leaves_nothing(tmp_path, capsys):
    log = tmp_path / "bad.log"
    log.write_text(GOOD * 4 + "ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0xzz\n" + GOOD)
    out = tmp_path / "bad.gqt"
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", out)
    assert rc == 2
    assert err.startswith("gqemu import-qemu-trace: %s: line 5: garbled ide_ioport_read line" % log)
    assert err.count("\n") == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.log"]


def test_not_utf8_and_not_xz(tmp_path, capsys):
    log = tmp_path / "bin.log"
    log.write_bytes(GOOD.encode() + b"\xff\xfe\x00garbage\n")
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", tmp_path / "o.gqt")
    assert rc == 2 and "line 2: not UTF-8 text" in err
    fake = tmp_path / "fake.log.xz"
    fake.write_bytes(b"not xz at all")
    rc, _o, err = gqemu(capsys, "import-qemu-trace", fake, "-o", tmp_path / "o.gqt")
    assert rc == 2 and "corrupt xz data" in err and err.count("\n") == 1
    assert not (tmp_path / "o.gqt").exists()


def test_missing_log_and_unwritable_output(tmp_path, capsys):
    rc, _o, err = gqemu(capsys, "import-qemu-trace", tmp_path / "none.log")
    assert rc == 2 and "No such file" in err
    log = tmp_path / "t.log"
    log.write_text(GOOD)
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", "/nonexistent/dir/x.gqt")
    assert rc == 2 and err.count("\n") == 1
    assert os.listdir(tmp_path) == ["t.log"]


def test_overlong_line_is_refused(tmp_path, capsys):
    log = tmp_path / "long.log"
    log.write_bytes(GOOD.encode() * 2 + b"ide_reset IDEstate 0x1" + b"1" * 200_000 + b"\n")
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", tmp_path / "o.gqt")
    assert rc == 2 and "line 3: line longer than 65536 bytes" in err
