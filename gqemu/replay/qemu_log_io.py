"""Import a QEMU log of every port access (``memory_region_ops_*``) plus
guest RAM snapshots: PCI configuration space and legacy virtio-blk.

QEMU 7.2's ``memory_region_ops_read/write`` events are written by the
memory core for every access it dispatches to a device's ops, with the
absolute address, the value, the size and the region's name::

    memory_region_ops_write cpu 0 mr 0x55.. addr 0xcf8 value 0x80001000 size 4 name 'pci-conf-idx'

so, unlike the device events ``qemu_log.py`` reads, they give the 0xCF8
latch, the access width and the legacy virtio registers.  Each line of a
region gqemu's machine models (``IO_REGIONS``: the PCI host bridge's
ports, virtio-pci's BAR0, IDE and BMDMA, unassigned I/O) becomes one
REC_IO at the traced port, the value cut to the access size (for a read
QEMU traces what the device's ops returned, e.g. 0xffffffff for a byte).
Lines of other regions (debugcon, RTC, fw_cfg, ...) are counted and
skipped.  Once such a line is seen, the ``ide_*``/``bmdma_*`` access events
of the same accesses are checked for form and skipped; ``virtio_*``,
``virtqueue_*`` and ``virtio_blk_*`` events are checked for form (``name
value`` pairs) and skipped.

Guest RAM is in no QEMU log.  ``RamSnapshots`` (a text file, see
``docs/trace-format.md``; tests/data/virtio/record.py writes one from
QEMU's gdbstub) tag bytes of guest RAM with the size of the log when they
were read: ``store`` bytes (what the device will read: rings, headers,
write buffers) become REC_MEMW, ``check`` bytes (what it wrote: used ring,
read buffers, status bytes) REC_MEMR, placed before the first access of the
log line that starts at that offset.  A ``start`` entry marks where the
guest program began: accesses before it (the firmware's) are dropped, since
the replay machine starts as SeaBIOS leaves it.  A queue notify with no
snapshots at all is refused: the device would read rings the trace lacks.
Must not import kvm, hw or block.
"""
from __future__ import annotations

import re
from typing import IO, Iterable, Iterator, Optional, Sequence, Union

from gqemu.replay.format import (KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, MAX_CPUS, MAX_MEM,
                                 REC_IO, REC_MEMR, REC_MEMW)
from gqemu.replay.qemu_log import _ACCESS, RAM_SIZE, LogError, QemuLogImporter, _clip

OPS_EVENTS = ("memory_region_ops_read", "memory_region_ops_write")
# QEMU 7.2's names of the port-I/O regions gqemu's pc machine has
IO_REGIONS = frozenset({
    "pci-conf-idx", "pci-conf-data",        # i440FX host bridge, 0xcf8 / 0xcfc
    "virtio-pci",                           # legacy virtio BAR0
    "ide", "piix-bmdma", "bmdma",           # IDE ports, BMDMA command/status, PRD address
    "io",                                   # nothing there: reads all ones
})
VIRTIO_NOTIFY = 0x10                        # VIRTIO_PCI_QUEUE_NOTIFY in BAR0
VIRTIO_BAR_SIZE = 0x80
_OPS = re.compile(r"cpu (-?\d+) mr (?:0x[0-9a-f]+|\(nil\)) addr 0x([0-9a-f]+) "
                  r"value 0x([0-9a-f]+) size (\d+) name '([^']*)'\Z")
_VIRTIO_PREFIXES = ("virtio_", "virtqueue_")
_VIRTIO_ARGS = re.compile(r"[a-z_]+ (?:0x[0-9a-f]+|\(nil\)|-?\d+)"
                          r"(?: [a-z_]+ (?:0x[0-9a-f]+|\(nil\)|-?\d+))*\Z")

MAX_SNAPSHOT_LINE = 2 * (16 << 20) + 256
SNAPSHOT_KINDS = ("start", "store", "check")


