"""The text forms signed data is written in, shared by bundles and sync heads (stdlib only).

- `canonical`: kimen's one canonical JSON serialisation (keys sorted, no insignificant whitespace,
  ASCII only with `\\uXXXX` escapes, integers only). Every signature and every hash over a JSON
  document — a bundle's signature, a head id, a membership record, a join request — is taken over
  these bytes.
- `loads`: the strict JSON reader for signed documents: floats, NaN and duplicate keys refused.
- signer ids: `kimen-sig-v1:` + unpadded base64url of an Ed25519 public key.

It sits in the lowest layer so that `kimen.bundle` (the age layer) and `kimen.sync` (the chain of
heads, which must not import the age layer) share one definition of each. No cryptography here:
`kimen.crypto` signs and verifies.
"""

from __future__ import annotations

import binascii

from . import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SIGNER_PREFIX = "kimen-sig-v1:"


def canonical(doc: Any) -> bytes:
    """`json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)`
    as ASCII bytes, written by the C encoder `json` itself uses for these settings, without
    importing `json` (reading a sync remote's endpoint must not pay for it; `tests/test_sigfmt.py`
    proves the bytes equal)."""
    try:
        from _json import encode_basestring_ascii, make_encoder
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        import json

        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False).encode("ascii")
    if isinstance(doc, str):
        return encode_basestring_ascii(doc).encode("ascii")
    # the arguments `json.JSONEncoder.iterencode` passes: markers, default, string encoder, indent,
    # key and item separators, sort_keys, skipkeys, allow_nan
    encode = make_encoder({}, _not_serializable, encode_basestring_ascii, None, ":", ",", True, False, False)
    return "".join(encode(doc, 0)).encode("ascii")


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def canonical_members(doc: dict[str, Any]) -> dict[str, bytes]:
    """Each member of the object `doc` as `canonical` writes it inside the object (`"key":value`),
    for `join_members`: a signed document is encoded once for its signature and its id."""
    import json

    encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
    out = {}
    for key, value in doc.items():
        if type(key) is not str:
            raise TypeError("canonical_members: object keys must be strings")
        out[key] = (encode(key) + ":" + encode(value)).encode("ascii")
    return out


def join_members(members: dict[str, bytes], leave_out: str | None = None) -> bytes:
    """`canonical` of the object whose members `canonical_members` encoded, without `leave_out`:
    its members sorted by key, joined by commas (the same bytes as `canonical`)."""
    return b"{" + b",".join(members[key] for key in sorted(members) if key != leave_out) + b"}"


def canonical_without(doc: dict[str, Any], member: str) -> tuple[bytes, bytes]:
    """(`canonical` of `doc` without `member`, `canonical` of `doc`), each member encoded once: a
    signature covers the first and a head id hashes the second."""
    members = canonical_members(doc)
    return join_members(members, member), join_members(members)


def loads(text: str, *, canonical_text: bool = False) -> Any:
    """Parse JSON refusing floats, NaN/Infinity and duplicate keys (`ValueError`, `RecursionError`).
    `canonical_text`: the caller knows `text` is a `canonical` serialisation (it hashes to a
    recorded head id), which never repeats a key, so no key is looked for twice."""
    from .jsontext import read_json

    return read_json(text, strict=True, unique_keys=not canonical_text)


def signer_id(public: bytes) -> str:
    import base64  # here: base64 imports `re`, which reading a signed document does not need

    return SIGNER_PREFIX + base64.urlsafe_b64encode(public).rstrip(b"=").decode("ascii")


def parse_signer(text: str) -> bytes:
    """The Ed25519 public key of a signer id; `invalid_signer` otherwise."""
    text = text.strip()
    if not text.startswith(SIGNER_PREFIX):
        raise errors.InvalidSigner(detail=f"must start with {SIGNER_PREFIX}")
    import base64

    body = text[len(SIGNER_PREFIX):]
    if len(body) != 43 or not body.replace("-", "").replace("_", "").isalnum() or not body.isascii():
        raise errors.InvalidSigner(detail="expected 43 base64url characters after the prefix")
    try:
        public = base64.urlsafe_b64decode(body + "=")
    except (binascii.Error, ValueError):
        raise errors.InvalidSigner(detail="invalid base64url") from None
    if signer_id(public) != text:
        raise errors.InvalidSigner(detail="non-canonical base64url")
    return public
