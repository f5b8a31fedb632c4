"""The session daemon: request rate, and `secret get` latency with a live session.

1. Request rate: N client processes (1, 8, 64) each send `read` requests of one secret for a fixed
   time, either opening a new connection per request or keeping one connection; reports
   requests/s, p50/p99 latency, and the daemon's open fds before and after (back to baseline).
2. `kimen secret get NAME --unsafe-stdout` served by the live session, interleaved with
   `python -c pass` and `kimen version`: wall median [min-max] and CPU median over N rounds.

Never asserts. Standalone: `python bench/bench_session.py [ROUNDS] [SECONDS]`.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import KIMEN, PASSPHRASE, SMALL_KDF, isolated_env, measure

_env = isolated_env


def _worker(path: str, vault: str, persistent: bool, seconds: float, start_at: float, out) -> None:
    """A lean client (raw `_socket`, one pre-encoded `read` frame) so the figure is the daemon's.

    Like the real client it checks the daemon's uid on every connection; it checks each reply.
    """
    import _socket

    from kimen.daemon import protocol

    frame = protocol.encode({"v": protocol.PROTOCOL, "kimen": protocol.VERSION, "id": "1", "op": "read",
                             "vault_path": vault, "names": ["bench.secret_0"]})
    uid = os.getuid()

    def connect():
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        s.connect(path)
        if protocol.peer_uid(s) != uid:
            raise SystemExit("daemon of another uid")
        return s

    def ask(s) -> None:
        s.sendall(frame)
        reply = s.recv(65536)
        while len(reply) < 4 or len(reply) < 4 + int.from_bytes(reply[:4], "big"):
            reply += s.recv(65536)
        if b'"ok":true' not in reply:
            raise SystemExit(f"request failed: {reply[:200]!r}")

    while time.time() < start_at:
        time.sleep(0.001)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    conn = connect() if persistent else None
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        s = conn or connect()
        ask(s)
        if conn is None:
            s.close()
        latencies.append(time.perf_counter() - t0)
    if conn is not None:
        conn.close()
    out.send(latencies)
    out.close()


def _rate(path: str, vault: str, clients: int, persistent: bool, seconds: float) -> tuple[float, float, float]:
    ctx = multiprocessing.get_context("fork")
    start_at = time.time() + 0.3 + 0.01 * clients
    pipes, procs = [], []
    for _ in range(clients):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(path, vault, persistent, seconds, start_at, send))
        p.start()
        send.close()
        pipes.append(recv)
        procs.append(p)
    all_lat: list[float] = []
    for recv in pipes:
        all_lat.extend(recv.recv())
    for p in procs:
        p.join()
    all_lat.sort()
    p50 = all_lat[len(all_lat) // 2] * 1e6
    p99 = all_lat[min(len(all_lat) - 1, int(len(all_lat) * 0.99))] * 1e6
    return len(all_lat) / seconds, p50, p99


def _cpu(pid: int) -> float:
    """The daemon's CPU seconds so far (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """The daemon's CPU seconds so far (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 15
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-"))
    env = _env(root)
    try:
        vault = str(root / "vault.db")
        env["KIMEN_VAULT"] = vault
        pass_env = {**env, "KIMEN_PASSPHRASE": PASSPHRASE}
        subprocess.run([KIMEN, "vault", "init", *SMALL_KDF], env=pass_env, check=True, capture_output=True)
        dotenv = "".join(f"secret_{i}=value-{i}-{'x' * 40}\n" for i in range(20)).encode()
        subprocess.run([KIMEN, "secret", "import", "-", "--prefix", "bench."], env=pass_env, input=dotenv,
                       check=True, capture_output=True)
        subprocess.run([KIMEN, "session", "start", "--ttl", "1h"], env=pass_env, check=True, capture_output=True)
        import json

        status = json.loads(subprocess.run([KIMEN, "session", "status", "--json"], env=env, check=True,
                                           capture_output=True).stdout)
        pid, path = status["pid"], status["socket_path"]
        canonical = os.path.realpath(vault)

        print(f"daemon request rate: `read` of one secret, {seconds:.0f} s per case, client processes "
              f"on {os.cpu_count()} CPUs (load average before: {os.getloadavg()[0]:.1f})")
        baseline = _fds(pid)
        for persistent in (False, True):
            for clients in (1, 8, 64):
                cpu0 = _cpu(pid)
                rate, p50, p99 = _rate(path, canonical, clients, persistent, seconds)
                per = (_cpu(pid) - cpu0) / (rate * seconds) * 1e6
                kind = "persistent connection " if persistent else "new connection/request"
                print(f"  {clients:3d} clients, {kind}  {rate:9.0f} req/s   p50 {p50:7.0f} us   p99 {p99:8.0f} us"
                      f"   daemon cpu {per:5.0f} us/req")
        time.sleep(0.5)
        print(f"  daemon fds: {baseline} before, {_fds(pid)} after")

        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "kimen version": ([KIMEN, "version"], env),
            "kimen secret get --unsafe-stdout (session)": (
                [KIMEN, "secret", "get", "bench.secret_0", "--unsafe-stdout"], env),
            "kimen session status": ([KIMEN, "session", "status"], env),
        }
        print(f"latency with a live session: {rounds} interleaved rounds; wall ms median [min-max] and ratio "
              "to python -c pass; CPU ms median and ratio")
        measure(cases, rounds)
    finally:
        subprocess.run([KIMEN, "session", "stop"], env=env, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
