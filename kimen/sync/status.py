"""`sync status` and `sync conflicts`: the revision-level view of one remote, with no passphrase,
no identity and no decryption (docs/sync.md, "Status without a passphrase").

The head file's remote rev (asked now: fs reads the file; git asks `ls-remote` for the branch's
commit and reads the file of a commit it has not read before; never a cached answer) against the
vault's `head_rev`, the local revision against `last_local_rev`, the ratchet, the acknowledged
members and the lock. Also `Remote` (one remote as the engine sees it) and `endpoint`, which the
engine re-exports.

Kept apart from `kimen.sync.engine` so that the status path imports no merge, chain or
`dataclasses`: its types are plain slotted classes.
"""

from __future__ import annotations

from .ratchet import SyncStateDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..bundle.keys import Identity
    from .base import Scope, SyncState, Transport


class Remote:
    """One remote as the engine uses it: its name (the vault's key), transport, configured id,
    endpoint (SHA-256 of type, path, branch, bundle path) and the state directory root."""

    def __init__(self, name: str, transport: Transport, *, remote_id: str | None, endpoint: str | Callable[[], str],
                 state_base: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.transport = transport
        self.remote_id = remote_id
        self._endpoint = endpoint  # or how to compute it: `sync status` never needs it
        self.state_base = state_base
        self.env = env

    @property
    def endpoint(self) -> str:
        if not isinstance(self._endpoint, str):
            self._endpoint = self._endpoint()
        return self._endpoint

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, {self.transport!r})"

    def state_dir(self, remote_id: str) -> SyncStateDir:
        return SyncStateDir(remote_id, self.env, base=self.state_base)


def endpoint(kind: str, path: str, branch: str | None = None, bundle_path: str | None = None) -> str:
    """SHA-256 of a remote's type, path, branch and bundle path: where its baseline belongs."""
    import hashlib

    from ..sigfmt import canonical

    return hashlib.sha256(canonical([kind, path, branch, bundle_path])).hexdigest()


class Status:
    """`sync status`: no passphrase, no identity, no decryption; the head's file read on every call."""

    __slots__ = ("baseline_verified", "blockers", "has_local", "has_lock", "has_remote", "head_created",
                 "head_seq", "last_seen_rev", "local_changed", "local_rev", "lock_owner", "member",
                 "members_changed", "ratchet_seq", "reason", "recommended_action", "remote", "remote_commit",
                 "remote_id", "remote_rev", "role", "rotation_due_count", "scope")

    def __init__(self, remote: str, remote_id: str | None, has_remote: bool, has_local: bool,
                 remote_rev: str | None, remote_commit: str | None, last_seen_rev: str | None,
                 local_rev: str | None, head_seq: int | None, ratchet_seq: int | None, member: str | None,
                 role: str | None, scope: list[str] | None, rotation_due_count: int, local_changed: bool,
                 has_lock: bool, lock_owner: str | None, reason: str | None, recommended_action: str,
                 blockers: list[str] | None = None, baseline_verified: bool = False,
                 head_created: float | None = None, members_changed: bool = False) -> None:
        self.remote = remote
        self.remote_id = remote_id
        self.has_remote = has_remote
        self.has_local = has_local
        self.remote_rev = remote_rev
        self.remote_commit = remote_commit
        self.last_seen_rev = last_seen_rev
        self.local_rev = local_rev
        self.head_seq = head_seq
        self.ratchet_seq = ratchet_seq
        self.member = member
        self.role = role
        self.scope = scope
        self.rotation_due_count = rotation_due_count
        self.local_changed = local_changed
        self.has_lock = has_lock
        self.lock_owner = lock_owner
        self.reason = reason
        self.recommended_action = recommended_action
        self.blockers = blockers if blockers is not None else []
        self.baseline_verified = baseline_verified
        self.head_created = head_created  # seconds since the epoch: the known head's generation, when current
        self.members_changed = members_changed

    def __repr__(self) -> str:
        return f"Status({self.remote!r}, reason={self.reason!r}, local_changed={self.local_changed})"

    @property
    def in_sync(self) -> bool:
        return self.reason is None and not self.local_changed

    @property
    def needs_pull(self) -> bool:
        return self.reason in ("remote_changed", "no_local_baseline")

    @property
    def can_push(self) -> bool:
        return self.has_remote and self.role in ("admin", "writer") and not self.blockers \
            and self.reason in (None, "remote_changed")

    @property
    def has_conflict(self) -> bool:
        return self.reason in ("remote_disappeared", "no_local_baseline", "remote_changed")

    def conflicts(self) -> dict[str, object]:
        """`sync conflicts`: the revision-level result and the lock state (no key, no decryption)."""
        return {"has_conflict": self.has_conflict, "reason": self.reason, "expected_rev": self.last_seen_rev,
                "actual_rev": self.remote_rev, "has_lock": self.has_lock, "lock_owner": self.lock_owner,
                "recommended_action": self.recommended_action}


