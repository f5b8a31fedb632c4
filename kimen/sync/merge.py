"""Keyed digests, the baseline MACs, the per-key merge and the next head (layer 2).

A member's vault remembers, per remote, a **baseline**: for each name in its scope the keyed digest
HMAC-SHA256(k_sync, u16 len(name) || name || value) of the value both sides last agreed on, and
that entry's revision. Merging compares, per name in scope, the baseline B, the local value L and
the head's value R (absence and a tombstone are values too):

    L = B, R = B            unchanged
    L = B, R != B           remote-only: apply R locally
    L != B, R = B           local-only: a push publishes it
    L != B, R != B, L = R   converged
    L != B, R != B, L != R  conflict (both_changed, local_deleted or remote_deleted)

Without a baseline (first pull) the merge is a union that never deletes a local name; `mirror`
makes the local set equal to the head. A push never builds from the vault: `build_next` starts
from the accepted current head and carries every entry and tombstone it does not change forward
byte for byte, including names outside the pusher's scope.

Pure: values and digests in, plans and document dicts out; no vault, file or age I/O.
"""

from __future__ import annotations

import base64
import os
import struct
from binascii import a2b_base64
from dataclasses import dataclass

from .. import crypto, errors
from ..sigfmt import canonical
from ..values import MAX_VALUE_BYTES, is_valid_secret_name
from .base import (
    NOTES,
    Entry,
    Head,
    LogEntry,
    Member,
    MembershipRecord,
    RotationDue,
    Scope,
    SyncMember,
    SyncState,
    Tombstone,
    W,
    check_member_id,
)
from .chain import BUNDLE_VERSION, FORMAT, check_member, record_hash, sign_record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any, Literal

    from .base import Role, Signer

    Outcome = Literal["unchanged", "remote_only", "local_only", "converged", "conflict"]
    ConflictKind = Literal["both_changed", "local_deleted", "remote_deleted"]

_ZERO = bytes(32)
UNTRANSLATED = b"\xff" * 32
"""The digest of a baseline row that a data-key rotation could not carry over (the value it was
taken from was no longer kept): it matches no value; the merge reads it by its revision instead."""
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


# -- digests and MACs ---------------------------------------------------------------------------


def _name(name: str) -> bytes:
    raw = name.encode("ascii")
    return _U16.pack(len(raw)) + raw


def key_digest(k_sync: bytes, name: str, value: bytes) -> bytes:
    """The baseline digest of a value: HMAC-SHA256(k_sync, u16 len(name) || name || value)."""
    return crypto.mac(k_sync, _name(name) + value)


def baseline_row_mac(k_sync: bytes, name: str, seq: int, digest: bytes) -> bytes:
    """HMAC-SHA256(k_sync, "brow" || u16 len(name) || name || u64 seq || digest): one row's share of
    `baseline_acc`."""
    return crypto.mac(k_sync, b"brow" + _name(name) + _U64.pack(seq) + digest)


def xor32(a: bytes, b: bytes) -> bytes:
    """XOR of two 32-byte strings: adds or removes one row's MAC from an accumulator in O(1)."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


def _row_macs(k_sync: bytes, rows: Iterable[tuple[str, int, bytes]]) -> int:
    """XOR of the row MACs of `rows` (name, seq, digest), as an integer (the loop of a whole
    baseline: `baseline_row_mac` inlined)."""
    mac, u16, u64, from_bytes = crypto.mac_with(k_sync), _U16.pack, _U64.pack, int.from_bytes
    acc = 0
    for name, seq, digest in rows:
        raw = name.encode("ascii")
        acc ^= from_bytes(mac(b"brow" + u16(len(raw)) + raw + u64(seq) + digest), "big")
    return acc


def baseline_acc(k_sync: bytes, rows: Iterable[tuple[str, int, bytes]]) -> bytes:
    """XOR over a remote's baseline rows (name, seq, digest) of their row MACs; 32 zero bytes when empty."""
    return _row_macs(k_sync, rows).to_bytes(32, "big")


def baseline_changes(old: Mapping[str, Keyed], new: Mapping[str, Keyed]) -> tuple[list[str], dict[str, Keyed]]:
    """What turns baseline `old` into `new`: the names to remove, and the rows to add or replace."""
    removed = [name for name in old if name not in new]
    get = old.get
    changed = {name: row for name, row in new.items() if get(name) != row}
    return removed, changed


