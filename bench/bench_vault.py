"""Vault scale: vaults of 1 000 and 100 000 secrets.

CLI, interleaved rounds (every round runs every case once, every other round in reverse order so that
`python -c pass` never runs right after the heaviest case; default 10 rounds), wall-clock median
[min-max] and median CPU time (user+sys of the child, from getrusage; the steadier figure on a
shared machine):

  kimen vault path                           the CLI floor: start-up, no vault opened
  secret get NAME (small KDF / default KDF)  one unlock (8 MiB t=1 p=1 / 64 MiB t=3 p=4) + one row
  secret list / --json                       every name (no passphrase)
  secret set NAME --stdin                    one unlock (small KDF) + one write transaction
  vault info / --verify                      metadata / unlock + the full integrity check
  secret import (10 000 lines)               into a fresh copy of the vault each round
  vault rekey --rotate-data-key --no-backup  on a fresh copy each round (re-encrypts every row)

In-process (kimen's own Vault/LocalStore, no interpreter start-up or KDF) the same operations,
so the cost beyond the fixed KDF and start-up is visible: Vault.open, unwrap_key (small/default),
list, list_names, write of one change, read of one, meta, verify.

Vaults are built once per run in a temp dir through LocalStore.write of batched Change.set, with a
small KDF; the default-KDF copy is rekeyed in process. Never asserts a timing.
Standalone: `python bench/bench_vault.py [ROUNDS [SIZE ...]]`.
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
from collections.abc import Callable
from pathlib import Path

from benchlib import KIMEN, PASSPHRASE, isolated_env

SIZES = (1_000, 100_000)
BATCH = 10_000
IMPORT_LINES = 10_000


def _env(root: Path) -> dict[str, str]:
    return isolated_env(root, KIMEN_PASSPHRASE=PASSPHRASE)


def _name(i: int) -> str:
    return f"bench.s{i:06d}"


def _build(path: Path, n: int) -> None:
    from kimen.sensitive import Sensitive
    from kimen.store import Change, KdfParams
    from kimen.vault import create_vault

    vault = create_vault(str(path), Sensitive(PASSPHRASE.encode()), KdfParams(8192, 1, 1))
    store = vault.unlock(Sensitive(PASSPHRASE.encode()))
    for start in range(0, n, BATCH):
        batch = range(start, min(n, start + BATCH))
        store.write([Change.set(_name(i), f"value-{i}-{'x' * 32}".encode()) for i in batch])
    store.close()


def _rekey_default(path: Path) -> None:
    from kimen.sensitive import Sensitive
    from kimen.vault import KDF_DEFAULT, Vault

    with Vault.open(str(path)) as vault:
        key = vault.unwrap_key(Sensitive(PASSPHRASE.encode()))
        vault.rekey(key, vault.header().wrap_id, Sensitive(PASSPHRASE.encode()), KDF_DEFAULT, rotate_data_key=False)


def _copy(src: Path, dest: Path) -> None:
    """A bench-only raw copy of a closed, checkpointed vault (kimen itself never copies raw)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(0o600)


