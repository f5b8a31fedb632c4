"""The `kimen run` hot path imports nothing heavy: checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys

FORBIDDEN = {
    "nacl", "argon2", "sqlite3", "_sqlite3", "pyrage", "git", "prompt_toolkit", "asyncio", "platformdirs",
    "kimen.crypto", "kimen.vault", "kimen.bundle", "kimen.daemon.server", "kimen.config",
}
# also kept off the exec-in-place path (they cost more than a whole Python start-up together)
HEAVY = {"dataclasses", "inspect", "typing", "subprocess", "threading", "json", "shutil", "secrets"}
# argparse and what it brings: `run` reads its common argv without them (kimen.cli.fastargs)
PARSER = {"argparse", "re", "enum", "functools", "collections", "collections.abc", "kimen.cli.parser",
          "kimen.cli.project"}
# the supervised start and the `--mask` relay: only a run that needs them imports them
SUPERVISION = {"kimen.projection.run", "kimen.projection.relay", "kimen.projection.mask", "kimen.projection.files",
               "pty", "tty", "termios", "fcntl", "select", "selectors", "ctypes", "threading", "errno"}
# the error table: read on the first lookup of an error class, so neither importing the run path
# (no class looked up at import, not even as a default argument) nor a run that fails nowhere loads it
ERROR_TABLE = {"kimen.reasons"}
# the store interface's other record types and the terminal writer: a `run` that succeeds needs
# neither (`kimen.values` and `kimen.jsontext` carry what it uses)
NOT_ON_RUN = {"kimen.store", "kimen.output"}


def _modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    return set(out.stdout.split())


def test_run_path_imports_nothing_heavy():
    loaded = _modules(
        "import kimen.cli, kimen.cli.run, kimen.cli.fastargs, kimen.cli.pipeline, kimen.access\n"
        "from kimen.projection import kmap, resolve, env, files, run\n"
    )
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert not loaded & (HEAVY - {"subprocess", "threading"}), sorted(loaded & HEAVY)
    assert not loaded & PARSER, sorted(loaded & PARSER)
    assert not loaded & ERROR_TABLE
    assert not loaded & NOT_ON_RUN, sorted(loaded & NOT_ON_RUN)


def test_exec_in_place_run_imports_nothing_heavy(tmp_path):
    """Drive the real command with -X importtime (exec replaces the process: stderr keeps the list)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import sys; from kimen.__main__ import main; sys.exit(main())",
                          "run", "--env", "A=const:x", "--", "true"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "kimen.projection.env" in loaded
    assert not loaded & (FORBIDDEN | HEAVY | PARSER | SUPERVISION | ERROR_TABLE | NOT_ON_RUN), sorted(
        loaded & (FORBIDDEN | HEAVY | PARSER | SUPERVISION | ERROR_TABLE | NOT_ON_RUN))


def test_session_run_path_imports_nothing_heavy():
    """With a live session the store is the daemon client: it must stay as light as the rest."""
    import importlib.util

    import pytest

    if importlib.util.find_spec("kimen.daemon") is None or importlib.util.find_spec("kimen.daemon.client") is None:
        pytest.skip("no session daemon client in this build yet")
    loaded = _modules("import kimen.cli.run, kimen.access, kimen.daemon.client\n"
                      "from kimen.projection import kmap, resolve, env, files, run\n")
    assert not loaded & FORBIDDEN, sorted(loaded & FORBIDDEN)
    assert not loaded & {"dataclasses", "inspect", "typing", "subprocess", "shutil", "secrets"}
    assert not loaded & ERROR_TABLE


_GC_PROBE = """
import gc, sys
from kimen.__main__ import main
import kimen.projection.run as prun

def start(*args, **kwargs):  # the supervised path reached: report the collector, start nothing
    print("supervising, collector on:", gc.isenabled(), flush=True)
    raise SystemExit(0)

prun.start = start
sys.argv = ["kimen", *sys.argv[1:]]
code = main()
print("returned, collector on:", gc.isenabled(), flush=True)
"""


def _gc_probe(tmp_path, *argv: str) -> str:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    out = subprocess.run([sys.executable, "-c", _GC_PROBE, *argv], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    return out.stdout


def test_the_collector_is_off_only_while_a_short_command_starts(tmp_path):
    """`kimen.__main__` turns the cyclic collector off for start-up (nothing it allocates is
    garbage); the commands read with argparse and a supervised `run` (a process that lives as long
    as its child) turn it back on; the argparse-free `version` finishes with it off."""
    assert "returned, collector on: False" in _gc_probe(tmp_path, "version")
    assert "returned, collector on: True" in _gc_probe(tmp_path, "completion", "bash")
    supervised = _gc_probe(tmp_path, "run", "--file", "f.txt=const:x", "--", "true")
    assert "supervising, collector on: True" in supervised, supervised
