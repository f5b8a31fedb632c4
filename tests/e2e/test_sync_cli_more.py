"""`kimen sync preflight`, `sync restore`, `push --restore-head`, the dry runs and the plain `kimen
sync`, through the installed command: members with separate homes, vaults and identities over an
fs remote and a real bare git repository (docs/sync.md)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import KIMEN, Kimen
from tests.e2e import test_sync_cli
from tests.e2e.test_sync_cli import member

CANARY = "canary-5b0c-sync-more-value"
team = test_sync_cli.team  # the fixture: ana (admin) and bo (writer) over an fs remote


def sync(k: Kimen, *args: str) -> dict:
    return k.ok("sync", *args, "--json", env=k.with_pass()).json()


def checks_of(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def test_preflight_ci_gate_without_a_vault_over_git(tmp_path):
    """The CI gate: a fresh home with only an identity (KIMEN_AGE_IDENTITY) and a remote added by
    `remote add --type git ...`; no vault, no passphrase."""
    import git as gitpython

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    ana = member(tmp_path, "ana")
    done = ana.ok("sync", "init", "team", "--type", "git", "--path", str(repo), "--branch", "secrets",
                  "--bundle-path", "team/vault.age", "--identity", str(ana.identity), "--member", "ana",
                  "--json").json()
    remote_id = done["remote_id"]
    ana.set("prod.db", CANARY)
    sync(ana, "push")
    fp = ana.ok("sync", "members", "list", "--json").json()["members_fp"]

    (tmp_path / "ci").mkdir()
    ci = Kimen(tmp_path / "ci")
    gate = {"KIMEN_AGE_IDENTITY": ana.identity.read_text()}
    ci.ok("remote", "add", "team", "--type", "git", "--path", str(repo), "--branch", "secrets",
          "--bundle-path", "team/vault.age", "--remote-id", remote_id)
    pinned = ci.ok("sync", "pin", "--remote", "team", "--check", fp, "--json", env=gate).json()
    assert pinned["members_fp"] == fp and pinned["pinned"]
    args = ("sync", "preflight", "--remote", "team", "--strict", "--allow-missing-vault", "--pin", fp,
            "--only", "head,pin,rotation", "--json")
    report = ci.ok(*args, env=gate)
    doc = report.json()
    assert doc["action"] == "sync_preflight" and doc["check_count"] == 3 and doc["failed_count"] == 0
    assert [c["name"] for c in doc["checks"]] == ["head", "pin", "rotation"]
    assert doc["failed_checks"] == [] and doc["recommended_action"] == "none"
    head = checks_of(doc)["head"]
    assert head["ok"] and not head["skipped"] and head["payload"]["seq"] == 2 and head["payload"]["by"] == "ana"
    assert set(checks_of(doc)["head"]) == {"name", "command", "ok", "skipped", "exit_code", "error",
                                           "recommended_action", "payload"}
    assert checks_of(doc)["pin"]["payload"]["members_fp"] == fp
    assert checks_of(doc)["rotation"]["payload"]["count"] == 0
    assert not (ci.vault.exists()), "the gate created a vault"
    for text in (report.stdout, report.err):
        assert CANARY not in text and "AGE-SECRET-KEY" not in text

    # a wrong pin: the pin check fails (32) and names its reason; the others still run
    wrong = ci.run(*args[:-5], "--pin", "0" * 64, "--only", "head,pin,rotation", "--json", env=gate)
    assert wrong.code == 32
    doc = wrong.json()
    assert doc["failed_checks"] == ["pin"] and checks_of(doc)["head"]["ok"]
    assert checks_of(doc)["pin"]["error"]["reason"] == "members_pin_mismatch"
    assert checks_of(doc)["pin"]["exit_code"] == 32

    # without --allow-missing-vault the vault's checks fail with local_vault_missing
    missing = ci.run("sync", "preflight", "--remote", "team", "--skip", "doctor,pull,push", "--json", env=gate)
    assert missing.code == 32
    doc = missing.json()
    assert checks_of(doc)["status"]["error"]["reason"] == "local_vault_missing"
    assert checks_of(doc)["pin"]["skipped"]  # no --pin
    # with it they are skipped
    skipped = ci.ok("sync", "preflight", "--remote", "team", "--allow-missing-vault", "--json", env=gate).json()
    assert {c["name"] for c in skipped["checks"] if c["skipped"]} == {"doctor", "pin", "status", "conflicts",
                                                                       "pull", "push"}
    # no identity: the head check fails with its reason
    noid = ci.run("sync", "preflight", "--remote", "team", "--allow-missing-vault", "--only", "head", "--json")
    assert noid.code == 32 and checks_of(noid.json())["head"]["error"]["reason"] == "remote_identity_missing"


def test_preflight_with_a_vault_conflicts_rotation_and_bad_flags(team):
    ana, bo, _remote_dir = team
    ana.set("app.key", "one")
    sync(ana, "push")
    sync(bo, "pull")
    report = sync(bo, "preflight", "--strict")
    assert report["failed_count"] == 0 and [c["name"] for c in report["checks"]] == [
        "doctor", "head", "pin", "status", "conflicts", "rotation", "pull", "push"]
    assert checks_of(report)["pin"]["skipped"] and checks_of(report)["doctor"]["payload"]["ok"]
    assert checks_of(report)["status"]["payload"]["in_sync"]

    # the same key changed on both sides: head passes, the status and pull checks see the conflict
    ana.set("app.key", "from-ana")
    sync(ana, "push")
    bo.set("app.key", CANARY)
    done = bo.run("sync", "preflight", "--strict", "--skip", "doctor", "--json", env=bo.with_pass())
    assert done.code == 31, done.err
    doc = done.json()
    assert "status" in doc["failed_checks"] and "pull" in doc["failed_checks"] and "push" in doc["failed_checks"]
    pull = checks_of(doc)["pull"]
    assert pull["exit_code"] == 31 and pull["error"]["reason"] == "overlapping_changes"
    assert pull["payload"]["conflict_keys"] == ["app.key"] and doc["recommended_action"] != "none"
    assert CANARY not in done.stdout + done.err

    # rotation fails only under --strict
    ana.ok("sync", "members", "rm", "bo", "--yes")
    lenient = sync(ana, "preflight", "--only", "rotation")
    assert lenient["failed_count"] == 0 and checks_of(lenient)["rotation"]["payload"]["count"] == 1
    strict = ana.run("sync", "preflight", "--only", "rotation", "--strict", "--json")
    assert strict.code == 32 and checks_of(strict.json())["rotation"]["error"]["reason"] == "rotation_due"

    ana.fail(32, "unknown_preflight_check", "sync", "preflight", "--only", "head,bogus")
    ana.fail(32, "no_preflight_checks_selected", "sync", "preflight", "--only", "head", "--skip", "head")
    ana.fail(32, "invalid_stale_threshold", "sync", "preflight", "--stale-threshold", "soon")
    human = ana.run("sync", "preflight", "--only", "head,rotation", "--strict")
    assert human.code == 32 and "rotation: failed (exit 32, rotation_due)" in human.stdout
    assert json.loads(ana.ok("sync", "preflight", "--only", "head", "--json").stdout)["checks"][0]["ok"]


def test_preflight_git_head_gone_is_reported(tmp_path):
    import git as gitpython

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    ana = member(tmp_path, "ana")
    ana.ok("sync", "init", "team", "--type", "git", "--path", str(repo), "--identity", str(ana.identity),
           "--member", "ana")
    other = tmp_path / "empty.git"
    gitpython.Repo.init(other, bare=True)
    ana.ok("remote", "set", "team", "--path", str(other), "--remote-id", "")
    done = ana.run("sync", "preflight", "--only", "head", "--json")
    assert done.code == 32 and checks_of(done.json())["head"]["error"]["reason"] == "remote_missing"
    assert Path(repo).exists()


def test_status_members_changed_and_likely_stale(team):
    import time

    ana, bo, _remote_dir = team
    # ana added bo herself: acknowledged on her machine (the members changed for a teammate:
    # tests/e2e/test_sync_cli.py::test_an_admins_own_membership_change_is_acknowledged_but_not_a_teammates)
    sync(ana, "pull")
    assert sync(ana, "status")["members_changed"] is False
    assert ana.ok("sync", "status", "--strict")

    sync(bo, "pull")  # bo's first accepted head is acknowledged automatically
    assert sync(bo, "status")["members_changed"] is False
    time.sleep(1.2)  # the head is now older than 1s
    for command in ("status", "conflicts"):
        assert sync(bo, command, "--stale-threshold", "1s")["likely_stale"] is True
        assert sync(bo, command, "--stale-threshold", "1h")["likely_stale"] is False
        assert sync(bo, command)["likely_stale"] is False  # 0 = off
    head = checks_of(sync(bo, "preflight", "--only", "head", "--stale-threshold", "1s"))["head"]
    assert head["payload"]["likely_stale"] is True
    assert "likely stale" in bo.ok("sync", "status", "--stale-threshold", "1s").stdout
    bo.fail(32, "invalid_stale_threshold", "sync", "status", "--stale-threshold", "-1")


def test_sync_restore_replaces_the_vault_and_keeps_the_ratchet(team):
    import os
    import stat

    ana, bo, _remote_dir = team
    ana.set("app.a", "1")
    sync(ana, "push")
    sync(bo, "pull")
    ana.set("app.a", "2")
    ana.set("app.b", CANARY)
    sync(ana, "push")
    pulled = sync(bo, "pull")
    before = pulled["backup_path"]  # bo's vault before this pull: app.a = 1, no app.b
    assert before and bo.get("app.b") == CANARY.encode()

    bo.fail(32, "missing_backup", "sync", "restore", env=bo.with_pass())
    bo.fail(10, "missing_passphrase", "sync", "restore", "--backup", before)  # whoever restores can unlock
    done = sync(bo, "restore", "--backup", before)
    assert done["action"] == "sync_restore" and done["vault_path"] == str(bo.vault)
    assert done["source_backup_path"] == before
    current = done["current_backup_path"]
    assert current and Path(current).exists() and stat.S_IMODE(os.stat(current).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(bo.vault).st_mode) == 0o600
    assert bo.get("app.a") == b"1" and bo.run("secret", "get", "app.b", "--unsafe-stdout",
                                               env=bo.with_pass()).code != 0
    # the ratchet outside the vault is untouched: the known head is still seq 4, and a pull takes
    # the team's head again
    status = sync(bo, "status")
    assert status["ratchet_seq"] == pulled["seq"] and status["head_seq"] < pulled["seq"]
    again = sync(bo, "pull")
    assert again["applied_keys"] == ["app.a", "app.b"] and bo.get("app.b") == CANARY.encode()
    # --no-backup writes no snapshot; the human output names both files, never a value
    human = bo.ok("sync", "restore", "--backup", current, "--no-backup", env=bo.with_pass())
    assert f"from {current}" in human.stdout and CANARY not in human.stdout + human.err
    assert "backup of the replaced vault" not in human.stdout


def test_restore_head_after_a_wipe_a_rollback_and_a_fork(team, tmp_path):
    ana, bo, remote_dir = team
    head_file = remote_dir / "vault.age"
    cy = member(tmp_path, "cy")
    cy_joined = cy.ok("sync", "join", "team", "--path", str(remote_dir), "--identity", str(cy.identity),
                      "--member", "cy", "--json").json()
    ana.ok("sync", "members", "add", "--request", cy_joined["request"], "--role", "reader")  # seq 3
    bo.ok("sync", "members", "ack")
    sync(bo, "pull")
    sync(cy, "pull")
    ana.ok("sync", "members", "ack")
    ana.set("app.a", "0")
    sync(ana, "push")  # seq 4
    sync(bo, "pull")
    ana.set("app.a", "1")
    sync(ana, "push")  # seq 5
    sync(bo, "pull")
    seq5 = head_file.read_bytes()
    ana.set("app.a", "2")
    sync(ana, "push")  # seq 6
    sync(bo, "pull")

    # the remote directory is wiped
    for path in sorted(remote_dir.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    status = sync(ana, "status")
    assert status["reason"] == "remote_disappeared"
    assert status["next_command"] == "kimen sync push --remote team --restore-head --yes"
    writer = sync(bo, "status")  # only an admin can put the head back: no command for bo to run
    assert writer["recommended_action"] == "sync_reset_baseline_or_remote_recreate" and writer["next_command"] is None
    assert "next: ask an admin to put the head back (`kimen sync push --remote team --restore-head --yes`)" \
        in bo.ok("sync", "status").stdout
    ana.fail(32, "restore_head_confirmation_required", "sync", "push", "--restore-head", env=ana.with_pass())
    bo.fail(32, "sync_role_forbidden", "sync", "push", "--restore-head", "--yes", env=bo.with_pass())
    ana.set("app.b", CANARY)
    restored = sync(ana, "push", "--restore-head", "--yes")
    assert restored["restored"] and restored["seq"] == 7 and restored["published_keys"] == ["app.b"]
    pulled = sync(bo, "pull")  # bo, who knew seq 6, accepts the restored head
    assert pulled["seq"] == 7 and pulled["applied_keys"] == ["app.b"] and bo.get("app.a") == b"2"
    ana.fail(32, "restore_head_not_needed", "sync", "push", "--restore-head", "--yes", env=ana.with_pass())
    log = ana.ok("sync", "log", "--json", "--limit", "1").json()["entries"][0]
    assert log["note"] == "restore" and log["seq"] == 7

    # the remote is replaced by an older copy: refused as a rollback, restored above both
    head_file.write_bytes(seq5)
    rolled = bo.fail(31, "remote_rollback", "sync", "pull", env=bo.with_pass()).err_json()
    assert "`kimen sync push --restore-head --yes`" in rolled["hint"]
    plain = ana.run("sync", "--no-doctor", "--json", env=ana.with_pass()).json()  # not `sync changes`
    assert plain["steps"][-1]["error"]["reason"] == "remote_rollback"
    assert plain["next_command"] == "kimen sync push --remote team --restore-head --yes"
    assert sync(ana, "push", "--restore-head", "--yes")["seq"] == 8
    assert sync(bo, "pull")["seq"] == 8

    # a fork ahead of ana's head: bo publishes twice on top of an older head
    seq8 = head_file.read_bytes()
    ana.set("app.c", "from-ana")
    sync(ana, "push")  # seq 9, which bo never sees (cy does)
    assert sync(cy, "pull")["seq"] == 9
    head_file.write_bytes(seq8)
    bo.set("app.d", "1")
    sync(bo, "push")  # seq 9' (a fork of ana's 9)
    bo.set("app.d", "2")
    sync(bo, "push")  # seq 10'
    ana.fail(31, "remote_fork", "sync", "pull", env=ana.with_pass())
    forked = sync(ana, "push", "--restore-head", "--yes")
    assert forked["seq"] == 11  # above the fork's 10
    # cy, who knew ana's seq 9, accepts the restored chain (the skipped seq 10 is an entry that changes nothing)
    assert sync(cy, "pull")["seq"] == 11
    # bo's two heads are a fork of the restored chain: refused until bo re-anchors
    bo.fail(31, "remote_fork", "sync", "pull", env=bo.with_pass())
    accepted = sync(bo, "reset-baseline", "--to-remote", "--accept-fork", "--yes")
    assert accepted["accepted_fork"] and accepted["new_seq"] == 11
    after = sync(bo, "status")  # the baseline is dropped: the next pull is a union, never a push of deletes
    assert after["reason"] == "no_local_baseline" and after["next_command"] == "kimen sync pull --remote team"
    assert sync(bo, "pull")["applied_keys"] == ["app.c"]
    pushed = sync(bo, "push")
    assert pushed["published_keys"] == ["app.d"] and pushed["deleted_keys"] == []  # nothing is lost
    assert sync(ana, "pull")["applied_keys"] == ["app.d"] and ana.get("app.c") == b"from-ana"
    entries = ana.ok("sync", "log", "--json").json()["entries"]
    assert [e["note"] for e in entries if e["seq"] in (10, 11)] == ["restore", "restore"]
    for path in remote_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes()


def test_a_vanished_head_is_remote_disappeared_and_no_member_creates_another(team, tmp_path):
    """A head file that disappears is `remote_disappeared` (31) for every member who accepted a head,
    with the way back; `sync init` never puts a second genesis under the team's remote id."""
    ana, bo, remote_dir = team
    remote_id = sync(ana, "status")["remote_id"]
    cy = member(tmp_path, "cy")  # has the team's id pinned, but never accepted a head
    cy.ok("sync", "join", "team", "--path", str(remote_dir), "--identity", str(cy.identity), "--member", "cy",
          "--remote-id", remote_id)
    ana.set("app.a", CANARY)
    sync(ana, "push")
    sync(bo, "pull")
    head_file = remote_dir / "vault.age"
    head_file.unlink()

    for args in (("pull",), ("push",), ("changes",), ("revert", "app.a", "--to-seq", "2"), ("members", "list")):
        gone = bo.fail(31, "remote_disappeared", "sync", *args, env=bo.with_pass()).err_json()
        assert "`kimen sync push --remote team --restore-head --yes`" in gone["hint"]
    init = ("sync", "init", "team", "--path", str(remote_dir), "--member")
    bo.fail(31, "remote_disappeared", *init, "bo", "--identity", str(bo.identity))
    pinned = cy.fail(32, "remote_missing", *init, "cy", "--identity", str(cy.identity)).err_json()
    assert "id is pinned" in pinned["hint"] and "recommended_action" not in pinned
    status = sync(cy, "status")  # never `sync init`, which would refuse
    assert status["reason"] == "remote_missing" and status["next_command"] is None
    assert status["recommended_action"] == "sync_reset_baseline_or_remote_recreate"
    assert not head_file.exists()  # nobody made a new head

    writer = bo.run("sync", "--no-doctor", "--json", env=bo.with_pass())
    assert writer.code == 31 and writer.json()["reason"] == "remote_disappeared"
    assert writer.json()["next_command"] is None  # only an admin can put the head back
    assert "next: ask an admin to put the head back" in bo.run("sync", "--no-doctor", env=bo.with_pass()).stdout
    admin = ana.run("sync", "--no-doctor", "--json", env=ana.with_pass()).json()
    assert admin["next_command"] == "kimen sync push --remote team --restore-head --yes"
    restored = sync(ana, "push", "--restore-head", "--yes")
    assert restored["restored"] and sync(bo, "pull")["seq"] == restored["seq"] and bo.get("app.a") == CANARY.encode()