def baseline_acc_update(k_sync: bytes, acc: bytes, old: Mapping[str, Keyed], new: Mapping[str, Keyed],
                        changes: tuple[list[str], dict[str, Keyed]] | None = None) -> bytes:
    """`baseline_acc` of `new`, from `acc` (that of `old`): only the rows that differ are MACed.
    `changes`: `baseline_changes(old, new)` when the caller has it."""
    removed, changed = changes if changes is not None else baseline_changes(old, new)
    gone = [(name, old[name].seq, old[name].digest) for name in (*removed, *(n for n in changed if n in old))]
    added = [(name, row.seq, row.digest) for name, row in changed.items()]
    value = int.from_bytes(acc, "big") ^ _row_macs(k_sync, gone) ^ _row_macs(k_sync, added)
    return value.to_bytes(32, "big")


def _field(value: str | int | tuple[str, ...] | None) -> bytes:
    if value is None:
        return b"\xff\xff\xff\xff"  # no length a field can have: null differs from ""
    if isinstance(value, tuple):
        raw = canonical(list(value))
    elif isinstance(value, int):
        raw = str(value).encode("ascii")
    else:
        raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def state_mac(k_sync: bytes, state: SyncState, acc: bytes) -> bytes:
    """HMAC-SHA256(k_sync, "sync-state" || every column of the row in order, each u32-length-prefixed
    (integers in decimal, the scope as canonical JSON, null as length 0xffffffff) || baseline_acc).
    The remote's name is the first column, so rows cannot be swapped between remotes."""
    fields = (state.remote, state.remote_id, state.endpoint, state.head_seq, state.head_id, state.head_rev,
              state.head_generation, state.epoch, state.record_hash, state.members_fp, state.member, state.role,
              state.scope, state.rotation_due_count, state.last_local_rev, state.updated_at)
    return crypto.mac(k_sync, b"sync-state" + b"".join(_field(f) for f in fields) + acc)


# -- the merge ----------------------------------------------------------------------------------


class Keyed:
    """A keyed digest and the seq of the entry it was taken from (a baseline row, a head entry).

    A baseline row with `seq` 0 claims no revision: its digest is not checked against the head's.
    A row whose digest is `UNTRANSLATED` equals the head's entry of the same revision (a revision
    names one value) and differs from every other value, so the local value counts as changed.

    A value (equal when digest and seq are; never changed after it is made); a plain class, not a
    dataclass: an operation makes one per name of each head and baseline (tens of thousands).
    """

    __slots__ = ("digest", "seq")

    def __init__(self, digest: bytes, seq: int) -> None:
        self.digest = digest
        self.seq = seq

    def __repr__(self) -> str:  # never the digest
        return f"Keyed(seq={self.seq})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Keyed:
            return NotImplemented
        return self.seq == other.seq and self.digest == other.digest

    def __ne__(self, other: object) -> bool:
        if type(other) is not Keyed:
            return NotImplemented
        return self.seq != other.seq or self.digest != other.digest

    def __hash__(self) -> int:
        return hash((self.digest, self.seq))


class KeyMerge:
    """The outcome for one name; `local`/`remote` are digests, None for absent (or tombstoned).
    Never changed after it is made (a plain class: one per name of every merge)."""

    __slots__ = ("kind", "local", "name", "outcome", "remote")

    def __init__(self, name: str, outcome: Outcome, local: bytes | None, remote: bytes | None,
                 kind: ConflictKind | None = None) -> None:
        self.name = name
        self.outcome = outcome
        self.local = local
        self.remote = remote
        self.kind = kind

    def __repr__(self) -> str:
        return f"KeyMerge({self.name!r}, {self.outcome}{', ' + self.kind if self.kind else ''})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not KeyMerge:
            return NotImplemented
        return (self.name, self.outcome, self.local, self.remote, self.kind) == \
            (other.name, other.outcome, other.local, other.remote, other.kind)

    def __hash__(self) -> int:
        return hash((self.name, self.outcome, self.local, self.remote, self.kind))


