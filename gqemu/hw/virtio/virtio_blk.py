"""virtio-blk: one request queue of 256 entries over a BlockBackend.

A request is a chain: the 16-byte header (type u32, ioprio u32, sector
u64) readable, then data, then one writable status byte.  Types (QEMU 7.2
``virtio_blk_handle_request``; bit 31, BARRIER, is ignored): IN (0) and OUT
(1) read/write ``sector``; SCSI_CMD (2): IOERR with fewer than 2 readable
or 3 writable buffers, else UNSUPP (SG_IO refused by the drive) with 255
in the scsi inhdr; FLUSH (4); GET_ID (8) returns the serial (gqemu's
drives have none: one NUL byte); DISCARD (11) and WRITE_ZEROES (13) take a
16-byte segment {sector u64, num_sectors u32, flags u32}; anything else
completes with UNSUPP (2).  A range past the end, a length that is not a
multiple of 512 or more than BDRV_REQUEST_MAX_SECTORS complete with IOERR
(1).  A missing or short header is ``virtio_error``: the device is broken.

Reads and writes popped in one notify are collected in a MultiReqBuffer
(at most 32; a direction change submits) and ``virtio_blk_submit_multireq``
sorts them by sector and merges adjacent ones into one
``blk_aio_preadv/pwritev``; ``virtio_blk_rw_complete`` completes every
request of the merged one.  A completion writes the status byte, pushes the
used element (len = all device-writable bytes) and notifies (ISR, INTx).
An I/O error follows the drive's rerror/werror: ``ignore`` completes OK,
``report`` with IOERR, ``stop`` parks the request and pauses the VM; it is
decoded and submitted again when the VM resumes.

The device (``VirtIOBlock``: features, config, status, reset), the notify
handler and the restart on resume are virtio_blk_device.py's, above this
module (``VirtIOBlock`` is imported here for the type checker only).
Must not import: gqemu.hw.virtio.virtio_blk_device (at run time),
gqemu.kvm or anything above hw.
QEMU: hw/block/virtio-blk.c.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Optional

from gqemu.block.blk_error import (BLOCK_ERROR_ACTION_IGNORE, BLOCK_ERROR_ACTION_REPORT,
                                   BLOCK_ERROR_ACTION_STOP, blk_error_action,
                                   blk_get_error_action)
from gqemu.block.block_backend import (blk_aio_flush, blk_aio_ioctl, blk_aio_pdiscard,
                                       blk_aio_preadv, blk_aio_pwrite_zeroes, blk_aio_pwritev,
                                       blk_nb_sectors)
from gqemu.block.block_int import BDRV_REQ_MAY_UNMAP, BDRV_REQUEST_MAX_SECTORS
from gqemu.block.qiov import QEMUIOVector, qemu_iovec_add, qemu_iovec_concat
from gqemu.hw.virtio.trace_events import (trace_virtio_blk_handle_read,
                                          trace_virtio_blk_handle_write,
                                          trace_virtio_blk_req_complete,
                                          trace_virtio_blk_rw_complete,
                                          trace_virtio_blk_submit_multireq)
from gqemu.hw.dma import dma_memory_write
from gqemu.hw.virtio.virtio import VirtQueue, VirtQueueElement, virtio_error
from gqemu.hw.virtio.vring import (virtio_notify, virtio_queue_empty,
                                   virtio_queue_set_notification, virtqueue_detach_element,
                                   virtqueue_pop, virtqueue_push)

if TYPE_CHECKING:
    from gqemu.hw.virtio.virtio_blk_device import VirtIOBlock

VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_SCSI_CMD = 0, 1, 2
VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID = 4, 8
SG_IO = 0x2285
VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES = 11, 13
VIRTIO_BLK_T_BARRIER = 0x80000000
VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP = 0, 1, 2
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
VIRTIO_BLK_ID_BYTES = 20
VIRTIO_BLK_MAX_MERGE_REQS = 32
BLK_SIZE = 512
MAX_IOV = 1024                       # IOV_MAX: blk_get_max_iov
VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SCSI, VIRTIO_BLK_F_WCE, VIRTIO_BLK_F_CONFIG_WCE = 5, 7, 9, 11


class VirtIOBlockReq:
    """QEMU: VirtIOBlockReq."""

    __slots__ = ("dev", "vq", "elem", "type", "sector_num", "qiov", "in_len", "status_mv",
                 "mr_next", "orphaned", "next")

    def __init__(self, dev: "VirtIOBlock", vq: VirtQueue, elem: VirtQueueElement) -> None:
        self.dev = dev
        self.vq = vq
        self.elem = elem
        self.type = 0
        self.sector_num = 0
        self.qiov = QEMUIOVector()
        self.in_len = 0
        self.status_mv: Any = None
        self.mr_next: Optional[VirtIOBlockReq] = None
        self.orphaned = False
        self.next: Optional[VirtIOBlockReq] = None     # on VirtIOBlock.rq


class MultiReqBuffer:
    __slots__ = ("reqs", "is_write")

    def __init__(self) -> None:
        self.reqs: list[VirtIOBlockReq] = []
        self.is_write = False


# ------------------------------------------------------------- completion

def virtio_blk_req_complete(req: VirtIOBlockReq, status: int) -> None:
    """QEMU: virtio_blk_req_complete."""
    s = req.dev
    if trace_virtio_blk_req_complete.enabled:
        trace_virtio_blk_req_complete(s, req, status)
    s.inflight.discard(req)
    if req.orphaned:
        return
    req.status_mv[0] = status
    virtqueue_push(req.vq, req.elem, req.in_len)
    virtio_notify(s, req.vq)


def virtio_blk_handle_rw_error(req: VirtIOBlockReq, error: int, is_read: bool) -> bool:
    """Apply the drive's rerror/werror policy: ``stop`` parks the request
    on ``s.rq`` (retried by ``virtio_blk_dma_restart_bh`` when the VM
    resumes), ``report`` completes it with IOERR, ``ignore`` lets it
    complete OK.  Returns whether the caller must not complete it.
    QEMU: virtio_blk_handle_rw_error."""
    s = req.dev
    action = blk_get_error_action(s.blk, is_read, error)
    if action == BLOCK_ERROR_ACTION_STOP:
        # the next request of a merged chain is re-parsed from the ring on
        # restart: break the link, or it would complete twice
        req.mr_next = None
        req.next = s.rq
        s.rq = req
        s.inflight.discard(req)
    elif action == BLOCK_ERROR_ACTION_REPORT:
        virtio_blk_req_complete(req, VIRTIO_BLK_S_IOERR)
    blk_error_action(s.blk, action, is_read, error)
    return action != BLOCK_ERROR_ACTION_IGNORE


def virtio_blk_rw_complete(opaque: VirtIOBlockReq, ret: int) -> None:
    """Complete every request of a (merged) read or write.
    QEMU: virtio_blk_rw_complete."""
    nxt: Optional[VirtIOBlockReq] = opaque
    while nxt is not None:
        req = nxt
        nxt = req.mr_next
        if trace_virtio_blk_rw_complete.enabled:
            trace_virtio_blk_rw_complete(req.dev, req, ret)
        if ret and virtio_blk_handle_rw_error(req, -ret, not req.type & VIRTIO_BLK_T_OUT):
            continue
        virtio_blk_req_complete(req, VIRTIO_BLK_S_OK)


def virtio_blk_flush_complete(opaque: VirtIOBlockReq, ret: int) -> None:
    """QEMU: virtio_blk_flush_complete."""
    if ret and virtio_blk_handle_rw_error(opaque, -ret, False):
        return
    virtio_blk_req_complete(opaque, VIRTIO_BLK_S_OK)


def virtio_blk_discard_write_zeroes_complete(opaque: VirtIOBlockReq, ret: int) -> None:
    """QEMU: virtio_blk_discard_write_zeroes_complete."""
    if ret and virtio_blk_handle_rw_error(opaque, -ret, False):
        return
    virtio_blk_req_complete(opaque, VIRTIO_BLK_S_OK)


# ------------------------------------------------------------- submission

def submit_requests(s: VirtIOBlock, mrb: MultiReqBuffer, start: int, num_reqs: int) -> None:
    """QEMU: submit_requests."""
    head = mrb.reqs[start]
    qiov = head.qiov
    if num_reqs > 1:
        merged = QEMUIOVector()
        for mv in qiov.iov:
            qemu_iovec_add(merged, mv)
        for i in range(start + 1, start + num_reqs):
            r = mrb.reqs[i]
            qemu_iovec_concat(merged, r.qiov, 0, r.qiov.size)
            mrb.reqs[i - 1].mr_next = r
        qiov = merged
        if trace_virtio_blk_submit_multireq.enabled:
            trace_virtio_blk_submit_multireq(s, mrb, start, num_reqs, head.sector_num << 9,
                                             qiov.size, 1 if mrb.is_write else 0)
    if mrb.is_write:
        blk_aio_pwritev(s.blk, head.sector_num << 9, qiov, 0, virtio_blk_rw_complete, head)
    else:
        blk_aio_preadv(s.blk, head.sector_num << 9, qiov, 0, virtio_blk_rw_complete, head)


def virtio_blk_submit_multireq(s: VirtIOBlock, mrb: MultiReqBuffer) -> None:
    """Sort by sector, merge runs of adjacent requests.
    QEMU: virtio_blk_submit_multireq."""
    if len(mrb.reqs) == 1:
        submit_requests(s, mrb, 0, 1)
        mrb.reqs = []
        return
    max_transfer = BDRV_REQUEST_MAX_SECTORS << 9
    mrb.reqs.sort(key=lambda r: r.sector_num)
    start = num = niov = nb_sectors = sector_num = 0
    for i, req in enumerate(mrb.reqs):
        if num > 0 and (sector_num + nb_sectors != req.sector_num
                        or niov > MAX_IOV - req.qiov.niov
                        or req.qiov.size > max_transfer
                        or nb_sectors > (max_transfer - req.qiov.size) // 512):
            submit_requests(s, mrb, start, num)
            num = 0
        if num == 0:
            sector_num = req.sector_num
            nb_sectors = niov = 0
            start = i
        nb_sectors += req.qiov.size // 512
        niov += req.qiov.niov
        num += 1
    submit_requests(s, mrb, start, num)
    mrb.reqs = []


def virtio_blk_sect_range_ok(s: VirtIOBlock, sector: int, size: int) -> bool:
    """QEMU: virtio_blk_sect_range_ok."""
    nb = size >> 9
    if nb > BDRV_REQUEST_MAX_SECTORS or size % BLK_SIZE:
        return False
    total = blk_nb_sectors(s.blk)
    return not (sector > total or nb > total - sector)


def _gather(sg: list, n: int) -> bytes:
    out = bytearray()
    for _, mv in sg:
        if len(out) >= n:
            break
        out += mv[:n - len(out)]
    return bytes(out)


def _discard_front(sg: list, n: int) -> list:
    out = []
    for addr, mv in sg:
        if n >= len(mv):
            n -= len(mv)
            continue
        out.append((addr + n, mv[n:]))
        n = 0
    return out


def virtio_blk_handle_request(req: VirtIOBlockReq, mrb: MultiReqBuffer) -> int:
    """Decode one request; 0, or -1 after virtio_error.
    QEMU: virtio_blk_handle_request."""
    s = req.dev
    out_sg, in_sg = req.elem.out_sg, req.elem.in_sg
    if not out_sg or not in_sg:
        virtio_error(s, "virtio-blk missing headers")
        return -1
    hdr = _gather(out_sg, 16)
    if len(hdr) != 16:
        virtio_error(s, "virtio-blk request outhdr too short")
        return -1
    out_data = _discard_front(out_sg, 16)
    last_addr, last = in_sg[-1]
    if len(last) < 1:
        virtio_error(s, "virtio-blk request inhdr too short")
        return -1
    req.in_len = sum(len(mv) for _, mv in in_sg)
    req.status_mv = last[len(last) - 1:]
    in_data = in_sg[:-1] + ([(last_addr, last[:-1])] if len(last) > 1 else [])
    rtype, _, sector = struct.unpack("<IIQ", hdr)
    req.type = rtype
    kind = rtype & ~(VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER)
    s.inflight.add(req)
    if kind == VIRTIO_BLK_T_IN:
        is_write = bool(rtype & VIRTIO_BLK_T_OUT)
        req.sector_num = sector
        req.qiov = QEMUIOVector(mv for _, mv in (out_data if is_write else in_data))
        trace = trace_virtio_blk_handle_write if is_write else trace_virtio_blk_handle_read
        if trace.enabled:
            trace(s, req, sector, req.qiov.size // 512)
        if not virtio_blk_sect_range_ok(s, sector, req.qiov.size):
            virtio_blk_req_complete(req, VIRTIO_BLK_S_IOERR)
            return 0
        if mrb.reqs and (len(mrb.reqs) == VIRTIO_BLK_MAX_MERGE_REQS
                         or is_write != mrb.is_write):
            virtio_blk_submit_multireq(s, mrb)
        mrb.reqs.append(req)
        mrb.is_write = is_write
    elif kind == VIRTIO_BLK_T_SCSI_CMD:
        virtio_blk_handle_scsi(req)
    elif kind == VIRTIO_BLK_T_FLUSH:
        if mrb.is_write and mrb.reqs:
            virtio_blk_submit_multireq(s, mrb)
        blk_aio_flush(s.blk, virtio_blk_flush_complete, req)
    elif kind == VIRTIO_BLK_T_GET_ID:
        serial = s.serial + b"\0"
        size = min(len(serial), sum(len(mv) for _, mv in in_data), VIRTIO_BLK_ID_BYTES)
        pos = 0
        for _, mv in in_data:
            if pos >= size:
                break
            n = min(len(mv), size - pos)
            mv[:n] = serial[pos:pos + n]
            pos += n
        virtio_blk_req_complete(req, VIRTIO_BLK_S_OK)
    elif kind in (VIRTIO_BLK_T_DISCARD & ~1, VIRTIO_BLK_T_WRITE_ZEROES & ~1):
        out_len = sum(len(mv) for _, mv in out_data)
        if not rtype & VIRTIO_BLK_T_OUT or out_len > 16:
            virtio_blk_req_complete(req, VIRTIO_BLK_S_UNSUPP)
            return 0
        seg = _gather(out_data, 16)
        if len(seg) != 16:
            s.inflight.discard(req)
            virtio_error(s, "virtio-blk discard/write_zeroes header too short")
            return -1
        wz = (rtype & ~VIRTIO_BLK_T_BARRIER) == VIRTIO_BLK_T_WRITE_ZEROES
        status = virtio_blk_handle_discard_write_zeroes(req, seg, wz)
        if status != VIRTIO_BLK_S_OK:
            virtio_blk_req_complete(req, status)
    else:
        virtio_blk_req_complete(req, VIRTIO_BLK_S_UNSUPP)
    return 0


def _scsi_errors(req: VirtIOBlockReq) -> None:
    """255 in ``errors``, the first field of the virtio_scsi_inhdr the
    driver put in the second-to-last device-writable buffer ("anything
    nonzero, so that the ioctl fails in the guest")."""
    addr = req.elem.in_sg[-2][0]
    dma_memory_write(req.dev.dma_as(), addr, struct.pack("<I", 255), 4)


def virtio_blk_ioctl_complete(opaque: VirtIOBlockReq, ret: int) -> None:
    """QEMU: virtio_blk_ioctl_complete (gqemu's block drivers have no
    ioctl: ``ret`` is always -ENOTSUP)."""
    status = VIRTIO_BLK_S_OK
    if ret:
        status = VIRTIO_BLK_S_UNSUPP
        _scsi_errors(opaque)
    virtio_blk_req_complete(opaque, status)


def virtio_blk_handle_scsi(req: VirtIOBlockReq) -> None:
    """VIRTIO_BLK_T_SCSI_CMD (legacy devices offer VIRTIO_BLK_F_SCSI): fewer
    than 2 readable or 3 writable buffers is IOERR; a bidirectional one is
    UNSUPP; otherwise SG_IO goes to the drive, which refuses it (UNSUPP,
    completed from a bottom half).  Both UNSUPP cases set the SCSI
    ``errors`` field to 255.  QEMU: virtio_blk_handle_scsi +
    virtio_blk_handle_scsi_req."""
    elem = req.elem
    if len(elem.out_sg) < 2 or len(elem.in_sg) < 3:
        virtio_blk_req_complete(req, VIRTIO_BLK_S_IOERR)
        return
    if not req.dev.host_features >> VIRTIO_BLK_F_SCSI & 1 or \
            (len(elem.out_sg) > 2 and len(elem.in_sg) > 3):
        _scsi_errors(req)
        virtio_blk_req_complete(req, VIRTIO_BLK_S_UNSUPP)
        return
    blk_aio_ioctl(req.dev.blk, SG_IO, None, virtio_blk_ioctl_complete, req)


def virtio_blk_handle_discard_write_zeroes(req: VirtIOBlockReq, seg: bytes, wz: bool) -> int:
    """QEMU: virtio_blk_handle_discard_write_zeroes."""
    s = req.dev
    sector, num, flags = struct.unpack("<QII", seg)
    if num > BDRV_REQUEST_MAX_SECTORS:
        return VIRTIO_BLK_S_IOERR
    nbytes = num << 9
    if not virtio_blk_sect_range_ok(s, sector, nbytes):
        return VIRTIO_BLK_S_IOERR
    if flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
        return VIRTIO_BLK_S_UNSUPP
    if wz:
        aflags = BDRV_REQ_MAY_UNMAP if flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP else 0
        blk_aio_pwrite_zeroes(s.blk, sector << 9, nbytes, aflags,
                              virtio_blk_discard_write_zeroes_complete, req)
    else:
        if flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP:
            return VIRTIO_BLK_S_UNSUPP
        blk_aio_pdiscard(s.blk, sector << 9, nbytes, virtio_blk_discard_write_zeroes_complete,
                         req)
    return VIRTIO_BLK_S_OK


def virtio_blk_handle_vq(s: VirtIOBlock, vq: VirtQueue) -> None:
    """Pop and decode every available request, then submit the collected
    reads/writes.  QEMU: virtio_blk_handle_vq."""
    mrb = MultiReqBuffer()
    suppress = vq.notification
    while True:
        if suppress:
            virtio_queue_set_notification(vq, False)
        while True:
            elem = virtqueue_pop(vq)
            if elem is None:
                break
            req = VirtIOBlockReq(s, vq, elem)
            if virtio_blk_handle_request(req, mrb):
                virtqueue_detach_element(vq, elem, 0)
                break
        if suppress:
            virtio_queue_set_notification(vq, True)
        if virtio_queue_empty(vq):
            break
    if mrb.reqs:
        virtio_blk_submit_multireq(s, mrb)
