"""docs/security.md tells the truth about kimen's sensitive files and a lost passphrase: the table of
files and modes matches what the installed `kimen` creates (under umask 000), `vault init` says in
one line that a lost passphrase cannot be recovered, and the recovery bundle of the docs restores
the secrets into a new vault with a new passphrase."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from tests.conftest import PASSPHRASE, SMALL_KDF
from tests.e2e.test_security_invariants import umask

REPO = Path(__file__).resolve().parents[2]
NEW = "a brand new passphrase"


def _mode(path: Path | str) -> str:
    return f"{stat.S_IMODE(os.lstat(path).st_mode):04o}"


def _documented_modes() -> dict[str, set[str]]:
    """The "Sensitive files" table: row name -> the modes its mode cell names."""
    text = (REPO / "docs" / "security.md").read_text()
    section = text.split("## Sensitive files", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| [^|]+ \| ([^|]+?) \| [^|]+ \|$", section, re.M)
    return {name: set(re.findall(r"\b0[0-7]{3}\b", modes)) for name, modes in rows if name not in ("file", "---")}


def test_the_sensitive_files_table_matches_what_kimen_creates(kimen, tmp_path):
    seen: dict[str, set[str]] = {}

    def saw(row: str, *paths: Path | str) -> None:
        seen.setdefault(row, set()).update(_mode(p) for p in paths)

    probe = ("import os; d = os.environ['KIMEN_FILES_DIR']; "
             "print(oct(os.stat(os.path.dirname(d)).st_mode), oct(os.stat(d).st_mode), "
             "oct(os.stat(os.path.join(d, 'f')).st_mode))")
    with umask(0):
        kimen.init_vault()
        kimen.set("app.token", "canary-0000")
        kimen.write_profile("p", "env T=app.token\nfile f=app.token\n")
        env = {**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": NEW}
        backup = kimen.ok("vault", "rekey", "--json", env=env).json()["backup_path"]
        pw = kimen.with_pass(NEW)
        kimen.ok("config", "vault", "set", str(kimen.vault))
        key = tmp_path / "key.txt"
        recipient = kimen.ok("bundle", "keygen", "--out", str(key), "--json").json()["recipient"]
        kimen.ok("bundle", "seal", "--out", str(tmp_path / "b.age"), "--recipient", recipient, "--identity",
                 str(key), env=pw)
        kimen.ok("envfile", "--profile", "p", "--out", str(tmp_path / "e.env"), env=pw)
        kimen.ok("render", "--profile", "p", "--dir", str(tmp_path / "r"), env=pw)
        kimen.ok("run", "--profile", "p", "--files-dir", str(tmp_path / "fd"), "--", "true", env=pw)
        base, run_dir, projected = kimen.ok("run", "--profile", "p", "--", sys.executable, "-c", probe,
                                            env=pw).stdout.split()
        kimen.ok("init", "ci-deploy", "--out", str(tmp_path / "wf" / "deploy.yml"))
        kimen.ok("session", "start", env=pw)  # the daemon holds the vault open: -wal and -shm exist
        try:
            kimen.ok("secret", "get", "app.token", "--unsafe-stdout")  # through the session: audited
            saw("`-wal`, `-shm`", f"{kimen.vault}-wal", f"{kimen.vault}-shm")
            sessions = kimen.session_dir
            saw("session dir", sessions, sessions / "session.sock", sessions / "session.lock")
        finally:
            kimen.ok("session", "stop")
    saw("vault", kimen.vault)
    saw("backups", backup)
    saw("config", kimen.root / "config" / "kimen" / "config.json")
    saw("identities", key)
    saw("bundles", tmp_path / "b.age")
    saw("envfiles", tmp_path / "e.env")
    saw("rendered files", tmp_path / "r", tmp_path / "r" / "f")
    saw("files dir", tmp_path / "fd", tmp_path / "fd" / "f")
    seen["runtime dirs"] = {f"{int(m, 8) & 0o7777:04o}" for m in (base, run_dir, projected)}
    saw("workflows", tmp_path / "wf" / "deploy.yml")
    assert _mode(kimen.vault.parent) == "0700" and _mode(tmp_path / "wf") == "0755"
    audit = kimen.root / "state" / "kimen" / "audit.jsonl"
    saw("audit log", audit.parent, audit)
    assert "canary-0000" not in audit.read_text() and PASSPHRASE not in audit.read_text()
    assert seen == _documented_modes()


def test_vault_init_says_a_lost_passphrase_cannot_be_recovered(kimen):
    done = kimen.ok("vault", "init", *SMALL_KDF, env=kimen.with_pass())
    assert done.stdout.splitlines() == [
        f"initialized vault: {kimen.vault}",
        "a lost passphrase cannot be recovered, and neither can these secrets: keep a backup bundle sealed "
        "to an offline identity (kimen bundle seal)"]
    other = {**kimen.with_pass(), "KIMEN_VAULT": str(kimen.root / "other.db")}
    doc = kimen.ok("vault", "init", *SMALL_KDF, "--json", env=other).json()  # JSON unchanged: one document
    assert set(doc) == {"ok", "action", "exit_code", "warnings", "path", "vault_id", "kdf"}


def test_the_recovery_bundle_restores_a_lost_vault(kimen, tmp_path):
    """docs/security.md, "A lost passphrase means lost secrets": the commands as written there."""
    kimen.init_vault()
    kimen.set("prod.db", "canary-0001")
    kimen.set("dev.db", "canary-0002")
    me = tmp_path / "me.txt"
    kimen.ok("bundle", "keygen", "--out", str(me))
    usb = tmp_path / "usb" / "kimen-recovery.txt"
    usb.parent.mkdir()
    recipient = kimen.ok("bundle", "keygen", "--out", str(usb), "--print-recipient").stdout.strip()
    signer = kimen.ok("bundle", "recipient", "--identity", str(me), "--signer").stdout.strip()
    sealed = tmp_path / "kimen-recovery.age"
    kimen.ok("bundle", "seal", "--out", str(sealed), "--recipient", recipient, "--identity", str(me),
             env=kimen.with_pass())
    restored = kimen.vault.parent / "restored.db"  # the passphrase of the old vault is gone from here on
    kimen.ok("bundle", "open", "--in", str(sealed), "--identity", str(usb), "--trusted-signer", signer,
             "--out-vault", str(restored), *SMALL_KDF, env=kimen.with_pass(NEW))
    kimen.ok("config", "vault", "set", str(restored))
    assert kimen.get("prod.db", NEW) == b"canary-0001" and kimen.get("dev.db", NEW) == b"canary-0002"
    kimen.fail(15, "wrong_passphrase", "secret", "get", "prod.db", "--unsafe-stdout", env=kimen.with_pass(PASSPHRASE))