class Case:
    """One CLI command; `prepare` runs untimed before each timed run (a fresh copy, a file)."""

    def __init__(self, argv: list[str], env: dict[str, str], stdin: bytes = b"",
                 prepare: Callable[[], None] | None = None) -> None:
        self.argv, self.env, self.stdin, self.prepare = argv, env, stdin, prepare
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, record: bool = True) -> None:
        if self.prepare:
            self.prepare()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(self.argv, env=self.env, input=self.stdin, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        wall = (time.perf_counter() - start) * 1000
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(self.argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
        if record:
            self.wall.append(wall)
            self.cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000)


def _cases(root: Path, n: int, template: Path, small: Path, default: Path) -> dict[str, Case]:
    env = _env(root)
    small_env = {**env, "KIMEN_VAULT": str(small)}
    default_env = {**env, "KIMEN_VAULT": str(default)}
    scratch = root / f"scratch-{n}.db"
    scratch_env = {**env, "KIMEN_VAULT": str(scratch)}
    dotenv = root / "import.env"
    if not dotenv.exists():
        dotenv.write_text("".join(f"IMPORTED_{i}=imported-value-{i}\n" for i in range(IMPORT_LINES)))
    target = _name(n // 2)
    return {
        "secret get (small KDF)": Case([KIMEN, "secret", "get", target, "--unsafe-stdout"], small_env),
        "secret get (default KDF)": Case([KIMEN, "secret", "get", target, "--unsafe-stdout"], default_env),
        "secret list": Case([KIMEN, "secret", "list"], small_env),
        "secret list --json": Case([KIMEN, "secret", "list", "--json"], small_env),
        "secret set (small KDF)": Case([KIMEN, "secret", "set", "bench.new", "--stdin"], small_env, b"new value"),
        "vault info": Case([KIMEN, "vault", "info"], small_env),
        "vault info --verify (small KDF)": Case([KIMEN, "vault", "info", "--verify"], small_env),
        f"secret import ({IMPORT_LINES} lines)": Case(
            [KIMEN, "secret", "import", str(dotenv), "--prefix", "imp."], scratch_env,
            prepare=lambda: _copy(template, scratch)),
        "vault rekey --rotate-data-key": Case(
            [KIMEN, "vault", "rekey", "--rotate-data-key", "--no-backup"], scratch_env,
            prepare=lambda: _copy(template, scratch)),
    }


def _in_process(small: Path, default: Path, n: int, reps: int) -> dict[str, list[float]]:
    """Store operations inside one process: no interpreter start-up, KDF only where named."""
    from kimen.sensitive import Sensitive
    from kimen.store import Change
    from kimen.vault import Vault

    pw = PASSPHRASE.encode()
    results: dict[str, list[float]] = {}

    def timed(label: str, fn: Callable[[], object], times: int = reps) -> None:
        fn()  # warm
        values = []
        for _ in range(times):
            start = time.perf_counter()
            fn()
            values.append((time.perf_counter() - start) * 1000)
        results[label] = values

    timed("Vault.open + close", lambda: Vault.open(str(small)).close())
    vault = Vault.open(str(small))
    timed("unwrap_key (small KDF)", lambda: vault.unwrap_key(Sensitive(pw)))
    with Vault.open(str(default)) as other:
        timed("unwrap_key (default KDF)", lambda: other.unwrap_key(Sensitive(pw)))
    store = vault.unlock(Sensitive(pw))
    target = _name(n // 2)
    timed("LocalStore.list()", store.list)
    timed("Vault.list_names()", vault.list_names)
    timed("LocalStore.write(1 set)", lambda: store.write([Change.set("bench.inproc", os.urandom(32))]))
    timed("LocalStore.read(1 name)", lambda: store.read([target]))
    timed("LocalStore.meta()", store.meta)
    timed("LocalStore.verify()", store.verify)
    store.close()
    return results


DERIVED = (
    ("one set beyond start-up + small-KDF unlock (set - get)", "secret set (small KDF)", "secret get (small KDF)"),
    ("list beyond the CLI floor (list - vault path)", "secret list", "kimen vault path (CLI floor)"),
    ("default-KDF unlock beyond the small one", "secret get (default KDF)", "secret get (small KDF)"),
)


def _delta(a: Case, b: Case) -> str:
    wall = statistics.median(a.wall) - statistics.median(b.wall)
    cpu = statistics.median(a.cpu) - statistics.median(b.cpu)
    return f"wall {wall:+.1f} ms, cpu {cpu:+.1f} ms"


def _line(label: str, values: list[float], cpu: list[float] | None = None) -> str:
    med = statistics.median(values)
    text = f"  {label:40s} {med:9.1f} [{min(values):8.1f}-{max(values):8.1f}]"
    if cpu:
        text += f"   cpu {statistics.median(cpu):8.1f}"
    return text


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    sizes = tuple(int(a) for a in argv[1:]) or SIZES
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-vault-"))
    try:
        env = _env(root)
        floor = Case([KIMEN, "vault", "path"], env)
        pyfloor = Case([sys.executable, "-c", "pass"], env)
        print(f"vault scale: {rounds} interleaved rounds per size; CLI wall ms median [min-max], CPU ms median")
        for n in sizes:
            start = time.perf_counter()
            template = root / f"template-{n}.db"
            _build(template, n)
            small, default = root / f"small-{n}.db", root / f"default-{n}.db"
            _copy(template, small)
            _copy(template, default)
            _rekey_default(default)
            built = time.perf_counter() - start
            cases = {"python -c pass": pyfloor, "kimen vault path (CLI floor)": floor,
                     **_cases(root, n, template, small, default)}
            for case in cases.values():
                case.wall.clear()
                case.cpu.clear()
                case.run(record=False)  # warm caches, write bytecode, prove it works
            order = list(cases.values())
            for round_ in range(rounds):  # every other round reversed: `python -c pass` never follows the heaviest
                for case in order if round_ % 2 == 0 else order[::-1]:
                    case.run()
            size_mb = small.stat().st_size / 1e6
            print(f"\n{n} secrets (vault {size_mb:.1f} MB, built in {built:.1f} s)")
            for label, case in cases.items():
                print(_line(label, case.wall, case.cpu))
            for text, a, b in DERIVED:
                print(f"  -> {text}: {_delta(cases[a], cases[b])}")
            print(f"  in process ({max(rounds, 10)} runs; ms median [min-max]):")
            for label, values in _in_process(small, default, n, max(rounds, 10)).items():
                print(_line(label, values))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
