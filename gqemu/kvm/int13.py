"""INT 13h disk services, answered as SeaBIOS 1.16.2 answers them under
QEMU 7.2 (``tests/data/kvm/int13x.asm`` recorded them).

Drives 0x80.. are the IDE disks in index order, then the virtio-blk ones
(``gqemu.kvm.int13_virtio``: SeaBIOS's virtio driver).  Each call ends as
SeaBIOS's ``disk_ret``: AH = the status (AL kept unless the service sets
it), CF = status != 0, and the status is remembered for AH=01.  The disk
transfers and the reset drive the IDE controller port access by port
access as SeaBIOS does (``gqemu.kvm.firmware``), as exits of the vCPU.

The logical geometry (CHS services, AH=08, AH=15) is SeaBIOS's
``setup_translation`` of the IDENTIFY geometry under the translation QEMU
passes in CMOS (none; LBA: 16/32/64/128/255 heads x 63; LARGE: halve the
cylinders and double the heads to <= 1024 cylinders), clipped to 1024
cylinders.

Services: 00 reset (SRST), 01 last status, 02/03/04 CHS read/write/verify
(1..128 sectors, inside the logical geometry), 05 format (checks only),
08 parameters (cylinders - 2: SeaBIOS keeps the last one), 09 0C 0D 11 14
(successful stubs), 10 ready (a status read), 15 size ((cylinders - 1) x
heads x sectors), 16 (not for disks), 41 extensions (EDD 3.0, BX not
checked), 42/43/44/47 extended read/write/verify/seek (the start must be
on the disk; more than 64 KiB: AH=09), 45/49 (success), 46 (not
removable), 48 EDD parameters (1.x, 2.x with SeaBIOS's DPTE at its
address, 3.0 fields without updating the size word, as SeaBIOS does),
4E 01/03/04/06.  Anything else, or no such drive: AH=01.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/disk.c, src/block.c (setup_translation, fill_*_edd,
process_op), src/hw/ata.c.
"""
from __future__ import annotations

import struct
from typing import Any

from gqemu.kvm.firmware import FirmwareError, ata_isready, ata_pio_transfer, ata_reset
from gqemu.kvm.int13_virtio import virtio_fill_edd, virtio_transfer

__all__ = ["int13_disk", "bios_lchs", "DPTE_SEG", "DPTE_OFF"]

DISK_RET_SUCCESS = 0x00
DISK_RET_EPARAM = 0x01
DISK_RET_EBOUNDARY = 0x09
DISK_RET_EBADTRACK = 0x0C
DISK_RET_ENOTREADY = 0xAA
DISK_RET_ENOTREMOVABLE = 0xB2

#: where SeaBIOS 1.16.2 (Debian's build, QEMU 7.2) keeps DefaultDPTE
DPTE_SEG, DPTE_OFF = 0xD980, 0xF4C0
PIIX_IDE_PATH = 0x00010100      # PCI 00:01.1 as EDD's interface path


def bios_lchs(cyls: int, heads: int, spt: int, sectors: int, trans: str) -> tuple[int, int, int]:
    """The logical CHS SeaBIOS gives a disk.  SeaBIOS: setup_translation."""
    if trans == "lba":
        spt = 63
        if sectors > 63 * 255 * 1024:
            heads, cyls = 255, 1024
        else:
            sect = (sectors & 0xFFFFFFFF) // 63
            h = sect // 1024
            heads = 255 if h > 128 else 128 if h > 64 else 64 if h > 32 else 32 if h > 16 else 16
            cyls = sect // heads
    elif trans == "large":
        while cyls > 1024:
            cyls >>= 1
            heads = (heads << 1) & 0xFFFF
            if heads > 127:
                break
    return min(cyls, 1024), heads, spt


class Call:
    """The caller's registers as SeaBIOS's ``struct bregs`` (16-bit)."""

    def __init__(self, ax: int, bx: int, cx: int, dx: int, si: int, ds: int, es: int) -> None:
        self.ax, self.bx, self.cx, self.dx, self.si = ax, bx, cx, dx, si
        self.ds, self.es = ds, es

    @property
    def ah(self) -> int:
        return self.ax >> 8

    @property
    def al(self) -> int:
        return self.ax & 0xFF

    def set_al(self, v: int) -> None:
        self.ax = (self.ax & 0xFF00) | (v & 0xFF)

    def set_ah(self, v: int) -> None:
        self.ax = (self.ax & 0x00FF) | ((v & 0xFF) << 8)


