"""INT 13h on a virtio-blk disk, as SeaBIOS 1.16.2's driver does it.

SeaBIOS numbers the hard disks by driver type (ATA before virtio-blk),
then by controller (the IDE index; the PCI address): the virtio-blk disks
follow the IDE ones.  Its legacy virtio driver leaves one vring per device
in high memory (``gqemu.hw.virtio.virtio_pci.virtio_pci_seabios_writes``:
the PFN) with every descriptor on the free list and interrupts off
(``VRING_AVAIL_F_NO_INTERRUPT``); a transfer is one chain per at most 64
sectors (no SIZE_MAX feature: ``blk_num_max`` 64): the 16-byte request
header, the buffer, the status byte, added at the free list's head, the
avail index bumped, the queue notified (a 16-bit write of 0 to
QUEUE_NOTIFY), then the used index polled, the chain returned to the free
list and the ISR read (which lowers the interrupt).  These port accesses
are exits of the vCPU, as the IDE driver's are.  The driver runs in 32-bit
mode: buffers are flat addresses (no 1 MiB wrap).  A failed chunk ends the
transfer: status 0x0C, no sector counted.

Geometry: the physical CHS is the device's config geometry; SeaBIOS's
``get_translation`` heuristic picks none (<= 1024/16/63), LARGE (cylinders
x heads <= 131072) or LBA.  EDD: ``fill_generic_edd`` with the DPTE pointer
FFFF:FFFF, "PCI " and "SCSI    ".

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/hw/virtio-blk.c, src/hw/virtio-ring.c, src/block.c
(get_translation, fill_edd).
"""
from __future__ import annotations

import struct
from typing import Any

__all__ = ["virtio_disk", "virtio_bios_disks", "virtio_ring_init", "virtio_transfer",
           "virtio_fill_edd"]

VIRTIO_PCI_QUEUE_NOTIFY = 0x10
VIRTIO_PCI_ISR = 0x13
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_AVAIL_F_NO_INTERRUPT = 1
VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT = 0, 1
VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP = 0, 2
BLK_NUM_MAX = 64
# where the request header and status byte live (SeaBIOS: on its stack)
HDR_ADDR, STATUS_ADDR = 0xEFF00, 0xEFF10
MAX_POLLS = 100_000


def _translation(cyls: int, heads: int, spt: int, sectors: int) -> str:
    """SeaBIOS: get_translation, for a disk whose translation QEMU does
    not pass in CMOS."""
    if not heads or not cyls or not spt or heads * cyls * spt > sectors:
        return "lba"
    if cyls <= 1024 and heads <= 16 and spt <= 63:
        return "none"
    if cyls * heads <= 131072:
        return "large"
    return "lba"


def virtio_disk(proxy: Any, pfn: int) -> dict:
    """The INT 13h disk entry of a virtio-blk function whose SeaBIOS vring
    is at ``pfn``."""
    vdev = proxy.vdev
    cyls, heads, spt = vdev.geometry
    from gqemu.block.block_backend import blk_nb_sectors
    sectors = blk_nb_sectors(vdev.blk)
    num = vdev.vq[0].num
    desc = pfn << 12
    avail = desc + 16 * num
    used = (avail + 4 + 2 * num + 4095) & ~4095
    return {"kind": "virtio", "proxy": proxy, "sectors": sectors, "cyls": cyls & 0xFFFF,
            "heads": heads, "spt": spt, "trans": _translation(cyls & 0xFFFF, heads, spt, sectors),
            "num": num, "desc": desc, "avail": avail, "used": used,
            "free_head": 0, "last_used": 0}


def virtio_bios_disks(ram: Any, ram_size: int, proxies: Any) -> list[dict]:
    """The INT 13h entries of the virtio-blk functions (PCI order), their
    vrings initialised where SeaBIOS puts them."""
    from gqemu.hw.virtio.virtio_pci import seabios_ring_pfn
    disks = []
    for k, proxy in enumerate(proxies):
        disks.append(virtio_disk(proxy, seabios_ring_pfn(ram_size, k)))
        virtio_ring_init(ram, disks[-1])
    return disks


def virtio_ring_init(ram: Any, disk: dict) -> None:
    """The vring as SeaBIOS's vring_init leaves it: each descriptor's next
    the following one (the last's 0), interrupts off."""
    num, desc = disk["num"], disk["desc"]
    for i in range(num):
        struct.pack_into("<H", ram, desc + 16 * i + 14, (i + 1) % num)
    struct.pack_into("<H", ram, disk["avail"], VRING_AVAIL_F_NO_INTERRUPT)


def _iobase(disk: dict) -> int:
    return disk["proxy"].get_long(0x10) & ~3


