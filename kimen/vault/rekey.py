"""Rekeying: the data key rewrapped under a new passphrase or KDF parameters, optionally rotated.

Runs inside the caller's write transaction, after the new KEK was derived (the KDF never runs
while the vault is locked for writing). A new salt and wrap id always; with rotation a new data
key and key epoch, every row re-encrypted under it (revisions kept, so `rows_mac` is recomputed),
the kept older values of `secret_history` too, and the sync tables carried over to the new key
(`kimen.vault.syncrows.Rotation`: baselines translated, `state_mac` recomputed).
"""

from __future__ import annotations

from .. import crypto
from ..sensitive import Sensitive
from . import keys, sealing
from .schema import CIPHERTEXT_COLUMNS

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3

    from ..store import KdfParams
    from .schema import Header
    from .syncrows import Rotation


def rewrap(conn: sqlite3.Connection, header: Header, old_key: Sensitive, kek: Sensitive, salt: bytes,
           params: KdfParams, *, rotate_data_key: bool) -> None:
    """Write the new wrap (and, rotating, the re-encrypted rows) of the vault whose `header` was
    read in this transaction."""
    key_epoch = header.key_epoch + (1 if rotate_data_key else 0)
    generation = header.generation + 1
    if rotate_data_key:
        new_key = Sensitive(crypto.random_bytes(crypto.KEY_BYTES))
        from .syncrows import Rotation

        sync = Rotation(conn, header.vault_id, old_key, new_key)  # reads the old ciphertexts
        rows_mac = _rotate_rows(conn, header, old_key, new_key, sync)
        sync.finish(conn)
    else:
        new_key = Sensitive(old_key.reveal())
        rows_mac = header.rows_mac
    with new_key:
        k_mac = sealing.mac_key(new_key, header.vault_id)
        wrap_nonce, wrapped = keys.wrap(kek, new_key, header.vault_id, params, salt, key_epoch)
    conn.execute(
        "UPDATE vault SET kdf_memory_kib=?, kdf_time=?, kdf_parallelism=?, kdf_salt=?, wrap_nonce=?, "
        "wrapped_key=?, wrap_id=?, key_epoch=?, generation=?, rows_mac=?, meta_mac=?",
        (params.memory_kib, params.time, params.parallelism, salt, wrap_nonce, wrapped,
         crypto.random_bytes(16), key_epoch, generation, rows_mac,
         sealing.meta_mac(k_mac, header.vault_id, generation, key_epoch, rows_mac)),
    )


def _rotate_rows(conn: sqlite3.Connection, header: Header, old_key: Sensitive, new_key: Sensitive,
                 sync: Rotation) -> bytes:
    """Re-encrypt every row under `new_key` (showing each value to `sync`); the new `rows_mac`."""
    k_mac = sealing.mac_key(new_key, header.vault_id)
    acc = sealing.ZERO_MAC
    rows = conn.execute(f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secrets").fetchall()
    for name, revision, nonce, ciphertext in rows:
        value = sealing.open_value(old_key, header.vault_id, name, revision, nonce, ciphertext)
        sync.see(name, value)
        new_nonce, new_ct = sealing.seal_value(new_key, header.vault_id, name, revision, value)
        conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name=?", (new_nonce, new_ct, name))
        acc = sealing.xor(acc, sealing.row_mac(k_mac, name, revision, new_nonce, new_ct))
    if conn.execute("PRAGMA user_version").fetchone()[0] >= 2:  # the kept older values, likewise
        kept = conn.execute(f"SELECT name, revision, {CIPHERTEXT_COLUMNS} FROM secret_history").fetchall()
        for name, revision, nonce, ciphertext in kept:
            value = sealing.open_value(old_key, header.vault_id, name, revision, nonce, ciphertext)
            sync.see(name, value)
            new_nonce, new_ct = sealing.seal_value(new_key, header.vault_id, name, revision, value)
            conn.execute("UPDATE secret_history SET nonce=?, ciphertext=? WHERE name=? AND revision=?",
                         (new_nonce, new_ct, name, revision))
            acc = sealing.xor(acc, sealing.hist_mac(k_mac, name, revision, new_nonce, new_ct))
    return acc

