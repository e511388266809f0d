"""``--object secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]``: the
secrets an encrypted image's ``encrypt.key-secret`` names.  One process-wide
table, as QEMU's QOM ``/objects`` container.  Encrypted secrets (``keyid``,
``iv``) are not modelled.

Must not import: gqemu.hw, gqemu.kvm, gqemu.cli.

QEMU: crypto/secret_common.c (qcrypto_secret_prop_*, qcrypto_secret_lookup),
crypto/secret.c (data/file), qom/object_interfaces.c (user_creatable_add_qapi).
"""
from __future__ import annotations

import base64
import binascii
from typing import Optional

SECRETS: dict[str, bytes] = {}
_PROPS = ("qom-type", "id", "data", "file", "format", "keyid", "iv", "loaded")


def secret_object_add(spec: str) -> Optional[str]:
    """Add a ``secret`` object from its ``--object`` text.  Returns None,
    QEMU's one-line error, or "" when the object is not a secret (the
    caller decides what to do with other types)."""
    from gqemu.block.drive_opts import qemu_opts_split
    props: dict[str, str] = {}
    for n, item in enumerate(qemu_opts_split(spec)):
        k, eq, v = item.partition("=")
        if not eq and n == 0:
            k, v = "qom-type", item
        props[k] = v
    if props.get("qom-type") != "secret":
        return ""
    for k in props:
        if k not in _PROPS:
            return "Parameter '%s' is unexpected" % k
    if "id" not in props:
        return "Parameter 'id' is missing"
    fmt = props.get("format", "raw")
    if fmt not in ("raw", "base64"):
        return "Parameter 'format' does not accept value '%s'" % fmt
    if "keyid" in props or "iv" in props:
        return "Encrypted secrets (keyid, iv) are not supported by gqemu"
    if "data" in props:
        data = props["data"].encode("utf-8", "surrogateescape")
    elif "file" in props:
        try:
            with open(props["file"], "rb") as f:
                data = f.read()
        except OSError as e:
            return "Unable to read %s: Failed to open file \u201c%s\u201d: %s" % (
                props["file"], props["file"], e.strerror)
    else:
        return "Either 'file' or 'data' must be provided"
    if fmt == "base64":
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return "Base64 data contains invalid characters"
    if props["id"] in SECRETS:
        return "attempt to add duplicate property '%s' to object (type 'container')" \
            % props["id"]
    SECRETS[props["id"]] = data
    return None


def qcrypto_secret_lookup_as_utf8(secret_id: str) -> tuple[Optional[str], str]:
    """(the secret's text, "") or (None, QEMU's error)."""
    data = SECRETS.get(secret_id)
    if data is None:
        return None, "No secret with id '%s'" % secret_id
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError:
        return None, "Data from secret %s is not valid UTF-8" % secret_id
