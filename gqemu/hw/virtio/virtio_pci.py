"""The legacy (virtio 0.9.5) PCI transport: vendor 0x1AF4, I/O BAR0.

BAR0 (QEMU 7.2 ``virtio_pci_config_ops``, accesses of 1, 2 or 4 bytes,
aligned; the register is chosen by the offset alone, whatever the width):

    0x00 host features (r)     0x04 guest features (rw)  0x08 queue PFN (rw)
    0x0C queue size (r)        0x0E queue select (rw)    0x10 queue notify (w)
    0x12 device status (rw)    0x13 ISR (r, read clears it and lowers INTx)
    0x14 ... the device config; with MSI-X enabled 0x14 is the config
         vector, 0x16 the selected queue's vector (rw; not 0 or 1: 0xFFFF)
         and the device config starts at 0x18

Other offsets below the config read all ones and ignore writes.  A PFN of
0 or a status of 0 resets the device; status ACKNOWLEDGE|DRIVER (3) turns
bus mastering on if the driver left it off (QEMU's fix for old Linux).
Bus mastering off (a PCI command write) disables the device and takes
DRIVER_OK out of its status; on again enables it.  The MSI-X capability
at 0x40 (2 vectors; its enable and mask-all bits are writable) and its
4 KiB memory BAR1 are described in config space as QEMU's are; the table
is not modelled (reads of BAR1 hit nothing, every vector stays masked), so
with MSI-X enabled an interrupt only sets the ISR: no INTx.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/virtio/virtio-pci.c (legacy paths).
"""
from __future__ import annotations

from typing import Any

from gqemu.hw.memory import MemoryRegionOps, memory_region_init_io
from gqemu.hw.pci import (PCI_BASE_ADDRESS_SPACE_IO, PCI_BASE_ADDRESS_SPACE_MEMORY,
                          PCI_COMMAND, PCI_COMMAND_MASTER, PCIDevice, pci_register_bar,
                          pci_set_irq)
from gqemu.hw.virtio.virtio import (VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER,
                                    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_NO_VECTOR,
                                    VIRTIO_F_BAD_FEATURE, VIRTIO_F_NOTIFY_ON_EMPTY,
                                    VIRTIO_QUEUE_MAX, VIRTIO_RING_F_EVENT_IDX,
                                    VIRTIO_RING_F_INDIRECT_DESC, VirtIODevice,
                                    virtio_config_read, virtio_config_write,
                                    virtio_queue_set_vector, virtio_queue_vector,
                                    virtio_queue_notify, virtio_reset, virtio_set_features,
                                    virtio_set_status)
from gqemu.hw.virtio.vring import (virtio_features_changed, virtio_memory_changed,
                                   virtio_queue_set_addr)

VIRTIO_PCI_HOST_FEATURES = 0x00
VIRTIO_PCI_GUEST_FEATURES = 0x04
VIRTIO_PCI_QUEUE_PFN = 0x08
VIRTIO_PCI_QUEUE_NUM = 0x0C
VIRTIO_PCI_QUEUE_SEL = 0x0E
VIRTIO_PCI_QUEUE_NOTIFY = 0x10
VIRTIO_PCI_STATUS = 0x12
VIRTIO_PCI_ISR = 0x13
VIRTIO_MSI_CONFIG_VECTOR = 0x14     # with MSI-X enabled
VIRTIO_MSI_QUEUE_VECTOR = 0x16
VIRTIO_PCI_CONFIG_OFF = 0x14        # without MSI-X
VIRTIO_PCI_CONFIG_OFF_MSIX = 0x18   # with
VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12
PCI_CAP_ID_MSIX = 0x11
MSIX_CAP = 0x40
MSIX_CONTROL_OFFSET = 3             # the high byte of the control word
MSIX_ENABLE_MASK, MSIX_MASKALL_MASK = 0x80, 0x40
MSIX_VECTORS = 2


