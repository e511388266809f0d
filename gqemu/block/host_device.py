"""``host_device`` and ``host_cdrom``: the file protocol on character and
block devices.  A filename naming such a device selects ``host_device``
(QEMU's ``hdev_probe_device``); opening a regular file or a directory with
either driver fails with QEMU's message (``file_posix.raw_open`` checks the
kind of file for all three drivers).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block/file-posix.c (bdrv_host_device, bdrv_host_cdrom).
"""
from __future__ import annotations

import os
import stat

from gqemu.block.driver import bdrv_register
from gqemu.block.file_posix import BdrvFile


# QEMU: hdev_create_opts
HDEV_CREATE_OPTS: tuple[tuple[str, str, str], ...] = (
    ("size", "size", "Virtual disk size"),
    ("preallocation", "str", "Preallocation mode (allowed values: off)"))


@bdrv_register
class BdrvHostDevice(BdrvFile):
    """QEMU: bdrv_host_device."""

    format_name = "host_device"
    protocol_name = "host_device"
    create_opts = HDEV_CREATE_OPTS

    @staticmethod
    def hdev_probe_device(filename: str) -> int:
        """100 for a character or block device.  QEMU: hdev_probe_device."""
        try:
            st = os.stat(filename)
        except OSError:
            return 0
        return 100 if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0

    bdrv_probe_device = hdev_probe_device


@bdrv_register
class BdrvHostCdrom(BdrvFile):
    """QEMU: bdrv_host_cdrom (no medium handling)."""

    format_name = "host_cdrom"
    protocol_name = "host_cdrom"
    create_opts = HDEV_CREATE_OPTS
