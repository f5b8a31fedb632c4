"""The small daily additions through the installed kimen: `secret list --match`, `secret get --out`,
`secret mv --prefix`, `secret rm --prefix --yes`, and the warning when a value's source file is
tracked by git."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

CANARY = "CANARY-small-9a0c"


@pytest.fixture
def filled(kimen):
    kimen.init_vault()
    for name in ("prod.a", "prod.b", "prod.c.d", "dev.a", "devx"):
        kimen.set(name, f"{CANARY}-{name}")
    return kimen


def test_list_match_is_the_one_glob_grammar(filled):
    assert filled.ok("secret", "list", "--match", "prod.*").stdout.split() == ["prod.a", "prod.b"]
    assert filled.ok("secret", "list", "--match", "prod.**", "--match", "dev?").stdout.split() == \
        ["devx", "prod.a", "prod.b", "prod.c.d"]
    doc = filled.ok("secret", "list", "--match", "*.a", "--prefix", "dev", "--json").json()
    assert doc["names"] == ["dev.a"] and doc["count"] == 1
    assert filled.ok("secret", "list", "--match", "nothing.*").stdout == ""


def test_get_out_writes_0600_atomically_and_never_overwrites(filled):
    os.umask(0o022)
    out = filled.cwd / "key.pem"
    done = filled.ok("secret", "get", "prod.a", "--out", "key.pem", env=filled.with_pass())
    assert out.read_bytes() == f"{CANARY}-prod.a".encode() and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert CANARY not in done.stdout + done.err
    filled.fail(11, "output_exists", "secret", "get", "prod.b", "--out", "key.pem", env=filled.with_pass())
    assert out.read_bytes() == f"{CANARY}-prod.a".encode()
    doc = filled.ok("secret", "get", "prod.b", "--out", "key.pem", "--force", "--json", env=filled.with_pass()).json()
    assert doc == {**doc, "action": "get", "name": "prod.b", "revision": 2, "out": str(out)}
    assert "value_b64" not in doc and CANARY not in str(doc)
    assert out.read_bytes() == f"{CANARY}-prod.b".encode()
    (filled.cwd / "link").symlink_to(filled.cwd / "elsewhere")
    filled.fail(11, "unsafe_output_path", "secret", "get", "prod.a", "--out", "link", "--force",
                env=filled.with_pass())
    assert not (filled.cwd / "elsewhere").exists()
    filled.fail(2, "usage_error", "secret", "get", "prod.a", "--out", "x", "--unsafe-stdout", env=filled.with_pass())


def test_get_out_warns_in_a_git_work_tree(filled):
    subprocess.run(["git", "init", "-q", str(filled.cwd)], check=True)
    doc = filled.ok("secret", "get", "prod.a", "--out", "secret.txt", "--json", env=filled.with_pass()).json()
    assert [w["reason"] for w in doc["warnings"]] == ["output_not_git_ignored"]


def test_mv_prefix_in_one_transaction_with_backup_and_stale_profiles(filled):
    filled.write_profile("dev", "env A=prod.a\nenv B=dev.a\n")
    doc = filled.ok("secret", "mv", "--prefix", "prod.", "stage.", "--json", env=filled.with_pass()).json()
    assert doc["action"] == "secret_mv"
    assert doc["names"] == [{"from": "prod.a", "to": "stage.a"}, {"from": "prod.b", "to": "stage.b"},
                            {"from": "prod.c.d", "to": "stage.c.d"}]
    assert os.path.exists(doc["backup_path"])
    assert [(s["name"], s["names"]) for s in doc["stale_profiles"]] == [("dev", ["prod.a"])]
    assert filled.ok("secret", "list").stdout.split() == ["dev.a", "devx", "stage.a", "stage.b", "stage.c.d"]
    history = filled.ok("secret", "history", "stage.a", "--json").json()
    assert history["current"] is not None
    # a target that exists: nothing moves
    filled.set("dev2.a", "x")
    filled.fail(13, "secret_exists", "secret", "mv", "--prefix", "dev.", "dev2.", env=filled.with_pass())
    assert "dev.a" in filled.ok("secret", "list").stdout.split()
    filled.fail(12, "secret_not_found", "secret", "mv", "--prefix", "none.", "x.", env=filled.with_pass())


def test_rm_prefix_needs_yes_and_can_be_restored(filled):
    filled.fail(11, "rm_confirmation_required", "secret", "rm", "--prefix", "prod.", env=filled.with_pass())
    assert len(filled.ok("secret", "list", "--prefix", "prod.").stdout.split()) == 3
    done = filled.ok("secret", "rm", "--prefix", "prod.", "--yes", env=filled.with_pass())
    assert "backup: " in done.stdout
    doc_list = filled.ok("secret", "list").stdout.split()
    assert doc_list == ["dev.a", "devx"]
    revs = filled.ok("secret", "history", "prod.b", "--json").json()["entries"]
    filled.ok("secret", "restore", "prod.b", "--revision", str(revs[0]["revision"]), env=filled.with_pass())
    assert filled.get("prod.b") == f"{CANARY}-prod.b".encode()
    filled.fail(2, "usage_error", "secret", "rm", "dev.a", "--yes", env=filled.with_pass())


def test_tracked_sources_warn(filled):
    repo = filled.cwd
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "token.txt").write_text("tracked-value")
    (repo / "app.env").write_text("KEY=v\n")
    (repo / "untracked.txt").write_text("v")
    subprocess.run(["git", "-C", str(repo), "add", "token.txt", "app.env"], check=True)
    doc = filled.ok("secret", "set", "t", "--from-file", "token.txt", "--json", env=filled.with_pass()).json()
    assert [w["reason"] for w in doc["warnings"]] == ["source_tracked_by_git"]
    assert "tracked-value" not in str(doc)
    doc = filled.ok("secret", "import", "app.env", "--json", env=filled.with_pass()).json()
    assert [w["reason"] for w in doc["warnings"]] == ["source_tracked_by_git"]
    doc = filled.ok("secret", "set", "u", "--from-file", "untracked.txt", "--json", env=filled.with_pass()).json()
    assert doc["warnings"] == []
