"""The local vault: schema, AAD binding, the integrity accumulator, KDF limits, rekey."""

from __future__ import annotations

import os
import sqlite3

import pytest

from kimen import errors, vault
from kimen.sensitive import Sensitive
from kimen.store import Change, KdfParams
from tests.store_contract import StoreContract

SMALL = KdfParams(memory_kib=8192, time=1, parallelism=1)
PW = b"correct horse"


@pytest.fixture
def vault_path(tmp_path):
    return str(tmp_path / "vdir" / "vault.db")


@pytest.fixture
def store(vault_path):
    v = vault.create_vault(vault_path, Sensitive(PW), SMALL)
    s = v.unlock(Sensitive(PW))
    yield s
    s.close()


class TestLocalStoreContract(StoreContract):
    pass


def _db(path):
    return sqlite3.connect(path, isolation_level=None)


def test_schema_pragmas_and_permissions(store, vault_path):
    conn = _db(vault_path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x4B4D4E31
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"vault", "secrets", "sync_state", "sync_baseline", "secret_history"}
    row = conn.execute("SELECT format, kdf_alg, kdf_version, length(vault_id), length(kdf_salt), "
                       "length(wrap_nonce), length(wrapped_key), length(wrap_id), key_epoch FROM vault").fetchone()
    assert row == ("kimen-sqlite-vault/1", "argon2id", 19, 16, 16, 24, 48, 16, 1)
    assert os.stat(vault_path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(vault_path)).st_mode & 0o777 == 0o700


def _tamper(path, sql, *params):
    conn = _db(path)
    conn.execute(sql, params)
    conn.close()


def test_row_moved_to_another_name_fails_authentication(store, vault_path):
    store.write([Change.set("a", b"alpha"), Change.set("b", b"beta")])
    conn = _db(vault_path)
    ra = conn.execute("SELECT nonce, ciphertext FROM secrets WHERE name='a'").fetchone()
    rb = conn.execute("SELECT nonce, ciphertext FROM secrets WHERE name='b'").fetchone()
    conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name='a'", rb)
    conn.execute("UPDATE secrets SET nonce=?, ciphertext=? WHERE name='b'", ra)
    conn.close()
    with pytest.raises(errors.SecretCorrupt) as info:
        store.read(["a"])
    assert info.value.fields["secret"] == "a"


def test_revision_is_bound(store, vault_path):
    store.write([Change.set("a", b"alpha")])
    store.write([Change.set("other", b"x")])
    _tamper(vault_path, "UPDATE secrets SET revision=revision+1 WHERE name='a'")
    with pytest.raises(errors.SecretCorrupt):
        store.read(["a"])


def test_flipped_byte_names_the_secret_and_others_still_read(store, vault_path):
    store.write([Change.set("bad", b"value-one"), Change.set("good", b"value-two")])
    conn = _db(vault_path)
    (first,) = conn.execute("SELECT substr(ciphertext, 1, 1) FROM secrets WHERE name='bad'").fetchone()
    conn.close()
    flipped = bytes([first[0] ^ 0x01])  # always a different byte (X'00' was a no-op 1 run in 256)
    _tamper(vault_path, "UPDATE secrets SET ciphertext = ? || substr(ciphertext, 2) WHERE name='bad'", flipped)
    with pytest.raises(errors.SecretCorrupt):
        store.read(["bad"])
    assert store.read(["good"])["good"].value == b"value-two"
    with pytest.raises(errors.SecretCorrupt):
        store.verify()


@pytest.mark.parametrize("attack", ["delete", "rollback", "resurrect"])
def test_integrity_check_detects_row_set_changes(store, vault_path, attack):
    store.write([Change.set("a", b"1"), Change.set("b", b"2")])
    conn = _db(vault_path)
    old = conn.execute("SELECT * FROM secrets WHERE name='a'").fetchone()
    conn.close()
    store.write([Change.set("a", b"changed")])
    if attack == "delete":
        _tamper(vault_path, "DELETE FROM secrets WHERE name='b'")
    elif attack == "rollback":
        _tamper(vault_path, "DELETE FROM secrets WHERE name='a'")
        _tamper(vault_path, "INSERT INTO secrets VALUES (?,?,?,?,?,?,?)", *old)
    else:  # a row removed through kimen, put back from an old copy: it authenticates on its own
        store.write([Change.rm("a")])
        _tamper(vault_path, "INSERT INTO secrets VALUES (?,?,?,?,?,?,?)", *old)
    with pytest.raises(errors.VaultTampered):
        store.verify()


