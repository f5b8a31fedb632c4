"""The sync engine: init, pull, push, status, conflicts and resolve over one remote (docs/sync.md).

Pure logic over five parts, each given by the caller:

- the **local state** (`LocalState`; `kimen.vault.syncstate.VaultSyncState` over an unlocked
  vault): the vault's values in the member's scope, the remote's baseline and sync state, and the
  one commit that changes values, baseline and state together;
- the **transport** (`kimen.sync.base.Transport`: fs or git), which moves ciphertext only;
- the member's **identity** (an age X25519 identity decrypts and signs);
- the **state directory** outside the vault (`kimen.sync.ratchet.SyncStateDir`: the ratchet, the
  known head's bytes, the acknowledged members);
- a **clock** (seconds since the epoch).

Every command that reads a head accepts it through `kimen.sync.chain.accept` against the known
head (the larger of the vault's sync state and the ratchet) before anything is written. A pull
merges per key against the baseline (first pull: a union that never deletes a local name); a push
builds the next head from the current head, never from the vault, carries every entry it does not
change forward, publishes without force and, after a lost race, reads the head again and rebuilds
(up to 3 attempts) while the merge stays clean. Same-key conflicts stop with `overlapping_changes`
(31) naming the keys and change nothing. Every change of vault values is preceded by a backup
snapshot (unless the caller passes none), and the ratchet rises after the vault commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import errors
from ..durations import format_time
from ..sigfmt import canonical
from .base import Scope, SyncState
from .ratchet import known_head
from .status import Remote as Remote  # re-exported: the engine's handle on a remote
from .status import Status as Status
from .status import endpoint as endpoint
from .status import read_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from typing import Literal, Protocol

    from ..bundle.keys import Identity
    from ..store import Change, WriteResult
    from . import merge
    from .base import Head, KnownHead, Member, RemoteHead
    from .merge import Keyed, MergeResult

    class LocalState(Protocol):
        """The vault side of sync (implemented by `kimen.vault.syncstate.VaultSyncState`)."""

        @property
        def k_sync(self) -> bytes: ...

        def load(self, remote: str) -> tuple[SyncState | None, dict[str, Keyed] | None, int]:
            """(sync state, baseline, vault generation); (None, None, g) before the first sync."""
            ...

        def unverified(self, remote: str) -> tuple[SyncState | None, int]:
            """(sync state, vault generation) without checking the baseline's MAC."""
            ...

        def other_scopes(self, remote: str) -> dict[str, tuple[str, ...]]:
            """The member's scope in each other remote this vault syncs."""
            ...

        def local_values(self, scope: Scope) -> dict[str, bytes]: ...

        def unchanged(self, state: SyncState, scope: Scope) -> bool:
            """Whether no row in `scope` changed since `state` was committed with no local change."""
            ...

        def write(self, changes: Sequence[Change], *, if_generation: int) -> None:
            """Change values only (a local change, like `secret set`): the sync tables stay."""
            ...

        def commit(self, remote: str, changes: Sequence[Change], state: SyncState, baseline: Mapping[str, Keyed],
                   *, if_generation: int, scope: Scope, keep_local_rev: bool,
                   backup_path: str | None) -> WriteResult | None: ...

        def forget(self, remote: str) -> None:
            """Drop the remote's sync state and baseline: the next pull is a first pull."""
            ...

MAX_ATTEMPTS = 3
MAX_SKEW = 15 * 60.0


def default_creator() -> dict[str, str]:
    import getpass
    import socket

    from .. import __version__

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return {"user": user, "host": socket.gethostname(), "kimen": __version__}


class CollectorPaused:
    """Python's cyclic garbage collector off for one push or pull: the operation makes a few
    hundred thousand small objects (every head entry, digest and merge outcome of 10 000 names),
    none of them in a cycle, and the collector would walk the growing heap again and again (about
    a tenth of the CPU of a push) to free nothing. Reference counting frees them as before; the
    collector's previous state is restored after."""

    __slots__ = ("enabled",)

    def __enter__(self) -> None:
        import gc

        self.enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        import gc

        if self.enabled:
            gc.enable()


@dataclass(frozen=True, slots=True, eq=False)
class Fetched:
    """The current head: its bytes and remote rev, the accepted head, and whether it pinned the
    remote id (first contact with a remote whose id was not configured)."""

    remote: RemoteHead
    head: Head
    outcome: str
    pin_remote_id: str | None


@dataclass(slots=True)
class InitResult:
    remote_id: str
    created_remote: bool
    seq: int
    head_id: str
    remote_rev: str
    member: str
    pin_remote_id: str | None


@dataclass(slots=True)
class PullResult:
    mode: str  # pull, pull_reconcile, pull_mirror
    seq: int
    head_id: str
    remote_rev: str
    first_pull: bool
    backup_path: str | None
    applied_keys: list[str]
    deleted_keys: list[str]
    kept_local_keys: list[str]
    in_sync: bool
    dry_run: bool = False
    pin_remote_id: str | None = None
    conflict_keys: list[str] = field(default_factory=list)  # a dry run reports them instead of stopping


