"""Sync value types, the transport protocol, member ids and scope globs (layer 1).

A remote holds one **head**: a signed bundle document whose `sync` member chains it to the head
before it and carries the team's membership. The types here are that document's parts, read-only
once parsed (`kimen.sync.chain` parses and checks them; `kimen.sync.merge` builds new ones); each
has `to_json()` giving back exactly the JSON it was read from, so a push carries entries it did
not change forward byte for byte.

Scope globs are kimen's one glob grammar (`kimen.globs`) restricted to segments that are each a
literal name segment, `*` (one segment) or `**` (one or more segments, last segment only), and
they are matched by that one matcher. Whether two scope globs overlap — some valid secret name
matches both — is decided segment by segment (`globs_overlap`).

Imports only the standard library and layer-1 kimen modules; never a file, a socket or a vault.
"""

from __future__ import annotations

from binascii import a2b_base64
from itertools import pairwise

from .. import errors
from ..globs import compile_globs, match_any
from ..values import Record, is_valid_secret_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from contextlib import AbstractContextManager
    from typing import Any, Literal, Protocol, TypeGuard

    Role = Literal["admin", "writer", "reader"]
    AcceptOutcome = Literal["first_contact", "unchanged", "advanced"]
else:
    Protocol = object  # the protocols below are structural types for mypy; at run time plain classes

_set = object.__setattr__  # how a `Record`'s __init__ stores its fields (it refuses assignment)


class _Frozen(Record):
    """A `Record` compared and hashed by identity (what a dataclass with `eq=False` was)."""

    __slots__ = ()
    __eq__ = object.__eq__
    __hash__ = object.__hash__

W = 1000  # the log window, and how many seqs a tombstone outlives its deletion
ROLES = ("admin", "writer", "reader")
WRITING_ROLES = frozenset({"admin", "writer"})
NOTES = ("", "genesis", "members", "restore", "revert")

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ID_CHARS = _ID_FIRST | frozenset("_.-")


# -- member ids and scope globs --------------------------------------------------------------


HEX_DIGITS = frozenset("0123456789abcdef")


def is_lower_hex(value: object, length: int) -> TypeGuard[str]:
    """`value` is a text of exactly `length` lower-case hex digits (remote ids, head ids, hashes)."""
    return type(value) is str and len(value) == length and HEX_DIGITS.issuperset(value)


def is_valid_member_id(text: object) -> TypeGuard[str]:
    """`^[a-z0-9][a-z0-9_.-]{0,63}$`."""
    return (isinstance(text, str) and 0 < len(text) <= 64 and text[0] in _ID_FIRST
            and _ID_CHARS.issuperset(text))


def check_member_id(text: str) -> str:
    if not is_valid_member_id(text):
        raise errors.InvalidMemberId(member=text[:72])
    return text


def _witness_segment(segment: str) -> str:
    """The shortest name segment a scope-glob segment matches (a literal matches itself)."""
    return "x" if segment in ("*", "**") else segment


def is_valid_scope_glob(text: object) -> bool:
    if not isinstance(text, str) or not text:
        return False
    segments = text.split(".")
    if "**" in segments[:-1]:
        return False
    literal = ".".join(_witness_segment(s) for s in segments)
    # every segment is now a name segment exactly when the glob's literals were (a '*' inside a
    # segment, or an empty segment, leaves an invalid name); the name rule also refuses a first
    # segment starting with '-' and globs longer than any name
    return "*" not in literal and is_valid_secret_name(literal)


def check_scope_glob(text: str) -> str:
    if not is_valid_scope_glob(text):
        raise errors.InvalidScopeGlob(glob=text[:136])
    return text


