"""``blkdebug``: fault injection between a format and its file.

Filename ``blkdebug:CONFIG:IMAGE`` (CONFIG may be empty), or options
``config``, ``image`` (``x-image``), ``inject-error`` / ``set-state`` (lists
of dicts, or the dotted ``inject-error.0.event=...`` of --image-opts; see
blkdebug_config.py), ``align``, ``max-transfer``, ``opt-write-zero``,
``max-write-zero``, ``opt-discard``, ``max-discard``; ``image.KEY`` goes to
the image node (``image.filename`` names it).  Truncate goes to the image.  Rules as QEMU's: an event emitted by the driver above
(``BLKDBG_EVENT(bs.file, ev)``) makes that event's ``inject-error`` rules the
active list (when their ``state`` matches) and applies ``set-state``; the
next requests that match a rule's ``sector``/``iotype`` fail with
``-errno`` (after a trip through the loop unless ``immediately``); ``once``
removes the rule after its first hit.  The state machine starts at 1.
Breakpoints (qemu-io ``break``/``resume``/``wait_break``/``remove_break``):
``bdrv_debug_breakpoint(bs, event, tag)`` suspends the next request that
emits ``event`` until ``bdrv_debug_resume(bs, tag)``.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: block/blkdebug.c.
"""
from __future__ import annotations

import errno
import sys
from typing import Any, Callable

from gqemu.aio import aio_co_schedule, qemu_get_current_aio_context
from gqemu.block.blkdebug_config import (  # noqa: F401 (re-exported)
    BLKDEBUG_IO_TYPE_BLOCK_STATUS, BLKDEBUG_IO_TYPE_DISCARD, BLKDEBUG_IO_TYPE_FLUSH,
    BLKDEBUG_IO_TYPE_READ, BLKDEBUG_IO_TYPE_WRITE, BLKDEBUG_IO_TYPE_WRITE_ZEROES,
    BlkdebugRule, _dotted, add_rule, blkdebug_parse_config, config_parse_qdict)
from gqemu.block.blkdebug_events import BLKDBG_EVENT_NAMES, BLKDBG_NONE, blkdebug_event_by_name
from gqemu.block.block_int import BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RAW
from gqemu.block.driver import (BdrvChild, BlockDriver, BlockDriverState, BlockError,
                                bdrv_attach_child, bdrv_child_flags, bdrv_getlength,
                                bdrv_register, qemu_opt_size)
from gqemu.block.perms import bdrv_filter_default_perms
from gqemu.block.driver_open import bdrv_open
from gqemu.block.io import bdrv_co_preadv, bdrv_co_pwrite_zeroes, bdrv_co_pwritev
from gqemu.block.io_misc import bdrv_co_flush, bdrv_co_pdiscard
from gqemu.block.qiov import QEMUIOVector
from gqemu.block.trace_events import trace_blkdebug_debug_event, trace_blkdebug_inject_error
from gqemu.coroutine import (coroutine_fn, qemu_coroutine_enter, qemu_coroutine_self,
                             qemu_coroutine_yield, qemu_in_coroutine)

__all__ = ["BdrvBlkdebug", "BlkdebugRule", "blkdebug_parse_config", "blkdebug_set_output",
           "BLKDEBUG_IO_TYPE_READ", "BLKDEBUG_IO_TYPE_WRITE",
           "BLKDEBUG_IO_TYPE_WRITE_ZEROES", "BLKDEBUG_IO_TYPE_DISCARD",
           "BLKDEBUG_IO_TYPE_FLUSH", "BLKDEBUG_IO_TYPE_BLOCK_STATUS"]


def _stdout(text: str) -> Any:
    return sys.stdout.write(text)


def blkdebug_set_output(fn: Callable[[str], Any]) -> Callable[[str], Any]:
    """Where the "blkdebug: Suspended request 'tag'" lines of nodes in the
    current AioContext go (QEMU printf()s them to stdout; a tool passes its
    own writer).  Returns the old one."""
    ctx = qemu_get_current_aio_context()
    old, ctx.blkdebug_output = ctx.blkdebug_output or _stdout, fn
    return old


