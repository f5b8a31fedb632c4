"""The local revision `sync status` compares with `last_local_rev`, and the rows stamp beside it.

A sync commit records the local revision with the rows stamp of the vault it was computed over
(`last_local_rev` = "REV:STAMP"). `read_local_revision(vault, scope, state)` takes the recorded
revision as it is while the stamp is still the vault's, and recomputes it from every row otherwise:
after a kimen write, and after a write outside kimen (SQLite itself: a row deleted, added, copied
over another, renamed, its revision changed). A row written before the stamp existed (the column
holds the revision alone) is recomputed every time, and still compares equal."""

from __future__ import annotations

import sqlite3

import pytest

from kimen import errors, vault
from kimen.sensitive import Sensitive
from kimen.store import Change, KdfParams
from kimen.sync.base import Scope, SyncState
from kimen.vault.syncrows import local_revision, revision_rows, rows_stamp
from kimen.vault.syncstate import VaultSyncState, read_local_revision, read_state

SMALL = KdfParams(memory_kib=8192, time=1, parallelism=1)
PW = b"correct horse"
ALL = Scope(["**"])


@pytest.fixture
def synced(tmp_path):
    """An unlocked vault of three secrets whose remote `team` was committed with no local change."""
    path = str(tmp_path / "vault.db")
    store = vault.create_vault(path, Sensitive(PW), SMALL).unlock(Sensitive(PW))
    store.write([Change.set("app.a", b"1"), Change.set("app.b", b"2"), Change.set("app.c", b"3")])
    state = SyncState("team", "r" * 32, "e" * 64, 3, "h", "rev", 1, 1, "rh", "fp", "ana", "admin", ("**",), 0,
                      None, "")
    VaultSyncState(store).commit("team", [], state, {}, if_generation=store.vault.header().generation, scope=ALL,
                                 keep_local_rev=True, backup_path=None)
    yield store, path
    store.close()


def _full(store) -> str:
    with store.vault.reading() as conn:
        return local_revision(revision_rows(conn, ALL))


def _state(store) -> SyncState:
    state = read_state(store.vault, "team")
    assert state is not None
    return state


def test_a_commit_records_the_revision_with_the_rows_stamp(synced):
    store, _path = synced
    state = _state(store)
    with store.vault.reading() as conn:
        stamp = rows_stamp(conn)
    assert state.last_local_rev == f"{_full(store)}:{stamp}"
    assert (state.recorded_rev, state.recorded_stamp) == (_full(store), stamp)
    assert read_local_revision(store.vault, ALL, state) == state.recorded_rev


def test_an_unchanged_stamp_takes_the_recorded_revision_without_reading_the_rows(synced):
    """What makes the shortcut observable: a recorded revision that is not the rows' is believed
    while the stamp matches (only kimen's commit writes it, under the state's MAC)."""
    store, path = synced
    stamp = _state(store).recorded_stamp
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sync_state SET last_local_rev=?", (f"{'0' * 64}:{stamp}",))
    conn.close()
    assert read_local_revision(store.vault, ALL, _state(store)) == "0" * 64
    assert read_local_revision(store.vault, ALL) == _full(store)  # without the state: always from the rows
    assert read_local_revision(store.vault, Scope(["app.*"]), _state(store)) == local_revision(
        revision_rows(sqlite3.connect(path), Scope(["app.*"])))  # another scope: from the rows


def test_a_kimen_write_moves_the_stamp(synced):
    store, _path = synced
    before = _state(store)
    changes = (Change.set("app.a", b"1"), Change.set("app.d", b"4"), Change.rm("app.d"), Change.mv("app.b", "app.e"))
    for change in changes:
        store.write([change])
        now = read_local_revision(store.vault, ALL, before)
        assert now == _full(store) and now != before.recorded_rev, change


@pytest.mark.parametrize("sql", [
    "DELETE FROM secrets WHERE name='app.b'",
    "INSERT INTO secrets SELECT 'app.z', revision, created_at, updated_at, size, nonce, ciphertext "
    "FROM secrets WHERE name='app.a'",
    "UPDATE secrets SET nonce=(SELECT nonce FROM secrets WHERE name='app.a'), "
    "ciphertext=(SELECT ciphertext FROM secrets WHERE name='app.a') WHERE name='app.c'",
    "UPDATE secrets SET name='app.y' WHERE name='app.c'",
    "UPDATE secrets SET revision=revision + 7 WHERE name='app.c'",
    "UPDATE secrets SET nonce=zeroblob(24) WHERE name='app.c'",
    "UPDATE secrets SET nonce=substr(nonce, 1, 12) WHERE name='app.c'",
    "DELETE FROM secrets",
], ids=["delete", "insert", "copy", "rename", "revision", "nonce", "short-nonce", "empty"])
def test_a_write_outside_kimen_is_seen(synced, sql):
    """SQLite itself, with no generation, MAC or sync table touched: the stamp moves all the same."""
    store, path = synced
    before = _state(store)
    with sqlite3.connect(path) as conn:
        conn.execute(sql)
    conn.close()
    now = read_local_revision(store.vault, ALL, _state(store))
    assert now == _full(store) and now != before.recorded_rev


def test_a_ciphertext_edited_in_place_is_not_in_the_stamp_but_a_merge_recomputes(synced):
    """The documented limit: the same nonce with other ciphertext bytes keeps the stamp (status
    believes the recorded revision), but no key opens that row any more, and what decides a merge
    (`unchanged`) always reads every row."""
    store, path = synced
    before = _state(store)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE secrets SET ciphertext=zeroblob(length(ciphertext)) WHERE name='app.c'")
    conn.close()
    assert read_local_revision(store.vault, ALL, _state(store)) == before.recorded_rev
    assert _full(store) != before.recorded_rev
    assert not VaultSyncState(store).unchanged(_state(store), ALL)


def test_a_row_without_a_stamp_is_recomputed_and_still_equal(synced):
    """A vault whose last sync was committed by a kimen before the stamp: the column holds the
    revision alone."""
    store, path = synced
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sync_state SET last_local_rev=?", (_full(store),))
    conn.close()
    state = _state(store)
    assert state.recorded_stamp is None and state.recorded_rev == _full(store)
    assert read_local_revision(store.vault, ALL, state) == state.recorded_rev
    assert VaultSyncState(store).unchanged(state, ALL)


@pytest.mark.parametrize("scope", ["[" * 100_000 + "]" * 100_000, "not json", '{"a": 1}', "[1]"])
def test_a_sync_state_row_with_a_hostile_scope_is_tampered_never_a_crash(scope):
    """`sync status` reads the state without the key: a scope edited outside kimen (not JSON, not
    a list of globs, nested deeper than a parser recurses) is `sync_baseline_tampered`."""
    from kimen.vault.syncrows import row_state

    row = ["team", "0" * 32, "e" * 64, 1, "a" * 64, "b" * 64, 1, 0, "c" * 64, "d" * 64, "ana", "admin", scope, 0,
           "", "2026-01-01T00:00:00Z"]
    with pytest.raises(errors.SyncBaselineTampered):
        row_state(row)
    row[12] = '["**"]'
    assert row_state(row).scope == ("**",)
