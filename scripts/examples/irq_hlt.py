"""Interrupt-driven PIO: nIEN cleared, the guest sleeps in hlt until IRQ 14 instead of polling."""
from gqemu.guest.ata import ATA, sector_lba


def guest(cpu):
    ata = ATA(cpu, use_irq=True)              # device control 0x00: interrupts on
    for lba in (0, 1, 2, 3):
        data = ata.read_sectors(lba, 1)
        assert sector_lba(data) in (lba, -1)
    buf = bytes(512)
    ata.write_sectors(50, buf)
    ata.flush()
    assert ata.read_dma(50, 1) == buf
    print("read LBA 0-3, wrote LBA 50, flushed and read it back by DMA, sleeping in hlt")
