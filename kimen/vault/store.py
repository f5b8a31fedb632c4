"""The local store: a vault unlocked with its data key (the store interface of `kimen.store`).

`Vault` is the vault file as commands open it: a `VaultFile` whose `unlock` runs the KDF and gives
a `LocalStore`. A `LocalStore` reads (one snapshot for header and rows), writes (one transaction
that also advances the generation and both MACs) and verifies (every row opens and the MACs
match). It refuses to use its key on a vault that was replaced or rekeyed since unlock.

History: every change that replaces or removes a value moves the old row, ciphertext untouched,
into `secret_history` in the same transaction (`set`, `rm`, `restore`; `mv` re-encrypts the
name's history under the new name), keeping the last `history_keep` per name (config `history.keep`,
default `HISTORY_KEEP`; a lowered setting trims a name at its next change). History rows are
in `rows_mac` under their own tag, so `verify` notices one dropped, added or moved. Nothing but
this module's history operations reads them: bundles, sync and projections see `secrets` only.

Never: a value in a message or log line; a partial write (any failure rolls the whole change back).
"""

from __future__ import annotations

from .. import errors
from ..durations import format_time
from ..store import Change, ChangeResult, RestoreResult, WriteResult
from ..values import MAX_VALUE_BYTES, SecretValue, check_read_names, check_secret_name
from . import sealing
from .file import VaultFile
from .schema import CIPHERTEXT_COLUMNS, HISTORY_KEEP, HISTORY_OPS
from .sqlite import chunks

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Sequence
    from typing import Any

    from ..sensitive import Sensitive
    from ..store import SecretHistory, SecretInfo, VaultMeta
    from .schema import Header


class Vault(VaultFile):
    """A vault file that unlocks into a `LocalStore`."""

    def unlock(self, passphrase: Sensitive) -> LocalStore:
        header = self.header()  # the record the key comes from is the one the store remembers
        return LocalStore(self, self.unwrap_key(passphrase, header), header=header)


