"""What a vault file holds: its format marks, the SQL schema and the `vault` header row.

A vault is one SQLite file in WAL mode whose `application_id` is "KMN1" and whose `user_version`
is the schema version. Its `vault` table holds exactly one row (`Header`): the vault id, the KDF
parameters and salt, the wrapped data key, the key epoch, the generation and the two MACs.
Nothing here opens a file or touches a key.
"""

from __future__ import annotations

from ..store import KdfParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

FORMAT = "kimen-sqlite-vault/1"
APPLICATION_ID = 0x4B4D4E31  # "KMN1"
SCHEMA_VERSION = 1
KDF_VERSION = 19  # argon2 version 0x13

SCHEMA = """
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

HEADER_COLUMNS = (
    "format, vault_id, created_at, kdf_alg, kdf_version, kdf_memory_kib, kdf_time, kdf_parallelism, "
    "kdf_salt, wrap_nonce, wrapped_key, wrap_id, key_epoch, generation, rows_mac, meta_mac, "
    "bundle_high_generation"
)
# Columns read for a row's ciphertext. CAST keeps a tampered row stored with another type (TEXT)
# readable as bytes, so it fails authentication instead of raising a decoding error.
CIPHERTEXT_COLUMNS = "CAST(nonce AS BLOB), CAST(ciphertext AS BLOB)"


class Header:
    """The `vault` row (a plain slotted class: `dataclasses` would cost ~7 ms of imports)."""

    __slots__ = ("bundle_high_generation", "created_at", "format", "generation", "kdf", "kdf_version", "key_epoch",
                 "meta_mac", "rows_mac", "salt", "vault_id", "wrap_id", "wrap_nonce", "wrapped_key")
    bundle_high_generation: int
    created_at: str
    format: str
    generation: int
    kdf: KdfParams
    kdf_version: int
    key_epoch: int
    meta_mac: bytes
    rows_mac: bytes
    salt: bytes
    vault_id: bytes
    wrap_id: bytes
    wrap_nonce: bytes
    wrapped_key: bytes

    def __init__(self, row: Sequence[Any]) -> None:
        """From the columns of `HEADER_COLUMNS`, in order (`TypeError`, `ValueError` or
        `IndexError` when a column has the wrong type)."""
        self.format = row[0]
        self.vault_id = bytes(row[1])
        self.created_at = row[2]
        self.kdf = KdfParams(memory_kib=row[5], time=row[6], parallelism=row[7], alg=row[3])
        self.kdf_version = row[4]
        self.salt = bytes(row[8])
        self.wrap_nonce = bytes(row[9])
        self.wrapped_key = bytes(row[10])
        self.wrap_id = bytes(row[11])
        self.key_epoch = row[12]
        self.generation = row[13]
        self.rows_mac = bytes(row[14])
        self.meta_mac = bytes(row[15])
        self.bundle_high_generation = row[16]
