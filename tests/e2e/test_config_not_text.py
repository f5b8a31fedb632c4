"""A config string holding a lone surrogate escape (`"\\ud800"` in the JSON text: valid JSON grammar,
but no path, argv or UTF-8 output can carry it) is `invalid_config_json` (26) naming the field,
from every command that reads the config, and never exit 1 from any command (the list of commands
is derived from the parser, so a new command is swept too)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Kimen

CONFIGS = {
    "vault.path": '{"vault": {"path": "/tmp/\\ud800.db"}}',
    "unlock.exec[1]": '{"unlock": {"method": "exec", "exec": ["echo", "\\udc80"]}}',
    "remotes[0].name": '{"remotes": [{"name": "team\\ud834"}]}',
}


def _commands() -> list[list[str]]:
    """Every leaf command with placeholder words for its positionals (optional ones too)."""
    import argparse

    from kimen.cli.parser import build_parser

    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for name, sub in subs[0].choices.items():
                walk(sub, [*path, name])
            return
        words = [a for a in parser._actions if not a.option_strings and a.nargs in (None, 1, "?")]
        argv = [*path, *("x" for _ in words)]
        if path[-1] == "run":
            argv += ["--env", "A=app.a", "--", "true"]
        found.append(argv)

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("field", sorted(CONFIGS))
def test_no_command_exits_1_on_a_config_string_that_is_not_text(kimen: Kimen, field):
    path = kimen.root / "config" / "kimen" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIGS[field])
    refused = set()
    for argv in _commands():
        done = kimen.run(*argv, "--json") if "--" not in argv else kimen.run(
            *argv[:argv.index("--")], "--json", *argv[argv.index("--"):])
        assert done.code != 1, f"kimen {argv}: exit 1\n{done.err}"
        envelope = json.loads(done.err) if done.err else {}  # reports (map lint, doctor) use stdout
        if envelope.get("reason") == "invalid_config_json":
            assert done.code == 26 and envelope["field"] == field, argv
            assert field in envelope["error"] and "\\ud" not in envelope["error"], envelope
            refused.add(" ".join(argv))
    # the commands that need the vault or the config say why
    assert {"vault path", "secret list", "secret rm x", "config show", "config vault show", "config vault set x",
            "run --env A=app.a -- true"} <= refused, sorted(refused)


def test_the_human_message_names_the_field(kimen: Kimen):
    path = kimen.root / "config" / "kimen" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CONFIGS["vault.path"])
    done = kimen.run("secret", "list")
    assert done.code == 26 and done.err.splitlines() == [
        f"kimen: error: config file is not valid JSON: {path}: vault.path holds a lone surrogate escape (not text)",
        f"kimen: hint: fix `vault.path` in {path}"]
    doctor = kimen.run("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.out)["checks"]}
    assert doctor.code == 27 and checks["config_json"]["status"] == "error"
    assert "vault.path" in checks["config_json"]["message"]


@pytest.mark.parametrize(("argv", "field"), [
    (("config", "vault", "set", "/tmp/v\udcff.db"), "vault.path"),
    (("config", "unlock", "set", "exec", "--", "/bin/p\udcff", "a"), "unlock.exec[0]"),
    (("config", "unlock", "set", "exec", "--", "pass", "show", "k\udcff"), "unlock.exec[2]"),
    (("remote", "add", "team", "--path", "/tmp/t\udcff"), "remotes[0].path"),
])
def test_a_setter_refuses_a_value_that_is_not_utf8_and_writes_nothing(kimen: Kimen, argv, field):
    """A non-UTF-8 word given to a setter cannot be stored in the JSON text: the setter says so
    up front and writes nothing, rather than writing a config every later command refuses."""
    path = kimen.root / "config" / "kimen" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"keep": 1}\n')
    done = kimen.fail(2, "usage_error", "--json", *argv)
    envelope = done.err_json()
    assert f"`{field}` would not be text" in envelope["error"] and envelope["hint"]
    assert path.read_text() == '{"keep": 1}\n'
    kimen.ok("config", "show")
