"""Config `history.keep` through the installed kimen: how many older values each name keeps
(default 10, 0-100), a lowered setting trimming a name only when that name changes (or on
`--purge`), the same rule through a session (the command's config, not the daemon's), and a bad
setting refused with `invalid_config_value` before anything is written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Kimen


def config(kimen: Kimen, doc: object) -> None:
    path = kimen.root / "config" / "kimen" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def kept(kimen: Kimen, name: str) -> list[int]:
    return [e["revision"] for e in kimen.ok("secret", "history", name, "--json").json()["entries"]]


def set_times(kimen: Kimen, name: str, times: int, **kw) -> None:
    for i in range(times):
        kimen.ok("secret", "set", name, "--stdin", input=f"{name}-{i}", **kw)


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    return kimen


def test_default_keeps_ten_and_a_raised_setting_keeps_more(vault):
    set_times(vault, "a", 13, env=vault.with_pass())
    assert len(kept(vault, "a")) == 10
    assert vault.ok("secret", "history", "a", "--json").json()["keep"] == 10
    config(vault, {"history": {"keep": 12}})
    set_times(vault, "a", 3, env=vault.with_pass())
    assert len(kept(vault, "a")) == 12
    assert vault.ok("secret", "history", "a", "--json").json()["keep"] == 12
    config(vault, {"history": {"keep": None}})  # null: the default
    assert vault.ok("secret", "history", "a", "--json").json()["keep"] == 10


def test_lowering_trims_a_name_only_when_it_changes(vault):
    set_times(vault, "a", 6, env=vault.with_pass())
    set_times(vault, "b", 6, env=vault.with_pass())
    b_before = kept(vault, "b")
    assert kept(vault, "a") == [5, 4, 3, 2, 1] and len(b_before) == 5
    config(vault, {"history": {"keep": 2}, "unrelated": {"kept": True}})
    assert len(kept(vault, "a")) == 5  # nothing goes until the name changes
    vault.ok("secret", "set", "a", "--stdin", input="new", env=vault.with_pass())
    newest = kept(vault, "a")
    assert newest == [6, 5]  # the two most recent older values stay
    vault.ok("secret", "set", "c", "--stdin", input="other name", env=vault.with_pass())
    assert kept(vault, "b") == b_before  # never trimmed without being named
    assert vault.ok("secret", "history", "--purge", "b", "--json", env=vault.with_pass()).json()["count"] == 5
    vault.ok("vault", "info", "--verify", env=vault.with_pass())
    restored = vault.ok("secret", "restore", "a", "--revision", str(newest[-1]), env=vault.with_pass())
    assert restored.code == 0 and len(kept(vault, "a")) == 2


def test_zero_keeps_none_and_empties_a_name_at_its_next_change(vault):
    set_times(vault, "a", 4, env=vault.with_pass())
    set_times(vault, "m.x", 3, env=vault.with_pass())
    config(vault, {"history": {"keep": 0}})
    vault.ok("secret", "set", "a", "--stdin", input="latest", env=vault.with_pass())
    assert kept(vault, "a") == []
    vault.ok("secret", "rm", "a", env=vault.with_pass())
    vault.fail(12, "secret_not_found", "secret", "history", "a")  # removed and nothing kept
    vault.ok("secret", "mv", "m.x", "m.y", env=vault.with_pass())
    assert kept(vault, "m.y") == []
    vault.ok("vault", "info", "--verify", env=vault.with_pass())


def test_through_a_session_the_commands_config_applies(vault):
    set_times(vault, "a", 5, env=vault.with_pass())
    vault.ok("session", "start", env=vault.with_pass())
    try:
        config(vault, {"history": {"keep": 1}})  # after the daemon started: still applies
        vault.ok("secret", "set", "a", "--stdin", input="via session", unset=("KIMEN_PASSPHRASE",))
        assert len(kept(vault, "a")) == 1
        config(vault, {"history": {"keep": 3}})
        set_times(vault, "a", 3, unset=("KIMEN_PASSPHRASE",))
        assert len(kept(vault, "a")) == 3
        vault.ok("secret", "restore", "a", "--revision", str(kept(vault, "a")[-1]), unset=("KIMEN_PASSPHRASE",))
        assert len(kept(vault, "a")) == 3
        config(vault, {"history": {"keep": 0}})
        vault.ok("secret", "generate", "a", "--replace", unset=("KIMEN_PASSPHRASE",))
        assert kept(vault, "a") == []
        config(vault, {"history": {"keep": 101}})
        vault.fail(26, "invalid_config_value", "secret", "set", "a", "--stdin", input="x",
                   unset=("KIMEN_PASSPHRASE",))
    finally:
        vault.ok("session", "stop")


@pytest.mark.parametrize("keep", [-1, 101, 2.5, True, "3", [3], {"n": 3}])
def test_a_bad_setting_is_refused_before_anything_is_written(vault, keep):
    vault.set("a", "original")
    config(vault, {"history": {"keep": keep}})
    for argv in (("secret", "set", "a", "--stdin"), ("secret", "set", "new.name", "--stdin")):
        done = vault.fail(26, "invalid_config_value", *argv, input="changed", env=vault.with_pass())
        err = done.err_json()
        assert err["field"] == "history.keep" and err["path"].endswith("config.json")
        assert "0 to 100" in err["error"] and "history" in err["hint"]
    done = vault.run("secret", "set", "a", "--stdin", input="changed", env=vault.with_pass())
    assert done.code == 26 and done.err.startswith("kimen: error: config value history.keep is invalid in ")
    vault.fail(26, "invalid_config_value", "secret", "history", "a")
    assert vault.get("a") == b"original"  # reads need no history setting
    config(vault, {})
    assert kept(vault, "a") == [] and "new.name" not in vault.ok("secret", "list").stdout.split()


def test_a_history_section_that_is_not_an_object(vault):
    config(vault, {"history": 5})
    done = vault.fail(26, "invalid_config_value", "secret", "set", "a", "--stdin", input="x", env=vault.with_pass())
    assert done.err_json()["field"] == "history"


def test_the_daemon_refuses_a_history_keep_out_of_range(vault):
    from kimen.daemon.client import Connection

    vault.set("a", "original")
    vault.ok("session", "start", env=vault.with_pass())
    try:
        path = str(vault.vault.resolve())
        change = {"op": "set", "name": "a", "value_b64": "eA=="}
        socket = str(vault.session_dir / "session.sock")
        for keep in (-1, 101, 10**30, "3", True, None):
            for op, fields in (("write", {"changes": [change]}), ("restore", {"name": "a", "revision": 1})):
                with Connection(socket) as conn:  # a protocol error closes the connection
                    answer = conn.call_raw(op, vault_path=path, history_keep=keep, **fields)
                assert answer.get("ok") is False and answer.get("reason") == "session_protocol_error", (keep, answer)
        with Connection(socket) as conn:
            assert conn.call_raw("write", vault_path=path, changes=[change], history_keep=0).get("ok") is True
    finally:
        vault.ok("session", "stop")
    assert vault.get("a") == b"x" and kept(vault, "a") == []
