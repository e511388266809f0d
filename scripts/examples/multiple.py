"""SET MULTIPLE MODE 4, then READ MULTIPLE of 6 sectors (DRQ blocks of 4+2, rep insd) and WRITE MULTIPLE."""
from gqemu.guest.ata import ATA, sector_lba


def guest(cpu):
    ata = ATA(cpu)
    ata.set_multiple(4)
    data = ata.read_multiple(8, 6)                      # 0xC4: blocks of 4 and 2 sectors
    lbas = [sector_lba(data[i:i + 512]) for i in range(0, len(data), 512)]
    print("READ MULTIPLE lba 8 x6: sectors say %s" % lbas)
    assert all(l in (8 + i, -1) for i, l in enumerate(lbas))
    out = bytes((i * 7) & 0xFF for i in range(4 * 512))
    ata.write_multiple(200, out)                        # 0xC5: one block, rep outsd
    assert ata.read_multiple(200, 4) == out
    print("WRITE MULTIPLE lba 200 x4 and read back: ok")
