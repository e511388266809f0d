"""The ATA command table of a hard disk, and ``ide_exec_cmd``.

``ide_cmd_table[opcode] = (handler, flags)``: ``flags`` says which drive
kinds may run it (this model has hard disks only, so anything without
``HD_OK`` aborts) and whether a successful completion sets DSC.  A handler
returns True when the command is complete (``ide_exec_cmd`` then clears
BSY and raises the IRQ) and False when it manages status and IRQ itself (data
transfers, flush, DMA).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/ide/core.c (cmd_* handlers, ide_cmd_table, ide_exec_cmd).
"""
from __future__ import annotations

from typing import Callable, Optional

from gqemu.block.block_backend import blk_set_enable_write_cache
from gqemu.hw.ide.core import (ide_abort_command, ide_cmd_done,
                               ide_cmd_lba48_transform, ide_flush_cache,
                               ide_sector_read, ide_sector_write, ide_set_irq,
                               ide_set_sector, ide_set_signature,
                               ide_transfer_start, ide_transfer_stop,
                               idebus_active_if)
from gqemu.hw.ide.dma import ide_sector_start_dma
from gqemu.hw.ide.identify import _put_le16, ide_identify
from gqemu.hw.ide.internal import (BUSY_STAT, DRQ_STAT, IDE_CD,
                                   IDE_DMA_READ, IDE_DMA_WRITE, IDE_HD,
                                   MAX_MULT_SECTORS, READY_STAT, SEEK_STAT,
                                   IDEBus, IDEState)
import gqemu.hw.ide.internal as K
from gqemu.hw.ide.smart import cmd_smart
from gqemu.hw.trace_events import trace_ide_exec_cmd

__all__ = ["ide_exec_cmd", "ide_cmd_table", "ide_identify", "HD_OK", "SET_DSC"]

HD_OK = 1 << IDE_HD
CD_OK = 1 << IDE_CD
CFA_OK = 1 << K.IDE_CFATA
HD_CFA_OK = HD_OK | CFA_OK
ALL_OK = HD_OK | CD_OK | CFA_OK
SET_DSC = 1 << 8

Handler = Callable[[IDEState, int], bool]


# ------------------------------------------------------------- handlers

