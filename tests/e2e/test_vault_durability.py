"""Concurrent writers and SIGKILL at random moments: nothing acknowledged is
lost, nothing half-written is seen, and the file always passes `PRAGMA integrity_check`."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.e2e.vault_helpers import db, recording_kimen
from tests.e2e.vault_writer import value


@pytest.fixture
def vk(tmp_path):
    yield from recording_kimen(tmp_path)


WRITER = str(Path(__file__).with_name("vault_writer.py"))
REPO = str(Path(__file__).resolve().parents[2])


def _writer(vk, prefix: str, count: int) -> subprocess.Popen:
    env = {**vk.env, "KIMEN_PASSPHRASE": PASSPHRASE, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, WRITER, str(vk.vault), prefix, str(count)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def _acknowledged(output: bytes) -> list[int]:
    """The writes a writer reported as done (complete `ok <i>` lines only)."""
    done = []
    for line in output.split(b"\n")[:-1]:  # the last piece has no newline: never a report
        if line.startswith(b"ok "):
            done.append(int(line[3:]))
    return done


def _integrity_ok(path: Path) -> None:
    conn = db(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def _read_all(vk, names: list[str]) -> dict[str, str]:
    """Every name's value, read by kimen in one command (envfile --format json)."""
    kmap = vk.root / "all.kmap"
    variables = {f"V{i}": name for i, name in enumerate(names)}
    kmap.write_text("".join(f"env {var}={name}\n" for var, name in variables.items()))
    done = vk.ok("envfile", "--out", "-", "--format", "json", "--unsafe-stdout", "--map", str(kmap),
                 env=vk.with_pass())
    got = json.loads(done.out)
    return {name: got[var] for var, name in variables.items()}


@pytest.mark.slow
def test_two_writer_processes_lose_nothing(vk):
    """Two processes x 200 write transactions through kimen's LocalStore, at the same time."""
    vk.init_vault()
    writers = {prefix: _writer(vk, prefix, 200) for prefix in ("w1", "w2")}
    outputs = {prefix: proc.communicate(timeout=240) for prefix, proc in writers.items()}
    for prefix, (out, err) in outputs.items():
        assert writers[prefix].returncode == 0, err.decode()
        assert _acknowledged(out) == list(range(200))
    _integrity_ok(vk.vault)
    names = [f"{p}.k{i}" for p in ("w1", "w2") for i in range(200)] + ["w1.last", "w2.last"]
    got = _read_all(vk, names)
    for p in ("w1", "w2"):
        assert all(got[f"{p}.k{i}"] == value(p, i).decode() for i in range(200))
        assert got[f"{p}.last"] == "199"
    info = vk.ok("vault", "info", "--verify", "--json", env=vk.with_pass()).json()
    assert info["integrity"] == "ok" and info["secret_count"] == 402 and info["generation"] == 400


@pytest.mark.slow
def test_concurrent_cli_writers_lose_nothing(vk):
    """Two threads each running 50 `kimen secret set` processes back to back, interleaved."""
    vk.init_vault()
    failures: list[str] = []

    def worker(prefix: str) -> None:
        for i in range(50):
            done = vk.run("secret", "set", f"{prefix}.k{i}", "--stdin", input=value(prefix, i), env=vk.with_pass())
            if done.code != 0:
                failures.append(f"{prefix}.k{i}: {done.code} {done.err}")

    threads = [threading.Thread(target=worker, args=(p,)) for p in ("c1", "c2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    names = [f"{p}.k{i}" for p in ("c1", "c2") for i in range(50)]
    got = _read_all(vk, names)
    assert all(got[n] == value(n.split(".")[0], int(n.split(".k")[1])).decode() for n in names)
    assert vk.ok("vault", "info", "--verify", "--json", env=vk.with_pass()).json()["generation"] == 100


@pytest.mark.slow
def test_sigkilled_writer_never_loses_an_acknowledged_write(vk):
    vk.init_vault()
    rng = random.Random(os.urandom(8))
    acknowledged: dict[str, int] = {}
    for trial in range(50):
        prefix = f"t{trial}"
        proc = _writer(vk, prefix, 10_000)
        seen = b""
        if trial % 5 == 0:  # sometimes during start-up and unlock
            time.sleep(rng.uniform(0, 0.3))
        else:  # mostly in the middle of the writes: after a random number of reports, plus a jitter
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()
            for _ in range(rng.randrange(1, 20)):
                seen += proc.stdout.readline()
            time.sleep(rng.uniform(0, 0.01))
        os.kill(proc.pid, signal.SIGKILL)
        seen += proc.stdout.read()  # through the same buffered reader as the readline() calls
        proc.stderr.read()
        assert proc.wait(timeout=30) == -signal.SIGKILL, f"trial {trial}: the writer ended before the kill"
        done = _acknowledged(seen)
        assert done == list(range(len(done)))
        if done:
            acknowledged[prefix] = done[-1]
        _integrity_ok(vk.vault)
    assert len(acknowledged) >= 35, "too few kills landed among the writes to prove anything"
    names = [f"{p}.k{i}" for p, last in acknowledged.items() for i in range(last + 1)]
    got = _read_all(vk, names + [f"{p}.last" for p in acknowledged])
    for p, last in acknowledged.items():
        for i in range(last + 1):
            assert got[f"{p}.k{i}"] == value(p, i).decode(), f"{p}.k{i} lost or wrong after SIGKILL"
        # the write after the last report may have committed before the kill, never half of it
        assert int(got[f"{p}.last"]) in (last, last + 1)
    assert vk.ok("vault", "info", "--verify", "--json", env=vk.with_pass()).json()["integrity"] == "ok"


def test_sigkilled_import_is_all_or_nothing(vk):
    """`kimen secret import` of 3000 lines is one transaction: a kill leaves all of it or none."""
    vk.init_vault()
    rng = random.Random(os.urandom(8))

    def dotenv(trial: int) -> Path:
        path = vk.root / f"import{trial}.env"
        path.write_text("".join(f"K{i}={trial}-{i}\n" for i in range(3000)))
        return path

    # calibration, not an assertion: how long a whole import takes here, so the kills land inside it
    start = time.monotonic()
    vk.ok("secret", "import", str(dotenv(0)), "--prefix", "i0.", env=vk.with_pass())
    duration = time.monotonic() - start
    killed = 0
    for trial in range(1, 11):
        proc = vk.popen("secret", "import", str(dotenv(trial)), "--prefix", f"i{trial}.", env=vk.with_pass())
        time.sleep(rng.uniform(0.1, 0.9) * duration)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        killed += proc.returncode == -signal.SIGKILL
        _integrity_ok(vk.vault)
        listed = vk.ok("secret", "list", "--prefix", f"i{trial}.", "--json").json()["count"]
        assert listed in (0, 3000), f"trial {trial}: {listed} of 3000 imported names visible"
    assert killed >= 3, "the imports finished before the kills; this test would prove nothing"
    assert vk.ok("vault", "info", "--verify", "--json", env=vk.with_pass()).json()["integrity"] == "ok"
