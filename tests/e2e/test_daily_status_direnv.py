"""`kimen status`, `kimen direnv` and `KIMEN_PROFILE` from the installed command (docs/daily.md)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.test_session_hot_path import _imports
from tests.e2e.vault_helpers import CANARY
from tests.test_run_hot_path import FORBIDDEN

HEAVY = {"subprocess", "secrets", "asyncio"}


@pytest.fixture
def repo(kimen):
    kimen.init_vault()
    kimen.set("app.db", CANARY)
    kimen.set("app.mode", b"it's on")
    subprocess.run(["git", "init", "-q", str(kimen.cwd)], check=True)
    kimen.write_profile("dev", "env DB=secret:app.db\nenv MODE=secret:app.mode\nfile f.txt=secret:app.db\n")
    return kimen


def test_status_stopped_then_unlocked_exit_0(repo):
    done = repo.ok("status", unset=("KIMEN_PASSPHRASE",))
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"vault:    {repo.vault} (default) 0600")
    assert lines[1] == "session:  stopped"
    assert lines[2] == "profile:  none (pass --profile NAME or set KIMEN_PROFILE)"
    assert lines[3] == f"profiles: dev ({repo.cwd / '.kimen' / 'profiles'})"
    repo.ok("session", "start", env=repo.with_pass())
    try:
        doc = repo.ok("status", "--json", env={"KIMEN_PROFILE": "dev"}).json()
    finally:
        repo.ok("session", "stop")
    assert doc["session"]["state"] == "unlocked" and doc["session"]["pid"]
    assert doc["profile"] == {"name": "dev", "source": "env", "path": str(repo.cwd / ".kimen/profiles/dev.kmap"),
                              "found": True, "create": None}
    assert set(doc) >= {"vault", "session", "profile", "profiles", "remotes", "next"}


def test_status_names_an_unsafe_session_dir_instead_of_a_timeout(repo):
    """An unsafe session dir is not "did not answer within 1s": the line says what is wrong."""
    directory = repo.session_dir
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o755)
    try:
        session = repo.ok("status", "--json").json()["session"]
        line = repo.ok("status").stdout.splitlines()[1]
    finally:
        os.chmod(directory, 0o700)
    assert session["state"] == "unavailable" and session["reason"] and str(directory) in session["message"]
    assert line.startswith("session:  unavailable: ") and "1s" not in line


def test_status_missing_vault_and_profile_still_exit_0(kimen):
    doc = kimen.ok("status", "--profile", "nope", "--json").json()
    assert doc["vault"]["exists"] is False and doc["profile"]["found"] is False
    assert doc["profile"]["source"] == "flag"
    assert "kimen vault init" in doc["next"]
    kimen.fail(2, "usage_error", "status", "--bogus")
    (kimen.root / "bad.json").write_text("{bad")
    done = kimen.run("status", "--json", env={"KIMEN_CONFIG": str(kimen.root / "bad.json")})
    assert done.code == 26 and done.out == b""


@pytest.mark.parametrize(("where", "problem"), [("/dev/null", "is not a vault file (Is a device, not a regular file)"),
                                                ("dir", "is not a vault file (Is a directory)"),
                                                ("file/vault.db", "cannot be checked (Not a directory)")])
def test_status_says_what_is_wrong_with_a_vault_path_that_is_not_a_vault(kimen, where, problem):
    """Something that is not a vault file is not "missing" (so no `vault init`), and a device or a
    directory open to everyone is not fixed by `chmod 600`."""
    (kimen.root / "dir").mkdir(mode=0o777)
    (kimen.root / "file").write_text("")
    path = where if where.startswith("/") else str(kimen.root / where)
    done = kimen.ok("status", "--json", "--vault", path)
    vault = done.json()["vault"]
    assert vault["problem"] == problem and vault["path"] == path
    assert not [step for step in done.json()["next"] if "vault init" in step or "chmod" in step]
    line = kimen.ok("status", "--vault", path).out.decode().splitlines()[0]
    assert line.endswith(problem) and "missing" not in line and "chmod" not in line


def test_status_imports_nothing_heavy_and_opens_no_sqlite(repo):
    for argv in (("status",), ("status", "--json"), ("direnv", "--profile", "dev")):
        out, loaded = _imports(repo, *argv)
        assert out.returncode == 0, out.stderr[-2000:]
        assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
        assert not loaded & HEAVY, sorted(loaded & HEAVY)


def test_direnv_safe_output_has_no_value(repo):
    done = repo.ok("direnv", "--profile", "dev", unset=("KIMEN_PASSPHRASE",))
    path = repo.cwd / ".kimen" / "profiles" / "dev.kmap"
    assert done.stdout == f"export KIMEN_PROFILE=dev\nwatch_file {path}\n"
    assert repo.ok("direnv", env={"KIMEN_PROFILE": "dev"}).stdout == done.stdout
    repo.fail(22, "profile_not_found", "direnv", "--profile", "prod")


def test_direnv_in_a_directory_whose_name_is_not_utf8(repo):
    """The watch_file line carries the path's own bytes (direnv runs on every cd: no crash)."""
    where = os.path.join(os.fsencode(repo.cwd), b"nu\xff")
    os.makedirs(os.path.join(where, b".kimen", b"profiles"))
    with open(os.path.join(where, b".kimen", b"profiles", b"dev.kmap"), "w") as f:
        f.write("env MODE=secret:app.mode\n")
    done = repo.run("direnv", "--profile", "dev", cwd=os.fsdecode(where))
    assert done.code == 0, done.err
    assert done.out == b"export KIMEN_PROFILE=dev\nwatch_file '" + where + b"/.kimen/profiles/dev.kmap'\n"
    repo.ok("session", "start", env=repo.with_pass())
    try:
        done = repo.run("direnv", "--profile", "dev", "--unsafe-stdout", cwd=os.fsdecode(where),
                        unset=("KIMEN_PASSPHRASE",))
    finally:
        repo.ok("session", "stop")
    assert done.code == 0 and done.out.endswith(b"export MODE='it'\\''s on'\n"), done.err


