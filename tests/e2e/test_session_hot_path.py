"""With a live session, `secret get`, `session status` and `run` import nothing heavy.

The real command runs in a fresh interpreter under `-X importtime` against a real daemon; the
import log is the proof (`sys.modules` of the finished process, in effect).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run_hot_path import FORBIDDEN, PARSER

# the client side is stdlib-only and avoids these start-up costs too
HEAVY = {"dataclasses", "inspect", "typing", "subprocess", "shutil", "secrets", "asyncio", "threading"}


def _imports(kimen, *argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import sys; from kimen.__main__ import main; sys.exit(main())", *argv],
                         capture_output=True, env=kimen.env, cwd=kimen.cwd, timeout=60)
    err = out.stderr.decode()
    loaded = {line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    return out, loaded


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    kimen.set("app.token", b"hot-value")
    kimen.ok("session", "start", env=kimen.with_pass())
    (Path(kimen.cwd) / "p.kmap").write_text("env A=app.token\n")
    return kimen


@pytest.mark.parametrize("argv", [
    ("secret", "get", "app.token", "--unsafe-stdout"),
    ("secret", "get", "app.token", "--unsafe-stdout", "--json"),
    ("session", "status"),
    ("session", "status", "--json"),
    ("run", "--env", "A=app.token", "--", "true"),
    ("run", "--map", "p.kmap", "--", "true"),  # a profile file read through kimen.fsutil
    ("status",),
    ("status", "--json"),
])
def test_hot_path_with_a_live_session_imports_nothing_heavy(live, argv):
    out, loaded = _imports(live, *argv)
    assert out.returncode == 0, out.stderr[-2000:]
    # really served by the session: the daemon client, or for plain `secret get` the fast path
    assert "kimen.daemon.client" in loaded or "kimen.fastpath" in loaded
    if argv[:2] == ("secret", "get") and "--json" not in argv:
        assert out.stdout == b"hot-value"
    if argv[:2] == ("session", "status") or argv[0] == "status":
        assert b"unlocked" in out.stdout
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert not loaded & HEAVY - ({"subprocess", "threading"} if argv[0] == "run" else set()), sorted(loaded & HEAVY)
    if argv[0] == "run":  # exec in place: no supervision, relay, pty or terminal machinery
        supervision = {"kimen.projection.run", "kimen.projection.relay", "kimen.projection.mask", "pty", "tty",
                       "termios", "fcntl", "select", "selectors", "ctypes", "threading"}
        assert "kimen.projection.env" in loaded
        assert not loaded & supervision, sorted(loaded & supervision)
        # short values are decoded without binascii (whose import loads libz)
        assert not loaded & {"binascii", "zlib"}, sorted(loaded & {"binascii", "zlib"})
        # nothing failed: no error class was looked up (the table of kimen.reasons stays unread), and
        # the errno names only a refusal needs are not imported either
        assert not loaded & {"kimen.reasons", "errno"}, sorted(loaded & {"kimen.reasons", "errno"})
        # a `run` that succeeds writes nothing of its own and reads plain values: neither the
        # terminal writer nor the store interface's other record types are imported
        assert not loaded & {"kimen.output", "kimen.store"}, sorted(loaded & {"kimen.output", "kimen.store"})
    if argv[0] == "run" or argv == ("session", "status"):  # read without argparse (kimen.cli.fastargs)
        assert not loaded & PARSER, sorted(loaded & PARSER)
    elif argv[:2] == ("session", "status"):  # --json: still no parser
        assert not loaded & {"argparse", "kimen.cli.parser"}
    if argv[0] in ("status", "session"):
        # envelopes are written through `_json` (kimen.jsontext.compact_json), never `json` and its
        # `re`; profile names are checked by kimen.paths, not the profile parser; the status
        # question is the client's, not the process control's; the client imports the store's
        # value types only when it reads or writes values
        light = {"json", "re", "kimen.projection.kmap", "kimen.daemon.control", "kimen.store"}
        assert not loaded & light, sorted(loaded & light)


@pytest.mark.parametrize("argv", [("version",), ("--json", "version"), ("vault", "path"), ("vault", "info"),
                                  ("secret", "list"), ("secret", "list", "--json")])
def test_simple_commands_are_read_without_argparse(live, argv):
    """`version`, `vault path|info` and `secret list` read their argv from the flag tables: no
    argparse, `re`, `enum` or parser module, and `version` not even the daemon client."""
    out, loaded = _imports(live, *argv)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "kimen.cli.fastargs" in loaded
    # `json` and the vault file (sqlite3, for info and list) bring `re` and `collections` themselves
    plain = "--json" not in argv and argv[:2] not in (("vault", "info"), ("secret", "list"))
    parser = PARSER if plain else {"argparse", "kimen.cli.parser"}
    assert not loaded & parser, sorted(loaded & parser)
    # names, sizes and KDF parameters are plaintext: no crypto module, no KDF, no prompt
    assert not loaded & {"kimen.crypto", "nacl", "argon2", "kimen.passphrase", "prompt_toolkit", "kimen.vault.store",
                         "urllib.parse"}
    if argv[-1] == "version":
        assert not loaded & (FORBIDDEN | HEAVY | {"kimen.daemon.client", "kimen.access"}), sorted(loaded)


@pytest.mark.parametrize("argv", [
    ("direnv", "--profile", "dev"),
    ("direnv", "--profile", "dev", "--unsafe-stdout"),
])
def test_direnv_imports_nothing_heavy(live, argv):
    live.write_profile("dev", "env TOKEN=secret:app.token\n")
    out, loaded = _imports(live, *argv)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(b"export KIMEN_PROFILE=dev\n")
    assert (b"export TOKEN='hot-value'" in out.stdout) == ("--unsafe-stdout" in argv)
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    # the shell encoder is a byte set, not a regular expression: no `re`, `enum` or `json`
    assert not loaded & {"re", "enum", "json"}, sorted(loaded & {"re", "enum", "json"})
