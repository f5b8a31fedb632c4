"""`make demo` stays true: scripts/demo.sh runs end to end with the installed kimen, never prints
a value it did not mean to, and leaves no directory and no daemon behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import BIN_DIR

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"


def test_demo_runs_end_to_end_and_cleans_up(tmp_path):
    env = {"PATH": f"{BIN_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}", "TMPDIR": str(tmp_path),
           "LANG": "C.UTF-8", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", str(DEMO)], env=env, capture_output=True, text=True, timeout=300,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    steps = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert steps[-1] == "== Done" and len(steps) >= 14
    numbers = [int(s.split()[1].rstrip(".")) for s in steps[:-1]]
    assert numbers == list(range(1, len(numbers) + 1)), steps  # one narrated step each, in order
    assert "demo passphrase, do not reuse" not in proc.stdout + proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == []  # the throwaway vault is gone
    daemons = subprocess.run(["pgrep", "-f", "kimen.daemon.server --socket /tmp/kds"], capture_output=True,
                             text=True).stdout.split()
    leftover = [pid for pid in daemons if Path(f"/proc/{pid}/environ").exists()
                and str(tmp_path).encode() in Path(f"/proc/{pid}/environ").read_bytes()]
    assert leftover == []
