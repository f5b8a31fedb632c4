"""The vault file: the only importer of sqlite3.

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
to reasons where they enter; no sqlite3 exception escapes this package.

This package must never: log or raise with a value in the message, write a file through a
symlink, or leave a half-created vault behind.

Modules, lowest first: `schema` (format marks, SQL, the header row), `sqlite` (connections and
error mapping), `keys` (KDF bounds, the data key's wrap), `sealing` (what values and MACs are
bound to), `backup` (snapshots), `rekey`, `file` (`VaultFile`: the open file, key-free reads,
transactions), `store` (`Vault`, which unlocks into a `LocalStore`), `create`.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .create import create_vault, discard_new_vault, vault_exists_error
    from .keys import KDF_DEFAULT, kdf_problem
    from .schema import Header
    from .sqlite import file_stamp, main_file_vault_id
    from .store import LocalStore, Vault

# Each name is loaded from its module on first use: a command that reads only plaintext metadata
# (`secret list`, `vault info`) opens `kimen.vault.file` and never pays for the crypto modules.
_HOME = {
    "create_vault": "create", "discard_new_vault": "create", "KDF_DEFAULT": "keys", "kdf_problem": "keys",
    "Header": "schema", "file_stamp": "sqlite", "main_file_vault_id": "sqlite", "LocalStore": "store",
    "Vault": "store", "vault_exists_error": "create",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    __import__(f"{__name__}.{home}")
    value = getattr(globals()[home], name)
    globals()[name] = value
    return value


__all__ = [
    "KDF_DEFAULT",
    "Header",
    "LocalStore",
    "Vault",
    "create_vault",
    "discard_new_vault",
    "file_stamp",
    "kdf_problem",
    "main_file_vault_id",
    "vault_exists_error",
]
