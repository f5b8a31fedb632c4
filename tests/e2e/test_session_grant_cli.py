"""`kimen session start --require-grant`, `session grant|grants|revoke|log` and `--token-file`, driving
the installed `kimen` against a real daemon (docs/agents.md)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from kimen.daemon import tokens
from tests.conftest import PASSPHRASE, wait_for

VALUES = {"test.db.url": b"postgres://test-url", "test.api_key": b"test-api-value",
          "prod.db.password": b"prod-secret-value", "prod.api_key": b"prod-api-value"}


def _setup(kimen, *start: str) -> None:
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    kimen.write_profile("base", "env DB_URL=test.db.url\n")
    kimen.write_profile("test", "include base\nenv API_KEY=test.api_key\n")
    kimen.ok("session", "start", *start, env=kimen.with_pass())


def _log(kimen, *args: str) -> list[dict]:
    done = kimen.ok("session", "log", "--json", *args)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_walk_through_a_read_only_profile_grant(kimen):
    _setup(kimen, "--require-grant")
    assert kimen.ok("session", "status", "--json").json()["require_grant"] is True
    done = kimen.ok("session", "grant", "--profile", "test", "--ttl", "10m", "--read-only", env=kimen.with_pass())
    token = done.stdout.strip()
    assert tokens.grant_id_of(token) is not None and done.stdout == token + "\n"  # the token alone on stdout
    grant_id = tokens.grant_id_of(token)
    assert done.err.startswith(f"grant {grant_id}: 2 names, read-only, expires ")
    assert token not in done.err
    env = {"KIMEN_SESSION_TOKEN": token}
    assert kimen.ok("secret", "get", "test.db.url", "--unsafe-stdout", env=env).out == VALUES["test.db.url"]
    # the profile was resolved to its names (include followed): nothing else
    denied = kimen.fail(35, "grant_denied", "secret", "get", "prod.db.password", "--unsafe-stdout", env=env)
    assert denied.err_json()["denied"] == ["prod.db.password"]
    kimen.fail(35, "grant_denied", "secret", "set", "test.db.url", "--stdin", input="x", env=env)
    kimen.fail(35, "grant_required", "secret", "get", "test.db.url", "--unsafe-stdout")
    # a profile edited later does not widen the grant
    kimen.write_profile("test", "include base\nenv API_KEY=test.api_key\nenv P=prod.db.password\n")
    kimen.fail(35, "grant_denied", "run", "--profile", "test", "--", "true", env=env)
    # the log afterwards
    records = _log(kimen, "--grant", grant_id)
    assert [r["outcome"] for r in records if r["op"] == "read"] == ["ok", "grant_denied", "grant_denied"]
    assert all(r["grant_id"] == grant_id for r in records)
    human = kimen.ok("session", "log", "--grant", grant_id, "--name", "test.**", "--limit", "1").stdout
    assert human.count("\n") == 1 and f"grant={grant_id}" in human and "op=read" in human
    assert _log(kimen, "--name", "prod.**", "--limit", "5")
    # listed (never the token), then revoked
    listed = kimen.ok("session", "grants", "--json").json()["grants"]
    assert [g["grant_id"] for g in listed] == [grant_id] and listed[0]["read_only"] is True
    assert listed[0]["secrets"] == ["test.api_key", "test.db.url"] and listed[0]["use_count"] == 1
    assert token not in kimen.ok("session", "grants").stdout
    assert kimen.ok("session", "revoke", grant_id, "--json").json()["grant_id"] == grant_id
    kimen.fail(35, "grant_invalid", "secret", "get", "test.db.url", "--unsafe-stdout", env=env)
    kimen.fail(34, "grant_not_found", "session", "revoke", grant_id)
    text = "".join(p.read_text() for p in (kimen.root / "state" / "kimen").glob("audit.jsonl*"))
    assert token not in text and not any(v.decode() in text for v in VALUES.values())


def test_grant_scope_by_glob_export_and_json(kimen):
    _setup(kimen)
    done = kimen.ok("session", "grant", "--secret", "prod.*", "--secret", "test.db.url", "--export",
                    env=kimen.with_pass())
    assert done.stdout.startswith("export KIMEN_SESSION_TOKEN='kimen_grant_v1_") and done.stdout.endswith("'\n")
    assert "2 names, read-write" in done.err
    doc = kimen.ok("session", "grant", "--secret", "prod.**", "--json", env=kimen.with_pass()).json()
    assert doc["action"] == "session_grant" and doc["env"] == {"KIMEN_SESSION_TOKEN": doc["token"]}
    assert doc["secrets"] == ["prod.**"] and doc["read_only"] is False and doc["expires_at"]
    env = {"KIMEN_SESSION_TOKEN": doc["token"]}
    assert kimen.ok("secret", "get", "prod.api_key", "--unsafe-stdout", env=env).out == VALUES["prod.api_key"]
    kimen.fail(35, "grant_denied", "secret", "get", "test.api_key", "--unsafe-stdout", env=env)
    # a token narrows a session that does not require grants; without one, everything is served
    assert kimen.ok("secret", "get", "test.api_key", "--unsafe-stdout").out == VALUES["test.api_key"]
    kimen.fail(2, "usage_error", "session", "grant", "--secret", "a", "--export", env=kimen.with_pass())
    kimen.fail(34, "grant_scope_empty", "session", "grant", "--map", str(kimen.write_profile("none", "")),
               env=kimen.with_pass())


def test_minting_needs_the_passphrase_and_a_running_session(kimen):
    _setup(kimen)
    token = kimen.ok("session", "grant", "--secret", "**", env=kimen.with_pass()).stdout.strip()
    # a session alone (or a token) cannot mint
    kimen.fail(10, "missing_passphrase", "session", "grant", "--secret", "**")
    kimen.fail(10, "missing_passphrase", "session", "grant", "--secret", "**", env={"KIMEN_SESSION_TOKEN": token})
    # the configured unlock method is never used to mint
    cmd = f"{sys.executable} -c print({PASSPHRASE!r})"
    kimen.ok("config", "unlock", "set", "exec", "--", *cmd.split(), env=kimen.with_pass())
    kimen.fail(10, "missing_passphrase", "session", "grant", "--secret", "**")
    kimen.fail(15, "wrong_passphrase", "session", "grant", "--secret", "**", env={"KIMEN_PASSPHRASE": "wrong one"})
    kimen.ok("session", "lock")
    kimen.fail(34, "session_locked", "session", "grant", "--secret", "**", env=kimen.with_pass())
    kimen.ok("session", "stop")
    kimen.fail(34, "session_unavailable", "session", "grant", "--secret", "**", env=kimen.with_pass())
    assert not kimen.session_dir.joinpath("session.sock").exists()  # it never starts a daemon


@pytest.mark.parametrize("entry", ["", "bad name!", "prod.", "prod..*"])
def test_a_scope_entry_no_name_can_match_is_refused(kimen, entry):
    """`--secret ''` used to mint a grant of "0 names" that reads nothing: a typo must say so."""
    _setup(kimen)
    done = kimen.fail(34, "invalid_secret_name", "--json", "session", "grant", "--secret", "prod.**",
                      "--secret", entry, env=kimen.with_pass())
    assert done.err_json()["name"] == entry and "glob" in done.err_json()["hint"]
    assert kimen.ok("--json", "session", "grants").json()["grants"] == []


def test_grant_for_one_command_is_revoked_when_it_exits(kimen):
    _setup(kimen, "--require-grant")
    script = ("import os, subprocess, sys; t = os.environ['KIMEN_SESSION_TOKEN']; "
              "sys.stdout.write(t.split('_')[3] + '\\n'); sys.stdout.flush(); "
              "r = subprocess.run(['kimen', 'secret', 'get', 'test.api_key', '--unsafe-stdout'], capture_output=True); "
              "sys.stdout.buffer.write(r.stdout); sys.stderr.write(r.stderr.decode()); sys.exit(7)")
    done = kimen.run("session", "grant", "--secret", "test.*", "--", sys.executable, "-c", script,
                     env=kimen.with_pass())
    assert done.code == 7
    grant_id, value = done.out.split(b"\n", 1)
    assert value == VALUES["test.api_key"]
    assert done.err.startswith(f"grant {grant_id.decode()}: ")
    assert b"kimen_grant_v1_" not in done.out and "kimen_grant_v1_" not in done.err
    assert kimen.ok("session", "grants", "--json").json()["grants"] == []  # revoked at exit
    kimen.fail(127, "command_not_found", "session", "grant", "--secret", "x", "--", "no-such-command-here",
               env=kimen.with_pass())
    assert kimen.ok("session", "grants", "--json").json()["grants"] == []
    kimen.fail(34, "missing_command", "session", "grant", "--secret", "x", "--", env=kimen.with_pass())


def test_token_file(kimen):
    _setup(kimen, "--require-grant")
    token = kimen.ok("session", "grant", "--secret", "test.**", env=kimen.with_pass()).stdout.strip()
    path = kimen.root / "token"
    path.write_text(token + "\n")
    os.chmod(path, 0o600)
    got = kimen.ok("--token-file", str(path), "secret", "get", "test.api_key", "--unsafe-stdout")
    assert got.out == VALUES["test.api_key"]
    run = kimen.ok("run", "--token-file", str(path), "--env", "K=test.api_key", "--", "sh", "-c",
                   'test "$K" = test-api-value && test -z "$KIMEN_SESSION_TOKEN"')
    assert run.code == 0
    conflict = kimen.ok("secret", "get", "test.api_key", "--unsafe-stdout", "--token-file", str(path),
                        env={"KIMEN_SESSION_TOKEN": "garbage"})
    assert "token_source_conflict" in conflict.err or "token file is used" in conflict.err
    os.chmod(path, 0o644)
    kimen.fail(34, "unsafe_token_file", "session", "status", "--token-file", str(path))


@pytest.mark.parametrize("argv", [("secret", "get", "test.api_key", "--unsafe-stdout"),
                                  ("run", "--env", "K=test.api_key", "--", "true"),
                                  ("session", "grants")])
def test_a_token_that_is_not_utf8_is_grant_invalid_like_any_malformed_token(kimen, argv):
    """A KIMEN_SESSION_TOKEN holding bytes that are not UTF-8 cannot be any grant's token: the same
    `grant_invalid` as a malformed one, not a protocol error, and `session status` answers as it
    does for any token (never "stopped" while a daemon holds the key)."""
    _setup(kimen)
    hostile = {"KIMEN_SESSION_TOKEN": tokens.PREFIX + "abc\udcff"}
    done = kimen.fail(35, "grant_invalid", "--json", *argv, env=hostile)
    assert b"test-api-value" not in done.out and "test-api-value" not in done.err
    status = kimen.ok("session", "status", "--json", env=hostile).json()
    assert status == kimen.ok("session", "status", "--json", env={"KIMEN_SESSION_TOKEN": "garbage"}).json()
    assert status["state"] == "unlocked"


def test_session_log_follow_and_filters(kimen):
    _setup(kimen)
    kimen.ok("secret", "get", "prod.api_key", "--unsafe-stdout")
    assert [r["names"] for r in _log(kimen, "--name", "prod.*") if r["op"] == "read"] == [["prod.api_key"]]
    assert _log(kimen, "--since", "1h") and _log(kimen, "--since", "2000-01-01T00:00:00Z")
    kimen.fail(34, "invalid_since", "session", "log", "--since", "yesterday")
    proc = kimen.popen("session", "log", "--follow", "--json", "--name", "test.db.url")
    try:
        kimen.ok("secret", "get", "test.db.url", "--unsafe-stdout")
        line = wait_for(lambda: proc.stdout.readline(), "a followed record", 30)
        assert json.loads(line)["names"] == ["test.db.url"]
    finally:
        proc.terminate()
        proc.wait(10)
