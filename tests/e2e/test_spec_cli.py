"""SPEC §2 audit: the global CLI conventions, on the points no other test holds — usage errors
without a command word, words after `--` for a command that takes none, the usage line of a
command's own usage errors, `help --json`."""

from __future__ import annotations

import json

import pytest

# -- §2.1: every usage error is exit 2 / usage_error, printed with the usage line ---------------------

USAGE_ERRORS = [
    # (argv, usage line starts with, words of the message)
    (("--bogus",), "usage: kimen [", "unrecognized arguments: --bogus"),
    (("-x",), "usage: kimen [", "unrecognized arguments: -x"),
    (("--vault",), "usage: kimen [", "--vault: expected one argument"),
    (("--passphrase-cmd",), "usage: kimen [", "--passphrase-cmd: expected one argument"),
    (("--", "ls"), "usage: kimen [", "kimen takes no arguments after --"),
    (("config", "path", "--", "x"), "usage: kimen config path", "kimen config path takes no arguments after --"),
    (("version", "--", "x"), "usage: kimen version", "takes no arguments after --"),
    (("secret", "list", "--", "x"), "usage: kimen secret list", "takes no arguments after --"),
    (("session", "status", "--", "x"), "usage: kimen session status", "takes no arguments after --"),
    (("render", "--dir", "out", "--file", "f=const:x", "--", "x"), "usage: kimen render", "takes no arguments"),
    # raised by the command itself after parsing, still with its usage line
    (("completion",), "usage: kimen completion", "missing shell"),
    (("config", "unlock", "set", "env", "--", "x"), "usage: kimen config unlock set", "takes no command"),
]


@pytest.mark.parametrize("argv,usage,words", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_usage_errors_are_exit_2_with_the_usage_line(kimen, argv, usage, words):
    done = kimen.fail(2, "usage_error", *argv)
    assert words in done.err_json()["error"]
    human = kimen.run(*argv)
    assert human.code == 2 and human.out == b""
    assert human.err.startswith(usage), human.err
    assert f"kimen: error: {words}" in human.err or words in human.err.splitlines()[-1]
    assert not (kimen.cwd / "out").exists() and not kimen.vault.exists()  # nothing was done


@pytest.mark.parametrize("argv", [(), ("--json",), ("--vault", "v.db"), ("--",)], ids=lambda a: " ".join(a) or "-")
def test_global_flags_alone_still_print_the_overview(kimen, argv):
    done = kimen.ok(*argv)
    assert done.stdout.startswith("usage: kimen [") and "completion" in done.stdout and done.err == ""


@pytest.mark.parametrize("argv", [
    ("plan", "--env", "A=const:x", "--", "true"),
    ("project", "plan", "--env", "A=const:x", "--", "true"),
    ("config", "unlock", "set", "exec", "--", "pass", "show", "kimen"),
])
def test_commands_that_take_words_after_dashdash_still_do(kimen, argv):
    kimen.ok(*argv)


def test_help_json_with_an_unknown_topic_is_an_envelope(kimen):
    done = kimen.run("help", "--json", "nope")
    assert done.code == 2 and done.out == b""
    envelope = json.loads(done.err.splitlines()[-1])
    assert envelope["reason"] == "usage_error" and envelope["exit_code"] == 2 and "nope" in envelope["error"]
    assert kimen.ok("help", "config", "--json").stdout.startswith("usage: kimen config")
