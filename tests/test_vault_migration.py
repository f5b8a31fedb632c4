"""The committed version-1 vault (tests/fixtures/vault_v1.db, made by make_v1_vault.py with the
kimen that still wrote schema version 1): it opens and every value reads back."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from kimen import vault
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
    assert _user_version(FIXTURE) == 1


def test_v1_fixture_reads_every_value(v1_path):
    with vault.Vault.open(v1_path) as v:
        store = v.unlock(Sensitive(PASSPHRASE))
        got = store.read(sorted(EXPECTED))
        assert {n: s.value for n, s in got.items()} == EXPECTED
        assert [i.name for i in store.list()] == sorted(EXPECTED)
        store.verify()
