"""Process groups and parent death of a supervised `kimen run` (docs/run.md, "Exec in place or
supervise"): off a terminal the command runs in a process group of its own, so a group kill
(`kill -- -PGID`, a CI runner cancelling a job) reaches it exactly once, through kimen; on a
terminal it shares kimen's foreground group; a SIGKILLed kimen never leaves it running."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import KIMEN, wait_for

PY = sys.executable
FILE = ("--file", "f.txt=const:hello")  # a private runtime dir: the supervised path
# Counts every delivery of SIGTERM at the C level (the wakeup fd gets one byte per delivery, where
# Python handlers could fold two into one call), then reports the count one second after the first.
COUNTER = """\
import os, signal, sys, time
log = sys.argv[1]
r, w = os.pipe()
os.set_blocking(w, False)
signal.signal(signal.SIGTERM, lambda *a: None)
signal.set_wakeup_fd(w)
print("ready", os.getpid(), os.getpgrp(), flush=True)
seen, deadline = 0, None
while deadline is None or time.monotonic() < deadline:
    try:
        os.set_blocking(r, deadline is None)
        got = os.read(r, 64)
    except BlockingIOError:
        time.sleep(0.02)
        continue
    seen += got.count(bytes([signal.SIGTERM]))
    if seen and deadline is None:
        deadline = time.monotonic() + 1.0
open(log, "w").write(str(seen))
"""


def _ready(proc) -> tuple[int, int]:
    line = proc.stdout.readline().decode()
    assert line.startswith("ready "), line
    _, pid, pgid = line.split()
    return int(pid), int(pgid)


@pytest.mark.parametrize("projection", [FILE, ("--stdin", "const:in")], ids=["runtime-dir", "stdin"])
def test_group_kill_reaches_the_child_exactly_once(kimen, tmp_path, projection):
    counter = tmp_path / "counter.py"
    counter.write_text(COUNTER)
    for trial in range(3):  # a doubled delivery used to happen in most runs: three make it certain
        log = tmp_path / f"count{trial}"
        proc = kimen.popen("run", *projection, "--", PY, str(counter), str(log))  # kimen leads its group
        child, child_group = _ready(proc)
        assert child_group == child != os.getpgid(proc.pid) == proc.pid  # off a terminal: a group of its own
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert log.read_text() == "1", f"trial {trial}: the child got SIGTERM {log.read_text()} times"


def test_forwarded_signals_reach_the_whole_command_once(kimen, tmp_path):
    """The child's own children are in its group: a forwarded group signal reaches each once."""
    counter = tmp_path / "counter.py"
    counter.write_text(COUNTER)
    logs = [tmp_path / "a", tmp_path / "b"]
    script = f"{PY} {counter} {logs[0]} & {PY} {counter} {logs[1]} & wait"
    proc = kimen.popen("run", *FILE, "--", "sh", "-c", script)
    pids = {_ready(proc)[0], _ready(proc)[0]}  # both counters have their handlers installed
    assert len(pids) == 2 and all(os.getpgid(pid) != proc.pid for pid in pids)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    wait_for(lambda: all(p.exists() for p in logs), "both counts")
    assert [p.read_text() for p in logs] == ["1", "1"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize("projection", [FILE, ("--stdin", "const:in")], ids=["runtime-dir", "stdin"])
def test_sigkill_of_kimen_sends_the_child_sigterm(kimen, tmp_path, projection):
    log = tmp_path / "log"
    code = ("import os, signal, sys, time\n"
            "def done(*a):\n    open(sys.argv[1], 'w').write('TERM'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, done)\n"
            "print('ready', os.getpid(), os.getpgrp(), flush=True)\n"
            "time.sleep(120)\n")
    proc = kimen.popen("run", *projection, "--", PY, "-c", code, str(log))
    child, _ = _ready(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # open(..., "w") creates the file before write() fills it: wait for the text, not the file
    wait_for(lambda: log.exists() and log.read_text() != "", "the child's SIGTERM after kimen's death", limit=10)
    assert log.read_text() == "TERM"
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), "the child to exit", limit=10)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_on_a_terminal_the_child_shares_the_foreground_group(kimen, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    code = "import os; print('ready', os.getpid(), os.getpgrp(), flush=True)"
    term = pexpect.spawn(KIMEN, ["run", *FILE, "--", PY, "-c", code], env=kimen.env, cwd=str(kimen.cwd), timeout=60)
    term.expect(r"ready (\d+) (\d+)")
    group = int(term.match.group(2))
    term.expect(pexpect.EOF)
    term.close()
    assert group == term.pid and term.exitstatus == 0  # kimen leads the pty's session and group
