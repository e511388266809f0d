"""Creating and destroying the controller many times keeps memory flat
(reliability T49, the CVE-2017-9373 class)."""
from __future__ import annotations

import gc
import tracemalloc

from tests.hw.rig import Rig, make_disk


def cycle(disk, n):
    for _ in range(n):
        rig = Rig([disk, None, disk.with_name("e.img"), None])
        rig.outb(0x1F6, 0xE0)
        rig.outb(0x1F2, 1)
        rig.outb(0x1F7, 0x20)            # leave a read in flight on purpose
        rig.piix.reset()
        rig.close()


def test_create_destroy_is_flat(tmp_path):
    disk = make_disk(tmp_path / "d.img", 64)
    make_disk(tmp_path / "e.img", 64)
    cycle(disk, 5)
    gc.collect()
    tracemalloc.start()
    try:
        cycle(disk, 10)
        gc.collect()
        base, _ = tracemalloc.get_traced_memory()
        cycle(disk, 40)
        gc.collect()
        now, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # each controller holds > 512 KiB of I/O buffers; 40 leaked ones would be 20 MiB
    assert now - base < 512 * 1024, (base, now)
