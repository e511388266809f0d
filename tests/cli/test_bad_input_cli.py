"""Bad input to ``gqemu replay``, ``import-qemu-trace`` and ``stress --repro``:
one line on stderr, exit status 2, and never a Python exception class name,
a traceback, a raw control byte or "None" standing in for a value."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from gqemu.cli.main import main
from gqemu.machine import SCRATCH_TAG
from gqemu.replay.format import MAGIC, VERSION

_MAIN = "import sys; from gqemu.cli.main import main; sys.exit(main())"
# a Python class name as users would see it: FooError, BarException, ...
PYCLASS = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Data|Full)\b|Traceback|\bNone\b")


def one_line(err: str, prog: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(prog + ": "), err
    assert not PYCLASS.search(err), err
    assert all(c.isprintable() for c in err[:-1]), err
    return err


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def gqemu_proc(*argv):
    p = subprocess.run([sys.executable, "-c", _MAIN, *map(str, argv)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------- replay

def _blobs():
    rnd = random.Random(20261207)
    hdr = msgpack.packb([MAGIC, VERSION, {}])
    out = [bytes(rnd.getrandbits(8) for _ in range(rnd.choice((3, 40, 900))))
           for _ in range(60)]
    out += [hdr + bytes(rnd.getrandbits(8) for _ in range(rnd.choice((3, 40, 900))))
            for _ in range(60)]
    # each kind of msgpack refusal, once, at the header and in a record
    for bad in (b"\xa2\xff\xfe",                             # invalid UTF-8 string
                b"\x81\x01\x02",                            # map with an int key
                b"\xd4\x05\x00",                            # extension type 5
                b"\xc1",                                    # never-used byte
                b"\xdd\xff\xff\xff\xff",                    # array of 4G items
                b"\x91" * 2000):                            # nested too deeply
        out += [bad, hdr + bad]
    return out


def test_replay_random_bytes_one_line(tmp_path, capsys):
    f = tmp_path / "junk.gqt"
    for blob in _blobs():
        f.write_bytes(blob)
        rc, out, err = gqemu(capsys, "replay", f)
        assert rc == 2 and out == "", (blob[:20], out)
        one_line(err, "gqemu replay")


@pytest.mark.parametrize("make, msg", [
    (lambda p: p.write_bytes(b""), "empty file or truncated header"),
    (lambda p: p.mkdir(), "Is a directory"),
    (lambda p: None, "No such file or directory"),
    (lambda p: p.write_bytes(b"\xa2\xff\xfe"), "not a gqemu trace (a string is not valid UTF-8)"),
])
def test_replay_bad_files(tmp_path, capsys, make, msg):
    f = tmp_path / "t.gqt"
    make(f)
    rc, out, err = gqemu(capsys, "replay", f)
    assert rc == 2 and out == ""
    assert msg in one_line(err, "gqemu replay")


@pytest.mark.parametrize("records, msg", [
    ([[1, 0, 0, None, 0x1F7, 0]], "record 0: bad size (a nil)"),
    ([[3, 0, 0, 0, "4", 0]], "record 0: bad size (a string)"),
    ([[0, None]], "record 0: end record counts (a nil) records, stream has 0"),
], ids=["nil-size", "string-size", "nil-count"])
def test_replay_nil_fields_are_named_by_type(tmp_path, capsys, records, msg):
    f = tmp_path / "t.gqt"
    meta = {"drives": [{"index": 0, "scratch": SCRATCH_TAG}]}      # fresh scratch disks
    f.write_bytes(msgpack.packb([MAGIC, VERSION, meta])
                  + b"".join(msgpack.packb(r) for r in records))
    rc, out, err = gqemu(capsys, "replay", f)
    assert rc == 2 and out == ""
    assert err == "gqemu replay: %s: %s\n" % (f, msg)


def test_replay_nil_version(tmp_path, capsys):
    f = tmp_path / "t.gqt"
    f.write_bytes(msgpack.packb([MAGIC, None, {}]))
    rc, _o, err = gqemu(capsys, "replay", f)
    assert rc == 2
    assert one_line(err, "gqemu replay") == "gqemu replay: %s: header: unsupported trace " \
        "version (a nil) (this gqemu reads version 1)\n" % f


def test_replay_random_bytes_subprocess(tmp_path):
    """The installed entry point, not only main(): no traceback either."""
    f = tmp_path / "junk"
    f.write_bytes(bytes(random.Random(7).getrandbits(8) for _ in range(4096)))
    rc, out, err = gqemu_proc("replay", f)
    assert rc == 2
    one_line(err, "gqemu replay")


# ---------------------------------------------------------------- import-qemu-trace

@pytest.mark.parametrize("name, data, msg", [
    ("junk.log", bytes(range(128, 256)) * 4, "line 1: not UTF-8 text"),
    ("zeros.log", b"\0" * 300 + b"\n", "line 1: not a QEMU trace line: \\x00\\x00"),
    ("esc.log", b"\x1b[31mred\n", "line 1: not a QEMU trace line: \\x1b[31mred"),
    ("junk.log.xz", b"\xfd7zXZ\0junk", "line 1: corrupt xz data"),
    ("missing.log", None, "No such file or directory"),
], ids=["junk", "zeros", "escape", "xz-junk", "missing"])
def test_import_bad_logs(tmp_path, capsys, name, data, msg):
    src = tmp_path / name
    if data is not None:
        src.write_bytes(data)
    out_path = tmp_path / "out.gqt"
    rc, out, err = gqemu(capsys, "import-qemu-trace", src, "-o", out_path)
    assert rc == 2 and out == ""
    assert msg in one_line(err, "gqemu import-qemu-trace")
    assert not out_path.exists() and [p.name for p in tmp_path.iterdir()] == \
        ([name] if data is not None else [])          # nothing left behind


# ---------------------------------------------------------------- stress --repro

GOOD = {"gqemu_stress_repro": 1, "seed": 1, "options": {"workload": "runtime"},
        "spec": {"programs": []}, "allowed": [], "invariant": "comutex_fifo"}


def _doc(**kw):
    d = dict(GOOD)
    d.update(kw)
    return json.dumps(d)


@pytest.mark.parametrize("text, msg", [
    ("hello, not json\n", "is not a reproducer file: not JSON (line 1, column 1"),
    ("", "is not a reproducer file: not JSON (line 1, column 1"),
    (b"\xff\xfe\x00junk", "is not a reproducer file: not UTF-8 text"),
    ("[" * 100000, "is not a reproducer file: not JSON"),
    ("[1, 2, 3]", "is not a gqemu stress reproducer"),
    (_doc(gqemu_stress_repro=None), "unsupported reproducer version null (this gqemu reads 1)"),
    (_doc(options=[]), "\"options\" is not a JSON object"),
    (_doc(options={"workload": "nope"}), "bad option 'workload': 'nope'"),
    (_doc(options={"requests": -1}), "bad option 'requests': -1"),
    (_doc(options={"plant": "comutex_barging"}), "option 'plant' has the wrong type"),
    (_doc(options={"bogus": 1}), "unknown option 'bogus'"),
    (_doc(seed="7"), "\"seed\" is not a non-negative integer"),
    (_doc(seed=-5), "\"seed\" is not a non-negative integer"),
    (_doc(allowed=["a"]), "\"allowed\" is not a list of integers"),
    (_doc(spec={"programs": [1]}), "spec 'programs' is not part of what seed 1 generates"),
    (_doc(spec={"programs": [[["mutex", 99, 0]]]}), "spec 'programs' is not part of"),
    (_doc(spec={"programs": [[{"ops": 5}]]}), "spec 'programs' is not part of"),
    (_doc(spec=[]), "\"spec\" is not a workload spec"),
    (_doc(spec={"programs": [], "x": 1}), "spec key 'x' is not in what seed 1 generates"),
], ids=lambda v: None if isinstance(v, str) and len(v) < 30 else "")
def test_repro_bad_files(tmp_path, capsys, text, msg):
    f = tmp_path / "r.json"
    f.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, out, err = gqemu(capsys, "stress", "--repro", f)
    assert rc == 2 and out == ""
    assert msg in one_line(err, "gqemu stress"), err


@pytest.mark.parametrize("make, msg", [
    (lambda p: None, "cannot read '%s': No such file or directory"),
    (lambda p: p.mkdir(), "cannot read '%s': Is a directory"),
    (lambda p: os.mkfifo(p), "'%s' is not a reproducer file: not a regular file"),
])
def test_repro_missing_or_directory(tmp_path, capsys, make, msg):
    f = tmp_path / "r.json"
    make(f)
    rc, out, err = gqemu(capsys, "stress", "--repro", f)
    assert rc == 2 and out == ""
    assert msg % f in one_line(err, "gqemu stress")


def test_repro_not_reproduced_names_no_none(tmp_path):
    """A valid file whose schedule passes: exit 3, and a reproducer without a
    fingerprint is not reported as 'fingerprint None'."""
    f = tmp_path / "r.json"
    f.write_text(_doc())
    rc, out, err = gqemu_proc("stress", "--repro", f)
    assert (rc, err) == (3, "")
    assert out == "not reproduced: seed 1 passed (expected comutex_fifo)\n"