def test_revert_from_a_damaged_history_copy_says_so(team):
    ana, _bo, remote_dir = team
    ana.set("app.a", "1")
    first = sync(ana, "push")["seq"]
    ana.set("app.a", "2")
    sync(ana, "push")
    kept = remote_dir / "vault.age.history" / f"{first:012d}.age"
    data = bytearray(kept.read_bytes())
    data[-20] ^= 1
    kept.write_bytes(bytes(data))
    damaged = ana.fail(32, "sync_history_unavailable", "sync", "revert", "app.a", "--to-seq", str(first),
                       env=ana.with_pass()).err_json()
    assert "damaged or was changed" in damaged["hint"] and "64" not in damaged["hint"]
    assert ana.get("app.a") == b"2"


def test_a_readers_local_change_is_blocked_with_the_way_back(team, tmp_path):
    ana, _bo, remote_dir = team
    cy = member(tmp_path, "cy")
    joined = cy.ok("sync", "join", "team", "--path", str(remote_dir), "--identity", str(cy.identity),
                   "--member", "cy", "--json").json()
    ana.ok("sync", "members", "add", "--request", joined["request"], "--role", "reader")
    sync(cy, "pull")
    cy.set("app.mine", "x")  # a reader can never publish it
    status = sync(cy, "status")
    assert "sync_role_forbidden" in status["blockers"]
    assert status["next_command"] == "kimen sync pull --remote team --mirror"
    plain = cy.run("sync", "--no-doctor", env=cy.with_pass())
    assert plain.code == 32 and "next: kimen sync pull --remote team --mirror" in plain.stdout