class VirtIOPCIProxy(PCIDevice):
    """A virtio device behind the legacy PCI interface.  QEMU: VirtIOPCIProxy
    with disable-modern=on."""

    def __init__(self, name: str, devfn: int, device_id: int, class_id: int,
                 subsys_id: int, vdev: VirtIODevice) -> None:
        super().__init__(name, devfn, 0x1AF4, device_id, class_id,
                         subsys=(0x1AF4, subsys_id), irq_pin=1)
        self.vdev = vdev
        vdev.dma_as = self.dma_as
        vdev.notify_vector = self._notify
        vdev.host_features |= (1 << VIRTIO_F_NOTIFY_ON_EMPTY | 1 << VIRTIO_RING_F_INDIRECT_DESC
                               | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_F_BAD_FEATURE)
        size = 1
        while size < VIRTIO_PCI_CONFIG_OFF + vdev.config_len:
            size <<= 1
        self.bar0 = memory_region_init_io(self, virtio_pci_config_ops, self, "virtio-pci", size)
        pci_register_bar(self, 0, PCI_BASE_ADDRESS_SPACE_IO, size, self.bar0)
        pci_register_bar(self, 1, PCI_BASE_ADDRESS_SPACE_MEMORY, 4096, None)
        # MSI-X, 2 vectors: table in BAR1 at 0, PBA at 0x800
        self.add_capability(PCI_CAP_ID_MSIX, MSIX_CAP, bytes([0x01, 0x00, 0x01, 0, 0, 0,
                                                               0x01, 0x08, 0, 0]))
        # msix_init: the enable and mask-all bits are writable
        self.wmask[MSIX_CAP + MSIX_CONTROL_OFFSET] = MSIX_ENABLE_MASK | MSIX_MASKALL_MASK
        self.seabios_master = True

    def msix_enabled(self) -> bool:
        """QEMU: msix_enabled."""
        return bool(self.config[MSIX_CAP + MSIX_CONTROL_OFFSET] & MSIX_ENABLE_MASK)

    def _notify(self) -> None:
        """INTx follows ISR bit 0; with MSI-X enabled there is no INTx (a
        vector's message is not modelled: the table in BAR1 is not, so
        every vector stays masked).  QEMU: virtio_pci_notify."""
        if not self.msix_enabled():
            pci_set_irq(self, self.vdev.isr & 1)

    def config_write(self, addr: int, val: int, length: int) -> None:
        """Enabling MSI-X lowers INTx (msix_write_config); bus mastering
        off disables the device and clears DRIVER_OK in its status, on
        again enables it.  QEMU: virtio_write_config."""
        PCIDevice.config_write(self, addr, val, length)
        end = addr + length
        if addr <= MSIX_CAP + MSIX_CONTROL_OFFSET < end and self.msix_enabled():
            pci_set_irq(self, 0)
        if addr <= PCI_COMMAND < end:
            vdev = self.vdev
            if not self.config[PCI_COMMAND] & PCI_COMMAND_MASTER:
                vdev.disabled = True
                virtio_set_status(vdev, vdev.status & ~VIRTIO_CONFIG_S_DRIVER_OK)
            else:
                vdev.disabled = False

    def bus_master_changed(self) -> None:
        virtio_memory_changed(self.vdev)


def virtio_pci_reset(proxy: VirtIOPCIProxy) -> None:
    """QEMU: virtio_pci_reset."""
    virtio_reset(proxy.vdev)


def virtio_ioport_read(proxy: VirtIOPCIProxy, addr: int) -> int:
    """QEMU: virtio_ioport_read."""
    vdev = proxy.vdev
    if addr == VIRTIO_PCI_HOST_FEATURES:
        return vdev.host_features & 0xFFFFFFFF
    if addr == VIRTIO_PCI_GUEST_FEATURES:
        return vdev.guest_features
    if addr == VIRTIO_PCI_QUEUE_PFN:
        return (vdev.vq[vdev.queue_sel].desc >> VIRTIO_PCI_QUEUE_ADDR_SHIFT) & 0xFFFFFFFF \
            if vdev.queue_sel < len(vdev.vq) else 0
    if addr == VIRTIO_PCI_QUEUE_NUM:
        return vdev.vq[vdev.queue_sel].num if vdev.queue_sel < len(vdev.vq) else 0
    if addr == VIRTIO_PCI_QUEUE_SEL:
        return vdev.queue_sel
    if addr == VIRTIO_PCI_STATUS:
        return vdev.status
    if addr == VIRTIO_PCI_ISR:
        ret = vdev.isr
        vdev.isr = 0
        pci_set_irq(proxy, 0)
        return ret
    if addr == VIRTIO_MSI_CONFIG_VECTOR:
        return vdev.config_vector
    if addr == VIRTIO_MSI_QUEUE_VECTOR:
        return virtio_queue_vector(vdev, vdev.queue_sel)
    return 0xFFFFFFFF


def virtio_ioport_write(proxy: VirtIOPCIProxy, addr: int, val: int) -> None:
    """QEMU: virtio_ioport_write."""
    vdev = proxy.vdev
    val &= 0xFFFFFFFF
    if addr == VIRTIO_PCI_GUEST_FEATURES:
        if val & (1 << VIRTIO_F_BAD_FEATURE):
            val = vdev.bad_features()
        if virtio_set_features(vdev, val):
            virtio_features_changed(vdev)
    elif addr == VIRTIO_PCI_QUEUE_PFN:
        pa = val << VIRTIO_PCI_QUEUE_ADDR_SHIFT
        if pa == 0:
            virtio_pci_reset(proxy)
        elif vdev.queue_sel < len(vdev.vq):
            virtio_queue_set_addr(vdev, vdev.queue_sel, pa)
    elif addr == VIRTIO_PCI_QUEUE_SEL:
        if val < VIRTIO_QUEUE_MAX:
            vdev.queue_sel = val
    elif addr == VIRTIO_PCI_QUEUE_NOTIFY:
        # the whole value: a dword of 0x10000 is no queue (QEMU compares
        # it with VIRTIO_QUEUE_MAX)
        if val < len(vdev.vq) and vdev.vq[val].num:
            virtio_queue_notify(vdev, val)
    elif addr == VIRTIO_MSI_CONFIG_VECTOR:
        # an unknown vector reads back as none (msix_vector_use fails)
        vdev.config_vector = val & 0xFFFF if val < MSIX_VECTORS else VIRTIO_NO_VECTOR
    elif addr == VIRTIO_MSI_QUEUE_VECTOR:
        virtio_queue_set_vector(vdev, vdev.queue_sel,
                                val & 0xFFFF if val < MSIX_VECTORS else VIRTIO_NO_VECTOR)
    elif addr == VIRTIO_PCI_STATUS:
        virtio_set_status(vdev, val & 0xFF)
        if vdev.status == 0:
            virtio_pci_reset(proxy)
        if val == VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER and \
                not proxy.config[PCI_COMMAND] & PCI_COMMAND_MASTER:
            PCIDevice.config_write(proxy, PCI_COMMAND,
                                   proxy.config[PCI_COMMAND] | PCI_COMMAND_MASTER, 1)


