"""Run every benchmark script in bench/ (bench_*.py) in turn and print their reports.

Each script is standalone (`python bench/bench_x.py`), measures commands interleaved in one run,
reports medians with min-max over >= 10 runs, and never asserts a timing.
Results are also written to bench/results/<name>.txt.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem in wanted)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    status = 0
    for script in scripts:
        print(f"=== {script.stem} ===", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        (results / f"{script.stem}.txt").write_text(proc.stdout)
        if proc.returncode:
            print(f"{script.stem} failed with exit {proc.returncode}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