class MergeResult:
    """Every in-scope name's outcome against one head, and what applying it means."""

    __slots__ = ("first_pull", "head", "keys", "out_of_scope_count")

    def __init__(self, head: Head, keys: dict[str, KeyMerge], out_of_scope_count: int, first_pull: bool) -> None:
        self.head = head
        self.keys = keys
        self.out_of_scope_count = out_of_scope_count
        self.first_pull = first_pull

    def names(self, outcome: Outcome) -> list[str]:
        return sorted(name for name, key in self.keys.items() if key.outcome == outcome)

    @property
    def conflict_keys(self) -> list[str]:
        return self.names("conflict")

    @property
    def conflicts(self) -> list[dict[str, str]]:
        return [{"key": name, "kind": str(self.keys[name].kind)} for name in self.conflict_keys]

    @property
    def remote_sets(self) -> list[str]:
        """Remote-only changes that set a value locally (the head's entry)."""
        return [n for n in self.names("remote_only") if self.keys[n].remote is not None]

    @property
    def remote_deletes(self) -> list[str]:
        """Remote-only changes that delete a local name."""
        return [n for n in self.names("remote_only") if self.keys[n].remote is None]

    @property
    def local_changed(self) -> list[str]:
        return self.names("local_only")

    def check_conflicts(self) -> None:
        """Any conflict → `overlapping_changes` (31) naming the keys; nothing is applied."""
        keys = self.conflict_keys
        if keys:
            raise errors.OverlappingChanges(names=", ".join(keys), conflict_keys=keys, conflicts=self.conflicts)


class Digests:
    """`key_digest` under one `k_sync`, remembering each (name, value) it digested: one operation
    digests the local values, the head's and the next head's, which are mostly the same values.
    A head's entry is remembered by its base64 text too (`entry`): the next head carries most
    entries forward as the same text, whose digest is then found without decoding it again."""

    __slots__ = ("_mac", "_memo", "_memo_b64", "k_sync")

    def __init__(self, k_sync: bytes) -> None:
        self.k_sync = k_sync
        self._mac = crypto.mac_with(k_sync)
        self._memo: dict[tuple[str, bytes], bytes] = {}
        self._memo_b64: dict[tuple[str, str], bytes] = {}

    def __repr__(self) -> str:  # never a value or a digest
        return f"Digests({len(self._memo)})"

    def __call__(self, name: str, value: bytes) -> bytes:
        key = (name, value)
        digest = self._memo.get(key)
        if digest is None:
            raw = name.encode("ascii")  # `key_digest`, with the key set up once
            digest = self._memo[key] = self._mac(_U16.pack(len(raw)) + raw + value)
        return digest

    def many(self, values: Mapping[str, bytes]) -> dict[str, bytes]:
        """The digest of every (name, value) of `values` (the local values of one operation)."""
        memo, mac, u16 = self._memo, self._mac, _U16.pack
        out = {}
        for name, value in values.items():
            key = (name, value)
            digest = memo.get(key)
            if digest is None:
                raw = name.encode("ascii")
                digest = memo[key] = mac(u16(len(raw)) + raw + value)
            out[name] = digest
        return out

    def entry(self, name: str, value_b64: str) -> bytes:
        """The digest of a head entry's value, given as its (checked) base64 text."""
        key = (name, value_b64)
        digest = self._memo_b64.get(key)
        if digest is None:
            digest = self._memo_b64[key] = self(name, a2b_base64(value_b64))
        return digest

    def entries(self, entries: Mapping[str, Entry], covers: Callable[[str], bool] | None) -> dict[str, Keyed]:
        """`Keyed` (digest, revision) of each entry whose name `covers` accepts (None: all): `entry`
        and `__call__` inlined, for the 10 000 entries of a head."""
        memo, memo_b64, mac, u16 = self._memo, self._memo_b64, self._mac, _U16.pack
        out = {}
        for name, entry in entries.items():
            if covers is not None and not covers(name):
                continue
            key = (name, entry.value_b64)
            digest = memo_b64.get(key)
            if digest is None:
                value = a2b_base64(key[1])
                digest = memo.get((name, value))
                if digest is None:
                    raw = name.encode("ascii")
                    digest = memo[(name, value)] = mac(u16(len(raw)) + raw + value)
                memo_b64[key] = digest
            out[name] = Keyed(digest, entry.revision)
        return out


def head_digests(k_sync: bytes, head: Head, scope: Scope, digests: Digests | None = None) -> dict[str, Keyed]:
    """The keyed digest and revision of every entry of `head` inside `scope`."""
    memo = digests if digests is not None and digests.k_sync == k_sync else Digests(k_sync)
    return memo.entries(head.entries, None if scope.everything else scope.covers)


