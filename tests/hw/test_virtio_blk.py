"""Legacy virtio-blk against QEMU 7.2: the BAR0 bytes and request results the
reference program (tests/data/virtio/virtioblk.asm) got from real QEMU,
QEMU's merging trace line, its virtio_error cases, and images checked by
real qemu-img / qemu-io."""
from __future__ import annotations

import io
import lzma
import re
import struct
import subprocess
from pathlib import Path

import pytest

from gqemu.hw.memory import cpu_inb, cpu_inl, cpu_outl
from gqemu.machine import Machine, drive_config, make_scratch_disk, scratch_sector
from gqemu.trace import trace_close_output, trace_enable_events, trace_init_output, trace_reset
from tests.hw.virtio_rig import DATA, HDR, Rig

REF = Path(__file__).resolve().parents[1] / "data" / "virtio"
BAR_DUMP = 2 + 0x50 + 4 * 0x40 + 8          # where the program's BAR0 byte dump starts


def recorded() -> bytes:
    return (REF / "debugcon.bin").read_bytes()


@pytest.fixture
def rig(tmp_path):
    disk = tmp_path / "v.img"
    make_scratch_disk(str(disk), 2)
    r = Rig(str(disk))
    yield r
    r.close()


def test_bar0_bytes_and_features_as_qemu(tmp_path):
    """After reset, ACKNOWLEDGE, DRIVER: byte reads of BAR0 0x00..0x7F (the
    registers, then the 57-byte device config, then all ones), the host
    features as a dword, the queue size, and the PFN read back."""
    disk = tmp_path / "v.img"
    make_scratch_disk(str(disk), 2)
    m = Machine(drive_config(["file=%s,format=raw,if=virtio" % disk]))
    try:
        cpu_outl(m.as_io, 0xCF8, 0x80001010)
        iob = cpu_inl(m.as_io, 0xCFC) & 0xFFFC
        from gqemu.hw.memory import cpu_inw, cpu_outb, cpu_outw
        for v in (0, 1, 3):
            cpu_outb(m.as_io, iob + 0x12, v)
        got = bytes(cpu_inb(m.as_io, iob + i) for i in range(0x80))
        got += struct.pack("<I", cpu_inl(m.as_io, iob))
        cpu_outl(m.as_io, iob + 4, 0)
        cpu_outw(m.as_io, iob + 0x0E, 0)
        got += struct.pack("<H", cpu_inw(m.as_io, iob + 0x0C))
        cpu_outl(m.as_io, iob + 8, 0x10)
        got += struct.pack("<I", cpu_inl(m.as_io, iob + 8))
    finally:
        m.close()
    assert got == recorded()[BAR_DUMP:BAR_DUMP + 0x80 + 10]


def _expect_used(r, want):
    r.settle()
    assert r.new_used() == want


def test_requests_as_qemu_answered_them(rig):
    """The program's request table, replayed through the rig: used ids,
    lengths and status bytes as QEMU wrote them (decoded from the
    recording), and the data."""
    r = rig
    st = r.request(0, 1, in_len=1024)                          # IN 1-2
    _expect_used(r, [(0, 1025)])
    assert r.rd(st, 1) == b"\0"
    assert r.rd(DATA, 1024) == scratch_sector(1) + scratch_sector(2)
    assert r.isr() == 1 and r.isr() == 0
    st = r.request(8, 0, in_len=20, slot=1)                    # GET_ID
    _expect_used(r, [(3, 21)])
    assert r.rd(st, 1) == b"\0" and r.rd(DATA + 0x1000, 20) == bytes(20)
    st = r.request(0x55, 0, in_len=512, slot=2)                # unknown
    _expect_used(r, [(6, 513)])
    assert r.rd(st, 1) == b"\2"
    st = r.request(0, 4096, in_len=512, slot=3)                # past the end
    _expect_used(r, [(9, 513)])
    assert r.rd(st, 1) == b"\1"
    st = r.request(0, 4095, in_len=1024, slot=4)               # straddles
    _expect_used(r, [(12, 1025)])
    assert r.rd(st, 1) == b"\1"
    st = r.request(4, 0, slot=5)                               # FLUSH
    _expect_used(r, [(15, 1)])
    assert r.rd(st, 1) == b"\0"


