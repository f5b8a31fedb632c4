"""The team-sync security invariants of docs/security.md (27, 28, 30-35) at the command level: the
installed `kimen`, members with separate homes, vaults and identities, real bare git repositories and
fs directories as remotes, the real `age` CLI, and attackers who write into the remote directly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Kimen
from tests.e2e import sync_team
from tests.e2e.sync_team import git, read_head, sync, write_head

CANARY = "canary-91f3-sync-invariants"
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 1234\n"


def _values(k: Kimen) -> dict[str, bytes]:
    names = [s["name"] for s in k.ok("secret", "list", "--json", env=k.with_pass()).json()["secrets"]]
    return {name: k.get(name) for name in names}


def _ratchets(k: Kimen) -> dict[str, bytes]:
    root = k.root / "state" / "kimen" / "sync"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _linear(repo: Path) -> list[str]:
    """The branch's commits, newest first; each has at most one parent, its predecessor (no merge)."""
    lines = git("--git-dir", str(repo), "rev-list", "--parents", "main").decode().split("\n")
    commits = [line.split() for line in lines if line]
    for i, (_commit, *parents) in enumerate(commits):
        assert parents == ([commits[i + 1][0]] if i + 1 < len(commits) else []), commits
    return [c[0] for c in commits]


# -- 27: concurrent pushes ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["git", "fs"])
def test_concurrent_pushes_have_one_winner_and_lose_nothing(tmp_path, kind):
    ana, bo, cy, remote, _rid = sync_team.team(tmp_path, kind)
    before = len(_linear(remote)) if kind == "git" else None
    # different keys at once: both publish, the later one merged on top of the other
    bo.set("app.bo", "b1")
    cy.set("app.cy", "c1")
    procs = [k.popen("sync", "push", "--json", env=k.with_pass()) for k in (bo, cy)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    sync(ana, "pull")
    assert ana.get("app.bo") == b"b1" and ana.get("app.cy") == b"c1"
    # the same key at once: exactly one winner; the other exits 31 naming the key and keeps its value
    bo.set("app.shared", "from-bo")
    cy.set("app.shared", "from-cy")
    procs = [k.popen("sync", "push", "--json", env=k.with_pass()) for k in (bo, cy)]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0, 31], codes
    loser, loser_proc = next((k, p) for k, p in zip((bo, cy), procs, strict=True) if p.returncode == 31)
    envelope = json.loads(loser_proc.stderr.read().decode().strip().splitlines()[-1])
    assert envelope["reason"] == "overlapping_changes" and envelope["conflict_keys"] == ["app.shared"]
    mine = b"from-bo" if loser is bo else b"from-cy"
    assert loser.get("app.shared") == mine  # lost nothing
    # after resolving, the loser's push carries every change of the heads before it
    sync(loser, "resolve", "--take", "local")
    sync(loser, "push")
    for k in (ana, bo, cy):
        sync(k, "pull", "--reconcile")
        assert k.get("app.shared") == mine and k.get("app.bo") == b"b1" and k.get("app.cy") == b"c1"
    if kind == "git":  # never a force-push, never a merge commit: one linear chain of kimen's commits
        assert len(_linear(remote)) == before + 4
        subjects = git("--git-dir", str(remote), "log", "--format=%s", "main").decode().splitlines()
        assert all(s.startswith("kimen sync push ") for s in subjects), subjects


@pytest.mark.parametrize("kind", ["git", "fs"])
def test_a_push_killed_at_any_point_leaves_the_old_or_the_new_head_and_no_lock(tmp_path, kind):
    ana, bo, _cy, remote, _rid = sync_team.team(tmp_path, kind)
    for n, point in enumerate(("before_write", "after_write", "after_replace")):
        old = read_head(remote, kind)
        ana.set(f"k{n}", f"v{n}")
        proc = ana.popen("sync", "push", "--json", env={**ana.with_pass(), "KIMEN_TEST_ONLY_PAUSE_AT": point})
        line = proc.stderr.readline().decode()
        assert line.strip() == f"kimen-test-paused {point}", line + proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        head = read_head(remote, kind)
        assert head == old or point == "after_replace", point  # the new head is only visible once complete
        # no lock is left behind: another member publishes at once, then the killed one retries
        bo.set(f"bo{n}", "x")
        assert sync(bo, "push")["published_keys"] == [f"bo{n}"]
        retried = sync(ana, "push")
        assert retried["noop"] or retried["published_keys"] == [f"k{n}"]
        sync(bo, "pull")
        assert bo.get(f"k{n}") == f"v{n}".encode()
    if kind == "git":
        _linear(remote)


