"""What a vault file holds: its format marks, the SQL schema and the `vault` header row.

A vault is one SQLite file in WAL mode whose `application_id` is "KMN1" and whose `user_version`
is the schema version. Its `vault` table holds exactly one row (`Header`): the vault id, the KDF
parameters and salt, the wrapped data key, the key epoch, the generation and the two MACs.
Nothing here opens a file or touches a key.

Schema versions: 1 (the first release) and 2, which adds `secret_history` (the last values of each
name) and replaces the two sync tables of version 1, which no release ever wrote, by their final
form (`sync_state` with the known head and membership, `sync_baseline` with each entry's `seq`).
`MIGRATE_V1_TO_V2` is the one forward migration: it creates and drops tables only, so no row of
`vault` or `secrets` is rewritten. A version 3 does not exist.
"""

from __future__ import annotations

from ..store import HISTORY_KEEP as HISTORY_KEEP  # older values kept per name by default (re-exported)
from ..store import KdfParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

FORMAT = "kimen-sqlite-vault/1"
APPLICATION_ID = 0x4B4D4E31  # "KMN1"
SCHEMA_VERSION = 2
OLDEST_SCHEMA_VERSION = 1  # still opened; migrated to SCHEMA_VERSION by the first write
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
    remote_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    head_id TEXT NOT NULL,
    head_rev TEXT NOT NULL,
    head_generation INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    record_hash TEXT NOT NULL,
    members_fp TEXT NOT NULL,
    member TEXT NOT NULL,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    rotation_due_count INTEGER NOT NULL DEFAULT 0,
    last_local_rev TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    state_mac BLOB NOT NULL
);
CREATE TABLE sync_baseline (
    remote TEXT NOT NULL,
    name TEXT NOT NULL,
    digest BLOB NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (remote, name)
);
CREATE TABLE secret_history (
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    replaced_at TEXT NOT NULL,
    op TEXT NOT NULL,
    size INTEGER NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (name, revision)
);
"""

# Version 1 -> 2, run in one transaction by the first write-capable use of a version-1 vault
# (after a backup). Only tables are created and dropped: the version-1 sync tables were never
# written by a release (nothing to carry over), and `secret_history` starts empty.
MIGRATE_V1_TO_V2 = (
    "DROP TABLE IF EXISTS sync_state;\nDROP TABLE IF EXISTS sync_baseline;\n"
    + SCHEMA[SCHEMA.index("CREATE TABLE sync_state ("):]
)

# Why a history row was written (`secret_history.op`)
HISTORY_OPS = ("set", "rm", "mv", "restore", "import", "bundle", "sync")

HEADER_COLUMNS = (
    "format, vault_id, created_at, kdf_alg, kdf_version, kdf_memory_kib, kdf_time, kdf_parallelism, "
    "kdf_salt, wrap_nonce, wrapped_key, wrap_id, key_epoch, generation, rows_mac, meta_mac, "
    "bundle_high_generation"
)
# The SQLite type of each column of `HEADER_COLUMNS`, in order (TEXT str, BLOB bytes, INTEGER int).
_HEADER_TYPES = (str, bytes, str, str, int, int, int, int, bytes, bytes, bytes, bytes, int, int, bytes, bytes, int)
# Columns read for a row's ciphertext. CAST keeps a tampered row stored with another type (TEXT,
# INTEGER) readable as bytes and IFNULL a NULL one, so it fails authentication (naming the secret)
# instead of raising a decoding or type error.
CIPHERTEXT_COLUMNS = "CAST(IFNULL(nonce, x'') AS BLOB), CAST(IFNULL(ciphertext, x'') AS BLOB)"


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
        """From the columns of `HEADER_COLUMNS`, in order. `ValueError` when a column is missing or
        holds another SQLite type than the schema's, or a counter is negative: a byte change can
        do either, and a blob read as a number (or a number as `bytes(n)`) must not reach the MACs."""
        if not (len(row) == len(_HEADER_TYPES) and all(type(v) is t for v, t in zip(row, _HEADER_TYPES, strict=False))
                and min(row[4], row[12], row[13], row[16]) >= 0):
            raise ValueError("vault header")
        self.format = row[0]
        self.vault_id = row[1]
        self.created_at = row[2]
        self.kdf = KdfParams(memory_kib=row[5], time=row[6], parallelism=row[7], alg=row[3])
        self.kdf_version = row[4]
        self.salt = row[8]
        self.wrap_nonce = row[9]
        self.wrapped_key = row[10]
        self.wrap_id = row[11]
        self.key_epoch = row[12]
        self.generation = row[13]
        self.rows_mac = row[14]
        self.meta_mac = row[15]
        self.bundle_high_generation = row[16]

    def fingerprint(self) -> tuple[Any, ...]:
        """Every field: two vaults with equal fingerprints hold the same rows (`rows_mac` covers every
        secret and history row, `meta_mac` the generation and epoch)."""
        return tuple(getattr(self, name) for name in self.__slots__)