def _strip(line: str) -> str:
    line = re.sub(r"^\d+@[\d.]+:", "", line.strip())
    return re.sub(r"0x[0-9a-f]+", "PTR", line)


def test_merged_writes_trace_as_qemu(rig, tmp_path):
    """Two adjacent writes in one notify: QEMU's submit_multireq line (from
    the recording), completions in sector order, then the data on disk."""
    buf = io.StringIO()
    trace_init_output(buf, "log")
    trace_enable_events("virtio_blk_*")
    try:
        rig.request(1, 11, data=b"B" * 512, slot=1, kick=False)
        rig.request(1, 10, data=b"A" * 512, slot=0)
        rig.settle()
    finally:
        trace_reset()
        trace_close_output()
    with lzma.open(REF / "trace.log.xz", "rt") as f:
        ref = [_strip(ln) for ln in f if "virtio_blk_submit_multireq" in ln]
    got = [_strip(ln) for ln in buf.getvalue().splitlines()]
    assert [g for g in got if "submit_multireq" in g] == ref
    assert [g.split()[0] for g in got] == [
        "virtio_blk_handle_write", "virtio_blk_handle_write", "virtio_blk_submit_multireq",
        "virtio_blk_rw_complete", "virtio_blk_req_complete",
        "virtio_blk_rw_complete", "virtio_blk_req_complete"]
    assert rig.new_used() == [(0, 1), (3, 1)]      # sector order: 10 (head 0), 11 (head 3)
    with open(rig.m.drives[0]["file"], "rb") as f:
        f.seek(10 * 512)
        assert f.read(1024) == b"A" * 512 + b"B" * 512


def test_write_zeroes_and_discard(rig):
    seg = struct.pack("<QII", 20, 2, 0)
    r = rig
    r.wr(0x15000, seg)
    hdr = HDR
    r.wr(hdr, struct.pack("<IIQ", 13, 0, 0))
    r.desc(0, hdr, 16, 1, 1)
    r.desc(1, 0x15000, 16, 1, 2)
    r.desc(2, hdr + 16, 1, 2)
    r.put_avail(0)
    r.publish()
    r.kick()
    _expect_used(r, [(0, 1)])
    st = r.request(0, 20, in_len=1024, slot=1)
    r.settle()
    assert r.rd(st, 1) == b"\0" and r.rd(DATA + 0x1000, 1024) == bytes(1024)
    # unknown flag -> UNSUPP; DISCARD with UNMAP -> UNSUPP; too many -> IOERR
    for rtype, seg, status in ((13, struct.pack("<QII", 20, 1, 2), 2),
                               (11, struct.pack("<QII", 20, 1, 1), 2),
                               (13, struct.pack("<QII", 4095, 2, 0), 1),
                               (12, struct.pack("<QII", 20, 1, 0), 2)):
        r.wr(0x15000, seg)
        r.wr(hdr, struct.pack("<IIQ", rtype, 0, 0) + b"\xee")
        r.put_avail(0)
        r.publish()
        r.kick()
        r.settle()
        assert r.rd(hdr + 16, 1) == bytes([status]), (rtype, seg)


def test_indirect_descriptors(rig):
    """VIRTIO_RING_F_INDIRECT_DESC, offered legacy-side by QEMU 7.2."""
    r = rig
    table = 0x16000
    r.wr(HDR, struct.pack("<IIQ", 0, 0, 7) + b"\xee")
    r.desc(0, HDR, 16, 1, 1, table=table)
    r.desc(1, DATA, 512, 3, 2, table=table)
    r.desc(2, HDR + 16, 1, 2, 0, table=table)
    r.desc(0, table, 48, 4)
    r.put_avail(0)
    r.publish()
    r.kick()
    _expect_used(r, [(0, 513)])
    assert r.rd(DATA, 512) == scratch_sector(7)


