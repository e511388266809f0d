"""``snapshot=on`` (qemu-io ``-s``): the image is opened read-only under a
temporary qcow2 overlay that takes every write and is deleted when closed
(gqemu unlinks it as soon as it is open).  The overlay names no backing
file; the opened node is attached as its backing child, so any node graph
(json:, --image-opts, blkdebug) can sit below it.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block.c (bdrv_append_temp_snapshot, bdrv_temp_snapshot_flags).
"""
from __future__ import annotations

import errno
import os

from gqemu.block.block_int import (BDRV_O_NATIVE_AIO, BDRV_O_NO_BACKING, BDRV_O_NO_FLUSH,
                                   BDRV_O_NOCACHE, BlockError)
from gqemu.block.driver import BlockDriverState, bdrv_attach_child, bdrv_getlength
from gqemu.block.driver_open import bdrv_open


def _temp_file_name() -> str:
    """Create an empty ``$TMPDIR/vl.XXXXXX`` (six letters or digits, as
    mkstemp(3)).  QEMU: get_tmp_filename."""
    import random
    import string
    chars = string.ascii_letters + string.digits
    base = os.environ.get("TMPDIR") or "/var/tmp"
    while True:
        name = os.path.join(base, "vl." + "".join(random.choice(chars) for _ in range(6)))
        try:
            os.close(os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            return name
        except FileExistsError:
            continue


def bdrv_append_temp_snapshot(bs: BlockDriverState, flags: int) -> BlockDriverState:
    """A writable temporary overlay over ``bs`` (which the overlay now
    owns).  Raises BlockError.  QEMU: bdrv_append_temp_snapshot."""
    from gqemu.block.qcow2_create import Qcow2CreateOptions, qcow2_create_file
    from gqemu.block.qcow2_header import Qcow2OpenError
    size = bdrv_getlength(bs)
    if size < 0:
        raise BlockError(-size, "Could not get image size: %s" % os.strerror(-size))
    tmp = _temp_file_name()
    try:
        try:
            qcow2_create_file(tmp, Qcow2CreateOptions(size=size))
        except Qcow2OpenError as e:
            raise BlockError(e.errno or errno.EIO, "Could not create temporary overlay "
                             "'%s': %s" % (tmp, e.msg)) from None
        overlay = bdrv_open(tmp, {"format": "qcow2"},
                            # read-only under -r; cache=unsafe (QEMU's
                            # bdrv_temp_snapshot_options: direct off, no-flush on)
                            # (and not aio=native, which needs O_DIRECT)
                            flags & ~(BDRV_O_NOCACHE | BDRV_O_NATIVE_AIO)
                            | BDRV_O_NO_FLUSH | BDRV_O_NO_BACKING)
    finally:
        os.unlink(tmp)
    overlay.backing = bdrv_attach_child(overlay, bs, "backing")
    return overlay