# -- 28: baselines hold keyed digests; remotes and git history only ciphertext --------------------


def test_baselines_hold_keyed_digests_and_the_remote_only_ciphertext(tmp_path):
    ana, bo, cy, repo, _rid = sync_team.team(tmp_path, "git")
    ana.set("prod.db", CANARY)
    sync(ana, "push")
    sync(bo, "pull")
    sync(cy, "pull")
    outputs = []
    for k in (ana, bo, cy):
        for args in (("status",), ("changes",), ("log",), ("members", "list"), ("rotation",), ("pin",)):
            for json_flag in ((), ("--json",)) if k is bo else (("--json",),):
                done = k.run("sync", *args, *json_flag, env=k.with_pass())
                assert done.code == 0, done.err
                outputs.append(done.stdout + done.err)
    digests = {}
    for k in (bo, cy):
        conn = sqlite3.connect(k.vault)
        rows = dict(conn.execute("SELECT name, digest FROM sync_baseline WHERE name = 'prod.db'").fetchall())
        conn.close()
        digest = rows["prod.db"]
        digest = digest.hex() if isinstance(digest, bytes) else digest
        assert len(digest) == 64 and digest != hashlib.sha256(CANARY.encode()).hexdigest()
        digests[k.root.name] = digest
    # keyed: the same name and value give each member a different digest, and no output shows one
    assert digests["bo"] != digests["cy"]
    for text in outputs:
        assert CANARY not in text and not any(d in text for d in digests.values())
    # the repository: every object (blobs, trees, commit messages), packed or loose, is ciphertext
    git("--git-dir", str(repo), "gc", "-q")
    objects = git("--git-dir", str(repo), "cat-file", "--batch-all-objects", "--batch")
    assert objects and CANARY.encode() not in objects
    for path in repo.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    # and every file kimen keeps outside the vaults (config, state, caches, backups' neighbours)
    for k in (ana, bo, cy):
        for path in k.root.rglob("*"):
            if path.is_file() and "vault.db" not in path.name:
                assert CANARY.encode() not in path.read_bytes(), path


# -- 30: head acceptance at the command level ------------------------------------------------------


@pytest.fixture
def accepted(tmp_path):
    """ana (admin), bo (writer), cy (reader) over git; two heads with values; everyone pulled."""
    repo = sync_team.bare_repo(tmp_path / "team.git")
    ana, bo, cy = (sync_team.person(tmp_path, n) for n in ("ana", "bo", "cy"))
    rid = sync_team.found(ana, repo)
    sync_team.join(ana, bo, "bo", repo, rid)
    sync_team.join(ana, cy, "cy", repo, rid, role="reader")
    ana.set("app.key", "v1")
    sync(ana, "push")
    ana.set("app.key", "v2")
    sync(ana, "push")
    for k in (bo, cy):
        sync(k, "pull")
    recipients = [m["recipient"] for m in ana.ok("sync", "members", "list", "--json").json()["members"]]
    return ana, bo, cy, repo, rid, recipients


def _refused(k: Kimen, code: int, reason: str) -> dict:
    """`sync pull` refuses the head with `reason` and changes nothing on this machine."""
    values, ratchets = _values(k), _ratchets(k)
    done = k.fail(code, reason, "sync", "pull", env=k.with_pass())
    assert _values(k) == values and _ratchets(k) == ratchets
    return done.err_json()


