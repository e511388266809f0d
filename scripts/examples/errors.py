"""The error cases: invalid opcode, LBA beyond the end, a read straddling the end, the absent slave, SRST."""
from gqemu.guest.ata import ABRT, ERR, ATA, AtaError


def expect_abort(what, fn):
    try:
        fn()
    except AtaError as e:
        assert e.status & ERR and e.error & ABRT, e
        print("%-32s -> status 0x%02x error 0x%02x (ABRT)" % (what, e.status, e.error))
    else:
        raise AssertionError("%s did not fail" % what)


def guest(cpu):
    ata = ATA(cpu)
    nsect = ata.identify()[60] | ata.identify()[61] << 16
    print("disk: %d sectors" % nsect)

    def invalid():
        ata.command(0x01)
        ata.finish("opcode 0x01")
    expect_abort("invalid opcode 0x01", invalid)
    expect_abort("READ SECTORS beyond the end", lambda: ata.read_sectors(nsect, 1))
    expect_abort("READ SECTORS EXT lba 0x01000005", lambda: ata.read_sectors(0x01000005, 1, lba48=True))
    try:                                       # 1 good sector, then the error
        ata.read_sectors(nsect - 1, 2)
    except AtaError as e:
        r = ata.regs()
        print("%-32s -> status 0x%02x, LBA regs %02x %02x %02x, count %d"
              % ("READ straddling the end", e.status, r["lba0"], r["lba1"], r["lba2"], r["nsect"]))
    slave = ATA(cpu, slave=True)
    slave.select()
    print("%-32s -> status 0x%02x" % ("absent slave selected", slave.alt_status()))
    ata.select()
    r = ata.soft_reset()
    print("%-32s -> error %02x count %02x lba %02x %02x %02x dev %02x status %02x"
          % ("SRST signature", r["error"], r["nsect"], r["lba0"], r["lba1"], r["lba2"],
             r["dev"], r["status"]))