def test_intx_routing_and_isr(rig):
    """INTA of slot 2 goes through PIRQB (SeaBIOS: IRQ 10, the line register
    QEMU showed); an ISR read lowers it; INTx disable masks it."""
    pic = rig.m.pic
    rig.request(0, 1, in_len=512)
    rig.settle()
    assert pic.levels[10] == 1
    rig.cfg_write(0x10, 0x04, 0x0507, 2)          # INTX_DISABLE
    assert pic.levels[10] == 0
    rig.cfg_write(0x10, 0x04, 0x0107, 2)
    assert pic.levels[10] == 1
    assert rig.isr() == 1
    assert pic.levels[10] == 0


@pytest.mark.parametrize("setup,message", [
    ("short_header", "virtio-blk request outhdr too short"),
    ("no_in", "virtio-blk missing headers"),
    ("zero_len", "virtio: zero sized buffers are not allowed"),
    ("loop", "Looped descriptor"),
    ("next_past", "Desc next is 300"),
    ("head_past", "Guest says index 256 is available"),
    ("outside_ram", "virtio: bogus descriptor or out of resources"),
    ("bad_order", "Incorrect order for descriptors"),
    ("indirect_len", "Invalid size for indirect buffer table"),
    ("indirect_outside", "Cannot map indirect buffer"),
])
def test_virtio_error_marks_broken(rig, setup, message, capsys):
    """Each of QEMU's virtio_error cases: message on stderr, device broken,
    nothing completed, later kicks ignored; a reset revives it."""
    r = rig
    r.wr(HDR, struct.pack("<IIQ", 0, 0, 1))
    if setup == "short_header":
        r.request(0, 1, in_len=512, hdr_len=8, kick=False)
    elif setup == "no_in":
        r.desc(0, HDR, 16, 0)
        r.put_avail(0)
    elif setup == "zero_len":
        r.desc(0, HDR, 0, 0)
        r.put_avail(0)
    elif setup == "loop":
        r.desc(0, HDR, 16, 1, 1)
        r.desc(1, DATA, 512, 1, 0)
        r.put_avail(0)
    elif setup == "next_past":
        r.desc(0, HDR, 16, 1, 300)
        r.put_avail(0)
    elif setup == "head_past":
        r.put_avail(256)
    elif setup == "outside_ram":
        r.desc(0, HDR, 16, 1, 1)
        r.desc(1, 0xFFFF0000, 512, 3, 2)
        r.desc(2, HDR + 16, 1, 2)
        r.put_avail(0)
    elif setup == "bad_order":
        r.desc(0, HDR + 16, 1, 3, 1)
        r.desc(1, HDR, 16, 0)
        r.put_avail(0)
    elif setup == "indirect_len":
        r.desc(0, 0x16000, 20, 4)
        r.put_avail(0)
    elif setup == "indirect_outside":
        r.desc(0, len(r.m.ram) - 16, 48, 4)           # RAM ends inside the table
        r.put_avail(0)
    r.publish()
    r.kick()
    r.settle()
    assert r.vdev.broken
    assert message in capsys.readouterr().err
    assert r.used_idx() == 0 and r.isr() == 0
    r.request(0, 1, in_len=512, slot=2)             # ignored while broken
    r.settle()
    assert r.used_idx() == 0
    r.status(0)                                     # reset
    assert not r.vdev.broken and r.status() == 0
    assert cpu_inl(r.m.as_io, r.io + 8) == 0        # PFN cleared


def test_ring_outside_ram_and_bus_master(rig, capsys):
    """Bus mastering off under live rings disables the device (no region
    cache error: the device sees a hole), rings past the top of RAM lie in
    a hole (no error either; virtioprobe.asm's section 'P' shows both under
    QEMU), a ring that RAM ends inside is QEMU's "Cannot map"."""
    from gqemu.hw.memory import memory_region_add_subregion, memory_region_init_io, \
        MemoryRegionOps
    r = rig
    r.cfg_write(0x10, 0x04, 0x0103, 2)               # bus master off
    assert r.vdev.disabled and not r.vdev.broken and r.status() == 3
    r.cfg_write(0x10, 0x04, 0x0107, 2)
    assert not r.vdev.disabled
    r.status(0)
    for v in (1, 3):
        r.status(v)
    ram_pages = len(r.m.ram) >> 12
    cpu_outl(r.m.as_io, r.io + 8, ram_pages - 1)     # avail and used past RAM
    assert not r.vdev.broken and capsys.readouterr().err == ""
    # a small I/O region right after RAM: the avail ring runs past its end
    mr = memory_region_init_io(None, MemoryRegionOps(lambda o, a, s: 0, lambda o, a, v, s: None),
                               None, "mmio", 0x100)
    memory_region_add_subregion(r.m.as_mem.root, len(r.m.ram), mr)
    r.status(0)
    for v in (1, 3):
        r.status(v)
    cpu_outl(r.m.as_io, r.io + 8, ram_pages - 1)
    assert r.vdev.broken and "Cannot map avail" in capsys.readouterr().err


