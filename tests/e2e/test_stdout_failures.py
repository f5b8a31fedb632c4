"""kimen's own standard streams fail. On a full disk (`/dev/full`) or a closed stdout every command
reports `write_failed` on stderr with its command's exit code (never "internal error", a
traceback, or Python's own "Exception ignored" at exit); a reader that went away ends it quietly
with 141; a closed or unreadable stdin is `stdin_unreadable`; a closed stderr loses the message,
not the exit code (docs/errors.md)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import KIMEN

FULL = "write failed: standard output: No space left on device"


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    kimen.set("app.token", b"value-of-the-token")
    kimen.ok("session", "start", env=kimen.with_pass())
    return kimen


def _to(kimen, target, *argv: str, input: bytes = b""):
    return subprocess.run([KIMEN, *argv], stdout=target, stderr=subprocess.PIPE, input=input, env=kimen.env,
                          cwd=kimen.cwd, timeout=60, start_new_session=True)


def _to_full(kimen, *argv: str, input: bytes = b""):
    with open("/dev/full", "wb") as full:
        done = _to(kimen, full, *argv, input=input)
    err = done.stderr.decode()
    assert "Traceback" not in err and "Exception ignored" not in err and "internal error" not in err, err
    return done.returncode, err


@pytest.mark.parametrize(("argv", "code"), [
    (("secret", "get", "app.token", "--unsafe-stdout"), 11),  # the fast path (kimen.fastpath)
    (("secret", "get", "--unsafe-stdout", "app.token"), 11),
    (("secret", "list"), 11),
    (("session", "status"), 34),
    (("vault", "path"), 24),
    (("version",), 1),
    (("help",), 1),
    (("--help",), 1),
    (("help", "run"), 1),
    (("secret", "list", "--help"), 1),
    (("completion", "bash"), 1),
])
def test_a_full_disk_is_write_failed_with_the_commands_code(live, argv, code):
    got, err = _to_full(live, *argv)
    assert (got, err.splitlines()[0]) == (code, f"kimen: error: {FULL}"), err
    assert "kimen: hint: free space where the output goes, or send it to a file or a pipe" in err


@pytest.mark.parametrize(("argv", "code"), [
    (("secret", "get", "app.token", "--unsafe-stdout", "--json"), 11),
    (("secret", "list", "--json"), 11),
    (("session", "status", "--json"), 34),
    (("session", "log", "--json"), 34),
])
def test_with_json_the_envelope_on_stderr_says_write_failed(live, argv, code):
    got, err = _to_full(live, *argv)
    envelope = json.loads(err.splitlines()[-1])
    assert got == code
    assert (envelope["reason"], envelope["error"], envelope["exit_code"]) == ("write_failed", FULL, code)
    assert "value-of-the-token" not in err


def test_the_fast_path_and_the_parser_report_the_same(live):
    """The value was read, then could not be written: the same message and code either way."""
    import sys

    normal = "import sys; from kimen.cli import run_cli; sys.exit(run_cli())"
    with open("/dev/full", "wb") as full:
        fast = subprocess.run([KIMEN, "secret", "get", "app.token", "--unsafe-stdout"], stdout=full,
                              stderr=subprocess.PIPE, env=live.env, cwd=live.cwd, timeout=60)
        slow = subprocess.run([sys.executable, "-c", normal, "secret", "get", "app.token", "--unsafe-stdout"],
                              stdout=full, stderr=subprocess.PIPE, env=live.env, cwd=live.cwd, timeout=60)
    assert (fast.returncode, fast.stderr) == (slow.returncode, slow.stderr)
    assert fast.returncode == 11 and FULL in fast.stderr.decode()


def test_what_the_command_did_stays_done(live):
    code, err = _to_full(live, "secret", "set", "app.other", "--stdin", input=b"kept")
    assert (code, FULL in err) == (11, True)
    assert live.get("app.other") == b"kept"


@pytest.mark.parametrize("argv", [
    ("secret", "list", "--json"), ("secret", "list"), ("secret", "get", "app.token", "--unsafe-stdout"),
    ("help",), ("version",),
])
def test_a_reader_that_went_away_ends_it_quietly(live, argv):
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE
    try:
        done = _to(live, write, *argv)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, b"")


def _with_closed(kimen, redirect: str, *argv: str, env: dict[str, str] | None = None):
    """kimen started with a standard stream closed (`>&-`, `<&-`, `2>&-`) or redirected by `sh`."""
    done = subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", KIMEN, *argv], capture_output=True,
                          env={**kimen.env, **(env or {})}, cwd=kimen.cwd, timeout=60, start_new_session=True)
    err = done.stderr.decode()
    assert "Traceback" not in err and "internal error" not in err, err
    return done.returncode, done.stdout, err


@pytest.mark.parametrize(("argv", "code"), [
    (("secret", "get", "app.token", "--unsafe-stdout"), 11), (("secret", "list"), 11), (("version",), 1),
    (("help",), 1), (("session", "status"), 34),
])
def test_a_closed_stdout_is_write_failed(live, argv, code):
    got, _, err = _with_closed(live, ">&-", *argv)
    assert (got, err.splitlines()[0]) == (code, "kimen: error: write failed: standard output: it is closed")
    assert "standard output is closed" in err.splitlines()[1]  # the hint: not "free space"


@pytest.mark.parametrize("stderr", ["2>&-", "2>/dev/full"])
def test_a_closed_or_full_stderr_keeps_the_exit_code(live, stderr):
    """Not Python's 120 for the message still buffered at exit: the command's own code."""
    assert _with_closed(live, stderr, "secret", "get", "app.missing", "--unsafe-stdout")[0] == 12
    assert _with_closed(live, f"{stderr} >&-", "secret", "list")[0] == 11
    assert _with_closed(live, stderr, "secret", "list", "--json", "--bogus")[0] == 2


STDIN_READERS = [
    ("secret", "set", "app.new", "--stdin"),
    ("secret", "import", "-", "--prefix", "imp."),
    ("inject", "-i", "-", "--unsafe-stdout"),
    ("bundle", "recipient", "--identity-stdin"),
    ("secret", "set", "app.new", "--value", "v", "--passphrase-stdin"),
]


@pytest.mark.parametrize("argv", STDIN_READERS)
@pytest.mark.parametrize(("redirect", "problem"), [("<&-", "it is closed"), ("0>stdin.txt", "Bad file descriptor")])
def test_an_unreadable_stdin_is_stdin_unreadable(live, argv, redirect, problem):
    """Closed, or open for writing only: nothing is read, nothing is changed."""
    before = live.ok("secret", "list").out
    got, _, err = _with_closed(live, redirect, *argv, "--json")
    envelope = json.loads(err.splitlines()[-1])
    assert (envelope["reason"], envelope["error"]) == ("stdin_unreadable", f"cannot read standard input: {problem}")
    assert got == envelope["exit_code"] != 0
    assert live.ok("secret", "list").out == before


def test_run_mask_that_cannot_relay_to_a_full_disk_is_write_failed(live):
    """The child's writes into the relay succeed; kimen's to its stdout do not: never a silent 0."""
    live.write_profile("p", "env TOKEN=app.token\n")
    code, err = _to_full(live, "run", "--mask", "--profile", "p", "--", "sh", "-c", 'echo "$TOKEN"; echo done')
    assert (code, err.splitlines()[0]) == (23, f"kimen: error: {FULL}"), err
    assert "value-of-the-token" not in err and "free space" in err.splitlines()[1]
    # started with stdout closed: the hint says so, not "free space"
    got, _, closed = _with_closed(live, ">&-", "run", "--mask", "--profile", "p", "--", "sh", "-c", 'echo "$TOKEN"')
    assert got == 23 and "standard output is closed" in closed.splitlines()[1], closed
    assert "value-of-the-token" not in closed


def test_run_mask_whose_reader_went_away_ends_like_the_child(live):
    """A closed reader is not kimen's failure: the child meets a closed pipe, as without kimen."""
    live.write_profile("p", "env TOKEN=app.token\n")
    read, write = os.pipe()
    os.close(read)
    try:
        done = _to(live, write, "run", "--mask", "--profile", "p", "--", "sh", "-c", "yes")
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, b"")


@pytest.mark.parametrize("argv", [("direnv", "--profile", "p"), ("direnv", "--profile", "p", "--unsafe-stdout")])
def test_direnv_with_a_closed_stdout_is_write_failed(live, argv):
    live.write_profile("p", "env TOKEN=app.token\n")
    got, out, err = _with_closed(live, ">&-", *argv)
    assert (got, err.splitlines()[0]) == (22, "kimen: error: write failed: standard output: it is closed"), err
    assert b"value-of-the-token" not in out and "value-of-the-token" not in err


def test_run_mask_that_cannot_relay_its_stderr_fails_with_23(live):
    """The message itself is lost with stderr; the exit code still says the output was."""
    live.write_profile("p", "env TOKEN=app.token\n")
    with open("/dev/full", "wb") as full:
        done = subprocess.run([KIMEN, "run", "--mask", "--profile", "p", "--", "sh", "-c", "echo oops >&2"],
                              stdout=subprocess.PIPE, stderr=full, env=live.env, cwd=live.cwd, timeout=60,
                              start_new_session=True)
    assert (done.returncode, done.stdout) == (23, b"")