def int13_disk(bs: Any, io: Any, r: Call) -> int:
    """One INT 13h call on ``r`` (updated in place).  Returns the status
    (AH).  ``io`` makes the controller's port accesses.
    SeaBIOS: handle_legacy_disk, disk_13."""
    drive = r.dx & 0xFF
    disk = bs.disks[drive - 0x80] if 0x80 <= drive < 0x80 + len(bs.disks) else None
    if disk is None:
        return _ret(bs, r, DISK_RET_EPARAM)
    ah = r.ah
    try:
        status = _service(bs, io, r, disk, ah)
    except FirmwareError:
        status = DISK_RET_EBADTRACK
    if ah == 0x01:                      # reports, does not record
        r.set_ah(status)
        return status
    if ah == 0x15 and status == DISK_RET_SUCCESS:
        bs.last_status = 0
        r.set_ah(3)
        return 0
    if ah == 0x41 and status == DISK_RET_SUCCESS:
        bs.last_status = 0
        r.set_ah(0x30)
        return 0
    return _ret(bs, r, status)


def _ret(bs: Any, r: Call, status: int) -> int:
    """SeaBIOS: __disk_ret (AH, CF by the caller, the last status: the
    disks' or the floppies', in the BIOS data area)."""
    if (r.dx & 0xFF) >= 0x80:
        bs.last_status = status
    else:                               # floppy_last_status (0040:0041)
        bs.ram[0x441] = status
    r.set_ah(status)
    return status


def _lchs(disk: dict) -> tuple[int, int, int]:
    return bios_lchs(disk["cyls"], disk["heads"], disk["spt"], disk["sectors"],
                     disk.get("trans", "none"))


def _service(bs: Any, io: Any, r: Call, disk: dict, ah: int) -> int:
    virtio = disk.get("kind") == "virtio"
    if ah == 0x00:
        if not virtio:                  # virtio: default_process_op
            ata_reset(io, disk["base"], disk["ctl"], disk["unit"])
        return DISK_RET_SUCCESS
    if ah == 0x01:
        return bs.last_status
    if ah in (0x02, 0x03, 0x04):
        return _basic_access(bs, io, r, disk, ah)
    if ah == 0x05:
        nlc, nlh, nls = _lchs(disk)
        if (r.cx >> 8) >= nlc or (r.dx >> 8) >= nlh or r.al == 0 or r.al > nls:
            return DISK_RET_EPARAM
        return DISK_RET_SUCCESS
    if ah == 0x08:
        nlc, nlh, nls = _lchs(disk)
        nlc = min(nlc - 2, 1023) & 0xFFFF
        r.set_al(0)
        r.cx = ((nlc & 0xFF) << 8) | ((nlc >> 2) & 0xC0) | (nls & 0x3F)
        r.dx = (((nlh - 1) & 0xFF) << 8) | (r.dx & 0xFF)
        _ret(bs, r, DISK_RET_SUCCESS)
        r.dx = (r.dx & 0xFF00) | len(bs.disks)
        return DISK_RET_SUCCESS
    if ah in (0x09, 0x0C, 0x0D, 0x11, 0x14, 0x45, 0x49):
        return DISK_RET_SUCCESS
    if ah == 0x10:
        if virtio:
            return DISK_RET_SUCCESS
        return DISK_RET_SUCCESS if ata_isready(io, disk["base"]) else DISK_RET_ENOTREADY
    if ah == 0x15:
        nlc, nlh, nls = _lchs(disk)
        n = ((nlc - 1) * nlh * nls) & 0xFFFFFFFF
        r.cx, r.dx = n >> 16, n & 0xFFFF
        return DISK_RET_SUCCESS
    if ah == 0x41:
        r.bx, r.cx = 0xAA55, 0x0007
        return DISK_RET_SUCCESS
    if ah in (0x42, 0x43, 0x44, 0x47):
        return _extended_access(bs, io, r, disk, ah)
    if ah == 0x46:
        return DISK_RET_ENOTREMOVABLE
    if ah == 0x48:
        return _fill_edd(bs, r, disk)
    if ah == 0x4E:
        return DISK_RET_SUCCESS if r.al in (0x01, 0x03, 0x04, 0x06) else DISK_RET_EPARAM
    return DISK_RET_EPARAM


