"""The IDE register file as seen from the ports, and its ISA port wiring.

Command block (``iobase`` .. ``iobase+7``): byte accesses go to
``ide_ioport_read/write``, 16/32-bit accesses of ``iobase`` to the data
port (``ide_data_readw/writew/readl/writel``).  Control block (``iobase2``):
``ide_status_read`` (alternate status) / ``ide_ctrl_write`` (device
control).  QEMU 7.2 rules, all traced exactly when QEMU traces them:

* the task file is shared: writes to 1..6 reach both drives (the old value
  moving to ``hob_*``), and are ignored while the selected drive is BSY/DRQ;
* device/head reads ``val | 0xA0``; with HOB set (0x80 in device control)
  1..5 read the ``hob_*`` bytes; any task-file write clears HOB;
* an absent slave reads 0 for error and status, no drive at all reads 0;
* a status read lowers the IRQ, an alternate-status read does not;
* a byte read of the data port consumes a word and returns its low byte;
* SRST (device control bit 2 rising) sets BSY now and resets in a BH.

``*_rep`` functions are the bulk forms for string I/O: they move the run of
a ``rep insw/outsw`` that lies inside the current DRQ block in one copy, with
exactly the effect of the single accesses, and decline (return 0) whenever
tracing is on so traces stay per access.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (register access), hw/ide/ioport.c (ide_init_ioport).
"""
from __future__ import annotations

from typing import Any

from gqemu.aio import aio_bh_schedule_oneshot
from gqemu.hw.ide.commands import cmd_exec_dev_diagnostic, ide_exec_cmd
from gqemu.hw.ide.core import ide_is_pio_out, ide_transfer_halt
from gqemu.hw.ide.reset import ide_cancel_dma_sync, ide_reset
from gqemu.hw.ide.internal import (ATA_DEV_ALWAYS_ON, ATA_DEV_SELECT,
                                   BUSY_STAT, DRQ_STAT, IDE_CTRL_HOB,
                                   IDE_CTRL_RESET, WIN_DIAGNOSE, IDEBus,
                                   IDEState)
from gqemu.hw.ioport import MemoryRegionPortio, portio_list_add, portio_list_init
from gqemu.hw.irq import qemu_irq_lower
from gqemu.hw.memory import MemoryRegion
from gqemu.hw.trace_events import (trace_ide_ctrl_write, trace_ide_data_readl,
                                   trace_ide_data_readw, trace_ide_data_writel,
                                   trace_ide_data_writew, trace_ide_ioport_read,
                                   trace_ide_ioport_write, trace_ide_status_read)

__all__ = ["ide_ioport_read", "ide_ioport_write", "ide_status_read",
           "ide_ctrl_write", "ide_data_readw", "ide_data_writew",
           "ide_data_readl", "ide_data_writel", "ide_init_ioport",
           "ide_bus_perform_srst"]

ATA_IOPORT_WR_lookup = ("Data", "Features", "Sector Count", "Sector Number",
                        "Cylinder Low", "Cylinder High", "Device/Head", "Command")
ATA_IOPORT_RR_lookup = ("Data", "Error", "Sector Count", "Sector Number",
                        "Cylinder Low", "Cylinder High", "Device/Head", "Status")


def ide_ioport_write(opaque: IDEBus, addr: int, val: int) -> None:
    """A byte write to the command block.  QEMU: ide_ioport_write."""
    bus = opaque
    s = bus.ifs[bus.unit]
    reg_num = addr & 7
    val &= 0xFF                         # every task-file register is a uint8_t
    if trace_ide_ioport_write.enabled:
        trace_ide_ioport_write(addr, ATA_IOPORT_WR_lookup[reg_num], val, bus, s)
    if reg_num != 7 and (s.status & (BUSY_STAT | DRQ_STAT)):
        return
    if reg_num == 0:
        return
    s0, s1 = bus.ifs
    bus.cmd &= ~IDE_CTRL_HOB
    if reg_num == 1:
        s0.hob_feature = s0.feature
        s1.hob_feature = s1.feature
        s0.feature = s1.feature = val
    elif reg_num == 2:
        s0.hob_nsector = s0.nsector & 0xFF
        s1.hob_nsector = s1.nsector & 0xFF
        s0.nsector = s1.nsector = val
    elif reg_num == 3:
        s0.hob_sector = s0.sector
        s1.hob_sector = s1.sector
        s0.sector = s1.sector = val
    elif reg_num == 4:
        s0.hob_lcyl = s0.lcyl
        s1.hob_lcyl = s1.lcyl
        s0.lcyl = s1.lcyl = val
    elif reg_num == 5:
        s0.hob_hcyl = s0.hcyl
        s1.hob_hcyl = s1.hcyl
        s0.hcyl = s1.hcyl = val
    elif reg_num == 6:
        s0.select = s1.select = val | ATA_DEV_ALWAYS_ON
        bus.unit = 1 if val & ATA_DEV_SELECT else 0
    else:
        qemu_irq_lower(bus.irq)
        ide_exec_cmd(bus, val)


