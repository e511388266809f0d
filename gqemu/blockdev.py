"""Drives for the ``pc`` machine: QEMU's ``-drive`` syntax, the
self-describing scratch disk, and opening a drive as a device does.

``parse_drive_spec`` reads ``key=value`` items (``,,`` escapes a comma);
``drive_config`` checks the machine-level keys and gives each drive its
interface, index and QEMU name (``ide0-hd0``, ``virtio0``);
``make_scratch_disk`` writes the self-describing raw disk of
``refdata/mkdisk.py``; ``open_drive`` opens one with the locks a guest
device takes.

Must not import: gqemu.cli.
QEMU: blockdev.c (drive_new), hw/block/block.c (blkconf_apply_backend_options).
"""
from __future__ import annotations

import os
import struct
from typing import Any, Optional, Sequence

SECTOR = 512
NR_DRIVES = 4               # primary/secondary x master/slave
NR_VIRTIO = 8               # if=virtio drives: PCI slots 2..9

# keys the machine consumes; everything else goes to blk_new_open's options
# (``if`` too: it makes the drive a guest device's, which takes QEMU's locks)
_MACHINE_KEYS = ("file", "index", "bus", "unit", "media", "id")
_CACHE_MODES = ("writeback", "writethrough", "none", "directsync", "unsafe")


class MachineError(Exception):
    """Bad machine or drive configuration: a one-line message."""


def parse_drive_spec(spec: str) -> dict[str, str]:
    """Split a ``-drive`` argument into its items.

    ``file=a,,b.img,format=raw`` gives ``{"file": "a,b.img", "format": "raw"}``.
    An argument with no ``=`` at all is taken as a file name.  Raises
    MachineError for an empty item, a missing value or a repeated key.
    """
    if "=" not in spec:
        if not spec:
            raise MachineError("empty -drive argument")
        return {"file": spec.replace(",,", ",")}
    from gqemu.block.drive_opts import qemu_opts_split
    items = qemu_opts_split(spec)
    out: dict[str, str] = {}
    for item in items:
        if not item:
            raise MachineError("-drive %s: empty option" % spec)
        key, eq, value = item.partition("=")
        if not eq:
            # QemuOpts: a bare 'key' means key=on
            value = "on"
        if not key:
            raise MachineError("-drive %s: option without a name" % spec)
        if key in out:
            raise MachineError("-drive %s: option '%s' given twice" % (spec, key))
        out[key] = value
    return out


def drive_config(specs: Sequence[str]) -> list[dict]:
    """Turn ``--drive`` arguments into ``{"index", "file", "options"}`` dicts,
    checking the machine-level keys (QEMU's drive_new).  Raises MachineError."""
    drives: list[dict] = []
    used: set[int] = set()
    vused: set[int] = set()
    for spec in specs:
        opts = parse_drive_spec(spec)
        if "file" not in opts or not opts["file"]:
            raise MachineError("-drive %s: a file= is required" % spec)
        iface = opts.get("if", "ide")
        if iface not in ("ide", "virtio"):
            raise MachineError("-drive %s: if=%s is not supported by machine pc here "
                               "(use if=ide or if=virtio)" % (spec, iface))
        media = opts.get("media", "disk")
        if media != "disk":
            raise MachineError("-drive %s: media=%s is not supported (disk only)"
                               % (spec, media))
        cache = opts.get("cache")
        if cache is not None and cache not in _CACHE_MODES:
            raise MachineError("-drive %s: invalid cache option '%s'" % (spec, cache))
        options = {k: v for k, v in opts.items() if k not in _MACHINE_KEYS}
        if iface == "virtio":
            drives.append(_virtio_drive(spec, opts, options, vused))
            continue
        index = _drive_index(spec, opts, used)
        used.add(index)
        options["if"] = iface
        drives.append({"index": index, "file": opts["file"], "options": options,
                       "spec": spec, "name": opts.get("id") or _drive_name(index)})
    drives.sort(key=lambda d: (d.get("if", "ide") == "virtio", d["index"]))
    return drives


