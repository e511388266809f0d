"""Memory regions, flat views and region dispatch.

A ``MemoryRegion`` is an I/O region (``MemoryRegionOps`` callbacks), RAM (a
``bytearray``) or a container of subregions; an ``AddressSpace`` renders its
root into disjoint ``FlatRange``s (a list index per address for the 64 KiB
I/O space, a bisection otherwise).  ``memory_region_dispatch_read/write``
check the region's ``valid`` constraints (a refused access reads 0 and is
dropped) and split the access with ``access_with_adjusted_size`` into the
sizes the device implements.  Holes of the I/O space read all ones, holes of
the memory space read 0.  Overlapping subregions raise ``ValueError``.

The access entry points (``address_space_rw`` ...) are in ``gqemu.hw.memory``,
which re-exports everything here.

Must not import: gqemu.kvm, gqemu.machine, or anything above hw.
QEMU: softmmu/memory.c.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Any, Callable, Optional

__all__ = [
    "MEMTX_OK", "MEMTX_ERROR", "MEMTX_DECODE_ERROR", "MEMTXATTRS_UNSPECIFIED",
    "MemoryRegionOps", "MemoryRegion", "AddressSpace", "FlatRange",
    "memory_region_init", "memory_region_init_io", "memory_region_init_ram",
    "memory_region_add_subregion", "memory_region_del_subregion",
    "address_space_init", "memory_region_dispatch_read",
    "memory_region_dispatch_write", "access_with_adjusted_size",
    "memory_region_read_accessor", "memory_region_write_accessor",
    "memory_access_size", "unassigned_io_ops", "new_address_space_io",
    "new_address_space_memory",
]

MEMTX_OK = 0
MEMTX_ERROR = 1
MEMTX_DECODE_ERROR = 2
MEMTXATTRS_UNSPECIFIED = None

ReadFn = Callable[[Any, int, int], int]
WriteFn = Callable[[Any, int, int, int], None]


class MemoryRegionOps:
    """Callbacks and access constraints of an I/O region (QEMU's struct).

    ``read(opaque, addr, size) -> int``, ``write(opaque, addr, data, size)``;
    ``addr`` is relative to the region.  ``valid_*`` decide whether an access
    is accepted at all, ``impl_*`` how ``access_with_adjusted_size`` splits
    it.  ``read_rep(opaque, addr, size, buf, pos, count) -> done`` and
    ``write_rep`` are gqemu's optional bulk handlers for string I/O: they
    handle the first ``done`` (possibly 0) of ``count`` accesses exactly as
    ``done`` single accesses would.
    """

    __slots__ = ("read", "write", "valid_min_access_size",
                 "valid_max_access_size", "valid_unaligned", "valid_accepts",
                 "impl_min_access_size", "impl_max_access_size",
                 "impl_unaligned", "read_rep", "write_rep", "name")

    def __init__(self, read: Optional[ReadFn] = None,
                 write: Optional[WriteFn] = None, *,
                 valid_min_access_size: int = 1,
                 valid_max_access_size: int = 4,
                 valid_unaligned: bool = False,
                 valid_accepts: Optional[Callable[..., bool]] = None,
                 impl_min_access_size: int = 1,
                 impl_max_access_size: int = 4,
                 impl_unaligned: bool = False,
                 read_rep: Optional[Callable[..., int]] = None,
                 write_rep: Optional[Callable[..., int]] = None,
                 name: str = "") -> None:
        self.read = read
        self.write = write
        self.valid_min_access_size = valid_min_access_size
        self.valid_max_access_size = valid_max_access_size
        self.valid_unaligned = valid_unaligned
        self.valid_accepts = valid_accepts
        self.impl_min_access_size = impl_min_access_size or 1
        self.impl_max_access_size = impl_max_access_size or 4
        self.impl_unaligned = impl_unaligned
        self.read_rep = read_rep
        self.write_rep = write_rep
        self.name = name


def _unassigned_io_read(opaque: Any, addr: int, size: int) -> int:
    return (1 << (size * 8)) - 1


def _unassigned_io_write(opaque: Any, addr: int, data: int, size: int) -> None:
    return None


def _unassigned_mem_read(opaque: Any, addr: int, size: int) -> int:
    return 0


#: QEMU's ``unassigned_io_ops``: the I/O space root; holes read all ones.
unassigned_io_ops = MemoryRegionOps(_unassigned_io_read, _unassigned_io_write,
                                    name="unassigned-io")
_unassigned_mem_ops = MemoryRegionOps(_unassigned_mem_read, _unassigned_io_write,
                                      valid_unaligned=True, impl_unaligned=True,
                                      valid_max_access_size=8,
                                      impl_max_access_size=8, name="unassigned")


class MemoryRegion:
    """An I/O region, a RAM region or a container (QEMU's struct)."""

    __slots__ = ("name", "owner", "ops", "opaque", "size", "ram",
                 "subregions", "container", "addr", "address_spaces")

    def __init__(self, owner: Any, name: str, size: int,
                 ops: Optional[MemoryRegionOps] = None, opaque: Any = None,
                 ram: Any = None) -> None:
        if size <= 0:
            raise ValueError("memory region '%s': size must be > 0" % name)
        self.name = name
        self.owner = owner
        self.ops = ops
        self.opaque = opaque
        self.size = size
        self.ram = ram
        self.subregions: list[MemoryRegion] = []
        self.container: Optional[MemoryRegion] = None
        self.addr = 0
        self.address_spaces: list[AddressSpace] = []

    def __repr__(self) -> str:
        return "<MemoryRegion %s size 0x%x>" % (self.name, self.size)


def memory_region_init(owner: Any, name: str, size: int) -> MemoryRegion:
    """A pure container.  QEMU: memory_region_init."""
    return MemoryRegion(owner, name, size)


def memory_region_init_io(owner: Any, ops: MemoryRegionOps, opaque: Any,
                          name: str, size: int) -> MemoryRegion:
    """An I/O region dispatching to ``ops``.  QEMU: memory_region_init_io."""
    return MemoryRegion(owner, name, size, ops=ops, opaque=opaque)


def memory_region_init_ram(owner: Any, name: str, size: int) -> MemoryRegion:
    """Zero-filled RAM of ``size`` bytes (``mr.ram``): an anonymous mmap, so
    untouched pages cost nothing (a bytearray is zeroed up front: 16 MiB is
    most of ``gqemu run``'s own start-up).  QEMU: memory_region_init_ram."""
    import mmap
    return MemoryRegion(owner, name, size, ram=mmap.mmap(-1, size) if size else bytearray())


def memory_region_init_ram_ptr(owner: Any, name: str, size: int, ptr: Any) -> MemoryRegion:
    """RAM backed by caller-provided memory (an ``mmap`` that /dev/kvm also
    maps into the guest).  QEMU: memory_region_init_ram_ptr."""
    if len(ptr) < size:
        raise ValueError("memory region '%s': backing memory too small" % name)
    return MemoryRegion(owner, name, size, ram=ptr)


def _root_of(mr: MemoryRegion) -> MemoryRegion:
    while mr.container is not None:
        mr = mr.container
    return mr


def memory_region_add_subregion(mr: MemoryRegion, offset: int,
                                subregion: MemoryRegion) -> None:
    """Map ``subregion`` at ``offset`` inside ``mr``.

    Raises ValueError if it does not fit or overlaps a sibling: gqemu refuses
    overlapping registrations instead of resolving them by priority.
    QEMU: memory_region_add_subregion.
    """
    if subregion.container is not None:
        raise ValueError("memory region '%s' is already mapped" % subregion.name)
    end = offset + subregion.size
    if offset < 0 or end > mr.size:
        raise ValueError("memory region '%s' [0x%x, 0x%x) does not fit in '%s' (size 0x%x)"
                         % (subregion.name, offset, end, mr.name, mr.size))
    for other in mr.subregions:
        if offset < other.addr + other.size and other.addr < end:
            raise ValueError("memory region '%s' [0x%x, 0x%x) overlaps '%s' [0x%x, 0x%x)"
                             % (subregion.name, offset, end, other.name,
                                other.addr, other.addr + other.size))
    subregion.container = mr
    subregion.addr = offset
    mr.subregions.append(subregion)
    mr.subregions.sort(key=lambda r: r.addr)
    _invalidate(mr)


def memory_region_del_subregion(mr: MemoryRegion, subregion: MemoryRegion) -> None:
    """Unmap ``subregion``.  QEMU: memory_region_del_subregion."""
    if subregion.container is not mr:
        raise ValueError("memory region '%s' is not in '%s'" % (subregion.name, mr.name))
    mr.subregions.remove(subregion)
    subregion.container = None
    _invalidate(mr)


def _invalidate(mr: MemoryRegion) -> None:
    for as_ in _root_of(mr).address_spaces:
        as_.render()


class FlatRange:
    """``[start, end)`` of an address space served by ``mr`` at ``offset_in_region``."""

    __slots__ = ("start", "end", "mr", "offset_in_region")

    def __init__(self, start: int, end: int, mr: MemoryRegion, off: int) -> None:
        self.start = start
        self.end = end
        self.mr = mr
        self.offset_in_region = off

    def __repr__(self) -> str:
        return "<FlatRange [0x%x, 0x%x) %s+0x%x>" % (
            self.start, self.end, self.mr.name, self.offset_in_region)


_io_mem_unassigned = MemoryRegion(None, "unassigned", 1 << 64,
                                  ops=_unassigned_mem_ops)


class AddressSpace:
    """A root region rendered into disjoint ``FlatRange``s.

    Lookup is a list index for spaces of at most 64 KiB (the I/O space) and a
    bisection otherwise; the view is rebuilt whenever the region tree changes.
    QEMU: AddressSpace + FlatView.
    """

    __slots__ = ("name", "root", "ranges", "starts", "table", "size")

    def __init__(self, root: MemoryRegion, name: str) -> None:
        self.name = name
        self.root = root
        self.size = root.size
        self.ranges: list[FlatRange] = []
        self.starts: list[int] = []
        self.table: Optional[list[FlatRange]] = None
        root.address_spaces.append(self)
        self.render()

    def render(self) -> None:
        ranges: list[FlatRange] = []
        _render(self.root, 0, ranges)
        # holes of a pure container are unassigned (read 0, writes dropped)
        filled: list[FlatRange] = []
        pos = 0
        for fr in ranges:
            if fr.start > pos:
                filled.append(FlatRange(pos, fr.start, _io_mem_unassigned, pos))
            filled.append(fr)
            pos = fr.end
        if pos < self.size:
            filled.append(FlatRange(pos, self.size, _io_mem_unassigned, pos))
        self.ranges = filled
        self.starts = [fr.start for fr in filled]
        # The per-port table is built by the first lookup after a change, not
        # here: building the machine renders the I/O space a dozen times.
        self.table = _STALE if self.size <= 0x10000 else None

    def lookup(self, addr: int) -> FlatRange:
        """The range containing ``addr`` (an out-of-space address gets an
        unassigned range of its own)."""
        table = self.table
        if table is not None:
            if 0 <= addr < len(table):
                return table[addr]
            if table is _STALE:
                table = []
                for fr in self.ranges:
                    table.extend([fr] * (fr.end - fr.start))
                self.table = table
                return self.lookup(addr)
        elif 0 <= addr < self.size:
            return self.ranges[bisect_right(self.starts, addr) - 1]
        unassigned = self.root if self.root.ops is unassigned_io_ops else _io_mem_unassigned
        return FlatRange(addr, addr + 8, unassigned, addr)


_STALE: list[FlatRange] = []     # AddressSpace.table until the next lookup builds it


def _render(mr: MemoryRegion, base: int, out: list[FlatRange]) -> None:
    pos = 0
    for sub in mr.subregions:
        if sub.addr > pos and (mr.ops is not None or mr.ram is not None):
            out.append(FlatRange(base + pos, base + sub.addr, mr, pos))
        _render(sub, base + sub.addr, out)
        pos = sub.addr + sub.size
    if pos < mr.size and (mr.ops is not None or mr.ram is not None):
        out.append(FlatRange(base + pos, base + mr.size, mr, pos))


def address_space_init(root: MemoryRegion, name: str) -> AddressSpace:
    """QEMU: address_space_init."""
    return AddressSpace(root, name)


def new_address_space_io() -> AddressSpace:
    """The 64 KiB x86 I/O space, holes reading all ones (QEMU's ``io``)."""
    root = memory_region_init_io(None, unassigned_io_ops, None, "io", 0x10000)
    return AddressSpace(root, "I/O")


def new_address_space_memory(size: int = 1 << 32) -> AddressSpace:
    """A physical memory space (a container; holes read 0)."""
    return AddressSpace(memory_region_init(None, "system", size), "memory")


# ---------------------------------------------------------------- dispatch

def memory_access_size(mr: MemoryRegion, l: int, addr: int) -> int:
    """Largest access (power of two) for ``l`` bytes at region offset ``addr``.

    QEMU: memory_access_size.
    """
    if l == 1:
        return 1
    ops = mr.ops
    access_size_max = ops.valid_max_access_size or 4  # type: ignore[union-attr]
    if not ops.impl_unaligned:  # type: ignore[union-attr]
        align = addr & -addr
        if align and align < access_size_max:
            access_size_max = align
    if l > access_size_max:
        l = access_size_max
    if l & (l - 1):
        l = 1 << (l.bit_length() - 1)
    return l


def _access_valid(ops: MemoryRegionOps, mr: MemoryRegion, addr: int,
                  size: int, is_write: bool) -> bool:
    if ops.valid_accepts is not None and not ops.valid_accepts(
            mr.opaque, addr, size, is_write):
        return False
    if not ops.valid_unaligned and addr & (size - 1):
        return False
    if not ops.valid_max_access_size:
        return True
    return ops.valid_min_access_size <= size <= ops.valid_max_access_size


def memory_region_read_accessor(mr: MemoryRegion, addr: int, value: int,
                                size: int, shift: int, mask: int,
                                attrs: Any) -> int:
    """One device read, returned shifted into place.  QEMU: memory_region_read_accessor."""
    return (mr.ops.read(mr.opaque, addr, size) & mask) << shift  # type: ignore[union-attr,misc]


def memory_region_write_accessor(mr: MemoryRegion, addr: int, value: int,
                                 size: int, shift: int, mask: int,
                                 attrs: Any) -> int:
    """One device write of ``(value >> shift) & mask``.  QEMU: memory_region_write_accessor."""
    mr.ops.write(mr.opaque, addr, (value >> shift) & mask, size)  # type: ignore[union-attr,misc]
    return MEMTX_OK


def access_with_adjusted_size(addr: int, value: int, size: int,
                              access_size_min: int, access_size_max: int,
                              access_fn: Callable[..., int], mr: MemoryRegion,
                              attrs: Any) -> int:
    """Split an access into the sizes the device implements (little endian).

    Returns the OR of what ``access_fn`` returns: the value for reads,
    MEMTX_OK for writes.  QEMU: access_with_adjusted_size.
    """
    access_size = size if size < access_size_max else access_size_max
    if access_size < access_size_min:
        access_size = access_size_min
    if access_size == size:
        return access_fn(mr, addr, value, size, 0, (1 << (size * 8)) - 1, attrs)
    mask = (1 << (access_size * 8)) - 1
    r = 0
    for i in range(0, size, access_size):
        r |= access_fn(mr, addr + i, value, access_size, i * 8, mask, attrs)
    return r


def memory_region_dispatch_read(mr: MemoryRegion, addr: int, size: int,
                                attrs: Any = None) -> int:
    """Read ``size`` bytes at region offset ``addr``; a refused access reads 0.

    Returns: the value.  QEMU: memory_region_dispatch_read.
    """
    ops = mr.ops
    if not _access_valid(ops, mr, addr, size, False):  # type: ignore[arg-type]
        return 0
    if ops.read is None:  # type: ignore[union-attr]
        return 0
    return access_with_adjusted_size(addr, 0, size, ops.impl_min_access_size,  # type: ignore[union-attr]
                                     ops.impl_max_access_size,  # type: ignore[union-attr]
                                     memory_region_read_accessor, mr, attrs)


def memory_region_dispatch_write(mr: MemoryRegion, addr: int, data: int,
                                 size: int, attrs: Any = None) -> int:
    """Write ``data`` (``size`` bytes) at region offset ``addr``.

    Returns: MEMTX_OK, or MEMTX_DECODE_ERROR when the region refuses the
    access (the write is dropped).  QEMU: memory_region_dispatch_write.
    """
    ops = mr.ops
    if not _access_valid(ops, mr, addr, size, True):  # type: ignore[arg-type]
        return MEMTX_DECODE_ERROR
    if ops.write is None:  # type: ignore[union-attr]
        return MEMTX_OK
    return access_with_adjusted_size(addr, data, size, ops.impl_min_access_size,  # type: ignore[union-attr]
                                     ops.impl_max_access_size,  # type: ignore[union-attr]
                                     memory_region_write_accessor, mr, attrs)
