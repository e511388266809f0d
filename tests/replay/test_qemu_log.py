"""The QEMU log importer against real logs: QEMU 7.2's refdata log, and
gqemu's own ide_*/bmdma_* log of runs that QEMU's rules say must import
back to exactly the recorded exits (secondary channel, BMDMA, two vCPUs)."""
from __future__ import annotations

import json
import lzma
import re

import pytest
from replay_helpers import EXAMPLES, gqemu

from gqemu.replay.format import REC_IO, REC_MEMW, open_trace, port_accesses
from gqemu.replay.qemu_log import LogError, QemuLogImporter

P = "bus 0x55e47ad68f50"
S = "IDEState 0x55e47ad68fd8"


def imp(lines):
    return list(QemuLogImporter().records(lines))


def as_access(rec):
    return {"dir": "in" if rec[2] == 0 else "out", "port": rec[4], "size": rec[3],
            "value": rec[5]}


def test_refdata_log_gives_exactly_the_recorded_accesses(refdata):
    out = refdata / "mbr" / "out"
    with lzma.open(out / "trace-raw.log.xz", "rt") as f:
        got = [as_access(r) for r in imp(f)]
    with lzma.open(out / "exits-raw.jsonl.xz", "rt") as f:
        want = [json.loads(line) for line in f]
    assert len(got) == len(want) == 5076
    assert got == want


def test_timestamps_are_optional(refdata):
    with lzma.open(refdata / "mbr" / "out" / "trace-raw.log.xz", "rt") as f:
        lines = f.readlines()
    plain = [re.sub(r"^\d+@\d+\.\d+:", "", line) for line in lines]
    assert plain != lines
    a = [r[2:] for r in imp(lines)]
    b = [r[2:] for r in imp(plain)]
    assert a == b


def test_byte_read_of_the_data_port_is_one_access():
    lines = [
        "ide_data_readw IDE PIO rd @ 0x1f0 (Data: Word); val 0x4c3c; %s; %s" % (P, S),
        "ide_sector_read sector=1 nsectors=1",        # may come in between
        "ide_ioport_read IDE PIO rd @ 0x1f0 (Data); val 0x3c; %s %s" % (P, S),
        "ide_data_readw IDE PIO rd @ 0x1f0 (Data: Word); val 0x1234; %s; %s" % (P, S),
        "ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x58; %s %s" % (P, S),
        "ide_ioport_read IDE PIO rd @ 0x1f0 (Data); val 0x00; %s %s" % (P, S),   # DRQ=0
    ]
    assert [r[2:] for r in imp(lines)] == [
        [0, 1, 0x1F0, 0x3C], [0, 2, 0x1F0, 0x1234], [0, 1, 0x1F7, 0x58], [0, 1, 0x1F0, 0]]


def test_secondary_channel_and_bmdma_channel():
    sec = "bus 0x55e47ad69850"
    lines = [
        "ide_ioport_write IDE PIO wr @ 0x176 (Device/Head); val 0xe0; %s IDEState 0x1" % sec,
        "bmdma_addr_write data: 0x0000000000001000",
        "bmdma_write bmdma: writeb 0x2 : 0x06",
        "ide_ctrl_write IDE PIO wr @ 0x376 (Device Control); val 0x02; %s" % sec,
        "ide_status_read IDE PIO rd @ 0x376 (Alt Status); val 0x50; %s; IDEState 0x1" % sec,
        "ide_ioport_write IDE PIO wr @ 0x1f6 (Device/Head); val 0xe0; %s %s" % (P, S),
        "bmdma_read bmdma: readb 0x2 : 0x04",
        "ide_cmd_write IDE PIO wr @ 0x3f6 (Device Control); val 0x00; %s" % P,
    ]
    assert [r[2:] for r in imp(lines)] == [
        [1, 1, 0x176, 0xE0], [1, 4, 0xC00C, 0x1000], [1, 1, 0xC00A, 0x06],
        [1, 1, 0x376, 0x02], [0, 1, 0x376, 0x50], [1, 1, 0x1F6, 0xE0],
        [0, 1, 0xC002, 0x04], [1, 1, 0x3F6, 0x00]]


def test_threads_become_cpus_and_non_access_events_are_skipped():
    lines = [
        "100@1.000001:ide_reset IDEstate 0x55e47ad68fd8",
        "101@1.000002:ide_ioport_write IDE PIO wr @ 0x1f7 (Command); val 0xec; %s %s" % (P, S),
        "101@1.000003:ide_exec_cmd IDE exec cmd: %s; state 0x55e47ad68fd8; cmd 0xec" % P,
        "102@1.000004:ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x58; %s %s" % (P, S),
        "100@1.000005:bmdma_reset ",
        "101@1.000006:pci_cfg_write piix3-ide 00:01.1 @0x20 <- 0xc041",
        "101@1.000007:ide_dma_cb IDEState 0x55e47ad68fd8; sector_num=16 n=8 cmd=DMA READ",
    ]
    im = QemuLogImporter()
    recs = list(im.records(lines))
    assert [r[1] for r in recs] == [0, 1]
    assert im.bmdma_bar == 0xC040


