"""KVM exit reasons, the shared ``struct kvm_run``, and exit records.

``KvmRun`` is the page a vCPU shares with the (simulated) kernel: the guest
side fills in the exit fields and switches back to the vCPU, which reads
them, handles the exit and, for an IN, leaves the data in ``data`` for the
guest to pick up on the next ``KVM_RUN``.  It is mutable and reused, as in
QEMU, so an exit costs no allocation.

The immutable ``Exit*`` records are the decoded, immutable form of one exit
(what a trace record holds), used by replay reports and tests.

Must not import: gqemu.hw or anything above (pure data).
QEMU: linux-headers/linux/kvm.h (struct kvm_run, KVM_EXIT_*).
"""
from __future__ import annotations

from typing import Optional, Union

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_RUN = 0xAE80

EXIT_REASON_NAMES = {
    KVM_EXIT_UNKNOWN: "UNKNOWN", KVM_EXIT_IO: "IO", KVM_EXIT_HLT: "HLT",
    KVM_EXIT_MMIO: "MMIO", KVM_EXIT_IRQ_WINDOW_OPEN: "IRQ_WINDOW_OPEN",
    KVM_EXIT_SHUTDOWN: "SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY",
    KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR",
}

# The data page: the largest string exit a guest may ask for in one go.
KVM_RUN_DATA_SIZE = 64 * 1024


class KvmRun:
    """The shared exit page (``struct kvm_run``), one per vCPU.

    ``io_*`` are the KVM_EXIT_IO union fields (``data`` stands for
    ``run + data_offset``), ``mmio_*`` the KVM_EXIT_MMIO ones;
    ``internal_error`` holds the exception of a guest program that raised.
    """

    __slots__ = ("exit_reason", "io_direction", "io_size", "io_port",
                 "io_count", "data", "mmio_phys_addr", "mmio_len",
                 "mmio_is_write", "internal_error", "immediate_exit")

    def __init__(self) -> None:
        self.exit_reason = KVM_EXIT_UNKNOWN
        self.io_direction = 0
        self.io_size = 0
        self.io_port = 0
        self.io_count = 0
        self.data = bytearray(KVM_RUN_DATA_SIZE)
        self.mmio_phys_addr = 0
        self.mmio_len = 0
        self.mmio_is_write = 0
        self.internal_error: Optional[BaseException] = None
        self.immediate_exit = 0


class _ExitRecord:
    """An immutable record compared by value, as a frozen dataclass would be
    (plain classes: dataclasses compile their methods at import time, several
    ms of every ``gqemu run``)."""

    __slots__: tuple[str, ...] = ()

    def __init__(self, *values: object) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError("%s takes %d values, not %d"
                            % (type(self).__name__, len(self.__slots__), len(values)))
        for name, v in zip(self.__slots__, values):
            object.__setattr__(self, name, v)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("cannot assign to field '%s'" % name)

    def __delattr__(self, name: str) -> None:
        raise AttributeError("cannot delete field '%s'" % name)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((self.__class__.__name__,) + self._values())

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in self.__slots__))


class ExitIO(_ExitRecord):
    """KVM_EXIT_IO: ``data`` is ``count * size`` bytes, written (OUT) or read (IN)."""
    __slots__ = ("direction", "size", "port", "count", "data")
    direction: int
    size: int
    port: int
    count: int
    data: bytes

    def __init__(self, direction: int, size: int, port: int, count: int,
                 data: bytes) -> None:
        super().__init__(direction, size, port, count, data)

    @property
    def value(self) -> int:
        """The first element's value (all of it when count is 1)."""
        return int.from_bytes(self.data[:self.size], "little")


class ExitMMIO(_ExitRecord):
    """KVM_EXIT_MMIO."""
    __slots__ = ("phys_addr", "is_write", "length", "value")
    phys_addr: int
    is_write: int
    length: int
    value: int

    def __init__(self, phys_addr: int, is_write: int, length: int, value: int) -> None:
        super().__init__(phys_addr, is_write, length, value)


class ExitHLT(_ExitRecord):
    """KVM_EXIT_HLT."""
    __slots__ = ()


class ExitShutdown(_ExitRecord):
    """KVM_EXIT_SHUTDOWN (the guest program ended)."""
    __slots__ = ()


class ExitInternalError(_ExitRecord):
    """KVM_EXIT_INTERNAL_ERROR (the guest program raised)."""
    __slots__ = ("message",)
    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)


Exit = Union[ExitIO, ExitMMIO, ExitHLT, ExitShutdown, ExitInternalError]


def exit_from_run(run: KvmRun) -> Exit:
    """Snapshot the exit currently described by ``run``."""
    r = run.exit_reason
    if r == KVM_EXIT_IO:
        n = run.io_size * run.io_count
        return ExitIO(run.io_direction, run.io_size, run.io_port, run.io_count,
                      bytes(run.data[:n]))
    if r == KVM_EXIT_MMIO:
        return ExitMMIO(run.mmio_phys_addr, run.mmio_is_write, run.mmio_len,
                        int.from_bytes(run.data[:run.mmio_len], "little"))
    if r == KVM_EXIT_HLT:
        return ExitHLT()
    if r == KVM_EXIT_SHUTDOWN:
        return ExitShutdown()
    return ExitInternalError(repr(run.internal_error))
