"""The bundle document, its signature and the trust and freshness checks.

UTF-8 JSON, serialised canonically (keys sorted, no insignificant whitespace, ASCII only,
integers only). `signature.sig` is Ed25519 over `kimen-bundle-v1` || 0x00 || the canonical
serialisation of the document without its `signature` member.
"""

from __future__ import annotations

import base64
import binascii
import re
import time

from .. import errors, sigfmt
from ..durations import format_time, parse_time
from ..sigfmt import canonical  # kimen's one canonical serialisation (document.canonical)
from ..values import MAX_VALUE_BYTES, is_valid_secret_name
from . import keys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, TypeGuard

VERSION = 1
SIGNATURE_CONTEXT = b"kimen-bundle-v1\x00"
_REQUIRED = frozenset({"kimen_bundle", "bundle_id", "created_at", "generation", "secrets"})
# `sync` and an entry's `by` appear in a remote's head; kimen.sync.chain checks them
_OPTIONAL = frozenset({"creator", "source_vault_id", "signature", "sync"})
_SECRET_KEYS = frozenset({"name", "value_b64", "revision", "updated_at", "by"})
_HEX32 = re.compile(r"[0-9a-f]{32}")
# Generations are integers 1 ... 2**53 - 1 (exact in every JSON reader, doubles included).
MAX_GENERATION = 2**53 - 1
# A stateful open refuses a generation further ahead of the local clock than this (ms): accepting
# one would make the vault refuse every genuine bundle sealed until then.
MAX_FUTURE_MS = 15 * 60 * 1000


class Secret:
    __slots__ = ("name", "revision", "updated_at", "value")

    def __init__(self, name: str, value: bytes, revision: int, updated_at: str) -> None:
        self.name = name
        self.value = value
        self.revision = revision
        self.updated_at = updated_at

    def __repr__(self) -> str:
        return f"Secret({self.name!r}, revision={self.revision})"


class Document:
    """A parsed, checked document; `signer` is the verified signer id or None (unsigned); `raw` is the
    decoded JSON object (a sync head's `sync` member is read from it); `canonical_text` is the
    canonical serialisation of `raw` when checking the signature made it (a head id hashes it)."""

    __slots__ = ("bundle_id", "canonical_text", "created_at", "creator", "generation", "raw", "secrets", "signer",
                 "source_vault_id")

    def __init__(self, bundle_id: str, created_at: str, creator: dict[str, Any], source_vault_id: str | None,
                 generation: int, secrets: list[Secret], signer: str | None, raw: dict[str, Any]) -> None:
        self.bundle_id = bundle_id
        self.created_at = created_at
        self.creator = creator
        self.source_vault_id = source_vault_id
        self.generation = generation
        self.secrets = secrets
        self.signer = signer
        self.raw = raw
        self.canonical_text: bytes | None = None


def build(secrets: Sequence[Secret], *, source_vault_id: str, generation: int, creator: dict[str, str],
          identity: keys.Identity | None) -> tuple[bytes, str]:
    """The canonical document bytes (signed when `identity` is given) and its bundle id."""
    import os

    bundle_id = os.urandom(16).hex()
    ordered = sorted(secrets, key=lambda s: s.name)
    b64 = base64.b64encode
    doc: dict[str, Any] = {
        "kimen_bundle": VERSION,
        "bundle_id": bundle_id,
        "created_at": format_time(),
        "creator": creator,
        "source_vault_id": source_vault_id,
        "generation": generation,
        "secrets": [{"name": s.name, "value_b64": b64(s.value).decode("ascii"), "revision": s.revision,
                     "updated_at": s.updated_at} for s in ordered],
        "signature": None,
    }
    if identity is not None:
        sign(doc, identity)
    return canonical(doc), bundle_id


