"""An expired session is not a locked one: status says `expired`, when and which TTL; a command with
no other passphrase source fails with `session_expired` (10) naming the vault and the time, never a
bare `missing_passphrase`; later sources still win; `lock`, `start` and `stop` end the record; and
`doctor`'s `session` check tells stopped, locked, expired and unlocked apart."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PASSPHRASE, SMALL_KDF, wait_for
from tests.e2e.session_helpers import status

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.token", b"s3cret-value")
    return kimen.vault


def start(kimen, *extra: str, **kw) -> None:
    kimen.ok("session", "start", *extra, env={**kimen.with_pass(), **kw.pop("env", {})}, **kw)


def wait_expired(kimen, **kw) -> dict:
    return wait_for(lambda: (doc := status(kimen, **kw))["state"] == "expired" and doc, "expiry", limit=30)


def test_idle_expiry_is_reported_and_refused_with_its_time(kimen, vault):
    start(kimen, "--ttl", "1s")
    doc = wait_expired(kimen)
    assert doc["running"] is True and doc["locked"] is True and doc["expires_at"] is None
    assert doc["expired_by"] == "idle_ttl" and RFC3339.fullmatch(doc["expired_at"])
    assert doc["vault_path"] == str(vault)
    [entry] = doc["vaults"]
    assert entry["state"] == "expired" and entry["vault_path"] == str(vault)
    assert (entry["expired_at"], entry["expired_by"]) == (doc["expired_at"], "idle_ttl")
    assert kimen.ok("session", "status").stdout == (
        f"session: expired (vault={vault} at {doc['expired_at']}, idle TTL)\n")
    # no passphrase source: session_expired, exit 10, the vault and the time in the message
    for args in (("secret", "get", "app.token", "--unsafe-stdout"), ("secret", "list", "--long"),
                 ("run", "--env", "A=app.token", "--", "true")):
        done = kimen.run(*args)
        if args[1] == "list":  # list needs no key: it works whatever the session
            assert done.code == 0, done.err
            continue
        assert done.code == 10, (args, done.err)
        assert (f"kimen: error: the session for {vault} expired at {doc['expired_at']}; "
                "run `kimen session start`") in done.err
        assert "no passphrase available" not in done.err
    envelope = kimen.fail(10, "session_expired", "secret", "get", "app.token", "--unsafe-stdout").err_json()
    assert envelope["vault_path"] == str(vault) and envelope["expired_at"] == doc["expired_at"]
    assert envelope["expired_by"] == "idle_ttl"
    # refused requests do not bring it back, and status stays "expired"
    assert status(kimen)["state"] == "expired"


def test_max_ttl_expiry_says_max_ttl(kimen, vault):
    start(kimen, "--ttl", "1s", "--max-ttl", "1s")
    doc = wait_expired(kimen)
    assert doc["expired_by"] == "max_ttl"
    assert kimen.ok("session", "status").stdout.endswith(", max TTL)\n")


def test_later_sources_still_win_over_an_expired_session(kimen, vault):
    start(kimen, "--ttl", "1s")
    wait_expired(kimen)
    # an explicit source, and the configured unlock method, unlock locally as usual
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout", env=kimen.with_pass()).out == b"s3cret-value"
    kimen.ok("config", "unlock", "set", "exec", "--", "printf", PASSPHRASE)
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout").out == b"s3cret-value"
    kimen.ok("config", "unlock", "set", "prompt")
    kimen.fail(10, "session_expired", "secret", "get", "app.token", "--unsafe-stdout")
    # a grant token means "the session only": expired is the reason
    kimen.fail(10, "session_expired", "secret", "get", "app.token", "--unsafe-stdout",
               env={"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_" + "A" * 43})
    # --no-session never looks at the session
    kimen.fail(10, "missing_passphrase", "secret", "get", "app.token", "--unsafe-stdout", "--no-session")


def test_lock_start_and_stop_end_the_expired_state(kimen, vault, tmp_path):
    other = tmp_path / "other.db"
    kimen.ok("vault", "init", *SMALL_KDF, "--vault", str(other), env=kimen.with_pass())
    start(kimen, "--ttl", "1s")
    start(kimen, "--vault", str(other), "--ttl", "1s")
    wait_expired(kimen)
    wait_expired(kimen, env={"KIMEN_VAULT": str(other)})
    # the other expired vault is listed after the selected one
    lines = kimen.ok("session", "status").stdout.splitlines()
    assert lines[0].startswith(f"session: expired (vault={vault} at ")
    assert lines[1].startswith(f"also expired: vault={other} at ") and lines[1].endswith(", idle TTL")
    # lock: expired -> locked (and says it locked something)
    done = kimen.ok("session", "lock", "--json").json()
    assert done["held"] is True and done["state"] == "locked" and done["expired_at"] is None
    assert status(kimen)["state"] == "locked"
    kimen.fail(10, "missing_passphrase", "secret", "get", "app.token", "--unsafe-stdout")
    # start: expired -> unlocked
    start(kimen, "--vault", str(other))
    assert status(kimen, env={"KIMEN_VAULT": str(other)})["state"] == "unlocked"
    # stop forgets the record
    start(kimen, "--ttl", "1s")
    wait_expired(kimen)
    kimen.ok("session", "stop")
    assert status(kimen)["state"] == "stopped"
    kimen.fail(10, "missing_passphrase", "secret", "get", "app.token", "--unsafe-stdout")


def _doctor_session(kimen, **kw) -> dict:
    done = kimen.run("doctor", "--json", **kw)
    return next(c for c in done.json()["checks"] if c["name"] == "session")


def test_doctor_tells_stopped_locked_expired_and_unlocked_apart(kimen, vault):
    check = _doctor_session(kimen)
    assert (check["status"], check["state"]) == ("ok", "stopped")
    start(kimen, "--ttl", "1s")
    check = _doctor_session(kimen)
    assert (check["status"], check["state"]) == ("ok", "unlocked") and "unlocked until" in check["message"]
    doc = wait_expired(kimen)
    check = _doctor_session(kimen)
    assert (check["status"], check["state"]) == ("ok", "expired")
    assert check["message"] == f"expired at {doc['expired_at']}, idle TTL; run kimen session start"
    kimen.ok("session", "lock")
    check = _doctor_session(kimen)
    assert (check["status"], check["state"]) == ("ok", "locked") and "is locked" in check["message"]
    human = kimen.run("doctor").stdout
    assert "- [ok] session: session daemon running (pid=" in human
    kimen.ok("session", "stop")
    kimen.session_dir.chmod(0o755)
    check = _doctor_session(kimen)
    assert (check["status"], check["state"]) == ("warning", "stopped") and "unsafe" in check["message"]