class Snapshot:
    __slots__ = ("offset", "kind", "addr", "data", "lineno")

    def __init__(self, offset: int, kind: str, addr: int, data: bytes, lineno: int) -> None:
        self.offset, self.kind, self.addr, self.data, self.lineno = \
            offset, kind, addr, data, lineno


def read_ram_snapshots(f: IO[bytes], ram_size: int = RAM_SIZE) -> list[Snapshot]:
    """Parse a snapshot file: ``OFFSET start`` or ``OFFSET store|check
    ADDR HEX`` per line, ``#`` comments; offsets never decrease.  Raises
    ValueError("line N: ...")."""
    out: list[Snapshot] = []
    last = 0
    lineno = 0
    while True:
        raw = f.readline(MAX_SNAPSHOT_LINE)
        if not raw:
            return out
        lineno += 1
        if len(raw) == MAX_SNAPSHOT_LINE and not raw.endswith(b"\n"):
            raise ValueError("line %d: longer than %d bytes" % (lineno, MAX_SNAPSHOT_LINE))
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError("line %d: not ASCII text" % lineno) from None
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit() or parts[1] not in SNAPSHOT_KINDS \
                or len(parts) != (2 if parts[1] == "start" else 4):
            raise ValueError("line %d: expected 'OFFSET start' or 'OFFSET store|check ADDR "
                             "HEX': %s" % (lineno, _clip(line)))
        offset = int(parts[0])
        if offset < last:
            raise ValueError("line %d: log offset %d before the previous one (%d)"
                             % (lineno, offset, last))
        last = offset
        if parts[1] == "start":
            if any(s.kind == "start" for s in out):
                raise ValueError("line %d: a second start" % lineno)
            out.append(Snapshot(offset, "start", 0, b"", lineno))
            continue
        try:
            addr = int(parts[2], 16) if parts[2].startswith("0x") else int(parts[2])
            data = bytes.fromhex(parts[3])
        except ValueError:
            raise ValueError("line %d: bad address or hex data" % lineno) from None
        if not data or addr + len(data) > ram_size:
            raise ValueError("line %d: %d bytes at 0x%x: outside the %d bytes of RAM"
                             % (lineno, len(data), addr, ram_size))
        out.append(Snapshot(offset, parts[1], addr, data, lineno))


