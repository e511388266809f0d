"""The virtio-blk device: ``VirtIOBlock`` (host features, the config
space with the geometry and ``wce``, status, reset), the queue's notify
handler ``virtio_blk_handle_output``, and ``virtio_blk_dma_restart_bh``
(the parked requests decoded again when the VM resumes).  Requests,
merging and completion are virtio_blk.py's, below this module.

DRIVER_OK without CONFIG_WCE sets the write cache from the WCE feature.

Must not import: gqemu.kvm or anything above hw.
QEMU: hw/block/virtio-blk.c (virtio_blk_device_realize,
virtio_blk_update_config, virtio_blk_set_config, virtio_blk_set_status,
virtio_blk_reset, virtio_blk_dma_restart_bh, virtio_blk_handle_output).
"""
from __future__ import annotations

import struct
from typing import Any, Optional

from gqemu.block.blk_error import blk_add_resume_handler
from gqemu.block.block_backend import (blk_enable_write_cache, blk_is_read_only,
                                       blk_nb_sectors, blk_set_enable_write_cache)
from gqemu.block.block_int import BDRV_REQUEST_MAX_SECTORS
from gqemu.hw.virtio.virtio import (VIRTIO_CONFIG_S_DRIVER_OK, VirtIODevice, VirtQueue,
                                    virtio_add_queue)
from gqemu.hw.virtio.virtio_blk import (BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_RO,
                                        VIRTIO_BLK_F_WCE, MultiReqBuffer, VirtIOBlockReq,
                                        virtio_blk_handle_request, virtio_blk_handle_vq,
                                        virtio_blk_submit_multireq)

__all__ = ["VirtIOBlock", "virtio_blk_handle_output", "virtio_blk_dma_restart_bh"]

VIRTIO_ID_BLOCK = 2
QUEUE_SIZE = 256
# QEMU 7.2 host features (legacy): SEG_MAX, GEOMETRY, BLK_SIZE, SCSI, FLUSH,
# TOPOLOGY, CONFIG_WCE, DISCARD, WRITE_ZEROES (the transport adds its own)
VIRTIO_BLK_HOST_FEATURES = sum(1 << b for b in (2, 4, 6, 7, 9, 10, 11, 13, 14))
CONFIG_LEN = 57                      # up to write_zeroes_may_unmap


class VirtIOBlock(VirtIODevice):
    """QEMU: VirtIOBlock."""

    def __init__(self, blk: Any, geometry: tuple[int, int, int], ctx: Any) -> None:
        super().__init__("virtio-blk", VIRTIO_ID_BLOCK, CONFIG_LEN, lambda: None)  # type: ignore
        self.blk = blk
        self.ctx = ctx
        self.geometry = geometry
        self.serial = b""
        self.host_features = VIRTIO_BLK_HOST_FEATURES
        if blk_is_read_only(blk):
            self.host_features |= 1 << VIRTIO_BLK_F_RO
        self.inflight: set[VirtIOBlockReq] = set()
        self.rq: Optional[VirtIOBlockReq] = None     # parked by a stop error policy
        self.original_wce = blk_enable_write_cache(blk)
        virtio_add_queue(self, QUEUE_SIZE, virtio_blk_handle_output)
        blk_add_resume_handler(blk, virtio_blk_dma_restart_bh, self)

    def get_config(self) -> None:
        """QEMU: virtio_blk_update_config."""
        cyls, heads, secs = self.geometry
        maxs = BDRV_REQUEST_MAX_SECTORS
        self.config[:] = struct.pack(
            "<QIIHBBIBBHIBBHIIIIIB", blk_nb_sectors(self.blk), 0, QUEUE_SIZE - 2,
            cyls & 0xFFFF, heads, secs, BLK_SIZE, 0, 0, 0, 0,
            1 if blk_enable_write_cache(self.blk) else 0, 0, 1,
            maxs, 1, 1, maxs, 1, 1)[:CONFIG_LEN]

    def set_status_hook(self, val: int) -> None:
        """DRIVER_OK from a driver without CONFIG_WCE: the write cache
        follows the WCE (FLUSH) feature it acked, so a driver that acks
        neither gets writethrough (config ``wce`` reads 0) until a reset.
        QEMU: virtio_blk_set_status."""
        if val & VIRTIO_CONFIG_S_DRIVER_OK and not self.has_feature(VIRTIO_BLK_F_CONFIG_WCE):
            blk_set_enable_write_cache(self.blk, self.has_feature(VIRTIO_BLK_F_WCE))

    def set_config(self, addr: int, size: int) -> None:
        """Only ``wce`` (offset 32) is writable.  QEMU: virtio_blk_set_config."""
        blk_set_enable_write_cache(self.blk, self.config[32] != 0)

    def reset_hook(self) -> None:
        """QEMU: virtio_blk_reset: drain the requests in flight (outside a
        loop poll; from inside one their completions are dropped), then the
        original write cache mode."""
        from gqemu.aio import aio_wait_while
        if self.inflight and getattr(self.ctx, "poll_depth", 1) == 0:
            aio_wait_while(self.ctx, lambda: bool(self.inflight))
        for req in self.inflight:
            req.orphaned = True
        self.inflight = set()
        self.rq = None          # parked requests are dropped (QEMU: after the drain)
        blk_set_enable_write_cache(self.blk, self.original_wce)


def virtio_blk_dma_restart_bh(s: "VirtIOBlock") -> None:
    """The VM resumed: decode and submit the parked requests again.
    Context: loop (a BH).  QEMU: virtio_blk_dma_restart_bh."""
    req = s.rq
    s.rq = None
    mrb = MultiReqBuffer()
    while req is not None:
        nxt = req.next
        req.next = None
        if virtio_blk_handle_request(req, mrb):
            break               # the device is broken: the rest is dropped
        req = nxt
    if mrb.reqs:
        virtio_blk_submit_multireq(s, mrb)


def virtio_blk_handle_output(vdev: VirtIODevice, vq: VirtQueue) -> None:
    """The queue's notify handler.  QEMU: virtio_blk_handle_output."""
    assert isinstance(vdev, VirtIOBlock)
    virtio_blk_handle_vq(vdev, vq)
