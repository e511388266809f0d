"""Guest accesses to an address space: the exit path of QEMU's ``exec.c``.

::

    address_space_rw -> address_space_write -> address_space_write_continue
      -> memory_region_dispatch_write -> access_with_adjusted_size
      -> memory_region_write_accessor -> ops.write (e.g. portio_write)

and the mirror image for reads.  The KVM layer calls::

    address_space_rw(as_, addr, attrs, buf, length, is_write) -> MemTxResult

with ``buf`` a ``bytearray``/writable ``memoryview`` holding the little-endian
data (filled in on a read).  ``address_space_rw_string`` does ``count``
consecutive accesses of ``size`` bytes at the same address (``rep ins/outs``)
and lets a region's ops handle a run in bulk when they can do so with the same
result (``MemoryRegionOps.read_rep/write_rep``).  ``cpu_inb/outb/...`` are the
value-level helpers of QEMU's ``ioport.c``.

An access is split at RAM region boundaries and by ``memory_access_size``
(max access size, alignment unless ``impl_unaligned``); RAM pieces are
copied.  A device region takes the whole access that starts in it, even
one running past its end (QEMU clamps only RAM), and its ops decide.
Nothing here raises on a guest-chosen address.  Regions, address spaces and
dispatch live in ``gqemu.hw.memory_region`` and are re-exported here, so
``gqemu.hw.memory`` is the one module callers import.

Must not import: gqemu.kvm, gqemu.machine, or anything above hw.
QEMU: softmmu/physmem.c (2.8: exec.c), softmmu/ioport.c (cpu_in*/out*).
"""
from __future__ import annotations

from typing import Any

from gqemu.hw.memory_region import (MEMTX_DECODE_ERROR, MEMTX_ERROR, MEMTX_OK,
                                    MEMTXATTRS_UNSPECIFIED, AddressSpace,
                                    FlatRange, MemoryRegion, MemoryRegionOps,
                                    access_with_adjusted_size,
                                    address_space_init,
                                    memory_access_size,
                                    memory_region_add_subregion,
                                    memory_region_del_subregion,
                                    memory_region_dispatch_read,
                                    memory_region_dispatch_write,
                                    memory_region_init, memory_region_init_io,
                                    memory_region_init_ram,
                                    memory_region_read_accessor,
                                    memory_region_write_accessor,
                                    new_address_space_io,
                                    new_address_space_memory,
                                    unassigned_io_ops)

__all__ = [
    "MEMTX_OK", "MEMTX_ERROR", "MEMTX_DECODE_ERROR", "MEMTXATTRS_UNSPECIFIED",
    "MemoryRegionOps", "MemoryRegion", "AddressSpace", "FlatRange",
    "memory_region_init", "memory_region_init_io", "memory_region_init_ram",
    "memory_region_add_subregion", "memory_region_del_subregion",
    "address_space_init", "address_space_rw", "address_space_read",
    "address_space_write", "address_space_read_continue",
    "address_space_write_continue", "address_space_rw_string",
    "memory_region_dispatch_read", "memory_region_dispatch_write",
    "access_with_adjusted_size", "memory_region_read_accessor",
    "memory_region_write_accessor", "memory_access_size",
    "cpu_inb", "cpu_inw", "cpu_inl", "cpu_outb", "cpu_outw", "cpu_outl",
    "unassigned_io_ops", "new_address_space_io", "new_address_space_memory",
]


def _piece(fr: FlatRange, addr: int, length: int) -> int:
    """How much of an access at ``addr`` the range ``fr`` takes: RAM up to
    its end; a device region the whole access, even past its end (QEMU
    7.2's address_space_translate_internal clamps for RAM only: ``inl
    0x1f6`` is one 4-byte read of the IDE region, all ones, recorded in
    tests/data/kvm/atairq)."""
    if fr.mr.ram is not None:
        end = fr.end - addr
        if end < length:
            return end
    return length


def address_space_write_continue(as_: AddressSpace, addr: int, attrs: Any,
                                 buf: Any, length: int, addr1: int, l: int,
                                 mr: MemoryRegion, pos: int = 0) -> int:
    """The write loop: one region piece at a time.  QEMU: address_space_write_continue."""
    result = MEMTX_OK
    while True:
        ram = mr.ram
        if ram is None:
            l = memory_access_size(mr, l, addr1)
            if l == 1:
                val = buf[pos]
            elif l == 2:
                val = buf[pos] | (buf[pos + 1] << 8)
            else:
                val = int.from_bytes(buf[pos:pos + l], "little")
            result |= memory_region_dispatch_write(mr, addr1, val, l, attrs)
        else:
            ram[addr1:addr1 + l] = buf[pos:pos + l]
        length -= l
        if not length:
            return result
        pos += l
        addr += l
        fr = as_.lookup(addr)
        mr = fr.mr
        addr1 = addr - fr.start + fr.offset_in_region
        l = _piece(fr, addr, length)


def address_space_write(as_: AddressSpace, addr: int, attrs: Any, buf: Any,
                        length: int) -> int:
    """Write ``length`` bytes of ``buf`` at ``addr``.  QEMU: address_space_write."""
    if length <= 0:
        return MEMTX_OK
    table = as_.table
    fr = table[addr] if table is not None and 0 <= addr < len(table) else as_.lookup(addr)
    l = _piece(fr, addr, length)
    return address_space_write_continue(as_, addr, attrs, buf, length,
                                        addr - fr.start + fr.offset_in_region,
                                        l, fr.mr)