class QemuIoLogImporter(QemuLogImporter):
    """QemuLogImporter that also takes ``memory_region_ops_*`` lines and
    guest RAM snapshots.  After iteration, besides the base's counters:
    ``ops_accesses``, ``skipped_regions`` (region name -> lines),
    ``before_start`` (records dropped before the program's start)."""

    def __init__(self, ram_snapshots: Sequence[Snapshot] = (), **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.snapshots = list(ram_snapshots)
        if any(s.kind == "store" for s in self.snapshots):
            # the guest's own PRD tables are in the snapshots (stored before
            # the bus master starts): a synthesized one would overwrite them
            self.synthesize_prd = False
        starts = [s.offset for s in self.snapshots if s.kind == "start"]
        self.start: Optional[int] = starts[0] if starts else None
        self.ops_accesses = 0
        self.skipped_regions: dict[str, int] = {}
        self.before_start = 0
        self.ide_records = 0
        self._next = 0              # next snapshot to emit
        self._virtio: Optional[tuple[int, str]] = None     # the first virtio event
        self._chk = 0               # next snapshot to check against line bounds
        self._line_start = 0        # byte offset of the line being converted
        self._offset = 0

    # -- the line stream and where the snapshots go -----------------------------

    def records(self, lines: Iterable[Union[str, bytes]]) -> Iterator[list]:
        for rec in super().records(self._counted(lines)):
            yield from self._due(self._line_start)
            if rec[0] == REC_IO and self.start is not None and self._line_start < self.start:
                self.before_start += 1
                continue
            if rec[0] == REC_IO and self._access:
                self.ide_records += 1
            yield rec
        if self._access and self._virtio is not None:
            raise LogError(self._virtio[0], "%s: virtio events alone cannot be replayed (the "
                                            "legacy virtio registers and the rings are in no "
                                            "event); record with -trace 'memory_region_ops_*' "
                                            "and RAM snapshots" % self._virtio[1])
        if self.snapshots[self._next:] and self.snapshots[-1].offset > self._offset:
            s = self.snapshots[-1]
            raise LogError(self.lines, "RAM snapshot (its line %d) at log offset %d, past "
                                       "the log's end (%d bytes)" % (s.lineno, s.offset,
                                                                     self._offset))
        yield from self._due(self._offset)

    def _counted(self, lines: Iterable[Union[str, bytes]]) -> Iterator[Union[str, bytes]]:
        for raw in lines:
            self._line_start = self._offset
            self._offset += len(raw) if isinstance(raw, bytes) else len(raw.encode())
            snaps = self.snapshots
            while self._chk < len(snaps) and snaps[self._chk].offset <= self._line_start:
                self._chk += 1
            if self._chk < len(snaps) and snaps[self._chk].offset < self._offset:
                s = snaps[self._chk]
                raise LogError(self.lines + 1, "RAM snapshot (its line %d) at log offset %d, "
                                               "inside this line" % (s.lineno, s.offset))
            yield raw

    def _due(self, offset: int) -> Iterator[list]:
        """The snapshots taken at or before ``offset``: checks of what the
        device wrote, then stores of what it will read."""
        snaps = self.snapshots
        while self._next < len(snaps) and snaps[self._next].offset <= offset:
            s = snaps[self._next]
            self._next += 1
            if s.kind == "start":
                continue
            kind = REC_MEMR if s.kind == "check" else REC_MEMW
            for off in range(0, len(s.data), MAX_MEM):
                yield [kind, 0, s.addr + off, s.data[off:off + MAX_MEM]]

    # -- events --------------------------------------------------------------

    def _event(self, lineno: int, name: str, args: str, line: str) -> Iterator[list]:
        if name in OPS_EVENTS:
            return self._ops(lineno, name, args, line)
        if name in _ACCESS:             # an IDE/BMDMA event of an access already taken
            if _ACCESS[name].match(args) is None:
                raise LogError(lineno, "garbled %s line: %s" % (name, _clip(line)))
            return iter(())
        if name.startswith(_VIRTIO_PREFIXES):
            if self._virtio is None:
                self._virtio = (lineno, name)
            if _VIRTIO_ARGS.match(args) is None:
                raise LogError(lineno, "garbled %s line: %s" % (name, _clip(line)))
            return iter(())
        return super()._event(lineno, name, args, line)

    def _ops(self, lineno: int, name: str, args: str, line: str) -> Iterator[list]:
        m = _OPS.match(args)
        if m is None:
            raise LogError(lineno, "garbled %s line: %s" % (name, _clip(line)))
        if self._access:
            if self.ide_records:
                raise LogError(lineno, "memory_region_ops lines after IDE/BMDMA access events: "
                                       "the log must have one kind of access lines")
            self._access = {}
        cpu, port, val, size, region = (int(m.group(1)), int(m.group(2), 16),
                                        int(m.group(3), 16), int(m.group(4)), m.group(5))
        if region not in IO_REGIONS:
            self.skipped_regions[region] = self.skipped_regions.get(region, 0) + 1
            return iter(())
        if size not in (1, 2, 4):
            raise LogError(lineno, "port access of %d bytes" % size)
        if port + size > 0x10000:
            raise LogError(lineno, "port 0x%x out of range" % port)
        if not 0 <= cpu < MAX_CPUS:
            cpu = 0                     # -1: no current CPU
        write = name == "memory_region_ops_write"
        if write and region == "virtio-pci" and port % VIRTIO_BAR_SIZE == VIRTIO_NOTIFY \
                and not self.snapshots:
            raise LogError(lineno, "virtio queue notify, but no guest RAM snapshots: the "
                                   "device would read rings that are not in the log")
        self.ops_accesses += 1
        d = KVM_EXIT_IO_OUT if write else KVM_EXIT_IO_IN
        return iter(([REC_IO, cpu, d, size, port, val & ((1 << 8 * size) - 1)],))