def merge(k_sync: bytes, scope: Scope, head: Head, local: Mapping[str, bytes],
          baseline: Mapping[str, Keyed] | None, digests: Digests | None = None) -> MergeResult:
    """The per-key merge of the local vault against an accepted head, over the names in `scope`.

    `local` maps the vault's names to their keyed digests (names outside `scope` are ignored);
    `baseline` is the remote's baseline, or None before the first pull (then: a union). A head
    that changed an in-scope value without a new revision, lowered one, or dropped a name without
    a tombstone is refused (`sync_write_unauthorized`) before any outcome is computed. `digests`
    (optional) remembers the digests of one operation across its calls.
    """
    remote = head_digests(k_sync, head, scope, digests)
    tombstones = head.tombstone_map()
    mine = {name: digest for name, digest in local.items() if scope.covers(name)}
    out_of_scope = len(head.entries) - len(remote)
    keys: dict[str, KeyMerge] = {}
    if baseline is None:
        for name in mine.keys() | remote.keys():
            l_digest, r = mine.get(name), remote.get(name)
            r_digest = r.digest if r is not None else None
            if l_digest is None:
                keys[name] = KeyMerge(name, "remote_only", None, r_digest)
            elif r_digest is None:
                keys[name] = (KeyMerge(name, "conflict", l_digest, None, "remote_deleted") if name in tombstones
                              else KeyMerge(name, "local_only", l_digest, None))
            elif l_digest == r_digest:
                keys[name] = KeyMerge(name, "converged", l_digest, r_digest)
            else:
                keys[name] = KeyMerge(name, "conflict", l_digest, r_digest, "both_changed")
        return MergeResult(head, keys, out_of_scope, first_pull=True)
    base: dict[str, Keyed] = {}
    for name, row in baseline.items():
        if scope.covers(name):
            if row.digest == UNTRANSLATED:
                r = remote.get(name)
                if r is not None and r.seq == row.seq:
                    row = r  # the same revision is the same value
            base[name] = row
    _check_carried(head, base, remote, tombstones)
    for name in mine.keys() | remote.keys() | base.keys():
        b = base.get(name)
        r = remote.get(name)
        b_digest = b.digest if b is not None else None
        r_digest = r.digest if r is not None else None
        l_digest = mine.get(name)
        keys[name] = _three_way(name, b_digest, l_digest, r_digest)
    return MergeResult(head, keys, out_of_scope, first_pull=False)


def _three_way(name: str, b: bytes | None, l_: bytes | None, r: bytes | None) -> KeyMerge:
    if l_ == b:
        return KeyMerge(name, "unchanged" if r == b else "remote_only", l_, r)
    if r == b:
        return KeyMerge(name, "local_only", l_, r)
    if l_ == r:
        return KeyMerge(name, "converged", l_, r)
    kind: ConflictKind = "local_deleted" if l_ is None else "remote_deleted" if r is None else "both_changed"
    return KeyMerge(name, "conflict", l_, r, kind)


def _check_carried(head: Head, base: Mapping[str, Keyed], remote: Mapping[str, Keyed],
                   tombstones: Mapping[str, Tombstone]) -> None:
    """An entry the baseline knows at revision s can only change at a later seq: same revision means
    same value, and a name gone from the head leaves a tombstone newer than s (tombstones outlive
    their deletion by W seqs)."""
    forged = []
    for name, b in base.items():
        if b.seq == 0:
            continue
        r = remote.get(name)
        if r is not None:
            if r.seq < b.seq or (r.seq == b.seq and r.digest != b.digest):
                forged.append(name)
            continue
        tomb = tombstones.get(name)
        if (tomb is not None and tomb.seq <= b.seq) or (tomb is None and b.seq >= head.seq - W):
            forged.append(name)
    if forged:
        raise errors.SyncWriteUnauthorized(
            seq=head.seq, detail=f"changed without a new revision: {', '.join(sorted(forged))}")


