"""PIIX3 IDE: two ISA-compatible channels plus PCI bus-master DMA, and
``pc_ide_init``, the one call the machine needs.

Wiring (ARCHITECTURE section 5)::

    from gqemu.hw.ide.piix import pc_ide_init
    primary, secondary, piix = pc_ide_init(
        as_io, pic.irqs, [blk0, None, None, None],
        address_space_memory=as_mem, ctx=qemu_get_aio_context())

puts the primary channel at 0x1f0-0x1f7 + 0x3f6 on IRQ 14, the secondary at
0x170-0x177 + 0x376 on IRQ 15, and BAR4 (16 bytes: channel 0 at +0, channel
1 at +8) at 0xc000, where SeaBIOS put it in refdata.  ``drives[i]`` is the
BlockBackend of IDE index i (bus i // 2, unit i % 2) or None.  ``irq_lines``
is indexed by ISA IRQ number (``ISAPic.irqs`` works).  DMA reaches guest RAM
through ``address_space_memory``.

BMDMA registers (byte access; other sizes read all ones, writes dropped):
+0 command (bit 0 START, bit 3 direction; only 0x09 kept), +2 status
(bit 0 ACTIVE read-only, bits 1-2 write-1-to-clear, bits 5-6 r/w), +4..7 the
PRD table address (any width, low 2 bits cleared).  The PRD walk stops at
EOT or once ``cur_addr - addr`` (uint32, as every address here) reaches one
4 KiB page: at most 512 entries a walk, and none when the guest moved the
pointer above the address START latched; a size field of 0 means 64 KiB;
bit 0 of the size is ignored.  Clearing START while a transfer is in flight lets it
finish first (QEMU's drain): at once when called outside any loop poll,
otherwise the engine stops when the completion arrives.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/piix.c, hw/ide/pci.c.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from gqemu.aio import aio_wait_while, qemu_get_aio_context
from gqemu.hw.dma import dma_memory_read, qemu_sglist_add, qemu_sglist_init
from gqemu.hw.ide.reset import ide_bus_reset, ide_cancel_dma_sync, ide_reset
from gqemu.hw.ide.drive import ide_init_drive
from gqemu.hw.ide.internal import IDEDMA, IDEBus, IDEState
from gqemu.hw.ide.ioport import ide_init_ioport
from gqemu.hw.ide.readahead import ide_readahead_read
from gqemu.hw.irq import IRQState, qemu_allocate_irq, qemu_set_irq
from gqemu.hw.pci import (PCI_BASE_ADDRESS_SPACE_IO, PCIDevice, pci_register_bar,
                          pci_register_device)
from gqemu.hw.memory import (AddressSpace, MemoryRegion, MemoryRegionOps,
                             memory_region_add_subregion, memory_region_init,
                             memory_region_init_io)
from gqemu.hw.trace_events import (trace_bmdma_addr_read, trace_bmdma_addr_write,
                                   trace_bmdma_cmd_writeb, trace_bmdma_read,
                                   trace_bmdma_reset, trace_bmdma_write)

__all__ = ["BMDMAState", "PIIXIDEState", "pc_ide_init", "bmdma_cmd_writeb",
           "PIIX3IDEPCI", "piix3_ide_pci_new",
           "BM_STATUS_DMAING", "BM_STATUS_ERROR", "BM_STATUS_INT",
           "BM_CMD_START", "BM_CMD_READ"]

BM_STATUS_DMAING = 0x01
BM_STATUS_ERROR = 0x02
BM_STATUS_INT = 0x04
BM_CMD_START = 0x01
BM_CMD_READ = 0x08
BMDMA_PAGE_SIZE = 4096
PRD_MAX_ENTRIES = BMDMA_PAGE_SIZE // 8   # the most PRDs one prepare_buf reads
U32 = 0xFFFFFFFF                          # BMDMAState's addresses are uint32_t

PRIMARY = (0x1F0, 0x3F6, 14)
SECONDARY = (0x170, 0x376, 15)


class BMDMAState(IDEDMA):
    """One channel's bus master.  QEMU: BMDMAState + bmdma_ops."""

    def __init__(self, bus: IDEBus, as_mem: Optional[AddressSpace]) -> None:
        super().__init__()
        self.bus = bus
        self.as_mem = as_mem
        self.cmd = 0
        self.status = 0
        self.addr = 0
        self.cur_addr = 0
        self.cur_prd_last = False
        self.cur_prd_addr = 0
        self.cur_prd_len = 0
        self.prd_reads = 0              # PRD entries read so far (a step count)
        self.dma_cb: Optional[Callable[[IDEState, int], None]] = None
        self.stop_pending = False       # START cleared while a chunk was in flight
        self.irq: Optional[IRQState] = None      # the line the channel drives

    def active_if(self) -> IDEState:
        """QEMU: bmdma_active_if (an unset retry unit means unit 0)."""
        unit = self.bus.retry_unit
        return self.bus.ifs[unit if unit in (0, 1) else 0]

    def start_dma(self, s: IDEState, dma_cb: Callable[[IDEState, int], None]) -> None:
        """QEMU: bmdma_start_dma."""
        self.dma_cb = dma_cb
        self.cur_prd_last = False
        self.cur_prd_addr = 0
        self.cur_prd_len = 0
        if self.status & BM_STATUS_DMAING:
            dma_cb(self.active_if(), 0)

    def prepare_buf(self, limit: int) -> int:
        """Build ``s.sg`` from the PRD table, at most ``limit`` bytes.
        Returns the bytes mapped; ``s.io_buffer_size`` gets the bytes the
        PRDs described.

        The walk is bounded by the PRD page: it stops at EOT or once
        ``cur_addr - addr``, computed in uint32 as QEMU does, reaches 4 KiB,
        so one call reads at most ``PRD_MAX_ENTRIES`` (512) entries.  A
        table address the guest moved above ``cur_addr`` while the engine
        ran wraps to a huge distance and ends the walk at once.
        QEMU: bmdma_prepare_buf."""
        s = self.active_if()
        sg = qemu_sglist_init(self.as_mem)
        s.sg = sg
        s.io_buffer_size = 0
        prd = bytearray(8)
        # at most PRD_MAX_ENTRIES reads, each followed by its consumption,
        # then the stop test: the range is a bound the walk never reaches
        for _ in range(PRD_MAX_ENTRIES + 2):
            if self.cur_prd_len == 0:
                if self.cur_prd_last or (self.cur_addr - self.addr) & U32 >= BMDMA_PAGE_SIZE:
                    break
                if self.as_mem is not None:
                    dma_memory_read(self.as_mem, self.cur_addr, prd, 8)
                self.prd_reads += 1
                self.cur_addr = (self.cur_addr + 8) & U32
                size = int.from_bytes(prd[4:8], "little")
                self.cur_prd_len = size & 0xFFFE or 0x10000
                self.cur_prd_addr = int.from_bytes(prd[0:4], "little")
                self.cur_prd_last = bool(size & 0x80000000)
            l = self.cur_prd_len
            sg_len = min(limit - sg.size, l)
            if sg_len:
                qemu_sglist_add(sg, self.cur_prd_addr, sg_len)
            self.cur_prd_addr = (self.cur_prd_addr + l) & U32
            self.cur_prd_len = 0
            s.io_buffer_size += l
        return sg.size

    def set_inactive(self, more: bool) -> None:
        """QEMU: bmdma_set_inactive (a START 1->0 that came while the last
        chunk was in flight takes effect now: the engine stops)."""
        self.dma_cb = None
        if more and not self.stop_pending:
            self.status |= BM_STATUS_DMAING
        else:
            self.status &= ~BM_STATUS_DMAING
        self.stop_pending = False

    def restart_dma(self) -> None:
        """QEMU: bmdma_restart_dma."""
        self.cur_addr = self.addr

    def reset(self) -> None:
        """QEMU: bmdma_reset."""
        if trace_bmdma_reset.enabled:
            trace_bmdma_reset()
        if self.status & BM_STATUS_DMAING:
            self.set_inactive(False)
        self.cmd = self.status = self.addr = self.cur_addr = 0
        self.stop_pending = False
        self.cur_prd_last = False
        self.cur_prd_addr = self.cur_prd_len = 0


