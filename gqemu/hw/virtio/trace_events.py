"""Trace events of virtio and virtio-blk, with QEMU 7.2's names and formats.

Must not import: anything in gqemu but ``gqemu.trace``.
QEMU: hw/virtio/trace-events, hw/block/trace-events.
"""
from __future__ import annotations

from gqemu.trace import trace_event

# hw/virtio/virtio.c
trace_virtqueue_fill = trace_event(
    "virtqueue_fill", "vq %p elem %p len %u idx %u")
trace_virtqueue_flush = trace_event("virtqueue_flush", "vq %p count %u")
trace_virtqueue_pop = trace_event(
    "virtqueue_pop", "vq %p elem %p in_num %u out_num %u")
trace_virtio_queue_notify = trace_event(
    "virtio_queue_notify", "vdev %p n %d vq %p")
trace_virtio_notify = trace_event("virtio_notify", "vdev %p vq %p")
trace_virtio_set_status = trace_event("virtio_set_status", "vdev %p val %u")

# hw/block/virtio-blk.c
trace_virtio_blk_req_complete = trace_event(
    "virtio_blk_req_complete", "vdev %p req %p status %d")
trace_virtio_blk_rw_complete = trace_event(
    "virtio_blk_rw_complete", "vdev %p req %p ret %d")
trace_virtio_blk_handle_write = trace_event(
    "virtio_blk_handle_write", "vdev %p req %p sector %u nsectors %u")
trace_virtio_blk_handle_read = trace_event(
    "virtio_blk_handle_read", "vdev %p req %p sector %u nsectors %u")
trace_virtio_blk_submit_multireq = trace_event(
    "virtio_blk_submit_multireq",
    "vdev %p mrb %p start %d num_reqs %d offset %u size %u is_write %d")