def test_rows_mac_is_incremental_and_matches_full_recompute(store):
    for i in range(20):
        store.write([Change.set(f"k{i % 7}", os.urandom(i)), Change.set(f"n{i}", b"v")])
        if i % 3 == 0:
            store.write([Change.rm(f"n{i}")])
    store.verify()  # recomputes from scratch and compares with the incremental value


@pytest.mark.parametrize("params,problem", [
    (KdfParams(8191, 1, 1), "memory below"), (KdfParams(8192, 0, 1), "time below"),
    (KdfParams(8192, 1, 0), "parallelism below"), (KdfParams(2 * 1024 * 1024 + 1, 1, 1), "memory above"),
    (KdfParams(8192, 11, 1), "time above"), (KdfParams(8192, 1, 17), "parallelism above"),
    (KdfParams(1024 * 1024, 5, 1), "memory x time"),
])
def test_kdf_limits(params, problem):
    assert problem in vault.kdf_problem(params)


def test_defaults_and_extremes_are_accepted():
    assert vault.kdf_problem(vault.KDF_DEFAULT) is None
    assert vault.kdf_problem(KdfParams(2 * 1024 * 1024, 2, 16)) is None


def test_create_refuses_bad_params_and_leaves_nothing(tmp_path):
    path = str(tmp_path / "new" / "v.db")
    with pytest.raises(errors.InvalidKdfParams):
        vault.create_vault(path, Sensitive(PW), KdfParams(1024, 1, 1))
    assert not os.path.exists(path)


def test_stored_params_out_of_range_refused_before_kdf(store, vault_path):
    _tamper(vault_path, "UPDATE vault SET kdf_memory_kib = 4194304, kdf_time = 10")
    v = vault.Vault.open(vault_path)
    with pytest.raises(errors.KdfParamsRejected):
        v.unwrap_key(Sensitive(PW))  # would need 4 GiB x 10 passes if the check came after argon2


def test_edited_params_within_range_fail_as_wrong_passphrase(store, vault_path):
    _tamper(vault_path, "UPDATE vault SET kdf_time = 2")
    with pytest.raises(errors.WrongPassphrase):
        vault.Vault.open(vault_path).unwrap_key(Sensitive(PW))