def test_direnv_unsafe_needs_a_live_session(repo):
    done = repo.fail(22, "direnv_needs_session", "direnv", "--profile", "dev", "--unsafe-stdout",
                     unset=("KIMEN_PASSPHRASE",))
    assert done.out == b""
    repo.ok("session", "start", env=repo.with_pass())
    try:
        done = repo.ok("direnv", "--profile", "dev", "--unsafe-stdout", unset=("KIMEN_PASSPHRASE",))
    finally:
        repo.ok("session", "stop")
    text = done.out.decode()
    assert f"export DB='{CANARY.decode()}'" in text or f"export DB={CANARY.decode()}" in text
    assert "export MODE='it'\\''s on'" in text
    assert "direnv_skipped_directives" not in done.err and "skipped: file f.txt" in done.err
    shell = subprocess.run(["bash", "-c", text + 'printf %s "$MODE"'], capture_output=True, check=True)
    assert shell.stdout == b"it's on"


def test_direnv_unsafe_refuses_a_terminal(repo):
    import pty

    from tests.conftest import KIMEN

    master, slave = pty.openpty()
    try:
        proc = subprocess.run([KIMEN, "direnv", "--profile", "dev", "--unsafe-stdout", "--json"], stdout=slave,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=repo.cwd,
                              env={**repo.env, **repo.with_pass()}, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 22
    assert b'"reason":"unsafe_stdout_terminal"' in proc.stderr and CANARY not in proc.stderr


def test_kimen_profile_is_the_default_profile(repo):
    env = {"KIMEN_PROFILE": "dev", **repo.with_pass()}
    doc = repo.ok("plan", "--json", "--", "true", env=env).json()
    assert doc["profile_source"] == "env" and doc["profile_path"].endswith("dev.kmap")
    done = repo.ok("run", "--", "sh", "-c", 'printf %s "$MODE"', env=env)
    assert done.out == b"it's on"
    repo.fail(23, "profile_not_found", "run", "--", "true", env={"KIMEN_PROFILE": "nope"})
    lint = repo.ok("map", "lint", "--json", env=env).json()
    assert lint["profile_path"].endswith("dev.kmap")
    doctor = repo.run("doctor", "--json", env=env).json()
    assert doctor["profile_source"] == "env" and doctor["profile_path"].endswith("dev.kmap")
    envfile = repo.ok("envfile", "--out", "out.env", env=env)
    assert envfile.code == 0 and (repo.cwd / "out.env").read_bytes().count(b"\n") == 2
    # --profile wins; an empty KIMEN_PROFILE is unset
    assert repo.ok("plan", "--json", "--profile", "dev", "--", "true", env=env).json()["profile_source"] == "flag"
    assert repo.ok("plan", "--json", "--env", "A=const:x", "--", "true",
                   env={"KIMEN_PROFILE": ""}).json()["profile_source"] is None


def test_status_shows_the_known_head_of_each_remote(tmp_path):
    from tests.e2e.test_sync_cli import member

    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    ana = member(tmp_path, "ana")
    ana.ok("remote", "add", "spare", "--path", str(tmp_path / "spare"))
    done = ana.ok("sync", "init", "team", "--path", str(remote_dir), "--identity", str(ana.identity),
                  "--member", "ana", "--json").json()
    doc = ana.ok("status", "--json").json()
    remotes = {r["name"]: r for r in doc["remotes"]}
    assert remotes["spare"] == {"name": "spare", "type": "fs", "remote_id": None, "known_seq": None, "known_at": None}
    team = remotes["team"]
    assert team["remote_id"] == done["remote_id"] and team["type"] == "fs"
    assert isinstance(team["known_seq"], int) and team["known_seq"] >= 1 and team["known_at"]
    lines = ana.ok("status").stdout.splitlines()
    head = f"known head seq {team['known_seq']} at {team['known_at']}"
    assert f"remote:   team (fs) {head} (kimen sync status for more)" in lines
    assert "remote:   spare (fs) no head accepted yet (kimen sync pull)" in lines
