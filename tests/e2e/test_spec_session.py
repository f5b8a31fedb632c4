"""The JSON of `session start|status|lock|stop` carries exactly the status fields
the spec lists, and `session status` stays honest (exit 0, a real socket path) when the session
directory is unusable."""

from __future__ import annotations

import os

import pytest

STATUS_FIELDS = {"ok", "action", "exit_code", "warnings", "running", "state", "locked", "pid", "socket_path", "version",
                 "protocol", "require_grant", "mlock", "vault_path", "expires_at", "expired_at", "expired_by",
                 "ttl_seconds", "vaults", "grant_count", "version_mismatch"}
VAULT_FIELDS = {"vault_path", "vault_id", "state", "unlocked_at", "idle_expires_at", "max_expires_at", "ttl_seconds",
                "max_ttl_seconds", "expired_at", "expired_by"}


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    return kimen.vault


def test_every_session_command_reports_the_status_fields(kimen, vault):
    for args in (("status",), ("lock",), ("stop",)):  # no daemon
        doc = kimen.ok("session", *args, "--json").json()
        assert set(doc) == STATUS_FIELDS | ({"held"} if args == ("lock",) else set()), args
        assert doc["ok"] is True and doc["exit_code"] == 0 and doc["action"] == f"session_{args[0]}"
        assert (doc["running"], doc["state"], doc["locked"]) == (False, "stopped", True)
    doc = kimen.ok("session", "start", "--json", env=kimen.with_pass()).json()
    assert set(doc) == STATUS_FIELDS and doc["action"] == "session_start" and doc["state"] == "unlocked"
    assert [set(v) for v in doc["vaults"]] == [VAULT_FIELDS]
    assert doc["vaults"][0]["ttl_seconds"] == 900 and doc["vaults"][0]["max_ttl_seconds"] == 8 * 3600  # defaults
    assert doc["expires_at"] == min(doc["vaults"][0]["idle_expires_at"], doc["vaults"][0]["max_expires_at"])
    for args in (("status",), ("lock",)):
        doc = kimen.ok("session", *args, "--json").json()
        assert set(doc) == STATUS_FIELDS | ({"held"} if args == ("lock",) else set()) and doc["running"], args
    assert doc["state"] == "locked" and doc["locked"] is True and doc["expires_at"] is None
    doc = kimen.ok("session", "stop", "--json").json()
    assert set(doc) == STATUS_FIELDS and doc["running"] is False


def test_status_with_an_unsafe_session_dir_still_names_the_socket(kimen, vault):
    kimen.session_dir.mkdir(mode=0o755)
    os.chmod(kimen.session_dir, 0o755)
    done = kimen.run("session", "status", "--json")
    assert done.code == 0
    doc = done.json()
    assert doc["state"] == "stopped" and doc["socket_path"] == str(kimen.session_dir / "session.sock")
    assert "session directory is unsafe" in doc["warnings"][0]["message"] and done.err == ""
    # lock and stop cannot tell whether a daemon listens there: they refuse instead of claiming success
    kimen.fail(34, "session_dir_unsafe", "session", "lock")
    kimen.fail(34, "session_dir_unsafe", "session", "stop")
    assert os.listdir(kimen.session_dir) == []


def test_start_without_a_source_does_not_suggest_a_session(kimen, vault):
    """start reads sources 1-3, 5, 6 only; its hint lists those, not `session start`."""
    done = kimen.fail(10, "missing_passphrase", "session", "start")
    hint = done.err_json()["hint"]
    assert "session start" not in hint and "KIMEN_PASSPHRASE" in hint and "--stdin" in hint
    assert not (kimen.session_dir / "session.sock").exists()
