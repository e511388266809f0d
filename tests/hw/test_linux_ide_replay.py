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
