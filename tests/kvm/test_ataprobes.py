"""The ATA probes of tests/data/kvm (atacmds, atairq, atalba, atadma: ataops.inc's
interpreter running a list of register operations) on /dev/kvm against
their recordings under real QEMU 7.2 + SeaBIOS (record.sh): exit status,
debugcon bytes (task file, status, IRQ 14 line, BM status and data sums
after every step), the disk afterwards and the ide_* trace of the whole run
(SeaBIOS's probe included, waits collapsed); and the run's --record trace
replays under the simulated loop with no divergence and the same disk."""
from __future__ import annotations

import hashlib
import lzma
import shutil
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "kvm"
PROBES = ["atacmds", "atairq", "atalba", "atadma"]
STATUS_PORTS = (0x1F7, 0x3F6, 0x177, 0x376)


def probe_disk(path: Path, name: str) -> None:
    """record.sh's disk: the 16 MiB self-describing disk, the program in
    sectors 0.. (sector 0 loads the rest with INT 13h)."""
    from gqemu.machine import make_scratch_disk
    prog = (DATA / (name + ".bin")).read_bytes()
    make_scratch_disk(str(path), mbr=prog[:512])
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(prog[512:])


def ide_accesses(lines):
    """The port accesses of an ide_* trace log (QEMU's or gqemu's), each wait
    -- a run of (alternate) status reads -- collapsed to its last read: how
    many polls a wait takes depends on the host."""
    from gqemu.replay.format import REC_IO, REC_IOS
    from gqemu.replay.qemu_log import QemuLogImporter
    out: list[tuple] = []
    for rec in QemuLogImporter().records(lines):
        if rec[0] == REC_IO:
            acc = [(rec[2], rec[3], rec[4], rec[5])]
        elif rec[0] == REC_IOS:
            _k, _c, d, size, port, count, data = rec
            acc = [(d, size, port, int.from_bytes(data[i:i + size], "little"))
                   for i in range(0, size * count, size)]
        else:
            continue
        for a in acc:
            if (a[0] == 0 and a[2] in STATUS_PORTS and out and out[-1][0] == 0
                    and out[-1][2] in STATUS_PORTS and (out[-1][2] & 0xFF80) == (a[2] & 0xFF80)):
                out[-1] = a
            else:
                out.append(a)
    return out


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("name", PROBES)
def test_ata_probe_matches_qemu(name, tmp_path):
    disk, pristine = tmp_path / "d.img", tmp_path / "pristine.img"
    probe_disk(disk, name)
    shutil.copyfile(disk, pristine)
    con, log, rec = tmp_path / "con", tmp_path / "ide.log", tmp_path / "t.gqt"
    rc = main(["run", "--accel", "kvm", "--drive", "file=%s,format=raw" % disk,
               "--debugcon", str(con), "--timeout", "60", "--record", str(rec),
               "--trace", "ide_*", "--trace-file", str(log)])
    assert rc == int((DATA / (name + ".status")).read_text())
    assert con.read_bytes() == (DATA / (name + ".debugcon")).read_bytes()
    after = hashlib.sha256(disk.read_bytes()).hexdigest()
    assert after == (DATA / (name + ".disk.sha256")).read_text().strip()
    with open(log) as f:
        ours = ide_accesses(f)
    with lzma.open(DATA / (name + ".trace.log.xz"), "rt") as f:
        qemu = ide_accesses(f)
    assert len(ours) > 1000
    assert ours == qemu
    # the recording (guest RAM from KVM's dirty log included) replays
    assert main(["replay", str(rec), "--drive", "file=%s,format=raw" % pristine]) == 0
    assert hashlib.sha256(pristine.read_bytes()).hexdigest() == after
