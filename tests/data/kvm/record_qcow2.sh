#!/usr/bin/env bash
# Re-record a boot program on a qcow2 overlay (a fresh image whose backing
# file, base.img, is record.sh's 16 MiB disk with the program) under real
# qemu-system-x86_64 7.2, for each cache mode: the debugcon bytes, exit
# status and the overlay image itself as QEMU left it, xz-compressed
# (NAME%qcow2-CACHE.{debugcon,status,qcow2.xz}).  The program ends with
# isa-debug-exit, QEMU's exit(): what the qcow2 driver still caches is never
# written, so with cache=writeback the guest's writes to new clusters are
# lost from the overlay, with writethrough (a flush after every write) not.
# A program that powers off through ACPI instead (poweroff) has QEMU shut
# down and flush: its writes stay.
# Usage: tests/data/kvm/record_qcow2.sh [NAME [CACHE...]]
#        (default: stage2 writeback writethrough; also: poweroff writeback)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
name=${1:-stage2}
shift || true
caches=("$@")
[ ${#caches[@]} -gt 0 ] || caches=(writeback writethrough)
nasm -f bin -I "$here/" -o "$here/$name.bin" "$here/$name.asm"
for cache in "${caches[@]}"; do
  tag="$name%qcow2-$cache"
  rm -f "$tmp/base.img" "$tmp/top.qcow2"
  PYTHONPATH="$root" python3 -c "
import sys
from gqemu.machine import make_scratch_disk
prog = open(sys.argv[2], 'rb').read()
make_scratch_disk(sys.argv[1], mbr=prog[:512])
with open(sys.argv[1], 'r+b') as f:
    f.seek(512)
    f.write(prog[512:])
" "$tmp/base.img" "$here/$name.bin"
  (cd "$tmp" && qemu-img create -q -f qcow2 -b base.img -F raw top.qcow2)
  set +e
  (cd "$tmp" && timeout 60 qemu-system-x86_64 -machine pc -accel kvm -m 128 -display none \
    -nodefaults -no-user-config -drive "file=top.qcow2,format=qcow2,if=ide,index=0,cache=$cache" \
    -chardev file,id=prog,path="$here/$tag.debugcon" -device isa-debugcon,iobase=0xe9,chardev=prog \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04)
  echo $? > "$here/$tag.status"
  set -e
  xz -9 -c "$tmp/top.qcow2" > "$here/$tag.qcow2.xz"
  echo "$tag: status $(cat "$here/$tag.status"), $(qemu-img map --output=json "$tmp/top.qcow2" | head -c 200)"
done
