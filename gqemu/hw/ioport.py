"""Port I/O lists: the ISA-style ``{offset, len, size, read, write}`` tables.

A device describes its ports as a list of ``MemoryRegionPortio`` entries;
``portio_list_add`` groups them into ``MemoryRegion``s of the I/O space (one
per run without holes, extent ``offset + len + size - 1``) whose ops are
``portio_read``/``portio_write``.  Callbacks get the **absolute** port::

    read(opaque, port) -> int          write(opaque, port, val) -> None

Dispatch (QEMU 7.2 ``softmmu/ioport.c``): the entry whose range holds the
port **and whose size equals the access size** is called; otherwise a 16-bit
access becomes two byte accesses (the high byte reads 0xff if port+1 is not
covered), and any other access reads all ones / is dropped.  The lookup is a
precomputed table per region, so the per-access path does no search and no
allocation.  An entry may carry ``read_rep/write_rep`` bulk handlers for
string I/O (see ``memory.address_space_rw_string``).

Must not import: gqemu.kvm or anything above hw.
QEMU: softmmu/ioport.c (portio_list_*, portio_read/write, find_portio).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from gqemu.hw.memory_region import (MemoryRegion, MemoryRegionOps,
                             memory_region_add_subregion,
                             memory_region_del_subregion)

__all__ = ["MemoryRegionPortio", "PortioList", "MemoryRegionPortioList",
           "portio_list_init", "portio_list_add", "portio_list_del",
           "portio_read", "portio_write", "find_portio"]


class MemoryRegionPortio:
    """One entry: ``len`` ports from ``offset`` answering accesses of ``size``.

    ``read_rep(opaque, port, buf, pos, count) -> done`` and ``write_rep`` are
    optional bulk handlers (gqemu) used for string I/O on this entry.
    """

    __slots__ = ("offset", "len", "size", "read", "write", "base",
                 "read_rep", "write_rep")

    def __init__(self, offset: int, len: int, size: int,
                 read: Optional[Callable[[Any, int], int]] = None,
                 write: Optional[Callable[[Any, int, int], None]] = None,
                 read_rep: Optional[Callable[..., int]] = None,
                 write_rep: Optional[Callable[..., int]] = None) -> None:
        self.offset = offset
        self.len = len
        self.size = size
        self.read = read
        self.write = write
        self.base = 0
        self.read_rep = read_rep
        self.write_rep = write_rep

    def copy(self) -> "MemoryRegionPortio":
        return MemoryRegionPortio(self.offset, self.len, self.size, self.read,
                                  self.write, self.read_rep, self.write_rep)


class MemoryRegionPortioList:
    """One region of a portio list with its dispatch tables."""

    __slots__ = ("mr", "portio_opaque", "ports", "rtab", "wtab")

    def __init__(self, ports: list[MemoryRegionPortio], opaque: Any,
                 size: int) -> None:
        self.ports = ports
        self.portio_opaque = opaque
        # rtab[size][addr] / wtab[size][addr] -> entry or None (size 1, 2, 4)
        self.rtab: list[list[Optional[MemoryRegionPortio]]] = [[None] * size for _ in range(5)]
        self.wtab: list[list[Optional[MemoryRegionPortio]]] = [[None] * size for _ in range(5)]
        for width in (1, 2, 4):
            for addr in range(size):
                self.rtab[width][addr] = find_portio(self, addr, width, False)
                self.wtab[width][addr] = find_portio(self, addr, width, True)
        self.mr: Optional[MemoryRegion] = None


class PortioList:
    """QEMU's PortioList: the entries, the opaque and the mapped regions."""

    __slots__ = ("ports", "opaque", "owner", "name", "regions", "address_space")

    def __init__(self, owner: Any, ports: Sequence[MemoryRegionPortio],
                 opaque: Any, name: str) -> None:
        self.owner = owner
        self.ports = [p.copy() for p in ports]
        self.opaque = opaque
        self.name = name
        self.regions: list[MemoryRegionPortioList] = []
        self.address_space: Optional[MemoryRegion] = None


def portio_list_init(owner: Any, callbacks: Sequence[MemoryRegionPortio],
                     opaque: Any, name: str) -> PortioList:
    """QEMU: portio_list_init."""
    return PortioList(owner, callbacks, opaque, name)


def find_portio(mrpio: MemoryRegionPortioList, offset: int, width: int,
                write: bool) -> Optional[MemoryRegionPortio]:
    """The entry serving an access (exact size match).  QEMU: find_portio."""
    for mrp in mrpio.ports:
        if (mrp.offset <= offset < mrp.offset + mrp.len and width == mrp.size
                and (mrp.write if write else mrp.read) is not None):
            return mrp
    return None