class LocalStore:
    """The store over a local vault and an unwrapped data key.

    `stale_error` is raised when the vault was rekeyed or replaced under the key (the daemon
    passes `SessionLocked`; a local command gets `VaultFailed`).
    """

    def __init__(self, vault: VaultFile, data_key: Sensitive, *,
                 stale_error: type[errors.KimenError] = errors.VaultFailed, header: Header | None = None) -> None:
        self.vault = vault
        self._key = data_key
        header = header if header is not None else vault.header()
        self._vault_id = header.vault_id
        self._wrap_id = header.wrap_id
        self._key_epoch = header.key_epoch
        self._k_mac = sealing.mac_key(data_key, header.vault_id)
        self._stale_error = stale_error
        self.history_keep = HISTORY_KEEP
        self._keep_source: Callable[[], int] | None = None

    def keep_history_from(self, source: Callable[[], int]) -> None:
        """Take `history_keep` from `source` (the command's config), asked at each write and
        restore before its transaction: a command that only reads never asks, and a bad setting
        fails a write before anything is written."""
        self._keep_source = source

    def _refresh_keep(self) -> None:
        if self._keep_source is not None:
            self.history_keep = self._keep_source()

    @property
    def path(self) -> str:
        return self.vault.path

    def close(self) -> None:
        self.vault.close()

    @property
    def data_key(self) -> Sensitive:
        return self._key

    @property
    def wrap_id(self) -> bytes:
        """The key record the data key was unwrapped from (a rekey changes it)."""
        return self._wrap_id

    def forget_key(self) -> None:
        self._key.wipe()

    def check_key(self, header: Header) -> None:
        """Refuse to use this key on a vault that was replaced or rekeyed since unlock."""
        if header.vault_id != self._vault_id or header.key_epoch != self._key_epoch:
            raise self._stale_error(detail="the vault was replaced or rekeyed; unlock it again",
                                    vault=self.vault.canonical_path, path=self.vault.path)

    # -- key-free operations, delegated --

    def meta(self) -> VaultMeta:
        return self.vault.meta()

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        return self.vault.list(prefix)

    # -- reads --

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        wanted = check_read_names(names)
        rows: dict[str, tuple[int, bytes, bytes]] = {}
        with self.vault.reading() as conn:
            self.check_key(self.vault.header())
            for chunk in chunks(wanted):
                marks = ",".join("?" * len(chunk))
                for name, revision, nonce, ciphertext in conn.execute(
                    f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets WHERE name IN ({marks})", chunk
                ):
                    rows[name] = (revision, bytes(nonce), bytes(ciphertext))
        missing = [n for n in wanted if n not in rows]
        if missing:
            raise errors.SecretNotFound(missing)
        result: dict[str, SecretValue] = {}
        for name in wanted:
            revision, nonce, ciphertext = rows[name]
            result[name] = SecretValue(name, self._open(name, revision, nonce, ciphertext), revision)
        return result

    def _open(self, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
        return sealing.open_value(self._key, self._vault_id, name, revision, nonce, ciphertext)

    # -- writes --

    def write(self, changes: Sequence[Change], if_generation: int | None = None,
              baseline: Any = None, *, bundle_generation: int | None = None,
              allow_older: bool = False, history_op: str | None = None) -> WriteResult:
        """Apply `changes` in one transaction; any failure leaves the vault unchanged.

        `bundle_generation` (bundle open): refuse it when below the vault's
        `bundle_high_generation` unless `allow_older` (`bundle_replay`), and record it.
        `history_op` names what replaced or removed values in their history rows (`import`,
        `bundle`, `sync`); by default the change's own op (`set`, `rm`, `mv`).
        """
        if baseline is not None:
            raise errors.VaultFailed(detail="sync baselines are not supported yet")
        if history_op is not None and history_op not in HISTORY_OPS:
            raise errors.VaultFailed(detail=f"unknown history op {history_op[:40]!r}")
        for change in changes:
            check_secret_name(change.name)
            if change.new_name is not None:
                check_secret_name(change.new_name)
            if change.value is not None and len(change.value) > MAX_VALUE_BYTES:
                raise errors.SecretTooLarge(secret=change.name)
        self._refresh_keep()
        with self.vault.transaction() as conn:
            header = self.vault.header()
            self.check_key(header)
            if if_generation is not None and header.generation != if_generation:
                raise errors.VaultFailed(detail="the vault changed concurrently; retry")
            if bundle_generation is not None and bundle_generation < header.bundle_high_generation \
                    and not allow_older:
                raise errors.BundleReplay(generation=bundle_generation, high=header.bundle_high_generation)
            result = self._apply(conn, header, changes, history_op)
            if bundle_generation is not None:
                conn.execute("UPDATE vault SET bundle_high_generation=max(bundle_high_generation, ?)",
                             (bundle_generation,))
        return result

    def _apply(self, conn: sqlite3.Connection, header: Header, changes: Sequence[Change],
               history_op: str | None) -> WriteResult:
        """The changes, with the history rows they make, generation and MACs, inside the caller's
        transaction (header read in it)."""
        generation = header.generation + 1
        acc = header.rows_mac
        now = format_time()
        missing: list[str] = []
        existing: list[str] = []
        results: list[ChangeResult] = []
        for change in changes:
            current = conn.execute(
                f"SELECT revision, {CIPHERTEXT_COLUMNS}, created_at, updated_at, size FROM secrets WHERE name=?",
                (change.name,)
            ).fetchone()
            if change.op == "set":
                assert change.value is not None
                if current is not None and change.mode == "create":
                    existing.append(change.name)
                    continue
                if current is None and change.mode == "update":
                    missing.append(change.name)
                    continue
                if current is not None:
                    acc = self._unmac(acc, change.name, current)
                    acc = self._keep(conn, acc, change.name, current, now, history_op or "set")
                created_at = current[3] if current is not None else now
                acc = self._put(conn, acc, change.name, change.value, generation, created_at, now)
                results.append(ChangeResult("set", change.name, generation, created=current is None))
            elif change.op == "rm":
                if current is None:
                    missing.append(change.name)
                    continue
                acc = self._unmac(acc, change.name, current)
                conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
                acc = self._keep(conn, acc, change.name, current, now, history_op or "rm")
                results.append(ChangeResult("rm", change.name, None))
            elif change.op == "mv":
                assert change.new_name is not None
                if current is None:
                    missing.append(change.name)
                    continue
                if conn.execute("SELECT 1 FROM secrets WHERE name=?", (change.new_name,)).fetchone():
                    existing.append(change.new_name)
                    continue
                value = self._open(change.name, current[0], bytes(current[1]), bytes(current[2]))
                acc = self._unmac(acc, change.name, current)
                conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
                acc = self._move_history(conn, acc, change.name, change.new_name, current, value, now,
                                         history_op or "mv")
                acc = self._put(conn, acc, change.new_name, value, generation, current[3], now)
                results.append(ChangeResult("mv", change.name, generation, new_name=change.new_name))
            else:  # pragma: no cover - Change.op is a closed set
                raise errors.VaultFailed(detail=f"unknown change {change.op!r}")
        if missing:
            raise errors.SecretNotFound(missing)
        if existing:
            raise errors.SecretExists(existing)
        self._commit_header(conn, generation, acc)
        return WriteResult(generation, results)

    def _commit_header(self, conn: sqlite3.Connection, generation: int, acc: bytes) -> None:
        conn.execute(
            "UPDATE vault SET generation=?, rows_mac=?, meta_mac=?",
            (generation, acc, sealing.meta_mac(self._k_mac, self._vault_id, generation, self._key_epoch, acc)),
        )

    def _unmac(self, acc: bytes, name: str, row: Sequence[Any]) -> bytes:
        """`acc` without the MAC of `name`'s stored row (revision, nonce, ciphertext, ...)."""
        return sealing.xor(acc, sealing.row_mac(self._k_mac, name, row[0], row[1], row[2]))

    def _put(self, conn: sqlite3.Connection, acc: bytes, name: str, value: bytes, revision: int,
             created_at: str, updated_at: str) -> bytes:
        nonce, ciphertext = sealing.seal_value(self._key, self._vault_id, name, revision, value)
        conn.execute(
            "INSERT OR REPLACE INTO secrets (name, revision, created_at, updated_at, size, nonce, ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, revision, created_at, updated_at, len(value), nonce, ciphertext),
        )
        return sealing.xor(acc, sealing.row_mac(self._k_mac, name, revision, nonce, ciphertext))

    # -- history --

    def _keep(self, conn: sqlite3.Connection, acc: bytes, name: str, row: Sequence[Any], replaced_at: str,
              op: str) -> bytes:
        """Move the replaced or removed row (revision, nonce, ciphertext, created_at, updated_at,
        size) into the history unchanged (same ciphertext, same associated data), then drop the
        oldest beyond `keep`. `acc` with the history's MACs updated."""
        if self.history_keep <= 0:
            return self._prune(conn, acc, name)  # keeping none: what a larger setting kept goes too
        revision, nonce, ciphertext = row[0], bytes(row[1]), bytes(row[2])
        conn.execute(
            "INSERT INTO secret_history (name, revision, created_at, replaced_at, op, size, nonce, ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (name, revision, row[4], replaced_at, op, row[5], nonce, ciphertext))
        acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, name, revision, nonce, ciphertext))
        return self._prune(conn, acc, name)

    def _prune(self, conn: sqlite3.Connection, acc: bytes, name: str) -> bytes:
        old = conn.execute(
            f"SELECT revision, {CIPHERTEXT_COLUMNS} FROM secret_history WHERE name=? ORDER BY revision DESC "
            "LIMIT -1 OFFSET ?", (name, max(self.history_keep, 0))).fetchall()
        for revision, nonce, ciphertext in old:
            acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, name, revision, bytes(nonce), bytes(ciphertext)))
            conn.execute("DELETE FROM secret_history WHERE name=? AND revision=?", (name, revision))
        return acc

    def _move_history(self, conn: sqlite3.Connection, acc: bytes, old: str, new: str, row: Sequence[Any],
                      value: bytes, replaced_at: str, op: str) -> bytes:
        """`mv`: OLD's history follows the name. Each row is re-encrypted under NEW (its associated
        data names the secret) with its revision kept, and OLD's last row joins it (`op` mv). Rows
        NEW kept from an earlier life stay unless a revision collides (then OLD's wins)."""
        moved = [(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), r[5], r[6]) for r in conn.execute(
            f"SELECT revision, created_at, replaced_at, {CIPHERTEXT_COLUMNS}, op, size FROM secret_history "
            "WHERE name=?", (old,))]
        for revision, _c, _r, nonce, ciphertext, _op, _size in moved:
            acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, old, revision, nonce, ciphertext))
        conn.execute("DELETE FROM secret_history WHERE name=?", (old,))
        if self.history_keep <= 0:
            return self._prune(conn, acc, new)
        entries = [(revision, created, replaced, self._open(old, revision, nonce, ciphertext), kept_op)
                   for revision, created, replaced, nonce, ciphertext, kept_op, _size in moved]
        entries.append((row[0], row[4], replaced_at, value, op))
        for revision, created, replaced, plain, kept_op in entries:
            clash = conn.execute(f"SELECT {CIPHERTEXT_COLUMNS} FROM secret_history WHERE name=? AND revision=?",
                                 (new, revision)).fetchone()
            if clash is not None:
                acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, new, revision, bytes(clash[0]), bytes(clash[1])))
                conn.execute("DELETE FROM secret_history WHERE name=? AND revision=?", (new, revision))
            nonce, ciphertext = sealing.seal_value(self._key, self._vault_id, new, revision, plain)
            conn.execute(
                "INSERT INTO secret_history (name, revision, created_at, replaced_at, op, size, nonce, ciphertext) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (new, revision, created, replaced, kept_op, len(plain), nonce,
                                                    ciphertext))
            acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, new, revision, nonce, ciphertext))
        return self._prune(conn, acc, new)

    def history(self, name: str) -> SecretHistory:
        self._refresh_keep()
        return self.vault.history(name, self.history_keep)

    def read_revision(self, name: str, revision: int) -> SecretValue:
        check_secret_name(name)
        with self.vault.reading() as conn:
            self.check_key(self.vault.header())
            row = self._revision_row(conn, name, revision)
        return SecretValue(name, self._open(name, revision, row[0], row[1]), revision)

    def _revision_row(self, conn: sqlite3.Connection, name: str, revision: int) -> tuple[bytes, bytes]:
        """(nonce, ciphertext) of `name` at `revision`, current or kept; `RevisionNotFound` naming
        the available revisions (`SecretNotFound` when the name has none)."""
        row = conn.execute(f"SELECT {CIPHERTEXT_COLUMNS} FROM secrets WHERE name=? AND revision=?",
                           (name, revision)).fetchone()
        if row is None and self.vault.has_history:
            row = conn.execute(f"SELECT {CIPHERTEXT_COLUMNS} FROM secret_history WHERE name=? AND revision=?",
                               (name, revision)).fetchone()
        if row is not None:
            return bytes(row[0]), bytes(row[1])
        available = [r[0] for r in conn.execute("SELECT revision FROM secrets WHERE name=?", (name,))]
        if self.vault.has_history:
            available += [r[0] for r in conn.execute(
                "SELECT revision FROM secret_history WHERE name=? ORDER BY revision DESC", (name,))]
        if not available:
            raise errors.SecretNotFound([name])
        raise errors.RevisionNotFound(secret=name, revision=revision, available=available)

    def restore(self, name: str, revision: int) -> RestoreResult:
        check_secret_name(name)
        self._refresh_keep()
        with self.vault.transaction() as conn:
            header = self.vault.header()
            self.check_key(header)
            nonce, ciphertext = self._revision_row(conn, name, revision)
            current = conn.execute("SELECT revision FROM secrets WHERE name=?", (name,)).fetchone()
            if current is not None and current[0] == revision:
                return RestoreResult(name, revision, revision, header.generation, unchanged=True)
            value = self._open(name, revision, nonce, ciphertext)
            result = self._apply(conn, header, [Change.set(name, value)], "restore")
        return RestoreResult(name, revision, result.generation, result.generation, unchanged=False)

    def purge_history(self, names: Sequence[str] | None = None) -> int:
        """Delete kept older values (of `names`, or all), then truncate the WAL so no deleted
        ciphertext lingers there; how many rows went."""
        wanted = None if names is None else check_read_names(names)
        if not self.vault.has_history:
            return 0  # a version-1 vault keeps no history: nothing to purge, no migration for it
        count = self._delete_history(wanted)
        # even with nothing left to delete: a purge run again truncates what a reader kept last time
        if not self.vault.checkpoint():
            raise errors.WalNotTruncated(deleted=count)
        return count

    def _delete_history(self, wanted: Sequence[str] | None) -> int:
        with self.vault.transaction() as conn:
            header = self.vault.header()
            self.check_key(header)
            sql = f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secret_history"
            rows: list[Any] = []
            if wanted is None:
                rows = conn.execute(sql).fetchall()
            else:
                for chunk in chunks([*wanted]):
                    rows += conn.execute(f"{sql} WHERE name IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            if not rows:
                return 0
            acc = header.rows_mac
            for name, revision, nonce, ciphertext in rows:
                acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, name, revision, bytes(nonce), bytes(ciphertext)))
                conn.execute("DELETE FROM secret_history WHERE name=? AND revision=?", (name, revision))
            self._commit_header(conn, header.generation + 1, acc)
        return len(rows)

    # -- integrity --

    def verify(self) -> None:
        """Every row opens (else `SecretCorrupt` naming it) and the MACs match (else `VaultTampered`)."""
        self.verify_and_read(())

    def verify_and_read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        """`verify()` and the values of `names` from the same pass and snapshot (bundle seal: every
        row is decrypted once, not twice). Missing names raise `SecretNotFound` after the check."""
        wanted = set(names)
        found: dict[str, SecretValue] = {}
        with self.vault.reading() as conn:
            header = self.vault.header()
            self.check_key(header)
            acc = sealing.ZERO_MAC
            for name, revision, nonce, ciphertext in conn.execute(
                f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets ORDER BY name"
            ):
                nonce, ciphertext = bytes(nonce), bytes(ciphertext)
                value = self._open(name, revision, nonce, ciphertext)
                if name in wanted:
                    found[name] = SecretValue(name, value, revision)
                acc = sealing.xor(acc, sealing.row_mac(self._k_mac, name, revision, nonce, ciphertext))
            if self.vault.has_history:
                for name, revision, nonce, ciphertext in conn.execute(
                    f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secret_history"
                ):
                    nonce, ciphertext = bytes(nonce), bytes(ciphertext)
                    self._open(name, revision, nonce, ciphertext)
                    acc = sealing.xor(acc, sealing.hist_mac(self._k_mac, name, revision, nonce, ciphertext))
        expected_meta = sealing.meta_mac(self._k_mac, self._vault_id, header.generation, header.key_epoch, acc)
        import hmac

        if not (hmac.compare_digest(acc, header.rows_mac) and hmac.compare_digest(expected_meta, header.meta_mac)):
            raise errors.VaultTampered()
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing)
        return found