def bmdma_irq(opaque: BMDMAState, n: int, level: int) -> None:
    """Every channel IRQ raise also sets BM INTR.  QEMU: bmdma_irq."""
    if level:
        opaque.status |= BM_STATUS_INT
    qemu_set_irq(opaque.irq, level)


def _bmdma_cancel_sync(bm: BMDMAState) -> None:
    """QEMU's ``ide_cancel_dma_sync`` on a START 1->0 edge: the transfer in
    flight finishes before the engine stops.  Outside any loop poll we wait
    for it here, as QEMU's drain does; from inside a poll (a vCPU running
    while the main loop is parked) we cannot, so the engine stops when the
    completion arrives -- the same end state, reached at completion time."""
    s = bm.active_if()
    ctx = bm.bus.ctx
    if bm.aiocb is not None and getattr(ctx, "poll_depth", 1) == 0:
        aio_wait_while(ctx, lambda: bm.aiocb is not None)
    if bm.aiocb is not None:
        bm.stop_pending = True
    ide_cancel_dma_sync(s, orphan_dma=False)


def bmdma_cmd_writeb(bm: BMDMAState, val: int) -> None:
    """QEMU: bmdma_cmd_writeb."""
    if trace_bmdma_cmd_writeb.enabled:
        trace_bmdma_cmd_writeb(val)
    if (val & BM_CMD_START) != (bm.cmd & BM_CMD_START):
        if not (val & BM_CMD_START):
            _bmdma_cancel_sync(bm)
            bm.status &= ~BM_STATUS_DMAING
        else:
            bm.cur_addr = bm.addr
            if not (bm.status & BM_STATUS_DMAING):
                bm.status |= BM_STATUS_DMAING
                if bm.aiocb is not None:
                    bm.stop_pending = False     # still running: just keep going
                elif bm.dma_cb is not None:
                    bm.dma_cb(bm.active_if(), 0)
    bm.cmd = val & 0x09


