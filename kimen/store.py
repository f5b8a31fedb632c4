"""The store interface and its value types.

Every command that needs values talks to a `Store`. It is implemented by an opened local vault
(`kimen.vault.LocalStore`), by the session daemon's client (`kimen.daemon.client`) and, read-only,
by a decrypted bundle. Projection code asks a store for exactly the names a profile needs and
never learns which implementation answered. A shared contract suite (`tests/store_contract.py`)
runs against each implementation.

The secret-name rule, the size limits, the record base and `SecretValue` are in `kimen.values`.
"""

from __future__ import annotations

from .values import Record

TYPE_CHECKING = False  # typing costs ~5 ms of start-up; annotations are strings anyway

if TYPE_CHECKING:
    import builtins
    from collections.abc import Sequence
    from typing import Any, Literal, Protocol

    from .values import SecretValue

    ChangeOp = Literal["set", "rm", "mv"]
    SetMode = Literal["upsert", "create", "update"]


class KdfParams(Record):
    """argon2id parameters as stored in a vault."""

    __slots__ = ("alg", "memory_kib", "parallelism", "time")
    alg: str
    memory_kib: int
    parallelism: int
    time: int

    def __init__(self, memory_kib: int, time: int, parallelism: int, alg: str = "argon2id") -> None:
        self._init(memory_kib=memory_kib, time=time, parallelism=parallelism, alg=alg)

    def as_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "memory_kib": self.memory_kib, "time": self.time,
                "parallelism": self.parallelism}


class VaultMeta(Record):
    """What anyone can read without the passphrase."""

    __slots__ = (
        "canonical_path",
        "created_at",
        "format",
        "generation",
        "kdf",
        "key_epoch",
        "mode",
        "path",
        "schema_version",
        "secret_count",
        "size_bytes",
        "vault_id",
        "wrap_id",
    )
    canonical_path: str
    created_at: str
    format: str
    generation: int
    kdf: KdfParams
    key_epoch: int
    mode: str
    path: str
    schema_version: int
    secret_count: int
    size_bytes: int
    vault_id: str
    wrap_id: str

    def __init__(self, *, path: str, canonical_path: str, format: str, schema_version: int, vault_id: str,
                 created_at: str, generation: int, secret_count: int, size_bytes: int, mode: str,
                 kdf: KdfParams, key_epoch: int, wrap_id: str) -> None:
        self._init(path=path, canonical_path=canonical_path, format=format, schema_version=schema_version,
                   vault_id=vault_id, created_at=created_at, generation=generation, secret_count=secret_count,
                   size_bytes=size_bytes, mode=mode, kdf=kdf, key_epoch=key_epoch, wrap_id=wrap_id)


class SecretInfo(Record):
    """A secret's metadata: no value, no key needed."""

    __slots__ = ("created_at", "name", "revision", "size", "updated_at")
    created_at: str
    name: str
    revision: int
    size: int
    updated_at: str

    def __init__(self, name: str, revision: int, size: int, created_at: str, updated_at: str) -> None:
        # direct slot stores: `list()` builds one of these per row (100 000 in a large vault)
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "revision", revision)
        _set(self, "size", size)
        _set(self, "created_at", created_at)
        _set(self, "updated_at", updated_at)

    def as_json(self) -> dict[str, Any]:
        """The `secret list --json` object. Its readers rely on the stored types: a field a byte
        change gave another SQLite type (a blob, a real, NULL) is `vault_tampered`."""
        if not (type(self.name) is str and type(self.revision) is int and type(self.size) is int
                and type(self.created_at) is str and type(self.updated_at) is str):
            from .errors import VaultTampered

            raise VaultTampered()
        return {"name": self.name, "revision": self.revision, "size": self.size,
                "created_at": self.created_at, "updated_at": self.updated_at}


class Change(Record):
    """One item of a `write`: set (create/update/upsert), rm, or mv (old name -> `new_name`)."""

    __slots__ = ("mode", "name", "new_name", "op", "value")
    mode: SetMode
    name: str
    new_name: str | None
    op: ChangeOp
    value: bytes | None

    def __init__(self, op: ChangeOp, name: str, value: bytes | None = None, new_name: str | None = None,
                 mode: SetMode = "upsert") -> None:
        self._init(op=op, name=name, value=value, new_name=new_name, mode=mode)

    @staticmethod
    def set(name: str, value: bytes, mode: SetMode = "upsert") -> Change:
        return Change("set", name, value=value, mode=mode)

    @staticmethod
    def rm(name: str) -> Change:
        return Change("rm", name)

    @staticmethod
    def mv(old: str, new: str) -> Change:
        return Change("mv", old, new_name=new)


