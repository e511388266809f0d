#!/usr/bin/env bash
# Re-record the real-QEMU reference for the boot programs in this directory:
# each .asm is assembled, written as sector 0 of a 16 MiB self-describing
# disk (refdata/mkdisk.py's layout), booted by qemu-system-x86_64 7.2
# (SeaBIOS) with isa-debugcon on 0xE9 and isa-debug-exit on 0xF4, and the
# debugcon bytes, exit status and ide_* trace are kept as NAME.debugcon,
# NAME.status and NAME.trace.log.xz (and the sha256 of the disk's first
# 16 MiB afterwards as NAME.disk.sha256).
# Usage: [TIMEOUT=S] tests/data/kvm/record.sh [NAME...]   (QEMU is killed
#        after S seconds, 60 by default: status 124) (default: irqwait int13 mmio
#        atacmds atalba atairq atadma int13x int13x:1024 int13x:10240
#        int13x:200000 int13p:1024 int13q irqbios atalba@1 atacmds@0+1+2
#        atairq@2 int13x@0+2 biossvc stage2 int13v@0+v int13x@v int19 ports
#        ports:1024@0+1 pcibios@0+v vwrap@0+v apm;
#        TIMEOUT=20 ... int18)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
accel=kvm
[ -w /dev/kvm ] || accel=tcg
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(irqwait int13 mmio atacmds atalba atairq atadma int13x int13x:1024
                                int13x:10240 int13x:200000 int13p:1024 int13q irqbios
                                atalba@1 atacmds@0+1+2 atairq@2 int13x@0+2 biossvc stage2
                                int13v@0+v int13x@v int19 ports ports:1024@0+1
                                pcibios@0+v vwrap@0+v apm)
for arg in "${names[@]}"; do
  # NAME[:SIZE_MIB][@IDX+IDX...]: a bigger disk (the 16 MiB one, then sparse
  # zeros; files NAME-SIZEm.*), or the program's disk at IDE index IDX (the
  # first) with 2 MiB scratch disks at the others (files NAME@IDX+IDX.*);
  # IDX v: a virtio-blk-pci,disable-modern=on disk instead (one at most;
  # the program's when first: SeaBIOS then boots it; its sha256 afterwards:
  # NAME@...v.vdisk.sha256)
  spec=${arg%%@*}
  idxs=0
  [ "$arg" = "$spec" ] || idxs=${arg#*@}
  name=${spec%%:*}
  size=16
  tag=$name
  if [ "$spec" != "$name" ]; then size=${spec#*:}; tag=$name-${size}m; fi
  [ "$arg" = "$spec" ] || tag=$tag@$idxs
  nasm -f bin -I "$here/" -o "$here/$name.bin" "$here/$name.asm"
  # sector 0 is the boot sector; a longer program (ataops.inc's probes) goes
  # on in sectors 1.. and loads them itself with INT 13h
  drives=()
  first=1
  vdisk=
  for idx in ${idxs//+/ }; do
    img="$tmp/$tag-$idx.img"
    if [ $first = 1 ]; then
      PYTHONPATH="$root" python3 -c "
import sys
from gqemu.machine import make_scratch_disk
prog = open(sys.argv[2], 'rb').read()
make_scratch_disk(sys.argv[1], mbr=prog[:512])
with open(sys.argv[1], 'r+b') as f:
    f.seek(512)
    f.write(prog[512:])
    f.truncate(max(f.seek(0, 2), int(sys.argv[3]) << 20))
" "$img" "$here/$name.bin" "$size"
      disk=$img
      first=0
    else
      PYTHONPATH="$root" python3 -c "
import sys
from gqemu.machine import make_scratch_disk
make_scratch_disk(sys.argv[1], size_mib=2)" "$img"
    fi
    if [ "$idx" = v ]; then
      # a virtio-blk disk (legacy, as gqemu's if=virtio)
      drives+=(-drive "file=$img,format=raw,if=none,id=vd0"
               -device "virtio-blk-pci,disable-modern=on,drive=vd0")
      vdisk=$img
    else
      drives+=(-drive "file=$img,format=raw,if=ide,index=$idx")
    fi
  done
  set +e
  timeout "${TIMEOUT:-60}" qemu-system-x86_64 -machine pc -accel "$accel" -m 128 -display none -nodefaults \
    -no-user-config "${drives[@]}" \
    -chardev file,id=prog,path="$here/$tag.debugcon" -device isa-debugcon,iobase=0xe9,chardev=prog \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -trace 'ide_*' -D "$tmp/$tag.trace.log"
  echo $? > "$here/$tag.status"
  set -e
  xz -9 -c "$tmp/$tag.trace.log" > "$here/$tag.trace.log.xz"
  # what the program left in the disk's first 16 MiB (the probes write there)
  head -c 16M "$disk" | sha256sum | cut -d' ' -f1 > "$here/$tag.disk.sha256"
  # and the virtio disk's, if any
  [ -z "$vdisk" ] || sha256sum < "$vdisk" | cut -d' ' -f1 > "$here/$tag.vdisk.sha256"
  echo "$tag: status $(cat "$here/$tag.status"), debugcon $(xxd -p "$here/$tag.debugcon")"
done
