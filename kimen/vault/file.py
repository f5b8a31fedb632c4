"""An open vault file: its format checked, the header and every key-free read, transactions.

Names, sizes, revisions and KDF parameters are plaintext metadata, readable without the
passphrase (`meta`, `list`, `names`, `sizes`). `unwrap_key` runs the KDF; reading and writing
values needs the data key and is `kimen.vault.store`'s job. Every change is one `BEGIN IMMEDIATE`
transaction (`transaction`); writers wait on the busy timeout and then fail with `vault_busy`.

A vault of an older schema version (1) opens and reads as it is: key-free reads (`secret list`,
`vault info`, a read-only mount) never change the file. The first write-capable use (`transaction`)
migrates it: a backup snapshot next to the vault first (`<vault>.bak.<ns>`, a warning names it),
then the migration in one transaction of its own, which creates and drops tables only (no row is
rewritten), then the change itself.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat

from .. import errors
from ..store import HistoryEntry, SecretHistory, SecretInfo, VaultMeta
from .listing import ROW_COLUMNS, SCAN_CACHE_PAGES, JsonListing, sorted_select
from .schema import (
    APPLICATION_ID,
    FORMAT,
    HEADER_COLUMNS,
    HISTORY_KEEP,
    MIGRATE_V1_TO_V2,
    OLDEST_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Header,
)
from .sqlite import Stamp, chunks, connect, file_stamp, map_error, private_umask, rollback, wal_is_empty

TYPE_CHECKING = False
if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterator, Sequence
    from typing import Any, Self

    from ..sensitive import Sensitive
    from ..store import KdfParams


class VaultFile:
    """An open vault file. Metadata needs no key; values need the data key (`kimen.vault.Vault`
    adds `unlock`, which gives a `LocalStore`)."""

    def __init__(self, path: str, conn: sqlite3.Connection, *, read_only: bool) -> None:
        self.path = path
        self.canonical_path = os.path.realpath(path)
        self.read_only = read_only
        self._conn = conn
        self._immutable_stamp: Stamp | None = None  # set when opened immutable (sqlite.connect)
        self.schema_version = SCHEMA_VERSION  # the file's, read by `_check_format`
        self._migrated: str | None = None  # the backup of a migration not yet reported (`take_migrated`)
        st = os.stat(self.canonical_path)
        self.device, self.inode = st.st_dev, st.st_ino

    # -- opening --

    @classmethod
    def open(cls, path: str) -> Self:
        """Open an existing vault; refuse files that are not kimen vaults before any KDF work."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise errors.VaultNotFound(path=path) from None
        except OSError as exc:
            raise errors.VaultFailed(detail=f"{path}: {exc.strerror}", path=path) from None
        if not stat.S_ISREG(st.st_mode):
            raise errors.InvalidVaultFile(path=path)
        if st.st_mode & 0o077:
            from ..output import warn

            warn(f"vault file {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                 "run chmod 600 on it", reason="vault_permissions_loose")
        read_only = not os.access(path, os.W_OK) or not os.access(os.path.dirname(path) or ".", os.W_OK)
        conn, immutable_stamp = connect(path, read_only=read_only)
        vault = cls(path, conn, read_only=read_only)
        vault._immutable_stamp = immutable_stamp
        try:
            vault._check_format()
        except BaseException:
            vault.close()
            raise
        return vault

    def _check_format(self) -> None:
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        if app_id != APPLICATION_ID:
            raise errors.InvalidVaultFile(path=self.path)
        if version > SCHEMA_VERSION:
            raise errors.VaultUnsupported(path=self.path)
        if version < OLDEST_SCHEMA_VERSION:
            raise errors.InvalidVaultFile(path=self.path)
        self.schema_version = version
        header = self.header()
        if header.format != FORMAT or len(header.vault_id) != 16:
            raise errors.InvalidVaultFile(path=self.path)

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def changed_on_disk(self) -> bool:
        """Whether this connection may now read stale or torn data: it was opened immutable (a
        read-only mount; SQLite then neither locks nor looks for changes) and since then the file
        was written or a `-wal` holds changes. Always False for a normal connection, which sees
        every change itself."""
        if self._immutable_stamp is None:
            return False
        return file_stamp(self.path) != self._immutable_stamp or not wal_is_empty(self.path)

    # -- metadata (no key) --

    def header(self) -> Header:
        try:
            rows = self._conn.execute(f"SELECT {HEADER_COLUMNS} FROM vault").fetchall()
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        if len(rows) != 1:
            raise errors.InvalidVaultFile(path=self.path)
        try:
            return Header(rows[0])
        except ValueError:  # a column of another type (`Header`)
            raise errors.InvalidVaultFile(path=self.path) from None

    def meta(self) -> VaultMeta:
        header = self.header()
        try:
            count = self._conn.execute("SELECT count(*) FROM secrets").fetchone()[0]
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        st = os.stat(self.canonical_path)
        return VaultMeta(
            path=self.path, canonical_path=self.canonical_path, format=header.format,
            schema_version=self.schema_version, vault_id=header.vault_id.hex(), created_at=header.created_at,
            generation=header.generation, secret_count=count, size_bytes=st.st_size,
            mode=f"{stat.S_IMODE(st.st_mode):04o}", kdf=header.kdf, key_epoch=header.key_epoch,
            wrap_id=header.wrap_id.hex(),
        )

    def list(self, prefix: str | None = None) -> builtins.list[SecretInfo]:
        return [SecretInfo(*row) for row in self._select_sorted(ROW_COLUMNS, prefix)]

    def list_names(self, prefix: str | None = None) -> builtins.list[str]:
        """Just the sorted names: `secret list` without `--long` or `--json` (cheap on 100k rows)."""
        return [row[0] for row in self._select_sorted("name", prefix)]

    @contextlib.contextmanager
    def json_listing(self, prefix: str | None = None) -> Iterator[JsonListing | None]:
        """`secret list --json`'s arrays as SQLite writes them, read in one snapshot while the
        caller writes them out (`kimen.vault.listing`); None when a name is not plain text."""
        with self.reading() as conn:
            conn.execute(f"PRAGMA cache_size={SCAN_CACHE_PAGES}")
            try:
                yield JsonListing.read(conn, prefix)
            finally:
                conn.execute("PRAGMA cache_size=-2000")  # SQLite's default, for what the handle does next

    def _select_sorted(self, columns: str, prefix: str | None) -> builtins.list[tuple[Any, ...]]:
        if prefix and not prefix.isascii():
            return []  # names are ASCII: nothing can start with this prefix
        sql, params = sorted_select(columns, prefix)
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        if not all(type(row[0]) is str for row in rows):  # a byte change made a name a number or a blob
            raise errors.VaultTampered()
        return rows

    def names(self, names: Sequence[str]) -> set[str]:
        """Which of `names` exist (no key needed)."""
        return {row[0] for row in self._rows_named("name", names)}

    def sizes(self, names: Sequence[str]) -> dict[str, int]:
        """The stored value sizes of those of `names` that exist (no key needed; the session daemon
        bounds a read's response before decrypting anything, the client splits its reads)."""
        return {name: size for name, size in self._rows_named("name, size", names) if isinstance(size, int)}

    def _rows_named(self, columns: str, names: Sequence[str]) -> builtins.list[tuple[Any, ...]]:
        rows: builtins.list[tuple[Any, ...]] = []
        for chunk in chunks(list(dict.fromkeys(names))):
            marks = ",".join("?" * len(chunk))
            try:
                rows += self._conn.execute(f"SELECT {columns} FROM secrets WHERE name IN ({marks})", chunk).fetchall()
            except sqlite3.Error as exc:
                raise map_error(exc, self.path) from None
        return rows

    def history(self, name: str, keep: int = HISTORY_KEEP) -> SecretHistory:
        """`name`'s current revision and kept older ones, newest first (no key needed; a version-1
        vault has none yet). `SecretNotFound` when the name is in neither."""
        from ..values import check_secret_name

        check_secret_name(name)
        with self.reading() as conn:
            row = conn.execute("SELECT name, revision, size, created_at, updated_at FROM secrets WHERE name=?",
                               (name,)).fetchone()
            rows = conn.execute(
                "SELECT revision, size, created_at, replaced_at, op FROM secret_history WHERE name=? "
                "ORDER BY revision DESC", (name,)).fetchall() if self.has_history else []
        if row is None and not rows:
            raise errors.SecretNotFound([name])
        # a byte change may have given a column another type: a reasoned error, not a crash later
        if (row is not None and not _typed(row, (str, int, int, str, str))) \
                or not all(_typed(r, (int, int, str, str, str)) for r in rows):
            raise errors.VaultTampered()
        return SecretHistory(name, SecretInfo(*row) if row is not None else None,
                             [HistoryEntry(*r) for r in rows], keep)

    def history_names(self) -> builtins.list[str]:
        """Every name with kept older values, sorted (no key needed)."""
        if not self.has_history:
            return []
        with self.reading() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT name FROM secret_history ORDER BY name")]

    def record_bundle_generation(self, generation: int) -> None:
        """Raise `bundle_high_generation` to `generation` (bundle seal)."""
        with self.transaction() as conn:
            conn.execute("UPDATE vault SET bundle_high_generation=max(bundle_high_generation, ?)", (generation,))

    # -- keys --

    def unwrap_key(self, passphrase: Sensitive, header: Header | None = None) -> Sensitive:
        """Run the KDF and unwrap the data key (of `header`, read now when not given);
        `WrongPassphrase` if it does not open."""
        from . import keys  # the crypto modules load only when a key is needed, not for metadata

        return keys.unwrap(header if header is not None else self.header(), passphrase, self.path)

    def rekey(self, old_key: Sensitive, unlocked_wrap_id: bytes, new_passphrase: Sensitive, params: KdfParams, *,
              rotate_data_key: bool) -> None:
        """Rewrap the data key under a new passphrase/parameters; optionally rotate the data key
        (`kimen.vault.rekey`). One transaction, the KDF run before it; then the WAL is truncated.
        `unlocked_wrap_id`: the key record `old_key` came from. Another rekey that committed since
        (a new passphrase, a rotated data key) changed it: then nothing is written, or the other
        change would be undone (a passphrase) or the vault left under a stale key (a rotation)."""
        from .. import crypto
        from . import keys, rekey

        keys.check_kdf(params)
        salt = crypto.random_bytes(crypto.SALT_BYTES)
        with crypto.derive_kek(new_passphrase, salt, params) as kek, self.transaction() as conn:
            header = self.header()
            if header.wrap_id != unlocked_wrap_id:
                raise errors.VaultFailed(detail="another command rekeyed the vault meanwhile; nothing was changed: "
                                                "run the rekey again (with the passphrase that command set)",
                                         path=self.path)
            rekey.rewrap(conn, header, old_key, kek, salt, params, rotate_data_key=rotate_data_key)
        if not self.checkpoint():
            from ..output import warn

            warn("another process was still reading the vault, so the old key record stays in its WAL file until "
                 "that process finishes and a later write truncates it", reason="rekey_wal_not_truncated")

    # -- transactions and copies --

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent read snapshot for the header and the rows (a read transaction)."""
        conn = self._conn
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                rollback(conn)
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction; rolled back on any exception. A vault of an older
        schema is migrated first (`migrate`)."""
        if self.read_only:
            raise errors.VaultReadOnly(path=self.path)
        if self.schema_version < SCHEMA_VERSION:
            self.migrate()
        conn = self._conn
        try:
            with private_umask():
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        try:
            yield conn
            with private_umask():
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            raise map_error(exc, self.path) from None
        except BaseException:
            rollback(conn)
            raise

    @property
    def has_history(self) -> bool:
        """Whether the file has the `secret_history` table (schema version 2; a version-1 vault
        read as it is has no history yet). A connection that saw version 1 asks the file again:
        another process (or a session's daemon) may have migrated it since."""
        if self.schema_version < 2:
            try:
                self.schema_version = max(self.schema_version,
                                          self._conn.execute("PRAGMA user_version").fetchone()[0])
            except sqlite3.Error as exc:
                raise map_error(exc, self.path) from None
        return self.schema_version >= 2

    def migrate(self, backup_path: str | None = None) -> str | None:
        """Bring a vault of an older schema to `SCHEMA_VERSION`: a backup snapshot (at
        `backup_path`, default `<vault>.bak.<ns>`), then one transaction that creates and drops
        tables only. Returns the backup's path, or None when the vault was already current
        (another process may have migrated it meanwhile: its unneeded backup is removed again).
        A failed backup (`backup_failed`) or migration leaves the vault as it was."""
        if self.schema_version >= SCHEMA_VERSION:
            return None
        if self.read_only:
            raise errors.VaultReadOnly(path=self.path)
        from . import backup

        dest = backup_path or backup.default_path(self.path)
        try:
            self.snapshot(dest)
        except OSError as exc:
            raise errors.BackupFailed(detail=f"{dest}: {exc.strerror}") from None
        except errors.KimenError as exc:
            raise errors.BackupFailed(detail=f"{dest}: {exc.message}") from None
        conn = self._conn
        migrated = False
        try:
            with private_umask():
                conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 1:
                    for statement in MIGRATE_V1_TO_V2.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    migrated = True
                elif version != SCHEMA_VERSION:
                    raise errors.VaultUnsupported(path=self.path)
                with private_umask():
                    conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
        except sqlite3.Error as exc:
            backup.discard(dest)
            raise map_error(exc, self.path) from None
        except BaseException:
            backup.discard(dest)
            raise
        self.schema_version = SCHEMA_VERSION
        if not migrated:
            backup.discard(dest)
            return None
        from ..store import warn_migrated

        backup.record(self.path, dest, "schema migration")
        warn_migrated(self.path, dest)
        self._migrated = dest
        return dest

    def take_migrated(self) -> str | None:
        """The backup path of a migration this object made since the last call (the daemon passes
        it to the client that asked for the change), else None."""
        dest, self._migrated = self._migrated, None
        return dest

    def checkpoint(self) -> bool:
        """Truncate the WAL so no old ciphertext or wrapped key lingers there; False when another
        connection still reads an older state of the vault after the busy timeout SQLite waits
        for it (the old pages then stay in the WAL until a later checkpoint)."""
        try:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        return not busy

    def snapshot(self, dest: str) -> tuple[object, ...]:
        """A consistent private copy at `dest` (`kimen.vault.backup`); its header fingerprint."""
        from . import backup

        return backup.snapshot(self._conn, self.path, dest)

    def check_integrity(self) -> None:
        """SQLite's own page-level check (`PRAGMA integrity_check`): `invalid_vault_file` when the file
        is damaged. Reads every page; for a file about to replace a vault (`vault restore`)."""
        try:
            rows = self._conn.execute("PRAGMA integrity_check(1)").fetchall()
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None
        if rows != [("ok",)]:
            raise errors.InvalidVaultFile(path=self.path)

    def wait_for_writers(self) -> None:
        """Return once no other connection is writing (waiting up to the busy timeout: `vault_busy`)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise map_error(exc, self.path) from None

    def restore_from(self, source: VaultFile, *, unchanged_since: tuple[object, ...] | None = None) -> None:
        """Replace this vault's whole content with `source`'s, in one SQLite transaction
        (`kimen.vault.backup.restore`): `vault_busy` at once, with nothing copied, when another
        connection is writing or (`unchanged_since`, a header fingerprint) has written since."""
        from . import backup

        if unchanged_since is not None and self.header().fingerprint() != unchanged_since:
            raise errors.VaultBusy(path=self.path)
        backup.restore(source._conn, self._conn, self.path)


def _typed(row: Sequence[Any], types: tuple[type, ...]) -> bool:
    return len(row) == len(types) and all(type(v) is t for v, t in zip(row, types, strict=False))
