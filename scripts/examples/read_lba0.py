"""The seed's scenario: READ SECTORS of LBA 0 on a raw disk, polled like SeaBIOS."""
# One IDE PIO READ SECTORS (0x20) of LBA 0 from the primary master, waited
# for as SeaBIOS does (alternate status, then status until BSY clears), the
# 256 data words fetched with one `rep insw`.  On the default scratch disk
# sector 0 describes itself, so the script can check what it got.
#
#   gqemu run scripts/examples/read_lba0.py --backtrace
#
# shows the seed's three backtraces for this very request.
from gqemu.guest.ata import ATA, sector_lba


def guest(cpu):
    ata = ATA(cpu)                           # primary master, nIEN set
    data = ata.read_sectors(0, 1)            # outb 0x1f7 <- 0x20 ... rep insw
    lba = sector_lba(data)
    if lba >= 0:
        print("LBA 0: %r" % data[4:20].decode("ascii", "replace"))
        assert lba == 0, "sector 0 says it is LBA %d" % lba
    else:
        print("LBA 0: %s..." % data[:16].hex())
