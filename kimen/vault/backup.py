"""Snapshots of a vault: a consistent private copy made by SQLite, never a raw file copy.

`VACUUM INTO` writes the committed state of the database (the `-wal` included) into a fresh file,
created here first with O_EXCL|O_NOFOLLOW and 0600 so that no other process or link can be in its
place; the copy is fsynced with its directory. A failure leaves no file behind. When and where a
command keeps backups is the command's choice (`kimen.cli.backup`).
"""

from __future__ import annotations

import os
import sqlite3
import time

from .. import errors
from ..fsutil import fsync_dir, unlink_quietly
from .schema import HEADER_COLUMNS, Header
from .sqlite import BUSY_TIMEOUT_MS, file_uri, map_error, open_connection, private_umask


def default_path(vault_path: str) -> str:
    """Where a backup of the vault at `vault_path` goes unless a command says otherwise:
    `<vault>.bak.<unix-nanoseconds>`, next to the vault."""
    return f"{vault_path}.bak.{time.time_ns()}"


def discard(dest: str) -> None:
    """Remove a backup nobody needs (the change it preceded did not happen)."""
    unlink_quietly(dest)


def snapshot(conn: sqlite3.Connection, path: str, dest: str) -> tuple[object, ...]:
    """Copy the vault open on `conn` (at `path`, for messages) to the new file `dest`; returns the
    copy's header fingerprint (`Header.fingerprint`), read back from the file as written."""
    # the name is taken first (raw OSError: the caller words it), then SQLite writes into it
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    try:
        with private_umask():
            conn.execute("VACUUM INTO ?", (file_uri(dest),))
        os.chmod(dest, 0o600)
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(dest))
        copy = open_connection(dest, read_only=True, immutable=True)  # immutable: no -wal or -shm beside it
        try:
            return Header(copy.execute(f"SELECT {HEADER_COLUMNS} FROM vault").fetchone()).fingerprint()
        finally:
            copy.close()
    except (sqlite3.Error, ValueError, TypeError) as exc:
        unlink_quietly(dest)
        if not isinstance(exc, sqlite3.Error):  # no single well-formed header row in what was written
            raise errors.InvalidVaultFile(path=path) from None
        raise map_error(exc, path) from None
    except BaseException:
        unlink_quietly(dest)
        raise


def restore(source: sqlite3.Connection, conn: sqlite3.Connection, path: str) -> None:
    """Copy the whole database open on `source` into the vault open on `conn` (at `path`, for
    messages) with SQLite's online backup: one step, so a reader sees the old vault or the new one,
    never a mix, and the vault's `-wal` stays consistent (a raw file copy could not promise that).
    A vault another connection is writing is `vault_busy` at once, with nothing copied: the copy
    never waits, so no write can land between the caller's snapshot and it (the caller retries)."""

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (_SQLITE_BUSY, _SQLITE_LOCKED):
            raise _Busy()

    try:
        conn.execute("PRAGMA busy_timeout=0")  # BUSY at once, not after waiting for (and then over) a writer
        try:
            source.backup(conn, progress=progress)
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except _Busy:
        raise errors.VaultBusy(path=path) from None
    except sqlite3.Error as exc:
        raise map_error(exc, path) from None


_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class _Busy(Exception):
    """The destination is locked by another connection: abort the copy before it starts."""


# -- what made each backup (`kimen vault backups`) --
#
# A backup's file holds the vault as it was, nothing about why it was made; that is one JSON line
# per backup in `<vault>.backups` (0600, next to the vault, appended): `{"path", "made_by", "vault"}`
# (`vault`: the vault's real path, so a log copied with the vault's directory is not the copy's).
# `made_by` is the command's words (`secret import`, `vault rekey`) or `schema migration`. A
# missing or unreadable log only loses that column.

LOG_SUFFIX = ".backups"
_LOG_READ_LIMIT = 4 * 1024 * 1024


def record(vault_path: str, path: str, made_by: str) -> None:
    """Append the backup at `path` and what made it to the vault's log (best effort)."""
    import json

    line = json.dumps({"path": os.path.abspath(path), "made_by": made_by,
                       "vault": os.path.realpath(vault_path)}) + "\n"
    try:
        fd = os.open(vault_path + LOG_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def made_by(vault_path: str) -> dict[str, str]:
    """backup path -> the command that made it, from the log (empty when there is none); lines
    from before the log named its vault count too (for this column only)."""
    return {path: maker for path, maker, _ in _lines(vault_path)}


def recorded(vault_path: str) -> set[str]:
    """The backups the log says were made of this very vault (lines naming its real path)."""
    return {path for path, _, own in _lines(vault_path) if own}


def _lines(vault_path: str) -> list[tuple[str, str, bool]]:
    """(path, made_by, names this vault) per readable line; lines of another vault left out."""
    import json

    from ..fsutil import read_limited

    try:
        fd = os.open(vault_path + LOG_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        # the newest lines matter: of a log grown past the limit (it is only appended to), the tail
        start = max(os.fstat(fd).st_size - _LOG_READ_LIMIT, 0)
        os.lseek(fd, max(start - 1, 0), os.SEEK_SET)  # from the byte before: is the first line whole?
        data = read_limited(fd, _LOG_READ_LIMIT)
    except OSError:
        return []
    finally:
        os.close(fd)
    if start:
        data = data.partition(b"\n")[2]  # up to the first line that starts after a newline
    found = []
    this_vault = os.path.realpath(vault_path)
    for line in data.splitlines():
        try:
            doc = json.loads(line)
            vault = doc.get("vault")
            if vault is not None and vault != this_vault:  # the log was copied with another vault's directory
                continue
            found.append((str(doc["path"]), str(doc["made_by"]), vault == this_vault))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # a line edited outside kimen
            continue
    return found
