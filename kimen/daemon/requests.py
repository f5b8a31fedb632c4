"""What a valid session request is: the fields of every op and their types.

A frame that is not a valid request — `op` missing, not a string or unknown, a known field of the
wrong type, a string that is not valid Unicode (a lone surrogate escape), an integer outside 64
bits, a number that is not finite (JSON's NaN and Infinity extensions) — is refused with
`session_protocol_error` before any handler runs, so no handler ever meets a value of an
unexpected type. Unknown extra fields are ignored
(a newer client may send more). `status` and `stop` are answered whatever the peer's version.
"""

from __future__ import annotations

import math
from typing import Any

from .. import errors
from . import protocol

_INT_LIMIT = 1 << 63


def _text(value: Any) -> bool:
    return isinstance(value, str) and protocol.utf8(value)


def _int(value: Any) -> bool:
    return type(value) is int and -_INT_LIMIT <= value < _INT_LIMIT


def _number(value: Any) -> bool:
    return _int(value) or (type(value) is float and math.isfinite(value))


def _flat_texts_valid(item: dict[str, Any]) -> bool:
    """Every string of an object (a write's change: its names, kind, base64) is valid Unicode."""
    return all(_text(v) for v in item.values() if type(v) is str)


KINDS = {
    "text": _text,
    "int": _int,
    "number": _number,
    "bool": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "any": lambda v: True,
    "id": lambda v: v is None or _text(v) or _int(v),
    "text|null": lambda v: v is None or _text(v),
    "int|null": lambda v: v is None or _int(v),
    "texts": lambda v: type(v) is list and all(_text(x) for x in v),
    "objects": lambda v: type(v) is list and all(type(x) is dict and _flat_texts_valid(x) for x in v),
}

COMMON = {"v": "int", "kimen": "text", "id": "id", "op": "text", "token": "text", "context": "object"}

# op -> {field: (kind, required)}
OPS: dict[str, dict[str, tuple[str, bool]]] = {
    "status": {"vault_path": ("text|null", False)},
    "stop": {},
    "unlock": {"vault_path": ("text", True), "passphrase_b64": ("text", True), "ttl": ("number", False),
               "max_ttl": ("number", False), "require_grant": ("bool", False)},
    "lock": {"vault_path": ("text|null", False)},
    "read": {"vault_path": ("text", True), "names": ("texts", True)},
    "write": {"vault_path": ("text", True), "changes": ("objects", True), "if_generation": ("int|null", False),
              "baseline": ("any", False), "history_op": ("text|null", False), "history_keep": ("int", False)},
    "verify": {"vault_path": ("text", True)},
    "grant_create": {"vault_path": ("text", True), "passphrase_b64": ("text", True), "secrets": ("texts", True),
                     "read_only": ("bool", False), "ttl": ("number", False)},
    "grant_list": {},
    "grant_revoke": {"grant_id": ("text", True)},
    "read_revision": {"vault_path": ("text", True), "name": ("text", True), "revision": ("int", True)},
    "restore": {"vault_path": ("text", True), "name": ("text", True), "revision": ("int", True),
                "history_keep": ("int", False)},
    "purge_history": {"vault_path": ("text", True), "names": ("texts", True)},
}


def request_id(request: dict[str, Any]) -> str | int | None:
    """The id to echo: a string or a 64-bit integer, else None."""
    rid = request.get("id")
    return rid if KINDS["id"](rid) else None


def check(request: dict[str, Any]) -> str:
    """The request's op, after checking every field this version knows; `SessionProtocolError`
    or `SessionVersionMismatch` otherwise."""
    for field, kind in COMMON.items():
        if field in request and not KINDS[kind](request[field]):
            raise errors.SessionProtocolError(message=f"session request field {field} has the wrong type")
    op = request.get("op")
    if op is None:
        raise errors.SessionProtocolError(message="session request without an op")
    same_version = request.get("v") == protocol.PROTOCOL and request.get("kimen") == protocol.VERSION
    if not same_version and op not in protocol.FROZEN_OPS:
        raise errors.SessionVersionMismatch()
    fields = OPS.get(op)
    if fields is None:
        raise errors.SessionProtocolError(message=f"unknown session op: {op[:40]!r}")
    for field, (kind, required) in fields.items():
        if field not in request:
            if required:
                raise errors.SessionProtocolError(message=f"session op {op} needs {field}")
        elif not KINDS[kind](request[field]):
            raise errors.SessionProtocolError(message=f"session op {op}: {field} has the wrong type")
    return op
