"""`kimen run --mask` end to end: the relay (`kimen.projection.relay`) running a real `cat FILE`
with 20 projected secrets, through pipes and through a pty, against `cat` of the same file in the
same run. Interleaved rounds of, on each stream (clean log-like text; 1 % of 64-byte windows holding
a masked form or a 5-byte prefix of one, as in bench_mask.py) and 64 MiB (default):

  pipes   relay -- cat FILE > /dev/null       the child's stdout is a pipe kimen relays to /dev/null
          cat FILE | cat > /dev/null          the same hop with cat as the relay (the floor)
  pty     relay -- cat FILE  on a terminal    kimen's stdout is a pty (raw) read by this script; the
                                              child writes into kimen's own pty, kimen relays
          cat FILE  on a terminal             cat writes the terminal directly (the floor)

The relay runs as a process started by this script (`python -c` calling `relay.run`, what `kimen run
--mask` runs after resolving values): its Python start-up and the masker's compilation are counted.
Reports MB/s (1e6 bytes of input) median [min-max] over N rounds (default 10), the time ratio
against the floor, and MB/s per CPU second of the case's processes (user + system; the steadier
figure on a shared machine; the pty's kernel work done in kworker threads is not counted).
Never asserts a timing. Standalone: `python bench/bench_relay.py [ROUNDS [MIB]]`.
"""

from __future__ import annotations

import json
import os
import pty
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

from bench_mask import _secrets, _streams

DRIVER = """
import json, os, sys
from kimen.projection import relay
values = {k: bytes.fromhex(v) for k, v in json.load(open(sys.argv[1])).items()}
sys.exit(relay.run(sys.argv[2], sys.argv[2:], dict(os.environ), values))
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _piped(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _on_pty(argv: list[str]) -> tuple[float, int]:
    """Wall seconds of `argv` with its stdout and stderr on a fresh raw pty (stdin /dev/null), the
    pty read here as fast as it comes; and the byte count read."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the forked child
        try:
            tty.setraw(1)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    total = 0
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - start, total


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    size = (int(argv[1]) if len(argv) > 1 else 64) << 20
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-relay-"))
    try:
        rnd = random.Random(20240501)
        values = _secrets(rnd)
        (root / "values.json").write_text(json.dumps({k: v.hex() for k, v in values.items()}))
        clean, dirty, planted = _streams(rnd, size, values)
        cat = shutil.which("cat") or "/bin/cat"
        relay = [sys.executable, "-c", DRIVER, str(root / "values.json"), cat]
        cases: dict[tuple[str, str], tuple[str, list[str]]] = {}
        for label, data in {"clean": clean, "1% hits": dirty}.items():
            path = root / label.replace(" ", "").replace("%", "")
            path.write_bytes(data)
            out = subprocess.run([*relay, str(path)], check=True, capture_output=True).stdout
            assert (out == data) if label == "clean" else (out.count(b"[masked:") >= planted), label
            cases[(label, "pipes: relay -- cat FILE")] = ("pipe", [*relay, str(path)])
            cases[(label, "pipes: cat FILE | cat")] = ("pipe", ["/bin/sh", "-c", f"{cat} {path} | {cat}"])
            cases[(label, "pty: relay -- cat FILE")] = ("pty", [*relay, str(path)])
            cases[(label, "pty: cat FILE")] = ("pty", [cat, str(path)])
        wall: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        cpu: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for _ in range(rounds):
            for case, (kind, command) in cases.items():  # interleaved: every round runs every case
                before = _children_cpu()
                wall[case].append(_piped(command) if kind == "pipe" else _on_pty(command)[0])
                cpu[case].append(_children_cpu() - before)
        print(f"run --mask relay end to end: {size >> 20} MiB, {len(values)} secrets, {rounds} interleaved rounds, "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; MB/s median [min-max]; time against the "
              "same path with cat; MB/s per CPU second of the case's processes")
        for label in ("clean", "1% hits"):
            print(f"  {label} stream" + (f" ({planted} forms planted)" if label != "clean" else ""))
            for path_kind, floor_name in (("pipes", "pipes: cat FILE | cat"), ("pty", "pty: cat FILE")):
                floor = statistics.median(wall[(label, floor_name)])
                for (stream, name), seconds in wall.items():
                    if stream != label or not name.startswith(path_kind):
                        continue
                    rates = [size / s / 1e6 for s in seconds]
                    print(f"    {name:28s} {statistics.median(rates):8.0f} [{min(rates):6.0f}-{max(rates):6.0f}]"
                          f"  x{statistics.median(seconds) / floor:5.2f}"
                          f"   cpu {size / statistics.median(cpu[(stream, name)]) / 1e6:6.0f} MB/s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
