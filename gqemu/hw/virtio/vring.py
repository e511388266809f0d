"""Split virtqueues in guest RAM (legacy layout): mapping, pop, push, notify.

A queue of ``num`` entries at guest-physical ``desc`` (the legacy PFN << 12)
has the descriptor table (16 bytes each: addr u64, len u32, flags u16,
next u16), then the available ring at ``desc + 16 * num`` (flags, idx,
ring[num], used_event), then, aligned to 4096, the used ring (flags, idx,
{id u32, len u32}[num], avail_event).  All little-endian (x86 guest).

``virtqueue_pop`` walks one chain as QEMU 7.2's ``virtqueue_split_pop``: a
head >= num, a ``next`` >= the table size, more than table-size entries (a
loop), a zero-length or unmappable buffer, more than 1024 buffers, a
readable buffer after a writable one, a bad indirect table, or
``inuse == num`` elements outstanding call ``virtio_error``.  Work per pop
is bounded by 1024 descriptors; a notify pops at most 65535 chains (the
avail index is 16 bits, and the guest cannot move it while the exit is
handled).

Buffers are mapped as views of guest RAM through the device's DMA address
space (``dma_as()``: empty while PCI bus mastering is off), so the block
layer reads and writes guest memory directly, as QEMU's iovecs do.  A
buffer not wholly in RAM is an error (QEMU would bounce one MMIO page).

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/virtio/virtio.c.
"""
from __future__ import annotations

import struct
from typing import Optional

from gqemu.hw.dma import dma_memory_read, dma_memory_write
from gqemu.hw.memory import AddressSpace
from gqemu.hw.virtio.trace_events import (trace_virtio_notify, trace_virtqueue_fill,
                                          trace_virtqueue_flush, trace_virtqueue_pop)
from gqemu.hw.virtio.virtio import (U16, VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_PCI_VRING_ALIGN,
                                    VIRTIO_RING_F_EVENT_IDX, VIRTQUEUE_MAX_SIZE,
                                    VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
                                    VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
                                    VRING_USED_F_NO_NOTIFY, VirtIODevice, VirtQueue,
                                    VirtQueueElement, virtio_device_disabled, virtio_error)

# ------------------------------------------------------------ guest memory

def _ld(vdev: VirtIODevice, addr: int, fmt: str) -> int:
    buf = bytearray(struct.calcsize(fmt))
    dma_memory_read(vdev.dma_as(), addr, buf, len(buf))
    return int(struct.unpack("<" + fmt, buf)[0])


def _st(vdev: VirtIODevice, addr: int, fmt: str, val: int) -> None:
    data = struct.pack("<" + fmt, val)
    dma_memory_write(vdev.dma_as(), addr, data, len(data))


def dma_memory_map(as_: AddressSpace, addr: int, length: int) -> Optional[list]:
    """Views of guest RAM covering ``[addr, addr + length)``, or None if any
    part is not RAM.  QEMU: dma_memory_map (without the bounce buffer)."""
    out = []
    while length > 0:
        if addr >= 1 << 64:
            return None
        fr = as_.lookup(addr)
        ram = fr.mr.ram
        if ram is None or not fr.start <= addr < fr.end:
            return None
        n = min(length, fr.end - addr)
        off = addr - fr.start + fr.offset_in_region
        out.append((addr, memoryview(ram)[off:off + n]))
        addr += n
        length -= n
    return out


def address_space_cache_len(as_: AddressSpace, addr: int, length: int) -> int:
    """How much of ``[addr, addr + length)`` one cache covers: RAM as far
    as RAM goes on, an I/O region to its end, a hole (nothing mapped, or a
    device with bus mastering off) all of it.  QEMU:
    address_space_cache_init."""
    fr = as_.lookup(addr)
    mr = fr.mr
    if mr.ram is None:
        if mr.ops is None or mr.name == "unassigned" or not fr.start <= addr < fr.end:
            return length
        return min(length, fr.end - addr)
    n = 0
    while n < length and fr.mr.ram is not None and fr.start <= addr + n < fr.end:
        n = fr.end - addr
        fr = as_.lookup(fr.end)
    return min(n, length)


def vring_avail_idx(vq: VirtQueue) -> int:
    vq.shadow_avail_idx = _ld(vq.vdev, vq.avail + 2, "H")
    return vq.shadow_avail_idx


def _avail_size(vq: VirtQueue) -> int:
    return 4 + 2 * vq.num + (2 if vq.vdev.has_feature(VIRTIO_RING_F_EVENT_IDX) else 0)


