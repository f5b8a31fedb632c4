"""The commands scripts, prompts and agents call most, against `python -c pass` in the same run.

Interleaved rounds (every round runs every case once; default 25 rounds); for each case the
median wall time and the median CPU time (user+sys of the child, from getrusage: the steadier
figure on a shared machine), and both as a ratio to `python -c pass` of the same run:

  kimen run --profile p -- /bin/true    20 secrets, live session (exec in place)
  kimen secret get NAME --unsafe-stdout  live session
  kimen session status                   live session
  kimen version
  kimen vault path
  kimen secret list / vault info         1 000 secrets (no passphrase: names are plaintext)
  kimen secret list [--json]             100 000 secrets (the JSON one also against the human one)

The two 100 000-secret listings run in rounds of their own, after the others, and every other
round runs its cases in reverse order: a command that runs right after a heavy one finds the CPU
caches cold. When all shared the rounds in one order, `python -c pass` always followed the JSON
listing and took ~5 % longer, which lowered every ratio by about 0.07x (bench/README.md, "A
fairer yardstick").

Every call asks the daemon and reads the files it reports on; nothing is cached between calls.
Never asserts a timing. Standalone: `python bench/bench_hot.py [ROUNDS]`.
"""

from __future__ import annotations

import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_vault import _build
from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env, kimen


def _setup(root: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "p.kmap").write_text("".join(f"env VAR_{i}=bench.secret_{i}\n" for i in range(20)))
    env = isolated_env(root, KIMEN_PROFILE_DIR=str(profiles), KIMEN_VAULT=str(root / "v20.db"))
    with_pass = {**env, "KIMEN_PASSPHRASE": PASSPHRASE}
    kimen(with_pass, "vault", "init", *SMALL_KDF)
    dotenv = "".join(f"secret_{i}=value-{i}-{'x' * 40}\n" for i in range(20)).encode()
    kimen(with_pass, "secret", "import", "-", "--prefix", "bench.", stdin=dotenv)
    kimen(with_pass, "session", "start", "--ttl", "1h")
    for n, name in ((1_000, "v1k.db"), (100_000, "v100k.db")):
        _build(root / name, n)
    k1 = {**env, "KIMEN_VAULT": str(root / "v1k.db")}
    k100 = {**env, "KIMEN_VAULT": str(root / "v100k.db")}
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "run --profile p -- /bin/true (session)": ([KIMEN, "run", "--profile", "p", "--", "/bin/true"], env),
        "secret get (session)": ([KIMEN, "secret", "get", "bench.secret_0", "--unsafe-stdout"], env),
        "session status": ([KIMEN, "session", "status"], env),
        "version": ([KIMEN, "version"], env),
        "vault path": ([KIMEN, "vault", "path"], env),
        "secret list (1 000)": ([KIMEN, "secret", "list"], k1),
        "vault info (1 000)": ([KIMEN, "vault", "info"], k1),
        "secret list (100 000)": ([KIMEN, "secret", "list"], k100),
        "secret list --json (100 000)": ([KIMEN, "secret", "list", "--json"], k100),
    }


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


LARGE = ("secret list (100 000)", "secret list --json (100 000)")  # measured in rounds of their own


def _rounds(cases: dict[str, tuple[list[str], dict[str, str]]], names: list[str], rounds: int,
            wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            w, c = _once(*cases[name])
            wall[name].append(w)
            cpu[name].append(c)


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 25
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-hot-"))
    try:
        cases = _setup(root)
        for case in cases.values():
            _once(*case)  # warm caches, prove it works
        wall: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        _rounds(cases, [name for name in cases if name not in LARGE], rounds, wall, cpu)
        _rounds(cases, list(LARGE), rounds, wall, cpu)
        base_w = statistics.median(wall["python -c pass"])
        base_c = statistics.median(cpu["python -c pass"])
        print(f"{rounds} interleaved rounds; medians (ratio to python -c pass of this run)")
        for name in cases:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            print(f"  {name:40s} wall {w * 1000:7.1f} ms ({w / base_w:4.2f}x)   "
                  f"cpu {c * 1000:7.1f} ms ({c / base_c:4.2f}x)")
        human = statistics.median(cpu["secret list (100 000)"])
        json_cpu = statistics.median(cpu["secret list --json (100 000)"])
        print(f"  secret list --json / human at 100 000: cpu {json_cpu / human:4.2f}x")
    finally:
        try:
            kimen({**isolated_env(root)}, "session", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
