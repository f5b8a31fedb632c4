"""The installed `kimen run` reads its common argv without argparse (kimen.cli.fastargs); in every
state it gives exactly what the argparse reading gives: same exit code, stdout and stderr."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import KIMEN
from tests.test_run_hot_path import PARSER

NORMAL = "import sys; from kimen.cli import run_cli; sys.exit(run_cli(fast=False))"  # always argparse


def both(kimen, *argv: str, env: dict[str, str] | None = None, stdin: bytes = b""):
    full = {**kimen.env, **(env or {})}
    fast = subprocess.run([KIMEN, *argv], input=stdin, capture_output=True, env=full, cwd=kimen.cwd, timeout=60)
    normal = subprocess.run([sys.executable, "-c", NORMAL, *argv], input=stdin, capture_output=True, env=full,
                            cwd=kimen.cwd, timeout=60)
    assert (fast.returncode, fast.stdout, fast.stderr) == (normal.returncode, normal.stdout, normal.stderr), argv
    return fast


def loaded_modules(kimen, *argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", KIMEN, *argv], capture_output=True, env=kimen.env,
                         cwd=kimen.cwd, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.decode().splitlines()
    return {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    kimen.set("app.token", b"tok-value")
    kimen.set("app.cert", b"-----cert-----\n")
    kimen.write_profile("p", "env TOKEN=app.token\nenv MODE=const:fast\n")
    kimen.write_profile("files", "file cert.pem=app.cert\nenvpath CERT=cert.pem\nenv TOKEN=app.token\n")
    kimen.write_profile("broken", "env 1BAD=app.token\n")
    kimen.ok("session", "start", env=kimen.with_pass())
    return kimen


@pytest.mark.parametrize("argv", [
    ("run", "--profile", "p", "--", "true"),
    ("project", "run", "--profile", "files", "--", "true"),
    ("--json", "run", "--pristine", "--env", "A=const:x", "--", "true"),
])
def test_common_run_argv_never_imports_argparse(live, argv):
    loaded = loaded_modules(live, *argv)
    # the first is served by the session fast path (kimen.fastpath, no command model at all)
    assert "kimen.cli.fastargs" in loaded or (argv[:2] == ("run", "--profile") and "kimen.cli" not in loaded)
    assert not loaded & PARSER, sorted(loaded & PARSER)


def test_flags_the_reader_does_not_know_go_to_argparse(live):
    loaded = loaded_modules(live, "run", "--profile=p", "--", "true")
    assert "argparse" in loaded


@pytest.mark.parametrize("argv", [
    ("run", "--profile", "p", "--", "sh", "-c", 'printf "%s|%s" "$TOKEN" "$MODE"; exit 42'),
    ("project", "run", "--profile", "p", "--", "sh", "-c", 'printf "%s" "$TOKEN"'),
    ("run", "--profile", "files", "--", "sh", "-c", 'cat "$CERT"; printf "%s" "$TOKEN"'),
    ("run", "--profile", "p", "--stdin", "app.token", "--", "cat"),
    ("run", "--env", "A=app.token", "--pristine", "--", "sh", "-c", 'printf "%s" "$A"'),
    ("run", "--profile", "p", "--dry-run", "--", "./app", "--flag"),
    ("--json", "run", "--profile", "p", "--dry-run", "--", "./app"),
    ("run", "--profile", "missing", "--", "true"),
    ("--json", "run", "--profile", "missing", "--", "true"),
    ("run", "--profile", "broken", "--", "true"),
    ("run", "--env", "A=no.such.secret", "--", "true"),
    ("--json", "run", "--env", "A=no.such.secret", "--", "true"),
    ("run", "--profile", "p", "--map", "x.kmap", "--", "true"),
    ("run", "--profile", "p", "--", "no-such-command-kimen"),
    ("run", "--profile", "p", "--", "sh", "-c", "kill -TERM $$"),
    ("run", "--profile", "p", "--"),
    ("run", "--file", "../x=app.token", "--", "true"),
    ("run", "--profile", "p", "--files-dir", "out", "--file", "t=app.token", "--", "sh", "-c", "cat out/t"),
    ("--vault", "absent.db", "run", "--profile", "p", "--", "true"),
    ("run", "--profile", "p", "--no-session", "--", "true"),
    ("run", "--profile", "p", "--passphrase-stdin", "--no-session", "--", "sh", "-c", 'printf "%s" "$TOKEN"'),
    # usage errors the command raises itself: printed with the command's usage line on both paths
    ("run", "--files-dir", "", "--file", "t=app.token", "--", "true"),
    ("project", "run", "--files-dir", "", "--", "true"),
    ("--vault", "", "run", "--env", "A=app.token", "--", "true"),
])
def test_fast_and_argparse_readings_give_the_same_result(live, argv):
    stdin = b"correct horse battery staple\n" if "--passphrase-stdin" in argv else b""
    both(live, *argv, stdin=stdin)


def test_states_match(live):
    argv = ("run", "--profile", "p", "--", "sh", "-c", 'printf "%s" "$TOKEN"')
    assert both(live, *argv).stdout == b"tok-value"
    assert both(live, *argv, env={"KIMEN_PASSPHRASE": "wrong passphrase"}).returncode == 15
    live.ok("session", "lock")
    assert both(live, *argv).returncode != 0
    assert both(live, *argv, env=live.with_pass()).stdout == b"tok-value"
    live.ok("session", "stop")
    assert both(live, *argv, env=live.with_pass()).stdout == b"tok-value"
