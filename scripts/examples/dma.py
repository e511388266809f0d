"""Bus-master DMA: READ DMA and WRITE DMA through a PRD table in guest RAM, waiting on the BMDMA status."""
from gqemu.guest.ata import ATA, sector_lba


def guest(cpu):
    ata = ATA(cpu)
    data = ata.read_dma(16, 8)                          # 0xC8 READ DMA, 8 sectors
    lbas = [sector_lba(data[i:i + 512]) for i in range(0, len(data), 512)]
    print("READ DMA lba 16 x8: sectors say %s" % lbas)
    buf = bytes(range(256)) * 8                         # 4 sectors
    ata.write_dma(300, buf)                             # 0xCA WRITE DMA
    assert ata.read_dma(300, 4) == buf
    assert ata.read_sectors(300, 4) == buf              # and by PIO
    print("WRITE DMA lba 300 x4, read back by DMA and PIO: ok")
