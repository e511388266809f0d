"""The guest's side of the simulated KVM: x86 port I/O that exits.

An emulator script's ``guest(cpu)`` receives an :class:`X86CPU`.  Each of
``inb/inw/inl/outb/outw/outl`` is one KVM_EXIT_IO with count 1; the string
forms ``insb/insw/insl/outsb/outsw/outsl`` are one exit with ``count``
elements, as ``rep ins/outs`` is under KVM; ``hlt()`` is KVM_EXIT_HLT and
returns once an interrupt has arrived; ``mmio_read/mmio_write`` are
KVM_EXIT_MMIO.  ``memory`` is guest RAM (:class:`GuestMemory`): plain loads
and stores that do not exit.

Each call fills the shared ``KvmRun`` and switches to the vCPU greenlet,
which handles the exit and switches back (``KVM_RUN`` returns to the guest).

Must not import: gqemu.hw or anything above kvm.
QEMU: the hardware side of KVM_RUN (linux arch/x86/kvm: complete_pio).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from greenlet import getcurrent

from gqemu.kvm.exits import (KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_IN,
                             KVM_EXIT_IO_OUT, KVM_EXIT_MMIO, KVM_RUN_DATA_SIZE)


class GuestError(ValueError):
    """A guest program misused an instruction (bad port, value or size)."""


class GuestMemory:
    """Guest RAM as the guest program sees it.

    ``read(addr, n) -> bytes`` and ``write(addr, data)``; slices work too
    (``memory[a:b]``, ``memory[a:b] = data``).  Out-of-range accesses raise
    GuestError (a guest bug, reported with the script's traceback).
    ``on_write(cpu_index, addr, data)`` / ``on_read(...)`` hooks see every
    access (the recorder uses them).
    """

    __slots__ = ("ram", "size", "on_write", "on_read", "cpu_index")

    def __init__(self, ram: bytearray, cpu_index: int = 0) -> None:
        self.ram = ram
        self.size = len(ram)
        self.on_write: Optional[Callable[[int, int, bytes], None]] = None
        self.on_read: Optional[Callable[[int, int, bytes], None]] = None
        self.cpu_index = cpu_index

    def _check(self, addr: int, n: int) -> None:
        if type(addr) is not int or type(n) is not int or addr < 0 or n < 0 \
                or addr + n > self.size:
            raise GuestError("guest RAM access [0x%x, +0x%x) outside 0..0x%x"
                             % (addr if isinstance(addr, int) else -1,
                                n if isinstance(n, int) else -1, self.size))

    def read(self, addr: int, n: int) -> bytes:
        self._check(addr, n)
        data = bytes(self.ram[addr:addr + n])
        if self.on_read is not None and n:
            self.on_read(self.cpu_index, addr, data)
        return data

    def write(self, addr: int, data: Any) -> None:
        data = bytes(data)
        self._check(addr, len(data))
        self.ram[addr:addr + len(data)] = data
        if self.on_write is not None and data:
            self.on_write(self.cpu_index, addr, data)

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            if step != 1:
                raise GuestError("guest RAM slices must be contiguous")
            return self.read(start, max(0, stop - start))
        return self.read(key, 1)[0]

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            data = bytes(value)
            if step != 1 or len(data) != max(0, stop - start):
                raise GuestError("guest RAM slice assignment must keep the length")
            self.write(start, data)
        else:
            self.write(key, bytes((value,)))


def _check_port(port: Any) -> int:
    if type(port) is not int or not 0 <= port <= 0xFFFF:
        raise GuestError("bad I/O port %r" % (port,))
    return port


def _check_value(value: Any, size: int) -> int:
    if type(value) is not int or not 0 <= value < (1 << (8 * size)):
        raise GuestError("value %r does not fit in %d byte(s)" % (value, size))
    return value


class X86CPU:
    """What a guest program calls ``cpu``: x86 port I/O, HLT, MMIO, RAM."""

    def __init__(self, cpu_index: int, memory: Optional[GuestMemory]) -> None:
        self.cpu_index = cpu_index
        self.memory = memory
        self._run: Any = None
        self._vcpu: Any = None

    def _attach(self, cpu: Any) -> None:
        # Called by the vCPU greenlet itself, which the guest switches back to.
        self._run = cpu.kvm_run
        self._vcpu = getcurrent()

    def _exit_io(self, direction: int, size: int, port: int, count: int) -> None:
        run = self._run
        run.exit_reason = KVM_EXIT_IO
        run.io_direction = direction
        run.io_size = size
        run.io_port = port
        run.io_count = count
        self._vcpu_switch()

    def _vcpu_switch(self) -> None:
        self._vcpu.switch()

    # -- single accesses ---------------------------------------------------

    def inb(self, port: int) -> int:
        """``in al, dx``: one KVM_EXIT_IO."""
        self._exit_io(KVM_EXIT_IO_IN, 1, _check_port(port), 1)
        return self._run.data[0]

    def inw(self, port: int) -> int:
        self._exit_io(KVM_EXIT_IO_IN, 2, _check_port(port), 1)
        d = self._run.data
        return d[0] | (d[1] << 8)

    def inl(self, port: int) -> int:
        self._exit_io(KVM_EXIT_IO_IN, 4, _check_port(port), 1)
        return int.from_bytes(self._run.data[:4], "little")

    def outb(self, port: int, value: int) -> None:
        """``out dx, al``: one KVM_EXIT_IO."""
        _check_port(port)
        self._run.data[0] = _check_value(value, 1)
        self._exit_io(KVM_EXIT_IO_OUT, 1, port, 1)

    def outw(self, port: int, value: int) -> None:
        _check_port(port)
        self._run.data[0:2] = _check_value(value, 2).to_bytes(2, "little")
        self._exit_io(KVM_EXIT_IO_OUT, 2, port, 1)

    def outl(self, port: int, value: int) -> None:
        _check_port(port)
        self._run.data[0:4] = _check_value(value, 4).to_bytes(4, "little")
        self._exit_io(KVM_EXIT_IO_OUT, 4, port, 1)

    # -- string forms (rep ins/outs): one exit each ----------------------------

    def _ins(self, port: int, count: int, size: int) -> bytes:
        _check_port(port)
        if type(count) is not int or not 0 < count * size <= KVM_RUN_DATA_SIZE:
            raise GuestError("bad count %r for a string read" % (count,))
        self._exit_io(KVM_EXIT_IO_IN, size, port, count)
        return bytes(self._run.data[:count * size])

    def _outs(self, port: int, data: Any, size: int) -> None:
        _check_port(port)
        data = bytes(data)
        n = len(data)
        if n == 0 or n % size or n > KVM_RUN_DATA_SIZE:
            raise GuestError("string write of %d bytes is not a whole number of "
                             "%d-byte elements (max %d bytes)" % (n, size, KVM_RUN_DATA_SIZE))
        self._run.data[:n] = data
        self._exit_io(KVM_EXIT_IO_OUT, size, port, n // size)

    def insb(self, port: int, count: int) -> bytes:
        """``rep insb``: ``count`` bytes in one exit."""
        return self._ins(port, count, 1)

    def insw(self, port: int, count: int) -> bytes:
        """``rep insw``: ``count`` words (2*count bytes) in one exit."""
        return self._ins(port, count, 2)

    def insl(self, port: int, count: int) -> bytes:
        """``rep insd``: ``count`` dwords in one exit."""
        return self._ins(port, count, 4)

    def outsb(self, port: int, data: Any) -> None:
        self._outs(port, data, 1)

    def outsw(self, port: int, data: Any) -> None:
        """``rep outsw``: ``data`` (an even number of bytes) in one exit."""
        self._outs(port, data, 2)

    def outsl(self, port: int, data: Any) -> None:
        self._outs(port, data, 4)

    # -- other exits -----------------------------------------------------------

    def hlt(self) -> None:
        """``hlt``: return once an interrupt has arrived (at once if one came
        since the last ``hlt`` returned)."""
        self._run.exit_reason = KVM_EXIT_HLT
        self._vcpu_switch()

    def mmio_read(self, addr: int, size: int) -> int:
        """A load from an MMIO address: one KVM_EXIT_MMIO."""
        if size not in (1, 2, 4, 8) or type(addr) is not int or not 0 <= addr < 1 << 64:
            raise GuestError("bad MMIO read of %r bytes at %r" % (size, addr))
        run = self._run
        run.exit_reason = KVM_EXIT_MMIO
        run.mmio_phys_addr, run.mmio_len, run.mmio_is_write = addr, size, 0
        self._vcpu_switch()
        return int.from_bytes(run.data[:size], "little")

    def mmio_write(self, addr: int, size: int, value: int) -> None:
        if size not in (1, 2, 4, 8) or type(addr) is not int or not 0 <= addr < 1 << 64:
            raise GuestError("bad MMIO write of %r bytes at %r" % (size, addr))
        run = self._run
        run.data[:size] = _check_value(value, size).to_bytes(size, "little")
        run.exit_reason = KVM_EXIT_MMIO
        run.mmio_phys_addr, run.mmio_len, run.mmio_is_write = addr, size, 1
        self._vcpu_switch()
