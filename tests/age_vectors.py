"""Loading the C2SP CCTV age vectors (tests/vectors/age, with their licence and source) for the tests."""

from __future__ import annotations

import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path:
    """The repository's own copy of the vectors (tests/vectors/age; provenance in its README)."""
    return REPO / "tests" / "vectors" / "age"


class Vector:
    def __init__(self, path: Path) -> None:
        raw = path.read_bytes()
        head, _, body = raw.partition(b"\n\n")
        self.name = path.name
        self.meta: dict[str, list[str]] = {}
        for line in head.decode().splitlines():
            key, _, value = line.partition(": ")
            self.meta.setdefault(key, []).append(value)
        if self.meta.get("compressed") == ["zlib"]:
            body = zlib.decompress(body)
        self.body = body

    @property
    def expect(self) -> str:
        return self.meta["expect"][0]

    @property
    def payload(self) -> str | None:
        return self.meta.get("payload", [None])[0]

    @property
    def identities(self) -> list[str]:
        return self.meta.get("identity", [])

    @property
    def passphrase(self) -> str | None:
        return self.meta.get("passphrase", [None])[0]


def all_vectors() -> list[Vector]:
    return [Vector(p) for p in sorted(vectors_dir().iterdir())
            if p.is_file() and p.name != "LICENSE" and not p.name.startswith(".")]