def _used_size(vq: VirtQueue) -> int:
    return 4 + 8 * vq.num + (2 if vq.vdev.has_feature(VIRTIO_RING_F_EVENT_IDX) else 0)


def virtio_init_region_cache(vdev: VirtIODevice, n: int) -> None:
    """Check that each ring lies in one piece of what the device sees: RAM
    that ends inside a ring is an error, a ring in a hole is not (its
    reads give 0, its writes vanish).  QEMU: virtio_init_region_cache (its
    "Cannot map ..." errors)."""
    vq = vdev.vq[n]
    if not vq.desc:
        return
    as_ = vdev.dma_as()
    for what, addr, size in (("desc", vq.desc, 16 * vq.num), ("used", vq.used, _used_size(vq)),
                             ("avail", vq.avail, _avail_size(vq))):
        if address_space_cache_len(as_, addr, size) < size:
            virtio_error(vdev, "Cannot map %s" % what)
            return


def virtio_queue_set_addr(vdev: VirtIODevice, n: int, addr: int) -> None:
    """Legacy: the whole ring from one address.  QEMU: virtio_queue_set_addr
    + virtio_queue_update_rings."""
    vq = vdev.vq[n]
    if not vq.num:
        return
    vq.desc = addr
    vq.avail = addr + 16 * vq.num
    end = vq.avail + 4 + 2 * vq.num
    vq.used = (end + VIRTIO_PCI_VRING_ALIGN - 1) & ~(VIRTIO_PCI_VRING_ALIGN - 1)
    virtio_init_region_cache(vdev, n)


def virtio_features_changed(vdev: VirtIODevice) -> None:
    """EVENT_IDX negotiated: the rings grew by their event words, check
    them again.  QEMU: the loop at the end of virtio_set_features."""
    if vdev.has_feature(VIRTIO_RING_F_EVENT_IDX):
        for vq in vdev.vq:
            if vq.num:
                virtio_init_region_cache(vdev, vq.queue_index)


def virtio_memory_changed(vdev: VirtIODevice) -> None:
    """The DMA address space changed (bus mastering toggled): re-check every
    live ring.  QEMU: virtio_memory_listener_commit."""
    for vq in vdev.vq:
        if vq.num and vq.desc:
            virtio_init_region_cache(vdev, vq.queue_index)



# ------------------------------------------------------------ the ring

def virtio_queue_empty(vq: VirtQueue) -> bool:
    """QEMU: virtio_queue_split_empty."""
    if virtio_device_disabled(vq.vdev) or not vq.avail:
        return True
    if vq.shadow_avail_idx != vq.last_avail_idx:
        return False
    return vring_avail_idx(vq) == vq.last_avail_idx


def virtio_queue_set_notification(vq: VirtQueue, enable: bool) -> None:
    """QEMU: virtio_queue_set_notification (split)."""
    vq.notification = enable
    if not vq.desc:
        return
    if vq.vdev.has_feature(VIRTIO_RING_F_EVENT_IDX):
        _st(vq.vdev, vq.used + 4 + 8 * vq.num, "H", vring_avail_idx(vq))
    else:
        flags = _ld(vq.vdev, vq.used, "H")
        flags = flags & ~VRING_USED_F_NO_NOTIFY if enable else flags | VRING_USED_F_NO_NOTIFY
        _st(vq.vdev, vq.used, "H", flags & U16)


def _desc_read(vdev: VirtIODevice, table: int, i: int) -> tuple[int, int, int, int]:
    buf = bytearray(16)
    dma_memory_read(vdev.dma_as(), table + 16 * i, buf, 16)
    return struct.unpack("<QIHH", buf)  # type: ignore[return-value]


def _map_desc(vdev: VirtIODevice, sg: list, addr: int, length: int, limit: int) -> bool:
    """Append the views of one buffer to ``sg`` (at most ``limit`` pieces in
    all).  QEMU: virtqueue_map_desc."""
    if not length:
        virtio_error(vdev, "virtio: zero sized buffers are not allowed")
        return False
    views = dma_memory_map(vdev.dma_as(), addr, length)
    if views is None:
        virtio_error(vdev, "virtio: bogus descriptor or out of resources")
        return False
    if len(sg) + len(views) > limit:
        virtio_error(vdev, "virtio: too many write descriptors in indirect table")
        return False
    sg.extend(views)
    return True


