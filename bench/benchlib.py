"""What every benchmark shares: the installed `kimen`, an isolated environment, the small KDF."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
KIMEN = shutil.which("kimen", path=str(BIN)) or "kimen"
SMALL_KDF = ["--kdf-memory", "8MiB", "--kdf-time", "1", "--kdf-parallelism", "1"]
PASSPHRASE = "bench passphrase for kimen"


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """HOME, XDG dirs and a session dir under `root` (created 0700), no KIMEN_* from the caller."""
    for sub in ("config", "cache", "state", "runtime", "home"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    return {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"), "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_STATE_HOME": str(root / "state"), "XDG_RUNTIME_DIR": str(root / "runtime"),
        "KIMEN_SESSION_DIR": str(root / "runtime" / "kimen"), "LANG": "C.UTF-8", **extra,
    }


def kimen(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the installed kimen; a failure raises (a benchmark never measures a broken setup)."""
    return subprocess.run([KIMEN, *args], env=env, input=stdin, capture_output=True, check=True)
