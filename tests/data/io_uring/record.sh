#!/usr/bin/env bash
# Re-record what QEMU 7.2's tools print when the kernel refuses io_uring
# (io_uring_setup fails): tests/block/test_io_uring.py compares gqemu's
# messages with these.  Needs root: it sets the sysctl
# kernel.io_uring_disabled to 2 for the two commands and restores it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'echo "$old" > /proc/sys/kernel/io_uring_disabled; rm -rf "$tmp"' EXIT
old=$(cat /proc/sys/kernel/io_uring_disabled)
qemu-img create -f raw "$tmp/test.img" 1M >/dev/null
echo 2 > /proc/sys/kernel/io_uring_disabled
{ cd "$tmp"
  qemu-io -i io_uring -f raw -c 'read 0 512' test.img 2>&1; echo "exit $?"
  qemu-img bench -i io_uring -f raw -c 1 test.img 2>&1; echo "exit $?"
} > "$here/setup-failed.txt" || true
qemu-io --version | head -1 > "$here/qemu-version.txt"
