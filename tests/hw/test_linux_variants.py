"""More Linux recordings under real QEMU 7.2 (tests/data/linux, see its
README; test_linux_ide_replay.py has the default one): three disks with
PIO next to DMA (multi/), raw ATA commands (ata/), I/O errors through
blkdebug (eio/), a qcow2 drive (qcow2/), Linux's virtio_blk on a legacy
virtio-blk-pci (virtio/).  Each is imported with its RAM snapshots and
replayed: every value QEMU returned, every byte its device wrote to guest
RAM and the disk it left must come back from gqemu.
"""
from __future__ import annotations

import hashlib
import lzma
from pathlib import Path

from gqemu.blockdev import scratch_sector
from gqemu.cli.main import main
from tests.hw.test_linux_ide_replay import DATA, disk_after, pristine, replay, sha256_txt


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