def test_restore_head_over_a_git_branch_moved_back(tmp_path):
    import subprocess

    import git as gitpython

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    ana, bo = member(tmp_path, "ana"), member(tmp_path, "bo")
    done = ana.ok("sync", "init", "team", "--type", "git", "--path", str(repo), "--identity", str(ana.identity),
                  "--member", "ana", "--json").json()
    joined = bo.ok("sync", "join", "team", "--type", "git", "--path", str(repo), "--identity", str(bo.identity),
                   "--member", "bo", "--remote-id", done["remote_id"], "--json").json()
    ana.ok("sync", "members", "add", "--request", joined["request"])
    ana.set("k", "1")
    sync(ana, "push")
    sync(bo, "pull")
    git = ["git", "--git-dir", str(repo)]
    old = subprocess.run([*git, "rev-parse", "main~1"], capture_output=True, check=True, text=True).stdout.strip()
    subprocess.run([*git, "update-ref", "refs/heads/main", old], check=True)  # someone force-pushed an older tip
    bo.fail(31, "remote_rollback", "sync", "pull", env=bo.with_pass())
    restored = sync(ana, "push", "--restore-head", "--yes")
    assert restored["seq"] == 4 and restored["remote_commit"]
    assert sync(bo, "pull")["seq"] == 4 and bo.get("k") == b"1"


