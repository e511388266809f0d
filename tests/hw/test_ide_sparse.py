"""IDE at high LBAs: every address bit reaches the right byte of the image.

The other IDE tests use 2048-sector disks, so every address bit above 10
is zero there.  These disks are sparse and huge: a raw file of exactly
2^28 sectors (the last LBA28 sector is the last sector of the disk), a raw
file of 2^33 sectors (LBA48 past 2^32), and a qcow2 image of 2^47 sectors
(LBA48 bits 40-46).  Real qemu-io writes one-byte-pattern markers at chosen
LBAs; a guest (gqemu.guest.ata, through the machine's vCPU) reads them with
LBA28 or LBA48 commands, by PIO and DMA; what the guest writes is checked
with real qemu-io at exactly ``lba * 512``, and its neighbours untouched.

The LBAs have bits set in every byte of the address, and some transfers
cross 2^24, 2^32 or 2^40, where the device has to carry the address from
one register into the next between PIO blocks (ide_set_sector).
"""
from __future__ import annotations

import subprocess

import pytest

from gqemu.guest.ata import ATA
from gqemu.machine import Machine, drive_config

# name -> (format, sectors, command set, markers {lba: pattern}, crossings)
IMAGES = {
    "raw-lba28": ("raw", 1 << 28, "lba28",
                  {0x0FFFFFFF: 0xA1, 0x0ABCDEF1: 0xA2, 0x00FFFFFF: 0xA3, 0x01000000: 0xA4,
                   0x0000FFFF: 0xA5, 0x00010000: 0xA6},
                  (0x00FFFFFF, 0x0000FFFF)),
    "raw-lba48": ("raw", 1 << 33, "lba48",
                  {0x1A5C3E12B: 0xB1, 0x0FFFFFFFF: 0xB2, 0x100000000: 0xB3, 0x1FFFFFFFF: 0xB4,
                   0x0FFFFFF: 0xB5, 0x1000000: 0xB6},
                  (0x0FFFFFFFF, 0x0FFFFFF)),
    "qcow2-lba48": ("qcow2", 1 << 47, "lba48",
                    {0x7EDCBA987654: 0xC1, 0x00FFFFFFFFFF: 0xC2, 0x010000000000: 0xC3,
                     0x7FFFFFFFFFFF: 0xC4},
                    (0x00FFFFFFFFFF,)),
}


def make_image(tmp_path, name, qemu_img, qemu_io):
    fmt, nsect, _cmds, markers, _cross = IMAGES[name]
    path = tmp_path / ("%s.img" % name)
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(nsect * 512)
    else:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M",
                        str(path), str(nsect * 512)], check=True)
    qio(qemu_io, path, fmt, ["write -P 0x%02x %d 512" % (p, lba * 512)
                             for lba, p in markers.items()])
    return path


def qio(qemu_io, path, fmt, cmds):
    """Run real qemu-io; fail on any error or pattern mismatch."""
    args = [qemu_io, "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    p = subprocess.run(args + [str(path)], capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "failed" not in out.lower() and "error" not in out.lower(), out
    return out


def run_guest(path, fmt, guest):
    """Run ``guest(ata)`` on a vCPU of a pc machine with ``path`` as hda."""
    m = Machine(drive_config(["file=%s,format=%s,if=ide,index=0" % (path, fmt)]))
    try:
        m.add_cpu(lambda cpu: guest(ATA(cpu)))
        m.run()
    finally:
        m.close()


def read(ata, mode, lba, count, lba48):
    if mode == "dma":
        return ata.read_dma(lba, count, lba48=lba48)
    return ata.read_sectors(lba, count, lba48=lba48)


def write(ata, mode, lba, data, lba48):
    if mode == "dma":
        ata.write_dma(lba, data, lba48=lba48)
    else:
        ata.write_sectors(lba, data, lba48=lba48)


@pytest.mark.parametrize("mode", ["pio", "dma"])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_read_high_lbas(tmp_path, qemu_img, qemu_io, name, mode):
    fmt, nsect, cmds, markers, crossings = IMAGES[name]
    path = make_image(tmp_path, name, qemu_img, qemu_io)
    lba48 = cmds == "lba48"
    got = {}

    def guest(ata):
        for lba in markers:
            got[lba] = read(ata, mode, lba, 1, lba48)
        for lba in crossings:
            # two sectors, one PIO block each: the second address is the
            # first plus one, carried across a register boundary
            got[("x", lba)] = read(ata, mode, lba, 2, lba48)
        got["before-last"] = read(ata, mode, nsect - 2, 1, lba48)

    run_guest(path, fmt, guest)
    for lba, pat in markers.items():
        assert got[lba] == bytes([pat]) * 512, "LBA 0x%x" % lba
    for lba in crossings:
        assert got[("x", lba)] == bytes([markers[lba]]) * 512 + bytes([markers[lba + 1]]) * 512
    assert got["before-last"] == bytes(512)


@pytest.mark.parametrize("mode", ["pio", "dma"])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_write_high_lbas(tmp_path, qemu_img, qemu_io, name, mode):
    fmt, nsect, cmds, markers, crossings = IMAGES[name]
    path = make_image(tmp_path, name, qemu_img, qemu_io)
    lba48 = cmds == "lba48"
    # one sector 4 below every marker; two sectors across each crossing
    # (over the markers there); the disk's last sector
    writes = {lba - 4: 0x10 + i for i, lba in enumerate(sorted(markers))}
    pairs = {c: (0xE0 + i, 0xE8 + i) for i, c in enumerate(crossings)}
    last = nsect - 1

    def guest(ata):
        for lba, pat in writes.items():
            write(ata, mode, lba, bytes([pat]) * 512, lba48)
        for c, (p0, p1) in pairs.items():
            write(ata, mode, c, bytes([p0]) * 512 + bytes([p1]) * 512, lba48)
        write(ata, mode, last, b"\xee" * 512, lba48)

    run_guest(path, fmt, guest)
    overwritten = {last} | set(pairs) | {c + 1 for c in pairs}
    checks = ["read -P 0x%02x %d 512" % (pat, lba * 512) for lba, pat in writes.items()]
    for c, (p0, p1) in pairs.items():
        checks += ["read -P 0x%02x %d 512" % (p0, c * 512),
                   "read -P 0x%02x %d 512" % (p1, (c + 1) * 512),
                   "read -P 0 %d 512" % ((c - 1) * 512),
                   "read -P 0 %d 512" % ((c + 2) * 512)]
    checks += ["read -P 0x%02x %d 512" % (p, lba * 512)
               for lba, p in markers.items() if lba not in overwritten]
    checks += ["read -P 0xee %d 512" % (last * 512),
               "read -P 0 %d 512" % ((last - 1) * 512)]
    # nothing landed in the low sectors a dropped address bit would hit
    checks += ["read -P 0 0 %d" % (64 * 512)]
    qio(qemu_io, path, fmt, checks)
