"""Shared pieces of the sync unit tests: real identities (made at test time), heads built by
kimen.sync.merge, signed and parsed by kimen.bundle.document exactly as a puller sees them."""

from __future__ import annotations

import copy
import time
from typing import Any

from kimen.bundle import document, keys
from kimen.sigfmt import canonical
from kimen.sync import chain, merge
from kimen.sync.base import Head, Member

NOW = 1_800_000_000  # seconds; every head is dated from here on
REMOTE_ID = "0123456789abcdef0123456789abcdef"
CREATOR = {"user": "test", "host": "test", "kimen": "0"}

_POOL: dict[str, keys.Identity] = {}


def identity(name: str) -> keys.Identity:
    """One X25519 identity per person name, generated once per test process."""
    if name not in _POOL:
        _POOL[name] = keys.generate()[0]
    return _POOL[name]


def member(name: str, role: str = "writer", scope: tuple[str, ...] = ("**",)) -> Member:
    ident = identity(name)
    return Member(name, role, ident.recipient, ident.signer, scope)  # type: ignore[arg-type]


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def sign(doc: dict[str, Any], signer: str) -> document.Document:
    """Sign `doc` as `signer` and parse it back through the bundle layer (signature verified)."""
    signed = copy.deepcopy(doc)
    document.sign(signed, identity(signer))
    return document.parse(canonical(signed))


def resign(doc: document.Document, signer: str, mutate) -> document.Document:
    """A copy of a head's document changed by `mutate(raw)`, then signed again by `signer`."""
    raw = copy.deepcopy(doc.raw)
    raw["signature"] = None
    mutate(raw)
    return sign(raw, signer)


class Chain:
    """A remote's heads as the tests build them: genesis by `admin`, then pushes."""

    def __init__(self, admin: str = "ana", scope: tuple[str, ...] = ("**",)) -> None:
        self.clock = NOW
        doc = merge.build_genesis(member(admin, "admin", scope), identity(admin), at=rfc3339(self.clock),
                                  now_ms=self.clock * 1000, creator=CREATOR, remote_id=REMOTE_ID)
        self.docs = [sign(doc, admin)]
        self.heads = [chain.parse_head(self.docs[0])]

    @property
    def head(self) -> Head:
        return self.heads[-1]

    @property
    def doc(self) -> document.Document:
        return self.docs[-1]

    def build(self, author: str, changes: dict[str, bytes | None] | None = None, *, parent: Head | None = None,
              membership: merge.MembershipChange | None = None, note: str | None = None) -> document.Document:
        """The next head after `parent` (default: the current head), signed by `author`; not appended."""
        self.clock += 1
        doc = merge.build_next(parent or self.head, author=author, changes=changes or {}, at=rfc3339(self.clock),
                               now_ms=self.clock * 1000, creator=CREATOR, membership=membership,
                               signer=identity(author) if membership is not None else None, note=note)
        return sign(doc, author)

    def push(self, author: str, changes: dict[str, bytes | None] | None = None, **kw: Any) -> Head:
        """Build, accept against the known head (with the parent's content), and append."""
        doc = self.build(author, changes, **kw)
        accepted = chain.accept(doc, chain.known_head(self.head), REMOTE_ID, self.clock, 900, kept=lambda: self.head)
        assert accepted.outcome == "advanced"
        self.docs.append(doc)
        self.heads.append(accepted.head)
        return accepted.head

    def accept(self, doc: document.Document, known: Head | None = None, **kw: Any):
        """Accept `doc` against `known` (default: the current head) at this chain's clock."""
        known = known if known is not None else self.head
        return chain.accept(doc, chain.known_head(known), kw.pop("remote_id", REMOTE_ID), self.clock,
                            kw.pop("max_skew", 900), **kw)