@dataclass(slots=True)
class PushResult:
    seq: int
    head_id: str
    remote_rev: str
    remote_commit: str | None
    generation: int
    published_keys: list[str]
    deleted_keys: list[str]
    merged_remote_keys: list[str]
    attempts: int
    noop: bool
    backup_path: str | None
    pin_remote_id: str | None = None


@dataclass(slots=True)
class ResolveResult:
    take: str
    keys: list[str]
    remaining_conflict_keys: list[str]
    backup_path: str | None

    @property
    def resolved_count(self) -> int:
        return len(self.keys)


@dataclass(slots=True)
class RevertResult:
    key: str
    to_seq: int
    deleted: bool
    changed: bool


@dataclass(slots=True)
class ResetResult:
    previous_rev: str | None
    new_rev: str
    previous_seq: int | None
    new_seq: int
    accepted_fork: bool
    head_id: str


@dataclass(slots=True, eq=False)
class MembersResult:
    """A published membership head: the head, its remote rev, and how many attempts it took."""

    head: Head
    remote_rev: str
    attempts: int


@dataclass(slots=True)
class Changes:
    """`sync changes`: the key-level analysis against the accepted head (names only)."""

    seq: int
    first_pull: bool
    local_changed_keys: list[str]
    remote_changed_keys: list[str]
    conflict_keys: list[str]
    conflicts: list[dict[str, str]]
    local_only_changed_keys: list[str]
    remote_only_changed_keys: list[str]
    converged_keys: list[str]
    out_of_scope_count: int
    local_deleted_keys: list[str] = field(default_factory=list)  # local-only changes that are deletions

    @property
    def can_reconcile(self) -> bool:
        return not self.conflict_keys


