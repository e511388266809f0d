"""IRQ lines and a minimal ISA interrupt controller.

``qemu_irq`` is an ``IRQState``: a handler ``handler(opaque, n, level)``
with its opaque and line number.  ``qemu_set_irq(irq, level)`` calls it (a
``None`` irq is ignored, as in QEMU).  Devices raise/lower lines; they never
know who listens.

``ISAPic`` models what the vCPU needs of the i8259 pair: 16 level-sensitive
input lines ``pic.irqs[n]``, the current levels, and one notifier that the
vCPU layer installs to wake a halted vCPU::

    pic = isa_pic_new()
    isa_pic_set_notify(pic, cb, opaque)   # cb(opaque, n, level) on every change
    qemu_set_irq(pic.irqs[14], 1)         # what IDE does through its bus irq
    pic_get_pending(pic)                  # lowest raised line, or -1

The notifier is a callback passed down (the hw layer never imports kvm).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/core/irq.c, hw/intc/i8259.c (levels only; no ICW/OCW programming).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

__all__ = ["IRQState", "qemu_irq", "qemu_allocate_irq", "qemu_allocate_irqs",
           "qemu_set_irq", "qemu_irq_raise", "qemu_irq_lower", "qemu_irq_pulse",
           "ISAPic", "isa_pic_new", "isa_pic_set_notify", "isa_get_irq",
           "pic_get_pending", "pic_get_level"]

IRQHandler = Callable[[Any, int, int], None]


class IRQState:
    """One interrupt line.  QEMU: struct IRQState."""

    __slots__ = ("handler", "opaque", "n")

    def __init__(self, handler: IRQHandler, opaque: Any, n: int) -> None:
        self.handler = handler
        self.opaque = opaque
        self.n = n


qemu_irq = IRQState


def qemu_allocate_irq(handler: IRQHandler, opaque: Any, n: int) -> IRQState:
    """QEMU: qemu_allocate_irq."""
    return IRQState(handler, opaque, n)


def qemu_allocate_irqs(handler: IRQHandler, opaque: Any, count: int) -> list[IRQState]:
    """QEMU: qemu_allocate_irqs."""
    return [IRQState(handler, opaque, n) for n in range(count)]


def qemu_set_irq(irq: Optional[IRQState], level: int) -> None:
    """Drive ``irq`` to ``level`` (0 or 1).  Context: any greenlet of the
    loop's thread.  QEMU: qemu_set_irq."""
    if irq is not None:
        irq.handler(irq.opaque, irq.n, level)


def qemu_irq_raise(irq: Optional[IRQState]) -> None:
    """QEMU: qemu_irq_raise."""
    if irq is not None:
        irq.handler(irq.opaque, irq.n, 1)


def qemu_irq_lower(irq: Optional[IRQState]) -> None:
    """QEMU: qemu_irq_lower."""
    if irq is not None:
        irq.handler(irq.opaque, irq.n, 0)


def qemu_irq_pulse(irq: Optional[IRQState]) -> None:
    """QEMU: qemu_irq_pulse."""
    qemu_set_irq(irq, 1)
    qemu_set_irq(irq, 0)


class ISAPic:
    """Sixteen ISA lines with their levels and one change notifier."""

    __slots__ = ("levels", "irqs", "notify", "notify_opaque", "raised_count")

    def __init__(self) -> None:
        self.levels = [0] * 16
        self.irqs = qemu_allocate_irqs(_pic_set_irq, self, 16)
        self.notify: Optional[IRQHandler] = None
        self.notify_opaque: Any = None
        self.raised_count = [0] * 16    # rising edges seen, per line


def _pic_set_irq(opaque: ISAPic, n: int, level: int) -> None:
    level = 1 if level else 0
    old = opaque.levels[n]
    if old == level:
        return
    opaque.levels[n] = level
    if level:
        opaque.raised_count[n] += 1
    if opaque.notify is not None:
        opaque.notify(opaque.notify_opaque, n, level)


def isa_pic_new() -> ISAPic:
    """A fresh controller, all lines low."""
    return ISAPic()


def isa_pic_set_notify(pic: ISAPic, cb: Optional[IRQHandler], opaque: Any) -> None:
    """Install ``cb(opaque, n, level)``, called on every level change."""
    pic.notify = cb
    pic.notify_opaque = opaque


def isa_get_irq(pic: ISAPic, n: int) -> IRQState:
    """The input line ``n`` (0..15).  QEMU: isa_get_irq."""
    if not 0 <= n < 16:
        raise ValueError("ISA IRQ %d out of range 0..15" % n)
    return pic.irqs[n]


def pic_get_pending(pic: ISAPic) -> int:
    """The lowest-numbered raised line, or -1 when none is raised."""
    for n, level in enumerate(pic.levels):
        if level:
            return n
    return -1


def pic_get_level(pic: ISAPic, n: int) -> int:
    """The current level of line ``n``."""
    return pic.levels[n]
