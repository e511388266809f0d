"""qcow2 snapshot table: reading it (at open, refusing a broken table with
QEMU's message and hint) and checking / repairing it in ``qemu-img check``
(too many entries, a table over 64 MiB, more than 1 KiB of extra data in one
entry, v3 entries without the 16 bytes of extra data v3 requires).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli, gqemu.block.qcow2.

QEMU: block/qcow2-snapshot.c qcow2_do_read_snapshots,
qcow2_check_read_snapshot_table, qcow2_check_fix_snapshot_table.
"""
from __future__ import annotations

import errno
import os
import struct
import sys
from typing import Any

from gqemu.coroutine import coroutine_fn
from gqemu.block.qcow2_header import (
    QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE,
    Qcow2OpenError, qcow2_validate_table)
from gqemu.block.qcow2_overlap import qcow2_co_pread_file, qcow2_co_pwrite_file, \
    qcow2_co_flush_file
from gqemu.block.qcow2_snapshot import _SN, QCowSnapshot, qcow2_write_snapshots
from gqemu.block.qcow2_state import Qcow2BDS

INT_MAX = (1 << 31) - 1
_EXTRA_HINT = "You can force-remove this extra metadata with qemu-img check -r all\n"
_OVERHANG_HINT = "You can force-remove all %d overhanging snapshots with qemu-img check -r all\n"
_WINDOW = 1 << 20          # the table is read through a window of this many bytes


class _TableReader:
    """Reads of the table file served from one cached window, so a table of
    many small entries costs a few large reads, not four per entry."""

    def __init__(self, bs: Qcow2BDS) -> None:
        self.bs = bs
        self.start = 0
        self.buf = bytearray()

    @coroutine_fn
    def view(self, offset: int, n: int) -> tuple[bytearray, int]:
        """(buffer, index) with ``n`` bytes of the file at ``offset`` at
        buffer[index:]."""
        if not (self.start <= offset and offset + n <= self.start + len(self.buf)):
            ret, buf = qcow2_co_pread_file(self.bs, offset, max(n, _WINDOW))
            if ret < 0:
                raise Qcow2OpenError(-ret, "Failed to read snapshot table: %s"
                                     % os.strerror(-ret))
            self.start, self.buf = offset, buf
        return self.buf, offset - self.start

    @coroutine_fn
    def read(self, offset: int, n: int) -> bytes:
        buf, i = self.view(offset, n)
        return bytes(buf[i:i + n])


@coroutine_fn
def qcow2_do_read_snapshots(bs: Qcow2BDS, nb: int, base: int, repair: bool = False
                            ) -> tuple[list[QCowSnapshot], int, int]:
    """Read ``nb`` entries at ``base``.  Without ``repair`` a broken table
    raises Qcow2OpenError (with QEMU's hint); with it, extra data over the
    limit is cut to 1 KiB and entries past a too-big table are dropped.
    Sets s.snapshots_size.  Returns: (snapshots, entries dropped, entries
    whose extra data was cut).  QEMU: qcow2_do_read_snapshots."""
    s = bs.opaque
    rd = _TableReader(bs)
    out: list[QCowSnapshot] = []
    reduced = dropped = 0
    offset = base
    table_length = 0
    for i in range(nb):
        pre_sn_offset = offset
        table_length = (table_length + 7) & ~7
        offset = (offset + 7) & ~7
        buf, k = rd.view(offset, _SN.size)
        (l1_off, l1_size, id_size, name_size, dsec, dnsec, vmclock,
         vmsize, eds) = _SN.unpack_from(buf, k)
        offset += _SN.size
        truncate = False
        if eds > QCOW_MAX_SNAPSHOT_EXTRA_DATA:
            if not repair:
                raise Qcow2OpenError(errno.EFBIG, "Too much extra metadata in snapshot table "
                                  "entry %d" % i, _EXTRA_HINT)
            sys.stderr.write("Discarding too much extra metadata in snapshot table entry "
                             "%d (%d > %d)\n" % (i, eds, QCOW_MAX_SNAPSHOT_EXTRA_DATA))
            dropped += 1
            truncate = True
        sn = QCowSnapshot(l1_off, l1_size, "", "", s.size, vmsize, dsec, dnsec, vmclock)
        if eds:
            known = rd.read(offset, min(24, eds)) + bytes(24)
            offset += min(24, eds)
            if eds >= 8:
                sn.vm_state_size = struct.unpack_from(">Q", known, 0)[0]
            if eds >= 16:
                sn.disk_size = struct.unpack_from(">Q", known, 8)[0]
            if eds >= 24:
                sn.icount = struct.unpack_from(">q", known, 16)[0]
        if eds > 24:
            extra_end = offset + eds - 24
            if truncate:
                eds = QCOW_MAX_SNAPSHOT_EXTRA_DATA
            sn.unknown_extra = rd.read(offset, eds - 24)
            offset = extra_end
        sn.extra_data_size = eds
        if id_size + name_size:
            b = rd.read(offset, id_size + name_size)
            sn.id_raw = b[:id_size].split(b"\0", 1)[0]
            sn.name_raw = b[id_size:].split(b"\0", 1)[0]
            sn.id_str = sn.id_raw.decode("utf-8", "replace")
            sn.name = sn.name_raw.decode("utf-8", "replace")
        offset += id_size + name_size
        table_length += _SN.size + eds + id_size + name_size
        if table_length > QCOW_MAX_SNAPSHOTS_SIZE or offset - base > INT_MAX:
            if not repair:
                raise Qcow2OpenError(errno.EFBIG, "Snapshot table is too big",
                                  _OVERHANG_HINT % (nb - i))
            sys.stderr.write("Discarding %d overhanging snapshots (snapshot table is too "
                             "big)\n" % (nb - i))
            reduced += nb - i
            offset = pre_sn_offset
            break
        out.append(sn)
    s.snapshots_size = offset - base if nb else 0
    return out, reduced, dropped