def _one_chain(bs: Any, io: Any, disk: dict, sg: list[tuple[int, int]], write: bool) -> None:
    """SeaBIOS: virtio_blk_op_one_segment (vring_add_buf, vring_kick, the
    used index polled, vring_get_buf, vp_get_isr)."""
    ram = bs.ram
    desc, num = disk["desc"], disk["num"]
    nout = 2 if write else 1
    head = i = prev = disk["free_head"]
    for k, (addr, length) in enumerate(sg):
        flags = VRING_DESC_F_NEXT | (VRING_DESC_F_WRITE if k >= nout else 0)
        struct.pack_into("<QIH", ram, desc + 16 * i, addr, length, flags)
        prev = i
        i = struct.unpack_from("<H", ram, desc + 16 * i + 14)[0]
    flags = struct.unpack_from("<H", ram, desc + 16 * prev + 12)[0]
    struct.pack_into("<H", ram, desc + 16 * prev + 12, flags & ~VRING_DESC_F_NEXT)
    disk["free_head"] = i
    avail = disk["avail"]
    idx = struct.unpack_from("<H", ram, avail + 2)[0]
    struct.pack_into("<H", ram, avail + 4 + 2 * (idx % num), head)
    struct.pack_into("<H", ram, avail + 2, (idx + 1) & 0xFFFF)
    if bs.on_ram_write is not None:
        bs.on_ram_write(desc, 16 * num)
        bs.on_ram_write(avail, 4 + 2 * num)
    iob = _iobase(disk)
    sync = getattr(io, "sync_ram", None)
    if sync is not None:
        sync()                  # a recording has the chain before the notify
    io.outsw(iob + VIRTIO_PCI_QUEUE_NOTIFY, struct.pack("<H", 0))
    used = disk["used"]
    for _ in range(MAX_POLLS):
        if struct.unpack_from("<H", ram, used + 2)[0] != disk["last_used"]:
            break
        io.poll()
    else:
        from gqemu.kvm.firmware import FirmwareError
        raise FirmwareError("virtio-blk request never completed")
    elem = struct.unpack_from("<I", ram, used + 4 + 8 * (disk["last_used"] % num))[0]
    i = elem
    while struct.unpack_from("<H", ram, desc + 16 * i + 12)[0] & VRING_DESC_F_NEXT:
        i = struct.unpack_from("<H", ram, desc + 16 * i + 14)[0]
    struct.pack_into("<H", ram, desc + 16 * i + 14, disk["free_head"])
    disk["free_head"] = elem
    disk["last_used"] = (disk["last_used"] + 1) & 0xFFFF
    io.inb(iob + VIRTIO_PCI_ISR)


def virtio_transfer(bs: Any, io: Any, disk: dict, lba: int, count: int, addr: int,
                    write: bool) -> int:
    """Read or write ``count`` sectors at ``lba`` to/from flat ``addr``;
    returns the sectors SeaBIOS reports (all, or 0 after a failure).
    SeaBIOS: virtio_blk_op."""
    ram = bs.ram
    struct.pack_into("<IIQ", ram, HDR_ADDR, VIRTIO_BLK_T_OUT if write else VIRTIO_BLK_T_IN,
                     0, lba)
    ram[STATUS_ADDR] = VIRTIO_BLK_S_UNSUPP
    if bs.on_ram_write is not None:
        bs.on_ram_write(HDR_ADDR, STATUS_ADDR + 1 - HDR_ADDR)
    left, p, sector = count, addr, lba
    while left > 0:
        n = min(left, BLK_NUM_MAX)
        _one_chain(bs, io, disk, [(HDR_ADDR, 16), (p, 512 * n), (STATUS_ADDR, 1)], write)
        if ram[STATUS_ADDR] != VIRTIO_BLK_S_OK:
            break
        sector += n
        struct.pack_into("<Q", ram, HDR_ADDR + 8, sector)
        if bs.on_ram_write is not None:
            bs.on_ram_write(HDR_ADDR, 16)
        p += 512 * n
        left -= n
    if not write and bs.on_ram_write is not None:
        bs.on_ram_write(addr, 512 * count)
    return count if ram[STATUS_ADDR] == VIRTIO_BLK_S_OK else 0


def virtio_fill_edd(bs: Any, p: int, size: int, disk: dict) -> None:
    """SeaBIOS: fill_generic_edd for a virtio-blk disk (``size`` >= 26),
    past the 26-byte head int13's caller already wrote for every disk."""
    ram = bs.ram
    n = 26
    if size >= 30:
        struct.pack_into("<H", ram, p, 30)
        struct.pack_into("<I", ram, p + 26, 0xFFFFFFFF)
        n = 30
    if size >= 66:
        t13 = size == 74
        devfn = disk["proxy"].devfn
        path = ((devfn >> 3) << 8) | ((devfn & 7) << 16)
        if not t13:
            path &= 0x00FFFFFF
        struct.pack_into("<HBBH", ram, p + 30, 0xBEDD, 44 if t13 else 36, 0, 0)
        ram[p + 36:p + 48] = b"PCI SCSI    "
        struct.pack_into("<Q", ram, p + 48, path)
        struct.pack_into("<Q", ram, p + 56, 0)
        if t13:
            struct.pack_into("<Q", ram, p + 64, 0)
            ram[p + 73] = (-sum(ram[p + 30:p + 73])) & 0xFF
            n = 74
        else:
            ram[p + 65] = (-sum(ram[p + 30:p + 65])) & 0xFF
            n = 66
    if bs.on_ram_write is not None:
        bs.on_ram_write(p, n)
