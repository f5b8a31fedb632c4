"""The `sync` member of a head, membership records, join requests and the acceptance rule (layer 2).

A head is a signed bundle document (kimen.bundle.document parses it and verifies its signature)
with a `sync` member: `format`, `remote_id`, `seq`, `parent` (head id of the previous head), `by`
(the signer's member id), `membership` (every record since genesis, each signed by an admin of the
record before it), `tombstones`, `rotation_due` and a names-only `log` of the last `W` heads.
`parse_head` checks every field rule (`bundle_invalid`); `accept` then applies, in order, the
remote, membership-chain, author, writes, clock and order checks a puller needs before anything
is written. docs/sync.md ("Design") states the rules for users.

Signatures are Ed25519 through kimen.crypto; canonical JSON and signer ids come from
kimen.sigfmt. Nothing here reads or writes a file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from itertools import pairwise

from .. import crypto, errors, sigfmt
from ..durations import parse_time
from ..sigfmt import canonical
from ..values import MAX_VALUE_BYTES, is_valid_secret_name
from .base import (
    NOTES,
    ROLES,
    WRITING_ROLES,
    Acceptance,
    Entry,
    Head,
    KnownHead,
    LogEntry,
    Member,
    MembershipRecord,
    RotationDue,
    Scope,
    SyncMember,
    Tombstone,
    W,
    check_member_id,
    is_lower_hex,
    is_valid_member_id,
    is_valid_scope_glob,
    sorted_unique,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Any, NoReturn

    from .base import AcceptOutcome, Role, SignedDocument, Signer

FORMAT = 1
BUNDLE_VERSION = 1  # the document's `kimen_bundle` (kimen.bundle.document.VERSION)
MAX_SEQ = 2**53 - 1
MEMBERS_CONTEXT = b"kimen-members-v1\x00"
MEMBERS_FP_CONTEXT = b"kimen-members-fp-v1\x00"
JOIN_CONTEXT = b"kimen-join-v1\x00"
JOIN_PREFIX = "kimen-join-v1:"
MAX_JOIN_REQUEST = 4096

_SYNC_KEYS = frozenset({"format", "remote_id", "seq", "parent", "by", "membership", "tombstones",
                        "rotation_due", "log"})
_RECORD_KEYS = frozenset({"epoch", "seq", "remote_id", "prev", "members", "signer", "sig"})
_MEMBER_KEYS = frozenset({"id", "role", "recipient", "signer", "scope"})
_ENTRY_KEYS = frozenset({"name", "value_b64", "revision", "by", "updated_at"})
_TOMBSTONE_KEYS = frozenset({"name", "seq", "by"})
_ROTATION_KEYS = frozenset({"name", "since_seq", "removed"})
_LOG_KEYS = frozenset({"seq", "parent", "by", "at", "set", "del", "members", "note"})
_JOIN_KEYS = frozenset({"member", "recipient", "signer", "remote_id", "created_at"})
_BECH32 = frozenset("qpzry9x8gf2tvdw0s3jn54khce6mua7l")
_SSH_ED25519_BLOB = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
_SSH_CANNOT_SIGN = "use an age (X25519) identity: ssh-ed25519 identities cannot sign"


# -- hashes and fingerprints -------------------------------------------------------------------


def head_id(raw: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical serialisation of the whole decrypted document, signature included."""
    return hashlib.sha256(canonical(raw)).hexdigest()


def record_hash(record: MembershipRecord) -> str:
    """What the next record's `prev` names: SHA-256 of the record's canonical form, `sig` included."""
    return hashlib.sha256(canonical(record.to_json())).hexdigest()


def members_fp(members: Iterable[Member]) -> str:
    """The fingerprint `sync pin` and `members ack` compare: SHA-256 over a context and the members."""
    return hashlib.sha256(MEMBERS_FP_CONTEXT + canonical([m.to_json() for m in members])).hexdigest()


def known_head(head: Head) -> KnownHead:
    """What a puller remembers of an accepted head (vault sync state and ratchet)."""
    return KnownHead(remote_id=head.remote_id, seq=head.seq, head_id=head.id, generation=head.generation,
                     epoch=head.current.epoch, record_hash=record_hash(head.current))


# -- members and records -----------------------------------------------------------------------


