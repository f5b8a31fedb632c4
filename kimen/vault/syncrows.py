"""The sync tables' rows without a vault object: the state row's columns and decoding, the rows
behind the local revision, and the sync part of a data-key rotation (`Rotation`, used inside the
rotation's transaction by `kimen.vault.rekey`). `kimen.vault.syncstate` reads and commits through
them; kept apart so that the rotation, which `VaultFile` runs, imports no vault or store object.

`vault rekey --rotate-data-key` carries every remote whose MAC verifies over to the new key in its
own transaction: each baseline digest is recomputed from the value it was taken from (the current
value, else a kept older one of `secret_history`), `last_local_rev` follows the re-encrypted rows
when it matched them before, and `state_mac` is recomputed, so the next sync sees exactly what it
would have seen without the rotation. A digest whose value is no longer kept keeps its revision and
gets `UNTRANSLATED` (the merge reads it by revision); a remote whose MAC does not verify stays
tampered.
"""

from __future__ import annotations

from .. import errors
from ..jsontext import read_json
from ..sync.base import Scope, SyncState
from .schema import CIPHERTEXT_COLUMNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable, Sequence
    from typing import Any

    from ..sensitive import Sensitive

STATE_COLUMNS = ("remote, remote_id, endpoint, head_seq, head_id, head_rev, head_generation, epoch, record_hash, "
                  "members_fp, member, role, scope, rotation_due_count, last_local_rev, updated_at")


def row_state(row: Sequence[object]) -> SyncState:
    try:
        scope = read_json(str(row[12]))
        if not isinstance(scope, list) or not all(isinstance(g, str) for g in scope):
            raise ValueError("scope")
        return SyncState(
            remote=str(row[0]), remote_id=str(row[1]), endpoint=str(row[2]), head_seq=int(row[3]),  # type: ignore[call-overload]
            head_id=str(row[4]), head_rev=str(row[5]), head_generation=int(row[6]),  # type: ignore[call-overload]
            epoch=int(row[7]), record_hash=str(row[8]), members_fp=str(row[9]), member=str(row[10]),  # type: ignore[call-overload]
            role=str(row[11]), scope=tuple(scope), rotation_due_count=int(row[13]),  # type: ignore[call-overload]
            last_local_rev=str(row[14]) or None, updated_at=str(row[15]))
    except (TypeError, ValueError, RecursionError):  # a row edited outside kimen: nested too deep too
        raise errors.SyncBaselineTampered(remote=str(row[0])) from None


def baseline_rows(conn: sqlite3.Connection, remote: str) -> list[tuple[str, int, bytes]]:
    """`remote`'s baseline rows (name, seq, digest). `SyncBaselineTampered` when a byte change gave
    one another type or a negative seq: its MAC could not even be computed (`int(b'..')`, a
    negative `struct.pack`), let alone verified."""
    rows = conn.execute("SELECT name, CAST(digest AS BLOB), seq FROM sync_baseline WHERE remote=?",
                        (remote,)).fetchall()
    if not all(type(name) is str and type(digest) is bytes and type(seq) is int and seq >= 0
               for name, digest, seq in rows):
        raise errors.SyncBaselineTampered(remote=remote)
    return [(name, seq, digest) for name, digest, seq in rows]


