"""PCI: configuration space mechanism #1, the i440FX bus, BARs and INTx.

``pci_bus_new(as_io, as_mem, irq_lines)`` makes bus 0 with the host bridge's
ports 0xCF8 (CONFIG_ADDRESS, dword writes only) and 0xCFC..0xCFF
(CONFIG_DATA, any width).  ``pci_register_device(bus, dev)`` plugs a
``PCIDevice`` (identity in ``dev.config``, BARs from ``pci_register_bar``).
The ``pc`` machine's functions and SeaBIOS's setup of them are in
``gqemu.hw.pc_pci`` (``pc_pci_chipset``, ``pci_bios_setup``).

Config writes go through ``wmask``/``w1cmask`` as QEMU's
``pci_default_write_config``; a BAR is mapped only while its command enable
(I/O 0x1, memory 0x2) is set and its address is non-zero and does not wrap;
``dev.dma_as()`` is guest memory while bus mastering (0x4) is on and an
empty space (reads 0, writes dropped) while it is off.  INTx goes through
the PIIX3 PIRQ routers (0x60..0x63: bit 7 = disabled) to an ISA line;
command bit 10 masks it.  A BAR the guest moves onto ports already taken
stays unmapped (QEMU resolves such overlaps by priority; gqemu refuses
overlapping regions).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/pci/pci.c, hw/pci/pci_host.c, hw/pci-host/i440fx.c, hw/isa/piix3.c.
"""
from __future__ import annotations

from typing import Optional, Sequence

from gqemu.hw.irq import IRQState, qemu_set_irq
from gqemu.hw.memory import (AddressSpace, MemoryRegion, MemoryRegionOps,
                             memory_region_add_subregion, memory_region_del_subregion,
                             memory_region_init_io, new_address_space_memory)
from gqemu.trace import trace_event

__all__ = ["PCIDevice", "PCIBus", "pci_bus_new", "pci_register_device", "pci_register_bar",
           "pci_set_irq", "pci_data_read",
           "pci_data_write", "PCI_COMMAND_IO", "PCI_COMMAND_MEMORY", "PCI_COMMAND_MASTER",
           "PCI_BASE_ADDRESS_SPACE_IO", "PCI_BASE_ADDRESS_SPACE_MEMORY"]

trace_pci_cfg_read = trace_event("pci_cfg_read", "%s %02u:%02u.%u @0x%x -> 0x%x")
trace_pci_cfg_write = trace_event("pci_cfg_write", "%s %02u:%02u.%u @0x%x <- 0x%x")

PCI_CONFIG_SPACE_SIZE = 256
PCI_COMMAND, PCI_STATUS, PCI_BASE_ADDRESS_0, PCI_ROM_ADDRESS = 0x04, 0x06, 0x10, 0x30
PCI_INTERRUPT_LINE, PCI_INTERRUPT_PIN, PCI_CAPABILITY_LIST = 0x3C, 0x3D, 0x34
PCI_COMMAND_IO, PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x1, 0x2, 0x4
PCI_COMMAND_SERR, PCI_COMMAND_INTX_DISABLE = 0x100, 0x400
PCI_STATUS_INTERRUPT, PCI_STATUS_CAP_LIST = 0x08, 0x10
PCI_BASE_ADDRESS_SPACE_IO, PCI_BASE_ADDRESS_SPACE_MEMORY = 0x1, 0x0
PCI_BAR_UNMAPPED = -1
PIIX_PIRQCA = 0x60
QEMU_SUBSYS = (0x1AF4, 0x1100)          # QEMU's default subsystem ids


class PCIBar:
    __slots__ = ("size", "type", "region", "addr")

    def __init__(self, size: int, type_: int, region: Optional[MemoryRegion]) -> None:
        self.size = size
        self.type = type_
        self.region = region
        self.addr = PCI_BAR_UNMAPPED


