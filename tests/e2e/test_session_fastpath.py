"""The `secret get` fast path (kimen.fastpath) is taken only in the plain case, and every argv and
state gives exactly what the normal parser gives: same exit code, stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import KIMEN

NORMAL = "import sys; from kimen.cli import run_cli; sys.exit(run_cli())"  # the parser of truth, no fast path
VALUE = b'va"lue\\ with \x00 bytes\n\xff'


def both(kimen, *argv: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()):
    full = {**kimen.env, **(env or {})}
    for name in unset:
        full.pop(name, None)
    fast = subprocess.run([KIMEN, *argv], capture_output=True, env=full, cwd=kimen.cwd, timeout=60)
    normal = subprocess.run([sys.executable, "-c", NORMAL, *argv], capture_output=True, env=full, cwd=kimen.cwd,
                            timeout=60)
    assert (fast.returncode, fast.stdout, fast.stderr) == (normal.returncode, normal.stdout, normal.stderr), argv
    return fast


def took_fast_path(kimen, *argv: str) -> bool:
    out = subprocess.run([sys.executable, "-X", "importtime", KIMEN, *argv], capture_output=True, env=kimen.env,
                         cwd=kimen.cwd, timeout=60)
    lines = out.stderr.decode().splitlines()
    loaded = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    return "kimen.fastpath" in loaded and "argparse" not in loaded


SHAPES = [
    ("secret", "get", "{name}", "--unsafe-stdout"),
    ("secret", "get", "--unsafe-stdout", "{name}"),
]


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    kimen.set("app.token", VALUE)
    kimen.set("big.value", os.urandom(1024 * 1024))
    kimen.ok("session", "start", env=kimen.with_pass())
    return kimen


@pytest.mark.parametrize("shape", SHAPES)
def test_plain_case_takes_the_fast_path(live, shape):
    argv = [a.format(name="app.token") for a in shape]
    assert took_fast_path(live, *argv)
    assert both(live, *argv).stdout == VALUE
    big = both(live, *[a.format(name="big.value") for a in shape])
    assert big.returncode == 0 and len(big.stdout) == 1024 * 1024


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["missing.name", "bad..name", "x" * 129, "ünï", "a b", "-x", ".a", "a.", "a:b"])
def test_errors_match_the_normal_path(live, shape, name):
    done = both(live, *[a.format(name=name) for a in shape])
    assert done.returncode != 0


@pytest.mark.parametrize("argv", [
    ("secret", "get", "app.token"),
    ("secret", "get", "app.token", "--unsafe-stdout", "--json"),
    ("secret", "get", "app.token", "--unsafe-stdout", "--no-session"),
    ("secret", "get", "app.token", "--unsafe"),
    ("secret", "get", "app.token", "--unsafe-stdout=1"),
    ("secret", "get", "--", "app.token"),
    ("secret", "get", "app.token", "app.token"),
    ("secret", "get", "--unsafe-stdout", "--unsafe-stdout"),
])
def test_other_shapes_match(live, argv):
    both(live, *argv)


def test_states_match(live, tmp_path):
    argv = ("secret", "get", "app.token", "--unsafe-stdout")
    assert both(live, *argv).stdout == VALUE
    # explicit passphrase sources win over the session
    assert both(live, *argv, env={"KIMEN_PASSPHRASE": "wrong passphrase"}).returncode == 15
    assert both(live, *argv, env=live.with_pass()).stdout == VALUE
    # a grant token is the normal path's business
    both(live, *argv, env={"KIMEN_SESSION_TOKEN": "kimen_grant_v1_x_y"})
    # the vault through KIMEN_VAULT, relative, via a symlink; another vault; a missing one
    link = tmp_path / "link.db"
    link.symlink_to(live.vault)
    assert both(live, *argv, env={"KIMEN_VAULT": str(link)}).stdout == VALUE
    rel = os.path.relpath(live.vault, live.cwd)
    assert both(live, *argv, env={"KIMEN_VAULT": rel}).stdout == VALUE
    assert both(live, *argv, env={"KIMEN_VAULT": str(tmp_path / "absent.db")}).returncode == 14
    other = tmp_path / "other.db"
    live.ok("vault", "init", "--kdf-memory", "8MiB", "--kdf-time", "1", "--kdf-parallelism", "1", "--vault",
            str(other), env=live.with_pass())
    assert both(live, *argv, env={"KIMEN_VAULT": str(other)}).returncode == 10
    # a config file (vault.path may be set there)
    live.ok("config", "vault", "set", str(live.vault))
    assert both(live, *argv).stdout == VALUE
    # locked, then stopped
    live.ok("session", "lock")
    assert both(live, *argv).returncode == 10
    live.ok("session", "stop")
    assert both(live, *argv).returncode == 10


def test_unsafe_session_dir_matches(live):
    argv = ("secret", "get", "app.token", "--unsafe-stdout")
    os.chmod(live.session_dir, 0o755)
    try:
        done = both(live, *argv)
        assert done.returncode == 10 and b"unsafe" in done.stderr
    finally:
        os.chmod(live.session_dir, 0o700)


def test_name_rule_is_the_stores():
    from kimen.fastpath import _valid_name
    from kimen.values import is_valid_secret_name

    names = ["a", "a.b", "A-b_c.d-1", "_x", "-x", "a..b", ".a", "a.", "a b", "ä", "a" * 128, "a" * 129, "a.-b",
             "0", "a/b", "a\x00", "a:b", "a.b.c.d", "", "a\n"]
    for name in names:
        assert _valid_name(name) == is_valid_secret_name(name), name
