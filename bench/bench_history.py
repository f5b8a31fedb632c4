"""Per-secret history: what keeping the last values of each name costs a write, and `secret history`.

On a 100 000-secret vault, interleaved rounds (default 10), wall-clock median [min-max] and median
CPU of the child:

  secret set NAME --stdin (before history)   the kimen of the commit before history, on a
                                             schema-1 vault it built (KIMEN_BENCH_BEFORE)
  secret set NAME --stdin (with history)     this kimen, schema-2 vault; 30 000 history rows, the
                                             name's own history full (each set also drops one)
  secret history NAME                        this kimen, no passphrase
  vault info                                 this kimen, no passphrase

Budgets (checked by reading the figures, never asserted): set with history <= 1.2x set before
history; `secret history` <= `vault info`.

KIMEN_BENCH_BEFORE: the `bin` directory of a venv with the kimen before history installed (for
example a second checkout's `.venv/bin`); without it the "before" row is skipped. Its python
builds the schema-1 vault (run from a temp dir). The before kimen runs with PYTHONDONTWRITEBYTECODE
(that checkout is left untouched), so its bytecode must be compiled already (run it once): else
it compiles on every run and looks slower than it is. This kimen writes its bytecode on the
untimed warm-up run.
Standalone: `KIMEN_BENCH_BEFORE=... python bench/bench_history.py [ROUNDS [SIZE]]`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_vault import BATCH, Case, _build, _line, _name
from benchlib import KIMEN, PASSPHRASE, isolated_env

SIZE = 100_000
REWRITTEN = 10_000  # names rewritten three times: 30 000 history rows
TARGET = "bench.target"


def _build_with_history(path: Path, n: int) -> None:
    from kimen.sensitive import Sensitive
    from kimen.store import Change
    from kimen.vault import Vault

    _build(path, n)
    with Vault.open(str(path)) as vault:
        store = vault.unlock(Sensitive(PASSPHRASE.encode()))
        for round_ in range(3):
            for start in range(0, REWRITTEN, BATCH):
                store.write([Change.set(_name(i), f"rewritten-{round_}-{i}".encode())
                             for i in range(start, min(REWRITTEN, start + BATCH))])
        for i in range(12):
            store.write([Change.set(TARGET, f"target-{i}".encode())])
        assert len(store.history(TARGET).entries) == 10


_BUILD_BEFORE = """
import sys
from kimen.sensitive import Sensitive
from kimen.store import Change, KdfParams
from kimen.vault import create_vault
from kimen.vault.schema import SCHEMA_VERSION
assert SCHEMA_VERSION == 1, SCHEMA_VERSION
path, n, batch, pw = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
store = create_vault(path, Sensitive(pw), KdfParams(8192, 1, 1)).unlock(Sensitive(pw))
for start in range(0, n, batch):
    store.write([Change.set(f"bench.s{i:06d}", f"value-{i}-{'x' * 32}".encode())
                 for i in range(start, min(n, start + batch))])
for i in range(12):
    store.write([Change.set("bench.target", f"target-{i}".encode())])
store.close()
"""


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    n = int(argv[1]) if len(argv) > 1 else SIZE
    before_bin = os.environ.get("KIMEN_BENCH_BEFORE")
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-history-"))
    try:
        return _run(root, rounds, n, before_bin)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, rounds: int, n: int, before_bin: str | None) -> int:
    env = isolated_env(root, KIMEN_PASSPHRASE=PASSPHRASE)
    after = root / "after.db"
    start = time.perf_counter()
    _build_with_history(after, n)
    after_env = {**env, "KIMEN_VAULT": str(after)}
    cases = {
        "secret set (with history)": Case([KIMEN, "secret", "set", TARGET, "--stdin"], after_env, b"new value"),
        "secret history NAME": Case([KIMEN, "secret", "history", TARGET], after_env),
        "vault info": Case([KIMEN, "vault", "info"], after_env),
    }
    if before_bin:
        before = root / "before.db"
        before_env = {**env, "KIMEN_VAULT": str(before), "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([str(Path(before_bin) / "python"), "-c", _BUILD_BEFORE, str(before), str(n), str(BATCH),
                        PASSPHRASE], cwd=root, env={**before_env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                       check=True)
        cases = {"secret set (before history)": Case([str(Path(before_bin) / "kimen"), "secret", "set", TARGET,
                                                      "--stdin"], before_env, b"new value"), **cases}
    print(f"history: {n} secrets, built in {time.perf_counter() - start:.1f} s; {rounds} interleaved rounds; "
          "CLI wall ms median [min-max], CPU ms median")
    for case in cases.values():
        case.run(record=False)  # warm the page cache
    for _ in range(rounds):
        for case in cases.values():
            case.run()
    for label, case in cases.items():
        print(_line(label, case.wall, case.cpu))
    if before_bin:
        b, a = cases["secret set (before history)"], cases["secret set (with history)"]
        print(f"  set with history / before: wall {statistics.median(a.wall) / statistics.median(b.wall):.2f}x, "
              f"cpu {statistics.median(a.cpu) / statistics.median(b.cpu):.2f}x (budget 1.2x)")
    h, i = cases["secret history NAME"], cases["vault info"]
    print(f"  secret history / vault info: wall {statistics.median(h.wall) / statistics.median(i.wall):.2f}x, "
          f"cpu {statistics.median(h.cpu) / statistics.median(i.cpu):.2f}x (budget 1.0x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
