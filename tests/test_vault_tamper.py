"""Invariant 2 (docs/security.md), byte by byte: any change to the vault file gives the right values or a reasoned
error, never a wrong value or an unexpected exception (a real SQLite file, opened as kimen opens it)."""

from __future__ import annotations

import os

from kimen import errors, vault
from kimen.sensitive import Sensitive
from kimen.store import Change, KdfParams

SMALL = KdfParams(memory_kib=8192, time=1, parallelism=1)
PW = b"correct horse"
VALUES = {"app.db": b"postgres://u:p@h/db", "app.token": b"t0ken-value", "other.key": bytes(range(40))}


def _read_everything(path: str) -> dict[str, bytes]:
    v = vault.Vault.open(path)
    try:
        store = v.unlock(Sensitive(PW))
        try:
            names = [info.name for info in store.list()]
            return {name: got.value for name, got in store.verify_and_read(names).items()}
        finally:
            store.close()
    finally:
        v.close()


def test_every_changed_byte_gives_the_right_values_or_a_reasoned_error(tmp_path):
    path = str(tmp_path / "vault.db")
    store = vault.create_vault(path, Sensitive(PW), SMALL).unlock(Sensitive(PW))
    store.write([Change("set", name, value) for name, value in VALUES.items()])
    store.write([Change("set", "app.token", b"t0ken-value")])  # a second revision
    store.close()
    assert not os.path.exists(path + "-wal") or os.path.getsize(path + "-wal") == 0
    with open(path, "rb") as f:
        pristine = f.read()
    assert _read_everything(path) == VALUES
    offsets = [i for i, b in enumerate(pristine) if b] + list(range(0, len(pristine), 97))
    outcomes = {"same": 0, "reasoned": 0}
    for offset in sorted(set(offsets)):
        changed = bytearray(pristine)
        changed[offset] ^= 0x01 if offset % 2 else 0x80
        with open(path, "wb") as f:
            f.write(changed)
        for extra in ("-wal", "-shm"):
            if os.path.exists(path + extra):
                os.unlink(path + extra)
        try:
            got = _read_everything(path)
        except errors.KimenError as exc:
            assert exc.reason, offset
            outcomes["reasoned"] += 1
            continue
        except Exception as exc:  # any other exception is the failure this test looks for
            raise AssertionError(f"byte {offset}: {type(exc).__name__} instead of a reasoned error") from None
        assert got == VALUES, f"byte {offset} changed a value or a name undetected"
        outcomes["same"] += 1
    assert outcomes["reasoned"] > 100, outcomes  # the flips really hit authenticated data


def test_rows_of_another_type_are_reasoned_errors(tmp_path):
    """A byte change can turn a column into another type (SQLite keeps the value's own type): each
    is a reasoned error on the verifying read, in `secrets` and in `secret_history`. (NULL, which
    the NOT NULL constraints keep SQL from writing, is reached by the byte-by-byte test above.)"""
    import sqlite3

    cases = [
        ("secrets", "nonce", 7), ("secrets", "ciphertext", "text"), ("secrets", "revision", "x"),
        ("secrets", "revision", 1.5), ("secrets", "revision", -1), ("secrets", "name", b"app.db"),
        ("secret_history", "nonce", 7), ("secret_history", "revision", "x"),
        ("secret_history", "revision", 2.5), ("secret_history", "name", "caf\u00e9"),
    ]
    for table, column, bad in cases:
        path = str(tmp_path / f"{table}-{column}-{type(bad).__name__}.db")
        store = vault.create_vault(path, Sensitive(PW), SMALL).unlock(Sensitive(PW))
        store.write([Change("set", name, value) for name, value in VALUES.items()])
        store.write([Change("set", "app.db", b"a newer value")])  # one history row for app.db
        store.close()
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=(SELECT min(rowid) FROM {table})", (bad,))
        conn.close()
        try:
            _read_everything(path)
        except errors.KimenError as exc:
            assert exc.reason in {"vault_tampered", "secret_corrupt", "invalid_vault_file"}, (table, column, exc.reason)
        else:
            raise AssertionError(f"{table}.{column}={bad!r} read without an error")


def test_a_name_of_another_type_fails_the_key_free_listing(tmp_path):
    """`secret list` (and its --json) reads names without the key: a name a byte change made a
    blob or a number is vault_tampered there too, not a traceback or a garbled listing."""
    import sqlite3

    for n, bad in enumerate((b"app.db", b"\xff\xfe")):  # a blob keeps its type in a TEXT column (a number would not)
        path = str(tmp_path / f"blob{n}.db")
        store = vault.create_vault(path, Sensitive(PW), SMALL).unlock(Sensitive(PW))
        store.write([Change("set", name, value) for name, value in VALUES.items()])
        store.close()
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("UPDATE secrets SET name=? WHERE name='app.db'", (bad,))
        conn.close()
        v = vault.Vault.open(path)
        try:
            for listing in (v.list, v.list_names):
                try:
                    listing()
                except errors.VaultTampered:
                    continue
                raise AssertionError(f"{listing.__name__} listed a name of type {type(bad).__name__}")
            with v.json_listing() as built:  # SQLite's text is refused: `secret list --json` lists (and refuses) by row
                assert built is None
        finally:
            v.close()


def test_a_header_column_of_another_type_is_not_a_vault(tmp_path):
    """A byte change can give any column of the `vault` row another type, or make a counter
    negative. Each is invalid_vault_file when the vault opens, never a `bytes(n)` of a number (2**62
    zero bytes was a MemoryError), a blob compared as a number or a negative generation packed
    into a MAC (internal errors before)."""
    import shutil
    import sqlite3

    from kimen.vault.schema import HEADER_COLUMNS

    base = str(tmp_path / "base.db")
    store = vault.create_vault(base, Sensitive(PW), SMALL).unlock(Sensitive(PW))
    store.write([Change("set", name, value) for name, value in VALUES.items()])
    store.close()
    columns = [c.strip() for c in HEADER_COLUMNS.split(",")]
    COUNTERS = {"kdf_version", "key_epoch", "generation", "bundle_high_generation"}
    tried = 0
    for column in columns:
        for bad in (b"\x01\x02", 1.5, "x", 2**62, -1):
            path = str(tmp_path / f"{column}-{type(bad).__name__}-{tried}.db")
            shutil.copy(base, path)
            conn = sqlite3.connect(path)
            with conn:
                conn.execute(f"UPDATE vault SET {column}=?", (bad,))
                stored = conn.execute(f"SELECT {column} FROM vault").fetchone()[0]
            conn.close()
            with sqlite3.connect(base) as pristine:
                kept = pristine.execute(f"SELECT {column} FROM vault").fetchone()[0]
            pristine.close()
            if type(stored) is type(kept) and not (column in COUNTERS and stored < 0):
                continue  # a value of the right type (the KDF parameters' range is checked before argon2 runs)
            tried += 1
            try:
                vault.Vault.open(path).close()
            except errors.InvalidVaultFile:
                continue
            raise AssertionError(f"vault.{column}={bad!r} opened")
    assert tried > 50, tried  # 56: each column with every value its affinity keeps of another type