def virtqueue_pop(vq: VirtQueue) -> Optional[VirtQueueElement]:
    """The next available chain, or None (empty or error).
    QEMU: virtqueue_split_pop."""
    vdev = vq.vdev
    if virtio_device_disabled(vdev) or virtio_queue_empty(vq):
        return None
    if vq.inuse >= vq.num:
        virtio_error(vdev, "Virtqueue size exceeded")
        return None
    head = _ld(vdev, vq.avail + 4 + 2 * (vq.last_avail_idx % vq.num), "H")
    vq.last_avail_idx = (vq.last_avail_idx + 1) & U16
    if head >= vq.num:
        virtio_error(vdev, "Guest says index %u is available" % head)
        return None
    if vdev.has_feature(VIRTIO_RING_F_EVENT_IDX):
        _st(vdev, vq.used + 4 + 8 * vq.num, "H", vq.last_avail_idx)
    table, max_ = vq.desc, vq.num
    addr, length, flags, nxt = _desc_read(vdev, table, head)
    if flags & VRING_DESC_F_INDIRECT:
        if not length or length % 16:
            virtio_error(vdev, "Invalid size for indirect buffer table")
            return None
        if address_space_cache_len(vdev.dma_as(), addr, length) < length:
            virtio_error(vdev, "Cannot map indirect buffer")
            return None
        table, max_ = addr, length // 16
        addr, length, flags, nxt = _desc_read(vdev, table, 0)
    out_sg: list = []
    in_sg: list = []
    entries = 0
    while True:
        if flags & VRING_DESC_F_WRITE:
            ok = _map_desc(vdev, in_sg, addr, length, VIRTQUEUE_MAX_SIZE - len(out_sg))
        else:
            if in_sg:
                virtio_error(vdev, "Incorrect order for descriptors")
                return None
            ok = _map_desc(vdev, out_sg, addr, length, VIRTQUEUE_MAX_SIZE)
        if not ok:
            return None
        entries += 1
        if entries > max_:
            virtio_error(vdev, "Looped descriptor")
            return None
        if not flags & VRING_DESC_F_NEXT:
            break
        if nxt >= max_:
            virtio_error(vdev, "Desc next is %u" % nxt)
            return None
        addr, length, flags, nxt = _desc_read(vdev, table, nxt)
    elem = VirtQueueElement(head, out_sg, in_sg)
    vq.inuse += 1
    if trace_virtqueue_pop.enabled:
        trace_virtqueue_pop(vq, elem, len(in_sg), len(out_sg))
    return elem


def virtqueue_detach_element(vq: VirtQueue, elem: VirtQueueElement, length: int) -> None:
    """QEMU: virtqueue_detach_element."""
    vq.inuse -= 1


def virtqueue_push(vq: VirtQueue, elem: VirtQueueElement, length: int) -> None:
    """Fill one used element and publish it.  QEMU: virtqueue_push."""
    vdev = vq.vdev
    if trace_virtqueue_fill.enabled:
        trace_virtqueue_fill(vq, elem, length, 0)
    elem.out_sg = elem.in_sg = []       # unmap
    if virtio_device_disabled(vdev) or not vq.used:
        vq.inuse -= 1
        return
    _st(vdev, vq.used + 4 + 8 * (vq.used_idx % vq.num), "I", elem.index)
    _st(vdev, vq.used + 8 + 8 * (vq.used_idx % vq.num), "I", length & 0xFFFFFFFF)
    if trace_virtqueue_flush.enabled:
        trace_virtqueue_flush(vq, 1)
    old = vq.used_idx
    new = vq.used_idx = (old + 1) & U16
    _st(vdev, vq.used + 2, "H", new)
    vq.inuse -= 1
    if ((new - vq.signalled_used) & U16) < ((new - old) & U16):
        vq.signalled_used_valid = False


def _should_notify(vdev: VirtIODevice, vq: VirtQueue) -> bool:
    """QEMU: virtio_split_should_notify."""
    if vdev.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY) and not vq.inuse and virtio_queue_empty(vq):
        return True
    if not vdev.has_feature(VIRTIO_RING_F_EVENT_IDX):
        return not _ld(vdev, vq.avail, "H") & VRING_AVAIL_F_NO_INTERRUPT
    v = vq.signalled_used_valid
    vq.signalled_used_valid = True
    old = vq.signalled_used
    new = vq.signalled_used = vq.used_idx
    event = _ld(vdev, vq.avail + 4 + 2 * vq.num, "H")
    return not v or ((new - event - 1) & U16) < ((new - old) & U16)


def virtio_notify(vdev: VirtIODevice, vq: VirtQueue) -> None:
    """ISR bit 0 and the interrupt, unless the driver suppressed it.
    QEMU: virtio_notify + virtio_irq."""
    if not vq.avail or not _should_notify(vdev, vq):
        return
    if trace_virtio_notify.enabled:
        trace_virtio_notify(vdev, vq)
    vdev.isr |= 1
    vdev.notify_vector()
