"""refdata's boot-sector program (mbr/ataprobe.asm) port for port: 15 ATA commands, HOB reads, SRST."""
# The same accesses, in the same order, as the 512-byte program that real
# QEMU 7.2 ran in refdata (see /work/shared/refdata/mbr/ataprobe.asm): run it
# on a copy of refdata's disk-pristine.img and the disk ends equal to
# disk-after.img, the port trace equal to exits-raw.jsonl's program part.
#
#   gqemu run scripts/examples/ataprobe.py --drive file=disk.img,format=raw

DATA, ERRF, DEVH, STAT, ALT = 0x1F0, 0x1F1, 0x1F6, 0x1F7, 0x3F6
DBGC, EXITP = 0xE9, 0xF4

M_NONE, M_IN, M_OUT, M_D32, M_HOB, M_NOCMD = 0, 1, 2, 4, 0x40, 0x80

# mode, sectors per DRQ block, features, count, lba0, lba1, lba2, device, command
TESTS = [
    (M_IN, 1, 0x00, 0x01, 0x00, 0x00, 0x00, 0xF0, 0xEC),          # IDENTIFY to absent slave
    (M_IN, 1, 0x00, 0x01, 0x00, 0x00, 0x00, 0xE0, 0xEC),          # IDENTIFY DEVICE
    (M_IN, 1, 0x00, 0x04, 0x01, 0x00, 0x00, 0xE0, 0x20),          # READ SECTORS lba 1 x4
    (M_OUT, 1, 0x00, 0x02, 0x64, 0x00, 0x00, 0xE0, 0x30),         # WRITE SECTORS lba 100 x2
    (M_NONE, 0, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0xE7),        # FLUSH CACHE
    (M_IN, 1, 0x00, 0x02, 0x64, 0x00, 0x00, 0xE0, 0x20),          # READ SECTORS lba 100 x2
    (M_NONE, 0, 0x00, 0x04, 0x00, 0x00, 0x00, 0xE0, 0xC6),        # SET MULTIPLE MODE 4
    (M_IN | M_D32, 4, 0x00, 0x06, 0x08, 0x00, 0x00, 0xE0, 0xC4),  # READ MULTIPLE lba 8 x6, insd
    (M_OUT | M_D32, 4, 0x00, 0x04, 0xC8, 0x00, 0x00, 0xE0, 0xC5),  # WRITE MULTIPLE lba 200 x4
    (M_NOCMD, 0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00),       # LBA48 previous bytes
    (M_IN | M_HOB, 1, 0x00, 0x01, 0x23, 0x01, 0x00, 0x40, 0x24),  # READ SECTORS EXT lba 0x123
    (M_NOCMD, 0, 0x00, 0x00, 0x01, 0x00, 0x00, 0x40, 0x00),       # previous bytes: lba3 = 1
    (M_IN | M_HOB, 1, 0x00, 0x01, 0x05, 0x00, 0x00, 0x40, 0x24),  # lba 0x01000005 -> error
    (M_NONE, 0, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0x01),        # invalid opcode -> ABRT
    (M_IN, 1, 0x00, 0x02, 0xFF, 0x7F, 0x00, 0xE0, 0x20),          # lba 0x7FFF x2: 1 ok, error
    (M_IN, 1, 0x00, 0x01, 0x00, 0x80, 0x00, 0xE0, 0x20),          # lba 0x8000: beyond the end
    (M_NONE, 0, 0x00, 0x03, 0x0A, 0x00, 0x00, 0xE0, 0x40),        # READ VERIFY lba 10 x3
]


def wait_nbsy(cpu):
    """One alternate-status read, then poll 0x1F7 until BSY clears."""
    cpu.inb(ALT)
    while True:
        st = cpu.inb(STAT)
        if not st & 0x80:
            return st


def dump(cpu):
    regs = [cpu.inb(port) for port in range(ERRF, STAT + 1)]
    return regs + [cpu.inb(ALT)]


def guest(cpu):
    pattern = b"".join((0xA55A + i).to_bytes(2, "little") for i in range(1536))
    wpos = 0
    reads = []
    cpu.outb(ALT, 0x02)                        # nIEN: polled driver
    cpu.outb(DEVH, 0xE0)                       # master, LBA
    for _ in range(4):                         # ~400 ns
        cpu.inb(ALT)
    wait_nbsy(cpu)
    for mode, blk, *taskfile, command in TESTS:
        for port, value in zip(range(ERRF, DEVH + 1), taskfile):
            cpu.outb(port, value)
        if mode & M_NOCMD:
            continue
        cpu.outb(STAT, command)
        remaining = taskfile[1]                # the count register value
        while True:
            st = wait_nbsy(cpu)
            if not st & 0x08:                  # DRQ?
                break
            n = min(blk, remaining)
            remaining -= n
            if mode & M_OUT:
                chunk = pattern[wpos:wpos + 512 * n]
                wpos += 512 * n
                if mode & M_D32:
                    cpu.outsl(DATA, chunk)
                else:
                    cpu.outsw(DATA, chunk)
            elif mode & M_D32:
                reads.append(cpu.insl(DATA, 128 * n))
            else:
                reads.append(cpu.insw(DATA, 256 * n))
        regs = dump(cpu)
        print("cmd %02x: %s" % (command, " ".join("%02x" % r for r in regs)))
        if mode & M_HOB:
            cpu.outb(ALT, 0x82)                # HOB | nIEN
            print("   HOB: %s" % " ".join("%02x" % r for r in dump(cpu)))
            cpu.outb(ALT, 0x02)
    stray = cpu.inw(DATA)                      # DRQ=0: QEMU returns 0, untraced
    cpu.outb(DBGC, stray & 0xFF)
    cpu.outb(DBGC, stray >> 8)
    cpu.outb(ALT, 0x06)                        # SRST | nIEN
    cpu.inb(ALT)
    cpu.inb(ALT)
    cpu.outb(ALT, 0x02)
    wait_nbsy(cpu)
    print("SRST:   %s" % " ".join("%02x" % r for r in dump(cpu)))
    data = b"".join(reads)
    ok = data[512 + 4 * 512:512 + 6 * 512] == pattern[:1024]
    cpu.outb(EXITP, 0x10 if ok else 0x11)
    print("stray data read 0x%04x, read-back %s" % (stray, "OK" if ok else "MISMATCH"))
    assert ok, "the read-back differs from the written pattern"
