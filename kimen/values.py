"""Secret names and values as every path sees them, `kimen run`'s included: the secret-name rule,
the size limits, the immutable record base (`Record`) and a value read from a store
(`SecretValue`).

Kept apart from `kimen.store` (the store interface and its other record types: writes, history,
metadata), which a `run` with a session then never imports (~0.25 ms of its start-up).
"""

from __future__ import annotations

from . import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MAX_VALUE_BYTES = 1024 * 1024
MAX_NAME_BYTES = 128
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def is_valid_secret_name(name: str) -> bool:
    r"""`[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*`, at most 128 bytes.

    Checked with sets, not a regular expression: compiling one costs ~0.3 ms on every command.
    """
    return (
        0 < len(name) <= MAX_NAME_BYTES
        and _NAME_CHARS.issuperset(name)  # one pass in C; the dots only separate non-empty segments
        and name[0] not in "-."
        and name[-1] != "."
        and ".." not in name
    )


def check_secret_name(name: str) -> str:
    """Return `name` if it is a valid secret name, else raise the precise error."""
    if name == "":
        raise errors.EmptySecretName()
    if not is_valid_secret_name(name):
        raise errors.InvalidSecretName(name=_printable(name))
    return name


def check_read_names(names: Sequence[str]) -> list[str]:
    """`names` without repeats, in order, each checked (`check_secret_name`): what a store reads."""
    wanted = list(dict.fromkeys(names))
    for name in wanted:
        check_secret_name(name)
    return wanted


def _printable(name: str) -> str:
    """A name as it may appear in a message: bounded and without control characters."""
    shown = name[:MAX_NAME_BYTES + 8]
    shown = "".join(ch if ch.isprintable() else "?" for ch in shown)
    return shown + ("..." if len(name) > len(shown) else "")


class Record:
    """A small immutable value type: equality, hash and repr over its slots.

    Not a dataclass: `dataclasses` costs ~7 ms of imports, and this module is on the hot path.
    Each subclass declares its slots and annotates them, and its `__init__` stores through
    `_init` (`__setattr__` refuses every other assignment).
    """

    __slots__: tuple[str, ...] = ()

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n != "value")
        return f"{type(self).__name__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _init(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)


class SecretValue(Record):
    """A decrypted value (its repr never shows the value)."""

    __slots__ = ("name", "revision", "value")
    name: str
    revision: int
    value: bytes

    def __init__(self, name: str, value: bytes, revision: int) -> None:
        self._init(name=name, value=value, revision=revision)
