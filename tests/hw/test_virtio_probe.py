"""The second virtio-blk boot program (tests/data/virtio/virtioprobe.asm),
recorded under real QEMU 7.2 by record_probe.py: register widths, feature
negotiation, the write cache, notify forms, request corners, virtio_error
cases, reset with requests in flight, INTx.  The whole program under
``gqemu run --accel kvm``, then each behaviour gqemu once got wrong against
the device directly (no vCPU), checked against the recorded bytes."""
from __future__ import annotations

import lzma
import re
import struct
import sys
from pathlib import Path

import pytest

from gqemu.cli.main import main
from gqemu.hw.memory import cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl, cpu_outw
from gqemu.machine import make_scratch_disk
from tests.hw.virtio_rig import HDR, Rig

DATA = Path(__file__).resolve().parents[1] / "data" / "virtio"

sys.path.insert(0, str(DATA))
import record  # noqa: E402  (the recorder's disk layout)

sys.path.pop(0)

# Section offsets in the program's output (virtioprobe.asm): the interrupt
# line, 'A' and 13 bytes, 'B' and 83, 'C' and 17, 'D' and 29, 'E' and 13, 'F'
A_OFF, C_OFF, F_OFF = 1, 99, 159


def recorded() -> bytes:
    out = (DATA / "probe-debugcon.bin").read_bytes()
    assert out[A_OFF] == ord("A") and out[C_OFF] == ord("C") and out[F_OFF] == ord("F")
    return out


def firmware_bytes(out: bytes) -> list[int]:
    """Offsets of the bytes that show a device gqemu does not have: the
    master PIC's IRR in 'I', where QEMU's PIT (programmed by SeaBIOS) has
    IRQ 0 pending.  The slave's IRR is compared: the PIC is set up as
    SeaBIOS leaves it (IRQ 10/11 level-triggered, bios_pic_setup)."""
    i = len(out) - 36                       # 'I', two rounds of 17, 'Z'
    assert out[i] == ord("I") and out[-1] == ord("Z")
    return [i + 1 + 17 * r + k for r in (0, 1) for k in (10, 15)]


def run_on_kvm(tmp_path: Path, prog: Path, vdisk_opts: str = "") -> tuple[int, Path, Path]:
    """``gqemu run --accel kvm`` of ``prog`` booted from an IDE disk with a
    blank virtio disk beside it (``vdisk_opts``: more -drive options), as
    record_probe.py runs QEMU.  Returns (exit status, virtio disk, debugcon)."""
    boot, vdisk, con = tmp_path / "boot.img", tmp_path / "vdisk.img", tmp_path / "con.bin"
    record.make_disk(str(boot), prog.read_bytes())
    record.make_disk(str(vdisk), b"")
    rc = main(["run", "--accel", "kvm", "--boot", str(prog), "--timeout", "60",
               "--drive", "file=%s,format=raw,if=ide,index=0" % boot,
               "--drive", "file=%s,format=raw,if=virtio%s" % (vdisk, vdisk_opts),
               "--debugcon", str(con)])
    return rc, vdisk, con


@pytest.mark.usefixtures("kvm")
def test_probe_program_under_kvm_as_under_qemu(tmp_path, capsys):
    rc, vdisk, con = run_on_kvm(tmp_path, DATA / "virtioprobe.bin")
    assert rc == int((DATA / "probe-exitcode.txt").read_text())
    ref, got = recorded(), con.read_bytes()
    assert len(got) == len(ref)
    skip = set(firmware_bytes(ref))
    diff = [i for i in range(len(ref)) if ref[i] != got[i] and i not in skip]
    assert diff == [], "first difference at byte %d" % diff[0]
    with lzma.open(DATA / "probe-vdisk-after.img.xz") as f:
        assert vdisk.read_bytes() == f.read()
    # QEMU's virtio_error lines, in order
    err = [ln[len("gqemu: "):] for ln in capsys.readouterr().err.splitlines()
           if ln.startswith("gqemu: ")]
    assert err == (DATA / "probe-stderr.txt").read_text().splitlines()


