"""blkdebug rules: the ``BlkdebugRule`` records, the config-file parser
and the rule lists of the open options (a JSON list or the dotted
``inject-error.0.event=`` keys of ``--image-opts``).

Must not import: anything above the block layer.
QEMU: block/blkdebug.c (add_rule), util/qemu-config.c (qemu_config_parse,
qemu_config_parse_qdict).
"""
from __future__ import annotations

import errno
from typing import Any, Optional

from gqemu.block.blkdebug_events import BLKDBG_EVENT_NAMES, blkdebug_event_by_name
from gqemu.block.block_int import BlockError
from gqemu.block.driver import qemu_opt_bool

__all__ = ["BlkdebugRule", "add_rule", "blkdebug_parse_config", "config_parse_qdict",
           "BLKDEBUG_IO_TYPE_READ", "BLKDEBUG_IO_TYPE_WRITE",
           "BLKDEBUG_IO_TYPE_WRITE_ZEROES", "BLKDEBUG_IO_TYPE_DISCARD",
           "BLKDEBUG_IO_TYPE_FLUSH", "BLKDEBUG_IO_TYPE_BLOCK_STATUS"]

BLKDEBUG_IO_TYPE_READ = 0
BLKDEBUG_IO_TYPE_WRITE = 1
BLKDEBUG_IO_TYPE_WRITE_ZEROES = 2
BLKDEBUG_IO_TYPE_DISCARD = 3
BLKDEBUG_IO_TYPE_FLUSH = 4
BLKDEBUG_IO_TYPE_BLOCK_STATUS = 5
_IOTYPES = ("read", "write", "write-zeroes", "discard", "flush", "block-status")
_DEFAULT_IOTYPE_MASK = (1 << 5) - 1          # all but block-status

_INJECT_KEYS = ("event", "state", "errno", "sector", "once", "immediately", "iotype")
_SET_STATE_KEYS = ("event", "state", "new_state")


class BlkdebugRule:
    """One inject-error or set-state rule.  QEMU: BlkdebugRule."""

    __slots__ = ("event", "action", "state", "error", "offset", "once",
                 "immediately", "iotype_mask", "new_state", "tag")

    event: int
    action: str
    state: int
    error: int
    offset: int
    once: bool
    immediately: bool
    iotype_mask: int
    new_state: int
    tag: str

    def __repr__(self) -> str:
        return "<BlkdebugRule %s %s state=%d>" % (self.action,
                                                  BLKDBG_EVENT_NAMES[self.event], self.state)


def _num(opts: dict, key: str, default: int) -> int:
    v = opts.pop(key, None)
    if v is None:
        return default
    try:
        return int(str(v), 0)
    except ValueError:
        raise BlockError(errno.EINVAL, "Parameter '%s' expects a number" % key) from None


def add_rule(kind: str, opts: dict) -> BlkdebugRule:
    """Build a rule from one config group.  Raises BlockError.
    QEMU: add_rule."""
    opts = {k.replace("-", "_") if k == "new-state" else k: v for k, v in opts.items()}
    allowed = _INJECT_KEYS if kind == "inject-error" else _SET_STATE_KEYS
    for key in opts:
        if key not in allowed:
            raise BlockError(errno.EINVAL, "Invalid parameter '%s'" % key)
    event = opts.pop("event", None)
    if event is None:
        raise BlockError(errno.EINVAL, "Missing event name for rule")
    ev = blkdebug_event_by_name(str(event))
    if ev < 0:
        raise BlockError(errno.EINVAL, "invalid parameter value: %s" % event)
    r = BlkdebugRule()
    r.event = ev
    r.action = kind
    r.state = _num(opts, "state", 0)
    r.error, r.offset, r.once, r.immediately = 0, -1, False, False
    r.iotype_mask, r.new_state, r.tag = _DEFAULT_IOTYPE_MASK, 0, ""
    if kind == "inject-error":
        r.error = _num(opts, "errno", errno.EIO)
        r.once = qemu_opt_bool(opts, "once", False)
        r.immediately = qemu_opt_bool(opts, "immediately", False)
        sector = _num(opts, "sector", -1)
        r.offset = sector * 512 if sector >= 0 else -1
        iotype = opts.pop("iotype", None)
        if iotype is not None:
            if str(iotype) not in _IOTYPES:
                raise BlockError(errno.EINVAL, "invalid parameter value: %s" % iotype)
            r.iotype_mask = 1 << _IOTYPES.index(str(iotype))
    else:
        r.new_state = _num(opts, "new_state", 0)
    return r


