#!/usr/bin/env bash
# Re-record what QEMU 7.2's tools print when the kernel refuses its AIO
# engines: io_uring_setup fails (sysctl kernel.io_uring_disabled=2) and
# io_setup fails (fs.aio-max-nr=0).  tests/block/test_io_uring.py and
# tests/block/test_linux_aio.py compare gqemu's messages with these.
# Needs root: it sets the two sysctls for the commands and restores them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
old=$(cat /proc/sys/kernel/io_uring_disabled)
oldnr=$(cat /proc/sys/fs/aio-max-nr)
trap 'echo "$old" > /proc/sys/kernel/io_uring_disabled; echo "$oldnr" > /proc/sys/fs/aio-max-nr; rm -rf "$tmp"' EXIT
qemu-img create -f raw "$tmp/test.img" 1M >/dev/null
echo 2 > /proc/sys/kernel/io_uring_disabled
{ cd "$tmp"
  qemu-io -i io_uring -f raw -c 'read 0 512' test.img 2>&1; echo "exit $?"
  qemu-img bench -i io_uring -f raw -c 1 test.img 2>&1; echo "exit $?"
} > "$here/setup-failed.txt" || true
echo "$old" > /proc/sys/kernel/io_uring_disabled
echo 0 > /proc/sys/fs/aio-max-nr
{ cd "$tmp"
  qemu-io -i native -t none -f raw -c 'read 0 512' test.img 2>&1; echo "exit $?"
  qemu-img bench -i native -t none -f raw -c 1 test.img 2>&1; echo "exit $?"
} > "$here/native-setup-failed.txt" || true
qemu-io --version | head -1 > "$here/qemu-version.txt"
