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

`vault rekey --rotate-data-key` carries every remote whose MAC verifies over to the new key in its
own transaction (`Rotation`): each baseline digest is recomputed from the value it was taken from
(the current value, else a kept older one of `secret_history`), `last_local_rev` follows the
re-encrypted rows when it matched them before, and `state_mac` is recomputed, so the next sync sees
exactly what it would have seen without the rotation. A digest whose value is no longer kept keeps
its revision and gets `UNTRANSLATED` (the merge reads it by revision); a remote whose MAC does not
verify stays tampered.

`commit` is the one write: the value changes a pull, push or resolve makes, the remote's whole new
baseline and its new state row, in one transaction guarded by the vault's generation, after an
optional backup snapshot. A vault of schema version 1 has no sync state (its first write migrates
it).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from .. import errors
from ..durations import format_time
from ..sync.base import Scope, SyncState
from ..sync.merge import (
    UNTRANSLATED,
    Keyed,
    baseline_acc,
    baseline_acc_update,
    key_digest,
    local_revision,
    state_mac,
)
from . import backup as vault_backup
from . import sealing
from .schema import CIPHERTEXT_COLUMNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Mapping, Sequence

    from ..sensitive import Sensitive
    from ..store import Change, WriteResult
    from .file import VaultFile
    from .store import LocalStore

_STATE_COLUMNS = ("remote, remote_id, endpoint, head_seq, head_id, head_rev, head_generation, epoch, record_hash, "
                  "members_fp, member, role, scope, rotation_due_count, last_local_rev, updated_at")


def _row_state(row: Sequence[object]) -> SyncState:
    try:
        scope = json.loads(str(row[12]))
        if not isinstance(scope, list) or not all(isinstance(g, str) for g in scope):
            raise ValueError("scope")
        return SyncState(
            remote=str(row[0]), remote_id=str(row[1]), endpoint=str(row[2]), head_seq=int(row[3]),  # type: ignore[call-overload]
            head_id=str(row[4]), head_rev=str(row[5]), head_generation=int(row[6]),  # type: ignore[call-overload]
            epoch=int(row[7]), record_hash=str(row[8]), members_fp=str(row[9]), member=str(row[10]),  # type: ignore[call-overload]
            role=str(row[11]), scope=tuple(scope), rotation_due_count=int(row[13]),  # type: ignore[call-overload]
            last_local_rev=str(row[14]) or None, updated_at=str(row[15]))
    except (TypeError, ValueError):
        raise errors.SyncBaselineTampered(remote=str(row[0])) from None


def read_state(vault: VaultFile, remote: str) -> SyncState | None:
    """The sync state row of `remote`, unverified (no key: `sync status`); None when there is none."""
    if vault.schema_version < 2:
        return None
    with vault.reading() as conn:
        row = conn.execute(f"SELECT {_STATE_COLUMNS} FROM sync_state WHERE remote=?", (remote,)).fetchone()
    return _row_state(row) if row is not None else None


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