def test_virtio_blk_as_seabios_left_it(tmp_path):
    """Section 'A': before the program touches it, the device is as
    SeaBIOS's driver left it: DRIVER_OK, its ring 0x23 pages below the top
    of RAM (QEMU's default 128 MiB, as gqemu run's), no feature acked, so
    the write cache is off (wce 0)."""
    from gqemu.machine import Machine, drive_config
    ref = recorded()[A_OFF + 1:A_OFF + 1 + 13]
    assert ref[0] == 7 and ref[12] == 0
    path = tmp_path / "v.img"
    make_scratch_disk(str(path), 2)
    from gqemu.hw.virtio.virtio_pci import virtio_pci_seabios_writes
    m = Machine(drive_config(["file=%s,format=raw,if=virtio" % path]), ram_size=128 << 20)
    try:
        # the firmware's writes (gqemu.kvm.firmware makes them as exits)
        out = {1: cpu_outb, 2: cpu_outw, 4: cpu_outl}
        for port, val, size in virtio_pci_seabios_writes(m.virtio[0], m.ram_size, 0):
            out[size](m.as_io, port, val)
        cpu_outl(m.as_io, 0xCF8, 0x80001010)
        io = cpu_inl(m.as_io, 0xCFC) & 0xFFFC
        got = bytes([cpu_inb(m.as_io, io + 0x12)]) + struct.pack(
            "<IIH", cpu_inl(m.as_io, io + 8), cpu_inl(m.as_io, io + 4),
            cpu_inw(m.as_io, io + 0x0C)) + bytes([cpu_inb(m.as_io, io + 0x13),
                                                   cpu_inb(m.as_io, io + 0x34)])
    finally:
        m.close()
    assert got == ref


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "v.img"
    make_scratch_disk(str(path), 2)
    return str(path)


def test_features_ok_freezes_the_guest_features(disk):
    """Section 'C': FEATURES_OK (8) written by a legacy driver makes QEMU
    ignore further guest-feature writes (virtio_set_features)."""
    ref = recorded()[C_OFF + 1:C_OFF + 1 + 13]
    r = Rig(disk)
    try:
        io = r.m.as_io
        r.status(0), r.status(1), r.status(3)
        got = b""
        for v in (0xFFFFFFFF, 0xBFFFFFFF):
            cpu_outl(io, r.io + 4, v)
            got += struct.pack("<I", cpu_inl(io, r.io + 4))
        cpu_outb(io, r.io + 0x12, 0x0B)
        got += bytes([r.status()])
        cpu_outl(io, r.io + 4, 0)
        got += struct.pack("<I", cpu_inl(io, r.io + 4))
    finally:
        r.close()
    assert got == ref
    assert ref[9:13] == ref[4:8] != bytes(4)


def test_driver_ok_without_config_wce_sets_the_write_cache(disk):
    """Section 'F': DRIVER_OK from a driver that did not ack CONFIG_WCE
    sets the write cache from the WCE feature (virtio_blk_set_status); a
    reset restores the drive's own mode."""
    ref = recorded()[F_OFF + 1:F_OFF + 1 + 7]
    got = b""
    r = Rig(disk, features=0)
    try:
        io = r.m.as_io

        def wce() -> bytes:
            return bytes([cpu_inb(io, r.io + 0x34)])
        got += wce()
        cpu_outb(io, r.io + 0x34, 1)
        got += wce()
        r.status(0)
        got += wce()
        r.status(1), r.status(3)
        cpu_outl(io, r.io + 4, 1 << 11)     # CONFIG_WCE: left to the driver
        cpu_outb(io, r.io + 0x34, 0)
        r.status(7)
        got += wce()
    finally:
        r.close()
    r = Rig(disk, features=1 << 9)          # WCE
    try:
        io = r.m.as_io
        got += bytes([cpu_inb(io, r.io + 0x34)])
        cpu_outb(io, r.io + 0x14, 0x55)     # capacity: not writable
        got += bytes([cpu_inb(io, r.io + 0x14), cpu_inb(io, r.io + 0x34)])
    finally:
        r.close()
    assert got == ref
    assert ref[0] == 0 and ref[2] == 1


def _get_id_chain(r: Rig) -> None:
    r.wr(HDR, struct.pack("<IIQ", 8, 0, 0) + b"\xee")
    r.desc(0, HDR, 16, 1, 1)
    r.desc(1, 0x14000, 20, 3, 2)
    r.desc(2, HDR + 16, 1, 2)
    r.put_avail(0)
    r.publish()


def test_notify_of_0x10000_is_no_queue(disk):
    """Section 'H': the notify register takes the whole value: a dword
    0x10000 is >= VIRTIO_QUEUE_MAX and QEMU ignores it; queue 1 has no
    ring; a byte write of 0 notifies queue 0."""
    ref = recorded()
    h = ref.index(b"H", ref.index(b"G"))
    ref_idx = struct.unpack_from("<HH", ref, h + 1)
    assert ref_idx[0] == ref_idx[1]         # unchanged by both
    r = Rig(disk)
    try:
        _get_id_chain(r)
        io = r.m.as_io
        cpu_outl(io, r.io + 0x10, 0x10000)
        r.settle()
        assert r.used_idx() == 0
        cpu_outw(io, r.io + 0x10, 1)
        r.settle()
        assert r.used_idx() == 0
        cpu_outb(io, r.io + 0x10, 0)
        r.settle()
        assert r.new_used() == [(0, 21)]
    finally:
        r.close()
    assert ref[h + 5:h + 7] == b"R\x01" and ref[h + 11:h + 15] == struct.pack("<I", 21)