def read_status(remote: Remote, identity: Identity | None, state: SyncState | None,
                local_rev: Callable[[Scope], str] | None) -> Status:
    """The revision-level view: the head file's remote rev (read now) against the vault's
    `head_rev`, the local revision against `last_local_rev`, the ratchet and the lock.
    `state` is the vault's sync state read without the key (None: no baseline);
    `local_rev(scope)` computes the local revision (None: no local vault)."""
    from .base import Scope

    transport = remote.transport
    remote_id = remote.remote_id if remote.remote_id is not None else state.remote_id if state is not None else None
    directory = remote.state_dir(remote_id) if remote_id is not None else None

    def known(data: bytes) -> str | None:
        """The vault's head rev when `data` is the head this machine kept for it (no hashing)."""
        if directory is not None and state is not None and directory.same_as_kept(data, state.head_rev):
            return state.head_rev
        return None

    current = transport.head_rev(known)
    ratchet = directory.read_ratchet() if directory is not None else None
    ack = directory.read_ack() if directory is not None and state is not None else None
    members_changed = ack is not None and state is not None and ack.members_fp != state.members_fp
    # the head's age without decrypting: known only while the remote still holds the known head
    head_created = (state.head_generation / 1000.0 if state is not None and current is not None
                    and current.rev == state.head_rev else None)
    holder = getattr(transport, "lock_holder", None)
    lock_owner = holder() if holder is not None else None
    has_local = local_rev is not None
    local_changed = False
    local = None
    if state is not None and local_rev is not None:
        local = local_rev(Scope(state.scope))
        local_changed = local != state.recorded_rev
    blockers: list[str] = []
    if not has_local:
        blockers.append("local_vault_missing")
    if lock_owner is not None:
        blockers.append("remote_lock_present")
    if identity is None:
        blockers.append("remote_identity_missing")
    if state is not None and state.role == "reader" and local_changed:
        blockers.append("sync_role_forbidden")
    if current is None:
        # this machine accepted a head of the remote (the vault's baseline or the ratchet): it is gone
        reason = "remote_disappeared" if state is not None or ratchet is not None else "remote_missing"
    elif state is None:
        reason = "no_local_baseline"
    elif current.rev != state.head_rev:
        reason = "remote_changed"
    else:
        reason = None
    if reason is not None and reason != "remote_missing" and reason not in blockers:
        blockers.append(reason)
    action = recommended_action(reason, has_local=has_local, identity=identity is not None,
                                local_changed=local_changed, lock=lock_owner is not None,
                                pinned=remote.remote_id is not None,
                                writer=state is not None and state.role in ("admin", "writer"),
                                members_changed=members_changed,
                                rotation_due=state is not None and state.rotation_due_count > 0)
    return Status(
        remote=remote.name, remote_id=remote_id, has_remote=current is not None, has_local=has_local,
        remote_rev=current.rev if current is not None else None,
        remote_commit=current.commit if current is not None else None,
        last_seen_rev=state.head_rev if state is not None else None, local_rev=local,
        head_seq=state.head_seq if state is not None else None,
        ratchet_seq=ratchet.seq if ratchet is not None else None,
        member=state.member if state is not None else None, role=state.role if state is not None else None,
        scope=list(state.scope) if state is not None else None,
        rotation_due_count=state.rotation_due_count if state is not None else 0,
        local_changed=local_changed, has_lock=lock_owner is not None, lock_owner=lock_owner, reason=reason,
        recommended_action=action, blockers=blockers, head_created=head_created,
        members_changed=members_changed)


def recommended_action(reason: str | None, *, has_local: bool, identity: bool, local_changed: bool, lock: bool,
                       writer: bool, members_changed: bool = False, rotation_due: bool = False,
                       pinned: bool = False) -> str:
    """The first applicable action, in the documented precedence. A missing head of a remote whose
    id is `pinned` is not created anew (`sync init` refuses): an admin restores it."""
    if not identity:
        return "configure_remote_identity"
    if reason == "remote_missing" and pinned:
        return "sync_reset_baseline_or_remote_recreate"
    if not has_local:
        return "vault_init" if reason != "remote_missing" else "sync_init"
    if reason == "remote_missing":
        return "sync_init"
    if reason == "remote_disappeared":
        return "sync_reset_baseline_or_remote_recreate"
    if reason == "no_local_baseline":
        return "sync_pull"
    if reason == "remote_changed":
        return "sync_pull_reconcile" if local_changed else "sync_pull"
    if lock:
        return "wait_or_sync_unlock"
    if local_changed and writer:
        return "sync_push"
    if local_changed:  # a reader's changes can never be published: the vault back to the head, after a backup
        return "sync_pull_mirror"
    if members_changed:
        return "sync_members_ack"
    if rotation_due:
        return "sync_rotate"
    return "none"
