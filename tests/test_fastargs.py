"""`kimen.cli.fastargs` reads `run` argv without argparse: wherever it gives an answer, that answer is
exactly the namespace argparse gives; everything it does not know, it leaves to argparse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.cli.fastargs import SIMPLE, SIMPLE_WORDS, run_options, simple_options
from kimen.cli.flags import RUN_ALL, defaults
from kimen.cli.model import split_child_argv
from kimen.cli.parser import build_parser, parse


def argparse_namespace(argv: list[str], word: str | None = None) -> dict | None:
    """What the parser of truth reads (None when it refuses the argv), without its `parser` object."""
    word = word or next((t for t in argv if t in ("run", "project")), None)
    try:
        namespace = vars(parse(build_parser(word), argv))
    except errors.UsageError:
        return None
    namespace.pop("parser", None)
    return namespace


def fast_namespace(argv: list[str]) -> dict | None:
    return run_options(argv)


ACCEPTED = [
    ["run"],
    ["run", "--profile", "prod"],
    ["project", "run", "--profile", "prod"],
    ["run", "--map", "profiles/app.kmap", "--pristine", "--files-dir", "out"],
    ["run", "--dry-run", "--profile", "p", "--profile", "q"],  # the last one wins, as in argparse
    ["run", "--env", "A=secret:x", "--file", "f.json=y", "--envpath", "P=f.json", "--stdin", "const:hi",
     "--env", "B=const:two words"],
    ["--json", "--vault", "v.db", "run", "--no-session", "--profile", "p"],
    ["run", "--profile", "p", "--json", "--debug", "--passphrase-stdin", "--passphrase-cmd", "pass show kimen"],
    ["--vault", "a.db", "run", "--vault", "b.db"],  # a global flag after the command word wins
    ["--vault", "run", "run"],  # a vault file named run
    ["run", "--profile", ""],
    ["--debug", "project", "run", "--stdin", "secret:app.token", "--files-dir", "d"],
    ["run", "--bundle", "vault.age", "--identity", "id.txt", "--allow-unsigned", "--max-age", "7d"],
    ["run", "--identity-stdin", "--bundle", "b.age"],
]

DECLINED = [
    ["run", "--profile=prod"],         # --flag=value: argparse's business
    ["run", "--profile"],              # missing value
    ["run", "--profile", "-x"],        # a value that looks like a flag
    ["run", "--env", "--json"],
    ["run", "--trusted-signer", "kimen-sig-v1:x"],  # a repeatable flag
    ["run", "-h"],
    ["run", "--help"],
    ["run", "extra"],                  # a stray positional
    ["run", "--unknown"],
    ["project"],
    ["project", "render", "--dir", "d"],
    ["project", "plan"],
    ["--version", "run"],
    ["secret", "list"],
    ["--vault"],
    [],
]


@pytest.mark.parametrize("argv", ACCEPTED, ids=" ".join)
def test_accepted_argv_reads_as_argparse_reads_it(argv):
    fast = fast_namespace(argv)
    assert fast is not None, argv
    assert fast == argparse_namespace(argv)


@pytest.mark.parametrize("argv", DECLINED, ids=lambda a: " ".join(a) or "(empty)")
def test_other_argv_is_left_to_argparse(argv):
    assert run_options(argv) is None


def test_defaults_of_the_flag_table_are_the_parsers():
    """The table's defaults are every attribute argparse sets for `run` besides the command's identity."""
    namespace = argparse_namespace(["run"])
    own = {"command", "command_name", "handler", "area"}
    assert {k: v for k, v in namespace.items() if k not in own} == defaults(RUN_ALL)


def test_lists_are_fresh_for_every_reading():
    first = run_options(["run", "--env", "A=const:x"])
    second = run_options(["run"])
    assert first["inline"] == [("env", "A=const:x")] and second["inline"] == []
    assert first["trusted_signer"] is not second["trusted_signer"]


TOKENS = st.sampled_from([
    "run", "project", "render", "--profile", "--map", "--files-dir", "--pristine", "--dry-run", "--env", "--file",
    "--envpath", "--stdin", "--json", "--vault", "--passphrase-cmd", "--passphrase-stdin", "--no-session",
    "--debug", "--bundle", "--identity", "--allow-unsigned", "--version", "-h", "--profile=p", "--", "-",
    "-x", "", "p", "A=const:1", "f=secret:a.b", "a b", "-1", "--=",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=10))
def test_any_argv_the_reader_accepts_argparse_reads_the_same(raw):
    argv, _child = split_child_argv(raw)
    fast = fast_namespace(argv)
    if fast is not None:
        assert fast == argparse_namespace(argv), argv


VALUE_FLAGS = st.sampled_from(["--profile", "--map", "--files-dir", "--env", "--file", "--envpath", "--stdin",
                               "--vault", "--passphrase-cmd"])
BOOL_FLAGS = st.sampled_from(["--pristine", "--dry-run", "--json", "--passphrase-stdin", "--no-session", "--debug"])
VALUES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(lambda v: not v.startswith("-"))


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(st.one_of(st.tuples(VALUE_FLAGS, VALUES), st.tuples(BOOL_FLAGS)), max_size=8))
def test_every_argv_of_the_documented_grammar_is_read_without_argparse(project, flags):
    argv = ["project", "run"] if project else ["run"]
    for flag in flags:
        argv.extend(flag)
    if "--" in argv:
        return
    fast = fast_namespace(argv)
    assert fast is not None, argv
    assert fast == argparse_namespace(argv), argv


# --- the simple commands (version, vault path|info, secret list, session status) ---

SIMPLE_ACCEPTED = [
    ["version"], ["--json", "version"], ["version", "--debug"],
    ["vault", "path"], ["--vault", "v.db", "vault", "path", "--json"],
    ["vault", "info"], ["vault", "info", "--verify", "--no-session"],
    ["secret", "list"], ["secret", "list", "--json"], ["secret", "list", "--prefix", "app.", "--long"],
    ["secret", "list", "--match", "app.*", "--json", "--match", "db.**"],
    ["--passphrase-cmd", "pass x", "secret", "list", "--prefix", "p", "--prefix", "q"],
    ["session", "status"], ["session", "status", "--json", "--vault", "a.db"],
    ["status"], ["status", "--json"], ["--json", "status", "--profile", "dev"],
    ["status", "--vault", "v.db", "--no-session"],
    ["direnv", "--profile", "dev"], ["direnv", "--profile", "dev", "--unsafe-stdout", "--json"],
    ["--vault", "direnv", "direnv"],  # a vault file named direnv
    ["sync", "status"], ["sync", "status", "--json", "--remote", "team", "--strict"],
    ["--json", "sync", "status", "--stale-threshold", "1h", "--max-skew", "5m", "--terse"],
    ["sync", "status", "--identity", "id.txt", "--identity-stdin", "--no-session"],
    ["sync", "conflicts"], ["sync", "conflicts", "--strict", "--remote", "origin", "--json"],
    ["--vault", "sync", "sync", "status"],  # a vault file named sync
]
SIMPLE_DECLINED = [
    ["version", "--help"], ["vault", "info", "extra"], ["secret", "list", "--prefix"],
    ["secret", "list", "--prefix=p"], ["secret", "list", "--prefix", "-p"], ["session", "status", "--verify"],
    ["vault", "init"], ["secret", "get", "x"], ["session"], ["vault"], ["--vault"], ["-h", "version"],
    ["status", "--profile"], ["status", "--profile=dev"], ["status", "-h"], ["status", "extra"],
    ["direnv", "--unsafe"], ["direnv", "--profile", "-x"], ["status", "--map", "m.kmap"],
    ["sync"], ["sync", "--strict", "status"], ["sync", "status", "--dry-run"], ["sync", "status", "extra"],
    ["sync", "push"], ["sync", "status", "--remote=team"], ["sync", "conflicts", "--profile", "p"],
    ["sync", "status", "--remote"], ["sync", "status", "-h"],
]


def simple_namespace(argv: list[str]) -> dict | None:
    from kimen.cli import _handler

    found = simple_options(argv)
    if found is None:
        return None
    options = dict(found[1])
    options["handler"] = _handler(options["handler"])
    return options


@pytest.mark.parametrize("argv", SIMPLE_ACCEPTED, ids=" ".join)
def test_simple_command_reads_as_argparse_reads_it(argv):
    fast = simple_namespace(argv)
    assert fast is not None, argv
    assert fast == argparse_namespace(argv, word=next(w for w in argv if w in WORDS))


@pytest.mark.parametrize("argv", SIMPLE_DECLINED, ids=" ".join)
def test_other_simple_argv_is_left_to_argparse(argv):
    assert simple_options(argv) is None


def test_every_simple_command_is_in_the_table_and_the_dispatcher_knows_its_word():
    from kimen.cli import _SIMPLE_WORDS

    assert {words[0] for words in SIMPLE} == set(_SIMPLE_WORDS) == set(SIMPLE_WORDS)
    for words in SIMPLE:
        assert simple_namespace(list(words)) == argparse_namespace(list(words), word=words[0])


WORDS = {"version", "vault", "secret", "session", "status", "direnv", "sync"}
SIMPLE_TOKENS = st.sampled_from([
    "version", "vault", "path", "info", "secret", "list", "session", "status", "--verify", "--prefix",
    "--long", "--json", "--vault", "--passphrase-cmd", "--passphrase-stdin", "--no-session", "--debug", "-h",
    "--prefix=p", "p", "", "-x", "a b", "sync", "conflicts", "--remote", "--strict", "--stale-threshold",
    "--max-skew", "--terse", "--identity", "--dry-run",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(SIMPLE_TOKENS, max_size=8))
def test_any_simple_argv_the_reader_accepts_argparse_reads_the_same(argv):
    fast = simple_namespace(argv)
    if fast is not None:
        assert fast == argparse_namespace(argv, word=fast["command"]), argv