def test_dry_runs_name_deletes_and_conflicts(team):
    ana, bo, _remote_dir = team
    for name in ("app.a", "app.b", "app.c"):
        ana.set(name, "1")
    sync(ana, "push")
    sync(bo, "pull")
    ana.ok("secret", "rm", "app.a", env=ana.with_pass())
    ana.set("app.b", "2")
    ana.set("app.new", CANARY)
    dry = sync(ana, "push", "--dry-run")
    assert dry["action"] == "sync_push_dry_run" and dry["can_push"]
    assert dry["would_publish_keys"] == ["app.b", "app.new"] and dry["would_delete_keys"] == ["app.a"]
    assert dry["would_merge_keys"] == [] and dry["conflict_keys"] == []
    human = ana.ok("sync", "push", "--dry-run", env=ana.with_pass()).stdout
    assert "would delete: app.a" in human and CANARY not in human
    sync(ana, "push")

    # bo changed app.b too: a dry pull names the conflict instead of stopping, and changes nothing
    bo.set("app.b", "bo")
    pulled = sync(bo, "pull", "--reconcile", "--dry-run")
    assert pulled["action"] == "sync_pull_dry_run" and pulled["conflict_keys"] == ["app.b"]
    assert pulled["can_reconcile"] is False and pulled["would_delete_keys"] == ["app.a"]
    assert pulled["would_apply_keys"] == ["app.new"]
    assert bo.get("app.a") == b"1" and bo.get("app.b") == b"bo"
    assert sync(bo, "push", "--dry-run")["conflict_keys"] == ["app.b"]
    bo.fail(31, "overlapping_changes", "sync", "pull", "--reconcile", env=bo.with_pass())
    # the plain `kimen sync` dry run fails where the real one would (31), naming the conflict
    done = bo.run("sync", "--dry-run", "--json", env=bo.with_pass())
    doc = json.loads(done.stdout)
    assert done.code == 31 and doc["mode"] == "dry_run" and not doc["steps"][-1]["ok"], doc
    error = doc["steps"][-1]["error"]
    assert error["reason"] == "overlapping_changes" and "app.b" in error["error"]
    assert bo.get("app.b") == b"bo"