def bmdma_read(opaque: BMDMAState, addr: int, size: int) -> int:
    """Command/status window.  QEMU: bmdma_read (piix.c)."""
    if size != 1:
        return (1 << (size * 8)) - 1
    reg = addr & 3
    val = opaque.cmd if reg == 0 else opaque.status if reg == 2 else 0xFF
    if trace_bmdma_read.enabled:
        trace_bmdma_read(addr, val)
    return val


def bmdma_write(opaque: BMDMAState, addr: int, val: int, size: int) -> None:
    """QEMU: bmdma_write (piix.c)."""
    if size != 1:
        return
    val &= 0xFF
    if trace_bmdma_write.enabled:
        trace_bmdma_write(addr, val)
    reg = addr & 3
    if reg == 0:
        bmdma_cmd_writeb(opaque, val)
    elif reg == 2:
        bm = opaque
        bm.status = (val & 0x60) | (bm.status & 1) | (bm.status & ~val & 0x06)


def bmdma_addr_read(opaque: BMDMAState, addr: int, width: int) -> int:
    """QEMU: bmdma_addr_read."""
    mask = (1 << (width * 8)) - 1
    data = (opaque.addr >> (addr * 8)) & mask
    if trace_bmdma_addr_read.enabled:
        trace_bmdma_addr_read(data)
    return data


def bmdma_addr_write(opaque: BMDMAState, addr: int, data: int, width: int) -> None:
    """QEMU: bmdma_addr_write."""
    if trace_bmdma_addr_write.enabled:
        trace_bmdma_addr_write(data)
    shift = addr * 8
    mask = (1 << (width * 8)) - 1
    opaque.addr &= ~(mask << shift) & 0xFFFFFFFF
    opaque.addr |= ((data & mask) << shift) & ~3 & 0xFFFFFFFF


piix_bmdma_ops = MemoryRegionOps(bmdma_read, bmdma_write, name="piix-bmdma")
bmdma_addr_ioport_ops = MemoryRegionOps(bmdma_addr_read, bmdma_addr_write, name="bmdma")


class PIIXIDEState:
    """The PCI function: two channels, two bus masters, the BAR4 container."""

    def __init__(self, buses: tuple[IDEBus, IDEBus], bmdma: tuple[BMDMAState, BMDMAState],
                 bar: MemoryRegion) -> None:
        self.bus = buses
        self.bmdma = bmdma
        self.bmdma_bar = bar

    def reset(self) -> None:
        """Machine reset: both channels (DMA cancelled before the registers).
        QEMU: piix_ide_reset."""
        for bus in self.bus:
            ide_bus_reset(bus)