def _scsi_ref(ref: bytes, used_len: int) -> tuple[int, bytes]:
    """The status byte and the 16-byte scsi inhdr dump of the recorded
    SCSI batch whose used length is ``used_len``."""
    m = [m for m in re.finditer(rb"gR.(.{4})(.{4})(.)(.{16})", ref, re.S)
         if struct.unpack("<I", m.group(2))[0] == used_len]
    assert len(m) == 1
    return m[0].group(3)[0], m[0].group(4)


def test_scsi_cmd_as_qemu(disk):
    """VIRTIO_BLK_T_SCSI_CMD (legacy offers VIRTIO_BLK_F_SCSI): with the
    cdb, sense and scsi inhdr buffers, SG_IO goes to the drive, which
    refuses it: UNSUPP and 255 in the inhdr's ``errors``; both ways at once:
    UNSUPP at once; too few buffers: IOERR (batch 3 of the program)."""
    ref = recorded()
    want_full = _scsi_ref(ref, 0x31)
    want_bidi = _scsi_ref(ref, 0x231)
    r = Rig(disk)
    try:
        cdb = 0x15000
        r.wr(cdb, bytes([0x12, 0, 0, 0, 36, 0]))
        r.wr(HDR, struct.pack("<IIQ", 2, 0, 0) + b"\xee")
        r.wr(0x16A40, b"\xaa" * 16)
        chain = [(HDR, 16, 0), (cdb, 6, 0), (0x16A00, 32, 2), (0x16A40, 16, 2), (HDR + 16, 1, 2)]
        for i, (a, n, f) in enumerate(chain):
            r.desc(i, a, n, f | (1 if i < len(chain) - 1 else 0), i + 1)
        r.put_avail(0)
        r.publish()
        r.kick()
        assert r.used_idx() == 0            # SG_IO completes from a bottom half
        r.settle()
        assert r.new_used() == [(0, 0x31)]
        assert (r.rd(HDR + 16, 1)[0], r.rd(0x16A40, 4)) == (want_full[0], want_full[1][:4])
        r.wr(0x16A80, b"\xaa" * 16)
        r.wr(HDR + 16, b"\xee")
        chain = [(HDR, 16, 0), (cdb, 6, 0), (cdb, 6, 0), (0x16C00, 512, 2), (0x16A00, 32, 2),
                 (0x16A80, 16, 2), (HDR + 16, 1, 2)]
        for i, (a, n, f) in enumerate(chain):
            r.desc(8 + i, a, n, f | (1 if i < len(chain) - 1 else 0), 9 + i)
        r.put_avail(8)
        r.publish()
        r.kick()
        assert r.new_used() == [(8, 0x231)]
        assert (r.rd(HDR + 16, 1)[0], r.rd(0x16A80, 4)) == (want_bidi[0], want_bidi[1][:4])
        st = r.request(2, 0, in_len=512, slot=10)       # header, data, status
        r.settle()
        assert r.new_used() == [(30, 513)] and r.rd(st, 1) == b"\1"
    finally:
        r.close()
    assert want_full[0] == want_bidi[0] == 2 and want_full[1][:4] == b"\xff\0\0\0"


def p_section(out: bytes) -> int:
    """Offset of section 'P' (71 bytes, just before 'I')."""
    i = len(out) - 36 - 71
    assert out[i] == ord("P")
    return i


def test_bus_master_off_disables_and_clears_driver_ok(disk):
    """Section 'P': bus mastering off takes DRIVER_OK out of the status and
    stops the queue (no "Cannot map": the device sees a hole); on again, a
    notify processes what was made available meanwhile."""
    ref = recorded()
    p = p_section(ref)
    r = Rig(disk)
    try:
        r.cfg_write(0x10, 0x04, 0x0103, 2)
        got = bytes([r.status()])
        _get_id_chain(r)
        r.kick()
        r.settle()
        got += struct.pack("<H", r.used_idx()) + b"R" + bytes([r.isr()])
        r.cfg_write(0x10, 0x04, 0x0107, 2)
        got += bytes([r.status()])
        r.kick()
        r.settle()
        got += struct.pack("<H", r.used_idx()) + b"R" + bytes([r.isr()])
        assert not r.vdev.broken
    finally:
        r.close()
    assert got == ref[p + 1:p + 11]
    assert ref[p + 1] == 3 and ref[p + 7:p + 11] == b"\x01\x00R\x01"


