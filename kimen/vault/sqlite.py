"""Connections to a vault file, and sqlite3's errors mapped to reasons where they enter.

Every connection runs in autocommit mode (transactions are explicit), waits `BUSY_TIMEOUT_MS` for
a lock, syncs fully, overwrites deleted content (`secure_delete`) and trusts no schema code. SQLite
creates `-wal` and `-shm` lazily, so everything runs under a private umask. A read-only vault in a
directory nobody can write to (a read-only mount) is opened `immutable` when its `-wal` is empty;
`file_stamp` then lets a long-lived reader notice that the file changed under it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3

from .. import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

BUSY_TIMEOUT_MS = 5000
READ_CHUNK = 500  # names per `IN (...)` query

Stamp = tuple[int, ...]


def map_error(exc: sqlite3.Error, path: str) -> errors.KimenError:
    """The reason for a sqlite3 error on the vault at `path`."""
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


def _no_space_left(path: str) -> bool:
    """Whether the device holding `path` is (nearly) full: SQLite reports ENOSPC as an I/O error
    when it happens while growing the WAL index or writing the journal."""
    try:
        st = os.statvfs(os.path.dirname(path) or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """SQLite creates -wal/-shm lazily; make sure nothing it creates is group/other-readable."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def chunks(items: list[str], size: int = READ_CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def connect(path: str, *, read_only: bool) -> tuple[sqlite3.Connection, Stamp | None]:
    """The connection, and the stamp of the file when it had to be opened immutable (else None)."""
    try:
        return open_connection(path, read_only=read_only), None
    except sqlite3.Error as exc:
        if read_only and "unable to open" in str(exc).lower():
            # SQLite opens a WAL database read-only only where it can create the -shm file. In a
            # directory we cannot write to (a read-only mount) no writer of ours can exist: when no
            # -wal holds uncheckpointed commits, the file alone is the whole vault and can be read
            # as is. A writer elsewhere (the other side of a read-only bind mount) is not excluded:
            # the stamp, taken first, lets a long-lived reader (the session daemon) notice one.
            stamp = file_stamp(path)
            if stamp is not None and not _writable_dir(path) and wal_is_empty(path):
                try:
                    return open_connection(path, read_only=True, immutable=True), stamp
                except sqlite3.Error:
                    pass
            raise errors.VaultReadOnly(path=path) from None
        raise map_error(exc, path) from None
    except UnicodeDecodeError:
        # SQLite's message quotes a damaged schema, which may not be UTF-8: the file is no vault
        raise errors.InvalidVaultFile(path=path) from None


# Bytes a `file:` URI path keeps as they are (RFC 3986 unreserved, and `/`): `urllib.parse.quote`'s
# rule, without importing urllib.parse (with `re` and `ipaddress`, more than sqlite3 itself costs).
_URI_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/")


def file_uri(path: str) -> str:
    """The SQLite `file:` URI of `path`, quoted from its bytes: a path may hold bytes that are not
    UTF-8 (lone surrogates once decoded), which SQLite takes only as %XX escapes."""
    raw = os.fsencode(path)
    if raw.startswith(b"//"):  # `//x` is `/x` to the kernel, but `file://x` names a host `x` to SQLite
        raw = b"/" + raw.lstrip(b"/")
    return "file:" + "".join(chr(b) if b in _URI_SAFE else f"%{b:02X}" for b in raw)


def open_connection(path: str, *, read_only: bool, immutable: bool = False) -> sqlite3.Connection:
    """A configured connection (sqlite3 errors are the caller's to map)."""
    uri = f"{file_uri(path)}?mode={'ro' if read_only else 'rw'}{'&immutable=1' if immutable else ''}"
    with private_umask():
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
        conn = open_connection(path, read_only=True, immutable=True)
    except (sqlite3.Error, UnicodeError, OSError):
        return None
    try:
        rows = conn.execute("SELECT vault_id FROM vault").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return bytes(rows[0][0]) if len(rows) == 1 and isinstance(rows[0][0], bytes) else None


def file_stamp(path: str) -> Stamp | None:
    """(device, inode, size, mtime, ctime) of the file at `path`, or None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _writable_dir(path: str) -> bool:
    return os.access(os.path.dirname(path) or ".", os.W_OK)


def wal_is_empty(path: str) -> bool:
    try:
        return os.stat(path + "-wal").st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False
