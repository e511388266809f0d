"""The probes of tests/data/kvm on /dev/kvm against their recordings under
real QEMU 7.2 + SeaBIOS (record.sh): the ATA probes (atacmds, atairq,
atalba, atadma: ataops.inc's interpreter running a list of register
operations; debugcon gets the task file, status, IRQ 14 line, BM status and
data sums after every step) and the INT 13h probes (int13x on 16 MiB, 1 GiB,
10 GiB and 195 GiB disks, int13p/int13q with partition tables that set the
geometry; debugcon gets the registers and CF after every call), and
irqbios (IRQ 14 through the 8259s and the handler SeaBIOS leaves) and
biossvc (INT 11h/12h/15h/16h/1Ah, INT 13h on drives that are no disk, the
BIOS data area: debugcon gets the registers and flags after every call)
and stage2 (a two-stage loader: big INT 13h loads, buffers across 64 KiB
and above 1 MiB, then 32-bit protected mode with rep insd/outsd and
bus-master DMA above 1 MiB) and int13v (INT 13h on a virtio-blk disk,
served by SeaBIOS's virtio driver, and int13x booted from one), int19
(INT 19h boots again: the registers a boot program starts with) and int18
(INT 18h never returns), ports (the i8042, port 0x92, the CMOS...) and
pcibios (INT 1Ah AH=B1), vwrap (65,546 virtio-blk requests: the ring
indexes wrap), apm (INT 15h AH=53, then an ACPI power off: status 0);
some
of them with the disk elsewhere (the primary slave, the secondary channel)
or with more disks, so SeaBIOS's probe and boot read differ.  Compared:
exit status, debugcon bytes, the disk's first 16 MiB afterwards and the
ide_* trace of the whole run (SeaBIOS's probe included, waits collapsed);
and the run's --record trace replays under the simulated loop with no
divergence and the same disk."""
from __future__ import annotations

import hashlib
import lzma
import re
from pathlib import Path

import pytest

from gqemu.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "kvm"
# (recording, program, disk MiB[, IDE indexes: the program's disk first,
# 2 MiB scratch disks at the others; "v": a virtio-blk one]): record.sh's
# NAME[:SIZE][@IDX+IDX...]
PROBES = [("atacmds", "atacmds", 16), ("atairq", "atairq", 16),
          ("atalba", "atalba", 16), ("atadma", "atadma", 16),
          ("int13x", "int13x", 16), ("int13x-1024m", "int13x", 1024),
          ("int13x-10240m", "int13x", 10240), ("int13p-1024m", "int13p", 1024),
          ("int13x-200000m", "int13x", 200000), ("int13q", "int13q", 16),
          ("irqbios", "irqbios", 16), ("atalba@1", "atalba", 16, (1,)),
          ("atacmds@0+1+2", "atacmds", 16, (0, 1, 2)), ("atairq@2", "atairq", 16, (2,)),
          ("int13x@0+2", "int13x", 16, (0, 2)), ("biossvc", "biossvc", 16),
          ("stage2", "stage2", 16), ("int13v@0+v", "int13v", 16, (0, "v")),
          ("int13x@v", "int13x", 16, ("v",)), ("int19", "int19", 16), ("int18", "int18", 16),
          ("ports", "ports", 16), ("ports-1024m@0+1", "ports", 1024, (0, 1)),
          ("pcibios@0+v", "pcibios", 16, (0, "v")), ("vwrap@0+v", "vwrap", 16, (0, "v")),
          ("apm", "apm", 16)]
# runs that never end (QEMU recorded them with TIMEOUT=20: status 124)
TIMEOUTS = {"int18": 3}
# the status and alternate-status ports, by channel
STATUS_PORTS = {0x1F7: 0, 0x3F6: 0, 0x177: 1, 0x376: 1}


def probe_disk(path: Path, name: str, size_mib: int = 16) -> None:
    """record.sh's disk: the 16 MiB self-describing disk, the program in
    sectors 0.. (sector 0 loads the rest with INT 13h), then sparse zeros
    up to ``size_mib``."""
    from gqemu.machine import make_scratch_disk
    prog = (DATA / (name + ".bin")).read_bytes()
    make_scratch_disk(str(path), mbr=prog[:512])
    with open(path, "r+b") as f:
        f.seek(512)
        f.write(prog[512:])
        f.truncate(max(f.seek(0, 2), size_mib << 20))


def head_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(16 << 20)).hexdigest()


