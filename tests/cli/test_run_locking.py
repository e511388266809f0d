"""``gqemu run`` drives lock their images as QEMU's ``-drive if=ide`` does:
real qemu-io cannot write an image a running ``gqemu run`` uses, ``gqemu
run`` refuses an image qemu-io holds for writing, and ``share-rw`` /
``readonly`` on ``-drive`` fail with QEMU 7.2's messages (recorded from
``qemu-system-x86_64 -drive file=IMG,if=ide,format=raw,...``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.machine import make_scratch_disk

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

# Waits (bounded) until the test creates the file GO, polling the status
# port so the run is a live VM the whole time.
HOLD = '''
import os, time
GO = %r
def guest(cpu):
    print("ready", flush=True)
    for _ in range(6000):
        if os.path.exists(GO):
            return
        cpu.inb(0x1f7)
        time.sleep(0.01)
    raise SystemExit("the test never released the guest")
'''


def _gqemu_run(tmp_path: Path, spec: str) -> subprocess.Popen:
    go = tmp_path / "go"
    s = tmp_path / "hold.py"
    s.write_text(HOLD % str(go))
    p = subprocess.Popen([sys.executable, "-m", "gqemu.cli.main", "run", str(s), "--drive", spec],
                         cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()      # type: ignore[union-attr]
    if line != "ready\n":
        p.kill()
        pytest.fail("gqemu run did not start: %r %s" % (line, p.communicate()[1]))
    return p


def _release(tmp_path: Path, p: subprocess.Popen) -> None:
    (tmp_path / "go").touch()
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err


@pytest.fixture
def img(tmp_path):
    path = tmp_path / "d.img"
    make_scratch_disk(str(path), size_mib=1)
    return path


def test_qemu_io_cannot_write_an_image_gqemu_run_uses(tmp_path, img, qemu_io):
    before = img.read_bytes()
    p = _gqemu_run(tmp_path, "file=%s,format=raw,if=ide,index=0" % img)
    try:
        r = subprocess.run([qemu_io, "-f", "raw", "-c", "write -P 0x5a 0 512", str(img)],
                           cwd=str(img.parent), capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        assert r.stderr == ('qemu-io: can\'t open device %s: Failed to get "write" lock\n'
                            "Is another process using the image [%s]?\n" % (img, img))
        # a reader is fine: the device shares "consistent read"
        r = subprocess.run([qemu_io, "-f", "raw", "-r", "-c", "read 0 512", str(img)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "read 512/512 bytes" in r.stdout, r.stdout + r.stderr
    finally:
        _release(tmp_path, p)
    assert img.read_bytes() == before
    # and once the run has ended, the image is free again
    r = subprocess.run([qemu_io, "-f", "raw", "-c", "write -P 0x5a 0 512", str(img)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_default_drive_index_and_no_if_still_lock(tmp_path, img, qemu_io):
    p = _gqemu_run(tmp_path, "file=%s,format=raw" % img)      # if=ide is the default
    try:
        r = subprocess.run([qemu_io, "-f", "raw", "-c", "write 0 512", str(img)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and 'Failed to get "write" lock' in r.stderr
    finally:
        _release(tmp_path, p)


def test_gqemu_run_refuses_an_image_qemu_io_writes(tmp_path, img, qemu_io, capsys):
    h = subprocess.Popen([qemu_io, "-f", "raw", str(img)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        h.stdin.write("read 0 512\n")       # type: ignore[union-attr]
        h.stdin.flush()                     # type: ignore[union-attr]
        assert "read 512/512" in h.stdout.readline()     # type: ignore[union-attr]
        s = tmp_path / "g.py"
        s.write_text("def guest(cpu):\n    print('ran')\n")
        capsys.readouterr()
        rc = main(["run", str(s), "--drive", "file=%s,format=raw,if=ide" % img])
        out, err = capsys.readouterr()
        assert rc == 2 and out == ""
        # QEMU 7.2: 'Failed to get shared "write" lock' + its hint, on one line here
        assert err == ('gqemu run: Failed to get shared "write" lock (is another process '
                       "using the image [%s]?)\n" % img)
    finally:
        h.stdin.close()                     # type: ignore[union-attr]
        h.wait(timeout=30)


def test_qemu_io_reader_does_not_block_gqemu_run(tmp_path, img, qemu_io, capsys):
    h = subprocess.Popen([qemu_io, "-f", "raw", "-r", str(img)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        h.stdin.write("read 0 512\n")       # type: ignore[union-attr]
        h.stdin.flush()                     # type: ignore[union-attr]
        assert "read 512/512" in h.stdout.readline()     # type: ignore[union-attr]
        s = tmp_path / "g.py"
        s.write_text("def guest(cpu):\n    print('ran')\n")
        capsys.readouterr()
        rc = main(["run", str(s), "--drive", "file=%s,format=raw,if=ide" % img])
        out, err = capsys.readouterr()
        assert (rc, out, err) == (0, "ran\n", "")
    finally:
        h.stdin.close()                     # type: ignore[union-attr]
        h.wait(timeout=30)


def test_two_drives_on_one_image_conflict(img, capsys):
    capsys.readouterr()
    rc = main(["run", str(ROOT / "scripts" / "examples" / "read_lba0.py"),
               "--drive", "file=%s,format=raw,index=0" % img,
               "--drive", "file=%s,format=raw,index=1" % img])
    _out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1
    assert 'Failed to get "write" lock' in err


@pytest.mark.parametrize("opt, msg", [
    # qemu-system-x86_64 7.2: share-rw is a -device property, unknown to -drive
    ("share-rw=on", "-drive file=%(img)s,format=raw,if=ide,share-rw=on: Block format 'raw' "
                    "does not support the option 'share-rw'"),
    ("share-rw=off", "-drive file=%(img)s,format=raw,if=ide,share-rw=off: Block format "
                     "'raw' does not support the option 'share-rw'"),
    # an ide-hd needs "write": QEMU 7.2 refuses a read-only node
    ("readonly=on", "Block node is read-only"),
])
def test_share_rw_and_readonly_on_drive_as_qemu(img, capsys, opt, msg):
    capsys.readouterr()
    rc = main(["run", str(ROOT / "scripts" / "examples" / "read_lba0.py"),
               "--drive", "file=%s,format=raw,if=ide,%s" % (img, opt)])
    _out, err = capsys.readouterr()
    assert rc == 2 and err == "gqemu run: %s\n" % (msg % {"img": img})
