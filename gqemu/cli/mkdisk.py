"""``gqemu mkdisk FILE [--size SIZE] [--mbr BOOT.bin] [--force]``: write the
self-describing scratch disk to a file.

The disk is the one ``gqemu run`` makes when given no ``--drive`` (and
``refdata/mkdisk.py`` makes): sector N holds N (u32 LE), the text
``<LBA 0x%08x> `` repeated, and N XOR 0xffffffff, so any sector seen in a
trace or read by a guest names its LBA.  ``--mbr`` puts a boot sector in
LBA 0.  SIZE takes ``qemu-img``'s suffixes (k, M, G, T; default 16M) and
must be a whole number of 512-byte sectors, at most 2 TiB (LBAs are 32-bit).

An existing FILE is refused unless ``--force`` is given.  The disk is
written to a temporary file beside FILE and moved into place when complete,
so a failed or interrupted run leaves nothing (and an existing FILE intact).
Exit status: 0 when written, 2 on bad usage or an error (one line).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import IO, Optional

SECTOR = 512
MAX_SIZE = SECTOR << 32                    # LBAs are u32 in the sector tag


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="the raw disk image to write")
    p.add_argument("--size", default="16M",
                   help="disk size with qemu-img's suffixes (default 16M, the size of "
                        "gqemu run's scratch disk)")
    p.add_argument("--mbr", metavar="BOOT.bin",
                   help="a boot sector for LBA 0 (the first 512 bytes of the file, "
                        "ending in 55 aa)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def parse_disk_size(text: str) -> int:
    """SIZE as qemu-img reads it, checked to be whole sectors.  Raises UsageError."""
    from gqemu.cli.errors import UsageError
    from gqemu.cli.qemu_img_tool import ImgError, cvtnum
    size = -1
    if not text.strip().startswith("-"):
        try:
            size = cvtnum("image size", text)
        except ImgError as e:
            raise UsageError("--size %s: %s" % (text, str(e).replace("\n", " "))) from None
    if size <= 0 or size % SECTOR:
        raise UsageError("--size %s: the size must be a positive multiple of %d bytes"
                         % (text, SECTOR))
    if size > MAX_SIZE:
        raise UsageError("--size %s: at most 2T (the sectors carry 32-bit LBAs)" % text)
    return size


def read_mbr(path: str) -> bytes:
    from gqemu.cli.errors import UsageError
    try:
        with open(path, "rb") as f:
            mbr = f.read(SECTOR)
    except OSError as e:
        raise UsageError("--mbr %s: %s" % (path, e.strerror or e)) from None
    if len(mbr) != SECTOR or mbr[510:] != b"\x55\xaa":
        raise UsageError("--mbr %s: not a boot sector (%d bytes; it must be 512 bytes "
                         "ending in 55 aa)" % (path, len(mbr)))
    return mbr


def write_disk(f: IO[bytes], nsect: int, mbr: Optional[bytes]) -> None:
    from gqemu.machine import scratch_sector
    batch = 2048                                            # 1 MiB a write
    for start in range(0, nsect, batch):
        chunk = [scratch_sector(lba) for lba in range(start, min(start + batch, nsect))]
        if start == 0 and mbr is not None:
            chunk[0] = mbr
        f.write(b"".join(chunk))


def run(args: argparse.Namespace) -> int:
    from gqemu.cli.errors import UsageError
    size = parse_disk_size(args.size)
    mbr = read_mbr(args.mbr) if args.mbr else None
    path = args.file
    if not args.force and os.path.lexists(path):
        raise UsageError("%s: already exists (use --force to overwrite it)" % path)
    if os.path.isdir(path):
        raise UsageError("%s: Is a directory" % path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise UsageError("%s: not a regular file (--force replaces only files)" % path)
    outdir = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gqemu-mkdisk-", dir=outdir)
    except OSError as e:
        raise UsageError("%s: %s" % (path, e.strerror or e)) from None
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            write_disk(f, size // SECTOR, mbr)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        if args.force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)              # fails if FILE appeared meanwhile
        done = True
    except FileExistsError:
        raise UsageError("%s: already exists (use --force to overwrite it)" % path) from None
    except OSError as e:
        raise UsageError("%s: %s" % (path, e.strerror or e)) from None
    finally:
        if not done or not args.force:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    if not args.quiet:
        n = size // SECTOR
        sys.stdout.write("%s: %d bytes, %d self-describing sector%s%s\n"
                         % (path, size, n, "" if n == 1 else "s",
                            ", boot sector from %s" % args.mbr if mbr is not None else ""))
    return 0
