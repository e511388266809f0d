"""``gqemu run`` of refdata's boot-sector program against what real QEMU 7.2
recorded: the registers after every command (verify-raw.txt), the disk
afterwards (disk-after.img), and the port trace of the program part of
exits-raw.jsonl once each wait for BSY to clear is collapsed to its final
status (refdata/README: how many polls a wait takes depends on the host)."""
from __future__ import annotations

import filecmp
import json
import lzma
import re
import shutil
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.replay.format import REC_IO, REC_IOS, open_trace, port_accesses

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "scripts" / "examples" / "ataprobe.py"
IDE_PORTS = set(range(0x1F0, 0x1F8)) | {0x3F6}


def unxz(src: Path, dst: Path) -> Path:
    with lzma.open(src, "rb") as f, open(dst, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return dst


def collapse(accesses):
    """Each wait (an alternate-status read or a status read, then a run of
    status reads) -> the run's last value: how many polls it took, and
    whether the first read still saw BSY, depends on the host's speed."""
    out = []
    for a in accesses:
        if (a["dir"] == "in" and a["port"] == 0x1F7 and out and out[-1]["dir"] == "in"
                and (out[-1]["port"] in (0x3F6, 0x1F7) or out[-1].get("wait"))):
            out[-1] = dict(a, wait=True)
        else:
            out.append(a)
    return [{k: v for k, v in a.items() if k != "wait"} for a in out]


def test_ataprobe_matches_qemu(refdata, tmp_path, capsys):
    out = refdata / "mbr" / "out"
    disk = unxz(out / "disk-pristine.img.xz", tmp_path / "disk.img")
    trace = tmp_path / "probe.gqt"
    capsys.readouterr()
    rc = main(["run", str(PROBE), "--drive", "file=%s,format=raw" % disk, "--record", str(trace)])
    printed, err = capsys.readouterr()
    assert rc == 0, err

    # 1. the registers after each command, as verify-raw.txt lists them
    verify = (out / "verify-raw.txt").read_text().splitlines()
    rows = [v.split("|") for v in verify if re.match(r"[0-9a-f]{2} [A-Z(]", v)]
    want = [r[1].split() for r in rows]
    got = [line.split(":")[1].split()[:7] for line in printed.splitlines()
           if line.startswith("cmd ")]
    assert len(want) == 15 and got == want
    hob_want = [r[2].split() for r in rows if r[2].strip() != "-"]
    hob_got = [line.split(":")[1].split()[:5] for line in printed.splitlines()
               if line.strip().startswith("HOB:")]
    assert hob_got == hob_want
    srst = next(v for v in verify if v.startswith("after SRST"))
    assert printed.split("SRST:")[1].split()[:7] == srst.split("=")[1].split()

    check_disk_and_trace(out, disk, trace, tmp_path)


def check_disk_and_trace(out: Path, disk: Path, trace: Path, tmp_path: Path,
                         from_power_on: bool = False) -> None:
    """The disk after the run equals QEMU's, and the recorded IDE accesses of
    the program part (``from_power_on``: of the whole run, SeaBIOS's probe
    included) equal exits-raw.jsonl's with the waits collapsed."""
    # the disk afterwards
    after = unxz(out / "disk-after.img.xz", tmp_path / "after.img")
    assert filecmp.cmp(disk, after, shallow=False)

    # the port trace of the program part
    with lzma.open(out / "exits-raw.jsonl.xz", "rt") as f:
        qemu = [json.loads(line) for line in f]
    start = next(i for i, a in enumerate(qemu)
                 if a == {"dir": "out", "port": 0x3F6, "size": 1, "value": 2})
    assert start == 624                                  # refdata/README
    ours = []
    f, r = open_trace(str(trace))
    with f:
        for rec in r:
            if rec[0] == REC_IO and rec[4] in IDE_PORTS:
                if rec[4] == 0x1F0 and rec[2] == 0:
                    continue        # the stray inw with DRQ=0: QEMU does not trace it
                ours.append({"dir": "in" if rec[2] == 0 else "out", "port": rec[4],
                             "size": rec[3], "value": rec[5]})
            elif rec[0] == REC_IOS:
                ours.extend({"dir": "in" if d == 0 else "out", "port": port, "size": size,
                             "value": value} for d, size, port, value in port_accesses(rec))
    if from_power_on:       # the primary channel's accesses, SeaBIOS's included
        a = collapse([x for x in qemu if x["port"] in IDE_PORTS])
    else:
        a = collapse(qemu[start:])
    b = collapse(ours)
    assert len(a) == len(b)
    # after SRST the two alternate-status reads are 0x50 or 0xD0 (timing)
    srst = next(i for i, x in enumerate(a) if x["port"] == 0x3F6 and x["dir"] == "out"
                and x["value"] == 6)
    for i in (srst + 1, srst + 2):
        assert a[i]["value"] in (0x50, 0xD0) and b[i]["value"] in (0x50, 0xD0)
        a[i] = b[i] = None
    assert a == b


def test_scratch_disk_is_refdata_mkdisk(refdata, tmp_path):
    """gqemu's scratch-disk generator makes exactly refdata's pristine disk
    (mkdisk.py --mbr ataprobe.bin)."""
    from gqemu.machine import make_scratch_disk
    mine = tmp_path / "mine.img"
    make_scratch_disk(str(mine), mbr=(refdata / "mbr" / "ataprobe.bin").read_bytes())
    pristine = unxz(refdata / "mbr" / "out" / "disk-pristine.img.xz", tmp_path / "p.img")
    assert filecmp.cmp(mine, pristine, shallow=False)


# ------------------------------------------------- the real program on /dev/kvm

needs_kvm = pytest.mark.usefixtures("kvm")     # skips locally, fails under CI


@needs_kvm
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_ataprobe_on_kvm_matches_qemu(refdata, tmp_path, capsys, fmt, qemu_img):
    """The boot sector itself (not the Python port) on /dev/kvm: QEMU's exit
    status, debugcon bytes, disk afterwards and IDE port trace."""
    import subprocess
    out = refdata / "mbr" / "out"
    disk = unxz(out / "disk-pristine.img.xz", tmp_path / "disk.img")
    image = disk
    if fmt == "qcow2":
        image = tmp_path / "disk.qcow2"
        subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(disk),
                        str(image)], check=True)
    trace = tmp_path / "probe.gqt"
    con = tmp_path / "debugcon.out"
    rc = main(["run", "--accel", "kvm", "--drive",
               "file=%s,format=%s,if=ide,index=0" % (image, fmt),
               "--debugcon", str(con), "--record", str(trace)])
    assert rc == int((out / "exitcode-raw.txt").read_text())
    assert con.read_bytes() == (out / "debugcon-raw.log").read_bytes()
    if fmt == "qcow2":
        subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(image),
                        str(disk)], check=True)
        assert subprocess.run([qemu_img, "check", str(image)],
                              capture_output=True).returncode == 0
    check_disk_and_trace(out, disk, trace, tmp_path, from_power_on=True)
    # a trace recorded on /dev/kvm replays under the simulated loop
    pristine = unxz(out / "disk-pristine.img.xz", tmp_path / "pristine.img")
    capsys.readouterr()
    assert main(["replay", str(trace), "--drive", "file=%s,format=raw" % pristine]) == 0
    assert "no divergence" in capsys.readouterr().out
