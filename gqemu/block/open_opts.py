"""Filenames that carry options: ``json:{...}`` and the flattened
``file.filename`` / ``file.driver=file`` of ``--image-opts``.

``bdrv_fill_options(filename, options)`` turns both into what
``bdrv_open`` takes: a filename for the protocol node and flat
``key`` / ``file.key`` options (explicit options win over the JSON ones).

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.
QEMU: block.c (parse_json_filename, bdrv_fill_options), qobject/block-qdict.c
(qdict_flatten).
"""
from __future__ import annotations

import errno
import json
from typing import Any, Optional

from gqemu.block.block_int import BlockError


def qdict_flatten(obj: Any, prefix: str = "", out: Optional[dict] = None) -> dict:
    """Nested dicts and lists become dotted keys (``file.filename``,
    ``inject-error.0.event``); scalars become strings as on a command
    line (booleans ``on``/``off``).  QEMU: qdict_flatten."""
    out = {} if out is None else out
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in items:
        key = "%s%s" % (prefix, k)
        if isinstance(v, (dict, list)) and v:
            qdict_flatten(v, key + ".", out)
        elif isinstance(v, bool):
            out[key] = "on" if v else "off"
        elif v is None:
            out[key] = ""
        elif isinstance(v, (dict, list)):
            continue
        else:
            out[key] = str(v)
    return out


def parse_json_filename(filename: str) -> dict:
    """``json:{...}`` -> flat options.  Raises BlockError with QEMU's
    messages.  QEMU: parse_json_filename."""
    text = filename[len("json:"):]
    try:
        obj = json.loads(text)
    except ValueError as e:
        what = "premature EOI" if "Expecting" in str(e) and e.pos >= len(text.rstrip()) \
            else "invalid syntax"                          # type: ignore[attr-defined]
        raise BlockError(errno.EINVAL, "Could not parse the JSON options: JSON parse "
                         "error, %s" % what) from None
    if not isinstance(obj, dict):
        raise BlockError(errno.EINVAL, "Invalid JSON object given")
    return qdict_flatten(obj)


def bdrv_fill_options(filename: Optional[str], options: dict) -> tuple[Optional[str], dict]:
    """(filename, options) with a ``json:`` filename expanded and the
    protocol's ``file.filename`` (of the default ``file`` driver) made the
    filename.  QEMU: bdrv_fill_options."""
    options = dict(options)
    if filename and filename.startswith("json:"):
        for k, v in parse_json_filename(filename).items():
            options.setdefault(k, v)
        filename = None
    if not filename and "file.filename" in options \
            and options.get("file.driver", "file") == "file":
        filename = str(options.pop("file.filename"))
        options.pop("file.driver", None)
    return filename, options
