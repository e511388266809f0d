"""Write two sectors by PIO, FLUSH CACHE (polling through BSY), read them back and compare."""
from gqemu.guest.ata import ATA

LBA = 100


def guest(cpu):
    ata = ATA(cpu)
    pattern = b"".join((0xA55A + i).to_bytes(2, "little") for i in range(512))  # 2 sectors
    ata.write_sectors(LBA, pattern)            # WRITE SECTORS: 2 DRQ blocks of rep outsw
    ata.flush()                                # FLUSH CACHE: BSY (0xc0) while it runs
    back = ata.read_sectors(LBA, 2)            # READ SECTORS
    assert back == pattern, "read-back differs from what was written"
    r = ata.regs()
    print("wrote, flushed and read back LBA %d-%d; LBA registers now %02x %02x %02x"
          % (LBA, LBA + 1, r["lba0"], r["lba1"], r["lba2"]))
