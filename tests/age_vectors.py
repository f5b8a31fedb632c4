"""Loading the C2SP CCTV age vectors (shared/vectors/age) for the tests."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path | None:
    """KIMEN_AGE_VECTORS, else `shared/vectors/age` beside the repository (or beside a parent:
    worktrees live one level deeper)."""
    env = os.environ.get("KIMEN_AGE_VECTORS")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for parent in REPO.parents:
        candidate = parent / "shared" / "vectors" / "age"
        if candidate.is_dir():
            return candidate
    return None


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
    directory = vectors_dir()
    if directory is None:
        return []
    return [Vector(p) for p in sorted(directory.iterdir()) if p.is_file() and not p.name.startswith(".")]
