"""`kimen run --mask` relay throughput: a 64 MiB stream through the masker with 20
projected secrets, against `cat` of the same file in the same run. Interleaved rounds of

  masker in process                 MaskStream.feed over the file's bytes in 64 KiB chunks (as read)
  cat FILE | relay > /dev/null      a real relay process: read the pipe, feed the masker, write
  cat FILE | cat > /dev/null        the same pipeline with cat as the relay (the pipe's floor)
  cat FILE > /dev/null              the floor

on two streams: clean log-like text, and the same text where 1 % of the 64-byte windows hold a
masked form of one of the secrets or a 5-byte prefix of one (half each). The 20 secrets mix tokens,
passwords with symbols, a UTF-8 passphrase, raw binary keys and a PEM key (forms longer than the
automaton's head). Reports MB/s (1e6 bytes) median [min-max] over N rounds (default 10), the
slowdown against `cat FILE > /dev/null`, and the masker's own CPU throughput (the steadier figure
on a shared machine: in process from process_time, through the pipe as reported by the relay).
Never asserts a timing. Standalone: `python bench/bench_mask.py [ROUNDS [MIB]]`.
"""

from __future__ import annotations

import base64
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 1 << 16
# The relay loop kimen runs under --mask, as a process of its own: read what the child wrote,
# mask, write. It reports its loop's CPU time on stderr.
RELAY = """
import fcntl, json, os, sys, time
from kimen.projection.mask import Masker
values = {k: bytes.fromhex(v) for k, v in json.load(open(sys.argv[1])).items()}
stream = Masker(values).stream()
try:
    fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, 1 << 20)  # kimen owns the child's pipe and may size it
except OSError:
    pass
read, write, feed = os.read, os.write, stream.feed
start = time.process_time()
while chunk := read(0, 1 << 20):
    out = feed(chunk)
    while out:
        out = out[write(1, out):]
out = stream.flush()
while out:
    out = out[write(1, out):]
json.dump({"cpu": time.process_time() - start}, sys.stderr)
"""


def _secrets(rnd: random.Random) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for i in range(12):
        raw = rnd.randbytes(16 + 3 * i)
        values[f"TOKEN_{i}"] = (base64.urlsafe_b64encode(raw).rstrip(b"=") if i % 2 else raw.hex().encode())
    for i in range(4):
        values[f"PASSWORD_{i}"] = "".join(rnd.choice("abcdefXYZ0123456789 !\"#%&'+/:;<=>?@[]^{}") for _ in
                                          range(12 + 4 * i)).encode()
    values["PASSPHRASE"] = "corrélation pâté ünïcode ✓ 7".encode()
    values["KEY_0"], values["KEY_1"] = rnd.randbytes(32), rnd.randbytes(32)
    body = base64.encodebytes(rnd.randbytes(1190))  # a 2048-bit RSA key's size, 76-column lines
    values["TLS_KEY"] = b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"
    return values


def _streams(rnd: random.Random, size: int, values: dict[str, bytes]) -> tuple[bytes, bytes, int]:
    """A clean log-like stream, and a copy where 1 % of the 64-byte windows hold a form or a 5-byte
    prefix of one; also how many whole forms were planted."""
    from kimen.projection.mask import masked_forms

    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(3000)]
    lines = []
    for n in range(4096):
        text = b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 14)))
        lines.append(b"2024-05-%02d 12:%02d:%02d INFO req=%08x %s\n" % (n % 28 + 1, n % 60, n * 7 % 60,
                                                                           rnd.getrandbits(32), text))
    block = b"".join(lines)
    clean = (block * (size // len(block) + 1))[:size]
    forms = sorted({f for v in values.values() for f in masked_forms(v) if len(f) <= 64})
    dirty = bytearray(clean)
    planted = 0
    for window in range(0, size - 64, 64):
        if rnd.random() < 0.01:
            form = rnd.choice(forms)
            if rnd.random() < 0.5:
                form = form[:5]
            else:
                planted += 1
            at = window + rnd.randint(0, 64 - len(form))
            dirty[at:at + len(form)] = form
    return clean, bytes(dirty), planted


def _in_process(values: dict[str, bytes], data: bytes) -> tuple[float, float, bytes]:
    from kimen.projection.mask import Masker

    stream = Masker(values).stream()
    wall, cpu = time.perf_counter(), time.process_time()
    out = [stream.feed(data[at:at + CHUNK]) for at in range(0, len(data), CHUNK)]
    out.append(stream.flush())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, b"".join(out)


def _shell(command: str) -> tuple[float, float, str]:
    """Wall seconds, children's CPU seconds, and stderr of `command` run by sh."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.stderr


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else 10
    size = (int(argv[1]) if len(argv) > 1 else 64) << 20
    root = Path(tempfile.mkdtemp(prefix="kimen-bench-mask-"))
    try:
        rnd = random.Random(20240501)
        values = _secrets(rnd)
        (root / "values.json").write_text(json.dumps({k: v.hex() for k, v in values.items()}))
        (root / "relay.py").write_text(RELAY)
        clean, dirty, planted = _streams(rnd, size, values)
        streams = {"clean": clean, "1% hits": dirty}
        for label, data in streams.items():
            (root / label.replace(" ", "").replace("%", "")).write_bytes(data)
            masked = _in_process(values, data)[2]
            if label == "clean":
                assert masked == data, "clean output changed"
            else:
                assert masked.count(b"[masked:") >= planted, "planted forms not masked"
        relay = f"{sys.executable} {root / 'relay.py'} {root / 'values.json'}"
        cases = {}
        for label in streams:
            path = root / label.replace(" ", "").replace("%", "")
            cases[(label, "masker in process")] = None
            cases[(label, "cat FILE | relay > /dev/null")] = f"cat {path} | {relay} > /dev/null"
            cases[(label, "cat FILE | cat > /dev/null")] = f"cat {path} | cat > /dev/null"
            cases[(label, "cat FILE > /dev/null")] = f"cat {path} > /dev/null"
        wall: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        cpu: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
        for _ in range(rounds):
            for case, command in cases.items():  # interleaved: every round runs every case
                if command is None:
                    seconds, cpu_seconds, _ = _in_process(values, streams[case[0]])
                else:
                    seconds, cpu_seconds, err = _shell(command)
                    if "relay" in command:
                        cpu_seconds = json.loads(err)["cpu"]
                wall[case].append(seconds)
                cpu[case].append(cpu_seconds)
        from kimen.projection.mask import Masker

        masker = Masker(values)
        print(f"masking relay throughput: {size >> 20} MiB, {len(values)} secrets ({len(masker.keys)} automaton "
              f"keys, {len(masker.long_forms)} long forms), {rounds} interleaved rounds; MB/s median [min-max], "
              "time against cat FILE > /dev/null; masker CPU MB/s (in process; the relay's own loop)")
        for label in streams:
            floor = statistics.median(wall[(label, "cat FILE > /dev/null")])
            print(f"  {label} stream" + (f" ({planted} forms planted)" if label != "clean" else ""))
            for (stream, name), seconds in wall.items():
                if stream != label:
                    continue
                rates = [size / s / 1e6 for s in seconds]
                line = (f"    {name:32s} {statistics.median(rates):8.0f} [{min(rates):6.0f}-{max(rates):6.0f}]"
                        f"  x{statistics.median(seconds) / floor:6.1f}")
                if "masker" in name or "relay" in name:
                    line += f"   cpu {size / statistics.median(cpu[(stream, name)]) / 1e6:6.0f} MB/s"
                print(line)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