def globs_overlap(a: str, b: str) -> bool:
    """True when some valid secret name matches both scope globs (both already valid).

    Segment by segment: two literals must be equal; `*` takes the other side's segment; a
    trailing `**` takes the rest of the other glob (one segment at least). The name built that way
    uses the shortest segment each wildcard allows, so it is the shortest common name; the globs
    overlap exactly when it is a valid name (it may be too long when both carry long literals).
    """
    sa, sb = a.split("."), b.split(".")
    tail_a, tail_b = sa[-1] == "**", sb[-1] == "**"
    fixed_a = sa[:-1] if tail_a else sa
    fixed_b = sb[:-1] if tail_b else sb
    if not tail_a and not tail_b and len(fixed_a) != len(fixed_b):
        return False
    if tail_a and not tail_b and len(fixed_b) <= len(fixed_a):
        return False  # b has no segment left for a's `**`
    if tail_b and not tail_a and len(fixed_a) <= len(fixed_b):
        return False
    witness: list[str] = []
    for i in range(max(len(fixed_a), len(fixed_b))):
        x = fixed_a[i] if i < len(fixed_a) else "*"  # past its fixed part a glob's `**` takes anything
        y = fixed_b[i] if i < len(fixed_b) else "*"
        if x != "*" and y != "*" and x != y:
            return False
        witness.append(x if x != "*" else _witness_segment(y))
    if tail_a and tail_b:
        witness.append("x")  # the longer fixed part's own `**` needs one more segment
    return is_valid_secret_name(".".join(witness))


def scope_overlaps(a: Iterable[str], b: Iterable[str]) -> list[tuple[str, str]]:
    """Every pair (glob of a, glob of b) that overlaps; empty when the two scopes are disjoint."""
    second = list(b)
    return [(x, y) for x in a for y in second if globs_overlap(x, y)]


class Scope:
    """A member's scope: a union of scope globs, matched by kimen's one matcher."""

    __slots__ = ("_compiled", "everything", "globs")

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs = tuple(globs)
        self._compiled = compile_globs(self.globs)
        self.everything = "**" in self.globs  # covers every name: no match per name needed

    def __repr__(self) -> str:
        return f"Scope({list(self.globs)!r})"

    def covers(self, name: str) -> bool:
        return self.everything or match_any(self._compiled, name)


# -- the parts of a head -----------------------------------------------------------------------


class Member(Record):
    __slots__ = ("id", "recipient", "role", "scope", "signer")
    id: str
    role: Role
    recipient: str
    signer: str | None
    scope: tuple[str, ...]

    def __init__(self, id: str, role: Role, recipient: str, signer: str | None, scope: tuple[str, ...]) -> None:
        _set(self, "id", id)
        _set(self, "role", role)
        _set(self, "recipient", recipient)
        _set(self, "signer", signer)
        _set(self, "scope", scope)

    @property
    def can_write(self) -> bool:
        return self.role in WRITING_ROLES

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "recipient": self.recipient, "signer": self.signer,
                "scope": list(self.scope)}


class MembershipRecord(Record):
    """One membership, signed by an admin of the record before it (record 1: by one of its own)."""

    __slots__ = ("epoch", "members", "prev", "remote_id", "seq", "sig", "signer")
    epoch: int
    seq: int
    remote_id: str
    prev: str | None
    members: tuple[Member, ...]
    signer: str
    sig: str

    def __init__(self, epoch: int, seq: int, remote_id: str, prev: str | None, members: tuple[Member, ...],
                 signer: str, sig: str) -> None:
        _set(self, "epoch", epoch)
        _set(self, "seq", seq)
        _set(self, "remote_id", remote_id)
        _set(self, "prev", prev)
        _set(self, "members", members)
        _set(self, "signer", signer)
        _set(self, "sig", sig)

    def body(self) -> dict[str, Any]:
        """The record without `sig`: what the signature covers."""
        return {"epoch": self.epoch, "seq": self.seq, "remote_id": self.remote_id, "prev": self.prev,
                "members": [m.to_json() for m in self.members], "signer": self.signer}

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "sig": self.sig}

    def member(self, member_id: str) -> Member | None:
        for member in self.members:
            if member.id == member_id:
                return member
        return None

    def ids(self) -> frozenset[str]:
        return frozenset(m.id for m in self.members)

    def admin_signers(self) -> frozenset[str]:
        return frozenset(m.signer for m in self.members if m.role == "admin" and m.signer is not None)


