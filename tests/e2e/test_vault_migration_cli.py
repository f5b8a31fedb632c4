"""The installed kimen on the committed version-1 vault: reads leave it as it is, the first change
migrates it (backup first, a warning naming it), through the CLI and through a session."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from tests.fixtures.make_v1_vault import EXPECTED, PASSPHRASE
from tests.test_vault_migration import FIXTURE, _user_version

PW = PASSPHRASE.decode()


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backups(path):
    return sorted(p for p in path.parent.iterdir() if ".bak." in p.name)


@pytest.fixture
def v1(kimen):
    kimen.vault.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(FIXTURE, kimen.vault)
    os.chmod(kimen.vault, 0o600)
    return kimen


def test_reads_leave_a_v1_vault_unmigrated(v1):
    before = _sha(v1.vault)
    assert v1.ok("secret", "list").stdout.split() == sorted(EXPECTED)
    info = v1.ok("vault", "info", "--json").json()
    assert info["schema_version"] == 1 and info["secret_count"] == len(EXPECTED)
    assert v1.get("app.binary", PW) == EXPECTED["app.binary"]
    assert v1.ok("vault", "info", "--verify", env=v1.with_pass(PW)).code == 0
    assert _user_version(v1.vault) == 1 and _sha(v1.vault) == before and _backups(v1.vault) == []


def test_first_set_migrates_after_a_backup(v1):
    done = v1.ok("secret", "set", "db.password", "--stdin", input=b"newer", env=v1.with_pass(PW))
    backups = _backups(v1.vault)
    assert len(backups) == 1 and str(backups[0]) in done.err and "migrated to the current schema" in done.err
    listed = v1.ok("vault", "backups", "--json").json()["backups"]
    assert [(b["path"], b["made_by"]) for b in listed] == [(str(backups[0]), "schema migration")]
    assert _user_version(v1.vault) == 2 and _user_version(backups[0]) == 1
    assert v1.ok("vault", "info", "--json").json()["schema_version"] == 2
    for name, value in EXPECTED.items():
        assert v1.get(name, PW) == (b"newer" if name == "db.password" else value)
    v1.ok("vault", "info", "--verify", env=v1.with_pass(PW))
    # the backup is the version-1 vault, and opens with the same passphrase
    assert v1.ok("--vault", str(backups[0]), "secret", "get", "db.password", "--unsafe-stdout",
                 env=v1.with_pass(PW)).out == EXPECTED["db.password"]
    v1.ok("secret", "set", "db.password", "--stdin", input=b"again", env=v1.with_pass(PW))
    assert len(_backups(v1.vault)) == 1  # migrated once


def test_json_reports_the_migration_as_a_warning(v1):
    done = v1.ok("secret", "rm", "app.empty", "--json", env=v1.with_pass(PW))
    warnings = done.json().get("warnings") or []
    assert [w["reason"] for w in warnings] == ["vault_migrated"]


def test_a_session_write_migrates_too(v1):
    v1.ok("session", "start", env=v1.with_pass(PW))
    assert v1.get("db.url", "") == EXPECTED["db.url"]  # served by the session, still version 1
    assert _user_version(v1.vault) == 1
    done = v1.ok("secret", "set", "db.url", "--stdin", "--json", input=b"postgres://new",
                 env={"KIMEN_PASSPHRASE": ""})
    assert _user_version(v1.vault) == 2 and len(_backups(v1.vault)) == 1
    warnings = done.json()["warnings"]  # the daemon migrated it: its answer names the backup
    assert [w["reason"] for w in warnings] == ["vault_migrated"]
    assert str(_backups(v1.vault)[0]) in warnings[0]["message"]
    assert v1.get("db.url", "") == b"postgres://new"


def test_a_v1_vault_on_a_read_only_mount_is_read_as_it_is(kimen, tmp_path):
    from .test_vault_filesystems import _can_mount, in_namespace, read_only_bind, reason

    if not _can_mount():
        pytest.skip("needs unshare -m and mount (root in a private mount namespace) for a read-only mount")
    vault_dir = tmp_path / "ro"
    vault_dir.mkdir(mode=0o700)
    vault = vault_dir / "v.db"
    shutil.copyfile(FIXTURE, vault)
    os.chmod(vault, 0o600)
    before = _sha(vault)
    out = tmp_path / "out"
    out.mkdir()
    v = f"--vault '{vault}'"
    results = in_namespace(kimen, read_only_bind(vault_dir), [
        ("list", f"kimen secret list {v}"),
        ("info", f"kimen vault info --json {v}"),
        ("history", f"kimen secret history db.password --json {v}"),
        ("get", f"KIMEN_PASSPHRASE='{PW}' kimen secret get app.binary --unsafe-stdout {v}"),
        ("set", f"printf x | KIMEN_PASSPHRASE='{PW}' kimen secret set db.url --stdin --json {v}"),
    ], out)
    assert results["list"][0] == 0 and results["list"][2].decode().split() == sorted(EXPECTED)
    assert results["info"][0] == 0 and b'"schema_version":1' in results["info"][2]
    assert results["history"][0] == 0 and b'"entries":[]' in results["history"][2]
    assert results["get"][:1] == (0,) and results["get"][2] == EXPECTED["app.binary"]
    assert (results["set"][0], reason(results["set"][1])) == (24, "vault_read_only")
    assert _sha(vault) == before and sorted(p.name for p in vault_dir.iterdir()) == ["v.db"]