def sign(doc: dict[str, Any], identity: keys.Identity) -> None:
    """Set `doc["signature"]`: Ed25519 over the context and the document without its signature."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = identity.sign(SIGNATURE_CONTEXT + canonical(body))
    doc["signature"] = {"alg": "ed25519", "signer": identity.signer, "sig": base64.b64encode(sig).decode("ascii")}


def sign_canonical(doc: dict[str, Any], identity: keys.Identity) -> bytes:
    """`sign`, and return the canonical serialisation of the signed document (`canonical(doc)`):
    each member is encoded once for both (a sync head, whose id hashes these bytes)."""
    members = sigfmt.canonical_members({k: v for k, v in doc.items() if k != "signature"})
    sig = identity.sign(SIGNATURE_CONTEXT + sigfmt.join_members(members))
    doc["signature"] = {"alg": "ed25519", "signer": identity.signer, "sig": base64.b64encode(sig).decode("ascii")}
    members.update(sigfmt.canonical_members({"signature": doc["signature"]}))
    return sigfmt.join_members(members)


def parse(plaintext: bytes, *, verified_before: bool = False) -> Document:
    """Parse and check a decrypted payload; verifies the signature when there is one.

    `verified_before`: the caller knows that `plaintext` is, byte for byte, the canonical
    serialisation of a document whose signature it verified before (its SHA-256 equals a head id
    recorded under the vault's key when that head was accepted). Verifying is deterministic, so
    the Ed25519 check over the same bytes is not made again (the signature member's form still
    is), and `canonical_text` is `plaintext` itself; every other rule is checked as always."""
    try:
        text = plaintext.decode("utf-8")
        doc = sigfmt.loads(text, canonical_text=verified_before)
    except (UnicodeDecodeError, ValueError, RecursionError):
        if plaintext.lstrip()[:1] == b"{" and b'"kimen_bundle"' in plaintext:
            raise errors.BundleInvalid(detail="document is not valid canonical JSON") from None
        raise errors.BundleNotADocument() from None
    if not isinstance(doc, dict) or "kimen_bundle" not in doc:
        raise errors.BundleNotADocument()
    version = doc["kimen_bundle"]
    if type(version) is not int:
        raise errors.BundleInvalid(detail="kimen_bundle must be an integer")
    if version != VERSION:
        raise errors.BundleUnsupported(detail=f"document version {version} (this kimen reads {VERSION})")
    missing = _REQUIRED - doc.keys()
    unknown = doc.keys() - _REQUIRED - _OPTIONAL
    if missing or unknown:
        raise errors.BundleInvalid(detail="document fields: " + ", ".join(
            [f"missing {k}" for k in sorted(missing)] + [f"unknown {k}" for k in sorted(unknown)]))
    bundle_id, created_at, generation = doc["bundle_id"], doc["created_at"], doc["generation"]
    if not isinstance(bundle_id, str) or not _HEX32.fullmatch(bundle_id):
        raise errors.BundleInvalid(detail="bundle_id must be 32 hex digits")
    if not isinstance(created_at, str) or parse_time(created_at) is None:
        raise errors.BundleInvalid(detail="created_at must be an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ)")
    if not valid_generation(generation):
        raise errors.BundleInvalid(detail=f"generation must be an integer from 1 to {MAX_GENERATION}")
    creator = doc.get("creator") or {}
    if not isinstance(creator, dict) or not all(isinstance(v, str) for v in creator.values()):
        raise errors.BundleInvalid(detail="creator must be an object of strings")
    source = doc.get("source_vault_id")
    if source is not None and (not isinstance(source, str) or not _HEX32.fullmatch(source)):
        raise errors.BundleInvalid(detail="source_vault_id must be 32 hex digits")
    secrets = _secrets(doc["secrets"])
    signer, canonical_text = _verify_signature(doc, plaintext if verified_before else None)
    parsed = Document(bundle_id, created_at, creator, source, generation, secrets, signer, doc)
    parsed.canonical_text = canonical_text
    return parsed


def _secrets(items: Any) -> list[Secret]:
    """Check and decode every entry (one pass; 10 000 entries are the CI hot path)."""
    if not isinstance(items, list):
        raise errors.BundleInvalid(detail="secrets must be a list")
    out: list[Secret] = []
    append = out.append
    a2b = binascii.a2b_base64
    valid_name = is_valid_secret_name
    max_b64 = (MAX_VALUE_BYTES + 2) // 3 * 4
    previous = ""
    for index, item in enumerate(items):
        if type(item) is not dict or "name" not in item or "value_b64" not in item \
                or (len(item) > 2 and not item.keys() <= _SECRET_KEYS):
            raise errors.BundleInvalid(detail=f"secret #{index + 1}: malformed entry")
        name, value_b64 = item["name"], item["value_b64"]
        if type(name) is not str or not valid_name(name):
            raise errors.BundleInvalid(detail=f"secret #{index + 1}: invalid name")
        if name <= previous:
            raise errors.BundleInvalid(detail=f"secret {name}: names must be sorted and unique")
        previous = name
        revision = item.get("revision", 0)
        updated_at = item.get("updated_at", "")
        if type(revision) is not int or revision < 0 or type(updated_at) is not str or len(updated_at) > 64:
            raise errors.BundleInvalid(detail=f"secret {name}: malformed revision or updated_at")
        if type(value_b64) is not str or len(value_b64) > max_b64:
            raise errors.BundleInvalid(detail=f"secret {name}: value missing or larger than 1 MiB")
        try:
            value = a2b(value_b64, strict_mode=True)
        except (binascii.Error, ValueError):
            raise errors.BundleInvalid(detail=f"secret {name}: value is not base64") from None
        if len(value) > MAX_VALUE_BYTES:
            raise errors.BundleInvalid(detail=f"secret {name}: value larger than 1 MiB")
        append(Secret(name, value, revision, updated_at))
    return out


def _verify_signature(doc: dict[str, Any], verified_text: bytes | None = None) -> tuple[str | None, bytes | None]:
    """The verified signer id (None: unsigned) and the document's canonical serialisation (made
    for the signature; None when unsigned). `verified_text`: the document's canonical
    serialisation, whose signature the caller verified before (`parse`'s `verified_before`)."""
    sig = doc.get("signature")
    if sig is None:
        return None, None
    if not isinstance(sig, dict) or set(sig) != {"alg", "signer", "sig"} or sig["alg"] != "ed25519" \
            or not isinstance(sig["signer"], str) or not isinstance(sig["sig"], str):
        raise errors.BundleInvalid(detail="malformed signature member")
    public = keys.parse_signer(sig["signer"])
    if verified_text is not None:
        return sig["signer"], verified_text
    try:
        raw = base64.b64decode(sig["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise errors.BundleSignatureInvalid() from None
    from .. import crypto

    body, text = sigfmt.canonical_without(doc, "signature")
    if len(raw) != 64 or not crypto.ed25519_verify(public, SIGNATURE_CONTEXT + body, raw):
        raise errors.BundleSignatureInvalid()
    return sig["signer"], text


def check_trust(document: Document, trusted: Iterable[str], *, allow_unsigned: bool) -> None:
    """Trust: a trusted signer, or an explicit --allow-unsigned (with a warning)."""
    from ..output import warn

    if document.signer is None:
        if not allow_unsigned:
            raise errors.BundleUnsigned()
        warn("accepting an unsigned bundle (--allow-unsigned): anyone who knows the recipients could have made it",
             reason="bundle_unsigned_accepted")
        return
    if document.signer not in set(trusted):
        signer = document.signer
        raise errors.BundleSignerUntrusted(
            signer=signer, hint=f"trust it with --trusted-signer {signer} or KIMEN_TRUSTED_SIGNERS={signer}")


def valid_generation(value: object) -> TypeGuard[int]:
    return type(value) is int and 1 <= value <= MAX_GENERATION


def check_max_age(document: Document, max_age_seconds: int | None, now: float | None = None) -> None:
    if max_age_seconds is None:
        return
    created = parse_time(document.created_at)
    assert created is not None  # checked by parse()
    if (now if now is not None else time.time()) - created > max_age_seconds:
        raise errors.BundleExpired(generation=document.generation)


def check_not_in_future(generation: int, now: float | None = None) -> None:
    """A generation a vault records (a stateful open, a seal) may not be over 15 minutes ahead of
    the clock: the vault would then refuse every genuine bundle sealed before that time."""
    limit = int((now if now is not None else time.time()) * 1000) + MAX_FUTURE_MS
    if generation > limit:
        raise errors.GenerationInFuture(generation=generation)