class Entry(Record):
    """A secret of a head: `revision` is the seq of its last change, `by` the member who made it."""

    __slots__ = ("by", "name", "revision", "updated_at", "value_b64")
    name: str
    value_b64: str
    revision: int
    by: str
    updated_at: str

    def __init__(self, name: str, value_b64: str, revision: int, by: str, updated_at: str) -> None:
        _set(self, "name", name)
        _set(self, "value_b64", value_b64)
        _set(self, "revision", revision)
        _set(self, "by", by)
        _set(self, "updated_at", updated_at)

    def __repr__(self) -> str:  # never the value
        return f"Entry({self.name!r}, revision={self.revision}, by={self.by!r})"

    def __eq__(self, other: object) -> bool:  # Record's, without building two tuples: heads compare 10 000s
        return type(other) is Entry and self.revision == other.revision and self.value_b64 == other.value_b64 \
            and self.by == other.by and self.updated_at == other.updated_at and self.name == other.name

    __hash__ = Record.__hash__

    @property
    def value(self) -> bytes:
        return a2b_base64(self.value_b64)  # what base64.b64decode does, without importing base64

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "value_b64": self.value_b64, "revision": self.revision, "by": self.by,
                "updated_at": self.updated_at}


class Tombstone(Record):
    __slots__ = ("by", "name", "seq")
    name: str
    seq: int
    by: str

    def __init__(self, name: str, seq: int, by: str) -> None:
        _set(self, "name", name)
        _set(self, "seq", seq)
        _set(self, "by", by)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seq": self.seq, "by": self.by}


class RotationDue(Record):
    """A name a removed member could read, until a later head sets or deletes it."""

    __slots__ = ("name", "removed", "since_seq")
    name: str
    since_seq: int
    removed: tuple[str, ...]

    def __init__(self, name: str, since_seq: int, removed: tuple[str, ...]) -> None:
        _set(self, "name", name)
        _set(self, "since_seq", since_seq)
        _set(self, "removed", removed)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "since_seq": self.since_seq, "removed": list(self.removed)}


class LogEntry(Record):
    """Names only: which head, after which, by whom, and which names it set and deleted."""

    __slots__ = ("at", "by", "deleted", "members", "note", "parent", "seq", "set")
    seq: int
    parent: str | None
    by: str
    at: str
    set: tuple[str, ...]
    deleted: tuple[str, ...]
    members: bool
    note: str

    def __init__(self, seq: int, parent: str | None, by: str, at: str, set: tuple[str, ...],
                 deleted: tuple[str, ...], members: bool, note: str) -> None:
        _set(self, "seq", seq)
        _set(self, "parent", parent)
        _set(self, "by", by)
        _set(self, "at", at)
        _set(self, "set", set)
        _set(self, "deleted", deleted)
        _set(self, "members", members)
        _set(self, "note", note)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "parent": self.parent, "by": self.by, "at": self.at, "set": list(self.set),
                "del": list(self.deleted), "members": self.members, "note": self.note}


