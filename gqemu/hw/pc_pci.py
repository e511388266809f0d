"""The ``pc`` machine's PCI functions and the state SeaBIOS leaves them in.

``pc_pci_chipset(bus)`` adds what QEMU 7.2's ``pc`` has at 00:00.0
(i440FX), 00:01.0 (PIIX3 ISA: the PIRQ routers), 00:01.3 (PIIX4_PM: its
configuration registers only) with their reset registers; the IDE function
00:01.1 comes from ``gqemu.hw.ide.piix``.  ``pci_bios_setup(bus)`` leaves
the registers as SeaBIOS 1.16 does before the boot sector runs (BARs,
command 0x0103/0x0107, interrupt lines, PIRQ routing 10, 10, 11, 11, the
chipset registers of ``SEABIOS_CHIPSET``).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/pci-host/i440fx.c, hw/isa/piix3.c, hw/acpi/piix4.c; SeaBIOS:
src/fw/pciinit.c.
"""
from __future__ import annotations

from typing import Callable, Optional

from gqemu.hw.pci import (PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_SPACE_IO, PCI_COMMAND,
                          PCI_COMMAND_MASTER, PCI_INTERRUPT_LINE, PCI_INTERRUPT_PIN,
                          PCI_STATUS, PIIX_PIRQCA, PCIBus, PCIDevice, pci_register_device)

__all__ = ["pc_pci_chipset", "pci_bios_setup", "SEABIOS_CHIPSET", "PIIX4_PM_RESET"]

SEABIOS_PIRQ = (10, 10, 11, 11)        # SeaBIOS piix_isa_bridge_setup
SEABIOS_IO_BASE = 0xC000
SEABIOS_MEM_TOP = 0xFEC00000
# PIIX4_PM after piix4_pm_realize, piix4_pm_reset and piix4_pm_machine_ready
# (QEMU 7.2, pc: SMBus at 0xb100, SMM on, no parallel or serial port): PM
# base's read-only bit 0x40, SMBus base 0x90/0x91, SMBus host config 0xd2,
# device resources 0x5f (0x80 more with a parallel port) and 0x63 (0x67 =
# 0x08 with a serial port at 0x3f8)
PIIX4_PM_RESET = ((0x40, 0x01), (0x90, 0x01), (0x91, 0xB1), (0xD2, 0x09),
                  (0x5F, 0x10), (0x63, 0x60))
# SeaBIOS 1.16's chipset writes (fw/pciinit.c, as QEMU 7.2 traced them),
# final values: i440FX PAM 0x59..0x5f (i440fx_bios_make_readonly), SMRAM
# (0x72, smm_setup); PIIX IDE decode enable 0x40/0x42 (piix_ide_setup);
# PIIX4_PM ACPI base 0x600 (0x40), PMREGMISC (0x80), SMBus base 0x700
# (0x90), SMBus enable (0xd2), SMM done (0x5b; piix4_pm_setup, smm_setup)
SEABIOS_CHIPSET = (("i440FX", 0x58, 0x11111000, 4), ("i440FX", 0x5C, 0x33111111, 4),
                   ("i440FX", 0x72, 0x0A, 1),
                   ("piix3-ide", 0x40, 0x8000, 2), ("piix3-ide", 0x42, 0x8000, 2),
                   ("PIIX4_PM", 0x40, 0x601, 4), ("PIIX4_PM", 0x80, 0x01, 1),
                   ("PIIX4_PM", 0x90, 0x701, 4), ("PIIX4_PM", 0xD2, 0x09, 1),
                   ("PIIX4_PM", 0x58, 0x02000000, 4))


class _PIIX3(PCIDevice):
    def config_write(self, addr: int, val: int, length: int) -> None:
        super().config_write(addr, val, length)
        if addr < PIIX_PIRQCA + 4 and addr + length > PIIX_PIRQCA and self.bus is not None:
            self.bus.update_isa()


