"""``gqemu run``: exit statuses, guest tracebacks, one-line errors, tracing
from every layer, recording that survives being killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.machine import make_scratch_disk

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "scripts" / "examples"


def gqemu(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def script(tmp_path, body, name="g.py"):
    p = tmp_path / name
    p.write_text(body)
    return p


def test_seed_scenario(capsys):
    rc, out, err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py")
    assert rc == 0, err
    assert out == "LBA 0: '<LBA 0x00000000>'\n"
    assert err == ""


def test_every_example_has_a_one_line_description():
    for p in EXAMPLES.glob("*.py"):
        first = p.read_text().splitlines()[0]
        assert first.startswith('"""') and first.endswith('"""') and len(first) > 20, p


def test_guest_exception_exits_1_with_a_short_guest_traceback(tmp_path, capsys):
    s = script(tmp_path, (
        "from gqemu.guest.ata import ATA\n"
        "def guest(cpu):\n"
        "    ata = ATA(cpu)\n"
        "    ata.read_sectors(1 << 20, 1)   # beyond the end: ABRT\n"))
    rc, _out, err = gqemu(capsys, "run", s)
    assert rc == 1
    assert "the guest on vCPU 0 raised an exception" in err
    assert 'g.py", line 4, in guest' in err
    assert "gqemu/guest/ata.py" in err
    assert err.rstrip().splitlines()[-1].startswith("gqemu.guest.ata.AtaError: READ SECTORS: "
                                                    "status 0x41 error 0x04")
    for internal in ("gqemu/kvm", "gqemu/hw", "greenlet", "gevent"):
        assert internal not in err


@pytest.mark.parametrize("body, msg", [
    ("def guest(cpu)\n    pass\n", "g.py:1:15: syntax error: expected ':'"),
    ("x = 1\n", "defines neither guest(cpu) nor guests"),
    ("import no_such_module_here\n", "g.py:1: the script failed while loading: "
                                      "No module named 'no_such_module_here'"),
    ("guests = []\n", "guests must be a non-empty list"),
    ("SCRATCH_DRIVES = [7]\ndef guest(cpu): pass\n", "SCRATCH_DRIVES"),
])
def test_broken_script_is_one_line_exit_2(tmp_path, capsys, body, msg):
    rc, out, err = gqemu(capsys, "run", script(tmp_path, body))
    assert rc == 2
    assert err.count("\n") == 1 and msg in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("spec, msg", [
    ("file=/nonexistent/disk.img,format=raw", "/nonexistent/disk.img"),
    ("file=%(disk)s,if=scsi", "if=scsi is not supported"),
    ("file=%(disk)s,cache=sometimes", "invalid cache option"),
    ("file=%(disk)s,index=9", "index=9 out of range"),
    ("format=raw", "a file= is required"),
    ("file=%(disk)s,format=vmdk", "vmdk"),
])
def test_bad_drive_is_one_line_exit_2(tmp_path, capsys, spec, msg):
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk))
    rc, _out, err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py", "--drive",
                          spec % {"disk": disk})
    assert rc == 2
    assert err.count("\n") == 1 and msg in err, err


def test_duplicate_drive_index(tmp_path, capsys):
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk))
    rc, _out, err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py",
                          "--drive", "file=%s,index=0" % disk, "--drive", "file=%s,index=0" % disk)
    assert rc == 2 and "exists" in err


def test_missing_script(capsys):
    rc, _out, err = gqemu(capsys, "run", "/nonexistent/script.py")
    assert rc == 2 and err.count("\n") == 1


def test_hung_guest_exits_1(tmp_path, capsys):
    s = script(tmp_path, "def guest(cpu):\n    cpu.hlt()\n")
    rc, _out, err = gqemu(capsys, "run", s)
    assert rc == 1 and "guest hung" in err


def test_max_exits(tmp_path, capsys):
    s = script(tmp_path, "def guest(cpu):\n    while True:\n        cpu.inb(0x1f7)\n")
    rc, _out, err = gqemu(capsys, "run", s, "--max-exits", "500")
    assert rc == 124 and err == ("gqemu run: the run exceeded its --max-exits of 500 exits: "
                         "stopped vCPU 0 (exits: 501)\n")


LAYER_EVENTS = ["kvm_run_exit", "ide_ioport_write", "ide_exec_cmd", "ide_sector_read",
                "blk_co_preadv", "bdrv_co_preadv", "paio_submit_co", "thread_pool_submit",
                "handle_aiocb_rw", "ide_data_readw"]


def test_trace_log_has_every_layer(tmp_path, capsys):
    log = tmp_path / "t.log"
    rc, _out, err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py", "--trace", "*",
                          "--trace-file", log)
    assert rc == 0, err
    lines = log.read_text().splitlines()
    names = {line.split(" ", 1)[0] for line in lines}
    for ev in LAYER_EVENTS:
        assert ev in names, ev
    # QEMU 7.2's format for the command write of the seed's request
    assert any(line.startswith("ide_ioport_write IDE PIO wr @ 0x1f7 (Command); val 0x20; bus 0x")
               for line in lines)
    # the guest's READ SECTORS goes down the layers in order (the machine's
    # own MBR read for the geometry guess comes before any guest exit)
    order = [n for n in (line.split(" ", 1)[0] for line in lines) if n in LAYER_EVENTS]
    order = order[order.index("ide_exec_cmd"):]
    first = {n: order.index(n) for n in LAYER_EVENTS if n in order}
    assert first["ide_exec_cmd"] < first["ide_sector_read"] < first["blk_co_preadv"] \
        < first["bdrv_co_preadv"] < first["paio_submit_co"] < first["thread_pool_submit"] \
        < first["ide_data_readw"]


def test_trace_patterns_select(tmp_path, capsys):
    log = tmp_path / "t.log"
    rc, _out, _err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py", "--trace", "ide_*",
                           "--trace=-ide_data_*", "--trace-file", log,
                           "--trace-timestamps")
    assert rc == 0
    lines = log.read_text().splitlines()
    assert lines and all(":ide_" in line.split(" ", 1)[0] for line in lines)
    assert not any("ide_data_readw" in line for line in lines)
    assert all(line.split(":", 1)[0].count("@") == 1 for line in lines)


def test_trace_json_for_perfetto(tmp_path, capsys):
    out = tmp_path / "t.json"
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / "read_lba0.py", "--trace", "*",
                        "--trace-format", "json", "--trace-file", out)
    assert rc == 0, err
    events = json.loads(out.read_text())
    names = {e["name"] for e in events}
    for ev in LAYER_EVENTS:
        assert ev in names
    # separate tracks: the vCPU, a coroutine, a worker thread
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert any(t.startswith("worker") for t in tracks), tracks
    assert "vCPU 0" in tracks


def test_trace_does_not_change_the_result(tmp_path, capsys):
    rc, out, _err = gqemu(capsys, "run", EXAMPLES / "dma.py", "--trace", "*",
                          "--trace-file", tmp_path / "t.log")
    assert rc == 0 and "READ DMA lba 16 x8: sectors say [16" in out


def _cli(*args):
    return [sys.executable, "-c", "import sys; from gqemu.cli.main import main; "
            "sys.exit(main())", *map(str, args)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_recording_leaves_a_readable_prefix(tmp_path, sig):
    s = script(tmp_path, (
        "import sys\n"
        "from gqemu.guest.ata import ATA\n"
        "def guest(cpu):\n"
        "    ata = ATA(cpu)\n"
        "    n = 0\n"
        "    while True:\n"
        "        ata.read_sectors(0, 1)\n"
        "        n += 1\n"
        "        if n == 300:\n"
        "            print('recorded 300 reads', flush=True)\n"))
    trace = tmp_path / "t.gqt"
    p = subprocess.Popen(_cli("run", s, "--record", trace), cwd=str(ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()          # blocks until the guest got that far
        assert line == "recorded 300 reads\n", p.stderr.read()
    finally:
        p.send_signal(sig)
        p.wait(timeout=30)
    assert trace.stat().st_size > 20_000
    r = subprocess.run(_cli("replay", trace), cwd=str(ROOT), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1
    assert "truncated record at byte" in r.stderr or "without an end record" in r.stderr
    assert os.path.basename(str(trace)) in r.stderr


def test_vcpu_blocking_in_the_loop_does_not_hang(tmp_path, capsys):
    """Clearing BMDMA START while a transfer is in flight makes the vCPU
    wait for it inside the loop (QEMU drains): the run and its replay end."""
    s = script(tmp_path, (
        "from gqemu.guest.ata import ATA, PRD_TABLE, DMA_BUFFER\n"
        "def guest(cpu):\n"
        "    ata = ATA(cpu)\n"
        "    cpu.memory.write(PRD_TABLE, DMA_BUFFER.to_bytes(4, 'little')\n"
        "                     + (0x8000).to_bytes(2, 'little') + (0x8000).to_bytes(2, 'little'))\n"
        "    cpu.outl(ata.bm + 4, PRD_TABLE)\n"
        "    ata.command(0xC8, 0, 64)\n"
        "    cpu.outb(ata.bm, 0x09)\n"
        "    cpu.outb(ata.bm, 0x00)\n"
        "    ata.read_sectors(5, 1)\n"))
    trace = tmp_path / "t.gqt"
    rc, _o, err = gqemu(capsys, "run", s, "--record", trace)
    assert rc == 0, err
    rc, out, err = gqemu(capsys, "replay", trace)
    assert rc == 0, out + err
