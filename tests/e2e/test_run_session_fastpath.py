"""`kimen run --profile P -- CMD` with a live session is served by `kimen.fastpath` (no command
model) only in the plain case, and in every state gives exactly what the normal path gives: the
same exit code, stdout, stderr, child environment and audit records (where the session refused
the fast path's read, that refusal is recorded before the normal path's own requests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import KIMEN

NORMAL = "import sys; from kimen.cli import run_cli; sys.exit(run_cli())"  # the normal path, no kimen.fastpath
# the child prints its whole environment, sorted, NUL-separated (values are bytes: any byte but NUL)
DUMP = [sys.executable, "-c", "import os, sys; sys.stdout.buffer.write(b'\\0'.join(sorted("
        "k + b'=' + v for k, v in os.environb.items() if k not in (b'PWD', b'_', b'SHLVL'))))"]


def _audit(kimen) -> list[dict]:
    """The daemon's audit records so far, read from its file (what a reviewer of the log sees)."""
    path = kimen.root / "state" / "kimen" / "audit.jsonl"
    keep = ("op", "vault", "names", "grant_id", "outcome", "request_id", "client_version", "context")
    lines = path.read_text().splitlines() if path.exists() else []
    return [{k: doc.get(k) for k in keep} for doc in map(json.loads, lines)]


def both(kimen, *argv: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()):
    """Run `argv` through the installed kimen (fast path) and through the normal path; everything
    the user and the audit log see must be equal. Returns the fast run."""
    full = {**kimen.env, **(env or {})}
    for name in unset:
        full.pop(name, None)
    seen = []
    for launcher in ([KIMEN], [sys.executable, "-c", NORMAL]):
        before = len(_audit(kimen))
        done = subprocess.run([*launcher, *argv], capture_output=True, env=full, cwd=kimen.cwd, timeout=60)
        records = _audit(kimen)[before:]
        seen.append((done.returncode, done.stdout, done.stderr, records))
    fast, normal = seen
    assert fast[:3] == normal[:3], argv
    if fast[3] != normal[3]:  # a read the session refused is handed back: that one refusal is recorded too
        assert fast[3][0]["op"] == "read" and fast[3][0]["outcome"] != "ok" and fast[3][1:] == normal[3], argv
    return subprocess.CompletedProcess(argv, fast[0], fast[1], fast[2])


