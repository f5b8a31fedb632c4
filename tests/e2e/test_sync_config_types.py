"""A hand-edited config can give a remote's field any JSON type, or drop its path. The sync command
that acts on that remote then says which field is wrong (`invalid_config_value`, 26, with the
field and the config path), never an internal error, and `kimen remote set` or `remote rm` can
still fix it (docs/sync.md, "Which remote")."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def synced(kimen):
    kimen.init_vault()
    identity, remote = kimen.root / "id.txt", kimen.root / "remote"
    remote.mkdir()
    kimen.ok("bundle", "keygen", "--out", str(identity))
    kimen.set("app.a", "a")
    kimen.ok("sync", "init", "team", "--path", str(remote), "--identity", str(identity), "--member", "ana",
             env=kimen.with_pass())
    config = kimen.root / "config" / "kimen" / "config.json"
    assert json.loads(config.read_text())["remotes"][0]["name"] == "team"
    kimen.config_file = config  # type: ignore[attr-defined]
    kimen.remote_dir = remote  # type: ignore[attr-defined]
    return kimen


def _edit(kimen, **fields):
    doc = json.loads(kimen.config_file.read_text())
    for key, value in fields.items():
        if value is _DROP:
            doc["remotes"][0].pop(key, None)
        else:
            doc["remotes"][0][key] = value
    kimen.config_file.write_text(json.dumps(doc))


_DROP = object()


@pytest.mark.parametrize("key, value, detail", [
    ("path", 5, "a JSON number, not text"), ("path", None, "missing"), ("path", _DROP, "missing"),
    ("path", "", "missing"), ("identity", ["x"], "a JSON array, not text"),
    ("type", {"a": 1}, "a JSON object, not text"),
    ("remote_id", True, "a JSON boolean, not text"), ("branch", 1.5, "a JSON number, not text"),
    ("bundle_path", [], "a JSON array, not text"),
])
def test_a_field_of_another_type_is_named(synced, key, value, detail):
    _edit(synced, **{key: value})
    for args in (("sync", "status"), ("sync", "pull"), ("sync", "push"), ("sync", "log")):
        done = synced.fail(26, "invalid_config_value", *args, env=synced.with_pass())
        envelope = done.err_json()
        assert envelope["field"] == f"remotes[team].{key}" and envelope["path"] == str(synced.config_file)
        assert detail in envelope["error"]
    human = synced.run("sync", "status")
    assert human.code == 26 and f"remotes[team].{key}" in human.err and "kimen remote set team" in human.err


def test_remote_set_repairs_what_the_edit_broke(synced):
    _edit(synced, path=5)
    synced.fail(26, "invalid_config_value", "sync", "status")
    synced.ok("remote", "set", "team", "--path", str(synced.remote_dir))
    assert synced.run("sync", "status").code == 0
    _edit(synced, identity={"a": 1})
    synced.ok("remote", "rm", "team")
    assert "team" not in synced.ok("remote", "list").stdout