def test_forged_replayed_foreign_forked_and_lfs_heads_are_refused(accepted, tmp_path):
    ana, bo, cy, repo, _rid, recipients = accepted
    genuine = read_head(repo)
    old = git("--git-dir", str(repo), "rev-parse", "main~1").decode().strip()
    older_head = git("--git-dir", str(repo), "cat-file", "blob", f"{old}:vault.age")
    # an outsider's head (eve read a head somehow and has push access), and a reader's
    eve = sync_team.person(tmp_path, "eve", vault=False)
    for forger in (eve.identity, cy.identity):
        write_head(repo, sync_team.forge(genuine, bo.identity, forger, recipients, changes={"app.key": b"evil"}))
        _refused(bo, 32, "sync_signer_not_writer")
    write_head(repo, sync_team.forge(genuine, bo.identity, cy.identity, recipients, by="cy",
                                     changes={"app.key": b"evil"}))
    assert _refused(bo, 32, "sync_signer_not_writer")
    # a replayed older head (a plain commit, and a force-push rewinding the branch)
    write_head(repo, older_head)
    envelope = _refused(bo, 31, "remote_rollback")
    assert envelope["remote_seq"] < envelope["known_seq"]
    write_head(repo, older_head, force=True)
    _refused(bo, 31, "remote_rollback")
    # another remote's head, encrypted to bo (bo founded it with the same identity; no vault is
    # needed to found one, and bo's vault could not sync it: its scope there is `**`)
    other = sync_team.bare_repo(tmp_path / "other.git")
    bo.ok("--vault", str(tmp_path / "no-vault.db"), "sync", "init", "other", "--type", "git", "--path", str(other),
          "--identity", str(bo.identity), "--member", "bo", "--scope", "elsewhere.**")
    write_head(repo, read_head(other))
    _refused(bo, 32, "bundle_wrong_remote")
    # an LFS pointer where the head should be
    write_head(repo, LFS_POINTER)
    _refused(bo, 32, "git_lfs_pointer")
    # a fork: the genuine head back, then a sibling of bo's known head by a real writer
    write_head(repo, genuine, force=True)
    assert sync(bo, "pull")["in_sync"]
    tip = git("--git-dir", str(repo), "rev-parse", "main").decode().strip()
    ana.set("app.key", "v3")
    sync(ana, "push")  # seq n+1, which bo pulls
    sync(bo, "pull")
    git("--git-dir", str(repo), "update-ref", "refs/heads/main", tip)  # rewritten history
    ana2 = sync_team.person(tmp_path, "ana2", vault=False)  # ana on a machine that never saw seq n+1
    ana2.ok("remote", "add", "team", "--type", "git", "--path", str(repo), "--identity", str(ana.identity))
    ana2.ok("sync", "members", "add", "dan", "--recipient", eve.recipient, "--role", "reader")  # a sibling n+1
    _refused(bo, 31, "remote_fork")


# -- 31: the ratchet never decreases ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["git", "fs"])
def test_a_restored_vault_and_a_rewound_remote_never_roll_the_team_back(tmp_path, kind):
    ana, bo, _cy, remote, _rid = sync_team.team(tmp_path, kind)
    ana.set("app.key", "v1")
    sync(ana, "push")
    sync(bo, "pull")
    old_vault = bo.vault.read_bytes()
    old_head = read_head(remote, kind)
    ana.set("app.key", "v2")
    sync(ana, "push")
    assert sync(bo, "pull")["applied_keys"] == ["app.key"]
    # the remote is put back to the old head (a file copy / a force-push) and bo's vault is restored
    write_head(remote, old_head, kind, force=True)
    for suffix in ("-wal", "-shm"):
        Path(str(bo.vault) + suffix).unlink(missing_ok=True)
    bo.vault.write_bytes(old_vault)
    done = bo.fail(31, "remote_rollback", "sync", "pull", env=bo.with_pass())
    assert done.err_json()["known_seq"] > done.err_json()["remote_seq"]
    bo.fail(31, "remote_rollback", "sync", "push", env=bo.with_pass())
    assert bo.get("app.key") == b"v1"  # the restored vault's own value, untouched