def test_not_a_vault(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(errors.InvalidVaultFile):
        vault.Vault.open(str(junk))
    other = tmp_path / "other.db"
    _db(str(other)).execute("CREATE TABLE t (x)")
    with pytest.raises(errors.InvalidVaultFile):
        vault.Vault.open(str(other))
    with pytest.raises(errors.VaultNotFound):
        vault.Vault.open(str(tmp_path / "absent.db"))


def test_newer_schema_is_unsupported(store, vault_path):
    _tamper(vault_path, "PRAGMA user_version = 3")
    with pytest.raises(errors.VaultUnsupported):
        vault.Vault.open(vault_path)


def test_rekey_keeps_values_and_rotation_replaces_key(store, vault_path):
    store.write([Change.set("a", b"alpha"), Change.set("b", b"beta")])
    v = vault.Vault.open(vault_path)
    old = v.unlock(Sensitive(PW))
    epoch = v.header().key_epoch
    revisions = {n: s.revision for n, s in old.read(["a", "b"]).items()}
    v.rekey(old.data_key, old.wrap_id, Sensitive(b"new passphrase"), SMALL, rotate_data_key=True)
    with pytest.raises(errors.WrongPassphrase):
        v.unwrap_key(Sensitive(PW))
    new = v.unlock(Sensitive(b"new passphrase"))
    got = new.read(["a", "b"])
    assert {n: s.value for n, s in got.items()} == {"a": b"alpha", "b": b"beta"}
    assert {n: s.revision for n, s in got.items()} == revisions
    assert v.header().key_epoch == epoch + 1
    new.verify()
    with pytest.raises(errors.VaultFailed):  # a key unwrapped before the rotation is stale
        old.read(["a"])


def test_rotation_carries_the_sync_tables_to_the_new_key(store, vault_path):
    """A verified remote's baseline digests are recomputed from the value each was taken from (the
    current value, or a kept older one), `last_local_rev` follows the re-encrypted rows and the
    state's MAC verifies under the new key; a digest whose value is gone keeps its revision."""
    from kimen.sync.base import Scope, SyncState
    from kimen.sync.merge import UNTRANSLATED, Keyed, key_digest
    from kimen.vault.syncstate import VaultSyncState, read_local_revision, read_state

    store.write([Change.set("same", b"s"), Change.set("changed", b"old")])
    store.write([Change.set("changed", b"c"), Change.set("lost", b"x")])  # "old" is kept in history
    sync = VaultSyncState(store)
    baseline = {"same": Keyed(key_digest(sync.k_sync, "same", b"s"), 2),
                "changed": Keyed(key_digest(sync.k_sync, "changed", b"old"), 2),
                "lost": Keyed(key_digest(sync.k_sync, "lost", b"never stored"), 3)}
    state = SyncState("team", "r" * 32, "e" * 64, 3, "h", "rev", 1, 1, "rh", "fp", "ana", "admin", ("**",), 0,
                      None, "")
    sync.commit("team", [], state, baseline, if_generation=store.vault.header().generation, scope=Scope(["**"]),
                keep_local_rev=True, backup_path=None)
    before = read_state(store.vault, "team")
    v = vault.Vault.open(vault_path)
    v.rekey(v.unwrap_key(Sensitive(PW)), v.header().wrap_id, Sensitive(PW), SMALL, rotate_data_key=True)
    new = v.unlock(Sensitive(PW))
    loaded, rows, _generation = VaultSyncState(new).load("team")  # the MAC verifies
    k_new = VaultSyncState(new).k_sync
    assert loaded is not None and rows is not None and k_new != sync.k_sync
    assert rows["same"] == Keyed(key_digest(k_new, "same", b"s"), 2)
    assert rows["changed"] == Keyed(key_digest(k_new, "changed", b"old"), 2)
    assert rows["lost"] == Keyed(UNTRANSLATED, 3)
    assert before is not None and loaded.recorded_rev != before.recorded_rev
    assert loaded.recorded_rev == read_local_revision(v, Scope(["**"]))
    # the rows stamp followed the re-encrypted rows too: status takes the recorded revision as it is
    assert loaded.recorded_stamp is not None and loaded.recorded_stamp != before.recorded_stamp
    assert read_local_revision(v, Scope(["**"]), loaded) == loaded.recorded_rev
    assert loaded.head_rev == before.head_rev and loaded.updated_at == before.updated_at


def test_rotation_leaves_a_tampered_sync_state_tampered(store, vault_path):
    from kimen.sync.base import Scope, SyncState
    from kimen.vault.syncstate import VaultSyncState

    store.write([Change.set("a", b"1")])
    state = SyncState("team", "r" * 32, "e" * 64, 3, "h", "rev", 1, 1, "rh", "fp", "ana", "admin", ("**",), 0,
                      None, "")
    VaultSyncState(store).commit("team", [], state, {}, if_generation=store.vault.header().generation,
                                 scope=Scope(["**"]), keep_local_rev=True, backup_path=None)
    _db(vault_path).execute("UPDATE sync_state SET head_seq = 4")
    v = vault.Vault.open(vault_path)
    v.rekey(v.unwrap_key(Sensitive(PW)), v.header().wrap_id, Sensitive(PW), SMALL, rotate_data_key=True)
    with pytest.raises(errors.SyncBaselineTampered):
        VaultSyncState(v.unlock(Sensitive(PW))).load("team")


def test_snapshot_is_private_and_opens_with_same_passphrase(store, vault_path, tmp_path):
    store.write([Change.set("a", b"alpha")])
    dest = str(tmp_path / "backup.db")
    store.vault.snapshot(dest)
    assert os.stat(dest).st_mode & 0o777 == 0o600
    assert vault.Vault.open(dest).unlock(Sensitive(PW)).read(["a"])["a"].value == b"alpha"


@pytest.mark.parametrize("prefix", [None, "", "a", "a.", "a.b", "b", "\u00e9", "\udcff", "zz"])
def test_list_names_matches_list_and_any_prefix_is_safe(store, prefix):
    store.write([Change.set(n, b"v") for n in ("a", "a.b", "a.b.c", "a-b", "a_b", "ab", "b", "B")])
    expected = sorted(n for n in ("a", "a.b", "a.b.c", "a-b", "a_b", "ab", "b", "B") if n.startswith(prefix or ""))
    assert [i.name for i in store.list(prefix)] == expected
    assert store.vault.list_names(prefix) == expected


# -- per-secret history: integrity and rotation --


def _with_history(store):
    first = store.write([Change.set("h.a", b"one")]).generation
    store.write([Change.set("h.a", b"two")])
    return first


def test_dropping_a_history_row_is_tampering(store, vault_path):
    _with_history(store)
    _tamper(vault_path, "DELETE FROM secret_history")
    with pytest.raises(errors.VaultTampered):
        store.verify()


def test_moving_a_history_row_into_secrets_is_tampering(store, vault_path):
    first = _with_history(store)
    _tamper(vault_path, "DELETE FROM secrets WHERE name='h.a'")
    _tamper(vault_path, "INSERT INTO secrets SELECT name, revision, created_at, created_at, size, nonce, ciphertext "
                        "FROM secret_history")
    _tamper(vault_path, "DELETE FROM secret_history")
    assert store.read(["h.a"])["h.a"].revision == first  # the row itself opens: same name and revision
    with pytest.raises(errors.VaultTampered):
        store.verify()


def test_a_history_row_of_another_name_does_not_open(store, vault_path):
    first = _with_history(store)
    _tamper(vault_path, "UPDATE secret_history SET name='h.b'")
    with pytest.raises(errors.SecretCorrupt):
        store.read_revision("h.b", first)


def test_rotation_reencrypts_history(store, vault_path):
    first = _with_history(store)
    conn = _db(vault_path)
    before = conn.execute("SELECT ciphertext FROM secret_history").fetchone()[0]
    conn.close()
    v = vault.Vault.open(vault_path)
    v.rekey(v.unwrap_key(Sensitive(PW)), v.header().wrap_id, Sensitive(PW), SMALL, rotate_data_key=True)
    fresh = vault.Vault.open(vault_path).unlock(Sensitive(PW))
    fresh.verify()
    assert fresh.read_revision("h.a", first).value == b"one"
    conn = _db(vault_path)
    assert conn.execute("SELECT ciphertext FROM secret_history").fetchone()[0] != before
    conn.close()
    fresh.close()
    v.close()


def test_keep_zero_keeps_nothing(store):
    store.history_keep = 0
    _with_history(store)
    assert store.history("h.a").entries == []
    store.verify()


def test_purge_leaves_no_old_ciphertext_in_the_file_or_wal(store, vault_path):
    _with_history(store)
    conn = _db(vault_path)
    old = bytes(conn.execute("SELECT ciphertext FROM secret_history").fetchone()[0])
    conn.close()
    assert store.purge_history(["h.a"]) == 1
    for suffix in ("", "-wal"):
        if os.path.exists(vault_path + suffix):
            with open(vault_path + suffix, "rb") as f:
                assert old not in f.read(), suffix
    store.verify()


def test_history_rows_of_another_type_are_tampering(store, vault_path):
    _with_history(store)
    _tamper(vault_path, "UPDATE secret_history SET created_at=x'ff', size='big'")
    with pytest.raises(errors.VaultTampered):
        store.history("h.a")
