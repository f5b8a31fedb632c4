"""The session's key is used only on the vault file it was unwrapped for, as the file is now.

A vault overwritten in place (another file copied over it: same inode) is answered `session_locked`
or with the new file's true value — never the old value, never a false `secret_corrupt` — also
when the daemon's `-wal` holds frames of the old file. `session lock` of a path the daemon does not
hold says so and names the vaults that stay unlocked. Real files, a real daemon.
"""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from kimen.daemon.client import Connection
from tests.conftest import SMALL_KDF

OLD, NEW = b"old-value", b"new-value"


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.token", OLD)
    return kimen.vault


def session_read(kimen, path: Path) -> dict:
    """A `read` straight to the daemon: the raw answer."""
    with Connection(str(kimen.session_dir / "session.sock")) as conn:
        return conn.call_raw("read", vault_path=os.path.realpath(path), names=["app.token"])


def overwrite_in_place(target: Path, source: Path) -> None:
    """Copy `source`'s main file over `target` without replacing it (the -wal and -shm stay)."""
    inode = target.stat().st_ino
    with open(source, "rb") as src, open(target, "r+b") as dst:
        data = src.read()
        dst.seek(0)
        dst.write(data)
        dst.truncate(len(data))
    assert target.stat().st_ino == inode


def checkpoint(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def never_stale(kimen, vault: Path, stale: tuple[bytes, ...], allowed: tuple[bytes, ...] = ()) -> None:
    """Neither the daemon nor a command through it serves a stale value or a false corruption."""
    answer = session_read(kimen, vault)
    if answer.get("ok"):
        assert base64.b64decode(answer["secrets"][0]["value_b64"]) in allowed, answer
    else:
        assert answer["reason"] == "session_locked", answer
    done = kimen.run("secret", "get", "app.token", "--unsafe-stdout")
    assert done.out not in stale and "secret_corrupt" not in done.err and "failed authentication" not in done.err
    if done.code == 0:
        assert done.out in allowed
    else:
        assert done.code == 10, done.err  # the session no longer serves it: no passphrase source here


@pytest.mark.parametrize("wal", [False, True], ids=["checkpointed", "wal-frames-of-the-old-file"])
def test_another_vault_copied_over_the_unlocked_file(kimen, vault, tmp_path, wal):
    other = tmp_path / "other.db"
    kimen.ok("vault", "init", *SMALL_KDF, "--vault", str(other), env=kimen.with_pass())
    kimen.ok("secret", "set", "app.token", "--vault", str(other), "--stdin", input=NEW, env=kimen.with_pass())
    kimen.ok("session", "start", env=kimen.with_pass())
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout").out == OLD  # cached by the daemon
    stale = [OLD]
    if wal:  # writes through the session: the daemon's -wal now holds pages of the old file
        for i in range(3):
            value = f"written-{i}".encode()
            kimen.ok("secret", "set", "app.token", "--stdin", input=value)
            stale.append(value)
        assert Path(f"{vault}-wal").stat().st_size > 0
    overwrite_in_place(vault, other)
    never_stale(kimen, vault, tuple(stale))
    assert session_read(kimen, vault)["reason"] == "session_locked"
    assert kimen.ok("session", "status", "--json").json()["state"] == "locked"


def test_an_older_copy_of_the_same_vault_serves_the_files_true_value(kimen, vault, tmp_path):
    older = tmp_path / "older.db"
    shutil.copyfile(vault, older)  # the vault with app.token = OLD (fully checkpointed: no writer runs)
    kimen.ok("session", "start", env=kimen.with_pass())
    kimen.ok("secret", "set", "app.token", "--stdin", input=b"newer")
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout").out == b"newer"
    checkpoint(vault)  # the main file now says "newer"...
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout").out == b"newer"  # ...and the daemon's cache
    overwrite_in_place(vault, older)
    never_stale(kimen, vault, (b"newer",), allowed=(OLD,))


def test_lock_of_a_path_the_daemon_does_not_hold_says_so(kimen, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    selected = {"KIMEN_VAULT": str(link / "vault.db")}
    kimen.ok("vault", "init", *SMALL_KDF, env={**kimen.with_pass(), **selected})
    kimen.ok("secret", "set", "app.token", "--stdin", input=OLD, env={**kimen.with_pass(), **selected})
    kimen.ok("session", "start", env={**kimen.with_pass(), **selected})
    held = str(real / "vault.db")
    link.unlink()  # the selected path no longer resolves to the unlocked vault
    link.mkdir()
    done = kimen.ok("session", "lock", env=selected)
    assert done.stdout.splitlines()[0] == f"session: nothing locked: {link / 'vault.db'} is not unlocked in the session"
    assert done.stdout.splitlines()[1].startswith(f"still unlocked: vault={held} idle_expires_at=")
    doc = kimen.ok("session", "lock", "--json", env=selected).json()
    assert doc["held"] is False and doc["state"] == "locked"
    assert [(v["vault_path"], v["state"]) for v in doc["vaults"]] == [(held, "unlocked")]
    status = kimen.ok("session", "status", env=selected).stdout.splitlines()
    assert status[0].startswith("session: locked (pid=") and status[1].startswith(f"also unlocked: vault={held} ")
    # the vault really is still unlocked, and a lock that names it locks it
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout", env={"KIMEN_VAULT": held}).out == OLD
    done = kimen.ok("session", "lock", "--json", env={"KIMEN_VAULT": held}).json()
    assert done["held"] is True and done["vaults"] == []
    assert kimen.ok("session", "lock", "--all").stdout == "session locked (no vault was unlocked)\n"