def is_x25519_recipient(text: object) -> bool:
    """`age1` + 58 bech32 characters (the form; pyrage checks the key when it encrypts)."""
    return isinstance(text, str) and len(text) == 62 and text.startswith("age1") and _BECH32.issuperset(text[4:])


def _is_ssh_recipient(text: str) -> bool:
    """`ssh-ed25519 <base64 key blob>` without a comment (kimen.bundle.keys' canonical form)."""
    kind, _, blob = text.partition(" ")
    if kind != "ssh-ed25519" or len(blob) != 68:
        return False
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) == 51 and raw.startswith(_SSH_ED25519_BLOB)


def check_member(member: Member) -> Member:
    """A member's own rules: id, recipient and signer for the role, scope — each with its own reason
    (an unknown role is a ValueError: only a document can carry one)."""
    if not is_valid_member_id(member.id):
        raise errors.InvalidMemberId(member=str(member.id)[:72])
    if member.role not in ROLES:
        raise ValueError(f"member {member.id}: unknown role")
    if not isinstance(member.recipient, str) or not (
            is_x25519_recipient(member.recipient)
            or (member.role == "reader" and _is_ssh_recipient(member.recipient))):
        need = "an age1... recipient" if member.role in WRITING_ROLES else "an age1... or ssh-ed25519 recipient"
        raise errors.InvalidRecipient(detail=f"member {member.id}: {member.role}s need {need}")
    if member.signer is None:
        if member.role in WRITING_ROLES:
            raise errors.InvalidSigner(detail=f"member {member.id}: {member.role}s need a signer id")
    else:
        sigfmt.parse_signer(member.signer)
        if member.signer != member.signer.strip():
            raise errors.InvalidSigner(detail=f"member {member.id}: signer id has surrounding blanks")
    if not member.scope or len(set(member.scope)) != len(member.scope):
        raise errors.InvalidScopeGlob(glob=",".join(member.scope))
    for glob in member.scope:
        if not is_valid_scope_glob(glob):
            raise errors.InvalidScopeGlob(glob=str(glob)[:136])
    return member


def check_members(members: Sequence[Member]) -> None:
    """A membership's rules: sorted by id, ids, recipients and signers unique, at least one admin."""
    if not sorted_unique([m.id for m in members]):
        raise ValueError("members must be sorted by id, ids unique")
    seen: dict[str, str] = {}
    for member in members:
        for key in (member.recipient, member.signer):
            if key is not None and seen.setdefault(key, member.id) != member.id:
                raise errors.MemberExists(f"{member.id} has the recipient or signer of {seen[key]}",
                                          member=seen[key])
    if not any(m.role == "admin" for m in members):
        raise errors.SyncLastAdmin("a membership needs at least one admin", member="")


def record_message(body: Mapping[str, Any]) -> bytes:
    return MEMBERS_CONTEXT + canonical(body)


def sign_record(*, epoch: int, seq: int, remote_id: str, prev: str | None, members: Sequence[Member],
                signer: Signer) -> MembershipRecord:
    """A new membership record signed by `signer` (an admin of the previous record)."""
    signer_id = signer.signer
    if signer_id is None:
        raise errors.MissingSigningIdentity(hint=_SSH_CANNOT_SIGN)
    ordered = tuple(sorted(members, key=lambda m: m.id))
    for member in ordered:
        check_member(member)
    check_members(ordered)
    unsigned = MembershipRecord(epoch, seq, remote_id, prev, ordered, signer_id, "")
    sig = base64.b64encode(signer.sign(record_message(unsigned.body()))).decode("ascii")
    return MembershipRecord(epoch, seq, remote_id, prev, ordered, signer_id, sig)


def verify_record(record: MembershipRecord) -> bool:
    """True when `sig` is a valid Ed25519 signature by `record.signer` over the record body."""
    try:
        public = sigfmt.parse_signer(record.signer)
        raw = base64.b64decode(record.sig, validate=True)
    except (errors.KimenError, binascii.Error, ValueError):
        return False
    return len(raw) == 64 and crypto.ed25519_verify(public, record_message(record.body()), raw)


# -- parsing the `sync` member (field rules: bundle_invalid) ----------------------------------


def _bad(detail: str) -> NoReturn:
    raise errors.BundleInvalid(detail=detail)


