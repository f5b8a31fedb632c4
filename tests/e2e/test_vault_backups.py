"""`vault backups` (listing, what made each, before a rekey, pruning) and `vault restore --backup`
through the installed kimen, against real backups made by bulk commands."""

from __future__ import annotations

import os
import stat

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
