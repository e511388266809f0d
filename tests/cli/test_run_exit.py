"""How a ``gqemu run`` ends: a guest's ``sys.exit`` is the run's status as
it would be Python's; a guest computing forever is bounded by ``--timeout``
(``--max-exits`` for one that keeps exiting), with one line saying so and
status 124; a file that is not a loadable script is one line, naming
neither a Python exception class nor a "None" line number."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def script(tmp_path, body, name="g.py"):
    p = tmp_path / name
    p.write_text(body)
    return p


def python_status(tmp_path, body):
    """What plain Python does with ``body`` as a program: (status, stderr)."""
    p = tmp_path / "plain.py"
    p.write_text(body)
    r = subprocess.run([sys.executable, str(p)], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stderr


@pytest.mark.parametrize("arg", ["7", "0", "", "None", "'disk full'", "True", "255"])
def test_guest_sys_exit_is_the_run_status(tmp_path, capsys, arg):
    rc, out, err = gqemu(capsys, "run", script(tmp_path, (
        "import sys\n"
        "def guest(cpu):\n"
        "    cpu.inb(0x1f7)\n"
        "    sys.exit(%s)\n" % arg)))
    want_rc, want_err = python_status(tmp_path, "import sys\nsys.exit(%s)\n" % arg)
    assert (rc & 0xFF, out) == (want_rc, "")
    assert err == want_err.replace("\r", "")


def test_sys_exit_ends_every_vcpu(tmp_path, capsys):
    """One vCPU exits; the other, polling forever and asleep in HLT in turn,
    ends too (the whole VM shuts down, as for a Python process)."""
    rc, out, err = gqemu(capsys, "run", script(tmp_path, (
        "import sys\n"
        "def spin(cpu):\n"
        "    while True:\n"
        "        cpu.inb(0x1f7)\n"
        "def sleeper(cpu):\n"
        "    cpu.hlt()\n"
        "def quitter(cpu):\n"
        "    for _ in range(100):\n"
        "        cpu.inb(0x1f7)\n"
        "    sys.exit(5)\n"
        "guests = [spin, sleeper, quitter]\n")), "--max-exits", "0")
    assert (rc, out, err) == (5, "", "")


def test_timeout_stops_a_guest_computing_without_exits(tmp_path, capsys):
    rc, out, err = gqemu(capsys, "run", script(tmp_path, (
        "def guest(cpu):\n"
        "    print('spinning', flush=True)\n"
        "    while True:\n"
        "        pass\n")), "--timeout", "0.3")
    assert rc == 124 and out == "spinning\n"
    assert err == "gqemu run: the run exceeded its --timeout of 0.3 s: stopped vCPU 0 (exits: 1)\n"


def test_timeout_stops_a_guest_that_catches_everything(tmp_path, capsys):
    rc, _out, err = gqemu(capsys, "run", script(tmp_path, (
        "def guest(cpu):\n"
        "    for _ in range(3):\n"
        "        try:\n"
        "            while True:\n"
        "                pass\n"
        "        except BaseException:\n"
        "            pass\n"
        "    while True:\n"
        "        pass\n")), "--timeout", "0.2")
    assert rc == 124 and err.startswith("gqemu run: the run exceeded its --timeout of 0.2 s")


def test_timeout_stops_polling_and_sleeping_vcpus(tmp_path, capsys):
    rc, _out, err = gqemu(capsys, "run", script(tmp_path, (
        "import time\n"
        "def poll(cpu):\n"
        "    while True:\n"
        "        cpu.inb(0x1f7)\n"
        "        time.sleep(0.001)\n"
        "def wait(cpu):\n"
        "    cpu.outb(0x3f6, 0)\n"          # interrupts on: an IRQ could come
        "    cpu.hlt()\n"
        "guests = [poll, wait]\n")), "--timeout", "0.3", "--max-exits", "0")
    assert rc == 124
    assert err.startswith("gqemu run: the run exceeded its --timeout of 0.3 s: stopped vCPU 0, 1 ")


def test_a_run_within_its_timeout_is_unaffected(tmp_path, capsys):
    rc, out, err = gqemu(capsys, "run", ROOT / "scripts" / "examples" / "read_lba0.py",
                         "--timeout", "600")
    assert (rc, out, err) == (0, "LBA 0: '<LBA 0x00000000>'\n", "")


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "x"])
def test_bad_timeout(tmp_path, capsys, value):
    with pytest.raises(SystemExit) if value == "x" else _nothing():
        rc, _out, err = gqemu(capsys, "run", script(tmp_path, "def guest(cpu): pass\n"),
                              "--timeout", value)
        assert rc == 2 and err.count("\n") == 1 and "--timeout" in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("content, want", [
    (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not a Python script (binary data: "
                                                      "it contains null bytes)"),
    (b"# comment\nx = '\xff\xfe'\n", "g.py:2: not a Python script (not UTF-8 text: "
                                     "byte 0xff at offset 15)"),
    (b"def guest(cpu)\n    pass\n", "g.py:1:15: syntax error: expected ':'"),
    (b"def guest(cpu):\n  pass\n    x = 1\n", "g.py:3:4: syntax error: unexpected indent"),
    (b"raise KeyError\n", "g.py:1: the script failed while loading: an exception "
                          "without a message"),
])
def test_unloadable_script_is_one_line(tmp_path, capsys, content, want):
    p = tmp_path / "g.py"
    p.write_bytes(content)
    rc, out, err = gqemu(capsys, "run", p)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and want in err, err
    for bad in ("None", "Error:", "Error ", "Exception", "Traceback"):
        assert bad not in err.replace(str(p), "g.py"), err


def test_binary_file_exec_as_a_user_would(tmp_path):
    """The README's command form, on /bin/true: one line, status 2."""
    r = subprocess.run([sys.executable, "-m", "gqemu.cli.main", "run", "/bin/true"],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("gqemu run: /bin/true: not a Python script (binary data: it "
                        "contains null bytes)\n")


def test_timeout_leaves_a_recording_whole(tmp_path, capsys):
    """The interruption lands in guest code, never inside the recorder's RAM
    hook that runs on the guest's stack: the trace replays cleanly."""
    trace = tmp_path / "t.gqt"
    rc, _out, err = gqemu(capsys, "run", script(tmp_path, (
        "def guest(cpu):\n"
        "    i = 0\n"
        "    while True:\n"
        "        cpu.memory.write(0x1000, bytes([i & 255]) * 64)\n"
        "        i += 1\n")), "--timeout", "0.2", "--record", trace)
    assert rc == 124, err
    rc, out, err = gqemu(capsys, "replay", trace)
    assert rc == 0 and "no divergence" in out, out + err
