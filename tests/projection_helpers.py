"""Test doubles and helpers for projection unit tests: an in-memory `Store` (a test double of the
store interface) that records what was read."""

from __future__ import annotations

from collections.abc import Sequence

from kimen import errors
from kimen.values import SecretValue


class MemoryStore:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.reads: list[list[str]] = []
        self.closed = False

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        self.reads.append(list(names))
        missing = [n for n in names if n not in self.values]
        if missing:
            raise errors.SecretNotFound(missing)
        return {n: SecretValue(n, self.values[n], 1) for n in names}

    def close(self) -> None:
        self.closed = True


class EchoStore(MemoryStore):
    """Every name exists; its value is b"S:" + name."""

    def __init__(self) -> None:
        super().__init__({})

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        self.reads.append(list(names))
        return {n: SecretValue(n, b"S:" + n.encode(), 1) for n in names}
