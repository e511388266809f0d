#!/bin/sh
# /init of the Linux guest (tests/data/linux): load ata_piix + sd_mod, then
# drive /dev/sda (a 16 MiB self-describing disk, refdata/mkdisk.py) through
# the page cache and O_DIRECT, then power off.  Runs under busybox sh.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# record.py's breakpoint (nokaslr: the same address in every boot)
grep -E ' (iowrite8|iowrite16|start_kernel|handle_edge_irq)$' /proc/kallsyms | sed 's/^/GUEST: kallsyms /'
# busybox insmod does not read /proc/cmdline: pass libata.force= on
opts=$(sed -n 's/.*libata\.force=\([^ ]*\).*/force=\1/p' /proc/cmdline)
for m in $(cat /lib/modules/load-order); do
    if [ $m = libata.ko ]; then
        insmod /lib/modules/$m $opts || echo "insmod $m failed"
    else
        insmod /lib/modules/$m || echo "insmod $m failed"
    fi
done
grep -E ' vring_interrupt\s' /proc/kallsyms | sed 's/^/GUEST: kallsyms /'
if grep -q gq.vblk /proc/cmdline; then
    # record_virtio.py: a legacy virtio-blk disk, no IDE disk
    i=0
    while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do
        mdev -s 2>/dev/null; sleep 0.1; i=$((i + 1))
    done
    D=/dev/vda
    echo "GUEST: vda $(cat /sys/block/vda/size) sectors"
    printf 'GQEMU-LINUX-%05d\n' $(seq 1 700) > /tmp/w
    dd if=$D of=/dev/null bs=512 count=1 skip=7 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=4096 count=3 skip=100 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=65536 count=1 skip=3 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=4096 count=4 skip=300 2>/dev/null
    dd if=/tmp/w of=$D bs=4096 count=2 seek=200 oflag=direct conv=notrunc 2>/dev/null
    dd if=/tmp/w of=$D bs=512 count=1 seek=3000 conv=notrunc,fsync 2>/dev/null
    dd if=$D of=/tmp/r bs=4096 count=2 skip=200 iflag=direct 2>/dev/null
    echo "GUEST: vda w $(head -c 8192 /tmp/w | md5sum) r $(md5sum < /tmp/r)"
    dd if=$D of=/dev/null bs=512 count=2 skip=4095 iflag=direct 2>/dev/null
    sync
    echo "GUEST: done"
    poweroff -f
fi
i=0
while [ ! -b /dev/sda ] && [ $i -lt 100 ]; do
    mdev -s 2>/dev/null; sleep 0.1; i=$((i + 1))
done
if [ ! -b /dev/sda ]; then
    echo "GUEST: no /dev/sda"; poweroff -f
fi
echo "GUEST: sda $(cat /sys/block/sda/size) sectors"
D=/dev/sda
printf 'GQEMU-LINUX-%05d\n' $(seq 1 700) > /tmp/w
if grep -q gq.ata /proc/cmdline; then
    # record.py's "ata" variant: raw ATA commands, errors included
    /bin/atacmd /dev/sda
elif grep -q gq.eio /proc/cmdline; then
    # record.py's "eio" variant: blkdebug.cfg makes QEMU fail some requests
    dd if=$D of=/dev/null bs=4096 count=1 skip=125 iflag=direct 2>/dev/null
    echo "GUEST: eio read 1000 (fails once) rc=$?"
    dd if=$D of=/dev/null bs=512 count=1 skip=2000 iflag=direct 2>/dev/null
    echo "GUEST: eio read 2000 (fails always) rc=$?"
    dd if=/tmp/w of=$D bs=512 count=2 seek=3000 oflag=direct conv=notrunc 2>/dev/null
    echo "GUEST: eio write 3000 (fails once) rc=$?"
    dd if=$D of=/tmp/r bs=512 count=2 skip=3000 iflag=direct 2>/dev/null
    echo "GUEST: eio w $(head -c 1024 /tmp/w | md5sum) r $(md5sum < /tmp/r)"
    dd if=$D of=/dev/null bs=512 count=8 skip=4000 iflag=direct 2>/dev/null
    echo "GUEST: eio read 4000 rc=$?"