def _revision_rows(conn: sqlite3.Connection, scope: Scope) -> list[tuple[str, int, bytes]]:
    """(name, revision, SHA-256(nonce || ciphertext)) of the rows in `scope`, sorted by name."""
    sha256 = hashlib.sha256
    covers = None if scope.everything else scope.covers
    rows = []
    for name, revision, nonce, ciphertext in conn.execute(
            f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets ORDER BY name"):
        if covers is None or covers(name):
            row_hash = sha256(nonce)
            row_hash.update(ciphertext)
            rows.append((name, revision, row_hash.digest()))
    return rows


def read_local_revision(vault: VaultFile, scope: Scope) -> str:
    """The local revision of the names in `scope` (no key): SHA-256 over their sorted (name,
    revision, SHA-256(nonce || ciphertext)). It differs from `last_local_rev` when the vault changed
    since the last sync."""
    with vault.reading() as conn:
        return local_revision(_revision_rows(conn, scope))


class VaultSyncState:
    """The sync tables of an unlocked vault (`LocalStore`): verified reads and the one commit."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.vault = store.vault
        self.k_sync = sealing.sync_key(store.data_key, self.vault.header().vault_id)
        self._verified: dict[str, tuple[dict[str, Keyed], bytes]] = {}  # remote -> (baseline, acc) `load` checked
        self._local_rev: tuple[int, tuple[str, ...], str] | None = None  # (generation, scope, rev) last read

    def __repr__(self) -> str:
        return f"VaultSyncState({self.vault.path!r})"

    def load(self, remote: str) -> tuple[SyncState | None, dict[str, Keyed] | None, int]:
        """(state, baseline, vault generation) of `remote`, from one snapshot; the state's MAC
        verified (`sync_baseline_tampered`). No state row: (None, None, generation) — a baseline
        without a state row is tampering too."""
        if self.vault.schema_version < 2:
            return None, None, self.vault.header().generation
        with self.vault.reading() as conn:
            generation = self.vault.header().generation
            row = conn.execute(f"SELECT {_STATE_COLUMNS}, state_mac FROM sync_state WHERE remote=?",
                               (remote,)).fetchone()
            rows = [(str(name), int(seq), bytes(digest)) for name, digest, seq in conn.execute(
                "SELECT name, CAST(digest AS BLOB), seq FROM sync_baseline WHERE remote=?", (remote,))]
        if row is None:
            if rows:
                raise errors.SyncBaselineTampered(remote=remote)
            return None, None, generation
        state = _row_state(row)
        acc = baseline_acc(self.k_sync, rows)
        expected = state_mac(self.k_sync, state, acc)
        stored = row[16]
        if not isinstance(stored, (bytes, memoryview)) or not hmac.compare_digest(bytes(stored), expected) \
                or state.remote != remote:
            raise errors.SyncBaselineTampered(remote=remote)
        baseline = {name: Keyed(digest, seq) for name, seq, digest in rows}
        self._verified[remote] = (dict(baseline), acc)
        return state, baseline, generation

    def unchanged(self, state: SyncState, scope: Scope) -> bool:
        """Whether no row in `scope` changed since the commit that recorded `state` with no local
        change left (`last_local_rev`): every local value then equals the baseline's, and a merge
        needs no value decrypted (no key; `scope` must be the state's own)."""
        if state.last_local_rev is None or tuple(scope.globs) != tuple(state.scope):
            return False
        with self.vault.reading() as conn:
            generation = self.vault.header().generation
            rev = local_revision(_revision_rows(conn, scope))
        self._local_rev = (generation, tuple(scope.globs), rev)
        return rev == state.last_local_rev

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
                vault_backup.discard(snapshot)
            raise

    def _commit(self, remote: str, changes: Sequence[Change], state: SyncState, baseline: Mapping[str, Keyed],
                if_generation: int, scope: Scope, keep_local_rev: bool) -> WriteResult | None:
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
                local_rev = local_revision(_revision_rows(conn, scope))
            new_state = SyncState(
                remote=remote, remote_id=state.remote_id, endpoint=state.endpoint, head_seq=state.head_seq,
                head_id=state.head_id, head_rev=state.head_rev, head_generation=state.head_generation,
                epoch=state.epoch, record_hash=state.record_hash, members_fp=state.members_fp, member=state.member,
                role=state.role, scope=state.scope, rotation_due_count=state.rotation_due_count,
                last_local_rev=local_rev, updated_at=format_time())
            rows = sorted((name, keyed.seq, keyed.digest) for name, keyed in baseline.items())
            verified = self._verified.pop(remote, None)  # MAC only the rows that changed since `load`
            acc = (baseline_acc_update(self.k_sync, verified[1], verified[0], baseline) if verified is not None
                   else baseline_acc(self.k_sync, rows))
            mac = state_mac(self.k_sync, new_state, acc)
            conn.execute("DELETE FROM sync_baseline WHERE remote=?", (remote,))
            conn.executemany("INSERT INTO sync_baseline (remote, name, digest, seq) VALUES (?, ?, ?, ?)",
                             [(remote, name, digest, seq) for name, seq, digest in rows])
            conn.execute("DELETE FROM sync_state WHERE remote=?", (remote,))
            conn.execute(
                f"INSERT INTO sync_state ({_STATE_COLUMNS}, state_mac) VALUES "
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
        self._verified[remote] = (dict(baseline), acc)
        return result


class Rotation:
    """The sync tables' part of a data-key rotation, inside the rotation's transaction: built
    before the rows are re-encrypted (it needs the old ciphertexts), shown every value the rotation
    decrypts (`see`), finished after (`finish`)."""

    def __init__(self, conn: sqlite3.Connection, vault_id: bytes, old_key: Sensitive, new_key: Sensitive) -> None:
        self.vault_id = vault_id
        self.old_sync = sealing.sync_key(old_key, vault_id)
        self.new_sync = sealing.sync_key(new_key, vault_id)
        # remote -> (state, its baseline rows, whether last_local_rev matched the rows)
        self.remotes: dict[str, tuple[SyncState, list[tuple[str, int, bytes]], bool]] = {}
        self.wanted: dict[str, set[bytes]] = {}  # name -> old digests still to translate
        self.translated: dict[bytes, bytes] = {}  # old digest -> new digest
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:
            return
        for row in conn.execute(f"SELECT {_STATE_COLUMNS}, state_mac FROM sync_state").fetchall():
            try:
                state = _row_state(row)
            except errors.SyncBaselineTampered:
                continue  # stays tampered: its MAC cannot verify under the new key either
            rows = [(str(name), int(seq), bytes(digest)) for name, digest, seq in conn.execute(
                "SELECT name, CAST(digest AS BLOB), seq FROM sync_baseline WHERE remote=?", (state.remote,))]
            expected = state_mac(self.old_sync, state, baseline_acc(self.old_sync, rows))
            if not isinstance(row[16], (bytes, memoryview)) or not hmac.compare_digest(bytes(row[16]), expected):
                continue
            matched = state.last_local_rev == local_revision(_revision_rows(conn, Scope(state.scope)))
            self.remotes[state.remote] = (state, rows, matched)
            for name, _seq, digest in rows:
                if digest != UNTRANSLATED:
                    self.wanted.setdefault(name, set()).add(digest)

    def __repr__(self) -> str:
        return f"Rotation({len(self.remotes)} remotes)"

    def see(self, name: str, value: bytes) -> None:
        """A value the rotation decrypted (a current or a kept older one of `name`)."""
        wanted = self.wanted.get(name)
        if wanted:
            old = key_digest(self.old_sync, name, value)
            if old in wanted:
                wanted.discard(old)
                self.translated[old] = key_digest(self.new_sync, name, value)

    def finish(self, conn: sqlite3.Connection) -> None:
        """After the rows were re-encrypted: write each verified remote's translated baseline, its
        `last_local_rev` and its `state_mac` under the new key."""
        for remote, (state, rows, matched) in self.remotes.items():
            new_rows = [(name, seq, self.translated.get(digest, UNTRANSLATED)) for name, seq, digest in rows]
            local_rev = local_revision(_revision_rows(conn, Scope(state.scope))) if matched else state.last_local_rev
            new_state = SyncState(
                remote=state.remote, remote_id=state.remote_id, endpoint=state.endpoint, head_seq=state.head_seq,
                head_id=state.head_id, head_rev=state.head_rev, head_generation=state.head_generation,
                epoch=state.epoch, record_hash=state.record_hash, members_fp=state.members_fp, member=state.member,
                role=state.role, scope=state.scope, rotation_due_count=state.rotation_due_count,
                last_local_rev=local_rev, updated_at=state.updated_at)
            mac = state_mac(self.new_sync, new_state, baseline_acc(self.new_sync, new_rows))
            conn.executemany("UPDATE sync_baseline SET digest=? WHERE remote=? AND name=?",
                             [(digest, remote, name) for name, _seq, digest in new_rows])
            conn.execute("UPDATE sync_state SET last_local_rev=?, state_mac=? WHERE remote=?",
                         (local_rev or "", mac, remote))


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