def portio_read(opaque: MemoryRegionPortioList, addr: int, size: int) -> int:
    """Region read callback.  QEMU: portio_read."""
    mrp = opaque.rtab[size][addr] if size in (1, 2, 4) else None
    if mrp is not None:
        return mrp.read(opaque.portio_opaque, mrp.base + addr)  # type: ignore[misc]
    if size == 2:
        mrp = opaque.rtab[1][addr]
        if mrp is not None:
            data = mrp.read(opaque.portio_opaque, mrp.base + addr) & 0xff  # type: ignore[misc]
            if addr + 1 < mrp.offset + mrp.len:
                data |= (mrp.read(opaque.portio_opaque, mrp.base + addr + 1) & 0xff) << 8  # type: ignore[misc]
            else:
                data |= 0xff00
            return data
    return (1 << (size * 8)) - 1


def portio_write(opaque: MemoryRegionPortioList, addr: int, data: int,
                 size: int) -> None:
    """Region write callback.  QEMU: portio_write."""
    mrp = opaque.wtab[size][addr] if size in (1, 2, 4) else None
    if mrp is not None:
        mrp.write(opaque.portio_opaque, mrp.base + addr, data)  # type: ignore[misc]
        return
    if size == 2:
        mrp = opaque.wtab[1][addr]
        if mrp is not None:
            mrp.write(opaque.portio_opaque, mrp.base + addr, data & 0xff)  # type: ignore[misc]
            if addr + 1 < mrp.offset + mrp.len:
                mrp.write(opaque.portio_opaque, mrp.base + addr + 1, data >> 8)  # type: ignore[misc]


def _portio_read_rep(opaque: MemoryRegionPortioList, addr: int, size: int,
                     buf: Any, pos: int, count: int) -> int:
    mrp = opaque.rtab[size][addr] if size in (1, 2, 4) else None
    if mrp is None or mrp.read_rep is None:
        return 0
    return mrp.read_rep(opaque.portio_opaque, mrp.base + addr, buf, pos, count)  # type: ignore[no-any-return]


def _portio_write_rep(opaque: MemoryRegionPortioList, addr: int, size: int,
                      buf: Any, pos: int, count: int) -> int:
    mrp = opaque.wtab[size][addr] if size in (1, 2, 4) else None
    if mrp is None or mrp.write_rep is None:
        return 0
    return mrp.write_rep(opaque.portio_opaque, mrp.base + addr, buf, pos, count)  # type: ignore[no-any-return]


def _portio_ops(with_rep: bool, name: str) -> MemoryRegionOps:
    return MemoryRegionOps(portio_read, portio_write, valid_unaligned=True,
                           impl_unaligned=True,
                           read_rep=_portio_read_rep if with_rep else None,
                           write_rep=_portio_write_rep if with_rep else None,
                           name=name)


def _portio_list_add_1(piolist: PortioList, pio_init: list[MemoryRegionPortio],
                       start: int, off_low: int, off_high: int) -> None:
    ports = [p.copy() for p in pio_init]
    for p in ports:
        p.offset -= off_low
        p.base = start + off_low
    mrpio = MemoryRegionPortioList(ports, piolist.opaque, off_high - off_low)
    with_rep = any(p.read_rep is not None or p.write_rep is not None for p in ports)
    mr = MemoryRegion(piolist.owner, piolist.name, off_high - off_low,
                      ops=_portio_ops(with_rep, piolist.name), opaque=mrpio)
    mrpio.mr = mr
    memory_region_add_subregion(piolist.address_space, start + off_low, mr)  # type: ignore[arg-type]
    piolist.regions.append(mrpio)


def portio_list_add(piolist: PortioList, address_space: MemoryRegion,
                    start: int) -> None:
    """Map the list at port ``start`` of ``address_space`` (the I/O root).

    Raises ValueError if a region would overlap one already mapped.
    QEMU: portio_list_add.
    """
    pios = piolist.ports
    if not pios:
        return
    piolist.address_space = address_space
    group = [pios[0]]
    off_last = off_low = pios[0].offset
    off_high = off_low + pios[0].len + pios[0].size - 1
    for pio in pios[1:]:
        if pio.offset < off_last:
            raise ValueError("portio list '%s' is not sorted by offset" % piolist.name)
        off_last = pio.offset
        if off_last > off_high:
            _portio_list_add_1(piolist, group, start, off_low, off_high)
            group = [pio]
            off_low = off_last
            off_high = off_low + pio.len + pio.size - 1
        else:
            group.append(pio)
            if off_last + pio.len > off_high:
                off_high = off_last + pio.len + pio.size - 1
    _portio_list_add_1(piolist, group, start, off_low, off_high)


def portio_list_del(piolist: PortioList) -> None:
    """Unmap every region of the list.  QEMU: portio_list_del."""
    for mrpio in piolist.regions:
        memory_region_del_subregion(piolist.address_space, mrpio.mr)  # type: ignore[arg-type]
    piolist.regions = []