def ide_ioport_read(opaque: IDEBus, addr: int) -> int:
    """A byte read of the command block.  QEMU: ide_ioport_read."""
    bus = opaque
    s = bus.ifs[bus.unit]
    reg_num = addr & 7
    hob = bus.cmd & IDE_CTRL_HOB
    no_drives = bus.ifs[0].blk is None and bus.ifs[1].blk is None
    if reg_num == 0:
        ret = ide_data_readw(bus, addr) & 0xFF
    elif reg_num == 7:
        ret = 0 if no_drives or (s.unit and s.blk is None) else s.status
        qemu_irq_lower(bus.irq)
    elif no_drives:
        ret = 0
    elif reg_num == 1:
        if s.unit and s.blk is None:
            ret = 0
        else:
            ret = s.hob_feature if hob else s.error
    elif reg_num == 2:
        ret = s.hob_nsector if hob else s.nsector & 0xFF
    elif reg_num == 3:
        ret = s.hob_sector if hob else s.sector
    elif reg_num == 4:
        ret = s.hob_lcyl if hob else s.lcyl
    elif reg_num == 5:
        ret = s.hob_hcyl if hob else s.hcyl
    else:
        ret = s.select
    if trace_ide_ioport_read.enabled:
        trace_ide_ioport_read(addr, ATA_IOPORT_RR_lookup[reg_num], ret, bus, s)
    return ret


def ide_status_read(opaque: IDEBus, addr: int) -> int:
    """Alternate status: the status without lowering the IRQ.
    QEMU: ide_status_read."""
    bus = opaque
    s = bus.ifs[bus.unit]
    if (bus.ifs[0].blk is None and bus.ifs[1].blk is None) or (s.unit and s.blk is None):
        ret = 0
    else:
        ret = s.status
    if trace_ide_status_read.enabled:
        trace_ide_status_read(addr, ret, bus, s)
    return ret


def ide_perform_srst(s: IDEState) -> None:
    """QEMU: ide_perform_srst."""
    s.status |= BUSY_STAT
    ide_transfer_halt(s)
    ide_cancel_dma_sync(s)
    ide_reset(s)
    cmd_exec_dev_diagnostic(s, WIN_DIAGNOSE)


def ide_bus_perform_srst(opaque: IDEBus) -> None:
    """The SRST bottom half.  Context: loop.  QEMU: ide_bus_perform_srst."""
    bus = opaque
    bus.srst_pending = False
    for s in bus.ifs:
        ide_perform_srst(s)
    bus.cmd &= ~IDE_CTRL_RESET


def ide_ctrl_write(opaque: IDEBus, addr: int, val: int) -> None:
    """Device control: nIEN, SRST, HOB.  QEMU: ide_ctrl_write."""
    bus = opaque
    if trace_ide_ctrl_write.enabled:
        trace_ide_ctrl_write(addr, val, bus)
    if not (bus.cmd & IDE_CTRL_RESET) and (val & IDE_CTRL_RESET):
        for s in bus.ifs:
            s.status |= BUSY_STAT
        bus.srst_pending = True
        aio_bh_schedule_oneshot(bus.ctx, ide_bus_perform_srst, bus)
    bus.cmd = val & 0xFF


# ------------------------------------------------------------ data port

def ide_data_writew(opaque: IDEBus, addr: int, val: int) -> None:
    """QEMU: ide_data_writew."""
    bus = opaque
    s = bus.ifs[bus.unit]
    if trace_ide_data_writew.enabled:
        trace_ide_data_writew(addr, val, bus, s)
    if not (s.status & DRQ_STAT) or ide_is_pio_out(s):
        return
    p = s.data_ptr
    if p + 2 > s.data_end:
        return
    buf = s.io_buffer
    buf[p] = val & 0xFF
    buf[p + 1] = (val >> 8) & 0xFF
    p += 2
    s.data_ptr = p
    if p >= s.data_end:
        s.status &= ~DRQ_STAT
        s.end_transfer_func(s)


def ide_data_readw(opaque: IDEBus, addr: int) -> int:
    """QEMU: ide_data_readw (untraced when it returns 0 for lack of data)."""
    bus = opaque
    s = bus.ifs[bus.unit]
    if not (s.status & DRQ_STAT) or not ide_is_pio_out(s):
        return 0
    p = s.data_ptr
    if p + 2 > s.data_end:
        return 0
    buf = s.io_buffer
    ret = buf[p] | (buf[p + 1] << 8)
    p += 2
    s.data_ptr = p
    if p >= s.data_end:
        s.status &= ~DRQ_STAT
        s.end_transfer_func(s)
    if trace_ide_data_readw.enabled:
        trace_ide_data_readw(addr, ret, bus, s)
    return ret


