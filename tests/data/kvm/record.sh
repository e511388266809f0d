#!/usr/bin/env bash
# Re-record the real-QEMU reference for the boot programs in this directory:
# each .asm is assembled, written as sector 0 of a 16 MiB self-describing
# disk (refdata/mkdisk.py's layout), booted by qemu-system-x86_64 7.2
# (SeaBIOS) with isa-debugcon on 0xE9 and isa-debug-exit on 0xF4, and the
# debugcon bytes, exit status and ide_* trace are kept as NAME.debugcon,
# NAME.status and NAME.trace.log.xz (and the sha256 of the disk afterwards
# as NAME.disk.sha256).
# Usage: tests/data/kvm/record.sh [NAME...]   (default: irqwait int13 mmio
#        atacmds atalba atairq atadma)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
accel=kvm
[ -w /dev/kvm ] || accel=tcg
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(irqwait int13 mmio atacmds atalba atairq atadma)
for name in "${names[@]}"; do
  nasm -f bin -I "$here/" -o "$here/$name.bin" "$here/$name.asm"
  # sector 0 is the boot sector; a longer program (ataops.inc's probes) goes
  # on in sectors 1.. and loads them itself with INT 13h
  PYTHONPATH="$root" python3 -c "
import sys
from gqemu.machine import make_scratch_disk
prog = open(sys.argv[2], 'rb').read()
make_scratch_disk(sys.argv[1], mbr=prog[:512])
with open(sys.argv[1], 'r+b') as f:
    f.seek(512)
    f.write(prog[512:])
" "$tmp/$name.img" "$here/$name.bin"
  set +e
  timeout 60 qemu-system-x86_64 -machine pc -accel "$accel" -m 128 -display none -nodefaults \
    -no-user-config -drive file="$tmp/$name.img",format=raw,if=ide,index=0 \
    -chardev file,id=prog,path="$here/$name.debugcon" -device isa-debugcon,iobase=0xe9,chardev=prog \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -trace 'ide_*' -D "$tmp/$name.trace.log"
  echo $? > "$here/$name.status"
  set -e
  xz -9 -c "$tmp/$name.trace.log" > "$here/$name.trace.log.xz"
  # what the program left on the disk (the probes write sectors)
  (cd "$tmp" && sha256sum "$name.img" | cut -d' ' -f1) > "$here/$name.disk.sha256"
  echo "$name: status $(cat "$here/$name.status"), debugcon $(xxd -p "$here/$name.debugcon")"
done
