"""Bundles: `bundle seal` and `bundle open` of 10 000 secrets against the `age` CLI
encrypting and decrypting a payload of the same size, interleaved in one run:

  age -r R (encrypt the document)              the floor for seal
  kimen bundle seal (live session)             read 10k secrets through the daemon, sign, encrypt
  kimen bundle seal (KIMEN_PASSPHRASE)         the same with a local unlock (small KDF: 8 MiB, t=1)
  age -d -i KEY (decrypt the bundle)           the floor for open
  kimen bundle open (new vault, small KDF)     decrypt, verify, create a vault and import 10k secrets
  kimen run --bundle ... -- /bin/true          decrypt and verify in memory, project 1 secret

Reports wall-clock median [min-max] over N rounds (default 10) and the ratio of each kimen median
to its age counterpart. Never asserts a timing. Standalone: `python bench/bench_bundle.py [ROUNDS]`.
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

from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env
from benchlib import kimen as _kimen

AGE = shutil.which("age")
COUNT = 10_000


def _env(root: Path) -> dict[str, str]:
    (root / "profiles").mkdir(mode=0o700, exist_ok=True)
    return isolated_env(root, KIMEN_PROFILE_DIR=str(root / "profiles"), KIMEN_VAULT=str(root / "vault.db"))


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    if AGE is None:
        print("the age CLI is not installed: nothing to compare against")
        return 0
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the session daemon on the way out
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-bundle-"))
    env = _env(root)
    pass_env = {**env, "KIMEN_PASSPHRASE": PASSPHRASE}
    try:
        _kimen(pass_env, "vault", "init", *SMALL_KDF)
        dotenv = "".join(f"secret_{i:05d}=value-{i}-{'x' * 48}\n" for i in range(COUNT)).encode()
        _kimen(pass_env, "secret", "import", "-", "--prefix", "bench.", stdin=dotenv)
        key = root / "key.txt"
        recipient = _kimen(env, "bundle", "keygen", "--out", str(key), "--print-recipient").stdout.decode().strip()
        (root / "profiles" / "p.kmap").write_text("env ONE=bench.secret_00042\n")
        seal = ["bundle", "seal", "--recipient", recipient, "--identity", str(key)]
        _kimen(pass_env, *seal, "--out", str(root / "v.age"))
        document = subprocess.run([AGE, "-d", "-i", str(key), str(root / "v.age")], capture_output=True,
                                  check=True).stdout
        (root / "doc.json").write_bytes(document)
        session = subprocess.run([KIMEN, "session", "start", "--ttl", "30m"], env=pass_env,
                                 capture_output=True).returncode == 0
        counter = iter(range(10**6))
        cases: dict[str, tuple[str | None, object]] = {
            "age -r (encrypt)": (None, lambda: [AGE, "-r", recipient, "-o", str(root / "a.age"),
                                                 str(root / "doc.json")]),
            "kimen bundle seal, KIMEN_PASSPHRASE": ("age -r (encrypt)", lambda: (
                [KIMEN, *seal, "--no-session", "--out", str(root / "s.age")], pass_env)),
            "age -d -i (decrypt)": (None, lambda: [AGE, "-d", "-i", str(key), "-o", str(root / "d.json"),
                                                   str(root / "v.age")]),
            "kimen bundle open, new vault": ("age -d -i (decrypt)", lambda: (
                [KIMEN, "bundle", "open", "--in", str(root / "v.age"), "--identity", str(key),
                 "--out-vault", str(root / f"o{next(counter)}.db"), *SMALL_KDF], pass_env)),
            "kimen run --bundle -- /bin/true": ("age -d -i (decrypt)", lambda: (
                [KIMEN, "run", "--bundle", str(root / "v.age"), "--identity", str(key), "--profile", "p", "--",
                 "/bin/true"], env)),
        }
        if session:
            cases["kimen bundle seal, live session"] = ("age -r (encrypt)", lambda: (
                [KIMEN, *seal, "--out", str(root / "s2.age")], env))
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (_base, make) in cases.items():
                made = make()
                argv_, run_env = made if isinstance(made, tuple) else (made, env)
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(argv_, env=run_env, check=True, stdout=subprocess.DEVNULL)
                times[name].append((time.perf_counter() - start) * 1000)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)
            for old in root.glob("o*.db*"):
                old.unlink()
        print(f"bundles of {COUNT} secrets (document {len(document) / 1024:.0f} KiB): {rounds} interleaved "
              "rounds; wall ms median [min-max] and ratio to the age CLI doing the same crypto; CPU ms median "
              "(user+sys of the command; the session daemon's own CPU is not included) and ratio")
        for name, (base, _make) in cases.items():
            values = times[name]
            med, cmed = statistics.median(values), statistics.median(cpu[name])
            ratio = (f"x{med / statistics.median(times[base]):5.1f}   cpu {cmed:6.1f} "
                     f"x{cmed / statistics.median(cpu[base]):5.1f}  vs {base}") if base else f"         cpu {cmed:6.1f}"
            print(f"  {name:38s} {med:7.1f} [{min(values):6.1f}-{max(values):7.1f}]  {ratio}")
        if not session:
            print("  (no session daemon: the live-session seal figure is missing)")
    finally:
        if (root / "runtime" / "kimen").exists():
            subprocess.run([KIMEN, "session", "stop"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