# -- 32: no push drops what it did not change; a first pull never deletes -----------------------------


def test_pushes_carry_forward_names_outside_the_pushers_scope_and_first_pulls_never_delete(tmp_path):
    repo = sync_team.bare_repo(tmp_path / "team.git")
    ana, bo, cy = (sync_team.person(tmp_path, n) for n in ("ana", "bo", "cy"))
    rid = sync_team.found(ana, repo)
    sync_team.join(ana, bo, "bo", repo, rid, scope=("dev.**",))
    ana.set("prod.db", CANARY)
    ana.set("dev.token", "t1")
    sync(ana, "push")
    bo.set("prod.local", "mine")  # outside bo's scope: never published, never deleted
    bo.set("dev.only-bo", "b")  # a local name the head lacks: a first pull keeps it
    first = sync(bo, "pull")
    assert first["applied_keys"] == ["dev.token"] and bo.get("dev.only-bo") == b"b"
    bo.set("dev.token", "t2")
    pushed = sync(bo, "push")
    assert sorted(pushed["published_keys"]) == ["dev.only-bo", "dev.token"]
    sync(ana, "pull")
    assert ana.get("prod.db") == CANARY.encode() and ana.get("dev.token") == b"t2"
    assert bo.get("prod.local") == b"mine"
    assert ana.run("secret", "get", "prod.local", "--unsafe-stdout", env=ana.with_pass()).code == 12
    # cy joins with local names of their own: the first pull is a union; only --mirror deletes
    sync_team.join(ana, cy, "cy", repo, rid)
    cy.set("dev.cy-local", "c")
    sync(cy, "pull")
    assert cy.get("dev.cy-local") == b"c" and cy.get("prod.db") == CANARY.encode()
    mirrored = sync(cy, "pull", "--mirror")
    assert mirrored["deleted_keys"] == ["dev.cy-local"] and Path(mirrored["backup_path"]).exists()


def _forge_old_revision(head_bytes: bytes, eve: Kimen, recipients: list[str], *, name: str | None, value: bytes,
                        seq: int, clear_rotation: bool = False) -> bytes:
    """What a writer's patched client could publish: the next head after `head_bytes`, by eve and
    signed with her key, that changes `name` (outside her scope) under the old revision `seq` and
    the name of that head's author, so the scope check, which looks at this head's revisions, sees
    nothing; `clear_rotation` also empties `rotation_due`."""
    import base64
    import time

    from kimen.bundle import age, document, keys
    from kimen.durations import format_time
    from kimen.sigfmt import canonical
    from kimen.sync import chain, merge

    ident = keys.parse_identity(eve.identity.read_bytes(), str(eve.identity))  # type: ignore[attr-defined]
    head = chain.parse_head(document.parse(age.decrypt(head_bytes, [ident])))
    now = time.time()
    doc = merge.build_next(head, author="eve", changes={"dev.eve": b"1"}, at=format_time(now),
                           now_ms=int(now * 1000), creator={"user": "x", "host": "x", "kimen": "0"})
    if name is not None:
        old = next(e for e in doc["sync"]["log"] if e["seq"] == seq)
        for entry in doc["secrets"]:
            if entry["name"] == name:
                entry.update(value_b64=base64.b64encode(value).decode(), revision=seq, by=old["by"],
                             updated_at=old["at"])
        old["set"] = sorted(set(old["set"]) | {name})
    if clear_rotation:
        doc["sync"]["rotation_due"] = []
    document.sign(doc, ident)
    return age.encrypt(canonical(doc), [keys.parse_recipient(r).obj for r in recipients])


