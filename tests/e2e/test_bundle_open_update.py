"""`bundle open` into an existing vault never removes a name it was not asked to: `--overwrite` sets
the bundle's names only, `--mirror` also removes the absent ones; a backup precedes every change;
`--dry-run` changes nothing. `secret import --overwrite` is backed up the same way."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ..conftest import SMALL_KDF
from .bundle_helpers import NEW_PASS, Team, digest, make_vault, values


@pytest.fixture
def target(kimen):
    """A bundle of {prod.a: 1 (same), prod.b: new-b (changed), prod.c: 3 (new)} and a second vault
    holding {prod.a: 1, prod.b: old-b, local.only: mine}."""
    make_vault(kimen, {"prod.a": "1", "prod.b": "new-b", "prod.c": "3"})
    team = Team(kimen)
    team.seal("v.age")
    vault = kimen.root / "t.db"
    kimen.ok("--vault", str(vault), "vault", "init", *SMALL_KDF, env=NEW_PASS)
    for name, value in (("prod.a", "1"), ("prod.b", "old-b"), ("local.only", "mine")):
        kimen.ok("--vault", str(vault), "secret", "set", name, "--stdin", input=value, env=NEW_PASS)
    return kimen, team, vault


def _open(kimen, team, vault: Path, *extra: str):
    return kimen.run("bundle", "open", "--in", "v.age", "--identity", str(team.key), "--out-vault", str(vault),
                     *extra, env=NEW_PASS)


def _names(kimen, vault: Path) -> list[str]:
    return [s["name"] for s in kimen.ok("--vault", str(vault), "secret", "list", "--json").json()["secrets"]]


def _backups(vault: Path) -> list[Path]:
    return sorted(vault.parent.glob(vault.name + ".bak.*"))


def test_overwrite_keeps_names_absent_from_the_bundle_and_backs_up_first(target):
    kimen, team, vault = target
    done = _open(kimen, team, vault, "--overwrite", "--json")
    assert done.code == 0, done.err
    doc = done.json()
    assert (doc["added"], doc["updated"], doc["removed"]) == (["prod.c"], ["prod.b"], [])
    assert doc["dry_run"] is False and doc["created"] is False and doc["count"] == 3
    assert _names(kimen, vault) == ["local.only", "prod.a", "prod.b", "prod.c"]
    assert values(kimen, vault, ["local.only", "prod.b"], NEW_PASS) == {"local.only": b"mine", "prod.b": b"new-b"}
    # the backup: reported, 0600, next to the vault, and it opens with the vault's passphrase and the old values
    backup = Path(doc["backup_path"])
    assert _backups(vault) == [backup] and backup.name.startswith("t.db.bak.")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert values(kimen, backup, ["prod.b"], NEW_PASS) == {"prod.b": b"old-b"}
    assert _names(kimen, backup) == ["local.only", "prod.a", "prod.b"]
    # human output names the counts and the backup
    kimen.ok("--vault", str(vault), "secret", "set", "prod.b", "--stdin", input="again", env=NEW_PASS)
    human = _open(kimen, team, vault, "--overwrite")
    assert human.code == 0, human.err
    lines = human.stdout.splitlines()
    assert lines[0] == f"opened {kimen.cwd / 'v.age'} into {vault}: added 0, updated 1, removed 0"
    assert lines[1].startswith(f"backup: {vault}.bak.") and Path(lines[1][8:]).exists()


def test_mirror_removes_absent_names_after_a_backup(target):
    kimen, team, vault = target
    doc = _open(kimen, team, vault, "--mirror", "--json").json()
    assert (doc["added"], doc["updated"], doc["removed"]) == (["prod.c"], ["prod.b"], ["local.only"])
    assert _names(kimen, vault) == ["prod.a", "prod.b", "prod.c"]
    assert values(kimen, Path(doc["backup_path"]), ["local.only"], NEW_PASS) == {"local.only": b"mine"}
    # nothing left to change: no backup, nothing reported
    again = _open(kimen, team, vault, "--mirror", "--json").json()
    assert (again["added"], again["updated"], again["removed"], again["backup_path"]) == ([], [], [], None)
    assert len(_backups(vault)) == 1


def test_no_backup_and_one_transaction(target):
    kimen, team, vault = target
    before = kimen.ok("--vault", str(vault), "vault", "info", "--json").json()["generation"]
    doc = _open(kimen, team, vault, "--mirror", "--no-backup", "--json").json()
    assert doc["backup_path"] is None and _backups(vault) == []
    # add, update and remove were one write: the vault's generation moved by exactly one
    assert kimen.ok("--vault", str(vault), "vault", "info", "--json").json()["generation"] == before + 1


def test_dry_run_changes_nothing_and_reports_what_would_change(target):
    kimen, team, vault = target
    before = digest(vault)
    doc = _open(kimen, team, vault, "--mirror", "--dry-run", "--json").json()
    assert doc["dry_run"] is True
    assert (doc["would_add"], doc["would_update"], doc["would_remove"]) == (["prod.c"], ["prod.b"], ["local.only"])
    assert (doc["added"], doc["updated"], doc["removed"], doc["backup_path"]) == ([], [], [], None)
    assert doc["would_backup"].startswith(f"{vault}.bak.")
    assert digest(vault) == before and _backups(vault) == []
    human = _open(kimen, team, vault, "--overwrite", "--dry-run")
    assert human.code == 0, human.err
    assert human.stdout.splitlines()[:2] == ["[dry-run] add prod.c", "[dry-run] update prod.b"]
    assert "remove" not in human.stdout.splitlines()[0] and "local.only" not in human.stdout
    assert digest(vault) == before and _backups(vault) == []
    # into a vault that does not exist: no vault, no backup, no passphrase asked
    new = kimen.root / "new.db"
    doc = kimen.ok("bundle", "open", "--in", "v.age", "--identity", str(team.key), "--out-vault", str(new),
                   "--dry-run", "--json").json()
    assert doc["would_add"] == ["prod.a", "prod.b", "prod.c"] and doc["would_backup"] is None
    assert doc["created"] is False and not new.exists()
    assert not any(p.name.startswith("new.db") for p in kimen.root.iterdir())


def test_existing_vault_needs_overwrite_or_mirror(target):
    kimen, team, vault = target
    before = digest(vault)
    done = kimen.fail(25, "output_vault_exists", "bundle", "open", "--in", "v.age", "--identity", str(team.key),
                      "--out-vault", str(vault), env=NEW_PASS)
    assert "--mirror" in done.err_json()["hint"]
    assert digest(vault) == before and _backups(vault) == []


def test_refused_open_leaves_no_backup(target):
    """A replay is refused before anything is written: the vault is unchanged and no backup is left."""
    kimen, team, vault = target
    kimen.set("prod.a", "newer")
    team.seal("newer.age")
    kimen.ok("bundle", "open", "--in", "newer.age", "--identity", str(team.key), "--out-vault", str(vault),
             "--overwrite", "--no-backup", env=NEW_PASS)
    before = digest(vault)
    kimen.fail(25, "bundle_replay", "bundle", "open", "--in", "v.age", "--identity", str(team.key),
               "--out-vault", str(vault), "--mirror", env=NEW_PASS)
    assert digest(vault) == before and _backups(vault) == []


def test_secret_import_overwrite_backs_up_first(kimen):
    make_vault(kimen, {"prod.A": "old", "prod.keep": "k"})
    (kimen.cwd / ".env").write_text("A=new\nB=fresh\n")
    done = kimen.ok("secret", "import", ".env", "--prefix", "prod.", "--overwrite", "--json", env=kimen.with_pass())
    doc = done.json()
    assert (doc["created"], doc["updated"]) == (["prod.B"], ["prod.A"])
    backup = Path(doc["backup_path"])
    assert backup.name.startswith("vault.db.bak.") and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert values(kimen, backup, ["prod.A"], kimen.with_pass()) == {"prod.A": b"old"}
    assert kimen.get("prod.A") == b"new"
    # only creating names, or --no-backup, or a dry run: no backup
    (kimen.cwd / "more.env").write_text("C=c\n")
    doc = kimen.ok("secret", "import", "more.env", "--prefix", "prod.", "--json", env=kimen.with_pass()).json()
    assert doc["backup_path"] is None
    doc = kimen.ok("secret", "import", ".env", "--prefix", "prod.", "--overwrite", "--no-backup", "--json",
                   env=kimen.with_pass()).json()
    assert doc["backup_path"] is None
    doc = kimen.ok("secret", "import", ".env", "--prefix", "prod.", "--overwrite", "--dry-run", "--json").json()
    assert doc["backup_path"] is None and doc["dry_run"] is True
    assert len(list(kimen.vault.parent.glob("vault.db.bak.*"))) == 1
    human = kimen.ok("secret", "import", ".env", "--prefix", "prod.", "--overwrite", env=kimen.with_pass())
    assert human.stdout.splitlines()[-1].startswith(f"backup: {kimen.vault}.bak.")