def revision_rows(conn: sqlite3.Connection, scope: Scope) -> list[tuple[str, int, bytes]]:
    """(name, revision, SHA-256(nonce || ciphertext)) of the rows in `scope`, sorted by name."""
    import hashlib  # here: it loads OpenSSL, which `sync status` does without

    sha256 = hashlib.sha256
    cursor = conn.execute(f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets ORDER BY name")
    if scope.everything:
        return [(name, revision, sha256(nonce + ciphertext).digest()) for name, revision, nonce, ciphertext in cursor]
    covers = scope.covers
    return [(name, revision, sha256(nonce + ciphertext).digest()) for name, revision, nonce, ciphertext in cursor
            if covers(name)]


def _blake2b(data: bytes, *, digest_size: int) -> Any:
    """BLAKE2b from CPython's built-in module, which `hashlib` re-exports: `hashlib` itself would
    load OpenSSL (~2 ms of `sync status`'s start-up) for a digest that needs none of it."""
    try:
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - a CPython built without its own BLAKE2
        from hashlib import blake2b
    return blake2b(data, digest_size=digest_size)


def rows_stamp(conn: sqlite3.Connection) -> str:
    """A cheap fingerprint of the `secrets` table, computed by SQLite in one pass without returning
    a row: the row count, the sum of the revisions, every name and every nonce (in table order).
    Every write changes it: kimen's writes give each row they write a fresh random nonce and delete
    rows or rename them, and so does any other writer of a row a key could open. A change it does
    not see keeps every name, nonce and the revisions' sum — a ciphertext or revision edited in
    place, which no key opens any more (the nonce, name and revision are bound to the ciphertext).
    `last_local_rev` records it beside the local revision, so that `sync status` recomputes the
    revision (12-15 ms for 10 000 rows) only when the stamp moved (about 1 ms). The digest is
    BLAKE2b-256: as strong as SHA-256, and without `hashlib`'s OpenSSL."""
    # one concatenation of every row's name and nonce (a row with either NULL drops out of it)
    count, revisions, rows = conn.execute(
        "SELECT count(*), total(revision), CAST(group_concat(name || nonce, '') AS BLOB) FROM secrets").fetchone()
    digest = _blake2b(f"{count} {revisions!r}\n".encode(), digest_size=32)
    digest.update(bytes(rows or b""))
    return digest.hexdigest()


def recorded_local_rev(local_rev: str | None, stamp: str) -> str | None:
    """The `last_local_rev` text of a local revision computed at rows stamp `stamp`."""
    return f"{local_rev}:{stamp}" if local_rev is not None else None


def local_revision(rows: Iterable[tuple[str, int, bytes]]) -> str:
    """SHA-256 over the in-scope rows (name, revision, SHA-256(nonce || ciphertext)) sorted by name:
    tells "the vault changed since the last sync" without a passphrase."""
    import hashlib
    import struct

    u16, u64 = struct.Struct(">H").pack, struct.Struct(">Q").pack
    parts = []
    for name, revision, row_hash in sorted(rows):  # rows read in name order sort in linear time
        raw = name.encode("ascii")
        parts.append(u16(len(raw)) + raw + u64(revision) + row_hash)
    return hashlib.sha256(b"".join(parts)).hexdigest()


class Rotation:
    """The sync tables' part of a data-key rotation, inside the rotation's transaction: built
    before the rows are re-encrypted (it needs the old ciphertexts), shown every value the rotation
    decrypts (`see`), finished after (`finish`)."""

    def __init__(self, conn: sqlite3.Connection, vault_id: bytes, old_key: Sensitive, new_key: Sensitive) -> None:
        import hmac

        from ..sync.merge import UNTRANSLATED, baseline_acc, state_mac
        from . import sealing

        self.vault_id = vault_id
        self.old_sync = sealing.sync_key(old_key, vault_id)
        self.new_sync = sealing.sync_key(new_key, vault_id)
        # remote -> (state, its baseline rows, whether last_local_rev matched the rows)
        self.remotes: dict[str, tuple[SyncState, list[tuple[str, int, bytes]], bool]] = {}
        self.wanted: dict[str, set[bytes]] = {}  # name -> old digests still to translate
        self.translated: dict[bytes, bytes] = {}  # old digest -> new digest
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:
            return
        for row in conn.execute(f"SELECT {STATE_COLUMNS}, state_mac FROM sync_state").fetchall():
            try:
                state = row_state(row)
            except errors.SyncBaselineTampered:
                continue  # stays tampered: its MAC cannot verify under the new key either
            try:
                rows = baseline_rows(conn, state.remote)
            except errors.SyncBaselineTampered:
                continue  # stays tampered, as above
            expected = state_mac(self.old_sync, state, baseline_acc(self.old_sync, rows))
            if not isinstance(row[16], (bytes, memoryview)) or not hmac.compare_digest(bytes(row[16]), expected):
                continue
            matched = state.recorded_rev == local_revision(revision_rows(conn, Scope(state.scope)))
            self.remotes[state.remote] = (state, rows, matched)
            for name, _seq, digest in rows:
                if digest != UNTRANSLATED:
                    self.wanted.setdefault(name, set()).add(digest)

    def __repr__(self) -> str:
        return f"Rotation({len(self.remotes)} remotes)"

    def see(self, name: str, value: bytes) -> None:
        """A value the rotation decrypted (a current or a kept older one of `name`)."""
        from ..sync.merge import key_digest

        wanted = self.wanted.get(name)
        if wanted:
            old = key_digest(self.old_sync, name, value)
            if old in wanted:
                wanted.discard(old)
                self.translated[old] = key_digest(self.new_sync, name, value)

    def finish(self, conn: sqlite3.Connection) -> None:
        """After the rows were re-encrypted: write each verified remote's translated baseline, its
        `last_local_rev` and its `state_mac` under the new key."""
        from ..sync.merge import UNTRANSLATED, baseline_acc, state_mac

        for remote, (state, rows, matched) in self.remotes.items():
            new_rows = [(name, seq, self.translated.get(digest, UNTRANSLATED)) for name, seq, digest in rows]
            local_rev = (recorded_local_rev(local_revision(revision_rows(conn, Scope(state.scope))), rows_stamp(conn))
                         if matched else state.last_local_rev)
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
