/* atacmd: raw ATA commands through Linux's SCSI ATA PASS-THROUGH (16)
 * (SG_IO), for tests/data/linux's "ata" variant.  Each command's result
 * registers (the ATA status return descriptor, CK_COND=1) are printed as
 *   GUEST: ata NAME rc=R st=SS err=EE cnt=CCCC lba=LLLLLLLLLLLL [sum=...]
 * so the recording itself shows what QEMU answered.
 * Built by build-initramfs.sh: gcc -static -Os -o atacmd atacmd.c */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <scsi/sg.h>

enum { NODATA = 3, PIO_IN = 4, PIO_OUT = 5, DMA = 6 };

static int fd;
static unsigned char buf[8 * 512];

static unsigned sum(const unsigned char *p, int n)
{
    unsigned s = 0;
    for (int i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void ata(const char *name, int proto, int ext, int cmd, int feat, int count,
                unsigned long long lba, int dev, int nsect)
{
    unsigned char cdb[16] = {0}, sense[64] = {0};
    sg_io_hdr_t io;
    int len = nsect * 512;

    cdb[0] = 0x85;
    cdb[1] = (proto << 1) | (ext ? 1 : 0);
    cdb[2] = 0x20;                                  /* CK_COND */
    if (nsect)
        cdb[2] |= (proto == PIO_OUT || (proto == DMA && cmd == 0xca) ? 0 : 0x08)
                  | 0x04 | 0x02;                    /* T_DIR, BYTE_BLOCK, T_LENGTH=count */
    cdb[3] = feat >> 8;
    cdb[4] = feat;
    cdb[5] = count >> 8;
    cdb[6] = count;
    cdb[7] = lba >> 24;
    cdb[8] = lba;
    cdb[9] = lba >> 32;
    cdb[10] = lba >> 8;
    cdb[11] = lba >> 40;
    cdb[12] = lba >> 16;
    cdb[13] = dev;
    cdb[14] = cmd;
    memset(&io, 0, sizeof(io));
    io.interface_id = 'S';
    io.cmd_len = 16;
    io.cmdp = cdb;
    io.mx_sb_len = sizeof(sense);
    io.sbp = sense;
    io.timeout = 10000;
    if (!nsect)
        io.dxfer_direction = SG_DXFER_NONE;
    else if (proto == PIO_OUT || cmd == 0xca)
        io.dxfer_direction = SG_DXFER_TO_DEV;
    else
        io.dxfer_direction = SG_DXFER_FROM_DEV;
    io.dxferp = buf;
    io.dxfer_len = len;
    if (io.dxfer_direction == SG_DXFER_FROM_DEV)
        memset(buf, 0xee, len);
    int rc = ioctl(fd, SG_IO, &io);
    /* descriptor sense: the ATA status return descriptor (code 0x09) */
    unsigned char *d = NULL;
    if ((sense[0] & 0x7f) == 0x72)
        for (int i = 8; i + 14 <= 8 + sense[7]; i += 2 + sense[i + 1])
            if (sense[i] == 0x09) {
                d = sense + i;
                break;
            }
    printf("GUEST: ata %s rc=%d host=%d drv=%d", name, rc, io.host_status, io.driver_status);
    if (d)
        printf(" st=%02x err=%02x cnt=%02x%02x lba=%02x%02x%02x%02x%02x%02x dev=%02x",
               d[13], d[3], d[4], d[5], d[10], d[8], d[6], d[11], d[9], d[7], d[12]);
    else
        printf(" sense=%02x/%02x/%02x", sense[1], sense[2], sense[3]);
    if (io.dxfer_direction == SG_DXFER_FROM_DEV)
        printf(" sum=%08x resid=%d", sum(buf, len), io.resid);
    printf("\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    fd = open(argc > 1 ? argv[1] : "/dev/sda", O_RDWR);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    ata("check-power", NODATA, 0, 0xe5, 0, 0, 0, 0x40, 0);
    ata("identify", PIO_IN, 0, 0xec, 0, 1, 0, 0x40, 1);
    ata("read-native-max", NODATA, 0, 0xf8, 0, 0, 0, 0x40, 0);
    ata("read-native-max-ext", NODATA, 1, 0x27, 0, 0, 0, 0x40, 0);
    ata("wcache-off", NODATA, 0, 0xef, 0x82, 0, 0, 0x40, 0);
    ata("identify-wc-off", PIO_IN, 0, 0xec, 0, 1, 0, 0x40, 1);
    ata("wcache-on", NODATA, 0, 0xef, 0x02, 0, 0, 0x40, 0);
    ata("setfeat-bad", NODATA, 0, 0xef, 0x99, 0, 0, 0x40, 0);
    ata("opcode-01", NODATA, 0, 0x01, 0, 0, 0, 0x40, 0);
    ata("nop", NODATA, 0, 0x00, 0, 0, 0, 0x40, 0);
    ata("device-reset", NODATA, 0, 0x08, 0, 0, 0, 0x40, 0);
    ata("smart-enable", NODATA, 0, 0xb0, 0xd8, 0, 0xc24f00, 0x40, 0);
    ata("smart-status", NODATA, 0, 0xb0, 0xda, 0, 0xc24f00, 0x40, 0);
    ata("smart-read-data", PIO_IN, 0, 0xb0, 0xd0, 1, 0xc24f00, 0x40, 1);
    ata("smart-bad-sig", NODATA, 0, 0xb0, 0xda, 0, 0x000000, 0x40, 0);
    ata("read-sectors", PIO_IN, 0, 0x20, 0, 2, 5, 0x40, 2);
    ata("read-sectors-ext-end", PIO_IN, 1, 0x24, 0, 2, 32766, 0x40, 2);
    ata("read-sectors-past-end", PIO_IN, 0, 0x20, 0, 1, 32768, 0x40, 1);
    memset(buf, 0x5a, 512);
    strcpy((char *)buf, "atacmd WRITE SECTORS lba 7000");
    ata("write-sectors", PIO_OUT, 0, 0x30, 0, 1, 7000, 0x40, 1);
    ata("read-dma", DMA, 0, 0xc8, 0, 1, 7000, 0x40, 1);
    ata("read-dma-straddle", DMA, 0, 0xc8, 0, 2, 32767, 0x40, 2);
    ata("read-dma-ext-past-end", DMA, 1, 0x25, 0, 1, 40000, 0x40, 1);
    ata("read-dma-after-error", DMA, 0, 0xc8, 0, 8, 100, 0x40, 8);
    ata("verify", NODATA, 0, 0x40, 0, 3, 10, 0x40, 0);
    ata("verify-ext", NODATA, 1, 0x42, 0, 3, 20, 0x40, 0);
    ata("flush-ext", NODATA, 1, 0xea, 0, 0, 0, 0x40, 0);
    ata("idle-immediate", NODATA, 0, 0xe1, 0, 0, 0, 0x40, 0);
    ata("standby-immediate", NODATA, 0, 0xe0, 0, 0, 0, 0x40, 0);
    ata("check-power-2", NODATA, 0, 0xe5, 0, 0, 0, 0x40, 0);
    ata("set-multiple-bad", NODATA, 0, 0xc6, 0, 3, 0, 0x40, 0);
    ata("exec-diagnostic", NODATA, 0, 0x90, 0, 0, 0, 0x40, 0);
    ata("read-sectors-after-diag", PIO_IN, 0, 0x20, 0, 1, 1, 0x40, 1);
    close(fd);
    return 0;
}