def test_msix_enable_moves_the_config_and_stops_intx(disk):
    """Section 'P': the MSI-X enable bit is writable; while it is set the
    config vector and queue vector registers sit at 0x14 and 0x16 (a vector
    the table does not have reads back 0xFFFF), the device config starts at
    0x18 and a completion sets the ISR without INTx."""
    ref = recorded()
    p = p_section(ref)
    r = Rig(disk)
    try:
        io = r.m.as_io
        got = struct.pack("<I", r.cfg(0x10, 0x40))
        r.cfg_write(0x10, 0x42, 0x8000, 2)
        got += struct.pack("<III", r.cfg(0x10, 0x40), cpu_inl(io, r.io + 0x14),
                           cpu_inl(io, r.io + 0x18))
        cpu_outw(io, r.io + 0x14, 0)
        cpu_outw(io, r.io + 0x16, 5)
        got += struct.pack("<HH", cpu_inw(io, r.io + 0x14), cpu_inw(io, r.io + 0x16))
        _get_id_chain(r)
        r.kick()
        r.settle()
        got += b"R" + bytes([r.isr()])
        status = struct.pack("<H", r.cfg(0x10, 0x04) >> 16)
        r.cfg_write(0x10, 0x42, 0, 2)
        got2 = status + struct.pack("<II", r.cfg(0x10, 0x40), cpu_inl(io, r.io + 0x14))
    finally:
        r.close()
    assert got == ref[p + 21:p + 43]
    assert got2 == ref[p + 51:p + 61]


@pytest.mark.usefixtures("kvm")
def test_read_only_drive_as_under_qemu(tmp_path, capsys):
    """virtioblk.asm on ``readonly=on``: QEMU accepts a read-only drive
    for virtio-blk, offers VIRTIO_BLK_F_RO, fails the writes and
    write-zeroes with IOERR, lets the discard (off by default) succeed, and
    the disk stays as it was (record_probe.py's ro-* files)."""
    blank = tmp_path / "blank.img"
    record.make_disk(str(blank), b"")
    rc, vdisk, con = run_on_kvm(tmp_path, DATA / "virtioblk.bin", ",readonly=on")
    assert rc == int((DATA / "ro-exitcode.txt").read_text())
    assert con.read_bytes() == (DATA / "ro-debugcon.bin").read_bytes()
    assert vdisk.read_bytes() == blank.read_bytes()


def test_read_only_drive_offers_ro_and_discards(disk):
    """The same on the device directly: the RO feature bit QEMU offered
    (BAR0 dword 0 of the recording) and a discard that succeeds."""
    from tests.hw.test_virtio_blk import BAR_DUMP
    ref = (DATA / "ro-debugcon.bin").read_bytes()
    want = struct.unpack_from("<I", ref, BAR_DUMP + 0x80)[0]
    assert want & 1 << 5
    r = Rig(disk, extra=",readonly=on")
    try:
        assert cpu_inl(r.m.as_io, r.io) == want
        st = r.request(1, 5, data=b"x" * 512)
        r.settle()
        assert r.rd(st, 1) == b"\1"
        seg = 0x15000
        r.wr(seg, struct.pack("<QII", 30, 1, 0))
        r.wr(HDR + 0x100, struct.pack("<IIQ", 11, 0, 0) + b"\xee")
        r.desc(8, HDR + 0x100, 16, 1, 9)
        r.desc(9, seg, 16, 1, 10)
        r.desc(10, HDR + 0x110, 1, 2)
        r.put_avail(8)
        r.publish()
        r.kick()
        r.settle()
        assert r.rd(HDR + 0x110, 1) == b"\0"
    finally:
        r.close()


@pytest.mark.usefixtures("kvm")
def test_virtio_interrupt_through_seabios_pic(tmp_path):
    """virtioirq.asm: the PIC as SeaBIOS left it (masks, ELCR), then a
    GET_ID completed by IRQ 10 at vector 0x72 (SeaBIOS's slave base), once
    with the handler reading the ISR before its EOI (one interrupt) and once
    only on its second call (the level-triggered line fires again): QEMU's
    bytes (record_probe.py's irq-* files)."""
    rc, _vdisk, con = run_on_kvm(tmp_path, DATA / "virtioirq.bin")
    assert rc == int((DATA / "irq-exitcode.txt").read_text())
    ref = (DATA / "irq-debugcon.bin").read_bytes()
    assert ref[5:] == b"Vr\x01\x01Vr\x01\x02"
    assert con.read_bytes() == ref
