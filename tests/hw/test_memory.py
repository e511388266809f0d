"""Address spaces, region dispatch and portio lists (QEMU 7.2 rules)."""
from __future__ import annotations

import pytest

from gqemu.hw.ioport import MemoryRegionPortio, portio_list_add, portio_list_init
from gqemu.hw.memory import (MEMTX_DECODE_ERROR, MEMTX_OK, MemoryRegionOps,
                             address_space_read, address_space_rw,
                             address_space_rw_string, address_space_write,
                             cpu_inb, cpu_inl, cpu_inw, cpu_outb, cpu_outl,
                             cpu_outw, memory_region_add_subregion,
                             memory_region_del_subregion, memory_region_init,
                             memory_region_init_io, memory_region_init_ram,
                             new_address_space_io, new_address_space_memory)


class Dev:
    """A device recording every callback."""

    def __init__(self) -> None:
        self.log: list[tuple] = []
        self.regs = {p: (p * 7) & 0xFF for p in range(0x10000)}

    def rb(self, opaque, port):
        self.log.append(("rb", port))
        return self.regs[port]

    def wb(self, opaque, port, val):
        self.log.append(("wb", port, val))

    def rw(self, opaque, port):
        self.log.append(("rw", port))
        return 0xBEEF

    def ww(self, opaque, port, val):
        self.log.append(("ww", port, val))

    def rl(self, opaque, port):
        self.log.append(("rl", port))
        return 0x12345678

    def wl(self, opaque, port, val):
        self.log.append(("wl", port, val))


def ide_like(as_io, dev, base=0x1F0):
    pl = portio_list_init(None, [MemoryRegionPortio(0, 8, 1, dev.rb, dev.wb),
                                 MemoryRegionPortio(0, 1, 2, dev.rw, dev.ww),
                                 MemoryRegionPortio(0, 1, 4, dev.rl, dev.wl)],
                          None, "ide")
    portio_list_add(pl, as_io.root, base)
    return pl


def test_unassigned_ports_read_all_ones_and_drop_writes():
    as_io = new_address_space_io()
    assert cpu_inb(as_io, 0x80) == 0xFF
    assert cpu_inw(as_io, 0x81) == 0xFFFF
    assert cpu_inl(as_io, 0x1234) == 0xFFFFFFFF
    cpu_outl(as_io, 0x1234, 0)          # dropped, no exception
    assert cpu_inb(as_io, 0xFFFF) == 0xFF
    assert cpu_inw(as_io, 0xFFFF) == 0xFFFF   # runs past the end of the space


def test_portio_exact_size_and_absolute_port():
    as_io = new_address_space_io()
    dev = Dev()
    ide_like(as_io, dev)
    assert cpu_inb(as_io, 0x1F3) == dev.regs[0x1F3]
    assert cpu_inw(as_io, 0x1F0) == 0xBEEF
    assert cpu_inl(as_io, 0x1F0) == 0x12345678
    cpu_outb(as_io, 0x1F7, 0x20)
    cpu_outw(as_io, 0x1F0, 0xA55A)
    cpu_outl(as_io, 0x1F0, 0xCAFEF00D)
    assert dev.log == [("rb", 0x1F3), ("rw", 0x1F0), ("rl", 0x1F0),
                       ("wb", 0x1F7, 0x20), ("ww", 0x1F0, 0xA55A),
                       ("wl", 0x1F0, 0xCAFEF00D)]


def test_word_access_to_byte_port_becomes_two_byte_accesses():
    as_io = new_address_space_io()
    dev = Dev()
    ide_like(as_io, dev)
    v = cpu_inw(as_io, 0x1F2)
    assert v == dev.regs[0x1F2] | dev.regs[0x1F3] << 8
    cpu_outw(as_io, 0x1F4, 0x1234)
    assert dev.log == [("rb", 0x1F2), ("rb", 0x1F3), ("wb", 0x1F4, 0x34),
                       ("wb", 0x1F5, 0x12)]


def test_word_access_at_last_port_splits_at_region_end():
    as_io = new_address_space_io()
    dev = Dev()
    ide_like(as_io, dev)
    # 0x1f7 is the last port of the 8-byte region; 0x1f8 is unassigned
    assert cpu_inw(as_io, 0x1F7) == 0xFF00 | dev.regs[0x1F7]
    assert dev.log == [("rb", 0x1F7)]


def test_dword_access_to_byte_ports_reads_all_ones_untouched():
    as_io = new_address_space_io()
    dev = Dev()
    ide_like(as_io, dev)
    for port in (0x1F1, 0x1F2, 0x1F3, 0x1F4):
        assert cpu_inl(as_io, port) == 0xFFFFFFFF
        cpu_outl(as_io, port, 0)
    assert dev.log == []


def test_dword_access_straddling_region_end():
    """A device region takes the whole access that starts in it (QEMU clamps
    only RAM accesses at a region end): ``inl 0x1f6`` is one 4-byte portio
    read, which no entry serves -- all ones, the device untouched, as real
    QEMU 7.2 answered tests/data/kvm/atairq.asm."""
    as_io = new_address_space_io()
    dev = Dev()
    ide_like(as_io, dev)
    assert cpu_inl(as_io, 0x1F6) == 0xFFFFFFFF
    assert cpu_inl(as_io, 0x1F7) == 0xFFFFFFFF
    cpu_outl(as_io, 0x1F6, 0x12345678)
    assert dev.log == []


