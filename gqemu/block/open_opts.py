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


def _scalar(v: Any) -> Any:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, dict):
        return {k: _scalar(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_scalar(x) for x in v]
    return "" if v is None else str(v)


def qdict_flatten(obj: Any, prefix: str = "", out: Optional[dict] = None) -> dict:
    """Nested dicts become dotted keys (``file.filename``); scalars become
    strings as on a command line (booleans ``on``/``off``).  Lists stay
    lists (of such values), which is how gqemu's drivers take list options
    (blkdebug's ``inject-error``, ``set-state``).  QEMU: qdict_flatten."""
    out = {} if out is None else out
    for k, v in obj.items():
        key = "%s%s" % (prefix, k)
        if isinstance(v, dict):
            qdict_flatten(v, key + ".", out)
        elif v is None and key.rpartition(".")[2] == "backing":
            out[key] = None                # "backing": null (not the deprecated "")
        else:
            out[key] = _scalar(v)
    return out


def _single_quotes_to_json(text: str) -> str:
    """QEMU's JSON parser also takes 'single-quoted' strings (with \\'
    for a quote inside); rewrite them as standard JSON strings.
    QEMU: qobject/json-lexer.c (IN_SQ_STRING)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':                       # a standard string: copy as is
            j = i + 1
            seg = ['"']
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    # (QEMU also takes \' in a double-quoted string)
                    seg.append("'" if text[j + 1] == "'" else text[j:j + 2])
                    j += 2
                    continue
                seg.append(text[j])
                j += 1
            out.append("".join(seg) + ('"' if j < n else ""))
            i = j + 1
        elif c == "'":
            j = i + 1
            buf: list[str] = []
            while j < n and text[j] != "'":
                if text[j] == "\\" and j + 1 < n:
                    buf.append("'" if text[j + 1] == "'" else text[j:j + 2])
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else text[j])
                j += 1
            out.append('"' + "".join(buf) + ('"' if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_json_filename(filename: str) -> dict:
    """``json:{...}`` -> flat options.  Raises BlockError with QEMU's
    messages.  QEMU: parse_json_filename."""
    text = filename[len("json:"):]
    from gqemu.block.qemu_json import qemu_json_error
    qerr = qemu_json_error(text)
    if qerr:
        raise BlockError(errno.EINVAL, "Could not parse the JSON options: " + qerr)
    if "'" in text:
        text = _single_quotes_to_json(text)
    try:
        obj = json.loads(text)
    except ValueError as e:
        pos = getattr(e, "pos", 0)
        what = "premature EOI" if "Expecting" in str(e) and pos >= len(text.rstrip()) \
            else "invalid syntax"
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