@pytest.mark.parametrize("line, msg", [
    ("ide_ioport_read IDE PIO rd @ 0x1f7 (Status) val 0x50; %s %s" % (P, S), "garbled"),
    ("ide_ioport_read IDE PIO rd @ 0x1f7 (Error); val 0x50; %s %s" % (P, S), "does not match"),
    ("ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x150; %s %s" % (P, S), "too wide"),
    ("ide_data_readw IDE PIO rd @ 0x1f2 (Data: Word); val 0x0001; %s; %s" % (P, S),
     "not a data port"),
    ("ide_ioport_write IDE PIO wr @ 0x2f7 (Command); val 0x20; %s %s" % (P, S),
     "not an IDE port"),
    ("virtio_blk_req_complete req 0x1 status 0", "unknown trace event 'virtio_blk_req_complete'"),
    ("qemu-system-x86_64: terminating on signal 15", "not a QEMU trace line"),
    ("bmdma_write bmdma: writeb 0x9 : 0x01", "outside the 4-byte window"),
])
def test_bad_lines_are_refused_with_their_number(line, msg):
    good = "ide_ioport_read IDE PIO rd @ 0x1f7 (Status); val 0x50; %s %s" % (P, S)
    with pytest.raises(LogError) as ei:
        imp([good, "", good, line, good])
    assert ei.value.lineno == 4
    assert str(ei.value).startswith("line 4: ")
    assert msg in str(ei.value)


def expand(recs):
    """Recorded exits as the single accesses a QEMU log shows."""
    return [a for r in recs for a in port_accesses(r)]


@pytest.mark.parametrize("example", ["dma", "two_cpus", "errors"])
def test_gqemu_own_log_imports_back_to_its_exits(example, tmp_path, capsys):
    """gqemu's hw traces with QEMU 7.2's formats and rules; the importer must
    turn that log back into the exact accesses recorded for the same run."""
    log, rec, out = tmp_path / "t.log", tmp_path / "rec.gqt", tmp_path / "imp.gqt"
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / ("%s.py" % example), "--trace", "ide_*",
                        "--trace", "bmdma_*", "--trace-file", log, "--record", rec)
    assert rc == 0, err
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", out)
    assert rc == 0, err
    f1, r1 = open_trace(str(rec))
    f2, r2 = open_trace(str(out))
    with f1, f2:
        want = expand(list(r1))
        got = [tuple(r[2:]) for r in r2 if r[0] == REC_IO]
    assert len(got) > 100
    assert got == want


@pytest.mark.parametrize("example, drives", [
    ("irq_hlt", [0]), ("two_cpus", [0, 2]), ("ataprobe", [0])])
def test_imported_gqemu_log_replays(example, drives, tmp_path, capsys, scratch):
    """A log with DMA (PRD tables synthesized by the importer), IRQ-driven
    waits, both channels: imported, it replays on fresh disks."""
    log, out = tmp_path / "t.log", tmp_path / "imp.gqt"
    rc, _o, err = gqemu(capsys, "run", EXAMPLES / ("%s.py" % example), "--trace", "ide_*",
                        "--trace", "bmdma_*", "--trace-file", log)
    assert rc == 0, err
    rc, _o, err = gqemu(capsys, "import-qemu-trace", log, "-o", out)
    assert rc == 0, err
    specs = []
    for i in drives:
        specs += ["--drive", "file=%s,format=raw,index=%d" % (scratch("d%d.img" % i), i)]
    rc, o, err = gqemu(capsys, "replay", out, *specs)
    assert rc == 0, o + err


def test_prd_synthesis_and_relocation():
    """DMA start: a PRD table covering exactly the command's sectors is
    written where the guest put its table; a table above gqemu's RAM is
    moved low, and the PRD register reads back the moved address."""
    lines = [
        "ide_ioport_write IDE PIO wr @ 0x1f2 (Sector Count); val 0x01; %s %s" % (P, S),  # hob
        "ide_ioport_write IDE PIO wr @ 0x1f2 (Sector Count); val 0x80; %s %s" % (P, S),
        "ide_ioport_write IDE PIO wr @ 0x1f7 (Command); val 0x25; %s %s" % (P, S),
        "bmdma_addr_write data: 0x000000003f001000",
        "bmdma_addr_read data: 0x000000003f001000",
        "bmdma_write bmdma: writeb 0x0 : 0x09",
        "bmdma_write bmdma: writeb 0x0 : 0x08",
        "bmdma_write bmdma: writeb 0x0 : 0x09",
    ]
    im = QemuLogImporter()
    recs = imp_with(im, lines)
    assert recs[3] == [REC_IO, 0, 1, 4, 0xC004, 0x3000]
    assert recs[4] == [REC_IO, 0, 0, 4, 0xC004, 0x3000]
    memw = [r for r in recs if r[0] == REC_MEMW]
    assert len(memw) == 2 and im.prd_synthesized == 2
    _k, _cpu, addr, table = memw[0]
    assert addr == 0x3000
    entries = [table[i:i + 8] for i in range(0, len(table), 8)]
    sizes = [int.from_bytes(e[4:6], "little") or 0x10000 for e in entries]
    assert sum(sizes) == 0x180 * 512                    # 384 sectors (LBA48 count)
    assert [int.from_bytes(e[6:8], "little") for e in entries] == [0, 0, 0x8000]
    assert recs.index(memw[0]) == 5                      # before the START write


def imp_with(im, lines):
    return list(im.records(lines))