def test_sync_messages_say_what_happened(team):
    """Smaller sync messages: `unlock` says what --yes confirms, demoting the last admin says so,
    a malformed --rev is a usage error, a revert that changed nothing suggests no push, and a seq
    that no head has says which seqs exist."""
    ana, _bo, _remote_dir = team
    ana.set("app.a", "1")
    sync(ana, "push")
    done = ana.fail(32, "unlock_confirmation_required", "sync", "unlock")
    assert "in-flight files" in done.err and "never removed" in done.err
    done = ana.fail(32, "sync_last_admin", "sync", "members", "add", "ana", "--update", "--role", "writer",
                    env=ana.with_pass())
    assert "remove or demote ana" in done.err
    ana.fail(2, "usage_error", "sync", "reset-baseline", "--rev", "deadbeef", "--yes")
    seq = sync(ana, "status")["head_seq"]
    reverted = sync(ana, "revert", "app.a", "--to-seq", str(seq))
    assert reverted["changed"] is False and reverted["next_command"] is None
    assert "next:" not in ana.ok("sync", "revert", "app.a", "--to-seq", str(seq), env=ana.with_pass()).stdout
    for bad in ("-1", "0", str(seq + 5)):
        done = ana.fail(32, "sync_history_unavailable", "sync", "revert", "app.a", "--to-seq", bad, env=ana.with_pass())
        assert f"seq 1 to {seq}" in done.err_json()["hint"], done.err