def test_status_3_turns_bus_mastering_on(rig):
    """QEMU's workaround for old Linux: ACKNOWLEDGE|DRIVER enables it."""
    r = rig
    r.cfg_write(0x10, 0x04, 0x0103, 2)
    r.status(0)
    r.status(3)
    assert r.cfg(0x10, 0x04) & 0x4


def test_bad_feature_and_masking(rig):
    r = rig
    cpu_outl(r.m.as_io, r.io + 4, 0xFFFFFFFF)
    assert cpu_inl(r.m.as_io, r.io + 4) == 0          # BAD_FEATURE: the device's bad set
    cpu_outl(r.m.as_io, r.io + 4, 0x3FFFFFFF)
    assert cpu_inl(r.m.as_io, r.io + 4) == 0x71006ED4 & 0x3FFFFFFF


def test_event_idx_publishes_avail_event(tmp_path):
    disk = tmp_path / "v.img"
    make_scratch_disk(str(disk), 2)
    r = Rig(str(disk), features=1 << 29)
    try:
        r.request(0, 1, in_len=512)
        r.request(0, 2, in_len=512, slot=1)
        r.settle()
        avail_event = struct.unpack("<H", r.rd(r.used + 4 + 8 * r.num, 2))[0]
        assert avail_event == 2
        assert len(r.new_used()) == 2
    finally:
        r.close()


