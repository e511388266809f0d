"""The decoded exit records (kvm/exits.py) keep what frozen dataclasses gave
them: equality and hashing by value, no assignment, a readable repr."""
from __future__ import annotations

import pytest

from gqemu.kvm.exits import (KVM_EXIT_IO, KVM_EXIT_IO_OUT, ExitHLT, ExitInternalError,
                             ExitIO, ExitMMIO, ExitShutdown, KvmRun, exit_from_run)


def test_records_compare_and_hash_by_value_and_cannot_change():
    run = KvmRun()
    run.exit_reason, run.io_direction, run.io_size = KVM_EXIT_IO, KVM_EXIT_IO_OUT, 2
    run.io_port, run.io_count, run.data[:2] = 0x1F0, 1, b"\x34\x12"
    e = exit_from_run(run)
    assert e == ExitIO(KVM_EXIT_IO_OUT, 2, 0x1F0, 1, b"\x34\x12") and e.value == 0x1234
    assert hash(e) == hash(ExitIO(KVM_EXIT_IO_OUT, 2, 0x1F0, 1, b"\x34\x12"))
    assert e != ExitIO(KVM_EXIT_IO_OUT, 2, 0x1F1, 1, b"\x34\x12")
    assert ExitHLT() == ExitHLT() and ExitHLT() != ExitShutdown()
    assert ExitMMIO(0xFEE00000, 1, 4, 7) != ExitInternalError("x")
    assert repr(ExitInternalError("boom")) == "ExitInternalError(message='boom')"
    with pytest.raises(AttributeError):
        e.port = 0x170          # type: ignore[misc]
    with pytest.raises(AttributeError):
        e.other = 1             # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        ExitMMIO(1, 2, 3)       # type: ignore[call-arg]