def cmd_nop(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_nop."""
    return True


def cmd_identify(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_identify."""
    if s.blk is not None and s.drive_kind != IDE_CD:
        ide_identify(s)
        s.status = READY_STAT | SEEK_STAT
        ide_transfer_start(s, 0, 512, ide_transfer_stop)
        ide_set_irq(s.bus)
        return False
    ide_abort_command(s)
    return True


def cmd_verify(s: IDEState, cmd: int) -> bool:
    """READ VERIFY: success, no I/O, no range check.  QEMU: cmd_verify."""
    ide_cmd_lba48_transform(s, cmd == K.WIN_VERIFY_EXT)
    return True


def cmd_set_multiple_mode(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_set_multiple_mode."""
    n = s.nsector & 0xFF
    if n != 0 and (n > MAX_MULT_SECTORS or (s.nsector & (s.nsector - 1)) != 0):
        ide_abort_command(s)
    else:
        s.mult_sectors = n
    return True


def cmd_read_multiple(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_read_multiple."""
    if s.blk is None or not s.mult_sectors:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_MULTREAD_EXT)
    s.req_nb_sectors = s.mult_sectors
    ide_sector_read(s)
    return False


def cmd_write_multiple(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_write_multiple."""
    if s.blk is None or not s.mult_sectors:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_MULTWRITE_EXT)
    s.req_nb_sectors = s.mult_sectors
    n = min(s.nsector, s.req_nb_sectors)
    s.status = SEEK_STAT | READY_STAT
    ide_transfer_start(s, 0, 512 * n, ide_sector_write)
    s.media_changed = 1
    return False


def cmd_read_pio(s: IDEState, cmd: int) -> bool:
    """READ SECTORS (EXT).  QEMU: cmd_read_pio."""
    if s.blk is None:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_READ_EXT)
    s.req_nb_sectors = 1
    ide_sector_read(s)
    return False


def cmd_write_pio(s: IDEState, cmd: int) -> bool:
    """WRITE SECTORS (EXT), WRITE VERIFY: DRQ at once, no IRQ.
    QEMU: cmd_write_pio."""
    if s.blk is None:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_WRITE_EXT)
    s.req_nb_sectors = 1
    s.status = SEEK_STAT | READY_STAT
    ide_transfer_start(s, 0, 512, ide_sector_write)
    s.media_changed = 1
    return False


def cmd_read_dma(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_read_dma."""
    if s.blk is None:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_READDMA_EXT)
    ide_sector_start_dma(s, IDE_DMA_READ)
    return False


def cmd_write_dma(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_write_dma."""
    if s.blk is None:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_WRITEDMA_EXT)
    ide_sector_start_dma(s, IDE_DMA_WRITE)
    s.media_changed = 1
    return False


def cmd_flush_cache(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_flush_cache."""
    ide_flush_cache(s)
    return False


def cmd_seek(s: IDEState, cmd: int) -> bool:
    """No range check (QEMU's XXX).  QEMU: cmd_seek."""
    return True


def cmd_read_native_max(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_read_native_max."""
    if s.nb_sectors == 0:
        ide_abort_command(s)
        return True
    ide_cmd_lba48_transform(s, cmd == K.WIN_READ_NATIVE_MAX_EXT)
    ide_set_sector(s, s.nb_sectors - 1)
    return True


def cmd_specify(s: IDEState, cmd: int) -> bool:
    """INITIALIZE DEVICE PARAMETERS: the logical heads (device register + 1)
    and sectors per track (count) used by CHS addressing (QEMU >= 7.2).
    The count is the whole ``nsector``, as QEMU copies it: 256 left by an
    earlier count-0 command gives 256 sectors a track (tests/data/bmdma
    cases 18-19).  A count of 0 leaves a track of 0 sectors, on which
    ``ide_set_sector`` leaves the registers alone (QEMU divides by it).
    QEMU: cmd_specify."""
    if s.blk is not None and s.drive_kind != IDE_CD:
        s.heads = (s.select & K.ATA_DEV_HS) + 1
        s.sectors = s.nsector
        ide_set_irq(s.bus)
    else:
        ide_abort_command(s)
    return True


def cmd_check_power_mode(s: IDEState, cmd: int) -> bool:
    """QEMU: cmd_check_power_mode."""
    s.nsector = 0xFF
    return True


def cmd_set_features(s: IDEState, cmd: int) -> bool:
    """Write cache on/off, transfer mode, accepted no-ops; else ABRT.
    QEMU: cmd_set_features."""
    if s.blk is None:
        ide_abort_command(s)
        return True
    f = s.feature
    p = s.identify_data
    if f == 0x02:
        blk_set_enable_write_cache(s.blk, True)
        _put_le16(p, 85, (1 << 14) | (1 << 5) | 1)
        return True
    if f == 0x82:
        blk_set_enable_write_cache(s.blk, False)
        _put_le16(p, 85, (1 << 14) | 1)
        ide_flush_cache(s)
        return False
    if f == 0xCC:                      # revert to power-on defaults on reset
        s.reset_reverts = True
        return True
    if f == 0x66:
        s.reset_reverts = False
        return True
    if f in (0xAA, 0x55, 0x05, 0x85, 0x69, 0x67, 0x96, 0x9A, 0x42, 0xC2):
        return True
    if f == 0x03:
        val = s.nsector & 0x07
        mode = s.nsector >> 3
        if mode in (0x00, 0x01):
            w62, w63, w88 = 0x07, 0x07, 0x3F
        elif mode == 0x02:
            w62, w63, w88 = 0x07 | (1 << (val + 8)), 0x07, 0x3F
        elif mode == 0x04:
            w62, w63, w88 = 0x07, 0x07 | (1 << (val + 8)), 0x3F
        elif mode == 0x08:
            w62, w63, w88 = 0x07, 0x07, 0x3F | (1 << (val + 8))
        else:
            ide_abort_command(s)
            return True
        _put_le16(p, 62, w62)
        _put_le16(p, 63, w63)
        _put_le16(p, 88, w88)
        return True
    ide_abort_command(s)
    return True


def cmd_exec_dev_diagnostic(s: IDEState, cmd: int) -> bool:
    """EXECUTE DEVICE DIAGNOSTIC: device register 0xA0 (DEV and LBA cleared,
    QEMU >= 7.1), signature, error 0x01 without ERR.
    QEMU: cmd_exec_dev_diagnostic."""
    s.select = K.ATA_DEV_ALWAYS_ON
    ide_set_signature(s)
    s.status = READY_STAT | SEEK_STAT
    s.error = 0x01
    ide_set_irq(s.bus)
    return False


def cmd_data_set_management(s: IDEState, cmd: int) -> bool:
    """DSM: TRIM (feature 1) through DMA; anything else aborts.
    QEMU: cmd_data_set_management."""
    if s.feature == 0x01 and s.blk is not None:
        ide_sector_start_dma(s, K.IDE_DMA_TRIM)
        return False
    ide_abort_command(s)
    return True


def cmd_cfa_erase_sectors(s: IDEState, cmd: int) -> bool:
    """0xF5 (SECURITY FREEZE LOCK on a disk).  QEMU: cmd_cfa_erase_sectors."""
    if cmd == K.CFA_WEAR_LEVEL:
        s.nsector = 0
    return True


_ENTRIES: dict[int, tuple[Handler, int]] = {
    K.WIN_DSM: (cmd_data_set_management, HD_CFA_OK),
    K.WIN_RECAL: (cmd_nop, HD_CFA_OK | SET_DSC),
    K.WIN_READ: (cmd_read_pio, ALL_OK),
    K.WIN_READ_ONCE: (cmd_read_pio, HD_CFA_OK),
    K.WIN_READ_EXT: (cmd_read_pio, HD_CFA_OK),
    K.WIN_READDMA_EXT: (cmd_read_dma, HD_CFA_OK),
    K.WIN_READ_NATIVE_MAX_EXT: (cmd_read_native_max, HD_CFA_OK | SET_DSC),
    K.WIN_MULTREAD_EXT: (cmd_read_multiple, HD_CFA_OK),
    K.WIN_WRITE: (cmd_write_pio, HD_CFA_OK),
    K.WIN_WRITE_ONCE: (cmd_write_pio, HD_CFA_OK),
    K.WIN_WRITE_EXT: (cmd_write_pio, HD_CFA_OK),
    K.WIN_WRITEDMA_EXT: (cmd_write_dma, HD_CFA_OK),
    K.WIN_MULTWRITE_EXT: (cmd_write_multiple, HD_CFA_OK),
    K.WIN_WRITE_VERIFY: (cmd_write_pio, HD_CFA_OK),
    K.WIN_VERIFY: (cmd_verify, HD_CFA_OK | SET_DSC),
    K.WIN_VERIFY_ONCE: (cmd_verify, HD_CFA_OK | SET_DSC),
    K.WIN_VERIFY_EXT: (cmd_verify, HD_CFA_OK | SET_DSC),
    K.WIN_SEEK: (cmd_seek, HD_CFA_OK | SET_DSC),
    K.WIN_DIAGNOSE: (cmd_exec_dev_diagnostic, ALL_OK),
    K.WIN_SPECIFY: (cmd_specify, HD_CFA_OK | SET_DSC),
    K.WIN_STANDBYNOW2: (cmd_nop, HD_CFA_OK),
    K.WIN_IDLEIMMEDIATE2: (cmd_nop, HD_CFA_OK),
    K.WIN_STANDBY2: (cmd_nop, HD_CFA_OK),
    K.WIN_SETIDLE2: (cmd_nop, HD_CFA_OK),
    K.WIN_CHECKPOWERMODE2: (cmd_check_power_mode, HD_CFA_OK | SET_DSC),
    K.WIN_SLEEPNOW2: (cmd_nop, HD_CFA_OK),
    K.WIN_SMART: (cmd_smart, HD_CFA_OK | SET_DSC),
    K.WIN_MULTREAD: (cmd_read_multiple, HD_CFA_OK),
    K.WIN_MULTWRITE: (cmd_write_multiple, HD_CFA_OK),
    K.WIN_SETMULT: (cmd_set_multiple_mode, HD_CFA_OK | SET_DSC),
    K.WIN_READDMA: (cmd_read_dma, HD_CFA_OK),
    K.WIN_READDMA_ONCE: (cmd_read_dma, HD_CFA_OK),
    K.WIN_WRITEDMA: (cmd_write_dma, HD_CFA_OK),
    K.WIN_WRITEDMA_ONCE: (cmd_write_dma, HD_CFA_OK),
    K.WIN_STANDBYNOW1: (cmd_nop, HD_CFA_OK),
    K.WIN_IDLEIMMEDIATE: (cmd_nop, HD_CFA_OK),
    K.WIN_STANDBY: (cmd_nop, HD_CFA_OK),
    K.WIN_SETIDLE1: (cmd_nop, HD_CFA_OK),
    K.WIN_CHECKPOWERMODE1: (cmd_check_power_mode, HD_CFA_OK | SET_DSC),
    K.WIN_SLEEPNOW1: (cmd_nop, HD_CFA_OK),
    K.WIN_FLUSH_CACHE: (cmd_flush_cache, ALL_OK),
    K.WIN_FLUSH_CACHE_EXT: (cmd_flush_cache, HD_CFA_OK),
    K.WIN_IDENTIFY: (cmd_identify, ALL_OK),
    K.WIN_SETFEATURES: (cmd_set_features, ALL_OK | SET_DSC),
    K.CFA_WEAR_LEVEL: (cmd_cfa_erase_sectors, HD_CFA_OK | SET_DSC),
    K.WIN_READ_NATIVE_MAX: (cmd_read_native_max, HD_CFA_OK | SET_DSC),
    # ATAPI- and CFA-only opcodes abort on a disk through the permission bits
    K.WIN_DEVICE_RESET: (cmd_nop, CD_OK),
    K.WIN_PACKETCMD: (cmd_nop, CD_OK),
    K.WIN_PIDENTIFY: (cmd_nop, CD_OK),
}

#: 256 entries: (handler, flags) or None for an unknown opcode.
ide_cmd_table: list[Optional[tuple[Handler, int]]] = [
    _ENTRIES.get(op) for op in range(256)]


def ide_cmd_permitted(s: IDEState, cmd: int) -> bool:
    """QEMU: ide_cmd_permitted."""
    entry = ide_cmd_table[cmd] if 0 <= cmd < 256 else None
    return entry is not None and bool(entry[1] & (1 << s.drive_kind))


def ide_exec_cmd(bus: IDEBus, val: int) -> None:
    """Run command ``val`` on the selected drive.

    Ignored for an absent slave and while BSY/DRQ; ABRT + IRQ if the opcode
    is not a disk command; otherwise BSY, then the handler.
    Context: vCPU (a port write).  QEMU: ide_exec_cmd.
    """
    s = idebus_active_if(bus)
    if trace_ide_exec_cmd.enabled:
        trace_ide_exec_cmd(bus, s, val)
    if s is not bus.ifs[0] and s.blk is None:
        return
    if s.status & (BUSY_STAT | DRQ_STAT):
        return
    if not ide_cmd_permitted(s, val):
        ide_abort_command(s)
        ide_set_irq(bus)
        return
    handler, flags = ide_cmd_table[val]  # type: ignore[misc]
    s.ra = None                         # a read-ahead window lives one command
    s.status = READY_STAT | BUSY_STAT
    s.error = 0
    s.io_buffer_offset = 0
    if handler(s, val):
        s.status &= ~BUSY_STAT
        if (flags & SET_DSC) and not s.error:
            s.status |= SEEK_STAT
        ide_cmd_done(s)
        ide_set_irq(bus)

