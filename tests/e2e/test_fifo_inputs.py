"""A FIFO (or a directory, or /dev/zero) where kimen expects a file never hangs it: every file a user
names is opened non-blocking, checked to be a regular file, then read bounded (kimen/fsutil.py,
`read_regular`). Each case runs with a timeout, so a regression fails instead of hanging."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TIMEOUT = 20
NEEDS_A_SECRET = ("--env", "A=a.b", "--", "true")  # the bundle is opened only when a secret is read


@pytest.fixture
def fifo(kimen) -> Path:
    path = kimen.root / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def key(kimen) -> Path:
    path = kimen.root / "key.txt"
    kimen.ok("bundle", "keygen", "--out", str(path))
    return path


def _refused(kimen, code: int, reason: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    done = kimen.fail(code, reason, *args, env=env, cwd=cwd, timeout=TIMEOUT)
    return done.err_json()


@pytest.mark.parametrize("command", [["plan"], ["run"], ["render", "--dir", "out"], ["envfile", "--out", "e.env"]])
def test_map(kimen, fifo, command):
    tail = ["--", "true"] if command == ["run"] else []
    code = {"plan": 21, "run": 23, "render": 23, "envfile": 22}[command[0]]
    envelope = _refused(kimen, code, "map_unreadable", *command, "--map", str(fifo), *tail)
    assert "FIFO" in envelope["error"]


@pytest.mark.parametrize("special", ["directory", "/dev/zero"])
def test_map_directory_and_device(kimen, special):
    path = "/dev/zero" if special == "/dev/zero" else str(kimen.root)
    _refused(kimen, 21, "map_unreadable", "plan", "--map", path)


def test_map_lint_and_doctor_report_it(kimen, fifo):
    done = kimen.run("map", "lint", "--map", str(fifo), "--json", timeout=TIMEOUT)
    assert done.code == 20 and "FIFO" in done.json()["issues"][0]["message"]
    done = kimen.run("doctor", "--map", str(fifo), "--allow-missing-vault", "--json", timeout=TIMEOUT)
    checks = {c["name"]: c for c in done.json()["checks"]}
    assert done.code == 27 and checks["mapping_profile"]["status"] == "error"


def test_profile_found_by_lookup_and_include(kimen, fifo):
    profiles = kimen.cwd / ".kimen" / "profiles"
    profiles.mkdir(parents=True)
    os.mkfifo(profiles / "p.kmap")  # lookup takes the first *regular* file: a FIFO is not one
    _refused(kimen, 21, "profile_not_found", "plan", "--profile", "p")
    os.mkfifo(profiles / "inc.kmap")
    (profiles / "top.kmap").write_text("include inc\nenv A=const:x\n")
    _refused(kimen, 21, "include_not_found", "plan", "--profile", "top")


def test_bundle(kimen, fifo, key):
    _refused(kimen, 23, "bundle_failed", "run", "--bundle", str(fifo), "--identity", str(key), *NEEDS_A_SECRET)
    _refused(kimen, 25, "bundle_failed", "bundle", "open", "--in", str(fifo), "--identity", str(key),
             "--out-vault", str(kimen.root / "v.db"))
    done = kimen.run("doctor", "--bundle", str(fifo), "--identity", str(key), "--json", timeout=TIMEOUT)
    assert done.code == 27 and {c["name"]: c for c in done.json()["checks"]}["bundle_in"]["status"] == "error"


def test_identity_and_trusted_signers_file(kimen, fifo, key):
    bundle = kimen.root / "b.age"
    bundle.write_bytes(b"not a bundle")
    _refused(kimen, 23, "invalid_identity", "run", "--bundle", str(bundle), "--identity", str(fifo), *NEEDS_A_SECRET)
    _refused(kimen, 25, "invalid_identity", "bundle", "recipient", "--identity", str(fifo))
    _refused(kimen, 23, "invalid_signer", "run", "--bundle", str(bundle), "--identity", str(key),
             "--trusted-signers-file", str(fifo), *NEEDS_A_SECRET)


def test_recipients_file(kimen, fifo, key):
    kimen.init_vault()
    _refused(kimen, 25, "invalid_recipient", "bundle", "seal", "--out", "b.age", "--recipients-file", str(fifo),
             "--identity", str(key), env=kimen.with_pass())


def test_from_file_and_import(kimen, fifo):
    kimen.init_vault()
    _refused(kimen, 11, "value_source_failed", "secret", "set", "a", "--from-file", str(fifo), env=kimen.with_pass())
    _refused(kimen, 11, "value_source_failed", "secret", "import", str(fifo), env=kimen.with_pass())


def test_config_file(kimen, fifo):
    envelope = _refused(kimen, 26, "config_path_unavailable", "secret", "list", env={"KIMEN_CONFIG": str(fifo)})
    assert "FIFO" in envelope["error"]
