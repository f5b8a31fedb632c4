"""The store interface (SPEC §3.6) and its value types.

Every command that needs values talks to a `Store`. It is implemented by an opened local vault
(`kimen.vault.LocalStore`), by the session daemon's client (`kimen.daemon.client`) and, read-only,
by a decrypted bundle. Projection code asks a store for exactly the names a profile needs and
never learns which implementation answered. A shared contract suite (`tests/store_contract.py`)
runs against each implementation.

Also here, because every layer needs them: the secret-name rule and the value size limit (§3.4).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import EmptySecretName, InvalidSecretName

MAX_VALUE_BYTES = 1024 * 1024
MAX_NAME_BYTES = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")


def is_valid_secret_name(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME_BYTES
        and name.isascii()
        and _NAME.fullmatch(name) is not None
    )


def check_secret_name(name: str) -> str:
    """Return `name` if it satisfies SPEC §3.4, else raise the precise error."""
    if name == "":
        raise EmptySecretName()
    if not is_valid_secret_name(name):
        raise InvalidSecretName(name=_printable(name))
    return name


def _printable(name: str) -> str:
    """A name as it may appear in a message: bounded and without control characters."""
    shown = name[:MAX_NAME_BYTES + 8]
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown)
    return shown + ("..." if len(name) > len(shown) else "")


@dataclass(frozen=True, slots=True)
class KdfParams:
    memory_kib: int
    time: int
    parallelism: int
    alg: str = "argon2id"

    def as_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "memory_kib": self.memory_kib, "time": self.time,
                "parallelism": self.parallelism}


@dataclass(frozen=True, slots=True)
class VaultMeta:
    """What anyone can read without the passphrase (§3.1)."""

    path: str
    canonical_path: str
    format: str
    schema_version: int
    vault_id: str
    created_at: str
    generation: int
    secret_count: int
    size_bytes: int
    mode: str
    kdf: KdfParams
    key_epoch: int
    wrap_id: str


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    revision: int
    size: int
    created_at: str
    updated_at: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "size": self.size,
                "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass(frozen=True, slots=True)
class SecretValue:
    name: str
    value: bytes = field(repr=False)
    revision: int


ChangeOp = Literal["set", "rm", "mv"]
SetMode = Literal["upsert", "create", "update"]


@dataclass(frozen=True, slots=True)
class Change:
    """One item of a `write`: set (create/update/upsert), rm, or mv (old name -> `new_name`)."""

    op: ChangeOp
    name: str
    value: bytes | None = field(default=None, repr=False)
    new_name: str | None = None
    mode: SetMode = "upsert"

    @staticmethod
    def set(name: str, value: bytes, mode: SetMode = "upsert") -> Change:
        return Change("set", name, value=value, mode=mode)

    @staticmethod
    def rm(name: str) -> Change:
        return Change("rm", name)

    @staticmethod
    def mv(old: str, new: str) -> Change:
        return Change("mv", old, new_name=new)


@dataclass(frozen=True, slots=True)
class ChangeResult:
    op: ChangeOp
    name: str
    revision: int | None
    created: bool = False
    new_name: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    generation: int
    results: list[ChangeResult]


class Store(Protocol):
    """The operations of SPEC §3.6. `meta` and `list` need no key."""

    def meta(self) -> VaultMeta: ...

    def list(self, prefix: str | None = None) -> list[SecretInfo]: ...

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        """Values of `names`; every missing name is reported together (`SecretNotFound`)."""
        ...

    def write(
        self,
        changes: Sequence[Change],
        if_generation: int | None = None,
        baseline: Any = None,
    ) -> WriteResult:
        """Apply all `changes` in one transaction, or none of them."""
        ...

    def verify(self) -> None:
        """The integrity check of §3.3; raises `VaultTampered` or `SecretCorrupt`."""
        ...

    def close(self) -> None: ...
