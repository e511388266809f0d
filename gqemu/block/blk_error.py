"""The rerror/werror policy of a BlockBackend: which action an I/O error
gets (report, ignore, stop; enospc = stop only for ENOSPC), the QMP-style
BLOCK_IO_ERROR record, the I/O status, the stopped state and resume.

A ``stop`` marks the backend stopped and calls its stop handlers (the
machine pauses the VM there); the device keeps the failed request.
``blk_resume`` clears the state and then, from a bottom half, calls the
resume handlers, where the device retries the request (QEMU: vm_start ->
ide_restart_cb -> ide_restart_bh).

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/block-backend.c (blk_get_error_action, blk_error_action,
blk_iostatus_*), cpus.c (vm_stop/vm_start on io-error).
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable

from gqemu.aio import aio_bh_schedule_oneshot
from gqemu.block.block_backend import BlockBackend
from gqemu.block.drive_opts import (BLOCKDEV_ON_ERROR_ENOSPC, BLOCKDEV_ON_ERROR_IGNORE,
                                    BLOCKDEV_ON_ERROR_REPORT, BLOCKDEV_ON_ERROR_STOP)

__all__ = ["BLOCK_ERROR_ACTION_IGNORE", "BLOCK_ERROR_ACTION_REPORT",
           "BLOCK_ERROR_ACTION_STOP", "BLOCK_DEVICE_IO_STATUS_OK",
           "BLOCK_DEVICE_IO_STATUS_FAILED", "BLOCK_DEVICE_IO_STATUS_NOSPACE",
           "blk_get_error_action", "blk_error_action", "blk_iostatus_reset",
           "blk_iostatus_set_err", "blk_add_stop_handler", "blk_add_resume_handler",
           "blk_is_stopped", "blk_resume", "blk_set_on_error"]

# QAPI BlockErrorAction
BLOCK_ERROR_ACTION_IGNORE = 0
BLOCK_ERROR_ACTION_REPORT = 1
BLOCK_ERROR_ACTION_STOP = 2
_ACTION_NAMES = ("ignore", "report", "stop")
_POLICY_NAMES = {BLOCKDEV_ON_ERROR_REPORT: "report", BLOCKDEV_ON_ERROR_IGNORE: "ignore",
                 BLOCKDEV_ON_ERROR_ENOSPC: "enospc", BLOCKDEV_ON_ERROR_STOP: "stop"}

# QAPI BlockDeviceIoStatus
BLOCK_DEVICE_IO_STATUS_OK = 0
BLOCK_DEVICE_IO_STATUS_FAILED = 1
BLOCK_DEVICE_IO_STATUS_NOSPACE = 2


def blk_set_on_error(blk: BlockBackend, on_read_error: int, on_write_error: int) -> None:
    """QEMU: blk_set_on_error."""
    blk.on_read_error = on_read_error
    blk.on_write_error = on_write_error


def blk_get_error_action(blk: BlockBackend, is_read: bool, error: int) -> int:
    """The action for an error (errno, either sign) on a read or write.
    QEMU: blk_get_error_action."""
    error = abs(error)
    on_err = blk.on_read_error if is_read else blk.on_write_error
    if on_err == BLOCKDEV_ON_ERROR_ENOSPC:
        return BLOCK_ERROR_ACTION_STOP if error == errno.ENOSPC else BLOCK_ERROR_ACTION_REPORT
    if on_err == BLOCKDEV_ON_ERROR_STOP:
        return BLOCK_ERROR_ACTION_STOP
    if on_err == BLOCKDEV_ON_ERROR_REPORT:
        return BLOCK_ERROR_ACTION_REPORT
    if on_err == BLOCKDEV_ON_ERROR_IGNORE:
        return BLOCK_ERROR_ACTION_IGNORE
    raise AssertionError("unresolved error policy %d" % on_err)   # 'auto': QEMU aborts


def blk_iostatus_set_err(blk: BlockBackend, error: int) -> None:
    """Only the first error sticks.  QEMU: blk_iostatus_set_err."""
    if blk.iostatus_enabled and blk.iostatus == BLOCK_DEVICE_IO_STATUS_OK:
        blk.iostatus = (BLOCK_DEVICE_IO_STATUS_NOSPACE if abs(error) == errno.ENOSPC
                        else BLOCK_DEVICE_IO_STATUS_FAILED)


def blk_iostatus_reset(blk: BlockBackend) -> None:
    """QEMU: blk_iostatus_reset."""
    blk.iostatus = BLOCK_DEVICE_IO_STATUS_OK


def blk_error_action(blk: BlockBackend, action: int, is_read: bool, error: int) -> None:
    """Record a BLOCK_IO_ERROR event; for STOP also set the I/O status,
    mark the backend stopped and call the stop handlers.
    QEMU: blk_error_action (+ qemu_system_vmstop_request(RUN_STATE_IO_ERROR))."""
    error = abs(error)
    on_err = blk.on_read_error if is_read else blk.on_write_error
    blk.io_error_events.append({
        "event": "BLOCK_IO_ERROR", "device": blk.name,
        "operation": "read" if is_read else "write",
        "action": _ACTION_NAMES[action], "nospace": error == errno.ENOSPC,
        "reason": os.strerror(error),
        # gqemu: what QEMU's event leaves out but a one-line report needs
        "errno": error,
        "policy": "%s=%s" % ("rerror" if is_read else "werror",
                             _POLICY_NAMES.get(on_err, str(on_err)))})
    if action == BLOCK_ERROR_ACTION_STOP:
        blk_iostatus_set_err(blk, error)
        blk.stopped = True
        for cb, opaque in list(blk.stop_handlers):
            cb(opaque, blk)


def blk_is_stopped(blk: BlockBackend) -> bool:
    """Whether a ``stop`` error paused this backend (QEMU's runstate
    ``io-error``)."""
    return blk.stopped


def blk_add_stop_handler(blk: BlockBackend, cb: Callable[[Any, Any], Any],
                         opaque: Any) -> None:
    """``cb(opaque, blk)`` runs when an error action stops the backend."""
    blk.stop_handlers.append((cb, opaque))


def blk_add_resume_handler(blk: BlockBackend, cb: Callable[[Any], Any],
                           opaque: Any) -> None:
    """``cb(opaque)`` runs from a bottom half after ``blk_resume``: the
    device retries its failed request there.  QEMU: ide_restart_cb."""
    blk.resume_handlers.append((cb, opaque))


def _resume_bh(blk: BlockBackend) -> None:
    for cb, opaque in list(blk.resume_handlers):
        cb(opaque)


def blk_resume(blk: BlockBackend) -> None:
    """Leave the stopped state (QMP ``cont``): reset the I/O status and let
    the devices retry from a bottom half.  QEMU: vm_start -> restart BHs."""
    if not blk.stopped:
        return
    blk.stopped = False
    blk_iostatus_reset(blk)
    aio_bh_schedule_oneshot(blk.ctx, _resume_bh, blk)
