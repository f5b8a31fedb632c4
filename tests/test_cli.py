"""The CLI frame: help, version, usage errors, envelopes, last-resort handlers."""

from __future__ import annotations

import json

import pytest

from kimen import cli
from tests.fixtures.failing_command import CANARY


@pytest.fixture
def failing(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "boom", ("tests.fixtures.failing_command", "fail on purpose"))


def test_bug_is_exit_1_with_type_only(failing, capsys):
    assert cli.run_cli(["boom", "bug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kimen: error: internal error (ValueError)\n")
    assert CANARY not in err and "Traceback" not in err


def test_debug_traceback_withholds_exception_text(failing, capsys):
    assert cli.run_cli(["boom", "bug", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "failing_command.py" in err
    assert "builtins.KeyError: <message withheld>" in err and "builtins.ValueError: <message withheld>" in err
    assert CANARY not in err


def test_bug_json_envelope(failing, capsys):
    assert cli.run_cli(["boom", "bug", "--json"]) == 1
    env = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert env == {"ok": False, "error": "internal error (ValueError)", "exit_code": 1, "reason": "internal_error",
                   "hint": env["hint"], "warnings": []}


def test_ctrl_c_is_130(failing, capsys):
    assert cli.run_cli(["boom", "interrupt", "--json"]) == 130
    assert json.loads(capsys.readouterr().err)["reason"] == "interrupted"


@pytest.mark.parametrize("argv", [[], ["help"], ["--help"], ["-h"]])
def test_overview_help(argv, capsys):
    with pytest.raises(SystemExit) if argv in (["--help"], ["-h"]) else _noop():
        assert cli.run_cli(argv) == 0
    out = capsys.readouterr().out
    for command in ("vault", "secret", "config", "completion"):
        assert command in out


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_version_forms(capsys):
    assert cli.run_cli(["--version"]) == 0
    plain = capsys.readouterr().out
    assert cli.run_cli(["version"]) == 0
    assert capsys.readouterr().out == plain
    assert cli.run_cli(["version", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"ok", "action", "exit_code", "warnings", "version", "raw_version", "commit", "date",
                        "python"} and doc["version"] == plain.strip()
    assert doc["ok"] is True and doc["action"] == "version" and doc["exit_code"] == 0 and doc["warnings"] == []


@pytest.mark.parametrize("argv,detail", [
    (["nope"], "invalid choice"),
    (["secret", "set"], "required"),
    (["secret", "list", "--bogus"], "unrecognized arguments: --bogus"),
    (["vault", "init", "--kdf-memory"], "expected one argument"),
])
def test_usage_errors(argv, detail, capsys):
    assert cli.run_cli([*argv, "--json"]) == 2
    env = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert env["reason"] == "usage_error" and env["exit_code"] == 2 and detail in env["error"]
    assert cli.run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("usage: kimen") and "kimen: error: " in err


def test_global_flags_anywhere_before_dashdash(capsys):
    assert cli.run_cli(["--json", "version"]) == 0
    first = capsys.readouterr().out
    assert cli.run_cli(["version", "--json"]) == 0
    assert capsys.readouterr().out == first


def test_everything_after_dashdash_is_the_childs():
    kimen_args, child = cli.split_child_argv(["run", "--json", "--", "cmd", "--json", "--", "x"])
    assert kimen_args == ["run", "--json"] and child == ["cmd", "--json", "--", "x"]
    assert cli.split_child_argv(["secret", "list"]) == (["secret", "list"], None)


def test_only_the_invoked_command_module_is_imported():
    import subprocess
    import sys

    code = ("import sys; from kimen.cli import run_cli; run_cli(['version']); "
            "print(sorted(m for m in sys.modules if m.startswith('kimen.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # the leaves the fast reader needs and the one command module `version` is in: no argparse tree
    assert out.strip().splitlines()[-1] == ("['kimen.cli.fastargs', 'kimen.cli.flags', 'kimen.cli.misc', "
                                            "'kimen.cli.model']")