class Engine:
    """Sync operations for one member (identity) against one remote."""

    def __init__(self, remote: Remote, identity: Identity | None, *, clock: Callable[[], float] = time.time,
                 max_skew: float = MAX_SKEW, creator: Mapping[str, str] | None = None) -> None:
        self.remote = remote
        self.identity = identity
        self.clock = clock
        self.max_skew = max_skew
        self._creator = dict(creator) if creator is not None else None
        self._digests: merge.Digests | None = None  # one operation's digests (reset by `_begin`)

    @property
    def creator(self) -> dict[str, str]:
        """Who writes new heads (user, host, kimen version); computed when a head is first built."""
        if self._creator is None:
            self._creator = default_creator()
        return self._creator

    # -- reading and accepting the head -----------------------------------------------------------

    def _identity(self) -> Identity:
        if self.identity is None:
            raise errors.RemoteIdentityMissing(remote=self.remote.name,
                                               hint="set the remote's identity, or pass --identity")
        return self.identity

    def _remote_id(self, state: SyncState | None) -> str | None:
        if self.remote.remote_id is not None:
            return self.remote.remote_id
        return state.remote_id if state is not None else None

    def _known(self, remote_id: str | None, state: SyncState | None) -> KnownHead | None:
        if remote_id is None:
            return None
        ratchet = self.remote.state_dir(remote_id).read_ratchet()
        if state is not None and state.remote_id != remote_id:
            state = None  # another remote's baseline: reset when the location changed
        return known_head(state, ratchet)

    def fetch(self, state: SyncState | None, *, stateless: bool = False, verified: bool = False) -> Fetched | None:
        """Read the head and accept it against the known head, or raise the first failing check's
        reason; None when the remote holds no head. `stateless` (`sync pin`): no known head, so
        the order check is skipped and nothing is read from this machine. `verified`: `state`
        was read with its MAC checked (`LocalState.load`)."""
        identity = self._identity()
        current = self.remote.transport.read_head()
        if current is None:
            return None
        return self._accept(current, identity, state, stateless=stateless, verified=verified)

    def _accept(self, current: RemoteHead, identity: Identity, state: SyncState | None, *,
                stateless: bool = False, verified: bool = False) -> Fetched:
        """Decrypt, parse and accept a head. A head that is byte for byte the one accepted at the
        last sync (its plaintext hashes to the head id of the MAC-checked sync state: `verified`)
        goes through every check again but its document signature, which was verified over these
        very bytes then (`kimen.bundle.document.parse`'s `verified_before`)."""
        import hashlib

        from ..bundle import age, document
        from . import chain

        try:
            plaintext = age.decrypt(current.data, [identity])
        except errors.BundleNoMatch:
            hint = ("the head is not sealed to you: an admin may have removed you, or whoever wrote it left you "
                    "out (ask an admin; nothing was accepted)" if state is not None else None)
            raise errors.SyncNotAMember(remote=self.remote.name, **({"hint": hint} if hint else {})) from None
        seen = verified and not stateless and state is not None and current.rev == state.head_rev \
            and hashlib.sha256(plaintext).hexdigest() == state.head_id
        doc = document.parse(plaintext, verified_before=seen)
        remote_id = self._remote_id(state)
        if remote_id is None and not stateless:
            sync = doc.raw.get("sync")
            candidate = sync.get("remote_id") if isinstance(sync, dict) else None
            if isinstance(candidate, str) and len(candidate) == 32 and candidate.isalnum() and candidate.islower():
                remote_id = candidate  # first contact: a ratchet kept for that remote still counts
        known = None if stateless else self._known(remote_id, state)

        def kept() -> Head | None:
            """This machine's copy of the known head (`head.age`); None when it has no usable one."""
            if known is None:  # first contact: `chain.accept` never asks
                return None
            try:
                return self._kept_head(known, identity)[0]
            except errors.RestoreHeadUnavailable:
                return None

        acceptance = chain.accept(doc, known, self.remote.remote_id, self.clock(), self.max_skew, kept=kept)
        return Fetched(current, acceptance.head, acceptance.outcome, acceptance.pin_remote_id)

    def _me(self, head: Head) -> Member:
        identity = self._identity()
        for member in head.current.members:
            if member.recipient == identity.recipient or (member.signer is not None
                                                          and member.signer == identity.signer):
                return member
        raise errors.SyncNotAMember(remote=self.remote.name)

    def _state_of(self, head: Head, rev: str, me: Member) -> SyncState:
        from . import chain

        return SyncState(
            remote=self.remote.name, remote_id=head.remote_id, endpoint=self.remote.endpoint, head_seq=head.seq,
            head_id=head.id, head_rev=rev, head_generation=head.generation, epoch=head.current.epoch,
            record_hash=chain.record_hash(head.current), members_fp=chain.members_fp(head.current.members),
            member=me.id, role=me.role, scope=me.scope, rotation_due_count=len(head.sync.rotation_due),
            last_local_rev=None, updated_at="")

    def _remember(self, head: Head, data: bytes) -> None:
        """After the vault commit: raise the ratchet (with the head's bytes); the first accepted
        head's members are acknowledged automatically."""
        from . import chain

        directory = self.remote.state_dir(head.remote_id)
        directory.raise_to(chain.known_head(head), data)
        if directory.read_ack() is None:
            directory.write_ack(chain.members_fp(head.current.members), head.current.members)

    def _ack_own_change(self, before: Head, after: Head) -> None:
        """An admin's own membership change is acknowledged on their machine when the members before
        it were: it is no news to them. An unacknowledged earlier change stays unacknowledged."""
        from . import chain

        directory = self.remote.state_dir(after.remote_id)
        ack = directory.read_ack()
        if ack is not None and ack.members_fp == chain.members_fp(before.current.members):
            directory.write_ack(chain.members_fp(after.current.members), after.current.members)

    # -- init -------------------------------------------------------------------------------------

    def init(self, member_id: str, scope: Sequence[str] = ("**",),
             other_scopes: Mapping[str, Sequence[str]] | None = None) -> InitResult:
        """Create the remote's first head (seq 1: a new remote id, record 1 with this member as its
        admin, no secrets) when the location holds none; else check the head there (first
        contact). Needs no vault; `other_scopes` (the member's scope in the vault's other remotes)
        must not overlap the scope here (`remote_scope_overlap`, nothing published or kept)."""
        from ..bundle import age, document, keys
        from . import chain, merge
        from .base import Member, check_member_id, check_scope_glob

        identity = self._identity()
        check_member_id(member_id)
        scope = tuple(dict.fromkeys(check_scope_glob(g) for g in scope))  # a glob given twice once
        transport = self.remote.transport
        with transport.locked():
            existing = self.fetch(None)
            if existing is not None:
                me_there = self._me(existing.head)
                self.check_scope_overlap(me_there.scope, other_scopes or {})
                self._remember(existing.head, existing.remote.data)
                return InitResult(existing.head.remote_id, False, existing.head.seq, existing.head.id,
                                  existing.remote.rev, me_there.id, existing.pin_remote_id)
            if self.remote.remote_id is not None:
                raise self.no_head(None)  # a team's remote whose head is gone: never a second genesis
            self.check_scope_overlap(scope, other_scopes or {})
            if identity.recipient is None or identity.signer is None:
                raise errors.MissingSigningIdentity(hint="use an age (X25519) identity: it decrypts and signs")
            me = Member(member_id, "admin", identity.recipient, identity.signer, scope)
            now = self.clock()
            doc = merge.build_genesis(me, identity, at=format_time(now), now_ms=int(now * 1000),
                                      creator=self.creator)
            document.sign(doc, identity)
            plaintext = canonical(doc)
            head = chain.parse_head(document.parse(plaintext))
            data = age.encrypt(plaintext, [keys.parse_recipient(identity.recipient).obj])
            published = transport.publish(data, None, seq=1, by=member_id, expected_seq=None)
            if not hasattr(published, "rev") or published.rev is None:
                raise errors.RemoteChanged(recommended_action="sync_pull",
                                           hint="another member created the remote first; run the command again")
            self._remember(head, data)
        return InitResult(head.remote_id, True, 1, head.id, published.rev, member_id,
                          head.remote_id if self.remote.remote_id is None else None)

    def _begin(self, local: LocalState) -> tuple[SyncState | None, dict[str, Keyed] | None, int, Fetched, Member]:
        """What every vault-changing command starts from: the vault's sync state and baseline (MAC
        verified; dropped when they belong to another remote id), its generation, the accepted
        current head (`remote_missing` when there is none) and this member's entry in it."""
        self._digests = None
        state, baseline, generation = local.load(self.remote.name)
        if state is not None and state.remote_id != self._remote_id(state):
            state, baseline = None, None
        fetched = self.fetch(state, verified=True)
        if fetched is None:
            raise self.no_head(state)
        me = self._me(fetched.head)
        self._check_overlap(local, me)
        return state, baseline, generation, fetched, me

    def no_head(self, state: SyncState | None, *, stateless: bool = False) -> errors.KimenError:
        """The error for a location that holds no head. When this machine accepted a head of the
        remote (the vault's sync state or the ratchet), the head disappeared (`remote_disappeared`):
        an admin puts it back. When the remote's id is pinned, the location is not a new remote
        either (a wrong path, or a head lost before this machine saw one). Only an unpinned, unknown
        remote is `remote_missing` with `sync init` to create it. `stateless` (`sync pin`): nothing
        on this machine is read, so the head cannot be known to have disappeared."""
        name = self.remote.name
        if not stateless and self._known(self._remote_id(state), state) is not None:
            return errors.RemoteDisappeared(
                remote=name, recommended_action="sync_reset_baseline_or_remote_recreate",
                hint=f"the remote lost its head, or its location changed (`kimen remote get {name}`); an admin puts "
                     f"back the head this machine knows: `kimen sync push --remote {name} --restore-head --yes`")
        if self.remote.remote_id is not None:
            return errors.RemoteMissing(
                remote=name,
                hint=f"this remote's id is pinned, so the location is not a new remote: check it (`kimen remote get "
                     f"{name}`), or ask an admin to restore the head (`kimen sync push --restore-head --yes`)")
        return errors.RemoteMissing(remote=name, recommended_action="sync_init",
                                    hint="create the remote's first head with `kimen sync init`")

    def _check_overlap(self, local: LocalState, me: Member) -> None:
        self.check_scope_overlap(me.scope, local.other_scopes(self.remote.name))

    def check_scope_overlap(self, scope: Sequence[str], others: Mapping[str, Sequence[str]]) -> None:
        """One vault, several remotes: the member's scopes in them must not overlap (a name synced
        through two remotes could be changed by both) → `remote_scope_overlap`; nothing is applied."""
        from .base import scope_overlaps

        for other, other_scope in sorted(others.items()):
            pairs = scope_overlaps(tuple(scope), tuple(other_scope))
            if pairs:
                mine, theirs = pairs[0]
                raise errors.RemoteScopeOverlap(remote=self.remote.name, other=other, glob=mine, other_glob=theirs)

    # -- revert -------------------------------------------------------------------------------------

    def revert(self, local: LocalState, name: str, to_seq: int) -> RevertResult:
        """Make NAME's value in the vault what it was at head `to_seq` (absent there: a delete) — a
        local change the next push publishes. The older head must still be kept by the remote,
        decrypt with this identity and be the one the current head's log chains back to
        (`sync_history_unavailable` otherwise)."""
        from ..bundle import age, document
        from ..store import Change
        from . import chain

        _state, _baseline, generation, fetched, me = self._begin(local)
        head = fetched.head
        if not Scope(me.scope).covers(name):
            raise errors.KeyOutOfScope(name=name, member=me.id)
        if to_seq == head.seq:
            old = head
        elif not 1 <= to_seq < head.seq:  # no such head, not a lost one: the history hint would mislead
            raise errors.SyncHistoryUnavailable(seq=to_seq, hint=f"the remote's heads are seq 1 to {head.seq} "
                                                "(`kimen sync log` lists them)")
        else:
            child = next((e for e in head.sync.log if e.seq == to_seq + 1), None)
            data = self.remote.transport.history(to_seq) if child is not None else None
            if data is None or child is None:
                raise errors.SyncHistoryUnavailable(seq=to_seq)
            try:
                old = chain.parse_head(document.parse(age.decrypt(data, [self._identity()])))
            except errors.BundleNoMatch:
                raise errors.SyncHistoryUnavailable(seq=to_seq, hint="it was sealed before you joined: it does "
                                                    "not decrypt with your identity") from None
            except errors.KimenError as exc:
                raise errors.SyncHistoryUnavailable(
                    seq=to_seq, hint=f"the remote's copy of head {to_seq} is damaged or was changed "
                                     f"({exc.reason}); ask an admin to check the remote") from None
            if old.id != child.parent or old.seq != to_seq or old.remote_id != head.remote_id:
                raise errors.SyncHistoryUnavailable(seq=to_seq, hint="the kept head is not the one the log names")
        entry = old.entries.get(name)
        current = local.local_values(Scope((name,))).get(name)
        if entry is None:
            changes = [Change.rm(name)] if current is not None else []
        else:
            changes = [Change.set(name, entry.value)] if current != entry.value else []
        if changes:
            local.write(changes, if_generation=generation)
        return RevertResult(name, to_seq, entry is None, bool(changes))

    # -- reset-baseline ---------------------------------------------------------------------------

    def reset_baseline(self, local: LocalState, *, accept_fork: bool = False, rev: str | None = None) -> ResetResult:
        """B := R and sync state := the current head, values unchanged (`sync reset-baseline
        --to-remote`, or `--rev` when the head's remote rev is `rev`). The baseline's MAC is not
        checked first (this is the way out of `sync_baseline_tampered`). `accept_fork` waives the
        order check against the known head, re-anchors the ratchet on this head and drops the
        baseline and sync state instead (the next pull merges as a first pull)."""
        from . import chain

        previous, generation = local.unverified(self.remote.name)
        if previous is not None and previous.remote_id != self._remote_id(previous):
            previous = None
        fetched = self.fetch(None, stateless=True) if accept_fork else self.fetch(previous)
        if fetched is None:
            raise errors.RemoteBundleMissingForBaseline(remote=self.remote.name)
        if rev is not None and fetched.remote.rev != rev:
            raise errors.RemoteChanged(remote=self.remote.name, expected_rev=rev, actual_rev=fetched.remote.rev,
                                       recommended_action="sync_pull")
        head = fetched.head
        me = self._me(head)
        if accept_fork:
            # This vault never merged the fork's other side: with B := R, every name only that side
            # added would read as a local delete and the next push would remove it for the team. No
            # baseline instead: the next pull is a first pull, the union of both sides.
            local.forget(self.remote.name)
            directory = self.remote.state_dir(head.remote_id)
            directory.accept_fork(chain.known_head(head), fetched.remote.data)
        else:
            scope = Scope(me.scope)
            local.commit(self.remote.name, (), self._state_of(head, fetched.remote.rev, me),
                         self._baseline_of(local.k_sync, head, scope), if_generation=generation, scope=scope,
                         keep_local_rev=False, backup_path=None)
            self._remember(head, fetched.remote.data)
        return ResetResult(previous.head_rev if previous else None, fetched.remote.rev,
                           previous.head_seq if previous else None, head.seq, accept_fork, head.id)

    # -- membership (admins; no vault, no passphrase) ---------------------------------------------

    def members(self) -> Fetched:
        """The accepted current head, for `sync members list` (`remote_missing` when none)."""
        fetched = self.fetch(None)
        if fetched is None:
            raise self.no_head(None)
        self._me(fetched.head)
        self._remember(fetched.head, fetched.remote.data)
        return fetched

    def change_members(self, change: merge.MembershipChange, *, max_attempts: int = MAX_ATTEMPTS) -> MembersResult:
        """Publish a membership head: every entry carried forward, one new record signed by this
        admin; a removal puts every live name in `rotation_due`. Reads and changes no vault."""
        from ..bundle import age, document, keys
        from . import chain, merge

        identity = self._identity()
        transport = self.remote.transport
        for attempt in range(1, max_attempts + 1):
            with transport.locked():
                fetched = self.fetch(None)
                if fetched is None:
                    raise self.no_head(None)
                head = fetched.head
                me = self._me(head)
                if me.role != "admin":
                    raise errors.SyncRoleForbidden(member=me.id, role=me.role, action="change the membership")
                now = self.clock()
                doc = merge.build_next(head, author=me.id, changes={}, at=format_time(now), now_ms=int(now * 1000),
                                       creator=self.creator, membership=change, signer=identity)
                document.sign(doc, identity)
                plaintext = canonical(doc)
                new_head = chain.parse_head(document.parse(plaintext))
                data = age.encrypt(plaintext, [keys.parse_recipient(m.recipient).obj
                                               for m in new_head.current.members])
                published = transport.publish(data, fetched.remote.rev, seq=new_head.seq, by=me.id,
                                              expected_seq=head.seq)
                rev = getattr(published, "rev", None)
                if rev is not None:
                    self._remember(new_head, data)
                    self._ack_own_change(head, new_head)
                    return MembersResult(new_head, rev, attempt)
        raise errors.RemoteChanged(remote=self.remote.name, recommended_action="sync_members",
                                   hint=f"lost the race to publish {max_attempts} times; run the command again")

    # -- merging ----------------------------------------------------------------------------------

    def _merge(self, local: LocalState, head: Head, scope: Scope, baseline: Mapping[str, Keyed] | None,
               *, state: SyncState | None = None, mirror: bool = False) -> tuple[MergeResult, dict[str, bytes]]:
        """The merge against `head`, and the local values it read. When no row in scope changed
        since the last sync left none (`local.unchanged`), every local value is the baseline's: the
        merge then takes the baseline's digests and decrypts nothing (and returns no values)."""
        from . import merge

        digests = self._digests = merge.Digests(local.k_sync)
        if state is not None and baseline is not None and state.scope == tuple(scope.globs) \
                and merge.UNTRANSLATED not in {k.digest for k in baseline.values()} and local.unchanged(state, scope):
            values: dict[str, bytes] = {}
            local_digests = {name: keyed.digest for name, keyed in baseline.items() if scope.covers(name)}
        else:
            values = local.local_values(scope)
            local_digests = digests.many(values)
        if mirror:
            return merge.mirror(local.k_sync, scope, head, local_digests, digests), values
        return merge.merge(local.k_sync, scope, head, local_digests, baseline, digests), values

    @staticmethod
    def _remote_changes(result: MergeResult, head: Head) -> list[Change]:
        """The remote-only changes as vault changes: set the head's value, or remove the name."""
        from ..store import Change

        out = [Change.set(name, head.entries[name].value) for name in result.remote_sets]
        out += [Change.rm(name) for name in result.remote_deletes]
        return out

    def _baseline_of(self, k_sync: bytes, head: Head, scope: Scope) -> dict[str, Keyed]:
        """B := R for every in-scope name of the head."""
        from . import merge

        return merge.head_digests(k_sync, head, scope, self._digests)

    # -- pull -------------------------------------------------------------------------------------

    def pull(self, local: LocalState, *, reconcile: bool = False, mirror: bool = False, dry_run: bool = False,
             backup_path: str | None = None) -> PullResult:
        """Accept the current head and merge it into the vault (docs/sync.md, "Pulling")."""
        with CollectorPaused():
            return self._pull(local, reconcile=reconcile, mirror=mirror, dry_run=dry_run, backup_path=backup_path)

    def _pull(self, local: LocalState, *, reconcile: bool, mirror: bool, dry_run: bool,
              backup_path: str | None) -> PullResult:
        if reconcile and mirror:
            raise errors.ConflictingPullModes()
        state, baseline, generation, fetched, me = self._begin(local)
        head, scope = fetched.head, Scope(me.scope)
        first_pull = baseline is None
        result, _values = self._merge(local, head, scope, baseline, state=state, mirror=mirror)
        mode = "pull_mirror" if mirror else "pull_reconcile" if reconcile else "pull"
        if not dry_run:
            result.check_conflicts()
        if not first_pull and not mirror and not reconcile and result.local_changed:
            raise errors.ManualPullRequired(remote=self.remote.name, recommended_action="sync_pull_reconcile")
        changes = self._remote_changes(result, head)
        applied, deleted = result.remote_sets, result.remote_deletes
        kept = result.local_changed
        if dry_run:
            return PullResult(mode, head.seq, head.id, fetched.remote.rev, first_pull, None, applied, deleted, kept,
                              not kept and not changes and not result.conflict_keys, dry_run=True,
                              pin_remote_id=fetched.pin_remote_id, conflict_keys=result.conflict_keys)
        local.commit(self.remote.name, changes, self._state_of(head, fetched.remote.rev, me),
                     self._baseline_of(local.k_sync, head, scope), if_generation=generation, scope=scope,
                     keep_local_rev=not kept, backup_path=backup_path)
        self._remember(head, fetched.remote.data)
        return PullResult(mode, head.seq, head.id, fetched.remote.rev, first_pull,
                          backup_path if changes else None, applied, deleted, kept, not kept,
                          pin_remote_id=fetched.pin_remote_id)

    # -- push -------------------------------------------------------------------------------------

    def push(self, local: LocalState, *, ff_only: bool = False, backup_path: str | None = None,
             lock_wait: float | None = None, max_attempts: int = MAX_ATTEMPTS) -> PushResult:
        """Publish the local-only changes in scope as the next head (docs/sync.md, "Pushing")."""
        with CollectorPaused():
            return self._push(local, ff_only=ff_only, backup_path=backup_path, lock_wait=lock_wait,
                              max_attempts=max_attempts)

    def _push(self, local: LocalState, *, ff_only: bool, backup_path: str | None, lock_wait: float | None,
              max_attempts: int) -> PushResult:
        from ..bundle import age, document, keys
        from . import merge

        identity = self._identity()
        transport = self.remote.transport
        attempts = 0
        while True:
            attempts += 1
            with transport.locked(lock_wait):
                state, baseline, generation, fetched, me = self._begin(local)
                head = fetched.head
                if not me.can_write:
                    raise errors.SyncRoleForbidden(member=me.id, role=me.role, action="publish heads")
                scope = Scope(me.scope)
                result, values = self._merge(local, head, scope, baseline, state=state)
                result.check_conflicts()
                remote_changes = self._remote_changes(result, head)
                if ff_only and remote_changes:
                    raise errors.RemoteChanged(remote=self.remote.name, expected_rev=state.head_rev if state else None,
                                               actual_rev=fetched.remote.rev, recommended_action="sync_pull",
                                               hint="the head moved since the last sync; pull first or drop --ff-only")
                changes = merge.push_changes(result, values)
                merged = sorted(result.remote_sets + result.remote_deletes)
                if not changes:
                    local.commit(self.remote.name, remote_changes, self._state_of(head, fetched.remote.rev, me),
                                 self._baseline_of(local.k_sync, head, scope), if_generation=generation, scope=scope,
                                 keep_local_rev=True, backup_path=backup_path)
                    self._remember(head, fetched.remote.data)
                    return PushResult(head.seq, head.id, fetched.remote.rev, fetched.remote.commit, head.generation,
                                      [], [], merged, attempts, True, backup_path if remote_changes else None,
                                      fetched.pin_remote_id)
                now = self.clock()
                doc = merge.build_next(head, author=me.id, changes=changes, at=format_time(now),
                                       now_ms=int(now * 1000), creator=self.creator)
                plaintext = document.sign_canonical(doc, identity)
                new_head = _own_head(doc, plaintext, identity, head)
                recipients = [keys.parse_recipient(m.recipient).obj for m in new_head.current.members]
                data = age.encrypt(plaintext, recipients)
                published = transport.publish(data, fetched.remote.rev, seq=new_head.seq, by=me.id,
                                              expected_seq=head.seq)
                rev = getattr(published, "rev", None)
                if rev is not None:
                    try:
                        local.commit(self.remote.name, remote_changes, self._state_of(new_head, rev, me),
                                     self._baseline_of(local.k_sync, new_head, scope), if_generation=generation,
                                     scope=scope, keep_local_rev=True, backup_path=backup_path)
                    except errors.KimenError as exc:  # published: say so, not that the push failed
                        self._remember(new_head, data)
                        raise errors.SyncPushUnrecorded(seq=new_head.seq, remote=self.remote.name, detail=exc.message,
                                                        recommended_action="sync_pull") from None
                    self._remember(new_head, data)
                    return PushResult(new_head.seq, new_head.id, rev, getattr(published, "commit", None),
                                      new_head.generation, sorted(n for n, v in changes.items() if v is not None),
                                      sorted(n for n, v in changes.items() if v is None), merged, attempts, False,
                                      backup_path if remote_changes else None, fetched.pin_remote_id)
            if attempts >= max_attempts:
                raise errors.RemoteChanged(remote=self.remote.name, actual_rev=getattr(published, "actual_rev", None),
                                           recommended_action="sync_push",
                                           hint=f"lost the race to publish {attempts} times; run the command again")

    # -- restore-head -----------------------------------------------------------------------------

    def _kept_head(self, known: KnownHead, identity: Identity) -> tuple[Head, bytes]:
        """The known head from this machine's state directory (`head.age`), checked against the
        ratchet's head id → else `restore_head_unavailable`."""
        from ..bundle import age, document
        from . import chain

        data = self.remote.state_dir(known.remote_id).read_head()
        if data is None:
            raise errors.RestoreHeadUnavailable(remote=self.remote.name, detail="this machine keeps no copy of it")
        try:  # its signature was verified when it was accepted; the id below proves these are its bytes
            head = chain.parse_head(document.parse(age.decrypt(data, [identity]), verified_before=True))
        except errors.KimenError as exc:
            raise errors.RestoreHeadUnavailable(remote=self.remote.name, detail=exc.reason) from None
        if head.id != known.head_id or head.remote_id != known.remote_id:
            raise errors.RestoreHeadUnavailable(remote=self.remote.name,
                                                detail="the kept copy is not the head the ratchet names")
        return head, data

    def restore_head(self, local: LocalState, *, backup_path: str | None = None,
                     lock_wait: float | None = None) -> PushResult:
        """Publish the known head again (plus this vault's local changes) when the remote's head
        is absent, older than the known head (a rollback) or forked from it: `seq` = max(known,
        remote) + 1, `parent` = the known head, log note `restore`. Admins only. A remote whose
        head this member accepts (nothing to restore) is `restore_head_not_needed`."""
        from ..bundle import age, document, keys
        from . import chain, merge

        identity = self._identity()
        transport = self.remote.transport
        with transport.locked(lock_wait):
            state, baseline, generation = local.load(self.remote.name)
            if state is not None and state.remote_id != self._remote_id(state):
                state, baseline = None, None
            known = self._known(self._remote_id(state), state)
            if known is None:
                raise errors.RestoreHeadUnavailable(remote=self.remote.name, detail="no head was accepted here")
            head, _data = self._kept_head(known, identity)
            current = transport.read_head()
            remote_seq = 0
            if current is not None:
                try:
                    self._accept(current, identity, state)
                except (errors.RemoteRollback, errors.RemoteFork) as exc:
                    remote_seq = int(exc.fields.get("remote_seq") or 0)
                else:
                    raise errors.RestoreHeadNotNeeded(remote=self.remote.name)
            me = self._me(head)
            if me.role != "admin":
                raise errors.SyncRoleForbidden(member=me.id, role=me.role, action="restore the head")
            self._check_overlap(local, me)
            scope = Scope(me.scope)
            result, values = self._merge(local, head, scope, baseline)
            result.check_conflicts()
            remote_changes = self._remote_changes(result, head)
            changes = merge.push_changes(result, values)
            now = self.clock()
            doc = merge.build_next(head, author=me.id, changes=changes, at=format_time(now), now_ms=int(now * 1000),
                                   creator=self.creator, note="restore", seq=max(known.seq, remote_seq) + 1)
            document.sign(doc, identity)
            plaintext = canonical(doc)
            new_head = chain.parse_head(document.parse(plaintext))
            data = age.encrypt(plaintext, [keys.parse_recipient(m.recipient).obj for m in new_head.current.members])
            published = transport.publish(data, current.rev if current is not None else None, seq=new_head.seq,
                                          by=me.id, expected_seq=remote_seq or None)
            rev = getattr(published, "rev", None)
            if rev is None:
                raise errors.RemoteChanged(remote=self.remote.name, actual_rev=getattr(published, "actual_rev", None),
                                           recommended_action="sync_status",
                                           hint="the remote changed while restoring; look again before retrying")
            local.commit(self.remote.name, remote_changes, self._state_of(new_head, rev, me),
                         self._baseline_of(local.k_sync, new_head, scope), if_generation=generation, scope=scope,
                         keep_local_rev=True, backup_path=backup_path)
            self._remember(new_head, data)
            return PushResult(new_head.seq, new_head.id, rev, getattr(published, "commit", None), new_head.generation,
                              sorted(n for n, v in changes.items() if v is not None),
                              sorted(n for n, v in changes.items() if v is None),
                              sorted(result.remote_sets + result.remote_deletes), 1, False,
                              backup_path if remote_changes else None)

    # -- resolve ----------------------------------------------------------------------------------

    def resolve(self, local: LocalState, take: Literal["local", "remote"], keys: Iterable[str] = (), *,
                backup_path: str | None = None) -> ResolveResult:
        """Settle conflicts against the current head: `remote` writes the head's value (or removes
        the name), `local` keeps the vault's; both set the baseline of those keys to the head's, so
        a following `pull --reconcile` (or push) completes. Before the first pull (no baseline) the
        resolution and the first pull happen together, once every conflict is settled."""
        from ..store import Change
        from . import merge

        if take not in ("local", "remote"):
            raise errors.InvalidTake()
        state, baseline, generation, fetched, me = self._begin(local)
        head, scope = fetched.head, Scope(me.scope)
        result, _values = self._merge(local, head, scope, baseline, state=state)
        conflicts = result.conflict_keys
        if not conflicts:
            raise errors.NoOverlappingConflicts()
        wanted = sorted(set(keys)) or conflicts
        not_conflicts = [k for k in wanted if k not in conflicts]
        if not_conflicts:
            raise errors.ResolveKeyNotConflict(names=", ".join(not_conflicts), conflict_keys=conflicts)
        remaining = [k for k in conflicts if k not in wanted]
        remote_digests = merge.head_digests(local.k_sync, head, scope, self._digests)
        changes: list[Change] = []
        if take == "remote":
            for name in wanted:
                entry = head.entries.get(name)
                changes.append(Change.set(name, entry.value) if entry is not None else Change.rm(name))
        if state is None or baseline is None:
            if remaining:
                raise errors.OverlappingChanges(
                    names=", ".join(remaining), conflict_keys=remaining,
                    conflicts=[c for c in result.conflicts if c["key"] in remaining],
                    hint="before the first pull, settle every conflict in one `kimen sync resolve` "
                         "(omit --key, or name them all)")
            # the first pull and the resolution together
            changes += self._remote_changes(result, head)
            kept = result.local_changed + (wanted if take == "local" else [])
            local.commit(self.remote.name, changes, self._state_of(head, fetched.remote.rev, me),
                         self._baseline_of(local.k_sync, head, scope), if_generation=generation, scope=scope,
                         keep_local_rev=not kept, backup_path=backup_path)
        else:
            new_baseline = dict(baseline)
            for name in wanted:
                if name in remote_digests:
                    new_baseline[name] = remote_digests[name]
                else:
                    new_baseline.pop(name, None)
            local.commit(self.remote.name, changes, state, new_baseline, if_generation=generation, scope=scope,
                         keep_local_rev=False, backup_path=backup_path)
        self._remember(head, fetched.remote.data)
        return ResolveResult(take, wanted, remaining, backup_path if changes else None)

    # -- changes (key level, names only) -----------------------------------------------------------

    def changes(self, local: LocalState) -> Changes:
        """`sync changes`: accept the head and compare per key, names only; nothing is written."""
        state, baseline, _generation, fetched, me = self._begin(local)
        result, _values = self._merge(local, fetched.head, Scope(me.scope), baseline, state=state)
        local_changed = sorted(result.local_changed + [k for k in result.conflict_keys])
        remote_changed = sorted(result.remote_sets + result.remote_deletes + result.conflict_keys)
        return Changes(
            seq=fetched.head.seq, first_pull=state is None, local_changed_keys=local_changed,
            remote_changed_keys=remote_changed, conflict_keys=result.conflict_keys, conflicts=result.conflicts,
            local_only_changed_keys=result.local_changed,
            remote_only_changed_keys=sorted(result.remote_sets + result.remote_deletes),
            converged_keys=result.names("converged"), out_of_scope_count=result.out_of_scope_count,
            local_deleted_keys=sorted(n for n in result.local_changed if result.keys[n].local is None))

    # -- status and conflicts (no passphrase, no identity, no decryption) ------------------------

    def status(self, state: SyncState | None, local_rev: Callable[[Scope], str] | None) -> Status:
        """`sync status` of this remote (`kimen.sync.status.read_status`)."""
        return read_status(self.remote, self.identity, state, local_rev)


class _Own:
    """A head this member just built and signed, as `chain.parse_head` reads a document."""

    __slots__ = ("raw", "signer")

    def __init__(self, raw: Mapping[str, object], signer: str | None) -> None:
        self.raw, self.signer = raw, signer


def _own_head(doc: Mapping[str, object], plaintext: bytes, identity: Identity, parent: Head) -> Head:
    """The head of a document this member just built and signed (`doc`, serialised as `plaintext`):
    every rule of a head checked again (`chain.parse_head`), without decoding each value and
    verifying its own signature as a document from elsewhere needs (`kimen.bundle.document.parse`).
    The rules are checked on `doc` itself: `plaintext` is its canonical serialisation, which holds
    exactly its objects, lists, strings, integers and nulls, so reading it back gives the same.
    The entries carried unchanged from `parent` (the accepted head it was built from) are its
    entries (`chain.parse_head`'s `built_from`)."""
    from . import chain

    return chain.parse_head(_Own(doc, identity.signer), plaintext, built_from=parent)