def _drive_name(index: int, iface: str = "ide") -> str:
    """QEMU's name for a drive without ``id=``: ``ide0-hd0`` (bus 0, unit 0)
    .. ``ide1-hd1``, ``virtio0`` ...  QEMU: blockdev.c drive_new."""
    if iface == "virtio":
        return "virtio%d" % index
    return "ide%d-hd%d" % (index // 2, index % 2)


def _virtio_drive(spec: str, opts: dict, options: dict, vused: set[int]) -> dict:
    """An ``if=virtio`` drive: ``index`` counts virtio drives (each becomes
    a legacy virtio-blk-pci function, 00:02.0 onwards)."""
    if "bus" in opts or "unit" in opts:
        raise MachineError("-drive %s: bus/unit are for if=ide" % spec)
    index = _int_opt(spec, opts, "index", NR_VIRTIO)
    if index is None:
        index = next((i for i in range(NR_VIRTIO) if i not in vused), None)
        if index is None:
            raise MachineError("-drive %s: no free virtio slot (%d at most)" % (spec, NR_VIRTIO))
    if index in vused:
        raise MachineError("-drive %s: virtio drive index=%d exists" % (spec, index))
    vused.add(index)
    options["if"] = "virtio"
    return {"index": index, "file": opts["file"], "options": options, "if": "virtio",
            "spec": spec, "name": opts.get("id") or _drive_name(index, "virtio")}


def _int_opt(spec: str, opts: dict, key: str, hi: int) -> Optional[int]:
    v = opts.get(key)
    if v is None:
        return None
    try:
        n = int(v, 0)
    except ValueError:
        raise MachineError("-drive %s: %s=%s is not a number" % (spec, key, v))
    if not 0 <= n < hi:
        raise MachineError("-drive %s: %s=%d out of range (0..%d)" % (spec, key, n, hi - 1))
    return n


def _drive_index(spec: str, opts: dict, used: set[int]) -> int:
    index = _int_opt(spec, opts, "index", NR_DRIVES)
    bus = _int_opt(spec, opts, "bus", 2)
    unit = _int_opt(spec, opts, "unit", 2)
    if index is not None and (bus is not None or unit is not None):
        raise MachineError("-drive %s: index cannot be used with bus and unit" % spec)
    if index is None and (bus is not None or unit is not None):
        index = (bus or 0) * 2 + (unit or 0)
    if index is None:
        index = next((i for i in range(NR_DRIVES) if i not in used), None)
        if index is None:
            raise MachineError("-drive %s: no free IDE slot (4 drives at most)" % spec)
    if index in used:
        raise MachineError("-drive %s: drive with bus=%d, unit=%d (index=%d) exists"
                           % (spec, index // 2, index % 2, index))
    return index


# ------------------------------------------------------------- scratch disk

# u32 LBA, 504 bytes of text (struct cuts the 512 given to 504), u32 ~LBA.
_SCRATCH_SECTOR = struct.Struct("<I504sI")


def scratch_sector(lba: int) -> bytes:
    """Sector ``lba`` of the self-describing disk: LBA (u32 LE), the text
    ``<LBA 0x%08x> `` repeated, and ``lba ^ 0xffffffff`` (u32 LE) at the end."""
    return _SCRATCH_SECTOR.pack(lba, b"<LBA 0x%08x> " % lba * 32, lba ^ 0xFFFFFFFF)


# The disk is built 4096 sectors (2 MiB) at a time: for LBA 4096 * c + m
# (m < 4096) the text's hex digits are c's five then m's three, the LBA's
# bytes m's low byte, (c << 4 | m >> 8) & 0xff, then c's higher bits.  Chunk 0
# is packed sector by sector; chunk c is a copy of it with c's part written
# down the columns that hold it (a sector-by-sector pack of a 16 MiB disk was
# most of gqemu run's own start-up).
_CHUNK = 4096
_TEXT_DIGITS = [range(7 + k, 504, 17) for k in range(5)]   # c's digits in the text
_PLUS = [bytes((x + a) & 0xFF for x in range(16)) for a in range(0, 256, 16)]


def _scratch_chunk(first: bytes, c: int, n: int) -> bytearray:
    """Sectors 4096 * c ... 4096 * c + n - 1, from ``first`` (chunk 0)."""
    buf = bytearray(first[:n * SECTOR])
    for k, digit in enumerate(b"%05x" % c):
        if digit != 0x30:                                  # chunk 0 has '0' there
            col = bytes((digit,)) * n
            for t in _TEXT_DIGITS[k]:
                buf[4 + t::SECTOR] = col
    a = (c & 15) << 4
    if a:          # byte 1 and its inverse: chunk 0 holds m >> 8 (below 16) there
        buf[1::SECTOR] = bytes(buf[1::SECTOR]).translate(_PLUS[a >> 4] + bytes(240))
        buf[509::SECTOR] = bytes(buf[509::SECTOR]).translate(
            bytes(240) + bytes((x - a) & 0xFF for x in range(240, 256)))
    for i, v in ((2, (c >> 4) & 0xFF), (3, (c >> 12) & 0xFF)):
        if v:
            buf[i::SECTOR] = bytes((v,)) * n
            buf[508 + i::SECTOR] = bytes((v ^ 0xFF,)) * n
    return buf


def make_scratch_disk(path: str, size_mib: int = 16, mbr: Optional[bytes] = None) -> int:
    """Write the self-describing raw disk (as refdata/mkdisk.py does):
    sector ``lba`` is ``scratch_sector(lba)``.

    ``mbr``, if given, becomes sector 0 (512 bytes ending in 55 aa).
    Returns the size in bytes.
    """
    nsect = size_mib * 2048
    if mbr is not None and (len(mbr) != SECTOR or mbr[510:] != b"\x55\xaa"):
        raise MachineError("boot sector must be 512 bytes ending in 55 aa")
    pack = _SCRATCH_SECTOR.pack
    first = b"".join([pack(lba, b"<LBA 0x%08x> " % lba * 32, lba ^ 0xFFFFFFFF)
                      for lba in range(min(nsect, _CHUNK))])
    with open(path, "wb") as f:
        f.write(first if mbr is None or not nsect else mbr + first[SECTOR:])
        for c in range(1, -(-nsect // _CHUNK)):
            f.write(_scratch_chunk(first, c, min(_CHUNK, nsect - c * _CHUNK)))
    return nsect * SECTOR


SCRATCH_TAG = "mkdisk-16M"     # a trace header's "scratch" value for such a disk


def scratch_drives(tmpdir: str, indexes: Sequence[int],
                   virtio: Sequence[int] = ()) -> list[dict]:
    """A fresh scratch disk in ``tmpdir`` for each IDE index (and each
    if=virtio index in ``virtio``), as ``drive_config()`` dicts marked
    ``"scratch": SCRATCH_TAG``."""
    drives: list[dict] = []
    for iface, idxs in (("ide", indexes), ("virtio", virtio)):
        for idx in idxs:
            name = "scratch%d.img" % idx if iface == "ide" else "scratch-virtio%d.img" % idx
            path = os.path.join(tmpdir, name)
            make_scratch_disk(path)
            d = {"index": idx, "file": path, "options": {"format": "raw", "if": iface},
                 "name": _drive_name(idx, iface), "scratch": SCRATCH_TAG}
            if iface == "virtio":
                d["if"] = "virtio"
            drives.append(d)
    return drives


def file_sha256(path: str) -> str:
    import hashlib     # only a recording needs it: kept off gqemu run's start-up
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def open_drive(d: dict, blk_new_open: Any, BlockError: Any) -> Any:
    """Open one drive as QEMU's ``-drive if=ide`` does: the device takes
    "consistent read" and "write" and shares neither "write" nor "resize",
    so the image is locked against other writers.  ``share-rw`` is a
    property of ``-device``, not of ``-drive`` (QEMU's message), and an
    ide-hd cannot be read-only.  Raises MachineError (one line)."""
    from gqemu.block.block_backend import blk_bs, blk_is_read_only, blk_unref
    spec = d.get("spec") or "file=%s" % d["file"]
    opts = dict(d["options"])
    share_rw = opts.pop("share-rw", None)
    try:
        blk = blk_new_open(d["file"], opts)
    except BlockError as e:
        hint = getattr(e, "hint", None)
        if hint:        # a lock conflict: QEMU names no -drive, it fails at realize
            raise MachineError("%s (%s%s)" % (e, hint[:1].lower(), hint[1:]))
        raise MachineError("-drive %s: %s" % (spec, e))
    except OSError as e:
        raise MachineError("-drive %s: %s" % (spec, e.strerror or e))
    bs = blk_bs(blk)
    if share_rw is not None:
        fmt = bs.drv.format_name if bs is not None and bs.drv is not None else "raw"
        blk_unref(blk)
        raise MachineError("-drive %s: Block format '%s' does not support the option "
                           "'share-rw'" % (spec, fmt))
    if blk_is_read_only(blk) and d.get("if", "ide") != "virtio":
        # an ide-hd needs "write"; a virtio-blk takes a read-only drive
        # (it offers VIRTIO_BLK_F_RO and fails writes)
        blk_unref(blk)
        raise MachineError("Block node is read-only")
    blk.name = d.get("name") or _drive_name(d["index"], d.get("if", "ide"))
    return blk