def test_guest_driver_on_qcow2_checks_clean(tmp_path, qemu_img, qemu_io):
    """A virtio guest writes a qcow2 image: real qemu-img check is clean and
    real qemu-io reads the pattern back."""
    img = tmp_path / "d.qcow2"
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(img), "4M"], check=True)
    from gqemu.guest.virtio_blk import VirtioBlk
    results = {}

    def guest(cpu):
        vb = VirtioBlk(cpu)
        vb.write(8, b"\xa5" * 4096)
        vb.write(1000, b"\x5a" * 1024)
        vb.flush()
        results["back"] = vb.read(8, 8)
        results["cap"] = vb.capacity
        results["id"] = vb.get_id()

    m = Machine(drive_config(["file=%s,format=qcow2,if=virtio" % img]))
    try:
        m.add_cpu(guest)
        m.run()
        assert all(c.error is None for c in m.kvm.cpus), [c.error for c in m.kvm.cpus]
    finally:
        m.close()
    assert results["back"] == b"\xa5" * 4096 and results["cap"] == 8192
    assert results["id"][:2] == b"\0\xa5"      # only the serial's NUL is written

    p = subprocess.run([qemu_img, "check", str(img)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([qemu_io, "-f", "qcow2", "-c", "read -P 0xa5 4096 4096",
                        "-c", "read -P 0x5a 512000 1024", "-c", "read -P 0 0 4096",
                        str(img)], capture_output=True, text=True)
    assert p.returncode == 0 and "Pattern verification failed" not in p.stdout, p.stdout


def test_drive_option_errors():
    from gqemu.machine import MachineError
    with pytest.raises(MachineError, match="bus/unit are for if=ide"):
        drive_config(["file=a,if=virtio,unit=1"])
    with pytest.raises(MachineError, match="virtio drive index=0 exists"):
        drive_config(["file=a,if=virtio", "file=b,if=virtio,index=0"])
    with pytest.raises(MachineError, match="if=scsi is not supported"):
        drive_config(["file=a,if=scsi"])
    d = drive_config(["file=a,if=virtio", "file=b"])
    assert [(x.get("if", "ide"), x["index"]) for x in d] == [("ide", 0), ("virtio", 0)]




def test_backtrace_shows_the_virtio_path(tmp_path, capsys):
    """--backtrace: the vCPU chain of the first request runs through QEMU's
    virtio frames."""
    from gqemu.cli.main import main
    disk = tmp_path / "d.img"
    make_scratch_disk(str(disk), 2)
    example = Path(__file__).resolve().parents[2] / "scripts" / "examples" / "virtio_blk.py"
    rc = main(["run", str(example), "--drive", "file=%s,format=raw,if=virtio" % disk,
               "--backtrace"])
    out = capsys.readouterr().out
    assert rc == 0
    chain = [ln.split()[1] for ln in out.split("2. coroutine")[0].splitlines()
             if ln.startswith("#")]
    want = ["blk_aio_prwv", "blk_aio_preadv", "submit_requests", "virtio_blk_submit_multireq",
            "virtio_blk_handle_vq", "virtio_blk_handle_output", "virtio_queue_notify",
            "virtio_ioport_write", "virtio_pci_config_write"]
    assert chain[:len(want)] == want


def test_reset_drains_requests_in_flight(rig):
    """QEMU's virtio_blk_reset drains first: the request in flight completes
    into the old ring, then the queue is forgotten."""
    st = rig.request(0, 5, in_len=512)
    assert rig.vdev.inflight                       # not completed yet
    rig.status(0)
    assert not rig.vdev.inflight
    assert rig.used_idx() == 1 and rig.rd(st, 1) == b"\0"
    assert rig.rd(DATA, 512) == scratch_sector(5)
    assert cpu_inl(rig.m.as_io, rig.io + 8) == 0 and rig.isr() == 0


def test_more_than_1024_buffers_is_virtio_error(rig, capsys):
    """An indirect table of 1100 one-byte device-writable buffers after the
    header: QEMU's limit of 1024 pieces per element (VIRTQUEUE_MAX_SIZE)."""
    r = rig
    table = 0x40000
    r.wr(HDR, struct.pack("<IIQ", 0, 0, 1))
    r.desc(0, HDR, 16, 1, 1, table=table)
    for i in range(1, 1101):
        r.desc(i, DATA + i, 1, 3 if i < 1100 else 2, i + 1, table=table)
    r.desc(0, table, 16 * 1101, 4)
    r.put_avail(0)
    r.publish()
    r.kick()
    r.settle()
    assert r.vdev.broken and r.used_idx() == 0
    assert "too many write descriptors in indirect table" in capsys.readouterr().err


MIX = '''"""IDE DMA and virtio-blk on one machine."""
from gqemu.guest.ata import ATA
from gqemu.guest.virtio_blk import VirtioBlk, pci_cfg_read

SCRATCH_VIRTIO = [0]


def guest(cpu):
    vb = VirtioBlk(cpu)
    ata = ATA(cpu)
    ata.bm = pci_cfg_read(cpu, 0x09, 0x20) & 0xFFFC
    for lba in range(0, 32, 8):
        data = ata.read_dma(lba, 8)
        vb.write(lba + 100, data)
        assert vb.read(lba + 100, 8) == data
'''


def test_record_replay_with_ide_dma_and_virtio(tmp_path, capsys):
    """A run using both devices (BAR4 behind the virtio BAR, at 0xC080)
    records and replays with no divergence; the replay hints name BAR4's
    ports where they are."""
    from gqemu.cli.main import main
    script = tmp_path / "mix.py"
    script.write_text(MIX)
    trace = tmp_path / "t.gqt"
    assert main(["run", str(script), "--record", str(trace)]) == 0
    assert main(["replay", str(trace)]) == 0
    assert "records replayed, no divergence" in capsys.readouterr().out
    disk, vdisk = tmp_path / "a.img", tmp_path / "b.img"
    make_scratch_disk(str(disk), 2)
    make_scratch_disk(str(vdisk), 2)
    m = Machine(drive_config(["file=%s,format=raw" % disk,
                              "file=%s,format=raw,if=virtio" % vdisk]))
    try:
        ports = m.replay_hints()["port_drives"]
    finally:
        m.close()
    assert ports[0xC080] == (0, 1) and ports[0xC08F] == (2, 3) and 0xC000 not in ports
