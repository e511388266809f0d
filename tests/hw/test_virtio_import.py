"""Real QEMU 7.2's virtio-blk recording replayed on gqemu's device
(tests/data/virtio: virtioblk.asm under qemu-system-x86_64 with
``-trace 'memory_region_ops_*'`` and guest RAM snapshots taken through the
gdbstub at each queue notify, re-recorded by record.py).

``gqemu import-qemu-trace --ram-snapshots guest-ram.txt.xz io-trace.log.xz``
turns every PCI configuration and BAR0 access of the program into a port
access and the rings, headers and write buffers into guest RAM stores; the
used ring, status bytes and read buffers QEMU produced become guest RAM
loads.  Every value QEMU's device returned must come back from gqemu's,
and the disk must end as QEMU left it.
"""
from __future__ import annotations

import filecmp
import lzma
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.replay.format import REC_IO, REC_MEMR, REC_MEMW, TraceWriter, open_trace

DATA = Path(__file__).resolve().parents[1] / "data" / "virtio"

sys.path.insert(0, str(DATA))
import record  # noqa: E402  (the recorder's disk layout)

sys.path.pop(0)

OPS = ("1@1.0:memory_region_ops_%s cpu 0 mr 0x55d0 addr 0x%x value 0x%x size %d "
       "name '%s'\n")


def unxz(src: Path, dst: Path) -> Path:
    with lzma.open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