def blkdebug_parse_config(text: str, where: str = "") -> list[tuple[str, dict]]:
    """Parse the config: ``[inject-error]`` / ``[set-state]`` groups of
    ``key = "value"`` lines (an unquoted value reads as empty, as QEMU's
    sscanf does).  Raises BlockError with QEMU's messages.
    QEMU: qemu_config_parse (util/qemu-config.c) on blkdebug's groups."""
    groups: list[tuple[str, dict]] = []
    cur: Optional[dict] = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name = line[1:line.index("]")] if "]" in line else line[1:]
            if name not in ("inject-error", "set-state"):
                raise BlockError(errno.EINVAL, "There is no option group '%s'" % name)
            cur = {}
            groups.append((name, cur))
            continue
        key, _, rest = line.partition(" ")
        rest = rest.strip()
        if not rest.startswith("="):
            key, rest = line, ""
        value = rest[1:].strip()
        if len(value) >= 2 and value[0] == '"' and '"' in value[1:]:
            value = value[1:value.index('"', 1)]
        else:
            value = ""
        if cur is None:
            raise BlockError(errno.EINVAL, "%s:%d: no group defined" % (where, lineno))
        cur[key] = value
    return groups


def _dotted(prefix: str, value: Any, out: dict) -> None:
    """A JSON list/dict value as the dotted keys QEMU's qdict_flatten
    makes of it (``inject-error.0.event``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _dotted("%s.%s" % (prefix, k), v, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _dotted("%s.%d" % (prefix, i), v, out)
    else:
        out[prefix] = value


def config_parse_qdict(options: dict, group: str) -> list[dict]:
    """Take the ``GROUP`` rules out of the open options: a JSON list
    (``"inject-error": [{...}]``), the dotted list of ``--image-opts``
    (``inject-error.0.event=...``) or one section (``inject-error.event=``).
    Raises BlockError with QEMU's messages.
    QEMU: qemu_config_parse_qdict (util/qemu-config.c)."""
    allowed = _INJECT_KEYS if group == "inject-error" else _SET_STATE_KEYS
    sub: dict = {}
    if group in options:
        _dotted("", options.pop(group), sub)
        sub = {k[1:]: v for k, v in sub.items()}
    for key in [k for k in options if k.startswith(group + ".")]:
        sub[key[len(group) + 1:]] = options.pop(key)
    if not sub:
        return []
    sections: list[dict] = []
    if "0" in sub or any(k.startswith("0.") for k in sub):
        i = 0
        while str(i) in sub or any(k.startswith("%d." % i) for k in sub):
            if str(i) in sub:
                raise BlockError(errno.EINVAL, "[%s] section (index %d) does not "
                                 "consist of keys" % (group, i))
            pre = "%d." % i
            sections.append({k[len(pre):]: sub.pop(k) for k in [k for k in sub
                                                               if k.startswith(pre)]})
            i += 1
        if sub:
            raise BlockError(errno.EINVAL, "Unused option '%s' for [%s]"
                             % (next(iter(sub)), group))
    else:
        sections.append(sub)
    for sec in sections:
        for key in sec:
            if key.replace("-", "_") not in allowed or "." in key:
                raise BlockError(errno.EINVAL, "[%s] section doesn't support the "
                                 "option '%s'" % (group, key))
    return sections