def took_fast_path(kimen, *argv: str, env: dict[str, str] | None = None) -> bool:
    out = subprocess.run([sys.executable, "-X", "importtime", KIMEN, *argv], capture_output=True,
                         env={**kimen.env, **(env or {})}, cwd=kimen.cwd, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = {line.split("|")[-1].strip() for line in out.stderr.decode().splitlines()
              if line.startswith("import time:")}
    return "kimen.fastpath" in loaded and "kimen.cli" not in loaded


VALUES = {"app.token": b"tok-value", "app.multi": b"line one\nline two\n", "app.bytes": b"\xff\xfe not utf-8 \x01",
          "app.nul": b"a\x00b", "base.url": b"https://example.test/x?y=1&z=2"}


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    kimen.write_profile("base", "env URL=base.url\nenv TOKEN=const:overridden\n")
    kimen.write_profile("p", "# the plain case\ninclude base\nenv TOKEN=app.token\nenv MULTI=app.multi\n"
                             "env BYTES=secret:app.bytes\nenv EMPTY=const:\nenv MODE=const:fast\n"
                             "env HOME=app.token  # replaces a variable kimen was given\n")
    kimen.write_profile("nul", "env X=app.nul\n")
    kimen.write_profile("missing", "env X=no.such.secret\nenv T=app.token\n")
    kimen.write_profile("path", "env PATH=app.token\n")
    kimen.write_profile("files", "file t=app.token\nenv T=app.token\n")
    kimen.write_profile("stdin", "stdin app.token\n")
    kimen.write_profile("execsrc", "env T=exec:printf x\n")
    kimen.write_profile("constonly", "env T=const:x\n")
    kimen.write_profile("broken", "env 1BAD=app.token\n")
    kimen.ok("session", "start", env=kimen.with_pass())
    return kimen


def test_the_plain_case_takes_the_fast_path_and_projects_the_same_environment(live):
    argv = ("run", "--profile", "p", "--", *DUMP)
    assert took_fast_path(live, *argv)
    done = both(live, *argv, env={"KIMEN_AGE_IDENTITY": "private", "KIMEN_FILES_DIR": "/outer", "LC_ALL": "C"})
    environ = dict(item.split(b"=", 1) for item in done.stdout.split(b"\0"))
    assert environ[b"TOKEN"] == b"tok-value" and environ[b"BYTES"] == VALUES["app.bytes"]
    assert environ[b"MULTI"] == VALUES["app.multi"] and environ[b"EMPTY"] == b"" and environ[b"MODE"] == b"fast"
    assert environ[b"HOME"] == b"tok-value" and environ[b"KIMEN_RUN"] == b"1"
    assert b"KIMEN_AGE_IDENTITY" not in environ and b"KIMEN_FILES_DIR" not in environ


def test_kimen_profile_and_the_exit_status_and_signals_of_the_child(live):
    assert took_fast_path(live, "run", "--", "true", env={"KIMEN_PROFILE": "p"})
    done = both(live, "run", "--", "sh", "-c", 'printf %s "$TOKEN"; exit 42', env={"KIMEN_PROFILE": "p"})
    assert (done.returncode, done.stdout) == (42, b"tok-value")
    assert both(live, "run", "--profile", "p", "--", "sh", "-c", "kill -TERM $$").returncode == -15  # exec'd in place


@pytest.mark.parametrize("argv", [
    ("run", "--profile", "nul", "--", "true"),  # NUL in a value: invalid_env_value
    ("run", "--profile", "missing", "--", "true"),
    ("run", "--profile", "path", "--", "true"),  # the profile sets PATH
    ("run", "--profile", "p", "--", "no-such-command-kimen"),
    ("run", "--profile", "p", "--", "/etc/passwd"),  # not executable
    ("run", "--profile", "p", "--", ""),
    ("run", "--profile", "p", "--"),
    ("run", "--profile", "files", "--", "sh", "-c", 'cat "$KIMEN_FILES_DIR/t"'),
    ("run", "--profile", "stdin", "--", "cat"),
    ("run", "--profile", "execsrc", "--", "sh", "-c", 'printf %s "$T"'),
    ("run", "--profile", "constonly", "--", "sh", "-c", 'printf %s "$T"'),
    ("run", "--profile", "broken", "--", "true"),
    ("run", "--profile", "nope", "--", "true"),
    ("run", "--profile", "../p", "--", "true"),
    ("run", "--profile", "-x", "--", "true"),
    ("run", "--", "true"),  # no profile at all
    ("run", "--profile", "p", "--mask", "--", "sh", "-c", 'printf %s "$TOKEN"'),
    ("run", "--profile", "p", "--dry-run", "--", "true"),
])
def test_every_other_case_gives_what_the_normal_path_gives(live, argv):
    both(live, *argv)


def test_states_match(live, tmp_path):
    argv = ("run", "--profile", "p", "--", "sh", "-c", 'printf %s "$TOKEN"')
    assert both(live, *argv).stdout == b"tok-value"
    assert both(live, *argv, env={"KIMEN_RUN": "1"}).stdout == b"tok-value"  # nested: the normal path warns
    assert both(live, *argv, env={"KIMEN_PASSPHRASE": "wrong passphrase"}).returncode == 15
    both(live, *argv, env={"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_y"})
    link = tmp_path / "link.db"
    link.symlink_to(live.vault)
    assert both(live, *argv, env={"KIMEN_VAULT": str(link)}).stdout == b"tok-value"
    assert both(live, *argv, env={"KIMEN_VAULT": str(tmp_path / "absent.db")}).returncode != 0
    live.ok("config", "vault", "set", str(live.vault))
    assert both(live, *argv).stdout == b"tok-value"
    os.chmod(live.session_dir, 0o755)
    try:
        assert b"unsafe" in both(live, *argv).stderr
    finally:
        os.chmod(live.session_dir, 0o700)
    live.ok("session", "lock")
    assert both(live, *argv).returncode != 0
    live.ok("session", "stop")
    assert both(live, *argv).returncode != 0


def test_a_session_that_requires_grants_refuses_both_alike(live):
    live.ok("session", "stop")
    live.ok("session", "start", "--require-grant", env=live.with_pass())
    done = both(live, "run", "--profile", "p", "--", "true")
    assert done.returncode != 0 and b"grant" in done.stderr


def test_more_names_than_one_read_holds_go_to_the_normal_path(live):
    """Past what one read's response can always hold the normal client reads in batches: the fast
    path hands the command over before asking anything, so the audit log is the normal path's."""
    (live.cwd / "many.env").write_text("".join(f"v{i}=value-{i}\n" for i in range(40)))
    live.ok("secret", "import", "many.env", "--prefix", "many.", env=live.with_pass())
    live.write_profile("many", "".join(f"env V{i}=many.v{i}\n" for i in range(40)))
    done = both(live, "run", "--profile", "many", "--", "sh", "-c", 'printf %s "$V39"')
    assert done.stdout == b"value-39"


@pytest.mark.parametrize("argv", [("run", "--profile", "p", "--", "true"),
                                  ("secret", "get", "app.token", "--unsafe-stdout")])
def test_ctrl_c_while_a_fast_path_waits_for_the_daemon_is_interrupted_not_a_traceback(live, argv):
    """The daemon is stopped, so the fast path's read waits; Ctrl-C then ends kimen as the normal
    path would: `interrupted`, 130, nothing on stdout, no traceback."""
    import signal
    import time

    pid = live.ok("session", "status", "--json").json()["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        proc = live.popen(*argv)
        time.sleep(1.5)  # connected and waiting for the answer
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (proc.returncode, out) == (130, b""), err
    assert err == b"kimen: error: interrupted\n", err