class ChangeResult(Record):
    """What one `Change` did: the new revision (None for `rm`), and whether a `set` created."""

    __slots__ = ("created", "name", "new_name", "op", "revision")
    created: bool
    name: str
    new_name: str | None
    op: ChangeOp
    revision: int | None

    def __init__(self, op: ChangeOp, name: str, revision: int | None, created: bool = False,
                 new_name: str | None = None) -> None:
        self._init(op=op, name=name, revision=revision, created=created, new_name=new_name)


class WriteResult(Record):
    """The vault's generation after a `write`, and one result per change."""

    __slots__ = ("generation", "results")
    generation: int
    results: list[ChangeResult]

    def __init__(self, generation: int, results: list[ChangeResult]) -> None:
        self._init(generation=generation, results=results)


def warn_migrated(vault_path: str, backup_path: str) -> None:
    """`vault_migrated`: a change migrated the vault to the current schema, after a backup. Said
    the same way by a local change and by one a session daemon made (its answer names the backup)."""
    from .output import warn

    warn(f"vault {vault_path} migrated to the current schema version; a backup of the old vault is at "
         f"{backup_path}", reason="vault_migrated")


# Older values `secret history` keeps per name: config `history.keep`, this default, 0 to the max
HISTORY_KEEP = 10
HISTORY_KEEP_MAX = 100


class HistoryEntry(Record):
    """One kept older value of a name (metadata only: never the value). `created_at` is when that
    revision was written, `replaced_at` when it left the name, `op` what replaced or removed it
    (set, rm, mv, restore, import, bundle, sync)."""

    __slots__ = ("created_at", "op", "replaced_at", "revision", "size")
    created_at: str
    op: str
    replaced_at: str
    revision: int
    size: int

    def __init__(self, revision: int, size: int, created_at: str, replaced_at: str, op: str) -> None:
        self._init(revision=revision, size=size, created_at=created_at, replaced_at=replaced_at, op=op)

    def as_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "size": self.size, "created_at": self.created_at,
                "replaced_at": self.replaced_at, "op": self.op}


class SecretHistory(Record):
    """A name's current revision (None once removed) and its kept older ones, newest first; `keep`
    is how many older ones the vault keeps per name."""

    __slots__ = ("current", "entries", "keep", "name")
    current: SecretInfo | None
    entries: list[HistoryEntry]
    keep: int
    name: str

    def __init__(self, name: str, current: SecretInfo | None, entries: list[HistoryEntry], keep: int) -> None:
        self._init(name=name, current=current, entries=entries, keep=keep)

    def revisions(self) -> list[int]:
        """Every revision that can be read back, newest first."""
        return ([self.current.revision] if self.current is not None else []) + [e.revision for e in self.entries]


class RestoreResult(Record):
    """What `restore` did: `revision` is the new revision holding `from_revision`'s value, or
    `from_revision` itself when that was already current (`unchanged`)."""

    __slots__ = ("from_revision", "generation", "name", "revision", "unchanged")
    from_revision: int
    generation: int
    name: str
    revision: int
    unchanged: bool

    def __init__(self, name: str, from_revision: int, revision: int, generation: int, unchanged: bool) -> None:
        self._init(name=name, from_revision=from_revision, revision=revision, generation=generation,
                   unchanged=unchanged)


if TYPE_CHECKING:
    class Store(Protocol):
        """The store operations, implemented by `kimen.vault.LocalStore`, the session client's
        `SessionStore` and the read-only `BundleStore` (structurally: none inherits from this).

        `meta` and `list` need no key. A type only: `typing` is not imported at run time.
        """

        def meta(self) -> VaultMeta: ...

        def list(self, prefix: str | None = None) -> builtins.list[SecretInfo]: ...

        def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
            """Values of `names`; every missing name is reported together (`SecretNotFound`)."""
            ...

        def write(self, changes: Sequence[Change], if_generation: int | None = None,
                  baseline: Any = None, *, history_op: str | None = None) -> WriteResult:
            """Apply all `changes` in one transaction, or none of them. `history_op` names what
            replaced or removed values in their history rows (`import`, `bundle`, `sync`; by
            default each change's own op)."""
            ...

        def verify(self) -> None:
            """The integrity check (docs/vault.md); raises `VaultTampered` or `SecretCorrupt`."""
            ...

        def history(self, name: str) -> SecretHistory:
            """The current revision and the kept older ones of `name` (no value, no key)."""
            ...

        def read_revision(self, name: str, revision: int) -> SecretValue:
            """The value `name` had at `revision` (current or kept); `RevisionNotFound` else."""
            ...

        def restore(self, name: str, revision: int) -> RestoreResult:
            """Make `revision`'s value current again (the current one goes to history)."""
            ...

        def purge_history(self, names: Sequence[str] | None = None) -> int:
            """Delete the kept older values of `names` (None: every name); how many went."""
            ...

        def close(self) -> None: ...
