"""Trace events of the KVM layer (QEMU's names and formats where it has them).

Must not import: anything in gqemu but ``gqemu.trace``.
QEMU: accel/kvm/trace-events, softmmu/trace-events.
"""
from __future__ import annotations

from gqemu.trace import trace_event

trace_kvm_vcpu_ioctl = trace_event("kvm_vcpu_ioctl", "cpu_index %d, type 0x%x, arg %p")
trace_kvm_run_exit = trace_event("kvm_run_exit", "cpu_index %d, reason %d")
trace_kvm_set_irq = trace_event("kvm_set_irq", "irq %d level %d")
trace_kvm_halt = trace_event("kvm_halt", "cpu_index %d")
trace_kvm_halt_wakeup = trace_event("kvm_halt_wakeup", "cpu_index %d")
# softmmu/trace-events (the run state)
trace_runstate_set = trace_event("runstate_set",
                                 "current_run_state %d (%s) new_state %d (%s)")
trace_vm_state_notify = trace_event("vm_state_notify", "running %d reason %d (%s)")
