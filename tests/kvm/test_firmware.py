"""The SeaBIOS probe that ``--accel kvm`` runs before a boot sector gives,
access for access and value for value, the 624 IDE port accesses SeaBIOS
1.16.2 made under QEMU 7.2 in refdata (waits collapsed to their last
status: how many polls a wait takes depends on the host)."""
from __future__ import annotations

import json
import lzma
import shutil

import gqemu.kvm.firmware as fw
from gqemu.machine import Machine, drive_config

STATUS_PORTS = {0x1F7, 0x3F6, 0x177, 0x376}


def collapse(seq):
    out = []
    for a in seq:
        if (a["dir"] == "in" and a["port"] in STATUS_PORTS and out
                and out[-1]["dir"] == "in" and out[-1]["port"] == a["port"]):
            out[-1] = a
        else:
            out.append(a)
    return out


def test_seabios_probe_matches_refdata(refdata, tmp_path, monkeypatch):
    disk = tmp_path / "disk.img"
    with lzma.open(refdata / "mbr" / "out" / "disk-pristine.img.xz") as f, \
            open(disk, "wb") as out:
        shutil.copyfileobj(f, out)
    log = []

    def recorder(fn, direction, size):
        def access(as_io, port, *value):
            r = fn(as_io, port, *value)
            log.append({"dir": direction, "port": port, "size": size,
                        "value": value[0] if value else r})
            return r
        return access

    monkeypatch.setattr(fw, "cpu_inb", recorder(fw.cpu_inb, "in", 1))
    monkeypatch.setattr(fw, "cpu_outb", recorder(fw.cpu_outb, "out", 1))
    monkeypatch.setattr(fw, "cpu_inw", recorder(fw.cpu_inw, "in", 2))
    m = Machine(drive_config(["file=%s,format=raw" % disk]))
    try:
        m.firmware_probe(True)
    finally:
        m.close()
    with lzma.open(refdata / "mbr" / "out" / "exits-raw.jsonl.xz", "rt") as f:
        qemu = [json.loads(line) for line in f][:624]     # refdata/README: program starts at 624
    assert collapse(log) == collapse(qemu)