class PCIDevice:
    """One function: 256 bytes of config space with QEMU's write masks.

    Subclasses may override ``config_read(addr, len)`` /
    ``config_write(addr, val, len)`` (call the defaults) and
    ``bus_master_changed()``.  QEMU: PCIDevice.
    """

    def __init__(self, name: str, devfn: int, vendor: int, device: int, class_id: int,
                 revision: int = 0, prog_if: int = 0, header_type: int = 0,
                 subsys: tuple[int, int] = QEMU_SUBSYS, irq_pin: int = 0) -> None:
        self.name = name
        self.devfn = devfn
        self.bus: Optional[PCIBus] = None
        c = self.config = bytearray(PCI_CONFIG_SPACE_SIZE)
        self.wmask = bytearray(PCI_CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(PCI_CONFIG_SPACE_SIZE)
        c[0:2] = vendor.to_bytes(2, "little")
        c[2:4] = device.to_bytes(2, "little")
        c[8] = revision
        c[9] = prog_if
        c[10:12] = class_id.to_bytes(2, "little")
        c[0x0E] = header_type
        c[0x2C:0x2E] = subsys[0].to_bytes(2, "little")
        c[0x2E:0x30] = subsys[1].to_bytes(2, "little")
        c[PCI_INTERRUPT_PIN] = irq_pin
        # pci_init_wmask / pci_init_w1cmask
        self.wmask[0x0C] = 0xFF
        self.wmask[PCI_INTERRUPT_LINE] = 0xFF
        cmd = (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER
               | PCI_COMMAND_INTX_DISABLE | PCI_COMMAND_SERR)
        self.wmask[PCI_COMMAND:PCI_COMMAND + 2] = cmd.to_bytes(2, "little")
        self.w1cmask[PCI_STATUS:PCI_STATUS + 2] = (0xF900).to_bytes(2, "little")
        for i in range(0x40, PCI_CONFIG_SPACE_SIZE):
            self.wmask[i] = 0xFF
        self.bars: list[Optional[PCIBar]] = [None] * 7
        self.irq_state = 0

    # -- helpers
    def get_word(self, off: int) -> int:
        return self.config[off] | self.config[off + 1] << 8

    def get_long(self, off: int) -> int:
        return int.from_bytes(self.config[off:off + 4], "little")

    def set_long(self, off: int, val: int) -> None:
        self.config[off:off + 4] = (val & 0xFFFFFFFF).to_bytes(4, "little")

    def add_capability(self, cap_id: int, offset: int, data: bytes) -> None:
        """A read-only capability at ``offset`` (QEMU: pci_add_capability)."""
        c = self.config
        c[offset] = cap_id
        c[offset + 1] = c[PCI_CAPABILITY_LIST]
        c[offset + 2:offset + 2 + len(data)] = data
        for i in range(offset, offset + 2 + len(data)):
            self.wmask[i] = 0
        c[PCI_CAPABILITY_LIST] = offset
        c[PCI_STATUS] |= PCI_STATUS_CAP_LIST

    @property
    def command(self) -> int:
        return self.get_word(PCI_COMMAND)

    def dma_as(self) -> AddressSpace:
        """The device's view of memory (QEMU: pci_get_address_space)."""
        assert self.bus is not None
        return self.bus.as_mem if self.command & PCI_COMMAND_MASTER else self.bus.as_empty

    # -- config access (QEMU: pci_default_read_config / write_config)
    def config_read(self, addr: int, length: int) -> int:
        return int.from_bytes(self.config[addr:addr + length], "little")

    def config_write(self, addr: int, val: int, length: int) -> None:
        old_cmd = self.command
        v = val
        for i in range(length):
            wm = self.wmask[addr + i]
            w1c = self.w1cmask[addr + i]
            b = (self.config[addr + i] & ~wm) | (v & wm)
            self.config[addr + i] = b & ~(v & w1c) & 0xFF
            v >>= 8
        end = addr + length
        covers_cmd = addr <= PCI_COMMAND < end
        if (addr < PCI_BASE_ADDRESS_0 + 24 and end > PCI_BASE_ADDRESS_0) or \
                (addr < PCI_ROM_ADDRESS + 4 and end > PCI_ROM_ADDRESS) or covers_cmd:
            pci_update_mappings(self)
        if covers_cmd:
            new_cmd = self.command
            if (old_cmd ^ new_cmd) & PCI_COMMAND_INTX_DISABLE:
                _pci_update_irq_disabled(self)
            if (old_cmd ^ new_cmd) & PCI_COMMAND_MASTER:
                self.bus_master_changed()

    def bus_master_changed(self) -> None:
        """Hook: bus mastering was switched on or off."""

    def reset_hook(self) -> None:
        """Hook for a device reset."""


def pci_register_bar(dev: PCIDevice, n: int, type_: int, size: int,
                     region: Optional[MemoryRegion]) -> None:
    """BAR ``n`` (0..5) of ``size`` bytes (a power of two) served by
    ``region`` (None: sized but backed by nothing).  QEMU: pci_register_bar."""
    assert size & (size - 1) == 0 and 0 <= n < 6
    dev.bars[n] = PCIBar(size, type_, region)
    off = PCI_BASE_ADDRESS_0 + 4 * n
    dev.set_long(off, type_)
    dev.wmask[off:off + 4] = (~(size - 1) & 0xFFFFFFFF).to_bytes(4, "little")


def pci_bar_address(dev: PCIDevice, n: int, bar: PCIBar) -> int:
    """QEMU: pci_bar_address (32-bit BARs)."""
    cmd = dev.command
    enable = PCI_COMMAND_IO if bar.type & PCI_BASE_ADDRESS_SPACE_IO else PCI_COMMAND_MEMORY
    if not cmd & enable:
        return PCI_BAR_UNMAPPED
    new_addr = dev.get_long(PCI_BASE_ADDRESS_0 + 4 * n) & ~(bar.size - 1) & 0xFFFFFFFF
    last = new_addr + bar.size - 1
    if last <= new_addr or last >= 0xFFFFFFFF or new_addr == 0:
        return PCI_BAR_UNMAPPED
    return new_addr


def pci_update_mappings(dev: PCIDevice) -> None:
    """Map/unmap the BARs as the command register and BARs say.
    QEMU: pci_update_mappings."""
    bus = dev.bus
    if bus is None:
        return
    for n, bar in enumerate(dev.bars):
        if bar is None:
            continue
        new_addr = pci_bar_address(dev, n, bar)
        if new_addr == bar.addr:
            continue
        space = bus.io_root if bar.type & PCI_BASE_ADDRESS_SPACE_IO else bus.mem_root
        if bar.addr != PCI_BAR_UNMAPPED and bar.region is not None \
                and bar.region.container is space:
            memory_region_del_subregion(space, bar.region)
        bar.addr = new_addr
        if new_addr != PCI_BAR_UNMAPPED and bar.region is not None:
            try:
                memory_region_add_subregion(space, new_addr, bar.region)
            except ValueError:
                pass        # outside the space or onto taken ports: unreachable


# ------------------------------------------------------------------ INTx

def pci_set_irq(dev: PCIDevice, level: int) -> None:
    """Drive the function's INTx pin.  QEMU: pci_set_irq."""
    level = 1 if level else 0
    if dev.irq_state == level:
        return
    dev.irq_state = level
    if level:
        dev.config[PCI_STATUS] |= PCI_STATUS_INTERRUPT
    else:
        dev.config[PCI_STATUS] &= ~PCI_STATUS_INTERRUPT & 0xFF
    if not dev.command & PCI_COMMAND_INTX_DISABLE and dev.bus is not None:
        dev.bus.change_irq_level(dev, 1 if level else -1)


def _pci_update_irq_disabled(dev: PCIDevice) -> None:
    if dev.irq_state and dev.bus is not None:
        disabled = dev.command & PCI_COMMAND_INTX_DISABLE
        dev.bus.change_irq_level(dev, -1 if disabled else 1)


# ------------------------------------------------------------------ bus

class PCIBus:
    """Bus 0 of the i440FX host: devices by devfn, the config latch, the
    PIRQ levels.  QEMU: PCIBus + PCIHostState + PIIX3's IRQ routing."""

    def __init__(self, as_io: AddressSpace, as_mem: AddressSpace,
                 irq_lines: Sequence[Optional[IRQState]]) -> None:
        self.as_io = as_io
        self.as_mem = as_mem
        self.io_root = as_io.root
        self.mem_root = as_mem.root
        self.as_empty = new_address_space_memory()
        self.irq_lines = list(irq_lines)
        self.devices: dict[int, PCIDevice] = {}
        self.config_reg = 0
        self.pirq_count = [0, 0, 0, 0]
        self.isa_levels: dict[int, int] = {}
        self.router: Optional[PCIDevice] = None     # PIIX3 00:01.0

    def pirq_of(self, dev: PCIDevice) -> int:
        """QEMU: pci_slot_get_pirq (piix): (pin - 1 + slot - 1) & 3."""
        return (dev.config[PCI_INTERRUPT_PIN] - 1 + (dev.devfn >> 3) - 1) & 3

    def change_irq_level(self, dev: PCIDevice, change: int) -> None:
        if not dev.config[PCI_INTERRUPT_PIN]:
            return
        self.pirq_count[self.pirq_of(dev)] += change
        self.update_isa()

    def update_isa(self) -> None:
        """QEMU: piix3_set_irq_level: each ISA line is the OR of the PIRQs
        routed to it (a route with bit 7 set is disabled)."""
        want: dict[int, int] = {}
        for pirq in range(4):
            route = self.router.config[PIIX_PIRQCA + pirq] if self.router is not None else 0x80
            if route < 16:
                want[route] = want.get(route, 0) | (1 if self.pirq_count[pirq] > 0 else 0)
        for line in set(want) | set(self.isa_levels):
            level = want.get(line, 0)
            if self.isa_levels.get(line, 0) != level:
                self.isa_levels[line] = level
                if line < len(self.irq_lines):
                    qemu_set_irq(self.irq_lines[line], level)


def pci_register_device(bus: PCIBus, dev: PCIDevice) -> PCIDevice:
    """Plug ``dev`` at ``dev.devfn``.  Raises ValueError if taken."""
    if dev.devfn in bus.devices:
        raise ValueError("PCI: devfn %02x.%x already in use" % (dev.devfn >> 3, dev.devfn & 7))
    bus.devices[dev.devfn] = dev
    dev.bus = bus
    return dev


def pci_data_read(bus: PCIBus, addr: int, length: int) -> int:
    """QEMU: pci_data_read + pci_host_config_read_common."""
    dev = bus.devices.get((addr >> 8) & 0xFF) if (addr >> 16) & 0xFF == 0 else None
    if dev is None:
        return 0xFFFFFFFF
    off = addr & 0xFF
    val = dev.config_read(off, min(length, PCI_CONFIG_SPACE_SIZE - off))
    if trace_pci_cfg_read.enabled:
        trace_pci_cfg_read(dev.name, 0, dev.devfn >> 3, dev.devfn & 7, off, val)
    return val


def pci_data_write(bus: PCIBus, addr: int, val: int, length: int) -> None:
    """QEMU: pci_data_write + pci_host_config_write_common."""
    dev = bus.devices.get((addr >> 8) & 0xFF) if (addr >> 16) & 0xFF == 0 else None
    if dev is None:
        return
    off = addr & 0xFF
    val &= (1 << (8 * length)) - 1
    if trace_pci_cfg_write.enabled:
        trace_pci_cfg_write(dev.name, 0, dev.devfn >> 3, dev.devfn & 7, off, val)
    dev.config_write(off, val, min(length, PCI_CONFIG_SPACE_SIZE - off))


def _conf_read(bus: PCIBus, addr: int, size: int) -> int:
    return bus.config_reg            # QEMU: pci_host_config_read


def _conf_write(bus: PCIBus, addr: int, val: int, size: int) -> None:
    if addr == 0 and size == 4:      # QEMU: pci_host_config_write
        bus.config_reg = val & 0xFFFFFFFF


def _data_read(bus: PCIBus, addr: int, size: int) -> int:
    if not bus.config_reg & 0x80000000:
        return 0xFFFFFFFF
    return pci_data_read(bus, bus.config_reg | (addr & 3), size)


def _data_write(bus: PCIBus, addr: int, val: int, size: int) -> None:
    if bus.config_reg & 0x80000000:
        pci_data_write(bus, bus.config_reg | (addr & 3), val, size)


_conf_ops = MemoryRegionOps(_conf_read, _conf_write, name="pci-conf-idx")
_data_ops = MemoryRegionOps(_data_read, _data_write, name="pci-conf-data")


def pci_bus_new(as_io: AddressSpace, as_mem: AddressSpace,
                irq_lines: Sequence[Optional[IRQState]]) -> PCIBus:
    """Bus 0 with the host bridge's config ports mapped at 0xCF8/0xCFC."""
    bus = PCIBus(as_io, as_mem, irq_lines)
    memory_region_add_subregion(as_io.root, 0xCF8,
                                memory_region_init_io(None, _conf_ops, bus, "pci-conf-idx", 4))
    memory_region_add_subregion(as_io.root, 0xCFC,
                                memory_region_init_io(None, _data_ops, bus, "pci-conf-data", 4))
    return bus
