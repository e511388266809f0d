"""The virtio device core: VirtIODevice, VirtQueue, status, reset, config.

``virtio_error`` reports on stderr and marks the device broken: it handles
nothing more until a reset (legacy devices have no NEEDS_RESET bit).  The
rings themselves are in ``vring.py``.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/virtio/virtio.c.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

from gqemu.hw.memory import AddressSpace
from gqemu.hw.virtio.trace_events import trace_virtio_queue_notify, trace_virtio_set_status

VIRTIO_F_NOTIFY_ON_EMPTY = 24
VIRTIO_F_ANY_LAYOUT = 27
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_F_BAD_FEATURE = 30
VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT = 1, 2, 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1
VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK = 1, 2, 4
VIRTIO_CONFIG_S_FEATURES_OK = 8
VIRTIO_QUEUE_MAX = 1024
VIRTIO_NO_VECTOR = 0xFFFF
VIRTQUEUE_MAX_SIZE = 1024
VIRTIO_PCI_VRING_ALIGN = 4096
U16 = 0xFFFF


class VirtQueueElement:
    """One popped chain: its head ``index`` and the mapped buffers (lists
    of ``(guest address, memoryview)``)."""

    __slots__ = ("index", "out_sg", "in_sg")

    def __init__(self, index: int, out_sg: list, in_sg: list) -> None:
        self.index = index
        self.out_sg = out_sg
        self.in_sg = in_sg


class VirtQueue:
    """QEMU: VirtQueue (split ring)."""

    def __init__(self, vdev: "VirtIODevice", n: int, num: int,
                 handle_output: Optional[Callable[["VirtIODevice", "VirtQueue"], None]]) -> None:
        self.vdev = vdev
        self.queue_index = n
        self.num_default = num
        self.handle_output = handle_output
        self.reset()

    def reset(self) -> None:
        self.num = self.num_default
        self.desc = self.avail = self.used = 0
        self.last_avail_idx = 0
        self.shadow_avail_idx = 0
        self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.notification = True
        self.inuse = 0
        self.vector = VIRTIO_NO_VECTOR


class VirtIODevice:
    """QEMU: VirtIODevice.  ``dma_as`` is a callable giving the address
    space the device sees now; ``notify_vector()`` is the transport's
    interrupt update (legacy: INTx = ISR bit 0)."""

    def __init__(self, name: str, device_id: int, config_len: int,
                 dma_as: Callable[[], AddressSpace]) -> None:
        self.name = name
        self.device_id = device_id
        self.config_len = config_len
        self.config = bytearray(config_len)
        self.dma_as = dma_as
        self.host_features = 0
        self.guest_features = 0
        self.status = 0
        self.isr = 0
        self.queue_sel = 0
        self.broken = False
        self.disabled = False           # bus mastering off (virtio_set_disabled)
        self.started = False
        self.config_vector = VIRTIO_NO_VECTOR
        self.queue_vectors: dict[int, int] = {}    # MSI-X vectors of queues not modelled
        self.vq: list[VirtQueue] = []
        self.notify_vector: Callable[[], None] = lambda: None
        self.error_log: list[str] = []

    # -- device hooks
    def get_config(self) -> None:
        """Refresh ``self.config``."""

    def set_status_hook(self, val: int) -> None:
        """Called before the status changes."""

    def reset_hook(self) -> None:
        """Device-specific reset (before the queues are cleared)."""

    def set_config(self, addr: int, size: int) -> None:
        """The driver wrote ``size`` bytes of ``self.config`` at ``addr``."""

    def bad_features(self) -> int:
        return 0

    def has_feature(self, bit: int) -> bool:
        return bool(self.guest_features >> bit & 1)


def virtio_add_queue(vdev: VirtIODevice, num: int,
                     handle_output: Callable[[VirtIODevice, VirtQueue], None]) -> VirtQueue:
    vq = VirtQueue(vdev, len(vdev.vq), num, handle_output)
    vdev.vq.append(vq)
    return vq


def virtio_error(vdev: VirtIODevice, msg: str) -> None:
    """Report on stderr and mark the device broken (legacy: no NEEDS_RESET
    status bit).  QEMU: virtio_error."""
    vdev.error_log.append(msg)
    sys.stderr.write("gqemu: %s\n" % msg)
    vdev.broken = True


def virtio_device_disabled(vdev: VirtIODevice) -> bool:
    """Broken, or bus mastering is off.  QEMU: virtio_device_disabled."""
    return vdev.broken or vdev.disabled


def virtio_queue_vector(vdev: VirtIODevice, n: int) -> int:
    """QEMU: virtio_queue_vector (every queue number below 1024 has one)."""
    if n < len(vdev.vq):
        return vdev.vq[n].vector
    return vdev.queue_vectors.get(n, VIRTIO_NO_VECTOR) if n < VIRTIO_QUEUE_MAX \
        else VIRTIO_NO_VECTOR


def virtio_queue_set_vector(vdev: VirtIODevice, n: int, vector: int) -> None:
    """QEMU: virtio_queue_set_vector."""
    if n < len(vdev.vq):
        vdev.vq[n].vector = vector
    elif n < VIRTIO_QUEUE_MAX:
        vdev.queue_vectors[n] = vector


# ------------------------------------------------------------ status

def virtio_set_status(vdev: VirtIODevice, val: int) -> None:
    """QEMU: virtio_set_status (legacy)."""
    if trace_virtio_set_status.enabled:
        trace_virtio_set_status(vdev, val)
    if (vdev.status ^ val) & VIRTIO_CONFIG_S_DRIVER_OK:
        vdev.started = bool(val & VIRTIO_CONFIG_S_DRIVER_OK)
    vdev.set_status_hook(val)
    vdev.status = val & 0xFF


def virtio_set_features(vdev: VirtIODevice, val: int) -> bool:
    """Ignored once the status has FEATURES_OK (8), which a legacy driver
    can write too.  Returns whether the features were set (the caller then
    checks the rings again if EVENT_IDX grew them: vring.py's
    ``virtio_features_changed``).  QEMU: virtio_set_features +
    virtio_set_features_nocheck."""
    if vdev.status & VIRTIO_CONFIG_S_FEATURES_OK:
        return False
    vdev.guest_features = val & vdev.host_features & 0xFFFFFFFF
    return True


def virtio_reset(vdev: VirtIODevice) -> None:
    """QEMU: virtio_reset."""
    virtio_set_status(vdev, 0)
    vdev.reset_hook()
    vdev.started = False
    vdev.broken = False
    vdev.guest_features = 0
    vdev.queue_sel = 0
    vdev.status = 0
    vdev.disabled = False
    vdev.isr = 0
    vdev.config_vector = VIRTIO_NO_VECTOR
    vdev.notify_vector()
    vdev.queue_vectors.clear()
    for vq in vdev.vq:
        vq.reset()


def virtio_queue_notify(vdev: VirtIODevice, n: int) -> None:
    """The driver kicked queue ``n``.  QEMU: virtio_queue_notify."""
    vq = vdev.vq[n]
    if not vq.desc or vdev.broken:
        return
    if trace_virtio_queue_notify.enabled:
        trace_virtio_queue_notify(vdev, n, vq)
    if vq.handle_output is not None:
        vq.handle_output(vdev, vq)


def virtio_config_read(vdev: VirtIODevice, addr: int, size: int) -> int:
    """QEMU: virtio_config_readb/w/l (all ones past config_len)."""
    vdev.get_config()
    if addr + size > vdev.config_len:
        return 0xFFFFFFFF
    return int.from_bytes(vdev.config[addr:addr + size], "little")


def virtio_config_write(vdev: VirtIODevice, addr: int, val: int, size: int) -> None:
    """QEMU: virtio_config_writeb/w/l (a device with no writable config
    field keeps nothing)."""
    if addr + size > vdev.config_len:
        return
    vdev.config[addr:addr + size] = (val & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    vdev.set_config(addr, size)