def mirror(k_sync: bytes, scope: Scope, head: Head, local: Mapping[str, bytes],
           digests: Digests | None = None) -> MergeResult:
    """`sync pull --mirror`: every in-scope local name becomes the head's (set, replaced or deleted)."""
    remote = head_digests(k_sync, head, scope, digests)
    mine = {name: digest for name, digest in local.items() if scope.covers(name)}
    keys: dict[str, KeyMerge] = {}
    for name in mine.keys() | remote.keys():
        l_digest, r = mine.get(name), remote.get(name)
        r_digest = r.digest if r is not None else None
        keys[name] = KeyMerge(name, "unchanged" if l_digest == r_digest else "remote_only", l_digest, r_digest)
    return MergeResult(head, keys, len(head.entries) - len(remote), first_pull=False)


def push_changes(result: MergeResult, values: Mapping[str, bytes]) -> dict[str, bytes | None]:
    """The local-only changes a push publishes (name → new value, None for a delete); any conflict
    aborts with `overlapping_changes`. `values` holds the local values of the changed names."""
    result.check_conflicts()
    changes: dict[str, bytes | None] = {}
    for name in result.local_changed:
        if result.keys[name].local is None:
            changes[name] = None
        elif name in values:
            changes[name] = values[name]
        else:
            raise ValueError(f"no local value given for {name}")
    return changes


# -- membership changes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddMember:
    member: Member


@dataclass(frozen=True, slots=True)
class RemoveMember:
    id: str


@dataclass(frozen=True, slots=True)
class UpdateMember:
    """A new role and/or scope for an existing member (None keeps the current one)."""

    id: str
    role: Role | None = None
    scope: tuple[str, ...] | None = None


MembershipChange = AddMember | RemoveMember | UpdateMember


def _changed_members(record: MembershipRecord, change: MembershipChange) -> list[Member]:
    members = {m.id: m for m in record.members}
    if isinstance(change, AddMember):
        new = check_member(change.member)
        if new.id in members:
            raise errors.MemberExists(member=new.id)
        members[new.id] = new
    else:
        check_member_id(change.id)
        current = members.get(change.id)
        if current is None:
            raise errors.MemberNotFound(member=change.id)
        if isinstance(change, RemoveMember):
            del members[change.id]
        else:
            members[change.id] = check_member(Member(
                current.id, change.role if change.role is not None else current.role, current.recipient,
                current.signer, change.scope if change.scope is not None else current.scope))
        if not any(m.role == "admin" for m in members.values()):
            raise errors.SyncLastAdmin(member=change.id)
    return sorted(members.values(), key=lambda m: m.id)


# -- building heads -----------------------------------------------------------------------------


def _document(*, bundle_id: str | None, created_at: str, creator: Mapping[str, str], generation: int,
              entries: Iterable[Entry], sync: SyncMember) -> dict[str, Any]:
    return {
        "kimen_bundle": BUNDLE_VERSION,
        "bundle_id": bundle_id if bundle_id is not None else os.urandom(16).hex(),
        "created_at": created_at,
        "creator": dict(creator),
        "generation": generation,
        "secrets": [e.to_json() for e in sorted(entries, key=lambda e: e.name)],
        "sync": sync.to_json(),
        "signature": None,
    }


def build_genesis(member: Member, signer: Signer, *, at: str, now_ms: int, creator: Mapping[str, str],
                  remote_id: str | None = None, bundle_id: str | None = None) -> dict[str, Any]:
    """The first head of a new remote: seq 1, a new `remote_id`, record 1 with `member` as its admin,
    no secrets. Returned unsigned (`signature` null): the caller signs it with `signer`'s identity."""
    if member.role != "admin":
        raise errors.SyncRoleForbidden(member=member.id, role=member.role, action="create a remote (admins only)")
    if member.signer is None or member.signer != signer.signer:
        raise errors.SyncFailed(detail="the genesis member's signer must be the signing identity's")
    remote = remote_id if remote_id is not None else os.urandom(16).hex()
    record = sign_record(epoch=1, seq=1, remote_id=remote, prev=None, members=[member], signer=signer)
    log = (LogEntry(1, None, member.id, at, (), (), True, "genesis"),)
    sync = SyncMember(FORMAT, remote, 1, None, member.id, (record,), (), (), log)
    return _document(bundle_id=bundle_id, created_at=at, creator=creator, generation=max(now_ms, 1),
                     entries=(), sync=sync)


