"""The BMDMA edge cases replayed against real QEMU 7.2's recording
(tests/data/bmdma: bmdma.asm booted under qemu-system-x86_64, re-recorded
by record.py).

``gqemu import-qemu-trace --ram bmdma.bin@0x7c00`` turns QEMU's log into a
trace that carries the program image, so the guest's own PRD tables are
walked (long, short, size 0, odd, two entries, LBA48, a table moved while
the engine runs, a count left over for an EXT command and for INITIALIZE
DEVICE PARAMETERS, then a CHS READ DMA with that geometry).  Every BM-status
and ATA-register read must return what QEMU returned, the read buffers must
hold what the program sent to debugcon from QEMU's RAM (appended as guest
RAM loads), and the disk must end as QEMU left it.
"""
from __future__ import annotations

import filecmp
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.replay.format import REC_IO, REC_MEMR, TraceWriter, open_trace

DATA = Path(__file__).resolve().parents[1] / "data" / "bmdma"
REPORT = 8 + 1024           # per case: number, BM status, 0x1F1..0x1F5, 0x1F7, buffer
# BM status after each case, as the table in bmdma.asm describes them
BM_STATUS = [0x05, 0x05, 0x00, 0x00, 0x05, 0x05, 0x04, 0x04, 0x04, 0x04,
             0x04, 0x05, 0x04, 0x05, 0x00, 0x04, 0x00, 0x00, 0x04, 0x04, 0x04]


def unxz(src: Path, dst: Path) -> Path:
    with lzma.open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


def reports() -> list[bytes]:
    d = (DATA / "debugcon.bin").read_bytes()
    assert len(d) % REPORT == 0
    return [d[i:i + REPORT] for i in range(0, len(d), REPORT)]


def buffer_addr(case: int) -> int:
    return 0x10000 + (case & 15) * 0x1000 + (case >> 4) * 0x400


def test_recording_is_what_the_program_describes():
    """The recording itself (QEMU's answers, not ours): it finished, and the
    BM status of every case is the one bmdma.asm documents."""
    assert (DATA / "exitcode.txt").read_text().split() == ["33"]
    got = reports()
    assert [r[0] for r in got] == list(range(len(BM_STATUS)))
    assert [r[1] for r in got] == BM_STATUS
    assert all(r[7] == 0x50 for r in got)


@pytest.fixture
def imported(tmp_path, capsys):
    trace = tmp_path / "bmdma.gqt"
    rc = main(["import-qemu-trace", "-q", "--ram", "%s@0x7c00" % (DATA / "bmdma.bin"),
               str(DATA / "trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    return trace


def with_buffer_checks(src: Path, dst: Path) -> int:
    """Copy the trace and append one guest-RAM load per case: the buffer
    as QEMU's program sent it to debugcon."""
    f, reader = open_trace(str(src))
    with f, open(dst, "wb") as out:
        w = TraceWriter(out, reader.meta)
        for rec in reader:
            w.write(rec)
        for r in reports():
            w.write([REC_MEMR, 0, buffer_addr(r[0]), r[8:]])
        w.close()
        return w.count


def test_replay_matches_qemu(imported, tmp_path, capsys):
    trace = tmp_path / "checked.gqt"
    n = with_buffer_checks(imported, trace)
    disk = unxz(DATA / "disk-pristine.img.xz", tmp_path / "disk.img")
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw" % disk])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert out == "%s: %d records replayed, no divergence\n" % (trace, n)
    after = unxz(DATA / "disk-after.img.xz", tmp_path / "after.img")
    assert filecmp.cmp(disk, after, shallow=False)


def test_replay_can_fail(imported, tmp_path, capsys):
    """A changed BM status in the recording is reported as a divergence."""
    f, reader = open_trace(str(imported))
    bad = tmp_path / "bad.gqt"
    with f, open(bad, "wb") as out:
        w = TraceWriter(out, reader.meta)
        flipped = False
        for rec in reader:
            if not flipped and rec[0] == REC_IO and rec[4] == 0xC002 and rec[5] == 0x05:
                rec = rec[:5] + [0x04]
                flipped = True
            w.write(rec)
        w.close()
    assert flipped
    disk = unxz(DATA / "disk-pristine.img.xz", tmp_path / "disk.img")
    capsys.readouterr()
    assert main(["replay", str(bad), "--drive", "file=%s,format=raw" % disk]) == 1
    assert "port 0xc002" in capsys.readouterr().out


def test_ram_option(tmp_path, capsys):
    """``--ram FILE@ADDR``: stored first, in records of at most 64 KiB, and
    no PRD table is synthesized; a bad spec is one line and status 2."""
    log = tmp_path / "t.log"
    log.write_text("1@1.0:bmdma_addr_write data: 0x0000000000001000\n"
                   "1@1.0:ide_ioport_write IDE PIO wr @ 0x1f2 (Sector Count); val 0x01; "
                   "bus 0x1 IDEState 0x2\n"
                   "1@1.0:ide_ioport_write IDE PIO wr @ 0x1f7 (Command); val 0xc8; "
                   "bus 0x1 IDEState 0x2\n"
                   "1@1.0:bmdma_write bmdma: writeb 0x0 : 0x09\n")
    img = tmp_path / "img.bin"
    img.write_bytes(bytes(range(256)) * 400)             # 100 KiB
    out = tmp_path / "o.gqt"
    assert main(["import-qemu-trace", "-q", "--ram", "%s@0x8000" % img, str(log),
                 "-o", str(out)]) == 0
    f, r = open_trace(str(out))
    with f:
        recs = list(r)
    assert [(x[0], x[2], len(x[3])) for x in recs[:2]] == [
        (8, 0x8000, 65536), (8, 0x18000, 102400 - 65536)]
    assert recs[0][3] + recs[1][3] == img.read_bytes()
    assert [x[0] for x in recs[2:]] == [REC_IO] * 4          # no synthesized table
    for spec, msg in (("nofile", "expected FILE@ADDR"), ("%s@zz" % img, "bad address"),
                      ("%s/none@0" % tmp_path, "No such file"),
                      ("%s@0xfff000" % img, "outside the")):
        capsys.readouterr()
        assert main(["import-qemu-trace", "--ram", spec, str(log), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_rerecording_gives_the_same_results(tmp_path, qemu_system, nasm):
    """record.py run again under the installed QEMU: the same binary, the
    same debugcon results and the same disk (only the number of status
    polls in the log depends on the host)."""
    out = tmp_path / "rec"
    r = subprocess.run([sys.executable, str(DATA / "record.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("bmdma.bin", "debugcon.bin", "exitcode.txt"):
        assert (out / name).read_bytes() == (DATA / name).read_bytes(), name
    a = unxz(out / "disk-after.img.xz", tmp_path / "a.img")
    b = unxz(DATA / "disk-after.img.xz", tmp_path / "b.img")
    assert filecmp.cmp(a, b, shallow=False)