def test_a_writer_cannot_slip_a_change_outside_their_scope_in_under_an_old_revision(tmp_path):
    """Every member who kept the head a forged entry claims to come from refuses the head: the
    direct child of the kept head must carry everything forward, and any later head must hold the
    kept head's entries of its seq or older as they were."""
    repo = sync_team.bare_repo(tmp_path / "team.git")
    ana, bo, eve = (sync_team.person(tmp_path, n) for n in ("ana", "bo", "eve"))
    rid = sync_team.found(ana, repo)
    sync_team.join(ana, bo, "bo", repo, rid)
    sync_team.join(ana, eve, "eve", repo, rid, scope=("dev.**",))
    ana.set("prod.db", CANARY)
    ana.set("dev.b", "1")
    first = sync(ana, "push")["seq"]
    for k in (bo, eve):
        sync(k, "pull")
    ana.set("dev.c", "1")
    sync(ana, "push")  # bo does not pull this one: his known head is `first`
    recipients = [m["recipient"] for m in ana.ok("sync", "members", "list", "--json").json()["members"]]
    tip = read_head(repo)
    before = git("--git-dir", str(repo), "rev-parse", "main").decode().strip()
    write_head(repo, _forge_old_revision(tip, eve, recipients, name="prod.db", value=b"EVIL", seq=first))
    for k in (ana, bo):  # ana kept its parent; bo kept an older head that held prod.db at `first`
        done = k.fail(32, "sync_write_unauthorized", "sync", "pull", env=k.with_pass())
        assert "prod.db" in done.err_json()["error"] and k.get("prod.db") == CANARY.encode()
        assert b"EVIL" not in done.out and "EVIL" not in done.err
    git("--git-dir", str(repo), "update-ref", "refs/heads/main", before)

    # rotation_due emptied by a writer: refused by whoever kept the parent
    cy = sync_team.person(tmp_path, "cy")
    sync_team.join(ana, cy, "cy", repo, rid)
    sync(cy, "pull")
    ana.ok("sync", "members", "rm", "cy", "--yes")
    assert ana.ok("sync", "rotation", "--json").json()["count"] > 0
    sync(ana, "pull")
    recipients = [m["recipient"] for m in ana.ok("sync", "members", "list", "--json").json()["members"]]
    write_head(repo, _forge_old_revision(read_head(repo), eve, recipients, name=None, value=b"", seq=0,
                                         clear_rotation=True))
    done = ana.fail(32, "sync_write_unauthorized", "sync", "pull", env=ana.with_pass())
    assert "rotation_due" in done.err_json()["error"]


# -- 33: a removed member cannot decrypt later heads; their names are due for rotation ---------------


def test_a_removed_member_cannot_decrypt_later_heads_with_age_and_names_are_due(tmp_path):
    ana, bo, cy, repo, _rid = sync_team.team(tmp_path, "git")
    ana.set("prod.db", "secret-1")
    ana.set("prod.api", "secret-2")
    sync(ana, "push")

    def age_decrypts(identity: Path) -> bool:
        head = tmp_path / "head.age"
        head.write_bytes(read_head(repo))
        done = subprocess.run(["age", "--decrypt", "-i", str(identity), str(head)], capture_output=True, timeout=60)
        return done.returncode == 0 and done.stdout.startswith(b"{")

    assert age_decrypts(cy.identity) and age_decrypts(bo.identity)  # the check can fail: cy could, before
    removed = ana.ok("sync", "members", "rm", "cy", "--yes", "--json").json()
    assert removed["member"] == "cy" and removed["recipient_count"] == 2
    assert not age_decrypts(cy.identity) and age_decrypts(bo.identity)
    rotation = ana.ok("sync", "rotation", "--json").json()
    assert {(r["name"], tuple(r["removed"])) for r in rotation["rotation_due"]} == {
        ("prod.api", ("cy",)), ("prod.db", ("cy",))}
    bo.set("dev.other", "x")  # a later head by someone else: still not for cy, still due
    sync(bo, "pull", "--reconcile")
    sync(bo, "push")
    assert not age_decrypts(cy.identity)
    assert ana.ok("sync", "rotation", "--json").json()["count"] == 2
    cy.fail(32, "sync_not_a_member", "sync", "pull", env=cy.with_pass())
    ana.set("prod.db", "rotated")
    sync(ana, "pull", "--reconcile")
    sync(ana, "push")
    assert [r["name"] for r in ana.ok("sync", "rotation", "--json").json()["rotation_due"]] == ["prod.api"]


