"""Invariant 16 (docs/security.md): the daemon's first step makes it non-dumpable with core dumps off, before it
binds its socket or can hold a key (checked in a fresh process, as the daemon runs it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import ctypes, resource
from kimen.daemon.server.process import harden
libc = ctypes.CDLL(None)
before = libc.prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
harden()
print(before, libc.prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_harden_turns_off_dumpability_and_core_dumps():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split(" ", 2)
    assert out[0] == "1"  # a fresh process is dumpable: the probe can see the change
    assert out[1] == "0"
    assert out[2].strip() == "(0, 0)"


def test_harden_is_the_daemons_first_step():
    from kimen.daemon.server import process

    tree = ast.parse(Path(process.__file__).read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    first_daemon = next(i for i, n in enumerate(main.body) if "Daemon(" in ast.unparse(n))
    harden_at = next(i for i, n in enumerate(main.body) if ast.unparse(n) == "harden()")
    assert harden_at < first_daemon