elif ! grep -q libata.force /proc/cmdline; then
    # O_DIRECT reads: exact sizes and offsets (LBA28 READ DMA; >256 sectors: EXT)
    dd if=$D of=/dev/null bs=512 count=1 skip=7 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=4096 count=3 skip=100 iflag=direct 2>/dev/null
    dd if=$D of=/tmp/a bs=65536 count=1 skip=3 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=262144 count=2 skip=9 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=1024 count=1 skip=16383 iflag=direct 2>/dev/null
    echo "GUEST: a $(md5sum < /tmp/a)"
    # buffered reads (readahead) including the disk's last sectors
    dd if=$D of=/dev/null bs=4096 count=8 skip=1000 2>/dev/null
    dd if=$D of=/dev/null bs=512 count=4 skip=32760 2>/dev/null
    # reads past the end: the block layer stops at the end
    dd if=$D of=/dev/null bs=512 count=4 skip=32766 iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=512 count=1 skip=40000 2>/dev/null
    # O_DIRECT writes (WRITE DMA), read back
    dd if=/tmp/w of=$D bs=4096 count=2 seek=500 oflag=direct conv=notrunc 2>/dev/null
    dd if=/tmp/w of=$D bs=512 count=1 seek=3000 oflag=direct conv=notrunc 2>/dev/null
    dd if=/tmp/w of=$D bs=4096 count=1 seek=2000 conv=notrunc,fsync 2>/dev/null
    dd if=$D of=/tmp/r bs=4096 count=2 skip=500 iflag=direct 2>/dev/null
    echo "GUEST: w $(head -c 8192 /tmp/w | md5sum) r $(md5sum < /tmp/r)"
    # buffered write + sync (FLUSH CACHE), a larger O_DIRECT write (EXT)
    dd if=/tmp/w of=$D bs=1024 count=7 seek=9000 conv=notrunc 2>/dev/null
    sync
    dd if=/dev/zero of=$D bs=262144 count=1 seek=40 oflag=direct conv=notrunc 2>/dev/null
    echo 3 > /proc/sys/vm/drop_caches
    dd if=$D of=/dev/null bs=1024 count=7 skip=9000 iflag=direct 2>/dev/null
fi
# more disks (record.py's "multi" variant: primary slave, secondary master,
# libata.force= PIO for one; then sda too gets only this small workload)
disks="sdb sdc"
if grep -q libata.force /proc/cmdline; then
    disks="sda sdb sdc"
    i=0                 # the three disks attach asynchronously: wait for all
    while [ ! -b /dev/sdc ] && [ $i -lt 100 ]; do
        mdev -s 2>/dev/null; sleep 0.1; i=$((i + 1))
    done
fi
for d in $disks; do
    [ -b /dev/$d ] || continue
    D=/dev/$d
    # sdX names follow the (asynchronous) attach order: number the disk by
    # its IDE index instead, SCSI host (ata_piix: one per channel) * 2 + target
    hctl=$(basename $(readlink /sys/block/$d/device))
    n=$(( ${hctl%%:*} * 2 + $(echo $hctl | cut -d: -f3) + 1 ))
    echo "GUEST: $d = ide$((n - 1)), $(cat /sys/block/$d/size) sectors"
    dd if=$D of=/dev/null bs=4096 count=1 skip=$((n * 10)) iflag=direct 2>/dev/null
    dd if=$D of=/dev/null bs=512 count=3 skip=$((n * 100 + 1)) iflag=direct 2>/dev/null
    dd if=/tmp/w of=$D bs=512 count=2 seek=$((n * 1000)) oflag=direct conv=notrunc 2>/dev/null
    dd if=$D of=/tmp/r bs=512 count=2 skip=$((n * 1000)) iflag=direct 2>/dev/null
    echo "GUEST: ide$((n - 1)) w $(head -c 1024 /tmp/w | md5sum) r $(md5sum < /tmp/r)"
done
sync
echo "GUEST: done"
poweroff -f