def build_next(parent: Head, *, author: str, changes: Mapping[str, bytes | None], at: str, now_ms: int,
               creator: Mapping[str, str], membership: MembershipChange | None = None,
               signer: Signer | None = None, note: str | None = None,
               bundle_id: str | None = None, seq: int | None = None) -> dict[str, Any]:
    """The head after `parent` (the accepted current head, never the local vault).

    Every entry and tombstone of `parent` is carried forward unchanged, names outside the author's
    scope included; each change (name → value, None for a delete) replaces its name with
    `revision` = the new seq and `by` = `author` (a delete leaves a tombstone; a set removes one).
    A membership change (admins only; `signer` signs the new record) adds one record, and when it
    removes a member every live name joins `rotation_due`. Tombstones and the log are trimmed to
    W seqs. Returned unsigned (`signature` null): the caller signs it and encrypts it to every
    recipient of the new membership.

    `seq` (a restore only, `note` restore): a seq above the parent's + 1, so that the restored
    head outranks a fork or a rollback on the remote; each skipped seq gets a log entry that
    changes nothing (note `restore`, parent the restored head), keeping the log contiguous.
    """
    if note is not None and (note not in NOTES or note == "genesis"):
        raise ValueError(f"a note is one of {NOTES} (genesis: build_genesis)")
    if seq is not None and seq > parent.seq + 1 and note != "restore":
        raise ValueError("only a restore skips seqs")
    seq = parent.seq + 1 if seq is None else max(seq, parent.seq + 1)
    record = parent.current  # the new head's parent membership
    member = record.member(author)
    if member is None:
        raise errors.SyncNotAMember(member=author)
    if not member.can_write:
        raise errors.SyncRoleForbidden(member=author, role=member.role, action="publish heads")
    scope = Scope(member.scope)
    for name in changes:
        if not is_valid_secret_name(name):
            raise errors.InvalidSecretName(name=name[:136])
        if not scope.covers(name):
            raise errors.KeyOutOfScope(name=name, member=author)
        value = changes[name]
        if value is not None and len(value) > MAX_VALUE_BYTES:
            raise errors.SecretTooLarge(secret=name)

    entries = dict(parent.entries)
    tombstones = {t.name: t for t in parent.sync.tombstones if t.seq >= seq - W}
    set_names: list[str] = []
    del_names: list[str] = []
    for name in sorted(changes):
        value = changes[name]
        if value is not None:
            entries[name] = Entry(name, base64.b64encode(value).decode("ascii"), seq, author, at)
            tombstones.pop(name, None)
            set_names.append(name)
        elif name in entries:
            del entries[name]
            tombstones[name] = Tombstone(name, seq, author)
            del_names.append(name)

    records = parent.sync.membership
    changed = set(set_names) | set(del_names)
    rotation = {d.name: d for d in parent.sync.rotation_due if d.name not in changed}
    if membership is not None:
        if member.role != "admin":
            raise errors.SyncRoleForbidden(member=author, role=member.role, action="change the membership")
        if signer is None or signer.signer != member.signer:
            raise errors.SyncFailed(detail="a membership change is signed by the author's own identity")
        members = _changed_members(record, membership)
        new_record = sign_record(epoch=record.epoch + 1, seq=seq, remote_id=parent.remote_id,
                                 prev=record_hash(record), members=members, signer=signer)
        records = (*records, new_record)
        gone = tuple(sorted(record.ids() - new_record.ids()))
        if gone:
            for name in entries:
                if name in changed:
                    continue  # set in this very head: already rotated
                due = rotation.get(name)
                rotation[name] = (RotationDue(name, seq, gone) if due is None else
                                  RotationDue(name, due.since_seq, tuple(sorted(set(due.removed) | set(gone)))))

    log_entry = LogEntry(seq, parent.id, author, at, tuple(set_names), tuple(del_names), membership is not None,
                         note if note is not None else ("members" if membership is not None else ""))
    skipped = tuple(LogEntry(k, parent.id, author, at, (), (), False, "restore") for k in range(parent.seq + 1, seq))
    sync = SyncMember(FORMAT, parent.remote_id, seq, parent.id, author, records,
                      tuple(tombstones[n] for n in sorted(tombstones)),
                      tuple(rotation[n] for n in sorted(rotation)),
                      (*parent.sync.log, *skipped, log_entry)[-W:])
    return _document(bundle_id=bundle_id, created_at=at, creator=creator,
                     generation=max(now_ms, parent.generation + 1), entries=entries.values(), sync=sync)
