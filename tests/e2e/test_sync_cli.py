"""`kimen remote` and `kimen sync` through the installed command: three members (separate homes,
vaults and identities) over an fs remote and a bare git repository (docs/sync.md)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Kimen

CANARY = "canary-7d1e-sync-cli-value"


def member(tmp_path: Path, name: str) -> Kimen:
    (tmp_path / name).mkdir()
    k = Kimen(tmp_path / name)
    k.init_vault()
    identity = k.root / "id.txt"
    k.ok("bundle", "keygen", "--out", str(identity))
    k.identity = identity  # type: ignore[attr-defined]
    return k


def join(admin: Kimen, new: Kimen, member_id: str, remote_dir: Path, remote_id: str, *, role: str = "writer") -> dict:
    """`sync join` by the new member, `sync members add --request` by the admin."""
    joined = new.ok("sync", "join", "team", "--path", str(remote_dir), "--identity", str(new.identity),
                    "--member", member_id, "--remote-id", remote_id, "--json").json()
    assert joined["action"] == "sync_join" and not joined["is_member"]
    assert joined["request"].startswith("kimen-join-v1:") and len(joined["fingerprint"]) == 19
    added = admin.ok("sync", "members", "add", "--request", joined["request"], "--role", role, "--json").json()
    assert added["member"] == member_id and added["fingerprint"] == joined["fingerprint"]
    return added


@pytest.fixture
def team(tmp_path):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    ana, bo = member(tmp_path, "ana"), member(tmp_path, "bo")
    done = ana.ok("sync", "init", "team", "--path", str(remote_dir), "--identity", str(ana.identity),
                  "--member", "ana", "--json").json()
    assert done["action"] == "sync_init" and done["created_remote"] and done["member"] == "ana"
    assert done["remote_config"]["remote_id"] == done["remote_id"]  # the config as it now is
    remote_id = done["remote_id"]
    join(ana, bo, "bo", remote_dir, remote_id)
    return ana, bo, remote_dir


def sync(k: Kimen, *args: str) -> dict:
    return k.ok("sync", *args, "--json", env=k.with_pass()).json()


def test_two_members_converge_conflict_and_resolve(team):
    ana, bo, remote_dir = team
    ana.set("app.token", CANARY)
    pushed = sync(ana, "push")
    assert pushed["action"] == "sync_push" and pushed["published_keys"] == ["app.token"] and pushed["seq"] == 3
    pulled = sync(bo, "pull")
    assert pulled["action"] == "sync_pull" and pulled["applied_keys"] == ["app.token"]
    assert pulled["first_pull"] and pulled["backup_path"] and Path(pulled["backup_path"]).exists()
    assert bo.get("app.token") == CANARY.encode()

    status = sync(bo, "status")
    assert status["in_sync"] and status["recommended_action"] == "none" and status["member"] == "bo"

    ana.set("app.token", "from-ana")
    sync(ana, "push")
    bo.set("app.token", "from-bo")
    assert sync(bo, "status")["recommended_action"] == "sync_pull_reconcile"
    failed = bo.fail(31, "overlapping_changes", "sync", "pull", "--reconcile", env=bo.with_pass())
    assert failed.err_json()["conflict_keys"] == ["app.token"]
    bo.fail(32, "invalid_take", "sync", "resolve", env=bo.with_pass())
    resolved = sync(bo, "resolve", "--take", "local")
    assert resolved["keys"] == ["app.token"] and resolved["recommended_action"] == "sync_pull_reconcile"
    assert sync(bo, "push")["published_keys"] == ["app.token"]
    sync(ana, "pull")
    assert ana.get("app.token") == b"from-bo"

    # no value, digest or identity in any output or remote file
    for k in (ana, bo):
        for args in (("sync", "status"), ("sync", "changes"), ("remote", "list")):
            done = k.ok(*args, "--json", env=k.with_pass())
            assert CANARY not in done.stdout and "AGE-SECRET-KEY" not in done.stdout + done.err
    for path in remote_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes()


def test_delete_propagates_and_outsiders_and_bad_flags_are_refused(team, tmp_path):
    ana, bo, remote_dir = team
    ana.set("old", "x")
    sync(ana, "push")
    sync(bo, "pull")
    bo.ok("secret", "rm", "old", env=bo.with_pass())
    assert sync(bo, "push")["deleted_keys"] == ["old"]
    assert sync(ana, "pull")["deleted_keys"] == ["old"]
    assert ana.run("secret", "get", "old", "--unsafe-stdout", env=ana.with_pass()).code != 0

    eve = member(tmp_path, "eve")
    eve.ok("remote", "add", "team", "--path", str(remote_dir), "--identity", str(eve.identity))
    eve.fail(32, "sync_not_a_member", "sync", "pull", env=eve.with_pass())
    eve.fail(30, "membership_not_in_config", "remote", "add", "x", "--path", "/tmp/x", "--recipient", "age1x")
    eve.fail(30, "git_fields_require_git_type", "remote", "add", "y", "--path", "/tmp/y", "--branch", "main")
    eve.fail(30, "missing_remote_set_fields", "remote", "set", "team")
    eve.fail(30, "remote_not_found", "remote", "get", "nope")
    eve.fail(32, "conflicting_pull_modes", "sync", "pull", "--reconcile", "--mirror", env=eve.with_pass())


def test_remote_commands_and_a_replayed_head(team):
    ana, bo, remote_dir = team
    listed = bo.ok("remote", "list", "--json").json()
    assert listed["count"] == 1 and listed["remotes"][0]["name"] == "team"
    assert bo.ok("remote", "list").stdout == f"team\tfs\t{remote_dir}\n"
    got = bo.ok("remote", "get", "team", "--json").json()
    assert got["remote"]["remote_id"] and got["remote"]["type"] == "fs"
    ana.set("a", "1")
    sync(ana, "push")
    old = (remote_dir / "vault.age").read_bytes()
    ana.set("a", "2")
    sync(ana, "push")
    sync(bo, "pull")
    (remote_dir / "vault.age").write_bytes(old)
    done = bo.fail(31, "remote_rollback", "sync", "pull", env=bo.with_pass())
    assert done.err_json()["known_seq"] > done.err_json()["remote_seq"]
    assert sync(bo, "status")["reason"] == "remote_changed"
    changed = bo.ok("remote", "set", "team", "--path", str(remote_dir / "elsewhere.age"), "--json").json()
    assert changed["baseline_reset"] is True
    assert bo.ok("remote", "rm", "team", "--json").json()["action"] == "remote_rm"
    assert json.loads(bo.ok("remote", "list", "--json").stdout)["count"] == 0


def test_git_remote_end_to_end(tmp_path):
    import git as gitpython

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    ana = member(tmp_path, "ana")
    done = ana.ok("sync", "init", "--type", "git", "--path", str(repo), "--identity", str(ana.identity),
                  "--member", "ana", "--json").json()
    assert done["created_remote"] and done["remote_config"]["name"] == "origin"
    ana.set("k", CANARY)
    pushed = sync(ana, "push")
    assert pushed["remote_commit"] and pushed["published_keys"] == ["k"]
    log = subprocess.run(["git", "--git-dir", str(repo), "log", "--format=%s", "main"], capture_output=True,
                         check=True).stdout.decode()
    assert "kimen sync push" in log and CANARY not in log
    assert sync(ana, "push")["noop"]
    assert sync(ana, "status")["in_sync"]
    # no object of the repository (blobs, trees, commits) holds the value, and kimen's own git is
    # not redirected by a hostile GIT_DIR in the caller's environment
    objects = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "--batch-all-objects", "--batch"],
                             capture_output=True, check=True).stdout
    assert objects and CANARY.encode() not in objects
    decoy = tmp_path / "decoy.git"
    gitpython.Repo.init(decoy, bare=True)
    ana.set("k2", "v2")
    hostile = {**ana.with_pass(), "GIT_DIR": str(decoy), "GIT_WORK_TREE": str(tmp_path), "GIT_INDEX_FILE": "/x"}
    assert ana.ok("sync", "push", "--json", env=hostile).json()["published_keys"] == ["k2"]
    assert subprocess.run(["git", "--git-dir", str(decoy), "rev-parse", "--verify", "-q", "main"],
                          capture_output=True).returncode != 0


def test_members_list_remove_and_rotation(team, tmp_path):
    ana, bo, _remote_dir = team
    ana.set("prod.db", CANARY)
    sync(ana, "push")
    sync(bo, "pull")
    listed = ana.ok("sync", "members", "list", "--json").json()
    assert [m["id"] for m in listed["members"]] == ["ana", "bo"] and len(listed["members_fp"]) == 64
    assert all("AGE-SECRET-KEY" not in json.dumps(m) for m in listed["members"])
    assert listed["acked"] is True and listed["added"] == []  # ana added bo herself: no news to her
    ack = ana.ok("sync", "members", "ack", "--json").json()
    assert ack["members_fp"] == listed["members_fp"] == ack["previous_fp"]
    assert ana.ok("sync", "members", "list", "--json").json()["acked"] is True
    # a glob given twice is one glob, not an invalid scope
    scoped = ana.ok("sync", "members", "add", "bo", "--update", "--scope", "prod.*", "--scope", "prod.*",
                    "--json").json()
    assert scoped["member"] == "bo" and scoped["scope"] == ["prod.*"]
    ana.ok("sync", "members", "add", "bo", "--update", "--scope", "**")
    ana.fail(32, "members_rm_confirmation_required", "sync", "members", "rm", "bo")
    bo.fail(32, "sync_role_forbidden", "sync", "members", "rm", "ana", "--yes")
    ana.fail(32, "sync_last_admin", "sync", "members", "rm", "ana", "--yes")
    removed = ana.ok("sync", "members", "rm", "bo", "--yes", "--json").json()
    assert removed["recipient_count"] == 1 and removed["rotation_due_count"] == 1
    # bo can no longer decrypt the new head
    bo.fail(32, "sync_not_a_member", "sync", "pull", env=bo.with_pass())
    ana.fail(32, "members_pin_mismatch", "sync", "members", "ack", "--fp", "0" * 64)
    assert "bo" not in ana.ok("sync", "members", "list").stdout
    rotation = ana.ok("sync", "rotation", "--json").json()
    assert rotation["count"] == 1 and rotation["rotation_due"][0]["name"] == "prod.db"
    assert rotation["rotation_due"][0]["removed"] == ["bo"]
    ana.fail(32, "rotation_due", "sync", "rotation", "--strict")
    ana.set("prod.db", "rotated")
    sync(ana, "push")
    assert ana.ok("sync", "rotation", "--json").json()["count"] == 0
    log = ana.ok("sync", "log", "--json", "--key", "prod.db").json()
    assert [e["by"] for e in log["entries"]] == ["ana", "ana"] and log["entries"][0]["set"] == ["prod.db"]
    assert CANARY not in json.dumps(log)
    fp = ana.ok("sync", "members", "list", "--json").json()["members_fp"]
    pinned = ana.ok("sync", "pin", "--check", fp, "--json").json()
    assert pinned["pinned"] and pinned["writers"] == ["ana"]
    assert pinned["trusted_signers"][0].startswith("kimen-sig-v1:")
    ana.fail(32, "members_pin_mismatch", "sync", "pin", "--check", "f" * 64)
    for args in (("members", "ack", "--fp", "zz"), ("pin", "--check", "zz")):  # not a fingerprint at all
        ana.fail(32, "invalid_fingerprint", "sync", *args)
    assert ana.ok("sync", "pin", "--check", fp.upper(), "--json").json()["pinned"]
    ana.fail(32, "invalid_secret_name", "sync", "log", "--key", "bad..name")
    human_log = ana.ok("sync", "log").stdout
    assert "(members) (members)" not in human_log and "(members)" in human_log
    ana.fail(32, "bundle_wrong_remote", "sync", "pin", "--remote-id", "0" * 32)


def test_reset_baseline_and_unlock(team):
    ana, bo, remote_dir = team
    ana.set("a", "1")
    sync(ana, "push")
    sync(bo, "pull")
    import sqlite3

    conn = sqlite3.connect(bo.vault)
    conn.execute("UPDATE sync_baseline SET seq = seq + 1")
    conn.commit()
    conn.close()
    bo.fail(32, "sync_baseline_tampered", "sync", "pull", env=bo.with_pass())
    bo.fail(32, "reset_baseline_confirmation_required", "sync", "reset-baseline", "--to-remote", env=bo.with_pass())
    reset = sync(bo, "reset-baseline", "--to-remote", "--yes")
    assert reset["mode"] == "to_remote" and reset["new_seq"] == reset["previous_seq"]
    assert sync(bo, "pull")["in_sync"]
    wrong = bo.fail(31, "remote_changed", "sync", "reset-baseline", "--rev", "0" * 64, "--yes", env=bo.with_pass())
    assert wrong.err_json()["actual_rev"]
    cleared = sync(bo, "reset-baseline", "--clear", "--yes")
    assert cleared["mode"] == "clear" and sync(bo, "status")["reason"] == "no_local_baseline"
    stale = remote_dir / "vault.age.tmp.0123456789abcdef"
    stale.write_bytes(b"x")
    import os

    os.utime(stale, (1, 1))
    unlocked = bo.ok("sync", "unlock", "--yes", "--json").json()
    assert unlocked["held"] is False and unlocked["reason"] == "lock_missing"
    assert unlocked["removed_temp_files"] == [str(stale)] and not stale.exists()


def test_sync_init_refuses_a_scope_overlapping_another_remote_of_the_vault(tmp_path):
    """One vault, several remotes: `sync init` checks the scope before creating or keeping a head."""
    ana = member(tmp_path, "ana")
    first, second = tmp_path / "first", tmp_path / "second"
    for directory in (first, second, tmp_path / "third"):
        directory.mkdir()
    ana.ok("sync", "init", "one", "--path", str(first), "--identity", str(ana.identity), "--member", "ana",
           "--scope", "dev.**")
    ana.set("dev.key", "v")
    sync(ana, "push", "--remote", "one")  # the vault now syncs `one` with scope dev.**
    done = ana.fail(32, "remote_scope_overlap", "sync", "init", "two", "--path", str(second), "--identity",
                    str(ana.identity), "--member", "ana", "--scope", "dev.db.*")
    assert "dev.**" in done.err and "dev.db.*" in done.err
    assert not (second / "vault.age").exists()  # no head was created there
    ana.ok("sync", "init", "three", "--path", str(tmp_path / "third"), "--identity", str(ana.identity),
           "--member", "ana", "--scope", "ops.**")


def test_terse_is_one_line_of_the_json_scalars(team):
    import shlex

    ana, _bo, _ = team
    ana.set("dev.a", "v")
    for args in (("sync", "status"), ("sync", "members", "list"), ("sync", "rotation")):
        terse = ana.ok(*args, "--terse", env=ana.with_pass()).stdout
        assert terse.count("\n") == 1
        words = dict(word.split("=", 1) for word in shlex.split(terse))
        envelope = ana.ok(*args, "--json", env=ana.with_pass()).json()
        assert words.pop("action") == envelope["action"]
        for key, value in words.items():
            expected = envelope[key]
            if isinstance(expected, bool):
                expected = "true" if expected else "false"
            elif isinstance(expected, list):
                expected = ",".join(map(str, expected))
            assert value == ("" if expected is None else str(expected)), key
        assert "head_seq" in words or args[1] != "status"


def test_an_admins_own_membership_change_is_acknowledged_but_not_a_teammates(tmp_path, team):
    ana, bo, remote_dir = team  # ana added bo: no news to her
    assert sync(ana, "status")["members_changed"] is False
    sync(bo, "pull")  # bo's first head: acknowledged automatically
    # bo learns of the next change through the head: an admin's change is news to bo
    cy = member(tmp_path, "cy")
    join(ana, cy, "cy", remote_dir, sync(ana, "status")["remote_id"])
    assert sync(ana, "status")["members_changed"] is False
    sync(bo, "pull")
    bo_status = sync(bo, "status")
    assert bo_status["members_changed"] is True and bo_status["recommended_action"] == "sync_members_ack"
    assert bo_status["next_command"] == "kimen sync members ack --remote team"
    strict = bo.run("sync", "status", "--strict", "--json", env=bo.with_pass())  # the report, exit 32
    assert strict.code == 32 and strict.json()["reason"] == "members_unacknowledged"
    assert strict.json()["ok"] is False and strict.json()["exit_code"] == 32  # the envelope says it failed
    terse = bo.run("sync", "status", "--strict", "--terse", env=bo.with_pass())
    assert terse.code == 32 and "ok=false" in terse.stdout.split() and "exit_code=32" in terse.stdout.split()
    sync(bo, "members", "ack")
    assert sync(bo, "status")["members_changed"] is False


def test_a_failed_init_or_join_leaves_no_remote_entry_and_dry_run_takes_no_lock_flags(team, tmp_path):
    ana, _bo, remote_dir = team
    eve = member(tmp_path, "eve")
    missing = tmp_path / "no-such-repo.git"
    eve.fail(32, "git_failed", "sync", "init", "gone", "--type", "git", "--path", str(missing), "--identity",
             str(eve.identity), "--member", "eve")
    eve.fail(32, "invalid_member_id", "sync", "join", "team", "--path", str(remote_dir), "--identity",
             str(eve.identity), "--member", "Not Valid!", "--remote-id", "0" * 32)
    assert eve.ok("remote", "list", "--json").json()["count"] == 0
    # an entry that existed before a failing command stays
    eve.ok("remote", "add", "kept", "--path", str(tmp_path / "nowhere"), "--identity", str(eve.identity))
    eve.run("sync", "init", "kept", "--member", "eve")
    assert [r["name"] for r in eve.ok("remote", "list", "--json").json()["remotes"]] == ["kept"]
    for flags in (("--lock-wait", "1s"), ("--break-stale-lock-after", "1h")):
        ana.fail(32, "conflicting_dry_run_lock_flags", "sync", "push", "--dry-run", *flags, env=ana.with_pass())


def test_an_admins_own_change_does_not_acknowledge_an_earlier_change_by_another_admin(tmp_path, team):
    ana, bo, remote_dir = team
    remote_id = sync(ana, "status")["remote_id"]
    ana.ok("sync", "members", "add", "bo", "--update", "--role", "admin")
    sync(bo, "pull")  # bo's first head (bo an admin): acknowledged
    cy = member(tmp_path, "cy")
    join(bo, cy, "cy", remote_dir, remote_id)  # bo's change: news to ana once she reads the head
    sync(ana, "pull")
    assert sync(ana, "status")["members_changed"] is True
    dan = member(tmp_path, "dan")
    join(ana, dan, "dan", remote_dir, remote_id)  # ana's own change, after one she has not seen
    assert sync(ana, "status")["members_changed"] is True
    listed = ana.ok("sync", "members", "list", "--json").json()
    assert set(listed["added"]) == {"cy", "dan"}
    human = ana.ok("sync", "members", "list").stdout.splitlines()
    assert f"members_fp: {listed['members_fp']}" in human
    assert "since you acknowledged them: added cy, dan (`kimen sync members ack`)" in human
