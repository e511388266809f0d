"""A real Linux guest driving the PIIX IDE controller, recorded under real
QEMU 7.2 (tests/data/linux: Debian's 6.1 kernel, ata_piix + libata +
sd_mod, a busybox /init doing O_DIRECT and buffered reads and writes,
sync, and a power-off; re-recorded by record.py, which needs the kernel --
these tests do not).

``gqemu import-qemu-trace -m 256 --ram-snapshots guest-ram.txt.xz
trace.log.xz`` turns QEMU's ide_*/bmdma_* events into port accesses from
power-on (SeaBIOS, then Linux's probe: SRST, IDENTIFY, SET FEATURES XFER,
then READ/WRITE DMA (EXT), FLUSH CACHE, STANDBY IMMEDIATE), and the guest's
own PRD tables and write buffers (read through QEMU's gdbstub when Linux
started each bus master) into guest RAM stores; what QEMU's DMA wrote to
memory becomes guest RAM loads.  Every value QEMU returned must come back
from gqemu, and the disk must end as QEMU left it.  The variants: every
port access from start_kernel (PCI configuration included), three disks
with PIO next to DMA, raw ATA commands, I/O errors through blkdebug, a
qcow2 drive, and Linux's virtio_blk on a legacy virtio-blk-pci.
"""
from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

import pytest

from gqemu.blockdev import scratch_sector
from gqemu.cli.main import main
from gqemu.replay.format import REC_IO, REC_MEMR, REC_MEMW, TraceWriter, open_trace

DATA = Path(__file__).resolve().parents[1] / "data" / "linux"
SECTORS = 16 * 2048


def pristine(path: Path) -> Path:
    with open(path, "wb") as f:
        for lba in range(SECTORS):
            f.write(scratch_sector(lba))        # refdata/mkdisk.py's sector
    return path


def disk_after() -> bytes:
    with lzma.open(DATA / "disk-after.img.xz") as f:
        return f.read()


def sha256_txt() -> list[str]:
    return [ln.split()[0] for ln in (DATA / "sha256.txt").read_text().splitlines()]


def test_recording_is_what_the_guest_did(tmp_path):
    """The recording itself (QEMU's results, not gqemu's): the guest ran to
    its end and read back what it wrote, the pristine disk is mkdisk.py's,
    and the disk after is the pristine one plus exactly init.sh's writes."""
    assert (DATA / "exitcode.txt").read_text().split() == ["0"]
    serial = (DATA / "serial.log").read_text(errors="replace")
    assert "GUEST: sda 32768 sectors" in serial and "GUEST: done" in serial
    w = [ln.split() for ln in serial.splitlines() if ln.startswith("GUEST: w ")][0]
    assert w[2] == w[5]                     # md5 of the data written == read back
    before = pristine(tmp_path / "p.img").read_bytes()
    after = disk_after()
    assert [hashlib.sha256(before).hexdigest(), hashlib.sha256(after).hexdigest()] == sha256_txt()
    data = b"".join(b"GQEMU-LINUX-%05d\n" % i for i in range(1, 701))
    expect = bytearray(before)
    for lba, n in ((4000, 8192), (3000, 512), (16000, 4096), (18000, 7168)):
        expect[lba * 512:lba * 512 + n] = data[:n]
    expect[20480 * 512:20992 * 512] = bytes(512 * 512)
    assert after == bytes(expect)