def address_space_read_continue(as_: AddressSpace, addr: int, attrs: Any,
                                buf: Any, length: int, addr1: int, l: int,
                                mr: MemoryRegion, pos: int = 0) -> int:
    """The read loop, storing into ``buf``.  QEMU: address_space_read_continue."""
    while True:
        ram = mr.ram
        if ram is None:
            l = memory_access_size(mr, l, addr1)
            val = memory_region_dispatch_read(mr, addr1, l, attrs)
            if l == 1:
                buf[pos] = val & 0xff
            elif l == 2:
                buf[pos] = val & 0xff
                buf[pos + 1] = (val >> 8) & 0xff
            else:
                buf[pos:pos + l] = (val & ((1 << (l * 8)) - 1)).to_bytes(l, "little")
        else:
            buf[pos:pos + l] = ram[addr1:addr1 + l]
        length -= l
        if not length:
            return MEMTX_OK
        pos += l
        addr += l
        fr = as_.lookup(addr)
        mr = fr.mr
        addr1 = addr - fr.start + fr.offset_in_region
        l = _piece(fr, addr, length)


def address_space_read(as_: AddressSpace, addr: int, attrs: Any, buf: Any,
                       length: int) -> int:
    """Read ``length`` bytes at ``addr`` into ``buf``.  QEMU: address_space_read_full."""
    if length <= 0:
        return MEMTX_OK
    table = as_.table
    fr = table[addr] if table is not None and 0 <= addr < len(table) else as_.lookup(addr)
    l = _piece(fr, addr, length)
    return address_space_read_continue(as_, addr, attrs, buf, length,
                                       addr - fr.start + fr.offset_in_region,
                                       l, fr.mr)


def address_space_rw(as_: AddressSpace, addr: int, attrs: Any, buf: Any,
                     length: int, is_write: bool) -> int:
    """One guest access of ``length`` bytes; ``buf`` holds or receives the data.

    Context: the vCPU (any greenlet that is not the hub).
    Returns: MEMTX_OK or MEMTX_DECODE_ERROR.  QEMU: address_space_rw.
    """
    if is_write:
        return address_space_write(as_, addr, attrs, buf, length)
    return address_space_read(as_, addr, attrs, buf, length)


def address_space_rw_string(as_: AddressSpace, addr: int, attrs: Any,
                            buf: Any, size: int, count: int,
                            is_write: bool) -> int:
    """``count`` accesses of ``size`` bytes at one address (``rep ins/outs``).

    Equivalent to ``address_space_rw(as_, addr, attrs, buf[i*size:], size,
    is_write)`` for i in range(count) -- which is what KVM's
    ``kvm_handle_io`` does -- but a region whose ops offer
    ``read_rep/write_rep`` may serve a run of them in one call.
    Returns: the OR of the results.
    """
    result = MEMTX_OK
    pos = 0
    done_total = 0
    mv = memoryview(buf) if not isinstance(buf, memoryview) else buf
    while done_total < count:
        fr = as_.lookup(addr)
        mr = fr.mr
        ops = mr.ops
        if ops is not None and fr.end - addr >= size:
            rep = ops.write_rep if is_write else ops.read_rep
            if rep is not None:
                n = rep(mr.opaque, addr - fr.start + fr.offset_in_region, size,
                        mv, pos, count - done_total)
                if n:
                    done_total += n
                    pos += n * size
                    continue
        if is_write:
            result |= address_space_write_continue(
                as_, addr, attrs, mv, size,
                addr - fr.start + fr.offset_in_region,
                _piece(fr, addr, size), mr, pos)
        else:
            result |= address_space_read_continue(
                as_, addr, attrs, mv, size,
                addr - fr.start + fr.offset_in_region,
                _piece(fr, addr, size), mr, pos)
        done_total += 1
        pos += size
    return result


# ------------------------------------------------------- value-level helpers

def cpu_outb(as_: AddressSpace, addr: int, val: int) -> None:
    """QEMU: cpu_outb (ioport.c)."""
    address_space_write(as_, addr, None, bytearray((val & 0xff,)), 1)


def cpu_outw(as_: AddressSpace, addr: int, val: int) -> None:
    """QEMU: cpu_outw."""
    address_space_write(as_, addr, None, (val & 0xffff).to_bytes(2, "little"), 2)


def cpu_outl(as_: AddressSpace, addr: int, val: int) -> None:
    """QEMU: cpu_outl."""
    address_space_write(as_, addr, None, (val & 0xffffffff).to_bytes(4, "little"), 4)


def cpu_inb(as_: AddressSpace, addr: int) -> int:
    """QEMU: cpu_inb."""
    b = bytearray(1)
    address_space_read(as_, addr, None, b, 1)
    return b[0]


def cpu_inw(as_: AddressSpace, addr: int) -> int:
    """QEMU: cpu_inw."""
    b = bytearray(2)
    address_space_read(as_, addr, None, b, 2)
    return b[0] | (b[1] << 8)


def cpu_inl(as_: AddressSpace, addr: int) -> int:
    """QEMU: cpu_inl."""
    b = bytearray(4)
    address_space_read(as_, addr, None, b, 4)
    return int.from_bytes(b, "little")
