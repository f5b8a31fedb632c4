"""The vault's sync tables: one remote's sync state and baseline, read and committed (docs/sync.md).

- `sync_state`, one row per remote name: the known head (seq, id, remote rev, generation,
  membership epoch and record hash, `members_fp`), the member's own id, role and scope, the
  `rotation_due` count, `last_local_rev` and `state_mac`;
- `sync_baseline`, (remote, name) → `digest` (the keyed digest of the value both sides last agreed
  on) and `seq` (that entry's revision); no row means "absent".

`state_mac` covers every other column of the row and `baseline_acc` (the XOR of one MAC per
baseline row), all under `k_sync`, a subkey of the data key: a baseline edited, dropped or moved
between remotes fails `load` with `sync_baseline_tampered`. Key-free readers (`sync status`) get
the row without that check (`read_state`) and say so (`baseline_verified: false`).

`vault rekey --rotate-data-key` carries the verified remotes over to the new key
(`kimen.vault.syncrows.Rotation`).

`commit` is the one write: the value changes a pull, push or resolve makes, the remote's whole new
baseline and its new state row, in one transaction guarded by the vault's generation, after an
optional backup snapshot. A vault of schema version 1 has no sync state (its first write migrates
it).
"""

from __future__ import annotations

from .. import errors
from ..durations import format_time
from ..sync.base import Scope, SyncState
from .syncrows import (
    STATE_COLUMNS,
    baseline_rows,
    local_revision,
    recorded_local_rev,
    revision_rows,
    row_state,
    rows_stamp,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..store import Change, WriteResult
    from ..sync.merge import Keyed
    from .file import VaultFile
    from .store import LocalStore


def read_state(vault: VaultFile, remote: str) -> SyncState | None:
    """The sync state row of `remote`, unverified (no key: `sync status`); None when there is none."""
    if vault.schema_version < 2:
        return None
    with vault.reading() as conn:
        row = conn.execute(f"SELECT {STATE_COLUMNS} FROM sync_state WHERE remote=?", (remote,)).fetchone()
    return row_state(row) if row is not None else None


def other_scopes(vault: VaultFile, remote: str) -> dict[str, tuple[str, ...]]:
    """The member's scope in every remote but `remote` this vault syncs (state rows, unverified; no
    key needed: `sync init` and `sync join` check them before the vault is ever unlocked)."""
    if vault.schema_version < 2:
        return {}
    with vault.reading() as conn:
        rows = conn.execute("SELECT remote FROM sync_state WHERE remote != ?", (remote,)).fetchall()
    out: dict[str, tuple[str, ...]] = {}
    for (name,) in rows:
        state = read_state(vault, str(name))
        if state is not None:
            out[state.remote] = state.scope
    return out


def read_local_revision(vault: VaultFile, scope: Scope, state: SyncState | None = None) -> str:
    """The local revision of the names in `scope` (no key): SHA-256 over their sorted (name,
    revision, SHA-256(nonce || ciphertext)). It differs from `last_local_rev` when the vault changed
    since the last sync. Given the `state` it is compared with, the revision it recorded is taken
    as it is while the rows stamp it was recorded at is still the vault's (`syncrows.rows_stamp`)."""
    with vault.reading() as conn:
        if state is not None and state.recorded_stamp is not None and tuple(scope.globs) == tuple(state.scope) \
                and rows_stamp(conn) == state.recorded_stamp:
            return str(state.recorded_rev)
        return local_revision(revision_rows(conn, scope))


class VaultSyncState:
    """The sync tables of an unlocked vault (`LocalStore`): verified reads and the one commit."""

    def __init__(self, store: LocalStore) -> None:
        from . import sealing

        self.store = store
        self.vault = store.vault
        self.k_sync = sealing.sync_key(store.data_key, self.vault.header().vault_id)
        # remote -> (baseline, acc, state_mac) as `load` checked them or `commit` wrote them
        self._verified: dict[str, tuple[dict[str, Keyed], bytes, bytes]] = {}
        self._local_rev: tuple[int, tuple[str, ...], str] | None = None  # (generation, scope, rev) last read

    def __repr__(self) -> str:
        return f"VaultSyncState({self.vault.path!r})"

    def load(self, remote: str) -> tuple[SyncState | None, dict[str, Keyed] | None, int]:
        """(state, baseline, vault generation) of `remote`, from one snapshot; the state's MAC
        verified (`sync_baseline_tampered`). No state row: (None, None, generation) — a baseline
        without a state row is tampering too."""
        import hmac

        from ..sync.merge import Keyed, baseline_acc, state_mac

        if self.vault.schema_version < 2:
            return None, None, self.vault.header().generation
        with self.vault.reading() as conn:
            generation = self.vault.header().generation
            row = conn.execute(f"SELECT {STATE_COLUMNS}, state_mac FROM sync_state WHERE remote=?",
                               (remote,)).fetchone()
            rows = baseline_rows(conn, remote)
        if row is None:
            if rows:
                raise errors.SyncBaselineTampered(remote=remote)
            return None, None, generation
        state = row_state(row)
        acc = baseline_acc(self.k_sync, rows)
        expected = state_mac(self.k_sync, state, acc)
        stored = row[16]
        if not isinstance(stored, (bytes, memoryview)) or not hmac.compare_digest(bytes(stored), expected) \
                or state.remote != remote:
            raise errors.SyncBaselineTampered(remote=remote)
        baseline = {name: Keyed(digest, seq) for name, seq, digest in rows}
        self._verified[remote] = (dict(baseline), acc, expected)
        return state, baseline, generation

    def unchanged(self, state: SyncState, scope: Scope) -> bool:
        """Whether no row in `scope` changed since the commit that recorded `state` with no local
        change left (`last_local_rev`): every local value then equals the baseline's, and a merge
        needs no value decrypted (no key; `scope` must be the state's own)."""
        if state.recorded_rev is None or tuple(scope.globs) != tuple(state.scope):
            return False
        with self.vault.reading() as conn:
            generation = self.vault.header().generation
            rev = local_revision(revision_rows(conn, scope))
        self._local_rev = (generation, tuple(scope.globs), rev)
        return rev == state.recorded_rev

    def unverified(self, remote: str) -> tuple[SyncState | None, int]:
        """(state, vault generation) of `remote` without the MAC check (`sync reset-baseline`)."""
        generation = self.vault.header().generation
        return read_state(self.vault, remote), generation

    def other_scopes(self, remote: str) -> dict[str, tuple[str, ...]]:
        """The member's scope in every other remote this vault syncs (their state rows, unverified)."""
        return other_scopes(self.vault, remote)

    def local_values(self, scope: Scope) -> dict[str, bytes]:
        """The values of every name in `scope` (one read)."""
        names = [name for name in self.vault.list_names() if scope.covers(name)]
        return {name: value.value for name, value in self.store.read(names).items()} if names else {}

    def write(self, changes: Sequence[Change], *, if_generation: int) -> None:
        """Change values only, as `secret set` and `secret rm` do (`sync revert`)."""
        self.store.write(changes, if_generation=if_generation)

    def forget(self, remote: str) -> None:
        """Drop `remote`'s state row and baseline (`sync reset-baseline --accept-fork`)."""
        clear_state(self.vault, remote)
        self._verified.pop(remote, None)

    def commit(self, remote: str, changes: Sequence[Change], state: SyncState, baseline: Mapping[str, Keyed], *,
               if_generation: int, scope: Scope, keep_local_rev: bool, backup_path: str | None) -> WriteResult | None:
        """Apply `changes` (values), replace `remote`'s baseline by `baseline` and its state row by
        `state` in one transaction, guarded by `if_generation` (`vault_failed`: the vault changed
        meanwhile). `last_local_rev` := the local revision after the changes when `keep_local_rev`
        (no local-only change remains), else cleared. A backup snapshot at `backup_path` comes
        first when there are value changes (and is removed again when the commit fails).
        Returns the write's result (None when no value changed)."""
        snapshot = backup_path if changes and backup_path is not None else None
        if snapshot is not None:
            if self.vault.header().generation != if_generation:
                raise errors.VaultFailed(detail="the vault changed concurrently; run the command again")
            try:
                self.vault.snapshot(snapshot)
            except OSError as exc:
                raise errors.BackupFailed(detail=f"{snapshot}: {exc.strerror}") from None
            except errors.KimenError as exc:
                raise errors.BackupFailed(detail=f"{snapshot}: {exc.message}") from None
        try:
            return self._commit(remote, changes, state, baseline, if_generation, scope, keep_local_rev)
        except BaseException:
            if snapshot is not None:
                from . import backup as vault_backup

                vault_backup.discard(snapshot)
            raise

    def _commit(self, remote: str, changes: Sequence[Change], state: SyncState, baseline: Mapping[str, Keyed],
                if_generation: int, scope: Scope, keep_local_rev: bool) -> WriteResult | None:
        import json

        from ..sync.merge import baseline_acc, baseline_acc_update, baseline_changes, state_mac
        from . import sealing

        store = self.store
        with self.vault.transaction() as conn:
            header = self.vault.header()
            store.check_key(header)
            if header.generation != if_generation:
                raise errors.VaultFailed(detail="the vault changed concurrently; run the command again")
            result = store._apply(conn, header, changes, "sync") if changes else None
            known = self._local_rev  # no row changed since it was read: the same revision
            if not keep_local_rev:
                local_rev = None
            elif result is None and known is not None and known[:2] == (header.generation, tuple(scope.globs)):
                local_rev = known[2]
            else:
                local_rev = local_revision(revision_rows(conn, scope))
            if local_rev is not None:  # with the rows stamp `sync status` compares
                local_rev = recorded_local_rev(local_rev, rows_stamp(conn))
            new_state = SyncState(
                remote=remote, remote_id=state.remote_id, endpoint=state.endpoint, head_seq=state.head_seq,
                head_id=state.head_id, head_rev=state.head_rev, head_generation=state.head_generation,
                epoch=state.epoch, record_hash=state.record_hash, members_fp=state.members_fp, member=state.member,
                role=state.role, scope=state.scope, rotation_due_count=state.rotation_due_count,
                last_local_rev=local_rev, updated_at=format_time())
            verified = self._verified.pop(remote, None)
            if verified is not None:
                import hmac

                stored = conn.execute("SELECT state_mac FROM sync_state WHERE remote=?", (remote,)).fetchone()
                if stored is None or not isinstance(stored[0], (bytes, memoryview)) \
                        or not hmac.compare_digest(bytes(stored[0]), verified[2]):
                    verified = None  # the rows changed since they were checked: rewrite them all
            if verified is not None:
                # the rows on disk are those `load` checked (or the last commit wrote): the
                # accumulator and the table change by the rows that differ only
                removed, changed = delta = baseline_changes(verified[0], baseline)
                acc = baseline_acc_update(self.k_sync, verified[1], verified[0], baseline, delta)
                conn.executemany("DELETE FROM sync_baseline WHERE remote=? AND name=?",
                                 [(remote, name) for name in removed])
                conn.executemany("INSERT OR REPLACE INTO sync_baseline (remote, name, digest, seq) VALUES (?, ?, ?, ?)",
                                 [(remote, name, keyed.digest, keyed.seq) for name, keyed in changed.items()])
            else:
                rows = sorted((name, keyed.seq, keyed.digest) for name, keyed in baseline.items())
                acc = baseline_acc(self.k_sync, rows)
                conn.execute("DELETE FROM sync_baseline WHERE remote=?", (remote,))
                conn.executemany("INSERT INTO sync_baseline (remote, name, digest, seq) VALUES (?, ?, ?, ?)",
                                 [(remote, name, digest, seq) for name, seq, digest in rows])
            mac = state_mac(self.k_sync, new_state, acc)
            conn.execute("DELETE FROM sync_state WHERE remote=?", (remote,))
            conn.execute(
                f"INSERT INTO sync_state ({STATE_COLUMNS}, state_mac) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (remote, new_state.remote_id, new_state.endpoint, new_state.head_seq, new_state.head_id,
                 new_state.head_rev, new_state.head_generation, new_state.epoch, new_state.record_hash,
                 new_state.members_fp, new_state.member, new_state.role, json.dumps(list(new_state.scope)),
                 new_state.rotation_due_count, new_state.last_local_rev or "", new_state.updated_at, mac))
            if result is None:
                # the sync tables changed: the generation moves too, so a concurrent merge notices
                generation = header.generation + 1
                k_mac = sealing.mac_key(store.data_key, header.vault_id)
                conn.execute("UPDATE vault SET generation=?, meta_mac=?", (
                    generation, sealing.meta_mac(k_mac, header.vault_id, generation, header.key_epoch,
                                                 header.rows_mac)))
        self._verified[remote] = (dict(baseline), acc, mac)
        return result


def clear_state(vault: VaultFile, remote: str) -> bool:
    """Drop `remote`'s state row and baseline (no key needed; the ratchet outside the vault stays).
    Returns whether there was any."""
    if vault.schema_version < 2:
        return False
    with vault.reading() as conn:
        found = conn.execute("SELECT 1 FROM sync_state WHERE remote=? UNION ALL "
                             "SELECT 1 FROM sync_baseline WHERE remote=? LIMIT 1", (remote, remote)).fetchone()
    if found is None:
        return False
    with vault.transaction() as conn:
        conn.execute("DELETE FROM sync_baseline WHERE remote=?", (remote,))
        conn.execute("DELETE FROM sync_state WHERE remote=?", (remote,))
    return True
