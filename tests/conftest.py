"""Shared fixtures: every test runs with its own HOME, XDG dirs and session dir, kimen's variables
cleared, and small explicit KDF parameters (there is no hidden switch that weakens the KDF)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN_DIR = os.path.dirname(sys.executable)
KIMEN = shutil.which("kimen", path=BIN_DIR) or shutil.which("kimen")
SMALL_KDF = ["--kdf-memory", "8MiB", "--kdf-time", "1", "--kdf-parallelism", "1"]
PASSPHRASE = "correct horse battery staple"


def wait_for(predicate, what: str, limit: float = 60.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy (returned), or fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def isolated_env(root: Path) -> dict[str, str]:
    """A clean environment rooted at `root`: no KIMEN_* leaks in from the developer's shell."""
    home = root / "home"
    for sub in ("home", "config", "cache", "state", "runtime"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    session = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))  # short: AF_UNIX paths are limited
    session.rmdir()  # kimen creates it 0700 itself
    env = {
        "PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_RUNTIME_DIR": str(root / "runtime"),
        "KIMEN_SESSION_DIR": str(session),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return env


@dataclass
class Done:
    """A finished kimen run."""

    args: list[str]
    code: int
    out: bytes
    err: str

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "replace")

    def json(self) -> dict:
        return json.loads(self.out)

    def err_json(self) -> dict:
        """The error envelope: the last line of stderr (warnings come first)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert lines, f"no stderr for {self.args}"
        return json.loads(lines[-1])


class Kimen:
    """Runs the installed `kimen` command as a user would, in an isolated environment."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = isolated_env(root)
        self.cwd = root / "work"
        self.cwd.mkdir(exist_ok=True)
        self.vault = root / "config" / "kimen" / "vault.db"
        self.session_dir = Path(self.env["KIMEN_SESSION_DIR"])

    def run(
        self,
        *args: str,
        input: bytes | str | None = None,
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
        timeout: float = 120,
        cwd: Path | None = None,
    ) -> Done:
        full_env = {**self.env, **(env or {})}
        for name in unset:
            full_env.pop(name, None)
        if isinstance(input, str):
            input = input.encode()
        proc = subprocess.run(
            [KIMEN, *args],
            input=input if input is not None else b"",
            capture_output=True,
            env=full_env,
            cwd=cwd or self.cwd,
            timeout=timeout,
            start_new_session=True,  # no controlling terminal: kimen must never prompt in tests
        )
        done = Done(list(args), proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))
        assert "Traceback" not in done.err, f"traceback from kimen {args}:\n{done.err}"
        return done

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        """Start kimen without waiting (signals, /proc inspection), in its own session."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen([KIMEN, *args], env={**self.env, **(env or {})}, cwd=kw.pop("cwd", self.cwd),
                                start_new_session=True, **kw)

    def write_profile(self, name: str, text: str) -> Path:
        """A profile found by `--profile name` (./.kimen/profiles/name.kmap)."""
        path = self.cwd / ".kimen" / "profiles" / f"{name}.kmap"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def ok(self, *args: str, **kw) -> Done:
        done = self.run(*args, **kw)
        assert done.code == 0, f"kimen {args} exited {done.code}:\n{done.err}"
        return done

    def fail(self, code: int, reason: str, *args: str, **kw) -> Done:
        """Run with --json and assert the exit code and the envelope's reason."""
        done = self.run(*args, "--json", **kw) if "--" not in args else self.run(
            *_json_before_dashdash(args), **kw
        )
        assert done.code == code, f"kimen {args} exited {done.code}, wanted {code}:\n{done.err}"
        envelope = done.err_json()
        assert envelope["reason"] == reason, f"kimen {args}: reason {envelope['reason']}, wanted {reason}"
        assert envelope["ok"] is False and envelope["exit_code"] == code
        return done

    def with_pass(self, passphrase: str = PASSPHRASE) -> dict[str, str]:
        return {"KIMEN_PASSPHRASE": passphrase}

    def init_vault(self, passphrase: str = PASSPHRASE, *extra: str) -> Path:
        self.ok("vault", "init", *SMALL_KDF, *extra, env=self.with_pass(passphrase))
        return self.vault

    def set(self, name: str, value: bytes | str, passphrase: str = PASSPHRASE) -> Done:
        return self.ok("secret", "set", name, "--stdin", input=value, env=self.with_pass(passphrase))

    def get(self, name: str, passphrase: str = PASSPHRASE) -> bytes:
        return self.ok("secret", "get", name, "--unsafe-stdout", env=self.with_pass(passphrase)).out


def _json_before_dashdash(args: tuple[str, ...]) -> list[str]:
    i = args.index("--")
    return [*args[:i], "--json", *args[i:]]


@pytest.fixture
def kimen(tmp_path: Path):
    k = Kimen(tmp_path)
    yield k
    # never leave a daemon behind, whatever the test did
    if k.session_dir.exists():
        subprocess.run([KIMEN, "session", "stop"], env=k.env, capture_output=True, timeout=30)
        shutil.rmtree(k.session_dir, ignore_errors=True)