def test_overlapping_registration_refused():
    as_io = new_address_space_io()
    ide_like(as_io, Dev())
    with pytest.raises(ValueError, match="overlaps"):
        ide_like(as_io, Dev(), base=0x1F4)
    ide_like(as_io, Dev(), base=0x170)        # disjoint is fine
    with pytest.raises(ValueError, match="does not fit"):
        memory_region_add_subregion(as_io.root, 0xFFFE, memory_region_init(None, "x", 4))


def test_del_subregion_unmaps():
    as_io = new_address_space_io()
    mr = memory_region_init_io(None, MemoryRegionOps(lambda o, a, s: 0x42, None), None, "r", 4)
    memory_region_add_subregion(as_io.root, 0x300, mr)
    assert cpu_inb(as_io, 0x301) == 0x42
    memory_region_del_subregion(as_io.root, mr)
    assert cpu_inb(as_io, 0x301) == 0xFF


def test_access_with_adjusted_size_splits_little_endian():
    calls = []

    def rd(opaque, addr, size):
        calls.append((addr, size))
        return 0x10 + addr

    def wr(opaque, addr, data, size):
        calls.append(("w", addr, data, size))

    as_io = new_address_space_io()
    mr = memory_region_init_io(None, MemoryRegionOps(rd, wr, impl_max_access_size=1), None, "b", 4)
    memory_region_add_subregion(as_io.root, 0x400, mr)
    assert cpu_inl(as_io, 0x400) == 0x13121110
    assert calls == [(0, 1), (1, 1), (2, 1), (3, 1)]
    calls.clear()
    cpu_outw(as_io, 0x402, 0xAABB)
    assert calls == [("w", 2, 0xBB, 1), ("w", 3, 0xAA, 1)]


def test_refused_access_reads_zero_and_drops_write():
    seen = []
    ops = MemoryRegionOps(lambda o, a, s: 0x77, lambda o, a, d, s: seen.append(d),
                          valid_min_access_size=2, valid_max_access_size=4)
    as_io = new_address_space_io()
    mr = memory_region_init_io(None, ops, None, "w", 4)
    memory_region_add_subregion(as_io.root, 0x500, mr)
    assert cpu_inb(as_io, 0x500) == 0        # refused: decode error reads 0
    buf = bytearray(b"\x01")
    assert address_space_write(as_io, 0x500, None, buf, 1) == MEMTX_DECODE_ERROR
    assert cpu_inw(as_io, 0x500) == 0x77
    assert seen == []


def test_ram_and_holes_in_memory_space():
    as_mem = new_address_space_memory()
    ram = memory_region_init_ram(None, "ram", 0x10000)
    memory_region_add_subregion(as_mem.root, 0, ram)
    data = bytes(range(256)) * 4
    assert address_space_write(as_mem, 0xFE00, None, data, len(data)) == MEMTX_OK
    assert ram.ram[0xFE00:0x10000] == data[:0x200]     # the rest was dropped
    out = bytearray(b"\xAA" * 1024)
    address_space_read(as_mem, 0xFE00, None, out, 1024)
    assert out[:0x200] == data[:0x200] and out[0x200:] == bytes(0x200)
    out = bytearray(8)
    address_space_read(as_mem, (1 << 32) + 5, None, out, 8)   # beyond the space
    assert out == bytes(8)


def test_address_space_rw_string_equals_single_accesses():
    rep_calls = []

    def rep(opaque, port, buf, pos, count):
        n = min(count, 3)
        for i in range(n):
            buf[pos + 2 * i:pos + 2 * i + 2] = (0x100 + i).to_bytes(2, "little")
        rep_calls.append((port, count, n))
        return n

    single = []

    def rw(opaque, port):
        single.append(port)
        return 0x2222

    as_io = new_address_space_io()
    pl = portio_list_init(None, [MemoryRegionPortio(0, 1, 2, rw, None, read_rep=rep)], None, "d")
    portio_list_add(pl, as_io.root, 0x600)
    buf = bytearray(10)
    assert address_space_rw_string(as_io, 0x600, None, buf, 2, 5, False) == MEMTX_OK
    # rep served 3, then 2 more, all through the rep handler
    assert [int.from_bytes(buf[i:i + 2], "little") for i in range(0, 10, 2)] == \
        [0x100, 0x101, 0x102, 0x100, 0x101]
    assert rep_calls == [(0x600, 5, 3), (0x600, 2, 2)] and single == []
    # a port without rep handlers: element by element
    buf = bytearray(6)
    address_space_rw_string(as_io, 0x80, None, buf, 2, 3, False)
    assert buf == b"\xff" * 6


def test_address_space_rw_round_trip_on_ram():
    as_mem = new_address_space_memory(1 << 20)
    memory_region_add_subregion(as_mem.root, 0x1000, memory_region_init_ram(None, "r", 0x1000))
    assert address_space_rw(as_mem, 0x1800, None, b"hello", 5, True) == MEMTX_OK
    b = bytearray(5)
    address_space_rw(as_mem, 0x1800, None, b, 5, False)
    assert b == b"hello"
