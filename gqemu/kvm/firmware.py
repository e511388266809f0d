"""What SeaBIOS does to the IDE controller before a boot sector runs.

``--accel kvm`` runs no BIOS, yet a boot program can observe the state the
BIOS left in the task file: the selected device, the device-control value,
the registers of the last command (SeaBIOS's READ of the boot sector), the
HOB bytes.  :func:`seabios_ata_probe` issues SeaBIOS 1.16.2's port accesses
(as recorded under QEMU 7.2 in ``refdata/mbr/out/exits-raw.jsonl``, the 624
records before the program starts) through the machine's I/O address space,
waiting for each command as SeaBIOS's polls do, so the device ends in the
state SeaBIOS leaves.  None of it is recorded or traced as guest exits.

Per channel: the 55/AA presence test on the master and, when it fails, the
slave; a present channel is reset (device control 0x0e then 0x0a).  Per
unit of a present channel: IDENTIFY PACKET DEVICE (0xA1; an ATA disk
aborts it), then IDENTIFY DEVICE (0xEC) with its 256 data words; an absent
unit (status 0) is given up on.  Then the boot disk's sector 0 is read with
READ SECTORS (LBA 0, count 1) and device control is left at 0x08.

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/hw/ata.c (ata_detect, powerup_await_non_bsy, ata_reset,
init_drive_ata, ata_cmd_data), src/boot.c.
"""
from __future__ import annotations

from typing import Callable

from gqemu.hw.memory import AddressSpace, cpu_inb, cpu_inw, cpu_outb

ATA_CB_STAT_BSY = 0x80
ATA_CB_STAT_DRQ = 0x08
MAX_POLLS = 100_000     # a wait that never ends is the emulator's bug, not a hang


class FirmwareError(Exception):
    """The emulated firmware could not complete its probe (one line)."""


def _wait(as_io: AddressSpace, port: int, poll: Callable[[], None]) -> int:
    for _ in range(MAX_POLLS):
        st = cpu_inb(as_io, port)
        if not st & ATA_CB_STAT_BSY:
            return st
        poll()
    raise FirmwareError("firmware: IDE port 0x%x stays busy" % port)


def _presence(as_io: AddressSpace, base: int, dev: int) -> bool:
    """The 55/AA test of one unit (SeaBIOS ata_detect)."""
    cpu_inb(as_io, base + 7)
    cpu_outb(as_io, base + 6, dev)
    cpu_inb(as_io, base + 7)
    cpu_outb(as_io, base + 6, dev)
    cpu_inb(as_io, base + 6)
    cpu_outb(as_io, base + 2, 0x55)
    cpu_outb(as_io, base + 3, 0xAA)
    nsect = cpu_inb(as_io, base + 2)
    sect = cpu_inb(as_io, base + 3)
    return nsect == 0x55 and sect == 0xAA


def _presence_tail(as_io: AddressSpace, base: int, dev: int) -> None:
    cpu_outb(as_io, base + 6, dev)
    cpu_inb(as_io, base + 6)
    cpu_outb(as_io, base + 2, 0x55)
    cpu_outb(as_io, base + 3, 0xAA)
    cpu_inb(as_io, base + 2)
    cpu_inb(as_io, base + 3)


def _command(as_io: AddressSpace, base: int, ctl: int, dev: int, cmd: int,
             poll: Callable[[], None], regs: tuple[int, ...] = (0, 0, 0, 0, 0)) -> int:
    """Select, load 1f1..1f5, issue ``cmd``, wait; read the data block when
    DRQ is set.  Returns the final status."""
    _wait(as_io, base + 7, poll)
    cpu_inb(as_io, base + 6)
    cpu_outb(as_io, base + 6, dev)
    for i, v in enumerate(regs):
        cpu_outb(as_io, base + 1 + i, v)
    cpu_outb(as_io, base + 7, cmd)
    st = _wait(as_io, base + 7, poll)
    if st & ATA_CB_STAT_DRQ:
        for _ in range(256):
            cpu_inw(as_io, base)
        cpu_inb(as_io, ctl)
        st = _wait(as_io, base + 7, poll)
    return st


def seabios_ata_probe(as_io: AddressSpace, channels: tuple[tuple[int, int], ...],
                      boot: tuple[int, int] | None, poll: Callable[[], None]) -> None:
    """Leave the IDE channels as SeaBIOS does.  ``channels`` are the
    (command base, control port) pairs; ``boot`` the (channel, unit) of the
    boot disk (None: no disk boot); ``poll`` runs the main loop once."""
    present = []
    for base, ctl in channels:
        if _presence(as_io, base, 0xA0) or _presence(as_io, base, 0xB0):
            cpu_outb(as_io, ctl, 0x0E)
            cpu_outb(as_io, ctl, 0x0A)
            present.append((base, ctl))
    for base, ctl in present:
        for dev in (0xA0, 0xB0):
            _wait(as_io, base + 7, poll)
            cpu_outb(as_io, base + 6, dev)
            if dev == 0xB0:
                # the slave: its own presence test first (a shared task file
                # passes it even with no slave; the status read tells)
                st = cpu_inb(as_io, base + 7)
                _presence_tail(as_io, base, dev)
                cpu_outb(as_io, ctl, 0x0A)
            else:
                cpu_outb(as_io, ctl, 0x08)
                cpu_outb(as_io, ctl, 0x0A)
            st = _command(as_io, base, ctl, dev, 0xA1, poll)
            cpu_outb(as_io, ctl, 0x08)
            _wait(as_io, base + 7, poll)
            cpu_outb(as_io, ctl, 0x0A)
            if not st & 0x01:
                # no answer at all (an absent unit reads 0): give up on it
                _wait(as_io, base + 7, poll)
                cpu_inb(as_io, base + 6)
                continue
            _command(as_io, base, ctl, dev, 0xEC, poll)
            cpu_outb(as_io, ctl, 0x08)
    if boot is not None:
        base, ctl = channels[boot[0]]
        dev = 0xE0 | (boot[1] << 4)
        cpu_outb(as_io, base + 6, dev)
        _wait(as_io, base + 7, poll)
        for i, v in enumerate((0, 1, 0, 0, 0)):
            cpu_outb(as_io, base + 1 + i, v)
        cpu_outb(as_io, base + 7, 0x20)
        st = _wait(as_io, base + 7, poll)
        if st & ATA_CB_STAT_DRQ:
            for _ in range(256):
                cpu_inw(as_io, base)
            cpu_inb(as_io, ctl)
            _wait(as_io, base + 7, poll)
        cpu_outb(as_io, ctl, 0x08)