@coroutine_fn
def qcow2_read_snapshots(bs: Qcow2BDS, nb: int, base: int) -> list[QCowSnapshot]:
    """The table at open.  Raises Qcow2OpenError.  QEMU: qcow2_read_snapshots."""
    return qcow2_do_read_snapshots(bs, nb, base)[0]


@coroutine_fn
def qcow2_check_read_snapshot_table(bs: Qcow2BDS, res: Any, fix: int) -> int:
    """Read the table for ``qemu-img check`` (an open in check mode skips
    it), dropping what cannot be kept when ``fix`` repairs errors; the
    header's snapshot count is updated at once.  Returns: 0 or -errno.
    QEMU: qcow2_check_read_snapshot_table."""
    s = bs.opaque
    fix_errors = bool(fix & 2)
    ret, buf = qcow2_co_pread_file(bs, 60, 12)
    if ret < 0:
        res.check_errors += 1
        sys.stderr.write("ERROR failed to read the snapshot table pointer from the image "
                         "header: %s\n" % os.strerror(-ret))
        return ret
    nb, s.snapshots_offset = struct.unpack(">IQ", buf)
    reduced = 0
    if nb > QCOW_MAX_SNAPSHOTS and fix_errors:
        sys.stderr.write("Discarding %d overhanging snapshots\n" % (nb - QCOW_MAX_SNAPSHOTS))
        reduced += nb - QCOW_MAX_SNAPSHOTS
        nb = QCOW_MAX_SNAPSHOTS
    s.nb_snapshots = nb
    prog = os.path.basename(sys.argv[0]) or "gqemu"
    try:
        qcow2_validate_table(s.snapshots_offset, nb, _SN.size, _SN.size * QCOW_MAX_SNAPSHOTS,
                             s.cluster_size, "snapshot table")
        snapshots, cut, dropped = qcow2_do_read_snapshots(bs, nb, s.snapshots_offset,
                                                          fix_errors)
    except Qcow2OpenError as e:
        res.check_errors += 1
        head = "ERROR " if e.msg.startswith("snapshot table") else \
            "ERROR failed to read the snapshot table: "
        sys.stderr.write("%s: %s%s\n" % (prog, head, e.msg))
        if head == "ERROR ":
            if nb > QCOW_MAX_SNAPSHOTS:
                sys.stderr.write(_OVERHANG_HINT % (nb - QCOW_MAX_SNAPSHOTS))
        else:
            sys.stderr.write(e.hint)
        s.snapshots_offset = s.nb_snapshots = 0
        s.snapshots = []
        return -e.errno
    reduced += cut
    s.snapshots = snapshots
    s.nb_snapshots = len(snapshots)
    res.corruptions += reduced + dropped
    if reduced:
        ret = qcow2_co_pwrite_file(bs, 60, struct.pack(">I", s.nb_snapshots))
        if ret >= 0:
            ret = qcow2_co_flush_file(bs)
        if ret < 0:
            res.check_errors += 1
            sys.stderr.write("ERROR failed to update the snapshot count in the image "
                             "header: %s\n" % os.strerror(-ret))
            return ret
        res.corruptions_fixed += reduced
        res.corruptions -= reduced
    if s.qcow_version >= 3:
        for i, sn in enumerate(snapshots):
            if sn.extra_data_size < 16:
                res.corruptions += 1
                sys.stderr.write("%s snapshot table entry %d is incomplete\n"
                                 % ("Repairing" if fix_errors else "ERROR", i))
    return 0


@coroutine_fn
def qcow2_check_fix_snapshot_table(bs: Qcow2BDS, res: Any, fix: int) -> int:
    """Rewrite the table when its check found something to repair (after
    the refcounts are sound, since this allocates clusters).
    QEMU: qcow2_check_fix_snapshot_table."""
    s = bs.opaque
    if res.corruptions and fix & 2:
        ret = qcow2_write_snapshots(bs, s.snapshots)
        if ret < 0:
            res.check_errors += 1
            sys.stderr.write("ERROR failed to update snapshot table: %s\n" % os.strerror(-ret))
            return ret
        res.corruptions_fixed += res.corruptions
        res.corruptions = 0
    return 0
