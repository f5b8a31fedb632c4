"""`vault backups` (listing, what made each, before a rekey, pruning) and `vault restore --backup`
through the installed kimen, against real backups made by bulk commands."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from tests.conftest import SMALL_KDF

NEW = "a brand new passphrase"


def _backups(kimen) -> list[dict]:
    return kimen.ok("vault", "backups", "--json").json()["backups"]


def test_backups_list_what_made_them_and_prune(kimen):
    kimen.init_vault()
    env_file = kimen.cwd / "a.env"
    env_file.write_text("A=1\nB=2\n")
    kimen.ok("secret", "import", "a.env", env=kimen.with_pass())
    assert _backups(kimen) == []
    env_file.write_text("A=10\nB=20\n")
    kimen.ok("secret", "import", "a.env", "--overwrite", env=kimen.with_pass())
    kimen.ok("secret", "mv", "--prefix", "A", "C", env=kimen.with_pass())
    done = kimen.ok("vault", "rekey", env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": NEW})
    assert "vault backups --prune" in done.stdout
    backups = _backups(kimen)
    assert [b["made_by"] for b in backups] == ["secret import", "secret mv", "vault rekey"]
    assert all(b["before_rekey"] is True for b in backups)
    assert all(set(b) == {"path", "created_at", "size", "made_by", "before_rekey"} for b in backups)
    assert all(stat.S_IMODE(os.stat(b["path"]).st_mode) == 0o600 and b["size"] > 0 for b in backups)
    kimen.fail(24, "prune_confirmation_required", "vault", "backups", "--prune", "--keep", "1")
    assert len(_backups(kimen)) == 3
    doc = kimen.ok("vault", "backups", "--prune", "--keep", "1", "--yes", "--json").json()
    assert doc["removed"] == [b["path"] for b in backups[:2]]
    assert [b["path"] for b in doc["backups"]] == [backups[2]["path"]]
    assert not any(os.path.exists(b["path"]) for b in backups[:2])
    kimen.fail(2, "usage_error", "vault", "backups", "--keep", "1")


def test_restore_snapshots_the_current_vault_first(kimen):
    kimen.init_vault()
    kimen.set("app.x", "before")
    (kimen.cwd / "a.env").write_text("Y=1\n")
    kimen.ok("secret", "import", "a.env", "--prefix", "app.", env=kimen.with_pass())
    kimen.ok("secret", "rm", "--prefix", "app.", "--yes", env=kimen.with_pass())
    backup = _backups(kimen)[0]["path"]
    kimen.set("app.z", "after")
    kimen.fail(15, "wrong_passphrase", "vault", "restore", "--backup", backup, env={"KIMEN_PASSPHRASE": "wrong"})
    assert kimen.ok("secret", "list").stdout.split() == ["app.z"]
    doc = kimen.ok("vault", "restore", "--backup", backup, "--json", env=kimen.with_pass()).json()
    assert doc["action"] == "vault_restore" and os.path.exists(doc["backup_path"])
    assert kimen.ok("secret", "list").stdout.split() == ["app.Y", "app.x"]
    assert kimen.get("app.x") == b"before"
    kimen.ok("vault", "info", "--verify", env=kimen.with_pass())
    # the snapshot taken first brings the other state back
    kimen.ok("vault", "restore", "--backup", doc["backup_path"], "--no-backup", env=kimen.with_pass())
    assert kimen.ok("secret", "list").stdout.split() == ["app.z"]
    (kimen.cwd / "junk").write_bytes(b"not a vault at all" * 100)
    kimen.fail(24, "invalid_vault_file", "vault", "restore", "--backup", "junk")
    missing = kimen.fail(14, "vault_not_found", "vault", "restore", "--backup", "missing.db").err_json()
    assert "kimen vault backups" in missing["hint"] and "vault init" not in missing["hint"]
    no_pass = kimen.fail(10, "missing_passphrase", "vault", "restore", "--backup", backup,
                         unset=("KIMEN_PASSPHRASE",)).err_json()
    assert "session" not in no_pass["hint"]  # a session never restores
    assert kimen.ok("secret", "list").stdout.split() == ["app.z"]


def test_made_by_names_the_command_not_a_global_flags_value(kimen):
    """`--vault PATH` and `--passphrase-cmd CMD` before the command word: their values are not
    command words (a passphrase command line must not land in `<vault>.backups`)."""
    kimen.init_vault()
    (kimen.cwd / "a.env").write_text("A=1\n")
    (kimen.cwd / "pass.sh").write_text(f"#!/bin/sh\necho '{kimen.with_pass()['KIMEN_PASSPHRASE']}'\n")
    os.chmod(kimen.cwd / "pass.sh", 0o700)
    kimen.ok("--vault", str(kimen.vault), "--passphrase-cmd", "./pass.sh", "secret", "import", "a.env")
    kimen.ok("--vault", str(kimen.vault), "--passphrase-cmd", "./pass.sh", "secret", "import", "a.env",
             "--overwrite")
    assert [b["made_by"] for b in _backups(kimen)] == ["secret import"]
    assert "pass.sh" not in (kimen.vault.parent / (kimen.vault.name + ".backups")).read_text()


def _generation(path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT generation FROM vault").fetchone()[0]


def test_a_failed_restore_keeps_the_snapshot_when_the_vault_differs_at_the_same_generation(kimen):
    """A restored backup can carry the generation the vault has now: a Ctrl-C that lands after the
    copy must not read "unchanged" off the generation and remove the only copy of what was there."""
    from kimen.cli.backup import backed_up
    from kimen.vault import Vault

    kimen.init_vault()
    (kimen.cwd / "a.env").write_text("A=1\n")
    kimen.ok("secret", "import", "a.env", env=kimen.with_pass())
    (kimen.cwd / "a.env").write_text("A=2\n")
    kimen.ok("secret", "import", "a.env", "--overwrite", env=kimen.with_pass())
    first = _backups(kimen)[0]["path"]
    second = kimen.ok("vault", "restore", "--backup", first, "--json", env=kimen.with_pass()).json()["backup_path"]
    kimen.set("B", "precious")  # the vault is back at the generation of `second`, with other rows
    assert _generation(kimen.vault) == _generation(second)
    snapshot = str(kimen.root / "snap.bak.1")
    with (Vault.open(str(kimen.vault)) as vault, Vault.open(second) as backup,
          pytest.raises(KeyboardInterrupt), backed_up(vault, snapshot)):
        vault.restore_from(backup)
        raise KeyboardInterrupt  # as a Ctrl-C that arrives once the copy is done
    assert os.path.exists(snapshot)
    kimen.ok("vault", "restore", "--backup", snapshot, "--no-backup", env=kimen.with_pass())
    assert kimen.get("B") == b"precious"


def test_restore_does_not_wait_past_the_busy_timeout_and_loses_no_concurrent_write(kimen):
    """A writer holding the vault: restore waits for it like any write (5 s, then `vault_busy`, with
    nothing changed and no snapshot left); a write that commits around a restore ends up in the
    vault or in the snapshot restore took, never in neither."""
    kimen.init_vault()
    kimen.set("app.x", "one")
    (kimen.cwd / "a.env").write_text("X=2\n")
    kimen.ok("secret", "import", "a.env", "--prefix", "app.", env=kimen.with_pass())
    (kimen.cwd / "a.env").write_text("X=3\n")
    kimen.ok("secret", "import", "a.env", "--prefix", "app.", "--overwrite", env=kimen.with_pass())
    backup = _backups(kimen)[0]["path"]
    hold = ("import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE');print('held',flush=True)\n"
            "time.sleep(float(sys.argv[2]));c.execute('ROLLBACK')\n")
    locker = subprocess.Popen([sys.executable, "-c", hold, str(kimen.vault), "9"], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "held"
        started = time.monotonic()
        kimen.fail(24, "vault_busy", "vault", "restore", "--backup", backup, env=kimen.with_pass())
        assert time.monotonic() - started < 8.5
    finally:
        locker.kill()
        locker.wait()
    assert len(_backups(kimen)) == 1 and kimen.get("app.X") == b"3"
    # a writer that lets go after a second, and a `secret set` waiting beside the restore
    locker = subprocess.Popen([sys.executable, "-c", hold, str(kimen.vault), "1"], stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "held"
    setter = kimen.popen("secret", "set", "brand.new", "--stdin", env=kimen.with_pass(), stdin=subprocess.PIPE)
    setter.stdin.write(b"written meanwhile")
    setter.stdin.close()
    doc = kimen.ok("vault", "restore", "--backup", backup, "--json", env=kimen.with_pass()).json()
    assert setter.wait(30) == 0, setter.stderr.read()
    assert locker.wait(30) == 0
    in_vault = "brand.new" in kimen.ok("secret", "list").stdout.split()
    in_snapshot = "brand.new" in kimen.ok("--vault", doc["backup_path"], "secret", "list").stdout.split()
    assert in_vault or in_snapshot  # the write that raced the restore is kept somewhere
    if in_vault:  # it came after the restore: the vault is the backup plus that write
        assert kimen.get("brand.new") == b"written meanwhile" and kimen.get("app.X") == b"2"
    else:  # it came before: the snapshot holds it, and the vault is the backup
        assert kimen.ok("secret", "list").stdout.split() == ["app.X", "app.x"]


def test_restore_refuses_a_damaged_backup(kimen):
    kimen.init_vault()
    for i in range(40):
        kimen.set(f"app.s{i}", "v" * 200)
    (kimen.cwd / "a.env").write_text("A=1\n")
    kimen.ok("secret", "import", "a.env", "--prefix", "app.", env=kimen.with_pass())
    kimen.ok("secret", "import", "a.env", "--prefix", "app.", "--overwrite", env=kimen.with_pass())
    damaged = kimen.root / "flip.db"
    shutil.copyfile(_backups(kimen)[0]["path"], damaged)
    with open(damaged, "r+b") as f:
        f.seek(8192)
        f.write(b"\xff\xff\xff\xff")
    before = kimen.ok("secret", "list").stdout
    kimen.fail(24, "invalid_vault_file", "vault", "restore", "--backup", str(damaged), env=kimen.with_pass())
    assert kimen.ok("secret", "list").stdout == before and len(_backups(kimen)) == 1
    kimen.ok("vault", "info", "--verify", env=kimen.with_pass())


def test_prune_removes_only_this_vaults_own_backups(kimen, tmp_path):
    """A log line naming any file (edited, or a vault directory copied with its log) never makes it
    a backup: listing and `--prune` take only `<vault>.bak.<ns>` files that hold this vault."""
    kimen.init_vault()
    (kimen.cwd / "a.env").write_text("A=1\n")
    kimen.ok("secret", "import", "a.env", env=kimen.with_pass())
    kimen.ok("secret", "import", "a.env", "--overwrite", env=kimen.with_pass())
    original = _backups(kimen)[0]["path"]
    copy = tmp_path / "copy"
    shutil.copytree(kimen.vault.parent, copy)
    other = tmp_path / "other"
    other.mkdir()
    precious = other / "precious.txt"
    precious.write_text("not a backup")
    foreign = other / "vault.db.bak.1"  # named like a backup, but another vault's
    kimen.ok("--vault", str(foreign.with_name("vault.db")), "vault", "init", *SMALL_KDF, env=kimen.with_pass())
    os.rename(foreign.with_name("vault.db"), foreign)
    with open(copy / (kimen.vault.name + ".backups"), "a") as log:
        for path in (precious, foreign):
            log.write(json.dumps({"path": str(path), "made_by": "secret import"}) + "\n")
    listed = kimen.ok("--vault", str(copy / kimen.vault.name), "vault", "backups", "--json").json()["backups"]
    assert [os.path.dirname(b["path"]) for b in listed] == [str(copy)]  # the log's lines are the original's
    kimen.ok("--vault", str(copy / kimen.vault.name), "vault", "backups", "--prune", "--keep", "0", "--yes")
    assert precious.read_text() == "not a backup" and foreign.exists() and os.path.exists(original)
    assert _backups(kimen) != []  # the original vault still lists its own backup


def test_old_log_lines_and_a_missing_vault_never_make_a_file_elsewhere_a_backup(kimen, tmp_path):
    """A log line without the vault it was recorded for (an older kimen, or an edit) still gives the
    maker of a backup next to the vault, but never adds a file elsewhere; with the vault missing,
    only the files next to it count."""
    kimen.init_vault()
    (kimen.cwd / "a.env").write_text("A=1\n")
    kimen.ok("secret", "import", "a.env", env=kimen.with_pass())
    kimen.ok("secret", "import", "a.env", "--overwrite", env=kimen.with_pass())
    original = _backups(kimen)[0]["path"]
    log = kimen.vault.with_name(kimen.vault.name + ".backups")
    log.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "vault"}) + "\n"
                           for line in log.read_text().splitlines()))  # as an older kimen wrote it
    assert [b["made_by"] for b in _backups(kimen)] == ["secret import"]
    copy = tmp_path / "copy"
    shutil.copytree(kimen.vault.parent, copy)
    copied = str(copy / kimen.vault.name)
    listed = kimen.ok("--vault", copied, "vault", "backups", "--json").json()["backups"]
    assert [os.path.dirname(b["path"]) for b in listed] == [str(copy)]
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / (kimen.vault.name + ".backups")).write_text(json.dumps(
        {"path": original, "made_by": "x", "vault": str(gone / kimen.vault.name)}) + "\n")
    kimen.ok("--vault", str(gone / kimen.vault.name), "vault", "backups", "--prune", "--keep", "0", "--yes")
    kimen.ok("--vault", copied, "vault", "backups", "--prune", "--keep", "0", "--yes")
    assert os.path.exists(original)


def test_a_log_grown_past_its_read_limit_still_lists_the_newest_backups(kimen, tmp_path):
    """The log is only ever appended to; past the 4 MiB kimen reads, the newest lines are the ones
    read (a rekey's backup in --backup-dir is found through its line), not the oldest."""
    kimen.init_vault()
    log = kimen.vault.with_name(kimen.vault.name + ".backups")
    old = json.dumps({"path": str(tmp_path / "gone.bak.1"), "made_by": "secret import",
                      "vault": os.path.realpath(kimen.vault)}) + "\n"
    log.write_text(old * (5 * 1024 * 1024 // len(old) + 1))
    elsewhere = tmp_path / "backups"
    elsewhere.mkdir(mode=0o700)
    kimen.ok("vault", "rekey", "--backup-dir", str(elsewhere), *SMALL_KDF,
             env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": NEW})
    backups = _backups(kimen)
    assert [(os.path.dirname(b["path"]), b["made_by"]) for b in backups] == [(str(elsewhere), "vault rekey")]