@pytest.fixture
def imported(tmp_path, capsys):
    trace = tmp_path / "linux.gqt"
    rc = main(["import-qemu-trace", "-m", "256", "--ram-snapshots",
               str(DATA / "guest-ram.txt.xz"), str(DATA / "trace.log.xz"), "-o", str(trace)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "PRD tables synthesized" not in err
    return trace


def replay(trace: Path, disk: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw" % disk])
    return rc, capsys.readouterr().out


def test_replay_matches_qemu(imported, tmp_path, capsys):
    f, reader = open_trace(str(imported))
    with f:
        assert reader.meta["ram_size"] == 256 << 20
        kinds = [r[0] for r in reader]
    assert kinds.count(REC_MEMW) > 150 and kinds.count(REC_MEMR) > 300
    assert kinds.count(REC_IO) > 5000
    disk = pristine(tmp_path / "disk.img")
    rc, out = replay(imported, disk, capsys)
    assert rc == 0 and "no divergence" in out, out
    assert disk.read_bytes() == disk_after()


def _rewrite(src: Path, dst: Path, change) -> None:  # type: ignore[no-untyped-def]
    f, reader = open_trace(str(src))
    with f, open(dst, "wb") as out:
        w = TraceWriter(out, reader.meta)
        done = False
        for rec in reader:
            if not done:
                new = change(rec)
                if new is not None:
                    rec, done = new, True
            w.write(rec)
        w.close()
    assert done


def test_changed_read_buffer_is_caught(imported, tmp_path, capsys):
    """The DMA read data QEMU wrote to guest RAM is checked: one byte
    changed in a load is a divergence."""
    def flip(rec):  # type: ignore[no-untyped-def]
        if rec[0] == REC_MEMR and len(rec[3]) >= 4096:
            data = bytearray(rec[3])
            data[100] ^= 1
            return [rec[0], rec[1], rec[2], bytes(data)]
        return None
    bad = tmp_path / "bad.gqt"
    _rewrite(imported, bad, flip)
    rc, out = replay(bad, pristine(tmp_path / "disk.img"), capsys)
    assert rc == 1 and "ram load" in out, out


def test_changed_write_buffer_reaches_the_disk(imported, tmp_path, capsys):
    """The write buffers come from the snapshots: changing one changes the
    disk (so the after-image check above is not vacuous).  The WRITE DMA EXT
    of 512 zero sectors is the one the guest does not read back (a changed
    buffer of the others shows as a divergence of the read-back)."""
    seen = []

    def flip(rec):  # type: ignore[no-untyped-def]
        # the first buffer stored after the WRITE DMA EXT (0x35) command
        if rec[0] == REC_IO and rec[2] == 1 and rec[4] == 0x1F7 and rec[5] == 0x35:
            seen.append(1)
        elif seen and rec[0] == REC_MEMW and len(rec[3]) >= 512:
            data = bytearray(rec[3])
            data[0] ^= 0xFF
            return [rec[0], rec[1], rec[2], bytes(data)]
        return None
    bad = tmp_path / "bad.gqt"
    _rewrite(imported, bad, flip)
    disk = pristine(tmp_path / "disk.img")
    rc, out = replay(bad, disk, capsys)
    assert rc == 0, out
    assert disk.read_bytes() != disk_after()


def test_stored_prd_tables_are_not_replaced(imported):
    """With RAM snapshots the guest's PRD tables are stored as they were:
    the importer must not also write a synthesized table (one entry per
    64 KiB pointing at a scratch buffer) over them when the bus master
    starts.  Every RAM store of the trace is one of the snapshots'."""
    with lzma.open(DATA / "guest-ram.txt.xz", "rt") as f:
        stores = [ln.split() for ln in f if " store " in ln]
    want = []
    for _, _, addr, hx in stores:
        data = bytes.fromhex(hx)
        want += [(int(addr, 16) + off, data[off:off + 65536])
                 for off in range(0, len(data), 65536)]
    f, reader = open_trace(str(imported))
    with f:
        got = [(r[2], r[3]) for r in reader if r[0] == REC_MEMW]
    assert got == want


def test_memory_size_option(tmp_path, capsys):
    """-m SIZE (QEMU's -m: MiB unless suffixed) is the RAM the snapshots
    may lie in and the replay machine's: Linux ran in QEMU's -m 256, its
    buffers lie above gqemu's default 16 MiB."""
    out = tmp_path / "o.gqt"
    args = ["import-qemu-trace", "--ram-snapshots", str(DATA / "guest-ram.txt.xz"),
            str(DATA / "trace.log.xz"), "-o", str(out)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "outside the 16777216 bytes of RAM" in err and err.count("\n") == 1, err
    assert not out.exists()
    for bad in ("0", "2G", "abc", "-1", "256Q"):
        assert main(args + ["-m", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "-m %s: expected a RAM size" % bad in err, err
    assert main(args + ["-q", "-m", "262144K"]) == 0
    f, reader = open_trace(str(out))
    with f:
        assert reader.meta["ram_size"] == 256 << 20


# -- every port access: PCI configuration space (io-trace.log.xz) -------------

def test_io_replay_matches_qemu(tmp_path, capsys):
    """The run with memory_region_ops_* from start_kernel on: every PCI
    configuration access Linux made (the PCI scan, the PIIX4 ACPI quirk,
    ata_piix's timing registers), every IDE and BMDMA access, with the
    machine as SeaBIOS left it."""
    trace = tmp_path / "io.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(DATA / "io-guest-ram.txt.xz"), str(DATA / "io-trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disk = pristine(tmp_path / "disk.img")
    rc, out = replay(trace, disk, capsys)
    assert rc == 0 and "no divergence" in out, out
    assert disk.read_bytes() == disk_after()


def first_config_reads() -> dict[tuple[str, int], tuple[int, int]]:
    """(function, offset) -> (value, size) of the first pci_cfg_read of
    each register Linux made, before it wrote there, with the access size
    from its memory_region_ops line."""
    import re
    with lzma.open(DATA / "io-guest-ram.txt.xz", "rt") as f:
        start = next(int(ln.split()[0]) for ln in f if ln.split()[1:2] == ["start"])
    with lzma.open(DATA / "io-trace.log.xz", "rb") as f:
        f.seek(start)
        lines = f.read().decode().splitlines()
    out: dict[tuple[str, int], tuple[int, int]] = {}
    written: set[tuple[str, int]] = set()
    for i, ln in enumerate(lines):
        m = re.search(r"pci_cfg_(read|write) (\S+) \S+ @0x([0-9a-f]+) (?:->|<-) 0x([0-9a-f]+)", ln)
        if m is None:
            continue
        name, off = m.group(2), int(m.group(3), 16)
        # QEMU traces a write's memory_region_ops line before the access, a
        # read's after it
        ops = lines[i - 1] if m.group(1) == "write" else lines[i + 1]
        size = int(re.search(r" size (\d) name 'pci-conf-data'", ops).group(1))  # type: ignore[union-attr]
        span = {(name, off + k) for k in range(size)}
        if m.group(1) == "write":
            written |= span
        elif not span & written and (name, off) not in out:
            out[(name, off)] = (int(m.group(4), 16), size)
    return out


def test_config_space_as_seabios_leaves_it():
    """Each PCI register Linux read before writing it reads as real QEMU 7.2
    answered after SeaBIOS 1.16 (without a serial port: 0x67 of PIIX4_PM):
    PIIX4_PM's ACPI and SMBus bases (0x601, 0x701) and device resources
    (0x5f, 0x63), PIIX IDE's decode enables (0x8000 at 0x40 and 0x42)."""
    from gqemu.hw.pc_pci import pc_pci_chipset, pci_bios_setup
    from gqemu.hw.pci import pci_bus_new
    from gqemu.hw.ide.piix import pc_ide_init, piix3_ide_pci_new
    from gqemu.hw.irq import isa_pic_new
    from gqemu.hw.memory import new_address_space_io, new_address_space_memory
    as_io, as_mem = new_address_space_io(), new_address_space_memory()
    pic = isa_pic_new()
    ide = pc_ide_init(as_io, pic.irqs, [None] * 4, address_space_memory=as_mem,
                      bmdma_base=None)
    bus = pci_bus_new(as_io, as_mem, pic.irqs)
    pc_pci_chipset(bus)
    piix3_ide_pci_new(bus, ide[2])
    pci_bios_setup(bus)
    devs = {d.name: d for d in bus.devices.values()}
    reads = first_config_reads()
    assert ("PIIX4_PM", 0x40) in reads and ("piix3-ide", 0x40) in reads
    got = {k: devs[k[0]].config_read(k[1], size) for k, (_, size) in reads.items()}
    assert got == {k: v for k, (v, _) in reads.items()}


# -- three disks: DMA and PIO on one channel, the secondary channel (multi/) --

MULTI = DATA / "multi"


def test_multi_recording_is_what_the_guest_did(tmp_path):
    """Each of the three disks (IDE index 0, 1, 2) read back what the
    guest wrote, and ended as the pristine disk plus the two
    sectors written at 1000 * (index + 1)."""
    serial = (MULTI / "serial.log").read_text(errors="replace")
    assert "ata1.01: FORCE: xfer_mask set to pio4" in serial and "GUEST: done" in serial
    before = pristine(tmp_path / "p.img").read_bytes()
    data = b"".join(b"GQEMU-LINUX-%05d\n" % i for i in range(1, 701))
    sums = sha256_txt()
    assert sums[0] == hashlib.sha256(before).hexdigest()
    for i in range(3):
        w = [ln.split() for ln in serial.splitlines() if ln.startswith("GUEST: ide%d w " % i)][0]
        assert w[3] == w[6]
        with lzma.open(MULTI / ("disk%d-after.img.xz" % i)) as f:
            after = f.read()
        lba = 1000 * (i + 1)
        expect = before[:lba * 512] + data[:1024] + before[lba * 512 + 1024:]
        assert after == expect
    multi_sums = [ln.split()[0] for ln in (MULTI / "sha256.txt").read_text().splitlines()]
    assert multi_sums[0] == sums[0]


def test_multi_replay_matches_qemu(tmp_path, capsys):
    """Linux probing master and slave and the secondary channel, DMA on
    the masters (BMDMA channels 0 and 1), PIO READ/WRITE MULTIPLE on the
    slave: every value as QEMU returned it, every disk as QEMU left it."""
    trace = tmp_path / "multi.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(MULTI / "guest-ram.txt.xz"), str(MULTI / "trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disks = [pristine(tmp_path / ("d%d.img" % i)) for i in range(3)]
    capsys.readouterr()
    args = ["replay", str(trace)]
    for i, d in enumerate(disks):
        args += ["--drive", "file=%s,format=raw,if=ide,index=%d" % (d, i)]
    rc = main(args)
    out = capsys.readouterr().out
    assert rc == 0 and "no divergence" in out, out
    for i, d in enumerate(disks):
        with lzma.open(MULTI / ("disk%d-after.img.xz" % i)) as f:
            assert d.read_bytes() == f.read(), i


# -- raw ATA commands through SG_IO (ata/, atacmd.c) --------------------------

ATA = DATA / "ata"


def ata_results() -> dict[str, dict[str, str]]:
    out = {}
    for ln in (ATA / "serial.log").read_text(errors="replace").splitlines():
        if ln.startswith("GUEST: ata "):
            f = ln.split()
            out[f[2]] = dict(kv.split("=", 1) for kv in f[3:])
    return out


def test_ata_recording_is_what_qemu_answered():
    """What QEMU 7.2 answered atacmd's commands (its registers through the
    ATA status return descriptor): facts the replay below then holds gqemu
    to, register by register."""
    r = ata_results()
    assert len(r) == 32
    assert r["check-power"]["cnt"] == "00ff"                    # active
    assert r["read-native-max"]["lba"] == "000000007fff"        # the last sector
    assert r["read-native-max-ext"]["lba"] == "000000007fff"
    assert r["identify"]["sum"] != r["identify-wc-off"]["sum"]  # word 85 bit 5
    for bad in ("setfeat-bad", "opcode-01", "nop", "device-reset", "smart-bad-sig",
                "read-sectors-past-end", "read-dma-straddle", "read-dma-ext-past-end",
                "set-multiple-bad"):
        assert r[bad]["sense"] == "00/0b/00", bad               # ABORTED COMMAND
    assert r["read-sectors-ext-end"]["lba"] == "000000008000"
    assert r["idle-immediate"]["st"] == "40"                    # DRDY, no DSC
    assert (r["exec-diagnostic"]["err"], r["exec-diagnostic"]["cnt"],
            r["exec-diagnostic"]["lba"]) == ("01", "0001", "000000000001")
    assert "GUEST: done" in (ATA / "serial.log").read_text(errors="replace")


def test_ata_replay_matches_qemu(tmp_path, capsys):
    trace = tmp_path / "ata.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(ATA / "guest-ram.txt.xz"), str(ATA / "trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disk = pristine(tmp_path / "disk.img")
    rc, out = replay(trace, disk, capsys)
    assert rc == 0 and "no divergence" in out, out
    with lzma.open(ATA / "disk-after.img.xz") as f:
        after = f.read()
    assert disk.read_bytes() == after
    sector = after[7000 * 512:7001 * 512]                       # atacmd's WRITE SECTORS
    assert sector.startswith(b"atacmd WRITE SECTORS lba 7000\0") and sector.endswith(b"\x5a" * 64)


# -- I/O errors: blkdebug under both QEMU and gqemu (eio/) ---------------------

EIO = DATA / "eio"


def test_eio_recording_went_through_libata_error_handling():
    """QEMU failed the requests blkdebug.cfg names (status 0x41, ABRT):
    Linux retried (the read of 1000 and the write of 3000 then succeeded),
    gave up on 2000, soft-reset the link and slowed the drive to MWDMA1."""
    serial = (EIO / "serial.log").read_text(errors="replace")
    for want in ("GUEST: eio read 1000 (fails once) rc=0", "GUEST: eio read 2000 (fails always) rc=1",
                 "GUEST: eio write 3000 (fails once) rc=0", "GUEST: eio read 4000 rc=0",
                 "ata1: soft resetting link", "limiting speed to MWDMA1",
                 "ata1.00: configured for MWDMA1", "error: { ABRT }", "GUEST: done"):
        assert want in serial, want


def test_eio_replay_matches_qemu(tmp_path, capsys):
    """gqemu's blkdebug fails the same requests (the same config file), its
    IDE model answers them as QEMU's did, through Linux's EH and reset."""
    trace = tmp_path / "eio.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(EIO / "guest-ram.txt.xz"), str(EIO / "trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disk = pristine(tmp_path / "disk.img")
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive",
               "file=blkdebug:%s:%s,format=raw" % (EIO / "blkdebug.cfg", disk)])
    out = capsys.readouterr().out
    assert rc == 0 and "no divergence" in out, out
    with lzma.open(EIO / "disk-after.img.xz") as f:
        assert disk.read_bytes() == f.read()


# -- the default workload on a qcow2 drive (qcow2/) ----------------------------

QCOW2 = DATA / "qcow2"


def test_qcow2_recording_is_the_raw_one(tmp_path, qemu_img):
    """Real qemu-img: the qcow2 drive started as the raw pristine disk and
    ended with the same guest-visible contents as the raw run's."""
    import subprocess
    for name, want in (("disk-pristine", None), ("disk-after", disk_after())):
        q = tmp_path / (name + ".qcow2")
        with lzma.open(QCOW2 / (name + ".qcow2.xz")) as f:
            q.write_bytes(f.read())
        raw = tmp_path / (name + ".raw")
        subprocess.run([qemu_img, "convert", "-f", "qcow2", "-O", "raw", str(q), str(raw)],
                       check=True)
        if want is None:
            want = pristine(tmp_path / "p.img").read_bytes()
        assert raw.read_bytes() == want, name


def test_qcow2_replay_matches_qemu(tmp_path, capsys):
    """Linux's DMA reads and writes through gqemu's qcow2 driver: every
    value as QEMU returned it, and the image file byte for byte as QEMU's
    qcow2 driver left it."""
    trace = tmp_path / "q.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(QCOW2 / "guest-ram.txt.xz"), str(QCOW2 / "trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disk = tmp_path / "disk.qcow2"
    with lzma.open(QCOW2 / "disk-pristine.qcow2.xz") as f:
        disk.write_bytes(f.read())
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=qcow2" % disk])
    out = capsys.readouterr().out
    assert rc == 0 and "no divergence" in out, out
    with lzma.open(QCOW2 / "disk-after.qcow2.xz") as f:
        assert disk.read_bytes() == f.read()


# -- Linux's virtio_blk on a legacy virtio-blk-pci (virtio/, record_virtio.py) --

VIRTIO = DATA / "virtio"


def vdisk_pristine(path: Path) -> Path:
    with open(path, "wb") as f:
        for lba in range(2 * 2048):
            f.write(scratch_sector(lba))
    return path


def test_virtio_recording_is_what_the_guest_did(tmp_path):
    serial = (VIRTIO / "serial.log").read_text(errors="replace")
    assert "GUEST: vda 4096 sectors" in serial and "GUEST: done" in serial
    w = [ln.split() for ln in serial.splitlines() if ln.startswith("GUEST: vda w ")][0]
    assert w[3] == w[6]
    data = b"".join(b"GQEMU-LINUX-%05d\n" % i for i in range(1, 701))
    expect = bytearray(vdisk_pristine(tmp_path / "p.img").read_bytes())
    expect[1600 * 512:1600 * 512 + 8192] = data[:8192]
    expect[3000 * 512:3001 * 512] = data[:512]
    with lzma.open(VIRTIO / "vdisk-after.img.xz") as f:
        assert f.read() == bytes(expect)


def test_virtio_replay_matches_qemu(tmp_path, capsys):
    """Linux's virtio_pci + virtio_blk from start_kernel on: the PCI scan,
    MSI-X capability and vectors, feature negotiation, the queue, every
    request (indirect descriptors, event index) with the guest's rings and
    buffers from the snapshots; every port value and every byte the device
    wrote to RAM as QEMU's, the disk as QEMU left it."""
    trace = tmp_path / "v.gqt"
    rc = main(["import-qemu-trace", "-q", "-m", "256", "--ram-snapshots",
               str(VIRTIO / "guest-ram.txt.xz"), str(VIRTIO / "io-trace.log.xz"), "-o", str(trace)])
    assert rc == 0, capsys.readouterr().err
    disk = vdisk_pristine(tmp_path / "vd.img")
    capsys.readouterr()
    rc = main(["replay", str(trace), "--drive", "file=%s,format=raw,if=virtio" % disk])
    out = capsys.readouterr().out
    assert rc == 0 and "no divergence" in out, out
    with lzma.open(VIRTIO / "vdisk-after.img.xz") as f:
        assert disk.read_bytes() == f.read()
