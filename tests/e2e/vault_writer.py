"""A vault writer for the durability tests: `python vault_writer.py VAULT PREFIX COUNT`.

Unlocks VAULT with KIMEN_PASSPHRASE (never argv) through kimen's own LocalStore, prints `ready`,
then makes COUNT writes, each one transaction setting `PREFIX.k<i>` to `value(PREFIX, i)` and
`PREFIX.last` to `<i>`, and prints `ok <i>` after each write returned. A line printed is a write
reported as done: after a SIGKILL, every printed write must still be in the vault.
"""

from __future__ import annotations

import hashlib
import os
import sys


def value(prefix: str, i: int) -> bytes:
    digest = hashlib.sha256(f"{prefix}:{i}".encode()).hexdigest()
    return (digest * (1 + i % 5)).encode()  # 64 to 320 bytes: rows of several sizes


def main(argv: list[str]) -> int:
    from kimen.sensitive import Sensitive
    from kimen.store import Change
    from kimen.vault import Vault

    path, prefix, count = argv[0], argv[1], int(argv[2])
    store = Vault.open(path).unlock(Sensitive(os.environb[b"KIMEN_PASSPHRASE"]))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for i in range(count):
        store.write([Change.set(f"{prefix}.k{i}", value(prefix, i)), Change.set(f"{prefix}.last", str(i).encode())])
        out.write(f"ok {i}\n")
        out.flush()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