def _disk_op(bs: Any, io: Any, disk: dict, lba: int, count: int, addr: int,
             ah: int) -> tuple[int, int]:
    """(status, sectors done) of one SeaBIOS disk op.  SeaBIOS: process_op."""
    if count * 512 > 64 * 1024:
        return DISK_RET_EBOUNDARY, 0
    if ah not in (0x02, 0x03, 0x42, 0x43):      # verify, seek: nothing to do
        return DISK_RET_SUCCESS, count
    write = ah in (0x03, 0x43)
    ram = bs.ram
    if disk.get("kind") == "virtio":    # SeaBIOS's 32-bit virtio driver: flat
        done = virtio_transfer(bs, io, disk, lba, count, addr, write)
        return (DISK_RET_SUCCESS if done == count else DISK_RET_EBADTRACK), done
    # SeaBIOS's ATA driver runs in 16-bit mode: each 512-byte block goes
    # through ES = (linear >> 4) & 0xFFFF, DI = linear & 0xF (insw_fl), so a
    # buffer above 1 MiB (FFFF:0010 and up) wraps to the bottom of RAM
    blocks = [((addr + 512 * i) & 0xFFFFF) for i in range(count)]
    data = b"".join(bytes(ram[a:a + 512]) for a in blocks) if write else None
    done, buf = ata_pio_transfer(io, disk["base"], disk["ctl"], disk["unit"],
                                 lba, count, write, data)
    for i in range(len(buf or b"") // 512):
        a = blocks[i]
        ram[a:a + 512] = buf[512 * i:512 * (i + 1)]
        if bs.on_ram_write is not None:
            bs.on_ram_write(a, 512)
    return (DISK_RET_SUCCESS if done == count else DISK_RET_EBADTRACK), done


def _basic_access(bs: Any, io: Any, r: Call, disk: dict, ah: int) -> int:
    """SeaBIOS: basic_access."""
    count = r.al
    cyl = (r.cx >> 8) | ((r.cx << 2) & 0x300)
    sector = r.cx & 0x3F
    head = r.dx >> 8
    if count > 128 or count == 0 or sector == 0:
        return DISK_RET_EPARAM
    nlc, nlh, nls = _lchs(disk)
    if cyl >= nlc or head >= nlh or sector > nls:
        return DISK_RET_EPARAM
    lba = ((cyl * nlh + head) * nls + sector - 1) & 0xFFFFFFFF
    status, done = _disk_op(bs, io, disk, lba, count, (r.es << 4) + r.bx, ah)
    r.set_al(done)
    return status


def _extended_access(bs: Any, io: Any, r: Call, disk: dict, ah: int) -> int:
    """SeaBIOS: extended_access (the packet's size byte is not checked)."""
    ram = bs.ram
    dap = (r.ds << 4) + r.si
    count, off, seg, lba = struct.unpack_from("<HHHQ", ram, dap + 2)
    if lba >= disk["sectors"]:
        return DISK_RET_EPARAM
    if count == 0:
        return DISK_RET_SUCCESS
    status, done = _disk_op(bs, io, disk, lba, count, (seg << 4) + off, ah)
    struct.pack_into("<H", ram, dap + 2, done)
    return status


def _fill_edd(bs: Any, r: Call, disk: dict) -> int:
    """SeaBIOS: fill_ata_edd, fill_generic_edd."""
    ram = bs.ram
    p = (r.ds << 4) + r.si
    size = struct.unpack_from("<H", ram, p)[0]
    if size < 26:
        return DISK_RET_EPARAM
    npc, nph, nps, lba = disk["cyls"], disk["heads"], disk["spt"], disk["sectors"]
    if lba > nps * nph * 0x3FFF:
        infos, cyls = 0x00, 0x3FFF
    else:
        infos, cyls = 0x02, npc
    struct.pack_into("<HHIIIQH", ram, p, 26, infos, cyls, nph, nps, lba, 512)
    if disk.get("kind") == "virtio":
        virtio_fill_edd(bs, p, size, disk)
        return DISK_RET_SUCCESS
    if size < 30:
        return DISK_RET_SUCCESS
    struct.pack_into("<H", ram, p, 30)
    struct.pack_into("<HH", ram, p + 26, DPTE_OFF, DPTE_SEG)
    _fill_dpte(ram, disk)
    if size < 66:
        return DISK_RET_SUCCESS
    t13 = size == 74
    struct.pack_into("<HBBH", ram, p + 30, 0xBEDD, 44 if t13 else 36, 0, 0)
    ram[p + 36:p + 48] = b"PCI ATA     "
    path = PIIX_IDE_PATH
    if t13:
        path |= (disk["base"] != 0x1F0) << 24           # the channel
    struct.pack_into("<Q", ram, p + 48, path)
    struct.pack_into("<Q", ram, p + 56, disk["unit"])
    if t13:
        struct.pack_into("<Q", ram, p + 64, 0)
        ram[p + 73] = (-sum(ram[p + 30:p + 73])) & 0xFF
    else:
        ram[p + 65] = (-sum(ram[p + 30:p + 65])) & 0xFF
    if bs.on_ram_write is not None:
        bs.on_ram_write(p, size if size < 74 else 74)
    return DISK_RET_SUCCESS


def _fill_dpte(ram: Any, disk: dict) -> None:
    """SeaBIOS's DefaultDPTE for the disk (options: LBA translation, plus
    CHS translation and its kind when the geometry is translated)."""
    options = 1 << 4
    trans = disk.get("trans", "none")
    if trans != "none":
        options |= 1 << 3
        if trans == "lba":
            options |= 1 << 9
    a = (DPTE_SEG << 4) + DPTE_OFF
    struct.pack_into("<HHBBBBBBHHB", ram, a, disk["base"], disk["ctl"],
                     0xE0 | (disk["unit"] << 4), 0xCB, 14 if disk["base"] == 0x1F0 else 15,
                     1, 0, 0, options, 0, 0x11)
    ram[a + 15] = (-sum(ram[a:a + 15])) & 0xFF