def test_plain_sync_decides_and_runs_one_step(team, tmp_path):
    ana, bo, _remote_dir = team
    sync(ana, "pull")
    ana.ok("sync", "members", "ack")
    # bo has never pulled: the decision is a first pull
    checked = sync(bo, "--check")
    assert checked["action"] == "sync" and checked["mode"] == "check" and checked["decision"] == "pull"
    assert checked["would_run"] == "kimen sync pull --remote team" and checked["reason"] == "no_local_baseline"
    assert [s["name"] for s in checked["steps"]] == ["doctor", "status"] and checked["status"]["remote"] == "team"
    bo.fail(32, "conflicting_check_and_dry_run", "sync", "--check", "--dry-run", env=bo.with_pass())
    ran = sync(bo)
    assert ran["decision"] == "pull" and ran["steps"][-1]["action"] == "sync_pull" and ran["steps"][-1]["ok"]
    assert sync(bo, "--no-doctor")["decision"] == "noop"

    # local change: push (a writer), and the dry run publishes nothing
    bo.set("app.x", CANARY)
    dry = sync(bo, "--dry-run", "--no-doctor")
    assert dry["decision"] == "push" and dry["steps"][-1]["action"] == "sync_push_dry_run"
    assert dry["steps"][-1]["payload"]["would_publish_keys"] == ["app.x"]
    pushed = sync(bo, "--no-doctor")
    assert pushed["decision"] == "push" and pushed["steps"][-1]["payload"]["published_keys"] == ["app.x"]
    assert pushed["recommended_action"] == "none"
    # the remote moved and ana has nothing to publish: pull_reconcile
    done = sync(ana, "--no-doctor")
    assert done["decision"] == "pull_reconcile" and ana.get("app.x") == CANARY.encode()
    # the same key on both sides: the decided push stops with 31 and names the key
    ana.set("app.x", "ana")
    sync(ana, "push")
    bo.set("app.x", "bo")
    conflict = bo.run("sync", "--no-doctor", "--json", env=bo.with_pass())
    assert conflict.code == 31 and conflict.json()["steps"][-1]["error"]["reason"] == "overlapping_changes"
    assert CANARY not in conflict.stdout + conflict.err
    human = bo.run("sync", "--no-doctor", env=bo.with_pass())  # the report names the reason and the key
    assert human.code == 31
    assert "push: failed (exit 31, overlapping_changes): local and remote changed the same keys: app.x" \
        in human.stdout

    # blocked: no identity; no vault (allowed: a noop)
    (tmp_path / "eve-home").mkdir()
    eve = Kimen(tmp_path / "eve-home")
    eve.ok("remote", "add", "team", "--path", str(_remote_dir))
    blocked = eve.run("sync", "--json")
    assert blocked.code == 32 and blocked.json()["decision"] == "blocked"
    assert blocked.json()["reason"] == "local_vault_missing"
    assert eve.ok("sync", "--allow-missing-vault", "--json").json()["decision"] == "noop"
    human = bo.run("sync", "--check", "--no-doctor", env=bo.with_pass())
    assert "sync: would push" in human.stdout


