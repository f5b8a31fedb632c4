"""`<vault>.backups`, the log of what made each backup: past its 4 MiB read limit, the newest lines
are the ones read, every one of them whole (kimen.vault.backup)."""

from __future__ import annotations

import json

import pytest

from kimen.vault import backup

LINE = 256  # a power of two: it divides the 4 MiB limit, so a cut can fall exactly on a line start


def _line(vault, n: int, length: int) -> bytes:
    doc = {"path": f"{vault}.bak.{n:09d}", "made_by": "", "vault": str(vault)}
    doc["made_by"] = f"cmd {n:09d}".ljust(length - len(json.dumps(doc)) - 1)
    text = (json.dumps(doc) + "\n").encode()
    assert len(text) == length
    return text


@pytest.mark.parametrize("shift", [0, 1, LINE - 1])  # the cut on a line start, one byte in, one byte short
def test_the_newest_lines_are_read_whole_wherever_the_limit_cuts(tmp_path, shift):
    vault = tmp_path / "v.db"
    vault.write_bytes(b"")
    count = backup._LOG_READ_LIMIT // LINE + 10
    # every line LINE bytes, the last one `shift` longer: the read starts at 10 * LINE + shift
    data = b"".join(_line(vault, n, LINE + (shift if n == count - 1 else 0)) for n in range(count))
    (tmp_path / "v.db.backups").write_bytes(data)
    start = len(data) - backup._LOG_READ_LIMIT
    whole = [n for n in range(count) if n * LINE >= start]  # the lines that begin inside what is read
    assert sorted(v.strip() for v in backup.made_by(str(vault)).values()) == [f"cmd {n:09d}" for n in whole]