@pytest.fixture
def imported(tmp_path, capsys):
    trace = tmp_path / "virtio.gqt"
    rc = main(["import-qemu-trace", "--ram-snapshots", str(DATA / "guest-ram.txt.xz"),
               str(DATA / "io-trace.log.xz"), "-o", str(trace)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "accesses before the program's start dropped" in err
    assert "mapped to" not in err           # ports are kept as traced: no BMDMA remapping
    return trace


def records(trace: Path) -> list:
    f, r = open_trace(str(trace))
    with f:
        return list(r)


def meta(trace: Path) -> dict:
    f, r = open_trace(str(trace))
    with f:
        return r.meta


def replay(trace: Path, tmp_path: Path, capsys) -> tuple[int, str, Path]:
    disk = tmp_path / "vdisk.img"
    record.make_disk(str(disk), b"")
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw,if=virtio" % disk])
    out, err = capsys.readouterr()
    return rc, out + err, disk


def test_recording_matches_the_first_run():
    """The replayable run (ioeventfd=off, gdbstub) is the same program run
    (record.py checked its status and disk against the first run's, and its
    debugcon bytes are the committed ones: test_rerecording_replays_too);
    the log has the program's PCI and BAR0 accesses, the snapshots a start
    and one store of the descriptor table per notify."""
    with lzma.open(DATA / "io-trace.log.xz", "rt") as f:
        log = f.read()
    assert "name 'pci-conf-idx'" in log and "addr 0xc010 value 0x0 size 2 name 'virtio-pci'" in log
    with lzma.open(DATA / "guest-ram.txt.xz", "rt") as f:
        kinds = [ln.split()[1] for ln in f if not ln.startswith("#")]
    assert kinds.count("start") == 1
    assert kinds.count("store") >= 2 * 14        # 14 notifies: table and avail ring each


def test_replay_matches_qemu(imported, tmp_path, capsys):
    recs = records(imported)
    kinds = [r[0] for r in recs]
    assert kinds.count(REC_MEMR) > 14 and kinds.count(REC_MEMW) > 28
    ports = {r[4] for r in recs if r[0] == REC_IO}
    assert {0xCF8, 0xCFC, 0xCFE, 0xC010, 0xC012, 0xC013} <= ports
    assert 0xE9 not in ports                     # debugcon: not modelled, skipped
    rc, out, disk = replay(imported, tmp_path, capsys)
    assert rc == 0, out
    assert "%s: %d records replayed, no divergence" % (imported, len(recs)) in out
    after = unxz(DATA / "vdisk-after.img.xz", tmp_path / "after.img")
    assert filecmp.cmp(disk, after, shallow=False)


def test_changed_device_behaviour_is_caught(imported, tmp_path, capsys, monkeypatch):
    """A device that answers an unknown request type with IOERR instead of
    UNSUPP: the status byte QEMU wrote (a guest RAM load) differs."""
    import gqemu.hw.virtio.virtio_blk as vb
    monkeypatch.setattr(vb, "VIRTIO_BLK_S_UNSUPP", vb.VIRTIO_BLK_S_IOERR)
    rc, out, _ = replay(imported, tmp_path, capsys)
    assert rc == 1
    assert "divergence at record" in out and "expected byte 0x13090 = 0x02" in out, out


@pytest.mark.parametrize("port, value, flip", [(0xC013, 0x01, 0x02), (0xC00C, 0x100, 0x180),
                                               (0xCFC, 0x10011AF4, 1)])
def test_changed_recorded_value_is_caught(imported, tmp_path, capsys, port, value, flip):
    """The ISR QEMU returned after a completion (now with the config bit),
    the queue size, the vendor/device id of the virtio function: changed in
    the recording, reported at that port.  (ISR 1 -> 0 would not be: a
    recorded 0 is a device that has not completed yet.)"""
    bad = tmp_path / "bad.gqt"
    f, reader = open_trace(str(imported))
    with f, open(bad, "wb") as out:
        w = TraceWriter(out, reader.meta)
        flipped = False
        for rec in reader:
            if not flipped and rec[0] == REC_IO and rec[4] == port and rec[5] == value:
                rec = rec[:5] + [value ^ flip]
                flipped = True
            w.write(rec)
        w.close()
    assert flipped
    rc, out, _ = replay(bad, tmp_path, capsys)
    assert rc == 1 and "port 0x%04x" % port in out, out


def test_without_snapshots_or_port_accesses(tmp_path, capsys):
    """QEMU's log alone: the accesses are there but not the rings (refused),
    or the virtio events without any access (the first recording: refused).
    One line each, status 2, no output file."""
    out = tmp_path / "o.gqt"
    for log, msg in ((DATA / "io-trace.log.xz", "no guest RAM snapshots"),
                     (DATA / "trace.log.xz", "virtio events alone cannot be replayed")):
        capsys.readouterr()
        assert main(["import-qemu-trace", str(log), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
        assert not out.exists()


def test_port_accesses_without_virtio_import_without_snapshots(tmp_path, capsys):
    """memory_region_ops lines: a region gqemu models is one access (the
    value cut to the access size, as the guest got it), others are skipped
    and named in the summary; the IDE events of the same accesses are not
    taken twice."""
    log = tmp_path / "t.log"
    log.write_text(OPS % ("write", 0xCF8, 0x80001000, 4, "pci-conf-idx")
                   + OPS % ("read", 0xCFE, 0xFFFFFFFF, 2, "pci-conf-data")
                   + OPS % ("write", 0xE9, 0x41, 1, "isa-debugcon")
                   + "1@1.0:ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x50; "
                     "bus 0x1 IDEState 0x2\n"
                   + OPS % ("read", 0x1F7, 0x50, 1, "ide")
                   + "1@1.0:pci_cfg_read virtio-blk 00:02.0 @0x0 -> 0x10011af4\n")
    out = tmp_path / "o.gqt"
    capsys.readouterr()
    assert main(["import-qemu-trace", str(log), "-o", str(out)]) == 0
    assert "1 accesses to regions gqemu does not model skipped (isa-debugcon)" in \
        capsys.readouterr().err
    assert [r[2:] for r in records(out)] == [[1, 4, 0xCF8, 0x80001000], [0, 2, 0xCFE, 0xFFFF],
                                             [0, 1, 0x1F7, 0x50]]
    assert "firmware" not in meta(out)


@pytest.mark.parametrize("lines, msg", [
    ([(OPS % ("read", 0xCFC, 0, 4, "pci-conf-data")).replace("size 4", "size four")],
     "line 1: garbled memory_region_ops_read line"),
    ([OPS % ("read", 0xCFC, 0, 8, "pci-conf-data")], "line 1: port access of 8 bytes"),
    ([OPS % ("write", 0xFFFF, 0, 2, "io")], "line 1: port 0xffff out of range"),
    (["1@1.0:ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x50; bus 0x1 IDEState 0x2\n",
      OPS % ("read", 0x1F7, 0x50, 1, "ide")], "line 2: memory_region_ops lines after IDE"),
    ([OPS % ("read", 0xCFC, 0, 4, "pci-conf-data"), "1@1.0:virtio_queue_notify vdev 0x1 n\n"],
     "line 2: garbled virtio_queue_notify line"),
])
def test_malformed_lines(tmp_path, capsys, lines, msg):
    log = tmp_path / "t.log"
    log.write_text("".join(lines))
    capsys.readouterr()
    assert main(["import-qemu-trace", str(log), "-o", str(tmp_path / "o.gqt")]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1, err


@pytest.mark.parametrize("snap, msg", [
    ("0 store 0x1000\n", "line 1: expected 'OFFSET start'"),
    ("5 start\n0 store 0x1000 00\n", "line 2: log offset 0 before the previous one"),
    ("0 check 0xfffff0 %s\n" % ("00" * 32), "line 1: 32 bytes at 0xfffff0: outside"),
    ("0 store 0x1000 0g\n", "line 1: bad address or hex data"),
    ("0 start\n0 start\n", "line 2: a second start"),
    ("10 store 0x1000 00\n", "inside this line"),
    ("100000 store 0x1000 00\n", "past the log's end"),
])
def test_malformed_snapshots(tmp_path, capsys, snap, msg):
    log = tmp_path / "t.log"
    log.write_text(OPS % ("read", 0xCFC, 0, 4, "pci-conf-data") * 2)
    snaps = tmp_path / "ram.txt"
    snaps.write_text("# comment\n" + snap if "line 1" not in msg and "line 2" not in msg
                     else snap)
    capsys.readouterr()
    rc = main(["import-qemu-trace", "--ram-snapshots", str(snaps), str(log),
               "-o", str(tmp_path / "o.gqt")])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1, err


def test_snapshots_are_placed_at_their_offset(tmp_path, capsys):
    """Accesses before 'start' are dropped; a store or check goes before
    the first access of the line at its offset; the header says SeaBIOS."""
    line = OPS % ("read", 0xCFC, 0x1234, 4, "pci-conf-data")
    n = len(line)
    log = tmp_path / "t.log"
    log.write_text(line * 3)
    snaps = tmp_path / "ram.txt"
    snaps.write_text("%d start\n%d store 0x2000 aabb\n%d check 0x3000 cc\n" % (n, 2 * n, 3 * n))
    out = tmp_path / "o.gqt"
    assert main(["import-qemu-trace", "-q", "--ram-snapshots", str(snaps), str(log),
                 "-o", str(out)]) == 0
    recs = records(out)
    assert [r[0] for r in recs] == [REC_IO, REC_MEMW, REC_IO, REC_MEMR]
    assert recs[1][2:] == [0x2000, b"\xaa\xbb"] and recs[3][2:] == [0x3000, b"\xcc"]
    assert meta(out)["firmware"] == "seabios"


def test_rerecording_replays_too(tmp_path, capsys, qemu_system, nasm):
    """record.py run again under the installed QEMU: its own io-trace and
    snapshots import and replay with 0 divergences to the same disk."""
    out = tmp_path / "rec"
    r = subprocess.run([sys.executable, str(DATA / "record.py"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # the replayable run's output (the first run's ISR read can race, README)
    con = out / "debugcon-replayable.bin"
    if not con.exists():
        con = out / "debugcon.bin"
    assert con.read_bytes() == (DATA / "debugcon.bin").read_bytes()
    trace = tmp_path / "re.gqt"
    assert main(["import-qemu-trace", "-q", "--ram-snapshots", str(out / "guest-ram.txt.xz"),
                 str(out / "io-trace.log.xz"), "-o", str(trace)]) == 0
    rc, text, disk = replay(trace, tmp_path, capsys)
    assert rc == 0, text
    after = unxz(DATA / "vdisk-after.img.xz", tmp_path / "after.img")
    assert filecmp.cmp(disk, after, shallow=False)


def test_isr_read_is_not_repeated_once_it_returned_something(tmp_path, capsys):
    """Reading virtio's ISR clears it: a recorded 0 where the device has
    ISR 1 is a divergence even while other I/O (an IDE read here) is
    pending -- reading again after that I/O would return the cleared 0."""
    ide, vd = tmp_path / "ide.img", tmp_path / "vd.img"
    record.make_disk(str(ide), b"")
    record.make_disk(str(vd), b"")
    out = lambda port, size, val: [REC_IO, 0, 1, size, port, val]  # noqa: E731
    desc = (struct.pack("<QIHH", 0x13000, 16, 1, 1) + struct.pack("<QIHH", 0x15000, 20, 3, 2)
            + struct.pack("<QIHH", 0x13010, 1, 2, 0))
    recs = [out(0x1F6, 1, 0xE0), out(0x1F2, 1, 1), out(0x1F3, 1, 0), out(0x1F4, 1, 0),
            out(0x1F5, 1, 0), out(0x1F7, 1, 0x20),                 # READ SECTORS: held
            out(0xC012, 1, 0), out(0xC012, 1, 3), out(0xC004, 4, 0), out(0xC00E, 2, 0),
            out(0xC008, 4, 0x10), out(0xC012, 1, 7),
            [REC_MEMW, 0, 0x10000, desc], [REC_MEMW, 0, 0x13000, struct.pack("<IIQ", 8, 0, 0)],
            [REC_MEMW, 0, 0x11000, struct.pack("<HHH", 0, 1, 0)],
            out(0xC010, 2, 0),                                      # GET_ID: completes now
            [REC_IO, 0, 0, 1, 0xC013, 0x00]]
    trace = tmp_path / "isr.gqt"
    with open(trace, "wb") as f:
        w = TraceWriter(f, {"machine": "pc", "drives": []})
        for r in recs:
            w.write(r)
        w.close()
    capsys.readouterr()
    assert main(["replay", str(trace), "--drive", "file=%s,format=raw" % ide,
                 "--drive", "file=%s,format=raw,if=virtio" % vd]) == 1
    out_text = capsys.readouterr().out
    assert "port 0xc013" in out_text and "actual   0x01" in out_text, out_text