class SyncMember(Record):
    __slots__ = ("by", "format", "log", "membership", "parent", "remote_id", "rotation_due", "seq", "tombstones")
    format: int
    remote_id: str
    seq: int
    parent: str | None
    by: str
    membership: tuple[MembershipRecord, ...]
    tombstones: tuple[Tombstone, ...]
    rotation_due: tuple[RotationDue, ...]
    log: tuple[LogEntry, ...]

    def __init__(self, format: int, remote_id: str, seq: int, parent: str | None, by: str,
                 membership: tuple[MembershipRecord, ...], tombstones: tuple[Tombstone, ...],
                 rotation_due: tuple[RotationDue, ...], log: tuple[LogEntry, ...]) -> None:
        _set(self, "format", format)
        _set(self, "remote_id", remote_id)
        _set(self, "seq", seq)
        _set(self, "parent", parent)
        _set(self, "by", by)
        _set(self, "membership", membership)
        _set(self, "tombstones", tombstones)
        _set(self, "rotation_due", rotation_due)
        _set(self, "log", log)

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "remote_id": self.remote_id, "seq": self.seq, "parent": self.parent,
                "by": self.by, "membership": [r.to_json() for r in self.membership],
                "tombstones": [t.to_json() for t in self.tombstones],
                "rotation_due": [r.to_json() for r in self.rotation_due], "log": [e.to_json() for e in self.log]}


class Head(_Frozen):
    """A parsed head: the document's own fields, its entries by name, and its `sync` member.

    `id` is the head id: SHA-256 of the canonical serialisation of the whole decrypted document,
    signature included. `signer` is the verified signer id of the document signature.
    """

    __slots__ = ("bundle_id", "created_at", "creator", "entries", "generation", "id", "signer", "sync")
    id: str
    bundle_id: str
    created_at: str
    generation: int
    creator: Mapping[str, str]
    signer: str
    entries: Mapping[str, Entry]
    sync: SyncMember

    def __init__(self, id: str, bundle_id: str, created_at: str, generation: int, creator: Mapping[str, str],
                 signer: str, entries: Mapping[str, Entry], sync: SyncMember) -> None:
        _set(self, "id", id)
        _set(self, "bundle_id", bundle_id)
        _set(self, "created_at", created_at)
        _set(self, "generation", generation)
        _set(self, "creator", creator)
        _set(self, "signer", signer)
        _set(self, "entries", entries)
        _set(self, "sync", sync)

    def __repr__(self) -> str:
        return f"Head(seq={self.sync.seq}, id={self.id[:12]}…, entries={len(self.entries)})"

    @property
    def seq(self) -> int:
        return self.sync.seq

    @property
    def remote_id(self) -> str:
        return self.sync.remote_id

    @property
    def by(self) -> str:
        return self.sync.by

    @property
    def current(self) -> MembershipRecord:
        """The current membership: the last record."""
        return self.sync.membership[-1]

    def membership_at(self, seq: int) -> MembershipRecord:
        """The last record whose `seq` ≤ `seq` (record 1 for anything before it)."""
        found = self.sync.membership[0]
        for record in self.sync.membership:
            if record.seq > seq:
                break
            found = record
        return found

    @property
    def parent_membership(self) -> MembershipRecord:
        """The membership that authorises this head: the one at `seq` - 1 (genesis: record 1)."""
        return self.membership_at(self.seq - 1)

    def tombstone_map(self) -> dict[str, Tombstone]:
        return {t.name: t for t in self.sync.tombstones}


# -- what a puller remembers, and what it concludes ----------------------------------------------


class KnownHead(Record):
    """The highest head accepted for a remote (the larger of the vault's sync state and the ratchet)."""

    __slots__ = ("epoch", "generation", "head_id", "record_hash", "remote_id", "seq")
    remote_id: str
    seq: int
    head_id: str
    generation: int
    epoch: int
    record_hash: str

    def __init__(self, remote_id: str, seq: int, head_id: str, generation: int, epoch: int,
                 record_hash: str) -> None:
        _set(self, "remote_id", remote_id)
        _set(self, "seq", seq)
        _set(self, "head_id", head_id)
        _set(self, "generation", generation)
        _set(self, "epoch", epoch)
        _set(self, "record_hash", record_hash)