def ide_data_writel(opaque: IDEBus, addr: int, val: int) -> None:
    """QEMU: ide_data_writel."""
    bus = opaque
    s = bus.ifs[bus.unit]
    if trace_ide_data_writel.enabled:
        trace_ide_data_writel(addr, val, bus, s)
    if not (s.status & DRQ_STAT) or ide_is_pio_out(s):
        return
    p = s.data_ptr
    if p + 4 > s.data_end:
        return
    s.io_buffer[p:p + 4] = (val & 0xFFFFFFFF).to_bytes(4, "little")
    p += 4
    s.data_ptr = p
    if p >= s.data_end:
        s.status &= ~DRQ_STAT
        s.end_transfer_func(s)


def ide_data_readl(opaque: IDEBus, addr: int) -> int:
    """QEMU: ide_data_readl (traced with DRQ=0, untraced past the end)."""
    bus = opaque
    s = bus.ifs[bus.unit]
    if not (s.status & DRQ_STAT) or not ide_is_pio_out(s):
        ret = 0
    else:
        p = s.data_ptr
        if p + 4 > s.data_end:
            return 0
        ret = int.from_bytes(s.io_buffer[p:p + 4], "little")
        p += 4
        s.data_ptr = p
        if p >= s.data_end:
            s.status &= ~DRQ_STAT
            s.end_transfer_func(s)
    if trace_ide_data_readl.enabled:
        trace_ide_data_readl(addr, ret, bus, s)
    return ret


def _data_read_rep(bus: IDEBus, width: int, buf: Any, pos: int, count: int) -> int:
    s = bus.ifs[bus.unit]
    if not (s.status & DRQ_STAT) or not ide_is_pio_out(s):
        return 0
    p = s.data_ptr
    n = min(count, (s.data_end - p) // width)
    if n <= 0:
        return 0
    nbytes = n * width
    buf[pos:pos + nbytes] = s.io_buffer[p:p + nbytes]
    p += nbytes
    s.data_ptr = p
    if p >= s.data_end:
        s.status &= ~DRQ_STAT
        s.end_transfer_func(s)
    return n


def _data_write_rep(bus: IDEBus, width: int, buf: Any, pos: int, count: int) -> int:
    s = bus.ifs[bus.unit]
    if not (s.status & DRQ_STAT) or ide_is_pio_out(s):
        return 0
    p = s.data_ptr
    n = min(count, (s.data_end - p) // width)
    if n <= 0:
        return 0
    nbytes = n * width
    s.io_buffer[p:p + nbytes] = buf[pos:pos + nbytes]
    p += nbytes
    s.data_ptr = p
    if p >= s.data_end:
        s.status &= ~DRQ_STAT
        s.end_transfer_func(s)
    return n


def ide_data_readw_rep(opaque: IDEBus, addr: int, buf: Any, pos: int, count: int) -> int:
    """Bulk ``rep insw``: up to ``count`` words into ``buf[pos:]``; returns
    how many were served (0 when tracing)."""
    if trace_ide_data_readw.enabled:
        return 0
    return _data_read_rep(opaque, 2, buf, pos, count)


def ide_data_readl_rep(opaque: IDEBus, addr: int, buf: Any, pos: int, count: int) -> int:
    """Bulk ``rep insd``."""
    if trace_ide_data_readl.enabled:
        return 0
    return _data_read_rep(opaque, 4, buf, pos, count)


def ide_data_writew_rep(opaque: IDEBus, addr: int, buf: Any, pos: int, count: int) -> int:
    """Bulk ``rep outsw``."""
    if trace_ide_data_writew.enabled:
        return 0
    return _data_write_rep(opaque, 2, buf, pos, count)


def ide_data_writel_rep(opaque: IDEBus, addr: int, buf: Any, pos: int, count: int) -> int:
    """Bulk ``rep outsd``."""
    if trace_ide_data_writel.enabled:
        return 0
    return _data_write_rep(opaque, 4, buf, pos, count)


ide_portio_list = (
    MemoryRegionPortio(0, 8, 1, ide_ioport_read, ide_ioport_write),
    MemoryRegionPortio(0, 1, 2, ide_data_readw, ide_data_writew,
                       ide_data_readw_rep, ide_data_writew_rep),
    MemoryRegionPortio(0, 1, 4, ide_data_readl, ide_data_writel,
                       ide_data_readl_rep, ide_data_writel_rep),
)

ide_portio2_list = (
    MemoryRegionPortio(0, 1, 1, ide_status_read, ide_ctrl_write),
)


def ide_init_ioport(bus: IDEBus, address_space_io: MemoryRegion, iobase: int,
                    iobase2: int) -> None:
    """Map the command block at ``iobase`` and the control register at
    ``iobase2`` (skipped if 0).  Raises ValueError if the ports are taken.
    QEMU: ide_init_ioport."""
    pl = portio_list_init(bus, ide_portio_list, bus, "ide")
    portio_list_add(pl, address_space_io, iobase)
    if iobase2:
        pl2 = portio_list_init(bus, ide_portio2_list, bus, "ide")
        portio_list_add(pl2, address_space_io, iobase2)
