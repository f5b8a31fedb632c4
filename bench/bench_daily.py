"""The daily-use commands: `status`, `direnv` and `inject` against their budgets.

1. `kimen status` on a 1 000-secret vault, without a session and with a live one, and `kimen
   direnv --profile p` (safe output), each against `python -c pass` (budget 1.5x).
2. `kimen direnv --profile p --unsafe-stdout` with a session against `kimen run --profile p --
   /bin/true` (20 secrets; budget 1.2x).
3. `kimen inject` of a 100-reference template with a session against `kimen run` of a profile
   with the same 100 secrets (budget 1.5x).
4. `kimen migrate` of a 1 000-line `.env` against `kimen secret import` of it (budget 1.2x).

Interleaved rounds; wall ms median [min-max] and the child's CPU ms median. Never asserts.
Standalone: `python bench/bench_daily.py [ROUNDS]`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib
from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env, kimen


def measure(cases: dict[str, tuple[list[str], dict[str, str]]], rounds: int, cwd: Path) -> None:
    benchlib.measure(cases, rounds, cwd, width=58)


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 15
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-"))
    env = isolated_env(root)
    work = root / "work"
    (work / ".kimen" / "profiles").mkdir(parents=True)
    try:
        vault = str(root / "vault.db")
        env["KIMEN_VAULT"] = vault
        pass_env = {**env, "KIMEN_PASSPHRASE": PASSPHRASE}
        kimen(pass_env, "vault", "init", *SMALL_KDF)
        dotenv = "".join(f"S{i}=value-{i}-{'x' * 40}\n" for i in range(1000)).encode()
        kimen(pass_env, "secret", "import", "-", "--prefix", "bench.", stdin=dotenv)
        profiles = work / ".kimen" / "profiles"
        (profiles / "p.kmap").write_text("".join(f"env V{i}=secret:bench.S{i}\n" for i in range(20)))
        (profiles / "hundred.kmap").write_text("".join(f"env V{i}=secret:bench.S{i}\n" for i in range(100)))
        (work / "t.tmpl").write_text("".join(f"v{i}: {{{{ kimen:bench.S{i} }}}}\n" for i in range(100)))
        pyc = [sys.executable, "-c", "pass"]
        print(f"status and direnv (safe): 1 000 secrets, {rounds} interleaved rounds; wall ms median [min-max] "
              "and ratio to python -c pass; CPU ms median and ratio")
        print(" without a session:")
        measure({"python -c pass": (pyc, env), "kimen status": ([KIMEN, "status"], env),
                 "kimen status --json": ([KIMEN, "status", "--json"], env),
                 "kimen direnv --profile p": ([KIMEN, "direnv", "--profile", "p"], env)}, rounds, work)
        kimen(pass_env, "session", "start", "--ttl", "1h")
        print(" with a live session:")
        measure({"python -c pass": (pyc, env), "kimen status": ([KIMEN, "status"], env),
                 "kimen status --json": ([KIMEN, "status", "--json"], env),
                 "kimen direnv --profile p": ([KIMEN, "direnv", "--profile", "p"], env)}, rounds, work)
        print("direnv --unsafe-stdout (20 secrets, session) against run of the same profile:")
        measure({"kimen run --profile p -- /bin/true": ([KIMEN, "run", "--profile", "p", "--", "/bin/true"], env),
                 "kimen direnv --profile p --unsafe-stdout": (
                     [KIMEN, "direnv", "--profile", "p", "--unsafe-stdout"], env)}, rounds, work)
        print("inject of a 100-reference template (session) against run of a 100-secret profile:")
        measure({"kimen run --profile hundred -- /bin/true": (
                    [KIMEN, "run", "--profile", "hundred", "--", "/bin/true"], env),
                 "kimen inject -i t.tmpl -o out.txt": ([KIMEN, "inject", "-i", "t.tmpl", "-o", "out.txt"], env)},
                rounds, work)
        print("migrate of a 1 000-line .env against secret import of the same file (both replacing the same "
              "1 000 values after a backup, with the passphrase, no session):")
        kimen(env, "session", "stop")
        (work / "big.env").write_bytes(dotenv)
        kimen(pass_env, "secret", "import", str(work / "big.env"), "--prefix", "m.")
        measure({"kimen secret import big.env --prefix m. --overwrite": (
                    [KIMEN, "secret", "import", "big.env", "--prefix", "m.", "--overwrite"], pass_env),
                 "kimen migrate big.env --prefix m. --overwrite --update-profile": (
                    [KIMEN, "migrate", "big.env", "--profile", "m", "--prefix", "m.", "--overwrite",
                     "--update-profile"], pass_env)}, rounds, work)
    finally:
        subprocess.run([KIMEN, "session", "stop"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
