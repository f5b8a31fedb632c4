"""The committed version-1 vault (tests/fixtures/vault_v1.db, made by make_v1_vault.py with the
kimen that still wrote schema version 1): it opens and every value reads back."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from kimen import errors, vault
from kimen.sensitive import Sensitive
from tests.fixtures.make_v1_vault import EXPECTED, PASSPHRASE

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "vault_v1.db")


def _user_version(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def v1_path(tmp_path):
    """A private copy of the fixture (0600, as kimen makes vaults)."""
    path = str(tmp_path / "vault.db")
    shutil.copyfile(FIXTURE, path)
    os.chmod(path, 0o600)
    return path


def test_fixture_is_version_1():
    # immutable: the committed file is read as it is, no -wal/-shm created next to it
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro&immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_v1_fixture_reads_every_value(v1_path):
    with vault.Vault.open(v1_path) as v:
        store = v.unlock(Sensitive(PASSPHRASE))
        got = store.read(sorted(EXPECTED))
        assert {n: s.value for n, s in got.items()} == EXPECTED
        assert [i.name for i in store.list()] == sorted(EXPECTED)
        store.verify()


def _sha(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _rows(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (conn.execute("SELECT * FROM vault").fetchall(),
                conn.execute("SELECT * FROM secrets ORDER BY name").fetchall(),
                {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")})
    finally:
        conn.close()


def _backups(path):
    d = os.path.dirname(path)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if ".bak." in f)


def test_key_free_reads_leave_a_v1_vault_unmigrated(v1_path):
    before = _sha(v1_path)
    with vault.Vault.open(v1_path) as v:
        assert v.schema_version == 1 and v.meta().schema_version == 1
        assert [i.name for i in v.list()] == sorted(EXPECTED)
        assert v.history("db.password").entries == []
        store = v.unlock(Sensitive(PASSPHRASE))
        assert store.read(["app.binary"])["app.binary"].value == EXPECTED["app.binary"]
        store.verify()
    assert _user_version(v1_path) == 1 and _sha(v1_path) == before and _backups(v1_path) == []


def test_migration_backs_up_rewrites_no_row_and_keeps_every_value(v1_path):
    from kimen import output

    vault_row, secret_rows, tables = _rows(v1_path)
    assert "secret_history" not in tables
    output.collect_warnings()
    try:
        with vault.Vault.open(v1_path) as v:
            backup = v.migrate()
            assert backup is not None and v.schema_version == 2
        warnings = output.take_warnings()
    finally:
        output.collect_warnings(False)
    assert [w["reason"] for w in warnings] == ["vault_migrated"] and backup in warnings[0]["message"]
    assert _user_version(v1_path) == 2
    after_vault, after_secrets, after_tables = _rows(v1_path)
    assert (after_vault, after_secrets) == (vault_row, secret_rows)  # no row rewritten
    assert after_tables == tables | {"secret_history"}
    assert _backups(v1_path) == [backup] and _user_version(backup) == 1
    assert os.stat(backup).st_mode & 0o777 == 0o600
    with vault.Vault.open(v1_path) as v:
        store = v.unlock(Sensitive(PASSPHRASE))
        assert {n: s.value for n, s in store.read(sorted(EXPECTED)).items()} == EXPECTED
        store.verify()
        assert v.migrate() is None  # already current: no second backup
    assert _backups(v1_path) == [backup]


def test_first_write_migrates_then_keeps_history(v1_path):
    with vault.Vault.open(v1_path) as v:
        store = v.unlock(Sensitive(PASSPHRASE))
        from kimen.store import Change

        store.write([Change.set("db.password", b"third")])
        assert v.schema_version == 2
        store.verify()
        info = store.history("db.password")
        assert [e.revision for e in info.entries] == [2]  # the version-1 value, kept on replace
        assert store.read_revision("db.password", 2).value == EXPECTED["db.password"]
    assert _user_version(v1_path) == 2 and len(_backups(v1_path)) == 1


def test_a_second_opener_finds_the_vault_migrated(v1_path):
    first, second = vault.Vault.open(v1_path), vault.Vault.open(v1_path)
    try:
        assert first.migrate() is not None
        assert second.migrate() is None  # its own snapshot removed again
        assert len(_backups(v1_path)) == 1
        store = second.unlock(Sensitive(PASSPHRASE))
        store.verify()
    finally:
        first.close()
        second.close()


def test_migration_needs_a_writable_vault(v1_path):
    with vault.Vault.open(v1_path) as v:
        v.read_only = True  # as on a read-only mount
        with pytest.raises(errors.VaultReadOnly):
            v.migrate()
    assert _user_version(v1_path) == 1 and _backups(v1_path) == []


def test_a_reader_opened_at_v1_sees_history_written_after_another_migrated(v1_path):
    from kimen.store import Change

    reader = vault.Vault.open(v1_path)  # a long-lived connection: the session daemon's
    try:
        reader_store = reader.unlock(Sensitive(PASSPHRASE))
        with vault.Vault.open(v1_path) as writer:
            writer.unlock(Sensitive(PASSPHRASE)).write([Change.set("db.url", b"changed")])
        reader_store.verify()  # the new history row is counted, not "tampered"
        assert [e.op for e in reader_store.history("db.url").entries] == ["set"]
        assert reader_store.read_revision("db.url", 4).value == EXPECTED["db.url"]
    finally:
        reader.close()
