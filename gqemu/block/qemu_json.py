"""Which error QEMU's JSON parser reports for a ``json:`` file name, when
it reports one: the lexer's stray characters, the streamer cutting the
input into values at balanced brackets, and the parser's first error.
The values themselves are decoded by Python's json module; this module
only says whether, and how, QEMU would have refused the text.

Must not import: gqemu.hw, gqemu.kvm or anything above the block layer.
QEMU: qobject/json-lexer.c, json-streamer.c, json-parser.c,
qobject/qjson.c (qobject_from_json, consume_json).
"""
from __future__ import annotations

from typing import Optional

__all__ = ["qemu_json_error"]

_ESCAPES = "\"'\\/bfnrtu"


def _scan_string(text: str, pos: int) -> tuple[str, int, bool]:
    """A quoted string from ``pos``: (its text, the end, whether the lexer
    took it; else the text is the error token, up to the bad character)."""
    q, i = text[pos], pos + 1
    while i < len(text):
        c = text[i]
        if c == q:
            return text[pos:i + 1], i + 1, True
        if c == "\\":
            if i + 1 >= len(text):
                break
            if not " " <= text[i + 1] <= "\xfd":
                return text[pos:i + 2], i + 2, False
            i += 2
            continue
        if not " " <= c <= "\xfd":
            return text[pos:i + 1], i + 1, False
        i += 1
    return text[pos:], len(text), False


def _scan_number(text: str, pos: int) -> tuple[str, int, bool]:
    """json-lexer's number states from ``pos``: (text, end, taken)."""
    i, n = pos, len(text)

    def at(k: int) -> str:
        return text[k] if k < n else ""

    def bad(k: int) -> tuple[str, int, bool]:
        return text[pos:k + 1], k + 1, False

    if at(i) == "-":
        i += 1
        if not at(i).isdigit():
            return bad(i)
    if at(i) == "0":
        i += 1
        if at(i).isdigit():
            return bad(i)
    else:
        while at(i).isdigit():
            i += 1
    if at(i) == ".":
        i += 1
        if not at(i).isdigit():
            return bad(i)
        while at(i).isdigit():
            i += 1
    if at(i) in ("e", "E"):
        i += 1
        if at(i) in ("+", "-"):
            i += 1
        if not at(i).isdigit():
            return bad(i)
        while at(i).isdigit():
            i += 1
    return text[pos:i], i, True


class _Err(Exception):
    pass


def _tokens(text: str) -> list:
    """(kind, text) tokens; ('error', text) for the lexer's error tokens
    (the characters of the failed token up to the one it could not take)."""
    out, pos, n = [], 0, len(text)
    while pos < n:
        c = text[pos]
        if c in " \t\r\n":
            pos += 1
        elif c in "{}[]:,":
            out.append((c, c))
            pos += 1
        elif c in "\"'":
            tok, pos, ok = _scan_string(text, pos)
            out.append(("string" if ok else "error", tok))
        elif c == "-" or c.isdigit():
            tok, pos, ok = _scan_number(text, pos)
            out.append(("number" if ok else "error", tok))
        elif "a" <= c <= "z":
            end = pos
            while end < n and "a" <= text[end] <= "z":
                end += 1
            out.append(("keyword", text[pos:end]))
            pos = end
        else:
            out.append(("error", c))
            pos += 1
    return out


def _check_escapes(tok: str) -> None:
    """QEMU: parse_string's escape decoding."""
    i = 1
    while i < len(tok) - 1:
        if tok[i] == "\\":
            e = tok[i + 1]
            if e not in _ESCAPES:
                raise _Err("invalid escape sequence in string")
            if e == "u":
                hexd = tok[i + 2:i + 6]
                if len(hexd) < 4 or any(h not in "0123456789abcdefABCDEF" for h in hexd):
                    raise _Err("%s is not a valid Unicode character" % tok[i:i + 6])
                i += 6
                continue
            i += 2
            continue
        i += 1


def _parse(toks: list) -> object:
    """One value from the tokens of one message.  Raises _Err(message)."""
    pos = [0]

    def peek() -> Optional[tuple]:
        return toks[pos[0]] if pos[0] < len(toks) else None

    def pop() -> Optional[tuple]:
        t = peek()
        pos[0] += 1
        return t

    def value() -> object:
        t = peek()
        if t is None:
            raise _Err("premature EOI")
        if t[0] == "{":
            return obj()
        if t[0] == "[":
            return arr()
        pop()
        if t[0] == "string":
            _check_escapes(t[1])
            return t[1]
        if t[0] == "number":
            return t[1]
        if t[0] == "keyword":
            if t[1] in ("true", "false", "null"):
                return t[1]
            raise _Err("invalid keyword '%s'" % t[1])
        raise _Err("expecting value")

    def pair(d: dict) -> None:
        if peek() is None:
            raise _Err("premature EOI")
        is_key = peek()[0] == "string"          # type: ignore[index]
        key = value()
        if not is_key:
            raise _Err("key is not a string in object")
        t = pop()
        if t is None:
            raise _Err("premature EOI")
        if t[0] != ":":
            raise _Err("missing : in object pair")
        v = value()
        if key in d:
            raise _Err("duplicate key")
        d[key] = v

    def obj() -> dict:
        pop()
        d: dict = {}
        if peek() is None:
            raise _Err("premature EOI")
        if peek()[0] == "}":                     # type: ignore[index]
            pop()
            return d
        pair(d)
        t = pop()
        while True:
            if t is None:
                raise _Err("premature EOI")
            if t[0] == "}":
                return d
            if t[0] != ",":
                raise _Err("expected separator in dict")
            pair(d)
            t = pop()

    def arr() -> list:
        pop()
        items: list = []
        if peek() is None:
            raise _Err("premature EOI")
        if peek()[0] == "]":                     # type: ignore[index]
            pop()
            return items
        items.append(value())
        t = pop()
        while True:
            if t is None:
                raise _Err("premature EOI")
            if t[0] == "]":
                return items
            if t[0] != ",":
                raise _Err("expected separator in list")
            items.append(value())
            t = pop()

    return value()


def qemu_json_error(text: str) -> Optional[str]:
    """QEMU's message for ``text`` (after "Could not parse the JSON
    options: "), or None when QEMU parses it into exactly one value."""
    results: list = []                          # consume_json's result / err
    msg: list[str] = []
    depth = [0, 0]

    def emit(ok: bool, err: str = "") -> None:
        if results and results[0]:
            results[0] = False
            msg[:] = ["Expecting at most one JSON value"]
        elif not results:
            results.append(ok)
            msg.append("" if ok else err)

    toks: list = []
    for tok in _tokens(text):
        if tok[0] == "error":
            emit(False, "JSON parse error, stray '%s'" % tok[1])
            toks, depth = [], [0, 0]
            continue
        depth[0] += {"{": 1, "}": -1}.get(tok[0], 0)
        depth[1] += {"[": 1, "]": -1}.get(tok[0], 0)
        toks.append(tok)
        if (depth[0] > 0 or depth[1] > 0) and depth[0] >= 0 and depth[1] >= 0:
            continue
        try:
            _parse(toks)
            emit(True)
        except _Err as e:
            emit(False, "JSON parse error, %s" % e)
        toks, depth = [], [0, 0]
    if toks:                                    # end of input inside a value
        try:
            _parse(toks)
            emit(True)
        except _Err as e:
            emit(False, "JSON parse error, %s" % e)
    if not results:
        return "Expecting a JSON value"
    return msg[0] or None
