"""What SeaBIOS does to the IDE controller, port access by port access.

``--accel kvm`` runs no BIOS, yet a boot program can observe the state the
BIOS left in the task file: the selected device, the device-control value,
the registers of the last command (SeaBIOS's READ of the boot sector), the
HOB bytes.  :func:`seabios_ata_probe` issues SeaBIOS 1.16.2's port accesses
(as recorded under QEMU 7.2 in ``refdata/mbr/out/exits-raw.jsonl``, the 624
records before the program starts) through the machine's I/O address space,
waiting for each command as SeaBIOS's polls do, so the device ends in the
state SeaBIOS leaves.  ``gqemu run --accel kvm`` makes these accesses as
exits of the vCPU (``gqemu.kvm.bios.ExitIO``), so they are traced and
recorded as QEMU's trace shows SeaBIOS's, and a recorded run replays from
power-on; :class:`DirectIO` makes them with no exit at all.

Per channel: the 55/AA presence test on the master and, when it fails, the
slave; a present channel is reset (device control 0x0e then 0x0a).  Per
unit of a present channel: IDENTIFY PACKET DEVICE (0xA1; an ATA disk
aborts it), then IDENTIFY DEVICE (0xEC) with its 256 data words; an absent
unit (status 0) is given up on.  Then the boot disk's sector 0 is read with
:func:`ata_pio_transfer` and device control is left at 0x08.

:func:`ata_pio_transfer` is also what INT 13h does for a boot program
(``gqemu.kvm.bios``): there the accesses are real exits of the vCPU,
recorded and traced like the program's own.

The accesses go through an ``io`` object: ``inb(port)``, ``outb(port, v)``,
``insw(port, n) -> bytes``, ``outsw(port, data)`` and ``poll()`` (run the
main loop once while the device is busy).

Must not import: gqemu.machine or anything above kvm.
SeaBIOS: src/hw/ata.c (ata_detect, powerup_await_non_bsy, ata_reset,
init_drive_ata, ata_cmd_data, ata_pio_transfer), src/boot.c.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from gqemu.hw.memory import AddressSpace, cpu_inb, cpu_inw, cpu_outb, cpu_outw

ATA_CB_STAT_BSY = 0x80
ATA_CB_STAT_RDY = 0x40
ATA_CB_STAT_DF = 0x20
ATA_CB_STAT_DRQ = 0x08
ATA_CB_STAT_ERR = 0x01
ATA_CMD_READ_SECTORS = 0x20
ATA_CMD_READ_SECTORS_EXT = 0x24
ATA_CMD_WRITE_SECTORS = 0x30
ATA_CMD_WRITE_SECTORS_EXT = 0x34
MAX_POLLS = 100_000     # a wait that never ends is the emulator's bug, not a hang


class FirmwareError(Exception):
    """The emulated firmware could not complete its probe (one line)."""


class DirectIO:
    """Port accesses straight into the I/O address space (no exit, no
    trace): the probe SeaBIOS makes before the program exists."""

    def __init__(self, as_io: AddressSpace, poll: Callable[[], Any]) -> None:
        self.as_io = as_io
        self.poll = poll

    def inb(self, port: int) -> int:
        return cpu_inb(self.as_io, port)

    def outb(self, port: int, val: int) -> None:
        cpu_outb(self.as_io, port, val)

    def insw(self, port: int, n: int) -> bytes:
        return b"".join(cpu_inw(self.as_io, port).to_bytes(2, "little") for _ in range(n))

    def outsw(self, port: int, data: bytes) -> None:
        for i in range(0, len(data), 2):
            cpu_outw(self.as_io, port, int.from_bytes(data[i:i + 2], "little"))


class GuestIO:
    """Port accesses as a guest program makes them (``gqemu.kvm.guest``'s
    X86CPU: each one a KVM exit of the vCPU, handled by ``kvm_cpu_exec``);
    the vCPU loop runs the main loop between exits, so ``poll`` has nothing
    to do."""

    def __init__(self, cpu: Any) -> None:
        self.cpu = cpu
        self.inb = cpu.inb
        self.outb = cpu.outb
        self.insw = cpu.insw
        self.outsw = cpu.outsw

    def poll(self) -> None:
        pass


def seabios_firmware(channels: tuple[tuple[int, int], ...],
                     boot: tuple[int, int] | None,
                     writes: tuple[tuple[int, int, int], ...] = ()) -> Callable[[Any], None]:
    """A guest program for the vCPU's first steps: SeaBIOS's IDE probe and
    boot read, as exits of the vCPU (so ``--backtrace`` shows them from
    ``qemu_kvm_cpu_thread_fn`` -> ``kvm_cpu_exec`` as QEMU's would, and they
    are traced and recorded).  ``writes`` (port, value, size) come first:
    the virtio-blk driver's (``virtio_pci_seabios_writes``).  When it
    returns, the vCPU goes on with the boot program on /dev/kvm."""
    def seabios(cpu: Any) -> None:
        out = {1: cpu.outb, 2: cpu.outw, 4: cpu.outl}
        for port, val, size in writes:
            out[size](port, val)
        seabios_ata_probe(GuestIO(cpu), channels, boot)
    return seabios


def _wait(io: Any, port: int) -> int:
    """Poll a status register until BSY clears (SeaBIOS await_not_bsy)."""
    for _ in range(MAX_POLLS):
        st = io.inb(port)
        if not st & ATA_CB_STAT_BSY:
            return st
        io.poll()
    raise FirmwareError("firmware: IDE port 0x%x stays busy" % port)


def _presence(io: Any, base: int, dev: int) -> bool:
    """The 55/AA test of one unit (SeaBIOS ata_detect)."""
    io.inb(base + 7)
    io.outb(base + 6, dev)
    io.inb(base + 7)
    io.outb(base + 6, dev)
    io.inb(base + 6)
    io.outb(base + 2, 0x55)
    io.outb(base + 3, 0xAA)
    nsect = io.inb(base + 2)
    sect = io.inb(base + 3)
    return nsect == 0x55 and sect == 0xAA


def _presence_tail(io: Any, base: int, dev: int) -> None:
    io.outb(base + 6, dev)
    io.inb(base + 6)
    io.outb(base + 2, 0x55)
    io.outb(base + 3, 0xAA)
    io.inb(base + 2)
    io.inb(base + 3)


def _issue(io: Any, base: int, dev: int, cmd: int, regs: tuple[int, ...],
           hob: Optional[tuple[int, ...]] = None) -> int:
    """Wait, select (and wait again if that changed the unit), load
    1f1..1f5 (the HOB bytes first for LBA48), issue ``cmd``, wait.  Returns
    the status.  SeaBIOS: send_cmd, then ndelay_await_not_bsy."""
    _wait(io, base + 7)
    old = io.inb(base + 6)
    io.outb(base + 6, dev)
    if (old ^ dev) & 0x10:
        _wait(io, base + 7)
    if hob is not None:
        for i, v in enumerate(hob):
            io.outb(base + 1 + i, v)
    for i, v in enumerate(regs):
        io.outb(base + 1 + i, v)
    io.outb(base + 7, cmd)
    return _wait(io, base + 7)


def _command(io: Any, base: int, ctl: int, dev: int, cmd: int,
             regs: tuple[int, ...] = (0, 0, 0, 0, 0)) -> int:
    """A command with at most one data block in (IDENTIFY).  Returns the
    final status."""
    st = _issue(io, base, dev, cmd, regs)
    if st & ATA_CB_STAT_DRQ:
        io.insw(base, 256)
        io.inb(ctl)
        st = _wait(io, base + 7)
    return st


def ata_pio_transfer(io: Any, base: int, ctl: int, unit: int, lba: int, count: int,
                     write: bool, data: Optional[bytes] = None) -> tuple[int, bytes]:
    """Read or write ``count`` (1..128) sectors at ``lba`` by PIO, as
    SeaBIOS's ``ata_readwrite`` does for a disk: device control 0x0a,
    READ/WRITE SECTORS (the EXT form from 256 sectors or when the transfer
    reaches LBA 2^28), one 256-word block per sector with an
    alternate-status read and a wait after each, device control 0x08.
    Returns (the sector count SeaBIOS reports, data read): ``count`` on
    success; after an error the sectors moved when the error came between
    two sectors, else 0 (process_op's "count unchanged: nothing moved").
    SeaBIOS: ata_pio_cmd_data, ata_wait_data, ata_pio_transfer."""
    io.outb(ctl, 0x0A)
    dev = 0xE0 | (unit << 4)
    n = count & 0xFF
    if count >= 256 or lba + count >= 1 << 28:
        cmd = ATA_CMD_WRITE_SECTORS_EXT if write else ATA_CMD_READ_SECTORS_EXT
        hob = (0, (count >> 8) & 0xFF, (lba >> 24) & 0xFF, (lba >> 32) & 0xFF,
               (lba >> 40) & 0xFF)
        st = _issue(io, base, dev, cmd,
                    (0, n, lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF), hob)
    else:
        dev |= (lba >> 24) & 0x0F
        cmd = ATA_CMD_WRITE_SECTORS if write else ATA_CMD_READ_SECTORS
        st = _issue(io, base, dev, cmd,
                    (0, n, lba & 0xFF, (lba >> 8) & 0xFF, (lba >> 16) & 0xFF))
    out = []
    reported = 0
    if st & (ATA_CB_STAT_ERR | ATA_CB_STAT_DRQ) == ATA_CB_STAT_DRQ:
        for i in range(count):
            if write:
                io.outsw(base, data[i * 512:(i + 1) * 512])  # type: ignore[index]
            else:
                out.append(io.insw(base, 256))
            io.inb(ctl)
            st = _wait(io, base + 7)
            if i + 1 == count:
                # the last sector: anything left (DF counts for writes only)
                bad = ATA_CB_STAT_BSY | ATA_CB_STAT_DRQ | ATA_CB_STAT_ERR
                if write:
                    bad |= ATA_CB_STAT_DF
                reported = 0 if st & bad else count
            elif st & (ATA_CB_STAT_BSY | ATA_CB_STAT_DRQ | ATA_CB_STAT_ERR) != ATA_CB_STAT_DRQ:
                reported = i + 1
                break
    io.outb(ctl, 0x08)
    return reported, b"".join(out)


def ata_reset(io: Any, base: int, ctl: int, unit: int) -> None:
    """INT 13h AH=00 on a disk: pulse SRST with nIEN set, wait, reselect
    the unit, wait for DRDY, device control 0x08.  SeaBIOS: ata_reset."""
    io.outb(ctl, 0x0E)
    io.outb(ctl, 0x0A)
    _wait(io, base + 7)
    if unit:
        for _ in range(MAX_POLLS):
            io.outb(base + 6, 0xB0)
            _wait(io, base + 7)
            if io.inb(base + 6) == 0xB0:
                break
    else:
        io.outb(base + 6, 0xA0)
    for _ in range(MAX_POLLS):
        if io.inb(base + 7) & ATA_CB_STAT_RDY:
            break
        io.poll()
    io.outb(ctl, 0x08)


def ata_isready(io: Any, base: int) -> bool:
    """INT 13h AH=10: one status read, DRDY and not BSY.  SeaBIOS: isready."""
    return io.inb(base + 7) & (ATA_CB_STAT_BSY | ATA_CB_STAT_RDY) == ATA_CB_STAT_RDY


def seabios_ata_probe(io: Any, channels: tuple[tuple[int, int], ...],
                      boot: tuple[int, int] | None) -> None:
    """Leave the IDE channels as SeaBIOS does.  ``io`` makes the accesses
    (:class:`DirectIO`, or the vCPU's exits); ``channels`` are the (command
    base, control port) pairs; ``boot`` the (channel, unit) of the boot
    disk (None: no disk boot)."""
    present = []
    for base, ctl in channels:
        if _presence(io, base, 0xA0) or _presence(io, base, 0xB0):
            io.outb(ctl, 0x0E)
            io.outb(ctl, 0x0A)
            present.append((base, ctl))
    for base, ctl in present:
        for dev in (0xA0, 0xB0):
            _wait(io, base + 7)
            io.outb(base + 6, dev)
            if dev == 0xB0:
                # the slave: its own presence test first (a shared task file
                # passes it even with no slave; the status read tells)
                io.inb(base + 7)
                _presence_tail(io, base, dev)
                io.outb(ctl, 0x0A)
            else:
                io.outb(ctl, 0x08)
                io.outb(ctl, 0x0A)
            st = _command(io, base, ctl, dev, 0xA1)
            io.outb(ctl, 0x08)
            if not st & ATA_CB_STAT_ERR:
                # no answer at all (an absent unit's status reads 0): give up
                io.inb(base + 7)
                continue
            _wait(io, base + 7)
            io.outb(ctl, 0x0A)
            _command(io, base, ctl, dev, 0xEC)
            io.outb(ctl, 0x08)
    if boot is not None:
        # the boot read: INT 19h's INT 13h read of sector 0, whatever unit
        # was probed last (SeaBIOS: boot_disk -> ata_readwrite)
        base, ctl = channels[boot[0]]
        ata_pio_transfer(io, base, ctl, boot[1], 0, 1, False)
