"""What every benchmark shares: the installed `kimen`, an isolated environment, the small KDF."""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
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


def measure(cases: dict[str, tuple[list[str], dict[str, str]]], rounds: int, cwd: Path | None = None,
            width: int = 44) -> None:
    """Run each case once (a broken setup fails loudly), then `rounds` interleaved rounds, every
    other one in reverse order (so the first case, the yardstick, never always follows the
    heaviest one with the CPU caches cold); print per case the wall ms median [min-max] and the
    child's CPU ms median, each with its ratio to the first case."""
    for argv, env in cases.values():
        subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True)
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    order = list(cases.items())
    for round_ in range(rounds):
        for name, (argv, env) in order if round_ % 2 == 0 else order[::-1]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wall[name].append((time.perf_counter() - t0) * 1000)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
    first = next(iter(cases))
    base, cbase = statistics.median(wall[first]), statistics.median(cpu[first])
    for name in cases:
        med, cmed = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:{width}s} {med:7.1f} [{min(wall[name]):6.1f}-{max(wall[name]):6.1f}]  x{med / base:4.2f}"
              f"   cpu {cmed:6.1f}  x{cmed / cbase:4.2f}")