# -- 34: git runs scrubbed ------------------------------------------------------------------------------


def test_hostile_git_variables_redirect_nothing_and_run_no_hook(tmp_path):
    ana, bo, _cy, repo, _rid = sync_team.team(tmp_path, "git")
    marker = tmp_path / "hook-ran"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for hook in ("pre-commit", "post-commit", "pre-push", "reference-transaction", "post-checkout", "pre-receive",
                 "post-update", "fsmonitor-watchman"):
        (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\nexit 1\n")
        (hooks / hook).chmod(0o755)
    ssh = tmp_path / "ssh.sh"
    ssh.write_text(f"#!/bin/sh\necho ssh >> {marker}\nexit 1\n")
    ssh.chmod(0o755)
    decoy = sync_team.bare_repo(tmp_path / "decoy.git")
    config = tmp_path / "evil.gitconfig"
    config.write_text(f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = {hooks}/fsmonitor-watchman\n"
                      f"[url \"{decoy}\"]\n\tinsteadOf = {repo}\n")
    hostile = {"GIT_DIR": str(decoy), "GIT_WORK_TREE": str(tmp_path), "GIT_INDEX_FILE": str(tmp_path / "index"),
               "GIT_SSH_COMMAND": str(ssh), "GIT_CONFIG_GLOBAL": str(config), "GIT_CONFIG_SYSTEM": str(config),
               "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath", "GIT_CONFIG_VALUE_0": str(hooks),
               "GIT_CONFIG_PARAMETERS": f"'core.hooksPath'='{hooks}'", "GIT_OBJECT_DIRECTORY": str(decoy / "objects"),
               "GIT_NAMESPACE": "evil", "GIT_TERMINAL_PROMPT": "1"}
    before = _linear(repo)
    ana.set("app.key", "through-hostile-git")
    pushed = ana.ok("sync", "push", "--json", env={**ana.with_pass(), **hostile}).json()
    assert pushed["published_keys"] == ["app.key"]
    sync(bo, "pull")
    assert bo.get("app.key") == b"through-hostile-git"
    pulled = bo.ok("sync", "status", "--json", env=hostile).json()
    assert pulled["in_sync"]
    assert len(_linear(repo)) == len(before) + 1  # the real repository moved ...
    assert git("--git-dir", str(decoy), "for-each-ref").strip() == b""  # ... the decoy did not
    assert not marker.exists()  # no hook, no fsmonitor, no ssh ran
    assert not (tmp_path / "index").exists()


# -- 35: status needs no passphrase and no identity; pin needs no vault -------------------------------


def test_status_needs_no_passphrase_or_identity_and_pin_no_vault(tmp_path):
    ana, bo, _cy, repo, rid = sync_team.team(tmp_path, "git")
    ana.set("app.key", "v")
    sync(ana, "push")
    bo.identity.rename(bo.root / "moved-id.txt")  # no identity anywhere, no passphrase, no terminal
    status = bo.ok("sync", "status", "--json", "--passphrase-cmd", "false").json()
    assert status["needs_pull"] and status["head_seq"] > 0 and status["baseline_verified"] is False
    assert "remote_identity_missing" in status["blockers"]
    # a machine with no vault: pin accepts the head statelessly and writes no state
    ci = sync_team.person(tmp_path, "ci", vault=False)
    ana.ok("sync", "members", "add", "ci", "--recipient", ci.recipient, "--role", "reader")
    ci.ok("remote", "add", "team", "--type", "git", "--path", str(repo), "--identity", str(ci.identity))
    pinned = ci.ok("sync", "pin", "--remote-id", rid, "--json").json()
    assert pinned["remote_id"] == rid and pinned["writers"] == ["ana", "bo", "cy"]
    assert not ci.vault.exists() and not (ci.root / "state" / "kimen" / "sync").exists()
