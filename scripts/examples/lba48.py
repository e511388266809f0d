"""LBA48: READ SECTORS EXT and WRITE SECTORS EXT, with the HOB bytes read back through device control bit 7."""
from gqemu.guest.ata import ATA, sector_lba

LBA = 0x123


def guest(cpu):
    ata = ATA(cpu)
    data = ata.read_sectors(LBA, 1, lba48=True)          # 0x24 READ SECTORS EXT
    assert sector_lba(data) in (LBA, -1), "wrong sector"
    r = ata.regs(hob=True)
    print("READ SECTORS EXT lba 0x%x: LBA regs %02x %02x %02x, HOB %s"
          % (LBA, r["lba0"], r["lba1"], r["lba2"], " ".join("%02x" % b for b in r["hob"])))
    ata.write_sectors(0x2000, data, lba48=True)          # 0x34 WRITE SECTORS EXT
    assert ata.read_sectors(0x2000, 1, lba48=True) == data
    print("WRITE SECTORS EXT lba 0x2000 and read back: ok")
