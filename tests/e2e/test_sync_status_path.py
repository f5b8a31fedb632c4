"""`sync status` and `sync conflicts` run on the argparse-free reader and import only what a
key-free, decryption-free report needs: no argparse, no libsodium, no merge or chain, no sealing.
Checked on the real command with -X importtime over a real fs remote."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import Kimen

# what the no-passphrase reports must not import (the passphrase, decryption, merge and parser paths)
FORBIDDEN = {
    "argparse", "kimen.cli.parser", "nacl", "argon2", "kimen.crypto", "kimen.sync.merge", "kimen.sync.chain",
    "kimen.bundle.age", "kimen.bundle.document", "kimen.vault.sealing", "kimen.vault.backup", "kimen.vault.store",
    "kimen.sync.git", "kimen.cli.sync_checks",
    # nor the engine and the start-up weight its value types once brought (dataclasses: inspect, ast, dis)
    "kimen.sync.engine", "dataclasses", "inspect", "typing", "hmac",
    # nor the libraries that cost most of a start-up: JSON, regular expressions and base64 (`re`,
    # `enum`), pyrage (an identity is checked by its bech32 checksum), subprocess (`locale`, `re`)
    "json", "re", "enum", "base64", "pyrage", "subprocess",
}


def _member_who_pushed(tmp_path, *location: str) -> Kimen:
    """`ana`, admin of a new remote at `location` (`sync init` flags), after pushing one secret."""
    (tmp_path / "ana").mkdir()
    k = Kimen(tmp_path / "ana")
    k.init_vault()
    identity = k.root / "id.txt"
    k.ok("bundle", "keygen", "--out", str(identity))
    k.ok("sync", "init", "team", *location, "--identity", str(identity), "--member", "ana", env=k.with_pass())
    k.set("app.token", "value-1")
    k.ok("sync", "push", env=k.with_pass())
    return k


@pytest.fixture
def ana(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    return _member_who_pushed(tmp_path, "--path", str(remote))


def _imports(k: Kimen, *args: str) -> tuple[set[str], str]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import sys; from kimen.__main__ import main; sys.exit(main())", *args],
                          capture_output=True, text=True, env=k.env, cwd=k.cwd)
    assert done.returncode == 0, done.stderr
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return loaded, done.stdout


@pytest.mark.parametrize("command", ["status", "conflicts"])
def test_sync_report_imports_no_parser_crypto_or_merge(ana, command):
    loaded, out = _imports(ana, "sync", command, "--json")
    assert "kimen.cli.fastargs" in loaded and "kimen.sync.fs" in loaded  # the fast reader and the fs transport ran
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert f'"action":"sync_{command}"' in out
    # the head is the one this machine kept for the vault's rev (compared, not hashed), and the
    # rows stamp is BLAKE2b: OpenSSL is not loaded
    assert "_hashlib" not in loaded


def test_sync_status_over_git_reads_the_known_commit_with_one_git_process(tmp_path):
    """Over git, after the member's own push: `ls-remote` (through `kimen.capture`, not
    `subprocess`) names the commit kimen pushed, whose rev it kept, so nothing else runs."""
    import shutil

    git = shutil.which("git")
    if git is None:
        pytest.fail("git is required (make test installs it)")
    remote = tmp_path / "team.git"
    subprocess.run([git, "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    k = _member_who_pushed(tmp_path, "--type", "git", "--path", str(remote))
    loaded, out = _imports(k, "sync", "status", "--json")
    assert "kimen.sync.git" in loaded and "kimen.capture" in loaded
    assert not loaded & (FORBIDDEN - {"kimen.sync.git"}), sorted(loaded & FORBIDDEN)
    assert '"in_sync":true' in out


def test_sync_status_reads_the_same_through_argparse(ana):
    """A flag spelled `--flag=value` goes to argparse: the report is the same."""
    fast = ana.ok("sync", "status", "--json", "--stale-threshold", "1h").json()
    slow = ana.ok("sync", "status", "--json", "--stale-threshold=1h").json()
    assert fast == slow and fast["in_sync"] and fast["local_changed"] is False


def test_sync_status_sees_every_local_write_kimen_or_not(ana):
    """The recorded local revision is reused only while the vault's rows stamp is unchanged: a
    `secret set`, and a row deleted with SQLite itself (no generation, no MAC touched), are both
    local changes."""
    import sqlite3

    assert ana.ok("sync", "status", "--json").json()["local_changed"] is False
    ana.set("app.other", "value-2")
    changed = ana.ok("sync", "status", "--json").json()
    assert changed["local_changed"] is True and changed["recommended_action"] == "sync_push"
    ana.ok("sync", "push", env=ana.with_pass())
    assert ana.ok("sync", "status", "--json").json()["local_changed"] is False
    with sqlite3.connect(ana.vault) as conn:
        conn.execute("DELETE FROM secrets WHERE name='app.other'")
    conn.close()
    assert ana.ok("sync", "status", "--json").json()["local_changed"] is True
