"""``isa-debugcon`` and ``isa-debug-exit``: how a boot program talks back.

``isa_debugcon_init(io_root, out, iobase=0xe9)`` maps QEMU's debug console:
every byte written goes to ``out`` (a binary file-like), a read returns the
readback value 0xe9.  ``isa_debug_exit_init(io_root, on_exit, iobase=0xf4,
iosize=4)`` maps QEMU's exit device: a write of V calls ``on_exit(status)``
with ``status = ((V << 1) | 1) & 0xff`` -- the exit status QEMU's
``exit((V << 1) | 1)`` leaves to the shell -- and reads return 0.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/char/debugcon.c, hw/misc/debugexit.c.
"""
from __future__ import annotations

from typing import Any, Callable

from gqemu.hw.memory_region import (MemoryRegion, MemoryRegionOps,
                                    memory_region_add_subregion, memory_region_init_io)

DEBUGCON_READBACK = 0xE9


class DebugconState:
    """QEMU: ISADebugconState / DebugconState."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.readback = DEBUGCON_READBACK


def debugcon_ioport_write(opaque: DebugconState, addr: int, val: int, size: int) -> None:
    """QEMU: debugcon_ioport_write (one byte per access)."""
    opaque.out.write(bytes((val & 0xFF,)))
    opaque.out.flush()


def debugcon_ioport_read(opaque: DebugconState, addr: int, size: int) -> int:
    """QEMU: debugcon_ioport_read."""
    return opaque.readback


debugcon_ops = MemoryRegionOps(debugcon_ioport_read, debugcon_ioport_write,
                               impl_min_access_size=1, impl_max_access_size=1,
                               name="debugcon")


def isa_debugcon_init(io_root: MemoryRegion, out: Any, iobase: int = 0xE9) -> DebugconState:
    s = DebugconState(out)
    memory_region_add_subregion(io_root, iobase,
                                memory_region_init_io(None, debugcon_ops, s, "isa-debugcon", 1))
    return s


class DebugExitState:
    """QEMU: ISADebugExitState."""

    def __init__(self, on_exit: Callable[[int], None]) -> None:
        self.on_exit = on_exit


def debug_exit_write(opaque: DebugExitState, addr: int, val: int, size: int) -> None:
    """QEMU: debug_exit_write, which calls exit((val << 1) | 1)."""
    opaque.on_exit(((val << 1) | 1) & 0xFF)


def debug_exit_read(opaque: DebugExitState, addr: int, size: int) -> int:
    """QEMU: debug_exit_read."""
    return 0


debug_exit_ops = MemoryRegionOps(debug_exit_read, debug_exit_write,
                                 valid_min_access_size=1, valid_max_access_size=4,
                                 name="isa-debug-exit")


def isa_debug_exit_init(io_root: MemoryRegion, on_exit: Callable[[int], None],
                        iobase: int = 0xF4, iosize: int = 4) -> DebugExitState:
    s = DebugExitState(on_exit)
    memory_region_add_subregion(io_root, iobase, memory_region_init_io(
        None, debug_exit_ops, s, "isa-debug-exit", iosize))
    return s
