#!/bin/sh
# Build the Linux guest's initramfs for tests/data/linux (see README.md there).
#
#   sh tests/data/linux/build-initramfs.sh [OUTDIR]      (default /tmp/linuxguest)
#
# Needs: Debian's linux-image-amd64 (6.1, /boot/vmlinuz-* and /lib/modules/*),
# busybox-static (/bin/busybox), cpio, gzip, gcc with a static libc.  Writes OUTDIR/initramfs.cpio.gz
# and OUTDIR/vmlinuz (a copy of the kernel); OUTDIR/root is the tree.
# The guest's /init is tests/data/linux/init.sh (copied as is).  EXTRA_MODULES
# (e.g. "virtio_pci virtio_blk", record_virtio.py) are loaded after sd_mod.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-/tmp/linuxguest}
KVER=${KVER:-$(ls /lib/modules | sort -V | tail -1)}
MODDIR=/lib/modules/$KVER
ROOT=$OUT/root
rm -rf "$ROOT"
mkdir -p "$ROOT/bin" "$ROOT/sbin" "$ROOT/dev" "$ROOT/proc" "$ROOT/sys" "$ROOT/tmp" "$ROOT/lib/modules"
cp /bin/busybox "$ROOT/bin/busybox"
for a in $("$ROOT/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$ROOT/bin/$a"
done
# ata_piix + sd_mod and what modules.dep says they need, in load order
# (modules.dep lists dependencies nearest first, so load them reversed).
: > "$ROOT/lib/modules/load-order"
for m in ata_piix sd_mod ${EXTRA_MODULES:-}; do
    line=$(grep "/$m.ko[.a-z]*:" "$MODDIR/modules.dep")
    deps=$(echo "$line" | cut -d: -f2)
    rev=""
    for d in $deps; do rev="$d $rev"; done
    for d in $rev $(echo "$line" | cut -d: -f1); do
        b=$(basename "$d")
        b=${b%.xz}; b=${b%.zst}
        grep -qx "$b" "$ROOT/lib/modules/load-order" && continue
        case "$d" in
            *.xz) xz -dc "$MODDIR/$d" > "$ROOT/lib/modules/$b" ;;
            *.zst) zstd -dc "$MODDIR/$d" > "$ROOT/lib/modules/$b" ;;
            *) cp "$MODDIR/$d" "$ROOT/lib/modules/$b" ;;
        esac
        echo "$b" >> "$ROOT/lib/modules/load-order"
    done
done
# the "ata" variant's raw ATA commands (SG_IO ATA PASS-THROUGH)
gcc -static -Os -o "$ROOT/bin/atacmd" "$HERE/atacmd.c"
cp "$HERE/init.sh" "$ROOT/init"
chmod 755 "$ROOT/init"
(cd "$ROOT" && find . | sort | cpio -o -H newc --quiet | gzip -9n) > "$OUT/initramfs.cpio.gz"
cp "/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$OUT/initramfs.cpio.gz: $(cat "$ROOT/lib/modules/load-order" | tr '\n' ' ')"