class Acceptance(_Frozen):
    """An accepted head. `outcome`: `first_contact` (no known head), `unchanged` (the known head
    itself) or `advanced` (it descends from the known head). `pin_remote_id` is set on first contact
    with a remote whose id was not configured: the caller pins it (and warns)."""

    __slots__ = ("head", "outcome", "pin_remote_id")
    head: Head
    outcome: AcceptOutcome
    pin_remote_id: str | None

    def __init__(self, head: Head, outcome: AcceptOutcome, pin_remote_id: str | None) -> None:
        _set(self, "head", head)
        _set(self, "outcome", outcome)
        _set(self, "pin_remote_id", pin_remote_id)


class SyncState(Record):
    """The vault's sync state of one remote, in the column order its MAC covers."""

    __slots__ = ("endpoint", "epoch", "head_generation", "head_id", "head_rev", "head_seq", "last_local_rev",
                 "member", "members_fp", "record_hash", "remote", "remote_id", "role", "rotation_due_count", "scope",
                 "updated_at")
    remote: str
    remote_id: str
    endpoint: str
    head_seq: int
    head_id: str
    head_rev: str
    head_generation: int
    epoch: int
    record_hash: str
    members_fp: str
    member: str
    role: str
    scope: tuple[str, ...]
    rotation_due_count: int
    last_local_rev: str | None
    updated_at: str

    def __init__(self, remote: str, remote_id: str, endpoint: str, head_seq: int, head_id: str, head_rev: str,
                 head_generation: int, epoch: int, record_hash: str, members_fp: str, member: str, role: str,
                 scope: tuple[str, ...], rotation_due_count: int, last_local_rev: str | None,
                 updated_at: str) -> None:
        _set(self, "remote", remote)
        _set(self, "remote_id", remote_id)
        _set(self, "endpoint", endpoint)
        _set(self, "head_seq", head_seq)
        _set(self, "head_id", head_id)
        _set(self, "head_rev", head_rev)
        _set(self, "head_generation", head_generation)
        _set(self, "epoch", epoch)
        _set(self, "record_hash", record_hash)
        _set(self, "members_fp", members_fp)
        _set(self, "member", member)
        _set(self, "role", role)
        _set(self, "scope", scope)
        _set(self, "rotation_due_count", rotation_due_count)
        _set(self, "last_local_rev", last_local_rev)
        _set(self, "updated_at", updated_at)

    # `last_local_rev` is the column's text: the local revision at the last sync, then, when the
    # commit recorded it (every commit since the rows stamp exists), ":" and the rows stamp of the
    # vault it was computed over (`kimen.vault.syncrows.rows_stamp`); the MAC covers the whole text.

    @property
    def recorded_rev(self) -> str | None:
        """The local revision of the last sync (None: a local change was left, or no sync yet)."""
        return self.last_local_rev.partition(":")[0] or None if self.last_local_rev else None

    @property
    def recorded_stamp(self) -> str | None:
        """The rows stamp `recorded_rev` was computed at (None: not recorded, an older kimen's row)."""
        return self.last_local_rev.partition(":")[2] or None if self.last_local_rev else None


# -- signing and signed documents (implemented by kimen.bundle; structural here) ---------------


class Signer(Protocol):
    """An identity that signs (kimen.bundle.keys.Identity)."""

    @property
    def signer(self) -> str | None: ...

    def sign(self, message: bytes) -> bytes: ...


class SignedDocument(Protocol):
    """A parsed bundle document whose signature was verified (kimen.bundle.document.Document):
    `raw` the decoded JSON object, `signer` the verified signer id or None when unsigned."""

    @property
    def raw(self) -> Mapping[str, Any]: ...

    @property
    def signer(self) -> str | None: ...


# -- transports --------------------------------------------------------------------------------


LOCK_WAIT = 10.0  # seconds a push waits for a remote's lock (`--lock-wait`)


def remote_rev(data: bytes) -> str:
    """The remote rev of a head file: SHA-256 of its bytes (computable without decrypting)."""
    import hashlib  # here: `hashlib` loads OpenSSL, which most readers of this module never use

    return hashlib.sha256(data).hexdigest()


