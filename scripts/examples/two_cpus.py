"""Two vCPUs on two disks: vCPU 0 reads the primary master while vCPU 1 writes and reads the secondary master."""
from gqemu.guest.ata import ATA, sector_lba

SCRATCH_DRIVES = [0, 2]          # IDE index 0 (primary master), 2 (secondary master)


def cpu0(cpu):
    ata = ATA(cpu, channel=0)
    for lba in range(0, 64, 8):
        data = ata.read_sectors(lba, 8)
        assert [sector_lba(data[i:i + 512]) for i in range(0, 4096, 512)][0] in (lba, -1)
    print("vCPU 0: read LBA 0-63 of the primary master")


def cpu1(cpu):
    ata = ATA(cpu, channel=1)
    buf = b"\x5a\xa5" * 2048
    ata.write_sectors(1000, buf)
    ata.flush()
    assert ata.read_sectors(1000, 8) == buf
    print("vCPU 1: wrote, flushed and read back LBA 1000-1007 of the secondary master")


guests = [cpu0, cpu1]
