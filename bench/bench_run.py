"""`kimen run` overhead: interleaved runs of

  /bin/true                                        the floor
  python -c pass                                   the venv's interpreter start-up
  kimen run --profile consts -- /bin/true          20 const: values (no vault at all)
  kimen run --profile p -- /bin/true               20 secrets, KIMEN_PASSPHRASE, small KDF (8 MiB, t=1)
  kimen run --profile p -- /bin/true (default KDF) 20 secrets, KIMEN_PASSPHRASE, 64 MiB t=3 p=4
  kimen run --profile p -- /bin/true (session)     20 secrets with a live session, when the daemon exists
  kimen secret get NAME --unsafe-stdout (session)  one value through the live session
  dotenvx run -q -f .env -- /bin/true              the same 20 values from a plain .env, when
                                                   dotenvx is installed (`make bench` installs it with npm)

Reports wall-clock median and min-max over N interleaved rounds (default 15), the ratio of each
median to `python -c pass`, and the median CPU time (user+sys of the child, from getrusage): on a
shared, loaded machine CPU time is the steadier of the two. When valgrind is installed it also
counts instructions (callgrind), which do not move with the machine's load: `python -c pass`, and
`kimen run` up to the exec of the command (an exec'd process leaves callgrind no count, so the
count runs kimen's `main` with `os.execve` replaced by an exit). Never asserts a timing.
Standalone: `python bench/bench_run.py [ROUNDS]`.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env
from benchlib import kimen as _kimen


def _env(root: Path, vault: str) -> dict[str, str]:
    return isolated_env(root, KIMEN_PROFILE_DIR=str(root / "profiles"), KIMEN_VAULT=vault)


def _setup(root: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    profiles = root / "profiles"
    profiles.mkdir()
    (profiles / "p.kmap").write_text("".join(f"env VAR_{i}=bench.secret_{i}\n" for i in range(20)))
    (profiles / "consts.kmap").write_text("".join(f"env VAR_{i}=const:value-{i}\n" for i in range(20)))
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "/bin/true": (["/bin/true"], {}),
        "python -c pass": ([sys.executable, "-c", "pass"], {}),
    }
    run = [KIMEN, "run", "--profile", "p", "--", "/bin/true"]
    for label, kdf in (("small KDF", SMALL_KDF), ("default KDF", [])):
        vault = str(root / f"vault-{len(kdf)}.db")
        env = _env(root, vault)
        pass_env = {**env, "KIMEN_PASSPHRASE": PASSPHRASE}
        _kimen(pass_env, "vault", "init", *kdf)
        dotenv = "".join(f"secret_{i}=value-{i}-{'x' * 40}\n" for i in range(20)).encode()
        _kimen(pass_env, "secret", "import", "-", "--prefix", "bench.", stdin=dotenv)
        if not kdf:
            cases["kimen run, 20 consts"] = ([KIMEN, "run", "--profile", "consts", "--", "/bin/true"], env)
        cases[f"kimen run, 20 secrets, no session, {label}"] = (run, pass_env)
        if kdf:
            session = _start_session(pass_env)
            if session:
                cases["kimen run, 20 secrets, live session"] = (run, env)
                get = [KIMEN, "secret", "get", "bench.secret_0", "--unsafe-stdout"]
                cases["kimen secret get, live session"] = (get, env)
    dotenvx = _dotenvx()
    if dotenvx:
        (root / "bench.env").write_text("".join(f"VAR_{i}=value-{i}-{'x' * 40}\n" for i in range(20)))
        cases["dotenvx run, 20 values from .env"] = (
            [dotenvx, "run", "-q", "-f", str(root / "bench.env"), "--", "/bin/true"], {})
    for argv, env in cases.values():
        subprocess.run(argv, env=env or None, check=True, capture_output=True)  # warm caches, prove it works
    return cases


def _dotenvx() -> str | None:
    """dotenvx from $DOTENVX, PATH or bench/node_modules (npm), when installed."""
    local = Path(__file__).resolve().parent / "node_modules" / ".bin" / "dotenvx"
    return os.environ.get("DOTENVX") or shutil.which("dotenvx") or (str(local) if local.exists() else None)


def _start_session(env: dict[str, str]) -> bool:
    """A live session, when this build has the daemon (`kimen session start`)."""
    try:
        _kimen(env, "session", "start", "--ttl", "15m")
    except subprocess.CalledProcessError:
        return False
    return True


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 15
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-"))
    try:
        cases = _setup(root)
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv_, env) in cases.items():  # interleaved: every round runs every case
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv_, env=env or None, check=True, stdout=subprocess.DEVNULL)
                times[name].append((time.perf_counter() - start) * 1000)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
        base = statistics.median(times["python -c pass"])
        cpu_base = statistics.median(cpu["python -c pass"])
        print(f"kimen run overhead: {rounds} interleaved rounds; wall ms median [min-max] and ratio to "
              "python -c pass; CPU ms median and ratio")
        for name, values in times.items():
            med, cmed = statistics.median(values), statistics.median(cpu[name])
            print(f"  {name:48s} {med:8.1f} [{min(values):7.1f}-{max(values):7.1f}]  x{med / base:4.2f}"
                  f"   cpu {cmed:7.1f}  x{cmed / cpu_base:4.2f}")
        if "kimen run, 20 secrets, live session" not in times:
            print("  (no session daemon in this build: the live-session figure is pending)")
        if not any(name.startswith("dotenvx") for name in times):
            print("  (dotenvx is not installed: `make bench` installs it with npm when npm exists)")
        _print_instructions(cases, root)
    finally:
        if (root / "runtime" / "kimen").exists():
            subprocess.run([KIMEN, "session", "stop"], env=_env(root, ""), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


# kimen's entry point, with the exec of the command replaced by an exit: what callgrind can count
_UP_TO_EXEC = ("import os, sys; os.execve = lambda *a: os._exit(0); sys.argv[0] = 'kimen'; "
               "from kimen.__main__ import main; sys.exit(main())")
_COUNTED = ("python -c pass", "kimen run, 20 consts", "kimen run, 20 secrets, live session")


def _print_instructions(cases: dict[str, tuple[list[str], dict[str, str]]], root: Path) -> None:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("  (valgrind is not installed: no instruction counts)")
        return
    counts: dict[str, int] = {}
    for name in _COUNTED:
        if name not in cases:
            continue
        argv, env = cases[name]
        if argv[0] == KIMEN:
            argv = [sys.executable, "-c", _UP_TO_EXEC, *argv[1:]]
        out = root / "callgrind.out"
        subprocess.run([valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", *argv], env=env or None,
                       check=True, capture_output=True)
        totals = [line for line in out.read_text().splitlines() if line.startswith("totals:")]
        counts[name] = int(totals[0].split()[1])
    base = counts["python -c pass"]
    print("instructions (callgrind; kimen up to the exec of the command):")
    for name, count in counts.items():
        print(f"  {name:48s} {count / 1e6:8.1f} M  x{count / base:4.2f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