def pc_pci_chipset(bus: PCIBus) -> None:
    """i440FX 00:00.0, PIIX3 00:01.0 (PIRQ routers, reset 0x80), PIIX4_PM
    00:01.3, with QEMU 7.2's identity registers (hardware reset state)."""
    host = PCIDevice("i440FX", 0x00, 0x8086, 0x1237, 0x0600, revision=0x02)
    pci_register_device(bus, host)
    isa = _PIIX3("PIIX3", 0x08, 0x8086, 0x7000, 0x0601, header_type=0x80)
    isa.config[PCI_STATUS:PCI_STATUS + 2] = b"\x00\x02"
    isa.config[PCI_COMMAND] = 0x07
    for i in range(4):
        isa.config[PIIX_PIRQCA + i] = 0x80
    pci_register_device(bus, isa)
    bus.router = isa
    pm = PCIDevice("PIIX4_PM", 0x0B, 0x8086, 0x7113, 0x0680, revision=0x03, irq_pin=1)
    pm.config[PCI_STATUS:PCI_STATUS + 2] = b"\x80\x02"
    for off, val in PIIX4_PM_RESET:
        pm.config[off] = val
    pci_register_device(bus, pm)


def pci_bios_setup(bus: PCIBus, write: Optional[Callable[[PCIDevice, int, int, int], None]] = None
                   ) -> None:
    """Program the bus as SeaBIOS 1.16 leaves it: I/O BARs from 0xC000 and
    memory BARs down from 0xFEC00000, each kind largest first (ties in bus
    order); the PIRQ routes 10, 10, 11, 11; the chipset registers
    (``SEABIOS_CHIPSET``); interrupt lines from the routes;
    command 0x0103, plus bus mastering (0x0107) for a device whose
    ``seabios_master`` is set.  Writes go through ``write(dev, off, val,
    len)`` (default: the device's config_write, untraced)."""
    def w(dev: PCIDevice, off: int, val: int, length: int) -> None:
        (write or (lambda d, o, v, n: d.config_write(o, v, n)))(dev, off, val, length)
    devs = [bus.devices[k] for k in sorted(bus.devices)]
    bars = [(dev, n, bar) for dev in devs for n, bar in enumerate(dev.bars) if bar is not None]
    io_addr = SEABIOS_IO_BASE
    for dev, n, bar in sorted((b for b in bars if b[2].type & PCI_BASE_ADDRESS_SPACE_IO),
                              key=lambda b: -b[2].size):
        w(dev, PCI_BASE_ADDRESS_0 + 4 * n, io_addr | 1, 4)
        io_addr += bar.size
    mem_top = SEABIOS_MEM_TOP
    for dev, n, bar in sorted((b for b in bars if not b[2].type & PCI_BASE_ADDRESS_SPACE_IO),
                              key=lambda b: -b[2].size):
        mem_top = (mem_top - bar.size) & ~(bar.size - 1)
        w(dev, PCI_BASE_ADDRESS_0 + 4 * n, mem_top, 4)
    if bus.router is not None:
        for i, irq in enumerate(SEABIOS_PIRQ):
            w(bus.router, PIIX_PIRQCA + i, irq, 1)
    by_name = {dev.name: dev for dev in devs}
    for name, off, val, length in SEABIOS_CHIPSET:
        if name in by_name:
            w(by_name[name], off, val, length)
    for dev in devs:
        if dev.config[PCI_INTERRUPT_PIN] and dev.name != "PIIX4_PM":
            w(dev, PCI_INTERRUPT_LINE, SEABIOS_PIRQ[bus.pirq_of(dev)], 1)
        elif dev.name == "PIIX4_PM":
            w(dev, PCI_INTERRUPT_LINE, 9, 1)
        cmd = 0x0103 | (PCI_COMMAND_MASTER if getattr(dev, "seabios_master", False) else 0)
        w(dev, PCI_COMMAND, cmd, 2)
