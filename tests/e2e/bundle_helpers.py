"""Shared set-up for the bundle end-to-end tests."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import SMALL_KDF

AGE = shutil.which("age") or ("/usr/bin/age" if os.path.exists("/usr/bin/age") else None)
CANARY = "CANARY-bundle-9f3c-value"
NEW_PASS = {"KIMEN_PASSPHRASE": "another passphrase 123"}

needs_age = pytest.mark.skipif(AGE is None, reason="the age CLI is not installed (make test installs it as root)")


class Team:
    """A vault with secrets, an identity (key.txt), its recipient and signer."""

    def __init__(self, kimen, name: str = "key.txt") -> None:
        self.k = kimen
        self.key = kimen.cwd / name
        done = kimen.ok("bundle", "keygen", "--out", str(self.key), "--json")
        doc = done.json()
        self.recipient = doc["recipient"]
        self.signer = doc["signer"]

    def seal(self, out: str = "vault.age", *extra: str, env: dict | None = None):
        return self.k.ok("bundle", "seal", "--out", out, "--recipient", self.recipient, "--identity", str(self.key),
                         "--json", *extra, env=env if env is not None else self.k.with_pass()).json()

    def open_new(self, bundle: str, target: Path, *extra: str):
        return self.k.run("bundle", "open", "--in", bundle, "--identity", str(self.key), "--out-vault", str(target),
                          *SMALL_KDF, "--json", *extra, env=NEW_PASS)


def make_vault(kimen, secrets: dict[str, str] | None = None):
    kimen.init_vault()
    for name, value in (secrets or {"prod.db": "postgres://u:p@h/db", "prod.token": CANARY}).items():
        kimen.set(name, value)
    return kimen


def values(kimen, vault: Path, names: list[str], env: dict[str, str]) -> dict[str, bytes]:
    return {n: kimen.ok("--vault", str(vault), "secret", "get", n, "--unsafe-stdout", env=env).out for n in names}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hand_document(secrets: dict[str, bytes], *, generation: int = 1, created_at: str = "2026-01-01T00:00:00Z",
                  **overrides) -> bytes:
    """An unsigned document as a user could write it by hand (canonical JSON)."""
    doc = {"kimen_bundle": 1, "bundle_id": "0" * 32, "created_at": created_at, "generation": generation,
           "secrets": [{"name": n, "value_b64": base64.b64encode(v).decode(), "revision": 1,
                        "updated_at": created_at} for n, v in sorted(secrets.items())],
           "signature": None}
    doc.update(overrides)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def age_encrypt(data: bytes, recipient: str, out: Path, armor: bool = False) -> Path:
    subprocess.run([AGE, *(["-a"] if armor else []), "-r", recipient, "-o", str(out)], input=data, check=True)
    return out


def age_decrypt(path: Path, key: Path) -> bytes:
    return subprocess.run([AGE, "-d", "-i", str(key), str(path)], capture_output=True, check=True).stdout