class PIIX3IDEPCI(PCIDevice):
    """The PCI function 00:01.1 (8086:7010, class 0101, prog-if 0x80): BAR4
    is the bus-master window, programmable through config space and mapped
    while command I/O (0x1) is set; with bus mastering (0x4) off the engines
    see an empty address space (reads 0, writes dropped), as QEMU 7.2's
    disabled bus-master region.  The legacy ports 0x1f0/0x170 are fixed.
    QEMU: hw/ide/piix.c pci_piix_ide_realize."""

    def __init__(self, piix: PIIXIDEState) -> None:
        super().__init__("piix3-ide", 0x09, 0x8086, 0x7010, 0x0101, prog_if=0x80)
        self.config[0x06:0x08] = b"\x80\x02"
        self.piix = piix
        pci_register_bar(self, 4, PCI_BASE_ADDRESS_SPACE_IO, 16, piix.bmdma_bar)

    def bus_master_changed(self) -> None:
        for bm in self.piix.bmdma:
            if bm.as_mem is not None:
                bm.as_mem = self.dma_as()


def piix3_ide_pci_new(bus: Any, piix: PIIXIDEState) -> PIIX3IDEPCI:
    """Put the IDE function on ``bus`` (pc_ide_init with bmdma_base=None
    first).  Its engines see memory through the function from now on."""
    dev = PIIX3IDEPCI(piix)
    pci_register_device(bus, dev)
    dev.bus_master_changed()
    return dev


def bmdma_setup_bar(owner: Any, bms: Sequence[BMDMAState]) -> MemoryRegion:
    """QEMU: bmdma_setup_bar."""
    bar = memory_region_init(owner, "bmdma-container", 16)
    for i, bm in enumerate(bms):
        memory_region_add_subregion(bar, i * 8, memory_region_init_io(
            owner, piix_bmdma_ops, bm, "piix-bmdma", 4))
        memory_region_add_subregion(bar, i * 8 + 4, memory_region_init_io(
            owner, bmdma_addr_ioport_ops, bm, "bmdma", 4))
    return bar


def pc_ide_init(address_space_io: AddressSpace, irq_lines: Sequence[Optional[IRQState]],
                drives: Sequence[Any], *, address_space_memory: Optional[AddressSpace] = None,
                ctx: Any = None, bmdma_base: Optional[int] = 0xC000,
                serial_base: int = 1, pio_readahead: int = 0
                ) -> tuple[IDEBus, IDEBus, PIIXIDEState]:
    """Create the PIIX3 IDE function with its drives and map its ports.

    ``pio_readahead`` (sectors, default 0 = QEMU's one request per block)
    turns on the PIO read-ahead of ``gqemu.hw.ide.readahead``.

    Returns (primary bus, secondary bus, the PIIX state).  Raises ValueError
    for ports already taken or a drive ide-hd refuses.  ``bmdma_base=None``
    leaves BAR4 unmapped (as before the BIOS programs it).
    """
    if ctx is None:
        ctx = qemu_get_aio_context()
    drives = list(drives) + [None] * (4 - len(drives))
    if len(drives) > 4:
        raise ValueError("pc_ide_init: at most 4 IDE drives (got %d)" % len(drives))
    buses = []
    bms = []
    # the function's realize resets every unit (QEMU: ide_init2), then the
    # ide-hd devices attach in index order, each reset once more
    # (ide_init_drive), then the machine reset resets both buses
    new_buses = [IDEBus(i, ctx) for i in (0, 1)]
    for bus in new_buses:
        for s in bus.ifs:
            ide_reset(s)
    for i, bus in enumerate(new_buses):
        for unit in (0, 1):
            bus.ifs[unit].drive_serial = serial_base + i * 2 + unit
            blk = drives[i * 2 + unit]
            if blk is not None:
                ide_init_drive(bus.ifs[unit], blk)
            bus.ifs[unit].readahead_max = max(0, int(pio_readahead))
            if pio_readahead > 0:
                bus.ifs[unit].pio_read = ide_readahead_read
    for i, (iobase, iobase2, isairq) in enumerate((PRIMARY, SECONDARY)):
        bus = new_buses[i]
        bm = BMDMAState(bus, address_space_memory)
        bm.irq = irq_lines[isairq] if isairq < len(irq_lines) else None
        bus.dma = bm
        bus.irq = qemu_allocate_irq(bmdma_irq, bm, 0)
        ide_init_ioport(bus, address_space_io.root, iobase, iobase2)
        buses.append(bus)
        bms.append(bm)
    bar = bmdma_setup_bar(None, bms)
    if bmdma_base is not None:
        memory_region_add_subregion(address_space_io.root, bmdma_base, bar)
    piix = PIIXIDEState((buses[0], buses[1]), (bms[0], bms[1]), bar)
    for bus in buses:
        ide_bus_reset(bus)
    return buses[0], buses[1], piix