def _stderr_on_a_terminal(k: Kimen, *args: str) -> tuple[int, str]:
    """Run kimen with stderr on a pty (stdout and stdin not): what it wrote there, and its exit code."""
    import os
    import subprocess

    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([KIMEN, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=slave, env={**k.env, **k.with_pass()}, cwd=k.cwd)
        os.close(slave)
        proc.stdout.read()  # type: ignore[union-attr]
        code = proc.wait(timeout=60)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_progress_lines_on_a_terminal_for_a_slow_push(team):
    import fcntl

    ana, _bo, remote_dir = team
    ana.set("app.a", "1")
    lock = (remote_dir / "vault.age.lock").open("rb")
    fcntl.flock(lock, fcntl.LOCK_EX)  # another push holds the remote: this one waits 3s, then gives up
    try:
        code, err = _stderr_on_a_terminal(ana, "sync", "push", "--lock-wait", "3s")
        assert code == 32 and "kimen: pushing to team…" in err and "remote_lock_present" not in err
        code, err = _stderr_on_a_terminal(ana, "sync", "push", "--lock-wait", "3s", "--json")
        assert code == 32 and "pushing to team" not in err  # --json: the envelope only
    finally:
        lock.close()
    code, err = _stderr_on_a_terminal(ana, "sync", "push")
    assert code == 0 and "pushing" not in err  # a quick push says nothing


def test_preflight_doctor_alone_needs_no_remote(tmp_path):
    (tmp_path / "solo").mkdir()
    k = Kimen(tmp_path / "solo")
    k.init_vault()
    done = k.ok("sync", "preflight", "--only", "doctor", "--json", env=k.with_pass()).json()
    assert done["remote"] is None and done["checks"][0]["ok"] and done["checks"][0]["command"] == "kimen doctor"
    k.fail(32, "no_remotes_configured", "sync", "preflight", "--only", "doctor,head", env=k.with_pass())


def test_git_remote_paths_relative_typed_and_with_credentials(tmp_path):
    """A relative git path is a directory here (made absolute, so a push reaches it, not kimen's
    cache); `remote set --path` keeps a git remote's URL as given; a URL's `user:password@` is
    shown by no command, human or JSON (the config keeps it)."""
    import git as gitpython

    ana = member(tmp_path, "ana")
    (tmp_path / "work").mkdir()
    gitpython.Repo.init(tmp_path / "work" / "team.git", bare=True)
    ana.ok("sync", "init", "team", "--type", "git", "--path", "team.git", "--identity", str(ana.identity),
           "--member", "ana", cwd=tmp_path / "work")
    ana.set("prod.db", CANARY)
    ana.ok("sync", "push", env=ana.with_pass())
    pushed = gitpython.Repo(tmp_path / "work" / "team.git")
    assert [c.message.split(" seq ")[1][:1] for c in pushed.iter_commits("main")] == ["2", "1"]
    assert ana.ok("remote", "get", "team", "--json").json()["remote"]["path"] == str(tmp_path / "work" / "team.git")

    ana.ok("remote", "add", "scp", "--type", "git", "--path", "git@example.com:org/secrets.git")
    for url in ("git@example.com:org/other.git", "https://example.com/org/secrets.git"):
        assert ana.ok("remote", "set", "scp", "--path", url, "--json").json()["remote"]["path"] == url

    token = "https://ci:TOKEN-5b0c@pw@git.example/org/s.git"  # a password holding `@` too
    outputs = [ana.ok("remote", "add", "ci", "--type", "git", "--path", token),
               ana.ok("remote", "list"), ana.ok("remote", "list", "--json"), ana.ok("remote", "get", "ci"),
               ana.ok("remote", "get", "ci", "--json"), ana.ok("remote", "set", "ci", "--branch", "b")]
    for done in outputs:
        shown = done.stdout + done.err
        assert "TOKEN-5b0c" not in shown and "pw@" not in shown and "https://git.example/org/s.git" in shown
    assert "TOKEN-5b0c" in (ana.root / "config" / "kimen" / "config.json").read_text()


def test_a_push_that_published_but_could_not_record_it_says_so(tmp_path):
    """Another kimen writes the vault while a push publishes (here: the git remote's pre-receive
    hook does it, mid-push). The head is published; the push says that, and what to run, instead
    of a plain vault error; the pull it recommends records it and loses nothing."""
    import shlex

    import git as gitpython

    from tests.conftest import KIMEN, PASSPHRASE

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    ana = member(tmp_path, "ana")
    ana.ok("sync", "init", "team", "--type", "git", "--path", str(repo), "--identity", str(ana.identity),
           "--member", "ana")
    ana.set("app.a", CANARY)
    writer = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**ana.env, "KIMEN_PASSPHRASE": PASSPHRASE}.items())
    hook = repo / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf other | env -i {writer} {KIMEN} --no-session "
                    "secret set app.other --stdin >/dev/null 2>&1\nexit 0\n")
    hook.chmod(0o755)
    done = ana.fail(32, "sync_push_unrecorded", "sync", "push", "--no-session", env=ana.with_pass())
    envelope = done.err_json()
    assert "pushed seq 2 to team" in envelope["error"] and "kimen sync pull" in envelope["hint"], envelope
    assert envelope["recommended_action"] == "sync_pull"
    hook.unlink()
    assert ana.get("app.other") == b"other"  # the concurrent write is kept
    sync(ana, "pull")
    assert sync(ana, "status")["head_seq"] == 2
    pushed = sync(ana, "push")  # the other write is published next; app.a is not published twice
    assert pushed["published_keys"] == ["app.other"], pushed