def _output(bs: BlockDriverState, text: str) -> None:
    (bs.aio_context.blkdebug_output or _stdout)(text)


@bdrv_register
class BdrvBlkdebug(BlockDriver):
    """QEMU: bdrv_blkdebug (BDRVBlkdebugState is this instance)."""

    format_name = "blkdebug"
    protocol_name = "blkdebug"
    is_filter = True

    def __init__(self) -> None:
        self.state = 1
        self.new_state = 1
        self.rules: list[list[BlkdebugRule]] = [[] for _ in BLKDBG_EVENT_NAMES]
        self.active_rules: list[BlkdebugRule] = []
        self.align = 0
        self.max_transfer = 0
        self.opt_write_zero = self.max_write_zero = 0
        self.opt_discard = self.max_discard = 0
        self.injected = 0
        self.config_file = ""
        self.strong_opts: dict = {}
        self.suspended_reqs: list[tuple[str, Any]] = []

    def blkdebug_open(self, bs: BlockDriverState, filename: str, options: dict,
                      flags: int) -> None:
        """Parse ``blkdebug:CONFIG:IMAGE``, read the rules, open the image.
        Raises BlockError.  QEMU: blkdebug_open."""
        # the options that make the node's name a json: one (all but the
        # config file and the image): QEMU: blkdebug_refresh_filename
        self.strong_opts = {}
        for k, v in options.items():
            if k not in ("config", "image", "x-image") and not k.startswith("image."):
                _dotted(k, v, self.strong_opts)       # as QEMU flattens them
        config = options.pop("config", None)
        image = options.pop("image", None) or options.pop("x-image", None)
        if filename.startswith("blkdebug:"):
            rest = filename[len("blkdebug:"):]
            if ":" not in rest:
                raise BlockError(errno.EINVAL, "blkdebug requires both config file "
                                 "and image path")
            conf, image_name = rest.split(":", 1)
            config = config or conf or None
            image = image or image_name
        elif filename and not image:           # no prefix: the filename is the image's
            image = filename
        if not image and options.get("image.filename") \
                and options.get("image.driver", "file") == "file":
            # image.filename=... (image.driver=file): the image's file name,
            # not an option of its protocol node
            image = options.pop("image.filename")
            options.pop("image.driver", None)
        groups: list[tuple[str, dict]] = []
        if config:
            try:
                with open(str(config), encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                raise BlockError(e.errno or errno.EIO, "Could not read blkdebug config "
                                 "file: %s" % (e.strerror or "error")) from None
            groups = blkdebug_parse_config(text, str(config))
        self.config_file = str(config) if config else ""
        for kind in ("inject-error", "set-state"):
            groups.extend((kind, item) for item in config_parse_qdict(options, kind))
        for kind, opts in groups:
            rule = add_rule(kind, opts)
            self.rules[rule.event].insert(0, rule)
        self.align = qemu_opt_size(options, "align", 0) or 0
        if self.align and self.align & (self.align - 1):
            raise BlockError(errno.EINVAL, "Cannot meet constraints with align %d"
                             % self.align)
        self.max_transfer = qemu_opt_size(options, "max-transfer", 0) or 0
        self.opt_write_zero = qemu_opt_size(options, "opt-write-zero", 0) or 0
        self.max_write_zero = qemu_opt_size(options, "max-write-zero", 0) or 0
        self.opt_discard = qemu_opt_size(options, "opt-discard", 0) or 0
        self.max_discard = qemu_opt_size(options, "max-discard", 0) or 0
        if self.max_transfer and self.align and self.max_transfer % self.align:
            raise BlockError(errno.EINVAL, "Cannot meet constraints with max-transfer %d"
                             % self.max_transfer)
        image_opts = {k[6:]: options.pop(k) for k in [k for k in options
                                                       if k.startswith("image.")]}
        if not image and "driver" in image_opts:
            # A node given by its options ('image': {'driver': 'raw',
            # 'file': {...}}): any driver, a format too.
            child = bdrv_open("", image_opts, bdrv_child_flags(flags))
        elif not image:
            raise BlockError(errno.EINVAL, "A block device must be specified for \"image\"")
        else:
            child = bdrv_open(str(image), image_opts, bdrv_child_flags(flags),
                              protocol_only=True)
        bs.file = bdrv_attach_child(bs, child, "image")
        bs.supported_write_flags = child.supported_write_flags
        bs.supported_zero_flags = child.supported_zero_flags
        self.blkdebug_debug_event(bs, BLKDBG_NONE)

    bdrv_file_open = blkdebug_open

    def blkdebug_refresh_limits(self, bs: BlockDriverState) -> None:
        """QEMU: blkdebug_refresh_limits."""
        bl = bs.bl
        if self.align:
            bl.request_alignment = self.align
        if self.max_transfer:
            bl.max_transfer = self.max_transfer
        if self.opt_write_zero:
            bl.pwrite_zeroes_alignment = self.opt_write_zero
        if self.max_write_zero:
            bl.max_pwrite_zeroes = self.max_write_zero
        if self.opt_discard:
            bl.pdiscard_alignment = self.opt_discard
        if self.max_discard:
            bl.max_pdiscard = self.max_discard

    bdrv_refresh_limits = blkdebug_refresh_limits

    def blkdebug_getlength(self, bs: BlockDriverState) -> int:
        return bdrv_getlength(bs.file.bs)  # type: ignore[union-attr]

    bdrv_getlength = blkdebug_getlength

    @coroutine_fn
    def blkdebug_co_truncate(self, bs: BlockDriverState, offset: int, prealloc: str,
                             zero_write: bool) -> tuple[int, str]:
        """Resize the image below.  QEMU: blkdebug_co_truncate."""
        from gqemu.block.io_truncate import bdrv_co_truncate
        return bdrv_co_truncate(bs.file.bs, offset, True, prealloc)  # type: ignore[union-attr]

    bdrv_co_truncate = blkdebug_co_truncate

    def blkdebug_child_perm(self, bs: BlockDriverState, child: BdrvChild, role: str,
                            perm: int, shared: int) -> tuple[int, int]:
        return bdrv_filter_default_perms(bs, child, role, perm, shared)

    bdrv_child_perm = blkdebug_child_perm

    # ------------------------------------------------------------ events

    def blkdebug_debug_event(self, bs: BlockDriverState, event: int) -> None:
        """Arm the event's inject-error rules, apply its set-state rules.
        QEMU: blkdebug_debug_event / process_rule."""
        self.new_state = self.state
        injected = False
        suspend = []
        for rule in list(self.rules[event]):
            if rule.state and rule.state != self.state:
                continue
            if rule.action == "inject-error":
                if not injected:
                    self.active_rules = []
                    injected = True
                self.active_rules.insert(0, rule)
            elif rule.action == "suspend":
                suspend.append(rule)
            else:
                self.new_state = rule.new_state
        if trace_blkdebug_debug_event.enabled:
            trace_blkdebug_debug_event(BLKDBG_EVENT_NAMES[event], self.state, self.new_state)
        self.state = self.new_state
        if qemu_in_coroutine() and suspend:
            for rule in suspend:
                self.suspend_request(bs, rule)
            for _ in suspend:           # one resume (or remove_break) each
                qemu_coroutine_yield()

    def suspend_request(self, bs: BlockDriverState, rule: BlkdebugRule) -> None:
        """Register this request as stopped under the rule's tag; the
        breakpoint is used up.  The event yields afterwards, once per rule.
        Context: coroutine.  QEMU: suspend_request (7.2)."""
        self.rules[rule.event].remove(rule)
        self.suspended_reqs.insert(0, (rule.tag, qemu_coroutine_self()))
        _output(bs, "blkdebug: Suspended request '%s'\n" % rule.tag)

    def resume_req_by_tag(self, bs: BlockDriverState, tag: str, resume_all: bool) -> int:
        """Enter the newest request stopped under ``tag`` (all of them with
        ``resume_all``, which then ends with -ENOENT as QEMU 7.2's does).
        Returns 0 or -ENOENT.  QEMU: resume_req_by_tag."""
        while True:
            entry = next((e for e in self.suspended_reqs if e[0] == tag), None)
            if entry is None:
                return -errno.ENOENT
            _output(bs, "blkdebug: Resuming request '%s'\n" % tag)
            self.suspended_reqs.remove(entry)
            qemu_coroutine_enter(entry[1])
            if not resume_all:
                return 0

    def blkdebug_debug_breakpoint(self, bs: BlockDriverState, event: str, tag: str) -> int:
        """Suspend the next request that emits ``event``.  Returns 0 or
        -ENOENT (no such event).  QEMU: blkdebug_debug_breakpoint."""
        ev = blkdebug_event_by_name(event)
        if ev < 0:
            return -errno.ENOENT
        r = BlkdebugRule()
        r.event, r.action, r.state, r.tag = ev, "suspend", 0, tag
        r.error, r.offset, r.once, r.immediately = 0, -1, False, False
        r.iotype_mask, r.new_state = 0, 0
        self.rules[ev].insert(0, r)
        return 0

    bdrv_debug_breakpoint = blkdebug_debug_breakpoint

    def blkdebug_debug_remove_breakpoint(self, bs: BlockDriverState, tag: str) -> int:
        """Drop the breakpoints and resume the requests with ``tag``.
        Returns 0 or -ENOENT.  QEMU: blkdebug_debug_remove_breakpoint."""
        ret = -errno.ENOENT
        for rules in self.rules:
            for r in [r for r in rules if r.action == "suspend" and r.tag == tag]:
                rules.remove(r)
                ret = 0
        if self.resume_req_by_tag(bs, tag, True) == 0:
            ret = 0
        return ret

    bdrv_debug_remove_breakpoint = blkdebug_debug_remove_breakpoint

    def blkdebug_debug_resume(self, bs: BlockDriverState, tag: str) -> int:
        """Resume the request suspended with ``tag``.  Context: loop.
        Returns 0 or -ENOENT.  QEMU: blkdebug_debug_resume."""
        return self.resume_req_by_tag(bs, tag, False)

    bdrv_debug_resume = blkdebug_debug_resume

    def blkdebug_debug_is_suspended(self, bs: BlockDriverState, tag: str) -> bool:
        """QEMU: blkdebug_debug_is_suspended."""
        return any(t == tag for t, _ in self.suspended_reqs)

    bdrv_debug_is_suspended = blkdebug_debug_is_suspended

    bdrv_debug_event = blkdebug_debug_event

    @coroutine_fn
    def rule_check(self, bs: BlockDriverState, offset: int, nbytes: int,
                   iotype: int) -> int:
        """Fail the request if an active rule matches.  Context: coroutine.
        Returns: 0 or -errno.  QEMU: rule_check."""
        hit = None
        for rule in self.active_rules:
            if not rule.iotype_mask & (1 << iotype):
                continue
            if rule.offset == -1 or (nbytes and offset <= rule.offset < offset + nbytes):
                hit = rule
                break
        if hit is None or not hit.error:
            return 0
        if trace_blkdebug_inject_error.enabled:
            trace_blkdebug_inject_error(offset, nbytes, hit.error, iotype)
        self.injected += 1
        if hit.once:
            self.active_rules.remove(hit)
            self.rules[hit.event].remove(hit)
        if not hit.immediately:
            aio_co_schedule(bs.aio_context, qemu_coroutine_self())  # type: ignore[arg-type]
            qemu_coroutine_yield()
        return -hit.error

    def _check_aligned(self, bs: BlockDriverState, offset: int, nbytes: int) -> None:
        align = bs.bl.request_alignment
        assert (offset | nbytes) % align == 0, \
            "blkdebug: request %d+%d not aligned to %d" % (offset, nbytes, align)
        assert not bs.bl.max_transfer or nbytes <= bs.bl.max_transfer, \
            "blkdebug: request of %d over max_transfer %d" % (nbytes, bs.bl.max_transfer)

    @staticmethod
    def _check_piece(what: str, offset: int, nbytes: int, align: int, limit: int) -> None:
        assert offset % align == nbytes % align == 0 and (not limit or nbytes <= limit), \
            "blkdebug: %s %d+%d not aligned to %d or over %d" % (what, offset, nbytes,
                                                                 align, limit)

    @coroutine_fn
    def blkdebug_co_preadv(self, bs: BlockDriverState, offset: int, nbytes: int,
                           qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: blkdebug_co_preadv."""
        self._check_aligned(bs, offset, nbytes)
        err = self.rule_check(bs, offset, nbytes, BLKDEBUG_IO_TYPE_READ)
        if err:
            return err
        return bdrv_co_preadv(bs.file, offset, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_preadv = blkdebug_co_preadv

    @coroutine_fn
    def blkdebug_co_pwritev(self, bs: BlockDriverState, offset: int, nbytes: int,
                            qiov: QEMUIOVector, flags: int) -> int:
        """QEMU: blkdebug_co_pwritev."""
        self._check_aligned(bs, offset, nbytes)
        err = self.rule_check(bs, offset, nbytes, BLKDEBUG_IO_TYPE_WRITE)
        if err:
            return err
        return bdrv_co_pwritev(bs.file, offset, nbytes, qiov, flags)  # type: ignore[arg-type]

    bdrv_co_pwritev = blkdebug_co_pwritev

    @coroutine_fn
    def blkdebug_co_flush(self, bs: BlockDriverState) -> int:
        """QEMU: blkdebug_co_flush."""
        err = self.rule_check(bs, 0, 0, BLKDEBUG_IO_TYPE_FLUSH)
        if err:
            return err
        return bdrv_co_flush(bs.file.bs)  # type: ignore[union-attr]

    # the disk-flush slot, as QEMU: the block layer skips it when nothing
    # was written since the last flush
    bdrv_co_flush_to_disk = blkdebug_co_flush

    @coroutine_fn
    def blkdebug_co_pwrite_zeroes(self, bs: BlockDriverState, offset: int, nbytes: int,
                                  flags: int) -> int:
        """Pieces shorter than the zero-write alignment fail with -ENOTSUP
        (the block layer then writes zeroes: the fallback gets tested);
        longer ones must be aligned.  QEMU: blkdebug_co_pwrite_zeroes."""
        align = max(bs.bl.request_alignment, bs.bl.pwrite_zeroes_alignment)
        if nbytes < align:
            return -errno.ENOTSUP
        self._check_piece("zero write", offset, nbytes, align, bs.bl.max_pwrite_zeroes)
        err = self.rule_check(bs, offset, nbytes, BLKDEBUG_IO_TYPE_WRITE_ZEROES)
        if err:
            return err
        return bdrv_co_pwrite_zeroes(bs.file, offset, nbytes, flags)  # type: ignore[arg-type]

    bdrv_co_pwrite_zeroes = blkdebug_co_pwrite_zeroes

    @coroutine_fn
    def blkdebug_co_pdiscard(self, bs: BlockDriverState, offset: int, nbytes: int) -> int:
        """Pieces shorter than the alignment are not passed on (-ENOTSUP);
        longer ones must be aligned (to opt-discard when at least that
        long) and within max-discard.  QEMU: blkdebug_co_pdiscard."""
        bl = bs.bl
        if nbytes < bl.request_alignment:
            return -errno.ENOTSUP
        opt = bl.pdiscard_alignment
        self._check_piece("discard", offset, nbytes, opt if opt and nbytes >= opt
                          else bl.request_alignment, bl.max_pdiscard)
        err = self.rule_check(bs, offset, nbytes, BLKDEBUG_IO_TYPE_DISCARD)
        if err:
            return err
        return bdrv_co_pdiscard(bs.file.bs, offset, nbytes)  # type: ignore[union-attr]

    bdrv_co_pdiscard = blkdebug_co_pdiscard

    @coroutine_fn
    def blkdebug_co_get_block_status(self, bs: BlockDriverState, offset: int,
                                     nbytes: int) -> tuple[int, int, int, Any]:
        """The ``block-status`` rules, then RAW: the image's status.
        QEMU: blkdebug_co_block_status."""
        self._check_aligned(bs, offset, 0)
        err = self.rule_check(bs, offset, nbytes, BLKDEBUG_IO_TYPE_BLOCK_STATUS)
        if err:
            return err, 0, 0, None
        return (BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, nbytes, offset,
                bs.file.bs)  # type: ignore[union-attr]

    bdrv_co_get_block_status = blkdebug_co_get_block_status
