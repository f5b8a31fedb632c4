"""Unlock: argon2id at the default parameters, and `session start` to readiness.

1. One key derivation (`kimen.crypto.derive_kek`, the vault's default 64 MiB, t=3, p=4), each in a
   fresh interpreter so peak RSS is that of one unlock: wall ms per derivation (median [min-max])
   and the process's peak RSS, against a bare interpreter's.
2. `kimen session start` until it returns (the daemon has bound its socket, unlocked the vault and
   answered), interleaved with `kimen session stop`, at the default and at a small KDF: the
   time a script waits before the session serves it.

Never asserts. Standalone: `python bench/bench_unlock.py [ROUNDS]`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import PASSPHRASE, SMALL_KDF, isolated_env, kimen

# One derivation in a fresh interpreter; prints "<ms> <peak RSS KiB before> <peak RSS KiB after>".
_DERIVE = """
import resource, sys, time
from kimen.crypto import derive_kek
from kimen.sensitive import Sensitive
from kimen.vault import KDF_DEFAULT
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
derive_kek(Sensitive(bytearray(b"bench passphrase for kimen")), bytes(16), KDF_DEFAULT).wipe()
ms = (time.perf_counter() - start) * 1000
print(f"{ms:.3f} {before} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
"""


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):7.1f}-{max(values):7.1f}]"


def _derivations(rounds: int) -> None:
    ms, rss_before, rss_after = [], [], []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", _DERIVE], check=True, capture_output=True, text=True).stdout
        a, b, c = out.split()
        ms.append(float(a))
        rss_before.append(int(b) / 1024)
        rss_after.append(int(c) / 1024)
    print(f"argon2id, default parameters (64 MiB, t=3, p=4): {rounds} derivations, each in a fresh interpreter")
    print(f"  ms per derivation                    {_summary(ms)}")
    print(f"  peak RSS MiB, interpreter + kimen    {_summary(rss_before)}")
    print(f"  peak RSS MiB, after the derivation   {_summary(rss_after)}")


def _session_starts(rounds: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-"))
    envs: dict[str, dict[str, str]] = {}
    try:
        for label, kdf in (("default KDF", []), ("small KDF (8 MiB, t=1)", SMALL_KDF)):
            home = root / str(len(envs))
            home.mkdir()
            env = isolated_env(home, KIMEN_PASSPHRASE=PASSPHRASE, KIMEN_VAULT=str(home / "vault.db"))
            kimen(env, "vault", "init", *kdf)
            envs[label] = env
        times: dict[str, list[float]] = {label: [] for label in envs}
        for _ in range(rounds):
            for label, env in envs.items():  # interleaved
                start = time.perf_counter()
                kimen(env, "session", "start", "--ttl", "15m")
                times[label].append((time.perf_counter() - start) * 1000)
                kimen(env, "session", "stop")
        print(f"kimen session start to readiness (daemon spawned, vault unlocked, answering): {rounds} rounds, ms")
        for label, values in times.items():
            print(f"  {label:36s} {_summary(values)}")
    finally:
        for env in envs.values():
            subprocess.run([shutil.which("kimen", path=env["PATH"]) or "kimen", "session", "stop"], env=env,
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    _derivations(rounds)
    _session_starts(rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
