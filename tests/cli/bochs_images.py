"""Build Bochs "growing" redolog images by the layout QEMU's block/bochs.c
reads (the layout bximage writes): a 512-byte header, the catalog at the
header size, then each allocated extent as its bitmap blocks followed by
its data blocks.  Used by test_iotests_raw_bochs.py to give real qemu-io/qemu-img and
gqemu the same images, sound and corrupt."""
from __future__ import annotations

import random
import struct
from pathlib import Path

MAGIC = b"Bochs Virtual HD Image"


def header(disk: int, catalog: int, extent: int, bitmap: int, version: int = 0x20000,
           header_size: int = 512) -> bytearray:
    h = bytearray(512)
    h[0:len(MAGIC)] = MAGIC
    h[32:39] = b"Redolog"
    h[48:55] = b"Growing"
    struct.pack_into("<5I", h, 64, version, header_size, catalog, bitmap, extent)
    struct.pack_into("<Q", h, 84 if version == 0x10000 else 88, disk)
    return h


def make(path: Path, disk: int = 1 << 20, extent: int = 4096, bitmap: int = 512,
         version: int = 0x20000, seed: int = 1, fill: float = 0.6) -> bytes:
    """Write an image of ``disk`` bytes with about ``fill`` of its extents
    allocated in a shuffled order and about half of their sectors marked
    in the bitmaps; returns the guest-visible contents."""
    rnd = random.Random(seed)
    n_ext = -(-disk // extent)
    per = extent // 512
    bitmap_blocks = 1 + (bitmap - 1) // 512
    extent_blocks = 1 + (extent - 1) // 512
    catalog = [0xFFFFFFFF] * n_ext
    order = [i for i in range(n_ext) if rnd.random() < fill]
    rnd.shuffle(order)
    guest = bytearray(disk)
    body = bytearray()
    for slot, idx in enumerate(order):
        catalog[idx] = slot
        bits = bytearray(bitmap_blocks * 512)
        data = bytearray(extent_blocks * 512)
        for s in range(per):
            sector = bytes(rnd.getrandbits(8) for _ in range(16)) * 32
            data[s * 512:(s + 1) * 512] = sector
            if rnd.random() < 0.5:
                bits[s // 8] |= 1 << (s % 8)
                g = idx * extent + s * 512
                if g < disk:
                    guest[g:g + 512] = sector[:min(512, disk - g)]
        body += bits + data
    with open(path, "wb") as f:
        f.write(header(disk, n_ext, extent, bitmap, version))
        f.write(struct.pack("<%dI" % n_ext, *catalog))
        f.write(body)
    return bytes(guest)


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
