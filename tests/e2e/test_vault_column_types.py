"""A byte change can give any column of the vault file another SQLite type: a blob where a number
was, a real, a text, a huge or negative number. Through the installed `kimen`, with and without a
session, no command then ends in an internal error (exit 1) or a traceback: each gives a reasoned
error (`invalid_vault_file` for the header row, `vault_tampered` or `secret_corrupt` for a row,
`sync_baseline_tampered` for the sync tables) or works as before (docs/vault.md, "The file").
Before this test, 259 such runs were internal errors from the header row and 16 from a baseline's
`seq`."""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from tests.conftest import PASSPHRASE

pytestmark = pytest.mark.slow

ODD = [b"\x01\x02", 1.5, "x", -1, 2**62]
COMMANDS = [
    ("secret", "list"), ("secret", "list", "--long"), ("secret", "list", "--json"), ("vault", "info"),
    ("vault", "info", "--verify"), ("secret", "get", "app.b", "--unsafe-stdout"), ("secret", "history", "app.b"),
    ("secret", "set", "app.d", "--stdin"), ("secret", "mv", "app.a", "app.z"), ("run", "--profile", "p", "--", "true"),
    ("status",), ("doctor",),
]
THROUGH_SESSION = [("run", "--profile", "p", "--", "true"), ("secret", "get", "app.b", "--unsafe-stdout")]


def _restore(pristine, path):
    """The untouched file back, without the WAL and index of the runs before (a stale WAL would be
    replayed onto it)."""
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    shutil.copy(pristine, path)


def _columns(path, table):
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


@pytest.mark.parametrize("table", ["vault", "secrets", "secret_history"])
def test_no_column_type_makes_an_internal_error(kimen, table):
    base = kimen.init_vault()
    for name in ("app.a", "app.b", "app.c"):
        kimen.set(name, f"v-{name}")
    kimen.set("app.b", "v2")  # a history row
    kimen.write_profile("p", "env A=app.a\nenv B=app.b\n")
    pristine = kimen.root / "pristine.db"
    shutil.copy(base, pristine)
    with_pass = kimen.with_pass(PASSPHRASE)
    failures = []
    for column in _columns(pristine, table):
        for bad in ODD:
            _restore(pristine, base)
            conn = sqlite3.connect(base)
            with conn:
                conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=(SELECT min(rowid) FROM {table})", (bad,))
            conn.close()
            runs = [(args, with_pass) for args in COMMANDS]
            if kimen.run("session", "start", env=with_pass).code == 0:
                runs += [(args, {}) for args in THROUGH_SESSION]
            for args, env in runs:
                done = kimen.run(*args, env=env, input=b"new")
                if done.code == 1 or "internal error" in done.err:
                    failures.append(f"{table}.{column}={bad!r}: kimen {' '.join(args)}: {done.err.strip()[-120:]}")
            kimen.run("session", "stop")
    assert not failures, "\n".join(failures)


SYNC_COMMANDS = [("sync", "status"), ("sync", "changes"), ("sync", "preflight"), ("sync", "pull"), ("sync", "push"),
                 ("sync", "members"), ("doctor",)]


@pytest.mark.parametrize("table", ["sync_state", "sync_baseline"])
def test_no_sync_column_type_makes_an_internal_error(kimen, table):
    """The same for the sync tables of a vault synced with an fs remote (`sync_baseline_tampered`
    or the usual result): a baseline `seq` of another type or negative was an internal error
    (`int(b'..')`, a negative `struct.pack`) on pull, push, changes and preflight."""
    base = kimen.init_vault()
    identity, remote = kimen.root / "id.txt", kimen.root / "remote"
    with_pass = kimen.with_pass(PASSPHRASE)
    kimen.ok("bundle", "keygen", "--out", str(identity))
    remote.mkdir()
    for name in ("app.a", "app.b"):
        kimen.set(name, f"v-{name}")
    kimen.ok("sync", "init", "team", "--path", str(remote), "--identity", str(identity), "--member", "ana",
             env=with_pass)
    kimen.ok("sync", "push", env=with_pass)
    kimen.set("app.c", "c")  # a local change to push
    pristine, pristine_remote = kimen.root / "pristine.db", kimen.root / "pristine-remote"
    shutil.copy(base, pristine)
    shutil.copytree(remote, pristine_remote)
    failures = []
    for column in _columns(pristine, table):
        for bad in ODD:
            for args in SYNC_COMMANDS:  # each from the untouched vault and remote: pull and push change both
                _restore(pristine, base)
                shutil.rmtree(remote)
                shutil.copytree(pristine_remote, remote)
                conn = sqlite3.connect(base)
                with conn:
                    conn.execute(f"UPDATE {table} SET {column}=? WHERE rowid=(SELECT min(rowid) FROM {table})", (bad,))
                conn.close()
                done = kimen.run(*args, env=with_pass)
                if done.code == 1 or "internal error" in done.err:
                    failures.append(f"{table}.{column}={bad!r}: kimen {' '.join(args)}: {done.err.strip()[-120:]}")
    assert not failures, "\n".join(failures)