class RemoteHead(_Frozen):
    """The bytes of the current head file, its remote rev, and (git) the commit that holds it."""

    __slots__ = ("commit", "data", "rev")
    data: bytes
    rev: str
    commit: str | None

    def __init__(self, data: bytes, rev: str, commit: str | None = None) -> None:
        _set(self, "data", data)
        _set(self, "rev", rev)
        _set(self, "commit", commit)

    def __repr__(self) -> str:
        return f"RemoteHead(rev={self.rev[:12]}…, {len(self.data)} bytes)"


class HeadRev(Record):
    """What `sync status` needs of the current head: its remote rev and (git) its commit."""

    __slots__ = ("commit", "rev")
    rev: str
    commit: str | None

    def __init__(self, rev: str, commit: str | None = None) -> None:
        _set(self, "rev", rev)
        _set(self, "commit", commit)


class Published(HeadRev):  # no slots of its own: HeadRev's are the ones `Record` compares
    """The new head was written and read back: `rev` is its remote rev."""


class LostRace(Record):
    """Another push moved the head first (`actual_rev`; None when the remote has no head)."""

    __slots__ = ("actual_rev",)
    actual_rev: str | None

    def __init__(self, actual_rev: str | None) -> None:
        _set(self, "actual_rev", actual_rev)


PublishResult = Published | LostRace


class ProbeReport(Record):
    """A transport's check of its location (locking, atomic rename, reachability): warnings only;
    a location that cannot work raises its reason instead."""

    __slots__ = ("location", "warnings")
    location: str
    warnings: tuple[str, ...]

    def __init__(self, location: str, warnings: tuple[str, ...] = ()) -> None:
        _set(self, "location", location)
        _set(self, "warnings", warnings)


class Transport(Protocol):
    """One remote location (fs: a directory or `.age` file; git: a branch of a repository).

    A push runs "read the head, accept and merge it, build the next head, publish" inside
    `locked()`: fs holds the remote's lock for that whole span, git needs none (its push is never
    forced, so a head that moved meanwhile is a lost race). `publish` also takes the lock itself
    when called outside `locked()`.
    """

    kind: str
    location: str  # for messages: a path, or a URL without credentials

    def read_head(self) -> RemoteHead | None:
        """The current head (fs: the file; git: a fetch), checked by the transport checks (Git LFS
        pointer, size, age header), or None when the location holds none. Never a cached answer."""
        ...

    def head_rev(self, known: Callable[[bytes], str | None] | None = None) -> HeadRev | None:
        """The current head's remote rev (and commit), as `read_head` would give them: fs reads the
        file; git asks `ls-remote` for the commit and reads the file only when it is not the
        commit kimen last read or pushed (whose rev it keeps: the same commit id is the same file).
        A file read is hashed unless `known(data)` gives its rev (the bytes of a head this
        machine kept)."""
        ...

    def locked(self, wait: float | None = None) -> AbstractContextManager[None]:
        """Hold the remote's push lock, waiting up to `wait` seconds for it (None: the transport's
        lock wait, `--lock-wait`), else `remote_lock_present`."""
        ...

    def publish(self, new: bytes, expected_rev: str | None, *, seq: int, by: str,
                expected_seq: int | None) -> PublishResult:
        """Replace the head whose rev is `expected_rev` (None: no head yet) and whose seq is
        `expected_seq` by `new` (seq `seq`, signed by member `by`), never forcing: `Published` once
        the new head reads back, `LostRace` when the head was not `expected_rev`."""
        ...

    def history(self, seq: int) -> bytes | None:
        """An older head by its seq, when the location still keeps it (checked like `read_head`)."""
        ...

    def probe(self) -> ProbeReport: ...


def sorted_unique(items: Sequence[str]) -> bool:
    """True when `items` is strictly ascending (sorted, no duplicates)."""
    return all(a < b for a, b in pairwise(items))