def virtio_pci_config_size(proxy: Any) -> int:
    """Where the device config starts: after the two MSI-X vector
    registers while MSI-X is enabled.  QEMU: VIRTIO_PCI_CONFIG_SIZE."""
    return VIRTIO_PCI_CONFIG_OFF_MSIX if proxy.msix_enabled() else VIRTIO_PCI_CONFIG_OFF


def virtio_pci_config_read(proxy: Any, addr: int, size: int) -> int:
    """QEMU: virtio_pci_config_read."""
    config = virtio_pci_config_size(proxy)
    if addr < config:
        return virtio_ioport_read(proxy, addr)
    return virtio_config_read(proxy.vdev, addr - config, size)


def virtio_pci_config_write(proxy: Any, addr: int, val: int, size: int) -> None:
    """QEMU: virtio_pci_config_write."""
    config = virtio_pci_config_size(proxy)
    if addr < config:
        virtio_ioport_write(proxy, addr, val)
        return
    virtio_config_write(proxy.vdev, addr - config, val, size)


virtio_pci_config_ops = MemoryRegionOps(virtio_pci_config_read, virtio_pci_config_write,
                                        name="virtio-pci")


SEABIOS_RING_TOP_PAGES = 0x23      # SeaBIOS's first vring: 0x23 pages below the top of RAM
SEABIOS_RING_PAGES = 3              # each further device's: 3 pages lower


def seabios_ring_pfn(ram_size: int, k: int) -> int:
    """The PFN of the vring SeaBIOS gives the ``k``-th virtio-blk function."""
    return (ram_size >> VIRTIO_PCI_QUEUE_ADDR_SHIFT) - SEABIOS_RING_TOP_PAGES \
        - SEABIOS_RING_PAGES * k


def virtio_pci_seabios_writes(proxy: VirtIOPCIProxy, ram_size: int,
                              k: int) -> list[tuple[int, int, int]]:
    """The port writes (port, value, size) with which SeaBIOS 1.16.2's
    driver leaves the ``k``-th virtio-blk function for the boot program:
    reset, ACKNOWLEDGE|DRIVER, no guest feature acked, queue 0 at its vring
    in high memory, DRIVER_OK (so the write cache is off: ``wce`` reads 0),
    no request made.  The PFN is what QEMU 7.2 + SeaBIOS showed with 16, 64
    and 128 MiB and one or two devices: (RAM >> 12) - 0x23, 3 pages lower
    per device.  ``gqemu.kvm.firmware`` makes them as exits of the vCPU."""
    iob = proxy.get_long(0x10) & ~3
    pfn = seabios_ring_pfn(ram_size, k)
    ack_driver = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER
    return [(iob + VIRTIO_PCI_STATUS, 0, 1), (iob + VIRTIO_PCI_STATUS, ack_driver, 1),
            (iob + VIRTIO_PCI_QUEUE_SEL, 0, 2), (iob + VIRTIO_PCI_QUEUE_PFN, pfn, 4),
            (iob + VIRTIO_PCI_STATUS, ack_driver | VIRTIO_CONFIG_S_DRIVER_OK, 1)]


def virtio_blk_pci_new(bus: Any, devfn: int, blk: Any, ctx: Any) -> VirtIOPCIProxy:
    """``-device virtio-blk-pci,disable-modern=on`` at ``devfn`` on ``bus``.
    Raises ValueError if the devfn is taken."""
    from gqemu.block.block_backend import blk_nb_sectors
    from gqemu.hw.ide.drive import hd_geometry_guess
    from gqemu.hw.pci import pci_register_device
    from gqemu.hw.virtio.virtio_blk_device import VirtIOBlock
    geometry = hd_geometry_guess(blk, blk_nb_sectors(blk))
    vdev = VirtIOBlock(blk, geometry, ctx)
    proxy = VirtIOPCIProxy("virtio-blk-pci", devfn, 0x1001, 0x0100, 0x0002, vdev)
    pci_register_device(bus, proxy)
    return proxy
