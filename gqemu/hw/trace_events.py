"""Trace events of the hw layer, with QEMU 7.2's names and formats.

QEMU declares them in ``hw/ide/trace-events``; the refdata traces were
recorded with exactly these formats (``%x`` stands for ``PRIx32/PRIx64``).
Hot paths test ``trace_x.enabled`` before calling, so a disabled event costs
one attribute load.

Must not import: anything in gqemu but ``gqemu.trace``.
QEMU: hw/ide/trace-events.
"""
from __future__ import annotations

from gqemu.trace import trace_event

# hw/ide/core.c
trace_ide_ioport_read = trace_event(
    "ide_ioport_read",
    "IDE PIO rd @ 0x%x (%s); val 0x%02x; bus %p IDEState %p")
trace_ide_ioport_write = trace_event(
    "ide_ioport_write",
    "IDE PIO wr @ 0x%x (%s); val 0x%02x; bus %p IDEState %p")
trace_ide_status_read = trace_event(
    "ide_status_read",
    "IDE PIO rd @ 0x%x (Alt Status); val 0x%02x; bus %p; IDEState %p")
trace_ide_ctrl_write = trace_event(
    "ide_ctrl_write",
    "IDE PIO wr @ 0x%x (Device Control); val 0x%02x; bus %p")
trace_ide_data_readw = trace_event(
    "ide_data_readw",
    "IDE PIO rd @ 0x%x (Data: Word); val 0x%04x; bus %p; IDEState %p")
trace_ide_data_writew = trace_event(
    "ide_data_writew",
    "IDE PIO wr @ 0x%x (Data: Word); val 0x%04x; bus %p; IDEState %p")
trace_ide_data_readl = trace_event(
    "ide_data_readl",
    "IDE PIO rd @ 0x%x (Data: Long); val 0x%08x; bus %p; IDEState %p")
trace_ide_data_writel = trace_event(
    "ide_data_writel",
    "IDE PIO wr @ 0x%x (Data: Long); val 0x%08x; bus %p; IDEState %p")
trace_ide_exec_cmd = trace_event(
    "ide_exec_cmd", "IDE exec cmd: bus %p; state %p; cmd 0x%02x")
trace_ide_cancel_dma_sync_buffered = trace_event(
    "ide_cancel_dma_sync_buffered", "invoking cb %p of buffered request %p with -ECANCELED")
trace_ide_cancel_dma_sync_remaining = trace_event(
    "ide_cancel_dma_sync_remaining", "draining all remaining requests")
trace_ide_sector_read = trace_event(
    "ide_sector_read", "sector=%d nsectors=%d")
trace_ide_sector_write = trace_event(
    "ide_sector_write", "sector=%d nsectors=%d")
trace_ide_reset = trace_event("ide_reset", "IDEstate %p")
trace_ide_bus_reset_aio = trace_event("ide_bus_reset_aio", "aio_cancel")
trace_ide_dma_cb = trace_event(
    "ide_dma_cb", "IDEState %p; sector_num=%d n=%d cmd=%s")

# hw/ide/pci.c, hw/ide/piix.c
trace_bmdma_read = trace_event("bmdma_read", "bmdma: readb 0x%x : 0x%02x")
trace_bmdma_write = trace_event("bmdma_write", "bmdma: writeb 0x%x : 0x%02x")
trace_bmdma_cmd_writeb = trace_event("bmdma_cmd_writeb", "val: 0x%08x")
trace_bmdma_addr_read = trace_event("bmdma_addr_read", "data: 0x%016x")
trace_bmdma_addr_write = trace_event("bmdma_addr_write", "data: 0x%016x")
trace_bmdma_reset = trace_event("bmdma_reset", "")
