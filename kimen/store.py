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

from .errors import EmptySecretName, InvalidSecretName

TYPE_CHECKING = False  # `typing` costs ~5 ms: imported only by type checkers
if TYPE_CHECKING:
    from typing import Any, Literal, Protocol
else:
    Protocol = object

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


class _Record:
    """An immutable value object with slots, equality, hashing and a repr that hides values.

    Hand-written instead of `dataclasses`: that module imports `inspect` (and with it ast, dis,
    tokenize), ~10 ms that `kimen run` with a live session would pay on every call (SPEC §12).
    Subclasses list `_fields` (constructor order), optional `_defaults` and `_hidden` (left out of
    repr, like a value).
    """

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, object] = {}
    _hidden: frozenset[str] = frozenset()

    def __init__(self, *args: object, **kwargs: object) -> None:
        names = self._fields
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__} takes {len(names)} arguments")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names or key in values:
                raise TypeError(f"{type(self).__name__}: unexpected or repeated argument {key!r}")
            values[key] = value
        for name in names:
            if name not in values:
                if name not in self._defaults:
                    raise TypeError(f"{type(self).__name__}: missing argument {name!r}")
                values[name] = self._defaults[name]
            object.__setattr__(self, name, values[name])

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n not in self._hidden)
        return f"{type(self).__name__}({shown})"


class KdfParams(_Record):
    __slots__ = _fields = ("memory_kib", "time", "parallelism", "alg")
    _defaults = {"alg": "argon2id"}
    memory_kib: int
    time: int
    parallelism: int
    alg: str

    def as_json(self) -> dict[str, Any]:
        return {"alg": self.alg, "memory_kib": self.memory_kib, "time": self.time,
                "parallelism": self.parallelism}


class VaultMeta(_Record):
    """What anyone can read without the passphrase (§3.1)."""

    __slots__ = _fields = ("path", "canonical_path", "format", "schema_version", "vault_id", "created_at",
                           "generation", "secret_count", "size_bytes", "mode", "kdf", "key_epoch", "wrap_id")
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


class SecretInfo(_Record):
    __slots__ = _fields = ("name", "revision", "size", "created_at", "updated_at")
    name: str
    revision: int
    size: int
    created_at: str
    updated_at: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "size": self.size,
                "created_at": self.created_at, "updated_at": self.updated_at}


class SecretValue(_Record):
    __slots__ = _fields = ("name", "value", "revision")
    _hidden = frozenset({"value"})
    name: str
    value: bytes
    revision: int


if TYPE_CHECKING:
    ChangeOp = Literal["set", "rm", "mv"]
    SetMode = Literal["upsert", "create", "update"]


class Change(_Record):
    """One item of a `write`: set (create/update/upsert), rm, or mv (old name -> `new_name`)."""

    __slots__ = _fields = ("op", "name", "value", "new_name", "mode")
    _defaults = {"value": None, "new_name": None, "mode": "upsert"}
    _hidden = frozenset({"value"})
    op: ChangeOp
    name: str
    value: bytes | None
    new_name: str | None
    mode: SetMode

    @staticmethod
    def set(name: str, value: bytes, mode: SetMode = "upsert") -> Change:
        return Change("set", name, value=value, mode=mode)

    @staticmethod
    def rm(name: str) -> Change:
        return Change("rm", name)

    @staticmethod
    def mv(old: str, new: str) -> Change:
        return Change("mv", old, new_name=new)


class ChangeResult(_Record):
    __slots__ = _fields = ("op", "name", "revision", "created", "new_name")
    _defaults = {"created": False, "new_name": None}
    op: ChangeOp
    name: str
    revision: int | None
    created: bool
    new_name: str | None


class WriteResult(_Record):
    __slots__ = _fields = ("generation", "results")
    generation: int
    results: list[ChangeResult]


class Store(Protocol):  # a typing.Protocol for checkers; a plain class at run time
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
