"""Shared pieces of the vault end-to-end tests: a `kimen` that records every run and, at teardown,
checks that the canary value never reached stderr (nor stdout, unless `--unsafe-stdout` asked for
it), plus a logical fingerprint of a vault file used to prove "nothing changed"."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import KIMEN, Done, Kimen

CANARY = b"kimen-e2e-CANARY-9f3c1d7a"
TABLES = ("vault", "secrets", "sync_state", "sync_baseline")


class RecordingKimen(Kimen):
    """The conftest `Kimen`, keeping every finished run for the leak checks."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.runs: list[Done] = []

    def run(self, *args: str, **kw) -> Done:
        done = super().run(*args, **kw)
        self.runs.append(done)
        return done

    def human_fail(self, code: int, *args: str, **kw) -> Done:
        """Run without --json: the exit code, one `kimen: error:` line, then only hints/warnings."""
        done = self.run(*args, **kw)
        assert done.code == code, f"kimen {args} exited {done.code}, wanted {code}:\n{done.err}"
        assert_one_error_line(done)
        return done


def assert_one_error_line(done: Done) -> str:
    """One `kimen: error:` line; around it only hints, warnings and (usage errors) the usage text."""
    lines = [line for line in done.err.splitlines() if line.strip()]
    if done.code == 2 and lines and lines[0].startswith("usage: "):
        lines = [line for line in lines if line.startswith("kimen: ")]
    errors = [line for line in lines if line.startswith("kimen: error: ")]
    assert len(errors) == 1, f"kimen {done.args}: wanted one error line, got:\n{done.err}"
    others = [line for line in lines if line not in errors]
    assert all(line.startswith(("kimen: hint: ", "kimen: warning: ")) for line in others), done.err
    assert done.out == b"", f"kimen {done.args} printed on stdout while failing"
    message = errors[0].removeprefix("kimen: error: ")
    assert message[:1] == message[:1].lower(), message
    return message


def check_no_canary(runs: list[Done]) -> None:
    for done in runs:
        assert CANARY.decode() not in done.err, f"canary in stderr of kimen {done.args}"
        if "--unsafe-stdout" not in done.args:
            assert CANARY not in done.out, f"canary in stdout of kimen {done.args}"


def recording_kimen(tmp_path: Path) -> Iterator[RecordingKimen]:
    """The body of each module's `vk` fixture: a recording `kimen`; after the test, no captured
    stderr (nor stdout without `--unsafe-stdout`) holds the canary. Like the conftest fixture, it
    never leaves a daemon or session dir behind."""
    k = RecordingKimen(tmp_path)
    yield k
    if k.session_dir.exists():
        subprocess.run([KIMEN, "session", "stop"], env=k.env, capture_output=True, timeout=30)
        shutil.rmtree(k.session_dir, ignore_errors=True)
    check_no_canary(k.runs)


def vault_state(path: Path) -> str:
    """A digest of every row of every vault table (the header, secrets and sync tables): equal
    digests mean the vault's content did not change. Read-only; works with a -wal present."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        h = hashlib.sha256()
        for table in TABLES:
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                h.update(repr(row).encode())
        h.update(repr(conn.execute("PRAGMA user_version").fetchone()).encode())
        return h.hexdigest()
    finally:
        conn.close()


def db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)
