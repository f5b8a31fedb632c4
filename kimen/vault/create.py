"""Creating a vault: an exclusive 0600 file in 0700 parents, the schema, the first header row.

Nothing is left behind on failure: the file, its `-wal`/`-shm`/`-journal` and the directories this
call created are removed again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat

from .. import crypto, errors
from ..durations import format_time
from ..fsutil import fsync_dir, make_private_dirs, unlink_quietly, write_exclusive
from ..sensitive import Sensitive
from . import keys, sealing
from .schema import APPLICATION_ID, FORMAT, HEADER_COLUMNS, KDF_VERSION, SCHEMA, SCHEMA_VERSION
from .sqlite import connect, map_error, private_umask
from .store import Vault

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..store import KdfParams


def create_vault(path: str, passphrase: Sensitive, params: KdfParams) -> Vault:
    """Create a new vault at `path` (exclusive, 0600, parents 0700); nothing is left on failure."""
    keys.check_kdf(params)
    if os.path.lexists(path):
        raise vault_exists_error(path)
    # the slow part (argon2) first: a Ctrl-C or a kill during it leaves nothing to clean up
    vault_id = crypto.random_bytes(16)
    salt = crypto.random_bytes(crypto.SALT_BYTES)
    with Sensitive(crypto.random_bytes(crypto.KEY_BYTES)) as data_key, \
            crypto.derive_kek(passphrase, salt, params) as kek:
        wrap_nonce, wrapped = keys.wrap(kek, data_key, vault_id, params, salt, 1)
        k_mac = sealing.mac_key(data_key, vault_id)
    parent = os.path.dirname(path) or "."
    try:
        created_dirs = make_private_dirs(parent)
    except OSError as exc:  # a file where a directory should be, a read-only file system, ...
        if exc.errno == errno.EROFS:
            raise errors.VaultReadOnly(path=path) from None
        raise errors.VaultFailed(detail=f"cannot create {parent}: {exc.strerror}", path=path) from None
    write_exclusive(path, b"", exists=errors.VaultExists, failed=errors.VaultFailed)
    try:
        conn, _ = connect(path, read_only=False)
        try:
            with private_umask():
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise errors.VaultFailed(detail=f"{path}: cannot enable WAL mode", path=path)
                conn.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    f"INSERT INTO vault ({HEADER_COLUMNS}) VALUES ({','.join('?' * 17)})",
                    (FORMAT, vault_id, format_time(), "argon2id", KDF_VERSION, params.memory_kib, params.time,
                     params.parallelism, salt, wrap_nonce, wrapped, crypto.random_bytes(16), 1, 0,
                     sealing.ZERO_MAC, sealing.meta_mac(k_mac, vault_id, 0, 1, sealing.ZERO_MAC), 0),
                )
                conn.execute("COMMIT")
        finally:
            conn.close()
        fsync_dir(parent)
        return Vault.open(path)
    except sqlite3.Error as exc:
        _remove_vault_files(path, created_dirs)
        raise map_error(exc, path) from None
    except BaseException:
        _remove_vault_files(path, created_dirs)
        raise


def vault_exists_error(path: str) -> errors.KimenError:
    """`vault_exists` for what is at `path`, with the way out when it is no vault at all."""
    try:
        st = os.stat(path)
    except OSError:
        return errors.VaultExists(path=path)
    if stat.S_ISDIR(st.st_mode):
        return errors.VaultExists(path=path, hint="it is a directory: name a file inside it (`--vault DIR/vault.db`)")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return errors.VaultExists(path=path, hint="it is an empty file (a `vault init` killed half-way?): "
                                                  "remove it, then run `kimen vault init` again")
    return errors.VaultExists(path=path)


def discard_new_vault(path: str) -> None:
    """Remove a vault this command just created (bundle open failing half-way)."""
    _remove_vault_files(path, [])


def _remove_vault_files(path: str, created_dirs: list[str]) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        unlink_quietly(path + suffix)
    for directory in reversed(created_dirs):
        try:
            os.rmdir(directory)
        except OSError:
            pass