def _obj(value: Any, keys: frozenset[str], what: str) -> dict[str, Any]:
    if type(value) is not dict or value.keys() != keys:
        _bad(f"{what}: malformed (fields: {', '.join(sorted(keys))})")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        _bad(f"{what} must be a list")
    return value


def _int(value: Any, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        _bad(f"{what} must be an integer in {low}..{high}")
    return value


def _hex(value: Any, length: int, what: str) -> str:
    if not is_lower_hex(value, length):
        _bad(f"{what} must be {length} lower-case hex digits")
    return value


def _link(value: Any, first: bool, what: str) -> str | None:
    """A hash naming what came before: null exactly for the first of a chain."""
    if first:
        if value is not None:
            _bad(f"{what} must be null for the first of its chain")
        return None
    return _hex(value, 64, what)


def _member_id(value: Any, what: str) -> str:
    if not is_valid_member_id(value):
        _bad(f"{what} is not a valid member id")
    return value


def _names(value: Any, what: str) -> tuple[str, ...]:
    items = _list(value, what)
    if not all(type(n) is str and is_valid_secret_name(n) for n in items) or not sorted_unique(items):
        _bad(f"{what} must be sorted, unique, valid secret names")
    return tuple(items)


def _parse_member(value: Any, what: str) -> Member:
    item = _obj(value, _MEMBER_KEYS, what)
    scope = _list(item["scope"], f"{what} scope")
    role: Role = item["role"]  # checked by check_member
    if not all(type(g) is str for g in scope) or not (item["signer"] is None or type(item["signer"]) is str):
        _bad(f"{what}: malformed")
    member = Member(_member_id(item["id"], f"{what} id"), role, item["recipient"], item["signer"], tuple(scope))
    try:
        return check_member(member)
    except errors.KimenError as exc:
        _bad(f"{what}: {exc.message}")
    except ValueError as exc:
        _bad(f"{what}: {exc}")


def _parse_record(value: Any, epoch: int, head_seq: int) -> MembershipRecord:
    what = f"membership record {epoch}"
    item = _obj(value, _RECORD_KEYS, what)
    if type(item["epoch"]) is not int or item["epoch"] != epoch:
        _bad(f"{what}: epoch must be its position ({epoch})")
    seq = _int(item["seq"], 1, head_seq, f"{what} seq")
    remote_id = _hex(item["remote_id"], 32, f"{what} remote_id")
    prev = _link(item["prev"], epoch == 1, f"{what} prev")
    members = tuple(_parse_member(m, f"{what} member #{i + 1}")
                    for i, m in enumerate(_list(item["members"], f"{what} members")))
    try:
        check_members(members)
    except errors.KimenError as exc:
        _bad(f"{what}: {exc.message}")
    except ValueError as exc:
        _bad(f"{what}: {exc}")
    signer, sig = item["signer"], item["sig"]
    if type(signer) is not str or type(sig) is not str:
        _bad(f"{what}: malformed signature")
    try:
        sigfmt.parse_signer(signer)
    except errors.KimenError:
        _bad(f"{what}: malformed signer id")
    return MembershipRecord(epoch, seq, remote_id, prev, members, signer, sig)


def _parse_entry(value: Any, head_seq: int, ids: set[str]) -> Entry:
    # kimen.bundle.document checked the name, order, value and types; a head's entry has every field.
    # The checks of 10 000 entries are one head's read: the messages are formatted only on failure,
    # and each member id (`ids`: those already checked in this head) is checked once.
    if type(value) is not dict or value.keys() != _ENTRY_KEYS:
        _obj(value, _ENTRY_KEYS, f"secret {value.get('name') if type(value) is dict else '?'}")
    name, value_b64, revision, by, updated_at = (value["name"], value["value_b64"], value["revision"], value["by"],
                                                 value["updated_at"])
    if type(revision) is not int or not 1 <= revision <= head_seq:
        _int(revision, 1, head_seq, f"secret {name} revision")
    if type(value_b64) is not str or len(value_b64) > (MAX_VALUE_BYTES + 2) // 3 * 4 or type(updated_at) is not str:
        _bad(f"secret {name}: malformed")
    if type(by) is not str or by not in ids:
        ids.add(_member_id(by, f"secret {name} by"))
    return Entry(name, value_b64, revision, by, updated_at)


def _parse_log_entry(value: Any) -> LogEntry:
    item = _obj(value, _LOG_KEYS, "log entry")
    seq = _int(item["seq"], 1, MAX_SEQ, "log entry seq")
    what = f"log entry {seq}"
    parent = _link(item["parent"], seq == 1, f"{what} parent")
    if parse_time(item["at"]) is None:
        _bad(f"{what}: at must be an RFC 3339 UTC time")
    set_names, del_names = _names(item["set"], f"{what} set"), _names(item["del"], f"{what} del")
    if set(set_names) & set(del_names):
        _bad(f"{what}: a name both set and deleted")
    if type(item["members"]) is not bool or item["note"] not in NOTES:
        _bad(f"{what}: malformed members or note")
    if (item["note"] == "genesis") != (seq == 1):
        _bad(f"{what}: note genesis is for seq 1 only, and seq 1 is genesis")
    return LogEntry(seq, parent, _member_id(item["by"], f"{what} by"), item["at"], set_names, del_names,
                    item["members"], item["note"])


def parse_head(doc: SignedDocument, canonical_text: bytes | None = None, *,
               built_from: Head | None = None) -> Head:
    """A head from a parsed, signature-verified document: every field rule of the `sync` member.
    `canonical_text`: the document's canonical serialisation when the caller made it (a head it
    just built; a parsed document's `canonical_text`, made to check its signature, is taken
    when present), so its id needs no second encoding. `built_from` (the accepted head this member
    just built this one from): an entry equal field for field to its entry of the same name is
    that entry — the same values passed the same rules there, at a seq below this one's.

    No `sync` member → `sync_not_a_sync_document`; unsigned → `bundle_unsigned`; any broken rule →
    `bundle_invalid`. Chain checks that need more than the document itself are `accept`'s.
    """
    raw = doc.raw
    if "sync" not in raw:
        raise errors.SyncNotASyncDocument()
    signer = doc.signer
    if signer is None:
        raise errors.BundleUnsigned(hint="a team head must be signed by a writer; --allow-unsigned does not apply")
    sync = raw["sync"]
    if type(sync) is dict and "format" in sync and type(sync["format"]) is int and sync["format"] != FORMAT:
        raise errors.BundleUnsupported(detail=f"sync format {sync['format']} (this kimen reads {FORMAT})")
    sync = _obj(sync, _SYNC_KEYS, "sync member")
    if type(sync["format"]) is not int or sync["format"] != FORMAT:
        _bad("sync format must be 1")
    if parse_time(raw["created_at"]) is None:
        _bad("created_at must be an RFC 3339 UTC time")
    seq = _int(sync["seq"], 1, MAX_SEQ, "sync seq")
    remote_id = _hex(sync["remote_id"], 32, "sync remote_id")
    parent = _link(sync["parent"], seq == 1, "sync parent")
    by = _member_id(sync["by"], "sync by")

    records = _list(sync["membership"], "sync membership")
    if not records:
        _bad("sync membership is empty")
    membership = tuple(_parse_record(r, i + 1, seq) for i, r in enumerate(records))
    if membership[0].seq != 1 or any(a.seq > b.seq for a, b in pairwise(membership)):
        _bad("membership record seqs must start at 1 and never decrease")

    ids: set[str] = set()
    if built_from is None or built_from.seq >= seq:
        entries = {e.name: e for e in (_parse_entry(item, seq, ids) for item in raw["secrets"])}
    else:
        entries = {}
        carried = built_from.entries.get
        for item in raw["secrets"]:
            entry = carried(item["name"]) if type(item) is dict and "name" in item else None
            if entry is None or item.keys() != _ENTRY_KEYS or item["value_b64"] != entry.value_b64 \
                    or item["revision"] != entry.revision or item["by"] != entry.by \
                    or item["updated_at"] != entry.updated_at or type(item["revision"]) is not int:
                entry = _parse_entry(item, seq, ids)
            entries[entry.name] = entry

    tombstones = tuple(_parse_tombstone(t, seq) for t in _list(sync["tombstones"], "sync tombstones"))
    if not sorted_unique([t.name for t in tombstones]):
        _bad("tombstones must be sorted by name, names unique")
    if any(t.name in entries for t in tombstones):
        _bad("a tombstoned name is also a secret")

    rotation_due = tuple(_parse_rotation(r, seq) for r in _list(sync["rotation_due"], "sync rotation_due"))
    if not sorted_unique([r.name for r in rotation_due]):
        _bad("rotation_due must be sorted by name, names unique")
    if any(r.name not in entries for r in rotation_due):
        _bad("rotation_due names a name that is not a secret")

    log = tuple(_parse_log_entry(e) for e in _list(sync["log"], "sync log"))
    _check_log(log, seq=seq, parent=parent, by=by, created_at=raw["created_at"], entries=entries.values(),
               tombstones=tombstones, introduces_record=membership[-1].seq == seq)

    sync_member = SyncMember(FORMAT, remote_id, seq, parent, by, membership, tombstones, rotation_due, log)
    creator = raw.get("creator") or {}
    if canonical_text is None:
        canonical_text = getattr(doc, "canonical_text", None)  # made by kimen.bundle.document.parse
    the_id = head_id(raw) if canonical_text is None else hashlib.sha256(canonical_text).hexdigest()
    return Head(the_id, raw["bundle_id"], raw["created_at"], raw["generation"], dict(creator), signer,
                entries, sync_member)


def _parse_tombstone(value: Any, head_seq: int) -> Tombstone:
    item = _obj(value, _TOMBSTONE_KEYS, "tombstone")
    name = item["name"]
    if type(name) is not str or not is_valid_secret_name(name):
        _bad("tombstone: invalid name")
    seq = _int(item["seq"], max(1, head_seq - W), head_seq, f"tombstone {name} seq")
    return Tombstone(name, seq, _member_id(item["by"], f"tombstone {name} by"))


def _parse_rotation(value: Any, head_seq: int) -> RotationDue:
    item = _obj(value, _ROTATION_KEYS, "rotation_due entry")
    name = item["name"]
    if type(name) is not str or not is_valid_secret_name(name):
        _bad("rotation_due: invalid name")
    removed = _list(item["removed"], f"rotation_due {name} removed")
    if not removed or not all(is_valid_member_id(r) for r in removed) or not sorted_unique(removed):
        _bad(f"rotation_due {name}: removed must be sorted, unique member ids")
    return RotationDue(name, _int(item["since_seq"], 1, head_seq, f"rotation_due {name} since_seq"), tuple(removed))


def _check_log(log: Sequence[LogEntry], *, seq: int, parent: str | None, by: str, created_at: str,
               entries: Iterable[Entry], tombstones: Iterable[Tombstone], introduces_record: bool) -> None:
    """Contiguous, at most W entries, the last one describing this very head."""
    if not log or len(log) > W:
        _bad(f"sync log must hold 1..{W} entries")
    if any(b.seq != a.seq + 1 for a, b in pairwise(log)):
        _bad("sync log seqs must be contiguous")
    last = log[-1]
    if last.seq != seq or last.parent != parent or last.by != by or last.at != created_at:
        _bad("the last log entry must describe this head (seq, parent, by, at)")
    if last.set != tuple(sorted(e.name for e in entries if e.revision == seq)) \
            or last.deleted != tuple(t.name for t in tombstones if t.seq == seq):
        _bad("the last log entry must list exactly the names this head sets and deletes")
    if last.members != introduces_record:
        _bad("the last log entry's members flag must say whether this head adds a membership record")


# -- acceptance ---------------------------------------------------------------------------------


def accept(doc: SignedDocument, known: KnownHead | None, configured_remote_id: str | None, now: float,
           max_skew: float, *, kept: Callable[[], Head | None] | None = None) -> Acceptance:
    """Accept a head or raise the first failing check's reason; nothing is written either way.

    `doc` is the decrypted document, parsed and signature-verified by kimen.bundle.document.
    `known` is the highest head accepted for this remote (None: first contact); `now` and
    `max_skew` are seconds. `kept` returns the content of the known head itself, when the caller
    keeps it (None otherwise); it is asked only for a head that descends from it, which must
    then hold its entries of that seq or older unchanged (`check_carried`), its direct child
    carrying everything forward (`check_descent`).
    """
    head = parse_head(doc)  # 3. document
    pin = _check_remote(head, known, configured_remote_id)  # 4.
    _check_membership_chain(head, known)  # 5.
    author = _check_author(head)  # 6.
    _check_writes(head, author)  # 7.
    _check_clock(head, now, max_skew)  # 8.
    outcome = _check_order(head, known)  # 9.
    parent = kept() if kept is not None and outcome == "advanced" else None
    if parent is not None:
        if head.seq == parent.seq + 1:
            check_descent(parent, head)  # which holds every entry it did not change to the parent's
        else:
            check_carried(parent, head)
    return Acceptance(head, outcome, pin)


def _check_remote(head: Head, known: KnownHead | None, configured: str | None) -> str | None:
    expected = configured if configured is not None else (known.remote_id if known is not None else None)
    if expected is None:
        return head.remote_id  # first contact: the caller pins it
    if head.remote_id != expected or (known is not None and known.remote_id != expected):
        raise errors.BundleWrongRemote(remote_id=head.remote_id, expected=expected)
    return None


def _check_membership_chain(head: Head, known: KnownHead | None) -> None:
    records = head.sync.membership
    for index, record in enumerate(records):
        previous = records[index - 1] if index else record  # record 1 is signed by one of its own admins
        problem = None
        if record.remote_id != head.remote_id:
            problem = "belongs to another remote"
        elif index and record.prev != record_hash(previous):
            problem = "prev does not name the record before it"
        elif record.signer not in previous.admin_signers():
            problem = "not signed by an admin of the " + ("record before it" if index else "record itself")
        elif not verify_record(record):
            problem = "signature does not verify"
        if problem is not None:
            raise errors.SyncMembershipInvalid(epoch=record.epoch, detail=problem)
    if known is None:
        return
    if known.epoch <= len(records):
        if record_hash(records[known.epoch - 1]) != known.record_hash:
            raise errors.RemoteFork(known_seq=known.seq, remote_seq=head.seq,
                                    detail=f"membership record {known.epoch} differs from the one accepted")
    elif head.seq >= known.seq:  # fewer records than accepted: an older head is a rollback (step 9)
        raise errors.RemoteFork(known_seq=known.seq, remote_seq=head.seq,
                                detail=f"membership record {known.epoch} is missing")


def _check_author(head: Head) -> Member:
    membership = head.parent_membership
    author = membership.member(head.by)
    if author is None:
        raise errors.SyncSignerNotWriter(seq=head.seq, detail=f"{head.by} is not a member")
    if not author.can_write or (head.seq == 1 and author.role != "admin"):
        raise errors.SyncSignerNotWriter(seq=head.seq, detail=f"{head.by} is a {author.role}")
    if author.signer != head.signer:
        raise errors.SyncSignerNotWriter(seq=head.seq, detail=f"the signature is not {head.by}'s")
    for record in head.sync.membership:
        if record.seq == head.seq and record.signer != head.signer:
            raise errors.SyncSignerNotWriter(seq=head.seq,
                                             detail=f"membership record {record.epoch} has another signer")
    return author


def _removals(head: Head) -> dict[int, frozenset[str]]:
    """seq → member ids that a record introduced at that seq dropped."""
    records = head.sync.membership
    out: dict[int, frozenset[str]] = {}
    for before, after in pairwise(records):
        gone = before.ids() - after.ids()
        if gone:
            out[after.seq] = out.get(after.seq, frozenset()) | gone
    return out


def _check_writes(head: Head, author: Member) -> None:
    seq = head.seq
    scope = Scope(author.scope)
    outside = sorted([e.name for e in head.entries.values() if e.revision == seq and not scope.covers(e.name)]
                     + [t.name for t in head.sync.tombstones if t.seq == seq and not scope.covers(t.name)])
    if outside:
        raise errors.SyncWriteUnauthorized(seq=seq, detail=f"outside {author.id}'s scope: {', '.join(outside)}")
    others = sorted({e.by for e in head.entries.values() if e.revision == seq and e.by != head.by}
                    | {t.by for t in head.sync.tombstones if t.seq == seq and t.by != head.by})
    if others:
        raise errors.SyncWriteUnauthorized(seq=seq, detail=f"changes attributed to {', '.join(others)}")
    removals = _removals(head)
    removed_here = removals.get(seq, frozenset())
    for due in head.sync.rotation_due:
        if due.since_seq not in removals:
            raise errors.SyncWriteUnauthorized(seq=seq,
                                               detail=f"rotation_due {due.name}: no member left at {due.since_seq}")
        left = frozenset().union(*(ids for at, ids in removals.items() if due.since_seq <= at <= seq))
        if not left.issuperset(due.removed):
            raise errors.SyncWriteUnauthorized(seq=seq, detail=f"rotation_due {due.name}: names members not removed")
        if due.since_seq == seq and not removed_here:
            raise errors.SyncWriteUnauthorized(seq=seq, detail="rotation_due grew in a head that removes no member")
    if removed_here:
        due_map = {d.name: d for d in head.sync.rotation_due}
        missing = [e.name for e in head.entries.values() if e.revision < seq
                   and not removed_here.issubset(due_map[e.name].removed if e.name in due_map else ())]
        if missing:
            raise errors.SyncWriteUnauthorized(seq=seq, detail=f"rotation_due misses {', '.join(sorted(missing))}")


def check_carried(known: Head, head: Head) -> None:
    """`head` descends from `known`: an entry it holds with a revision of `known`'s seq or older is
    `known`'s own, since any change after it has a newer revision. Without this a writer could put
    a value outside their scope into a head under an old revision and another member's name →
    `sync_write_unauthorized`."""
    for name, entry in head.entries.items():
        if entry.revision <= known.seq and known.entries.get(name) != entry:
            raise errors.SyncWriteUnauthorized(
                seq=head.seq, detail=f"{name} claims revision {entry.revision}, which head {known.seq} did not hold")


def check_descent(parent: Head, head: Head) -> None:
    """`head` is built from `parent` as every push must be: it carries forward byte for byte every
    entry, tombstone, record and log entry it did not change → else `sync_write_unauthorized`."""
    seq = head.seq

    def refuse(detail: str) -> NoReturn:
        raise errors.SyncWriteUnauthorized(seq=seq, detail=detail)

    if head.generation <= parent.generation:
        refuse("generation did not increase")
    set_here = {e.name for e in head.entries.values() if e.revision == seq}
    deleted_here = {t.name for t in head.sync.tombstones if t.seq == seq}
    changed = set_here | deleted_here
    for name, entry in parent.entries.items():
        if name not in changed and head.entries.get(name) != entry:
            refuse(f"{name} was dropped or altered without a new revision")
    for name, entry in head.entries.items():
        if name not in set_here and parent.entries.get(name) != entry:
            refuse(f"{name} appeared without a new revision")
    if not deleted_here.issubset(parent.entries):
        refuse("a tombstone for a name the parent did not hold")
    carried = {t for t in parent.sync.tombstones if t.seq >= seq - W and t.name not in set_here}
    if {t for t in head.sync.tombstones if t.seq != seq} != carried:
        refuse("tombstones were not carried forward")
    if head.sync.membership[:len(parent.sync.membership)] != parent.sync.membership \
            or any(r.seq != seq for r in head.sync.membership[len(parent.sync.membership):]):
        refuse("membership records were not carried forward")
    if head.sync.log[:-1] != parent.sync.log[-(W - 1):]:
        refuse("the log was not carried forward")
    before = {d.name: d for d in parent.sync.rotation_due if d.name not in changed}
    after = {d.name: d for d in head.sync.rotation_due}
    if seq not in _removals(head):
        if after != before:
            refuse("rotation_due changed other than by names set or deleted")
    else:
        for name, due in before.items():
            now_due = after.get(name)
            if now_due is None or now_due.since_seq != due.since_seq or not set(now_due.removed) >= set(due.removed):
                refuse(f"rotation_due {name} was not carried forward")


def _check_clock(head: Head, now: float, max_skew: float) -> None:
    created = parse_time(head.created_at) or 0  # checked by kimen.bundle.document
    ahead = max(created - now, head.generation / 1000 - now)
    if ahead > max_skew:
        raise errors.GenerationInFuture(f"head {head.seq} is dated {int(ahead)}s ahead of this clock (more than "
                                        "--max-skew)", generation=head.generation)


def _check_order(head: Head, known: KnownHead | None) -> AcceptOutcome:
    if known is None:
        return "first_contact"
    seq, s, h = head.seq, known.seq, known.head_id
    if seq < s:
        raise errors.RemoteRollback(known_seq=s, remote_seq=seq)
    if seq == s:
        if head.id == h:
            return "unchanged"
        raise errors.RemoteFork(known_seq=s, remote_seq=seq, detail="another head with the same seq")
    log = head.sync.log
    if log[0].seq > s + 1:
        raise errors.RemoteHistoryGap(known_seq=s, remote_seq=seq, recommended_action="sync_pull_mirror")
    first_new = log[s + 1 - log[0].seq]
    if first_new.parent != h:
        raise errors.RemoteFork(known_seq=s, remote_seq=seq, detail=f"head {s + 1} does not follow the accepted head")
    return "advanced"


# -- join requests ------------------------------------------------------------------------------


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    if not text or not text.isascii() or not text.replace("-", "").replace("_", "").isalnum():
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64u(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def join_fingerprint(body: bytes) -> str:
    """First 16 hex digits of SHA-256(body), in four groups of four, to compare by voice."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    return "-".join(digest[i:i + 4] for i in range(0, 16, 4))


class JoinRequest:
    """A verified join request: who asks to join, with which recipient and signer."""

    __slots__ = ("created_at", "fingerprint", "member", "recipient", "remote_id", "signer", "text")

    def __init__(self, text: str, body: Mapping[str, Any], fingerprint: str) -> None:
        self.text = text
        self.member: str = body["member"]
        self.recipient: str = body["recipient"]
        self.signer: str = body["signer"]
        self.remote_id: str | None = body["remote_id"]
        self.created_at: str = body["created_at"]
        self.fingerprint = fingerprint

    def __repr__(self) -> str:
        return f"JoinRequest({self.member!r}, {self.fingerprint})"


def make_join_request(member: str, signer: Signer, recipient: str, remote_id: str | None,
                      created_at: str) -> JoinRequest:
    """`kimen-join-v1:<b64u(body)>.<b64u(sig)>`, body = canonical {member, recipient, signer,
    remote_id, created_at}, sig = Ed25519 over the join context and the body."""
    signer_id = signer.signer
    if signer_id is None:
        raise errors.MissingSigningIdentity(hint=_SSH_CANNOT_SIGN)
    check_member_id(member)
    body = canonical({"member": member, "recipient": recipient, "signer": signer_id, "remote_id": remote_id,
                      "created_at": created_at})
    text = f"{JOIN_PREFIX}{_b64u(body)}.{_b64u(signer.sign(JOIN_CONTEXT + body))}"
    return parse_join_request(text, remote_id)


def parse_join_request(text: str, remote_id: str | None) -> JoinRequest:
    """Verify a join request against this remote's id → else `invalid_join_request`.

    A request made without knowing the remote's id carries `remote_id: null` and is accepted for
    any remote; one naming another remote is refused.
    """
    def bad(detail: str) -> NoReturn:
        raise errors.InvalidJoinRequest(detail=detail)

    text = text.strip()
    if len(text) > MAX_JOIN_REQUEST or not text.startswith(JOIN_PREFIX) or text.count(".") != 1:
        bad(f"expected {JOIN_PREFIX}<body>.<signature>")
    body_text, sig_text = text[len(JOIN_PREFIX):].split(".")
    try:
        body, sig = _unb64u(body_text), _unb64u(sig_text)
        fields = sigfmt.loads(body.decode("ascii"))
    except (ValueError, UnicodeDecodeError, RecursionError, binascii.Error):
        bad("not base64url-encoded canonical JSON")
    if type(fields) is not dict or fields.keys() != _JOIN_KEYS or canonical(fields) != body:
        bad("the body must be canonical JSON with member, recipient, signer, remote_id, created_at")
    if not is_valid_member_id(fields["member"]):
        bad("invalid member id")
    if not is_x25519_recipient(fields["recipient"]):
        bad("the recipient must be an age1... recipient")
    if fields["remote_id"] is not None and not is_lower_hex(fields["remote_id"], 32):
        bad("malformed remote_id")
    if parse_time(fields["created_at"]) is None:
        bad("created_at must be an RFC 3339 UTC time")
    try:
        public = sigfmt.parse_signer(fields["signer"]) if type(fields["signer"]) is str else b""
    except errors.KimenError:
        public = b""
    if len(public) != 32 or len(sig) != 64 or not crypto.ed25519_verify(public, JOIN_CONTEXT + body, sig):
        bad("the signature does not verify")
    if remote_id is not None and fields["remote_id"] is not None and fields["remote_id"] != remote_id:
        bad(f"made for remote {fields['remote_id']}, not {remote_id}")
    return JoinRequest(text, fields, join_fingerprint(body))
