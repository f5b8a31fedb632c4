"""The vault file (SPEC §3): the only importer of sqlite3.

A vault is one SQLite file in WAL mode. Names, sizes, revisions and KDF parameters are plaintext
metadata; values are XChaCha20-Poly1305 ciphertexts under a random data key, each bound by its
associated data to the vault id, the secret's name and its revision, so a row moved to another
name, vault or revision fails to open. The data key is wrapped by an argon2id key of the
passphrase; the wrap's associated data covers the KDF parameters, so edited parameters fail too.

`rows_mac` is the XOR of a keyed MAC of every row, updated in O(1) per changed row, and `meta_mac`
binds it to the generation and key epoch: `verify()` detects deleted, added or individually
rolled-back rows. Replacing the whole file with an older copy of itself is not detectable here
(bundles and sync detect it against their baselines).

Every change is one `BEGIN IMMEDIATE` transaction that also updates generation and both MACs;
writers wait on the busy timeout and then fail with `vault_busy`. Errors from sqlite3 are mapped
to reasons where they enter; no sqlite3 exception escapes this module.

This module must never: log or raise with a value in the message, write a file through a symlink,
or leave a half-created vault behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from . import crypto, errors
from .fsutil import fsync_dir, make_private_dirs
from .sensitive import Sensitive
from .store import (
    MAX_VALUE_BYTES,
    Change,
    ChangeResult,
    KdfParams,
    SecretInfo,
    SecretValue,
    VaultMeta,
    WriteResult,
    check_secret_name,
)

FORMAT = "kimen-sqlite-vault/1"
APPLICATION_ID = 0x4B4D4E31  # "KMN1"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000

KDF_DEFAULT = KdfParams(memory_kib=65536, time=3, parallelism=4)
KDF_MIN = KdfParams(memory_kib=8 * 1024, time=1, parallelism=1)
KDF_MAX = KdfParams(memory_kib=2 * 1024 * 1024, time=10, parallelism=16)
KDF_MAX_MEMORY_TIME = 4 * 1024 * 1024  # KiB * passes (4 GiB·passes)
KDF_OWASP_MIN = KdfParams(memory_kib=19 * 1024, time=2, parallelism=1)

_WRAP_LABEL = b"kimen/v1/keywrap\x00"
_SECRET_LABEL = b"kimen/v1/secret\x00"
_MAC_PERSON = b"kimen-mac-v1"
_SYNC_PERSON = b"kimen-sync-v1"
_ZERO_MAC = bytes(32)
_READ_CHUNK = 500
# Columns read for a row's ciphertext. CAST keeps a tampered row stored with another type (TEXT)
# readable as bytes, so it fails authentication instead of raising a decoding error.
_CT = "CAST(nonce AS BLOB), CAST(ciphertext AS BLOB)"

_SCHEMA = """
CREATE TABLE vault (
    format TEXT NOT NULL,
    vault_id BLOB NOT NULL,
    created_at TEXT NOT NULL,
    kdf_alg TEXT NOT NULL,
    kdf_version INTEGER NOT NULL,
    kdf_memory_kib INTEGER NOT NULL,
    kdf_time INTEGER NOT NULL,
    kdf_parallelism INTEGER NOT NULL,
    kdf_salt BLOB NOT NULL,
    wrap_nonce BLOB NOT NULL,
    wrapped_key BLOB NOT NULL,
    wrap_id BLOB NOT NULL,
    key_epoch INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    rows_mac BLOB NOT NULL,
    meta_mac BLOB NOT NULL,
    bundle_high_generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    size INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE TABLE sync_state (
    remote TEXT PRIMARY KEY,
    endpoint TEXT,
    last_seen_rev TEXT,
    last_local_rev TEXT,
    last_generation INTEGER,
    last_bundle_id TEXT,
    updated_at TEXT
);
CREATE TABLE sync_baseline (
    remote TEXT NOT NULL,
    name TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (remote, name)
);
"""

_HEADER_COLUMNS = (
    "format, vault_id, created_at, kdf_alg, kdf_version, kdf_memory_kib, kdf_time, kdf_parallelism, "
    "kdf_salt, wrap_nonce, wrapped_key, wrap_id, key_epoch, generation, rows_mac, meta_mac, "
    "bundle_high_generation"
)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def kdf_problem(params: KdfParams) -> str | None:
    """Why `params` are outside the floor/ceiling of SPEC §3.3, or None."""
    if params.alg != "argon2id":
        return f"unsupported KDF {params.alg!r}"
    if params.memory_kib < KDF_MIN.memory_kib:
        return "memory below 8 MiB"
    if params.time < KDF_MIN.time:
        return "time below 1"
    if params.parallelism < KDF_MIN.parallelism:
        return "parallelism below 1"
    if params.memory_kib > KDF_MAX.memory_kib:
        return "memory above 2 GiB"
    if params.time > KDF_MAX.time:
        return "time above 10"
    if params.parallelism > KDF_MAX.parallelism:
        return "parallelism above 16"
    if params.memory_kib * params.time > KDF_MAX_MEMORY_TIME:
        return "memory x time above 4 GiB passes"
    return None


# ------------------------------------------------------------------------------------------
# Associated data and MACs (SPEC §3.3)
# ------------------------------------------------------------------------------------------


def _wrap_aad(vault_id: bytes, params: KdfParams, salt: bytes, key_epoch: int) -> bytes:
    return (
        _WRAP_LABEL + vault_id
        + struct.pack(">III", params.memory_kib, params.time, params.parallelism)
        + salt + struct.pack(">Q", key_epoch)
    )


def _name_field(name: str) -> bytes:
    raw = name.encode("ascii")
    return struct.pack(">H", len(raw)) + raw


def _secret_aad(vault_id: bytes, revision: int, name: str) -> bytes:
    return _SECRET_LABEL + vault_id + struct.pack(">Q", revision) + _name_field(name)


def _row_mac(k_mac: bytes, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
    digest = hashlib.sha256(nonce + ciphertext).digest()
    return crypto.mac(k_mac, b"row" + _name_field(name) + struct.pack(">Q", revision) + digest)


def _meta_mac(k_mac: bytes, vault_id: bytes, generation: int, key_epoch: int, rows_mac: bytes) -> bytes:
    return crypto.mac(k_mac, b"meta" + vault_id + struct.pack(">QQ", generation, key_epoch) + rows_mac)


def _xor(a: bytes | bytearray, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


# ------------------------------------------------------------------------------------------
# sqlite3 error mapping
# ------------------------------------------------------------------------------------------


def _map_sqlite_error(exc: sqlite3.Error, path: str) -> errors.KimenError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return errors.VaultBusy(path=path)
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return errors.VaultReadOnly(path=path)
    if name.startswith("SQLITE_FULL") or "disk is full" in text or "database or disk is full" in text:
        return errors.DiskFull(path=path)
    if name.startswith("SQLITE_IOERR") and _no_space_left(path):
        return errors.DiskFull(path=path)
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text:
        return errors.InvalidVaultFile(path=path)
    if name.startswith("SQLITE_CANTOPEN"):
        return errors.VaultFailed(detail=f"cannot open {path}", path=path)
    if isinstance(exc, sqlite3.OperationalError) and ("no such table" in text or "no such column" in text):
        return errors.InvalidVaultFile(path=path)
    return errors.VaultFailed(detail=f"{path}: {name or type(exc).__name__}", path=path)


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    """SQLite creates -wal/-shm lazily; make sure nothing it creates is group/other-readable."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """The `vault` row."""

    format: str
    vault_id: bytes
    created_at: str
    kdf: KdfParams
    kdf_version: int
    salt: bytes
    wrap_nonce: bytes
    wrapped_key: bytes
    wrap_id: bytes
    key_epoch: int
    generation: int
    rows_mac: bytes
    meta_mac: bytes
    bundle_high_generation: int

    @staticmethod
    def from_row(row: Sequence[Any]) -> Header:
        return Header(
            format=row[0], vault_id=bytes(row[1]), created_at=row[2],
            kdf=KdfParams(memory_kib=row[5], time=row[6], parallelism=row[7], alg=row[3]),
            kdf_version=row[4], salt=bytes(row[8]), wrap_nonce=bytes(row[9]), wrapped_key=bytes(row[10]),
            wrap_id=bytes(row[11]), key_epoch=row[12], generation=row[13], rows_mac=bytes(row[14]),
            meta_mac=bytes(row[15]), bundle_high_generation=row[16],
        )


class Vault:
    """An open vault file. Metadata needs no key; values need `unlock()` (a `LocalStore`)."""

    def __init__(self, path: str, conn: sqlite3.Connection, *, read_only: bool) -> None:
        self.path = path
        self.canonical_path = os.path.realpath(path)
        self.read_only = read_only
        self._conn = conn
        self._immutable_stamp: tuple[int, ...] | None = None  # set when opened immutable (_connect)
        st = os.stat(self.canonical_path)
        self.device, self.inode = st.st_dev, st.st_ino

    # -- opening --

    @classmethod
    def open(cls, path: str) -> Vault:
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
            from .output import warn

            warn(f"vault file {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                 "run chmod 600 on it", reason="vault_permissions_loose")
        read_only = not os.access(path, os.W_OK) or not os.access(os.path.dirname(path) or ".", os.W_OK)
        conn, immutable_stamp = _connect(path, read_only=read_only)
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
            raise _map_sqlite_error(exc, self.path) from None
        if app_id != APPLICATION_ID:
            raise errors.InvalidVaultFile(path=self.path)
        if version > SCHEMA_VERSION:
            raise errors.VaultUnsupported(path=self.path)
        if version < 1:
            raise errors.InvalidVaultFile(path=self.path)
        header = self.header()
        if header.format != FORMAT or len(header.vault_id) != 16:
            raise errors.InvalidVaultFile(path=self.path)

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> Vault:
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
        return _file_stamp(self.path) != self._immutable_stamp or not _wal_is_empty(self.path)

    # -- metadata (no key) --

    def header(self) -> Header:
        try:
            rows = self._conn.execute(f"SELECT {_HEADER_COLUMNS} FROM vault").fetchall()
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None
        if len(rows) != 1:
            raise errors.InvalidVaultFile(path=self.path)
        try:
            return Header.from_row(rows[0])
        except (TypeError, ValueError, IndexError):
            raise errors.InvalidVaultFile(path=self.path) from None

    def meta(self) -> VaultMeta:
        header = self.header()
        try:
            count = self._conn.execute("SELECT count(*) FROM secrets").fetchone()[0]
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None
        st = os.stat(self.canonical_path)
        return VaultMeta(
            path=self.path, canonical_path=self.canonical_path, format=header.format,
            schema_version=SCHEMA_VERSION, vault_id=header.vault_id.hex(), created_at=header.created_at,
            generation=header.generation, secret_count=count, size_bytes=st.st_size,
            mode=f"{stat.S_IMODE(st.st_mode):04o}", kdf=header.kdf, key_epoch=header.key_epoch,
            wrap_id=header.wrap_id.hex(),
        )

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        return [SecretInfo(*row) for row in self._select_sorted("name, revision, size, created_at, updated_at", prefix)]

    def list_names(self, prefix: str | None = None) -> list[str]:
        """Just the sorted names: `secret list` without `--long` or `--json` (cheap on 100k rows)."""
        return [row[0] for row in self._select_sorted("name", prefix)]

    def _select_sorted(self, columns: str, prefix: str | None) -> list[tuple[Any, ...]]:
        sql = f"SELECT {columns} FROM secrets"
        params: tuple[Any, ...] = ()
        if prefix and not prefix.isascii():
            return []  # names are ASCII: nothing can start with this prefix
        if prefix:
            # a range on the primary key (every ASCII name starting with `prefix` sorts below
            # prefix + U+10FFFF), then the exact test
            sql += " WHERE name >= ? AND name < ? AND substr(name, 1, ?) = ?"
            params = (prefix, prefix + "\U0010ffff", len(prefix), prefix)
        sql += " ORDER BY name"
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None

    def names(self, names: Sequence[str]) -> set[str]:
        """Which of `names` exist (no key needed)."""
        return {row[0] for row in self._rows_named("name", names)}

    def sizes(self, names: Sequence[str]) -> dict[str, int]:
        """The stored value sizes of those of `names` that exist (no key needed; the session daemon
        bounds a read's response before decrypting anything, the client splits its reads)."""
        return {name: size for name, size in self._rows_named("name, size", names) if isinstance(size, int)}

    def _rows_named(self, columns: str, names: Sequence[str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for chunk in _chunks(list(dict.fromkeys(names)), _READ_CHUNK):
            marks = ",".join("?" * len(chunk))
            try:
                rows += self._conn.execute(f"SELECT {columns} FROM secrets WHERE name IN ({marks})", chunk).fetchall()
            except sqlite3.Error as exc:
                raise _map_sqlite_error(exc, self.path) from None
        return rows

    def identity(self) -> tuple[int, int, bytes, bytes, int]:
        """(device, inode, vault_id, wrap_id, key_epoch): what a cached key must still match (§5.4)."""
        header = self.header()
        return self.device, self.inode, header.vault_id, header.wrap_id, header.key_epoch

    def record_bundle_generation(self, generation: int) -> None:
        """Raise `bundle_high_generation` to `generation` (bundle seal; SPEC §8.1)."""
        with self.transaction() as conn:
            conn.execute("UPDATE vault SET bundle_high_generation=max(bundle_high_generation, ?)", (generation,))

    # -- keys --

    def unwrap_key(self, passphrase: Sensitive) -> Sensitive:
        """Run the KDF and unwrap the data key; `WrongPassphrase` if it does not open."""
        header = self.header()
        problem = kdf_problem(header.kdf)
        if problem or header.kdf_version != 19 or len(header.salt) != crypto.SALT_BYTES:
            raise errors.KdfParamsRejected(path=self.path)
        with crypto.derive_kek(passphrase, header.salt, header.kdf) as kek:
            aad = _wrap_aad(header.vault_id, header.kdf, header.salt, header.key_epoch)
            try:
                key = crypto.open_sealed(kek.view(), header.wrap_nonce, header.wrapped_key, aad)
            except crypto.AuthenticationFailed:
                raise errors.WrongPassphrase() from None
        if len(key) != crypto.KEY_BYTES:
            raise errors.WrongPassphrase()
        return Sensitive(key)

    def unlock(self, passphrase: Sensitive) -> LocalStore:
        return LocalStore(self, self.unwrap_key(passphrase))

    # -- transactions --

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One `BEGIN IMMEDIATE` transaction; rolled back on any exception."""
        if self.read_only:
            raise errors.VaultReadOnly(path=self.path)
        conn = self._conn
        try:
            with _private_umask():
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None
        try:
            yield conn
            with _private_umask():
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise _map_sqlite_error(exc, self.path) from None
        except BaseException:
            _rollback(conn)
            raise

    def checkpoint(self) -> None:
        """Truncate the WAL so no old ciphertext or wrapped key lingers there (§3.5)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None

    def snapshot(self, dest: str) -> None:
        """A consistent private copy (VACUUM INTO a fresh 0600 file); never a raw file copy."""
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.close(fd)
        try:
            with _private_umask():
                self._conn.execute("VACUUM INTO ?", (_file_uri(dest),))
            os.chmod(dest, 0o600)
            fd = os.open(dest, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(os.path.dirname(dest))
        except sqlite3.Error as exc:
            _unlink_quietly(dest)
            raise _map_sqlite_error(exc, self.path) from None
        except BaseException:
            _unlink_quietly(dest)
            raise

    def rekey(
        self,
        old_key: Sensitive,
        new_passphrase: Sensitive,
        params: KdfParams,
        *,
        rotate_data_key: bool,
    ) -> None:
        """Rewrap the data key under a new passphrase/parameters; optionally rotate the data key.

        One transaction: a new salt and wrap id always; with rotation a new data key and key
        epoch and every row re-encrypted (revisions kept). Then the WAL is truncated.
        """
        problem = kdf_problem(params)
        if problem:
            raise errors.InvalidKdfParams(detail=problem)
        salt = crypto.random_bytes(crypto.SALT_BYTES)
        with crypto.derive_kek(new_passphrase, salt, params) as kek, self.transaction() as conn:
            header = self.header()
            old_store = LocalStore(self, old_key)
            old_store.check_key(header)
            key_epoch = header.key_epoch + (1 if rotate_data_key else 0)
            generation = header.generation + 1
            if rotate_data_key:
                new_key = Sensitive(crypto.random_bytes(crypto.KEY_BYTES))
                _translate_baselines(conn, header, old_key, new_key)  # needs the old ciphertexts
                rows_mac = _rotate_rows(conn, self.path, header, old_key, new_key)
            else:
                new_key = Sensitive(old_key.reveal())
                rows_mac = header.rows_mac
            with new_key:
                k_mac = crypto.subkey(new_key.view(), header.vault_id, _MAC_PERSON)
                wrap_nonce = crypto.random_bytes(crypto.NONCE_BYTES)
                wrapped = crypto.seal(kek.view(), wrap_nonce, new_key.reveal(),
                                      _wrap_aad(header.vault_id, params, salt, key_epoch))
            conn.execute(
                "UPDATE vault SET kdf_memory_kib=?, kdf_time=?, kdf_parallelism=?, kdf_salt=?, wrap_nonce=?, "
                "wrapped_key=?, wrap_id=?, key_epoch=?, generation=?, rows_mac=?, meta_mac=?",
                (params.memory_kib, params.time, params.parallelism, salt, wrap_nonce, wrapped,
                 crypto.random_bytes(16), key_epoch, generation, rows_mac,
                 _meta_mac(k_mac, header.vault_id, generation, key_epoch, rows_mac)),
            )
        self.checkpoint()


def _rotate_rows(conn: sqlite3.Connection, path: str, header: Header, old_key: Sensitive,
                 new_key: Sensitive) -> bytes:
    k_mac = crypto.subkey(new_key.view(), header.vault_id, _MAC_PERSON)
    acc = _ZERO_MAC
    rows = conn.execute(f"SELECT name, revision, {_CT} FROM secrets").fetchall()
    for name, revision, nonce, ciphertext in rows:
        try:
            value = crypto.open_sealed(old_key.view(), nonce, ciphertext,
                                       _secret_aad(header.vault_id, revision, name))
        except crypto.AuthenticationFailed:
            raise errors.SecretCorrupt(secret=name) from None
        new_nonce = crypto.random_bytes(crypto.NONCE_BYTES)
        new_ct = crypto.seal(new_key.view(), new_nonce, value, _secret_aad(header.vault_id, revision, name))
        conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name=?", (new_nonce, new_ct, name))
        acc = _xor(acc, _row_mac(k_mac, name, revision, new_nonce, new_ct))
    return acc


def _translate_baselines(conn: sqlite3.Connection, header: Header, old_key: Sensitive,
                         new_key: Sensitive) -> None:
    """Re-key sync baseline digests (SPEC §9.3): digests that match the current value under the old
    key get the new-key digest of that value; every other key gets a marker that matches nothing."""
    rows = conn.execute("SELECT remote, name, digest FROM sync_baseline").fetchall()
    if not rows:
        return
    old_sync = crypto.subkey(old_key.view(), header.vault_id, _SYNC_PERSON)
    new_sync = crypto.subkey(new_key.view(), header.vault_id, _SYNC_PERSON)
    for remote, name, digest in rows:
        found = conn.execute(f"SELECT revision, {_CT} FROM secrets WHERE name=?", (name,)).fetchone()
        marker = b"\xff" * 32
        if found is not None:
            revision, nonce, ciphertext = found
            try:
                value = crypto.open_sealed(old_key.view(), nonce, ciphertext,
                                           _secret_aad(header.vault_id, revision, name))
            except crypto.AuthenticationFailed:
                value = None
            if value is not None and crypto.mac(old_sync, _name_field(name) + value) == bytes(digest):
                marker = crypto.mac(new_sync, _name_field(name) + value)
        conn.execute("UPDATE sync_baseline SET digest=? WHERE remote=? AND name=?", (marker, remote, name))


def _connect(path: str, *, read_only: bool) -> tuple[sqlite3.Connection, tuple[int, ...] | None]:
    """The connection, and the stamp of the file when it had to be opened immutable (else None)."""
    try:
        return _sqlite_connect(path, read_only=read_only), None
    except sqlite3.Error as exc:
        if read_only and "unable to open" in str(exc).lower():
            # SQLite opens a WAL database read-only only where it can create the -shm file. In a
            # directory we cannot write to (a read-only mount) no writer of ours can exist: when no
            # -wal holds uncheckpointed commits, the file alone is the whole vault and can be read
            # as is. A writer elsewhere (the other side of a read-only bind mount) is not excluded:
            # the stamp, taken first, lets a long-lived reader (the session daemon) notice one.
            stamp = _file_stamp(path)
            if stamp is not None and not _writable_dir(path) and _wal_is_empty(path):
                try:
                    return _sqlite_connect(path, read_only=True, immutable=True), stamp
                except sqlite3.Error:
                    pass
            raise errors.VaultReadOnly(path=path) from None
        raise _map_sqlite_error(exc, path) from None
    except UnicodeDecodeError:
        # SQLite's message quotes a damaged schema, which may not be UTF-8: the file is no vault
        raise errors.InvalidVaultFile(path=path) from None


def _file_uri(path: str) -> str:
    """The SQLite `file:` URI of `path`, quoted from its bytes: a path may hold bytes that are not
    UTF-8 (lone surrogates once decoded), which SQLite takes only as %XX escapes."""
    from urllib.parse import quote

    return f"file:{quote(os.fsencode(path))}"


def _sqlite_connect(path: str, *, read_only: bool, immutable: bool = False) -> sqlite3.Connection:
    uri = f"{_file_uri(path)}?mode={'ro' if read_only else 'rw'}{'&immutable=1' if immutable else ''}"
    with _private_umask():
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA trusted_schema=OFF")
            if read_only:  # the first read opens the WAL index: fail here, where it can be handled
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
    return conn


def main_file_vault_id(path: str) -> bytes | None:
    """The vault id stored in the main database file itself, the `-wal` ignored (SQLite's
    `immutable` mode), or None when it cannot be read. A long-lived connection learns of changes
    only through the WAL index, so a file rewritten in place under it (another vault copied over
    it) is invisible to that connection; this reader sees the file as it is now."""
    try:
        conn = _sqlite_connect(path, read_only=True, immutable=True)
    except (sqlite3.Error, UnicodeError, OSError):
        return None
    try:
        rows = conn.execute("SELECT vault_id FROM vault").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return bytes(rows[0][0]) if len(rows) == 1 and isinstance(rows[0][0], bytes) else None


def _file_stamp(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _writable_dir(path: str) -> bool:
    return os.access(os.path.dirname(path) or ".", os.W_OK)


def _wal_is_empty(path: str) -> bool:
    try:
        return os.stat(path + "-wal").st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _no_space_left(path: str) -> bool:
    """Whether the device holding `path` is (nearly) full: SQLite reports ENOSPC as an I/O error
    when it happens while growing the WAL index or writing the journal."""
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def create_vault(path: str, passphrase: Sensitive, params: KdfParams) -> Vault:
    """Create a new vault at `path` (exclusive, 0600, parents 0700); nothing is left on failure."""
    problem = kdf_problem(params)
    if problem:
        raise errors.InvalidKdfParams(detail=problem)
    if os.path.lexists(path):
        raise errors.VaultExists(path=path)
    parent = os.path.dirname(path) or "."
    created_dirs = make_private_dirs(parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise errors.VaultExists(path=path) from None
    except OSError as exc:
        raise errors.VaultFailed(detail=f"{path}: {exc.strerror}", path=path) from None
    os.fchmod(fd, 0o600)
    os.close(fd)
    try:
        vault_id = crypto.random_bytes(16)
        salt = crypto.random_bytes(crypto.SALT_BYTES)
        with Sensitive(crypto.random_bytes(crypto.KEY_BYTES)) as data_key, \
                crypto.derive_kek(passphrase, salt, params) as kek:
            wrap_nonce = crypto.random_bytes(crypto.NONCE_BYTES)
            wrapped = crypto.seal(kek.view(), wrap_nonce, data_key.reveal(), _wrap_aad(vault_id, params, salt, 1))
            k_mac = crypto.subkey(data_key.view(), vault_id, _MAC_PERSON)
        conn, _ = _connect(path, read_only=False)
        try:
            with _private_umask():
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise errors.VaultFailed(detail=f"{path}: cannot enable WAL mode", path=path)
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    f"INSERT INTO vault ({_HEADER_COLUMNS}) VALUES ({','.join('?' * 17)})",
                    (FORMAT, vault_id, now_rfc3339(), "argon2id", 19, params.memory_kib, params.time,
                     params.parallelism, salt, wrap_nonce, wrapped, crypto.random_bytes(16), 1, 0,
                     _ZERO_MAC, _meta_mac(k_mac, vault_id, 0, 1, _ZERO_MAC), 0),
                )
                conn.execute("COMMIT")
        finally:
            conn.close()
        fsync_dir(parent)
        return Vault.open(path)
    except sqlite3.Error as exc:
        _remove_vault_files(path, created_dirs)
        raise _map_sqlite_error(exc, path) from None
    except BaseException:
        _remove_vault_files(path, created_dirs)
        raise


def discard_new_vault(path: str) -> None:
    """Remove a vault this command just created (bundle open failing half-way)."""
    _remove_vault_files(path, [])


def _remove_vault_files(path: str, created_dirs: list[str]) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        _unlink_quietly(path + suffix)
    for directory in reversed(created_dirs):
        try:
            os.rmdir(directory)
        except OSError:
            pass


# ------------------------------------------------------------------------------------------
# The local store: an unlocked vault
# ------------------------------------------------------------------------------------------


class LocalStore:
    """The store of SPEC §3.6 over a local vault and an unwrapped data key.

    `stale_error` is raised when the vault was rekeyed or replaced under the key (the daemon
    passes `SessionLocked`; a local command gets `VaultFailed`).
    """

    def __init__(self, vault: Vault, data_key: Sensitive, *,
                 stale_error: type[errors.KimenError] = errors.VaultFailed) -> None:
        self.vault = vault
        self._key = data_key
        header = vault.header()
        self._vault_id = header.vault_id
        self._wrap_id = header.wrap_id
        self._key_epoch = header.key_epoch
        self._k_mac = crypto.subkey(data_key.view(), header.vault_id, _MAC_PERSON)
        self._stale_error = stale_error

    @property
    def path(self) -> str:
        return self.vault.path

    def close(self) -> None:
        self.vault.close()

    @property
    def data_key(self) -> Sensitive:
        return self._key

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
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            check_secret_name(name)
        conn = self.vault._conn
        rows: dict[str, tuple[int, bytes, bytes]] = {}
        try:
            conn.execute("BEGIN")  # one consistent snapshot for header and rows
            try:
                self.check_key(self.vault.header())
                for chunk in _chunks(wanted, _READ_CHUNK):
                    marks = ",".join("?" * len(chunk))
                    for name, revision, nonce, ciphertext in conn.execute(
                        f"SELECT name, revision, {_CT} FROM secrets WHERE name IN ({marks})", chunk
                    ):
                        rows[name] = (revision, bytes(nonce), bytes(ciphertext))
            finally:
                _rollback(conn)
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None
        missing = [n for n in wanted if n not in rows]
        if missing:
            raise errors.SecretNotFound(missing)
        result: dict[str, SecretValue] = {}
        for name in wanted:
            revision, nonce, ciphertext = rows[name]
            result[name] = SecretValue(name, self._open(name, revision, nonce, ciphertext), revision)
        return result

    def _open(self, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
        try:
            return crypto.open_sealed(self._key.view(), nonce, ciphertext,
                                      _secret_aad(self._vault_id, revision, name))
        except crypto.AuthenticationFailed:
            raise errors.SecretCorrupt(secret=name) from None

    # -- writes --

    def write(self, changes: Sequence[Change], if_generation: int | None = None,
              baseline: Any = None, *, bundle_generation: int | None = None,
              allow_older: bool = False) -> WriteResult:
        """Apply `changes` in one transaction; any failure leaves the vault unchanged.

        `bundle_generation` (bundle open): refuse it when below the vault's
        `bundle_high_generation` unless `allow_older` (`bundle_replay`), and record it.
        """
        if baseline is not None:
            raise errors.VaultFailed(detail="sync baselines are not supported yet")
        for change in changes:
            check_secret_name(change.name)
            if change.new_name is not None:
                check_secret_name(change.new_name)
            if change.value is not None and len(change.value) > MAX_VALUE_BYTES:
                raise errors.SecretTooLarge(secret=change.name)
        with self.vault.transaction() as conn:
            header = self.vault.header()
            self.check_key(header)
            if if_generation is not None and header.generation != if_generation:
                raise errors.VaultFailed(detail="the vault changed concurrently; retry")
            if bundle_generation is not None and bundle_generation < header.bundle_high_generation \
                    and not allow_older:
                raise errors.BundleReplay(generation=bundle_generation, high=header.bundle_high_generation)
            generation = header.generation + 1
            acc = header.rows_mac
            now = now_rfc3339()
            missing: list[str] = []
            existing: list[str] = []
            results: list[ChangeResult] = []
            for change in changes:
                current = conn.execute(
                    f"SELECT revision, {_CT}, created_at FROM secrets WHERE name=?", (change.name,)
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
                        acc = _xor(acc, _row_mac(self._k_mac, change.name, current[0], current[1], current[2]))
                    created_at = current[3] if current is not None else now
                    acc = self._put(conn, acc, change.name, change.value, generation, created_at, now)
                    results.append(ChangeResult("set", change.name, generation, created=current is None))
                elif change.op == "rm":
                    if current is None:
                        missing.append(change.name)
                        continue
                    acc = _xor(acc, _row_mac(self._k_mac, change.name, current[0], current[1], current[2]))
                    conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
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
                    acc = _xor(acc, _row_mac(self._k_mac, change.name, current[0], current[1], current[2]))
                    conn.execute("DELETE FROM secrets WHERE name=?", (change.name,))
                    acc = self._put(conn, acc, change.new_name, value, generation, current[3], now)
                    results.append(ChangeResult("mv", change.name, generation, new_name=change.new_name))
                else:  # pragma: no cover - Change.op is a closed set
                    raise errors.VaultFailed(detail=f"unknown change {change.op!r}")
            if missing:
                raise errors.SecretNotFound(missing)
            if existing:
                raise errors.SecretExists(existing)
            conn.execute(
                "UPDATE vault SET generation=?, rows_mac=?, meta_mac=?",
                (generation, acc, _meta_mac(self._k_mac, self._vault_id, generation, self._key_epoch, acc)),
            )
            if bundle_generation is not None:
                conn.execute("UPDATE vault SET bundle_high_generation=max(bundle_high_generation, ?)",
                             (bundle_generation,))
        return WriteResult(generation, results)

    def _put(self, conn: sqlite3.Connection, acc: bytes, name: str, value: bytes, revision: int,
             created_at: str, updated_at: str) -> bytes:
        nonce = crypto.random_bytes(crypto.NONCE_BYTES)
        ciphertext = crypto.seal(self._key.view(), nonce, value, _secret_aad(self._vault_id, revision, name))
        conn.execute(
            "INSERT OR REPLACE INTO secrets (name, revision, created_at, updated_at, size, nonce, ciphertext) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, revision, created_at, updated_at, len(value), nonce, ciphertext),
        )
        return _xor(acc, _row_mac(self._k_mac, name, revision, nonce, ciphertext))

    # -- integrity --

    def verify(self) -> None:
        """Every row opens (else `SecretCorrupt` naming it) and the MACs match (else `VaultTampered`)."""
        self.verify_and_read(())

    def verify_and_read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        """`verify()` and the values of `names` from the same pass and snapshot (bundle seal: every
        row is decrypted once, not twice). Missing names raise `SecretNotFound` after the check."""
        wanted = set(names)
        found: dict[str, SecretValue] = {}
        conn = self.vault._conn
        try:
            conn.execute("BEGIN")
            try:
                header = self.vault.header()
                self.check_key(header)
                acc = _ZERO_MAC
                for name, revision, nonce, ciphertext in conn.execute(
                    f"SELECT name, revision, {_CT} FROM secrets ORDER BY name"
                ):
                    value = self._open(name, revision, bytes(nonce), bytes(ciphertext))
                    if name in wanted:
                        found[name] = SecretValue(name, value, revision)
                    acc = _xor(acc, _row_mac(self._k_mac, name, revision, bytes(nonce), bytes(ciphertext)))
            finally:
                _rollback(conn)
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self.path) from None
        expected_meta = _meta_mac(self._k_mac, self._vault_id, header.generation, header.key_epoch, acc)
        import hmac

        if not (hmac.compare_digest(acc, header.rows_mac) and hmac.compare_digest(expected_meta, header.meta_mac)):
            raise errors.VaultTampered()
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing)
        return found