def ide_accesses(lines):
    """The port accesses of an ide_* trace log (QEMU's or gqemu's), each wait
    -- a run of (alternate) status reads -- collapsed to its last read: how
    many polls a wait takes depends on the host."""
    from gqemu.replay.format import port_accesses
    from gqemu.replay.qemu_log import QemuLogImporter
    out: list[tuple] = []
    for rec in QemuLogImporter().records(lines):
        for a in port_accesses(rec):
            if (a[0] == 0 and a[2] in STATUS_PORTS and out and out[-1][0] == 0
                    and STATUS_PORTS.get(out[-1][2]) == STATUS_PORTS[a[2]]):
                out[-1] = a
            else:
                out.append(a)
    return out


_EVENT = re.compile(r"^(?:\d+@\d+\.\d+:)?(ide_exec_cmd|ide_sector_read|ide_sector_write|ide_reset) ")
_PTR = re.compile(r"0x[0-9a-f]{9,}")


def ide_events(lines):
    """The commands, sector transfers and resets of an ide_* trace log (the
    machine construction's resets included), pointers renamed by first
    appearance."""
    names: dict[str, str] = {}
    out = []
    for line in lines:
        m = _EVENT.match(line)
        if m:
            text = line[m.start(1):].rstrip("\n")
            out.append(_PTR.sub(lambda p: names.setdefault(p.group(0), "P%d" % len(names)), text))
    return out


@pytest.mark.usefixtures("kvm")
@pytest.mark.parametrize("probe", PROBES, ids=[p[0] for p in PROBES])
def test_probe_matches_qemu(probe, tmp_path):
    from gqemu.machine import make_scratch_disk
    name, prog, size = probe[:3]
    indexes = probe[3] if len(probe) > 3 else (0,)
    disk, pristine = tmp_path / "d.img", tmp_path / "pristine.img"
    probe_disk(disk, prog, size)
    vdisk = None
    if indexes[0] == "v":               # the program on a virtio-blk disk
        vdisk = disk
        drives = ["--drive", "file=%s,format=raw,if=virtio" % disk]
    else:
        drives = ["--drive", "file=%s,format=raw,if=ide,index=%d" % (disk, indexes[0])]
    for idx in indexes[1:]:
        extra = tmp_path / ("x%s.img" % idx)
        make_scratch_disk(str(extra), size_mib=2)
        if idx == "v":                  # record.sh's virtio-blk scratch disk
            vdisk = extra
            drives += ["--drive", "file=%s,format=raw,if=virtio" % extra]
        else:
            drives += ["--drive", "file=%s,format=raw,if=ide,index=%d" % (extra, idx)]
    replay = size == 16 and indexes in ((0,), ("v",))
    if replay:
        probe_disk(pristine, prog, size)
    con, log, rec = tmp_path / "con", tmp_path / "ide.log", tmp_path / "t.gqt"
    # --record hashes the whole image into the trace header: only the 16 MiB
    # one-disk runs are recorded and replayed (a 10 GiB one takes a minute)
    record = ["--record", str(rec)] if replay else []
    rc = main(["run", "--accel", "kvm"] + drives + [
               "--debugcon", str(con), "--timeout", str(TIMEOUTS.get(name, 60)),
               "--trace", "ide_*",
               "--trace-file", str(log)] + record)
    assert rc == int((DATA / (name + ".status")).read_text())
    assert con.read_bytes() == (DATA / (name + ".debugcon")).read_bytes()
    after = head_sha256(disk)
    assert after == (DATA / (name + ".disk.sha256")).read_text().strip()
    if vdisk is not None:
        assert head_sha256(vdisk) == (DATA / (name + ".vdisk.sha256")).read_text().strip()
    with open(log) as f:
        ours = ide_accesses(f)
    with lzma.open(DATA / (name + ".trace.log.xz"), "rt") as f:
        qemu = ide_accesses(f)
    # (no IDE disk: only SeaBIOS's probe of the empty channels; a one-sector
    # program: SeaBIOS's probe and boot read)
    assert len(ours) > (20 if vdisk is disk else 500 if prog in ("int18", "ports", "pcibios", "vwrap", "apm") else 1000)
    assert ours == qemu
    with open(log) as f:
        ours_ev = ide_events(f)
    with lzma.open(DATA / (name + ".trace.log.xz"), "rt") as f:
        qemu_ev = ide_events(f)
    assert len(qemu_ev) > (10 if vdisk is not disk else 4)
    assert ours_ev == qemu_ev
    if not record:
        return
    # the recording (guest RAM from KVM's dirty log included) replays
    where = "if=virtio" if indexes[0] == "v" else "if=ide,index=%d" % indexes[0]
    assert main(["replay", str(rec), "--drive",
                 "file=%s,format=raw,%s" % (pristine, where)]) == 0
    assert head_sha256(pristine) == after
