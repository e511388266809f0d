"""IRQ lines and the ISA interrupt controller."""
from __future__ import annotations

import pytest

from gqemu.hw.irq import (isa_get_irq, isa_pic_new, isa_pic_set_notify,
                          pic_get_level, pic_get_pending, qemu_allocate_irq,
                          qemu_irq_lower, qemu_irq_pulse, qemu_irq_raise,
                          qemu_set_irq)


def test_set_irq_calls_handler_with_line_and_level():
    seen = []
    irq = qemu_allocate_irq(lambda o, n, lv: seen.append((o, n, lv)), "op", 3)
    qemu_set_irq(irq, 1)
    qemu_irq_lower(irq)
    qemu_irq_pulse(irq)
    assert seen == [("op", 3, 1), ("op", 3, 0), ("op", 3, 1), ("op", 3, 0)]
    qemu_set_irq(None, 1)        # an unconnected line is ignored


def test_pic_levels_and_notifier_on_changes_only():
    pic = isa_pic_new()
    seen = []
    isa_pic_set_notify(pic, lambda o, n, lv: seen.append((o, n, lv)), "cpu")
    assert pic_get_pending(pic) == -1
    qemu_irq_raise(isa_get_irq(pic, 15))
    qemu_irq_raise(isa_get_irq(pic, 15))      # no change, no notification
    qemu_irq_raise(isa_get_irq(pic, 14))
    assert pic_get_pending(pic) == 14 and pic_get_level(pic, 15) == 1
    qemu_irq_lower(isa_get_irq(pic, 14))
    assert pic_get_pending(pic) == 15
    assert seen == [("cpu", 15, 1), ("cpu", 14, 1), ("cpu", 14, 0)]
    assert pic.raised_count[15] == 1
    with pytest.raises(ValueError):
        isa_get_irq(pic, 16)
