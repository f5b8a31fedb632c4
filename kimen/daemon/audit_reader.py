"""Reading the audit log without the daemon: `kimen session log` (docs/agents.md, "Reading the log").

The records are read oldest first: `audit.jsonl.3` … `.1`, then `audit.jsonl` (files that do not
exist are skipped; no log at all reads as no records). A file that cannot be read — a symlink, a
directory or anything else that is not a regular file, no permission — is `audit_log_unreadable`.
A line that is not a JSON object (a fragment a failed write left, a hand edit) is skipped and
counted (`skipped`); an unterminated last line of the live file is a record being written, left
for later.

`Selection` holds the filters, which combine: `since` (a duration back from now or an RFC 3339
time, `parse_since`), `grant` (the records of that grant id), `name` (records naming a name the
glob matches, `kimen.globs`). `LogReader.scan(limit)` keeps the newest `limit` records that pass,
oldest first; `LogReader.follow` yields them, then every new record that passes, across rotation,
until `stop()` says so or the caller is interrupted. `human_lines` and `json_line` format them.

Client side: stdlib only, nothing heavy (the daemon's writer module is imported for the log's
layout only).
"""

from __future__ import annotations

import os
import stat
import time
from typing import TYPE_CHECKING, Any

from .. import errors
from ..globs import Glob
from .audit import KEEP, log_files, rotated

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_CHUNK = 1 << 20


_DIGITS = "0123456789"
_SHAPE = "dddd-dd-ddTdd:dd:dd"


def _time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (`2026-11-25T10:00:00Z`; fractions and offsets
    allowed); None for anything else."""
    if not isinstance(text, str) or not 20 <= len(text) <= 48:
        return None
    head, rest = text[:19].upper(), text[19:]
    if not all(c in _DIGITS if s == "d" else c == s for s, c in zip(_SHAPE, head, strict=True)):
        return None
    fraction = ""
    if rest.startswith("."):
        zone = rest[1:].lstrip(_DIGITS)
        digits = rest[1:len(rest) - len(zone)]
        if not digits:
            return None
        fraction, rest = "." + digits[:6].ljust(6, "0"), zone
    if rest in ("Z", "z"):
        rest = "+00:00"
    if len(rest) != 6 or rest[0] not in "+-" or rest[3] != ":" or not all(c in _DIGITS for c in rest[1:3] + rest[4:]):
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(head + fraction + rest).timestamp()
    except ValueError:
        return None


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (`15m`, `1h30m`, `7d`, seconds) or an RFC 3339 time,
    as seconds since the epoch; `invalid_since` otherwise."""
    from ..durations import parse_duration

    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    at = _time(text.strip())
    if at is None:
        raise errors.InvalidSince(text=text[:80])
    return at


class Selection:
    """The filters of `session log`; a record passes when it passes every filter given."""

    __slots__ = ("grant", "name", "since")

    def __init__(self, *, since: float | None = None, grant: str | None = None, name: str | None = None) -> None:
        self.since, self.grant = since, grant
        self.name = Glob(name) if name is not None else None

    def passes(self, record: dict[str, Any]) -> bool:
        if self.since is not None:
            at = _time(record.get("ts"))
            if at is None or at < self.since:
                return False
        if self.grant is not None and record.get("grant_id") != self.grant:
            return False
        if self.name is not None:
            names = record.get("names")
            glob = self.name
            if not isinstance(names, list) or not any(isinstance(n, str) and glob.match(n) for n in names):
                return False
        return True


def _open(path: str) -> tuple[int, tuple[int, int]] | None:
    """A log file open for reading and its (device, inode); None when it does not exist."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        import errno

        problem = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror or "cannot open"
        raise errors.AuditLogUnreadable(path=path, problem=problem) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise errors.AuditLogUnreadable(path=path, problem="not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, (st.st_dev, st.st_ino)


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


class _File:
    """One open log file, read line by line from where it was left."""

    __slots__ = ("buf", "fd", "ident", "path")

    def __init__(self, path: str, fd: int, ident: tuple[int, int]) -> None:
        self.path, self.fd, self.ident, self.buf = path, fd, ident, b""

    def lines(self) -> list[bytes]:
        """The complete lines written since the last call (an unterminated tail waits)."""
        chunks = [self.buf]
        try:
            while True:
                chunk = os.read(self.fd, _CHUNK)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise errors.AuditLogUnreadable(path=self.path, problem=exc.strerror or "cannot read") from None
        *lines, self.buf = b"".join(chunks).split(b"\n")
        return lines

    def close(self) -> None:
        os.close(self.fd)


class LogReader:
    """The audit log at `path` (`<state>/audit.jsonl`) through a `Selection`. `skipped` counts
    the lines that were not records."""

    def __init__(self, path: str, selection: Selection | None = None, *, keep: int = KEEP) -> None:
        self.path = path
        self.selection = selection or Selection()
        self.keep = keep
        self.skipped = 0

    def _records(self, lines: list[bytes]) -> list[dict[str, Any]]:
        import json

        out = []
        for raw in lines:
            if not raw.strip():
                continue
            try:  # UTF-8 only: json.loads would guess UTF-16 or UTF-32 from the first bytes
                record = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError included; nested too deep
                record = None
            if not isinstance(record, dict):
                self.skipped += 1
                continue
            if self.selection.passes(record):
                out.append(record)
        return out

    def _whole(self, path: str) -> list[dict[str, Any]]:
        """Every record of a finished (rotated) file; an unterminated tail is a fragment."""
        opened = _open(path)
        if opened is None:
            return []
        file = _File(path, *opened)
        try:
            lines = file.lines()
        finally:
            file.close()
        return self._records([*lines, file.buf])

    def _start(self, limit: int | None) -> tuple[list[dict[str, Any]], _File | None]:
        """The selected records so far (the newest `limit`), and the live file left open at its end."""
        import collections

        kept: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        *older, live = log_files(self.path, self.keep)
        for path in older:
            kept.extend(self._whole(path))
        opened = _open(live)
        file = _File(live, *opened) if opened is not None else None
        if file is not None:
            try:
                kept.extend(self._records(file.lines()))
            except BaseException:
                file.close()
                raise
        return list(kept), file

    def scan(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest `limit` records that pass (all with None), oldest first."""
        records, file = self._start(limit)
        if file is not None:
            file.close()
        return records

    def follow(self, limit: int | None = None, *, poll: float = 0.25,
               stop: Callable[[], bool] | None = None) -> Iterator[dict[str, Any]]:
        """`scan(limit)`'s records, then each new record that passes as it is written, across
        rotation, until `stop()` is true (checked every `poll` seconds) or the caller stops."""
        records, file = self._start(limit)
        try:
            yield from records
            while stop is None or not stop():
                time.sleep(poll)
                new, file = self._advance(file)
                yield from new
        finally:
            if file is not None:
                file.close()

    def _advance(self, file: _File | None) -> tuple[list[dict[str, Any]], _File | None]:
        """New records since the last poll. When the path names another file (rotated), the old
        one is read to its end, then the rotated files newer than it, then the new file."""
        records = self._records(file.lines()) if file is not None else []
        current = _ident(self.path)
        if file is not None and current == file.ident:
            return records, file
        if file is not None:
            records += self._records(file.lines())  # what it got between the first read and the rotation
            if file.buf.strip():  # the file is finished: its unterminated tail is a fragment
                records += self._records([file.buf])
            file.close()
            rotated_ids = [_ident(rotated(self.path, n)) for n in range(1, self.keep + 1)]
            if file.ident in rotated_ids:  # files rotated after it, oldest first
                for n in range(rotated_ids.index(file.ident), 0, -1):
                    records += self._whole(rotated(self.path, n))
            file = None
        opened = _open(self.path) if current is not None else None
        if opened is not None:
            file = _File(self.path, *opened)
            records += self._records(file.lines())
        return records, file


# -- output --

_COLUMNS = (("ts", ""), ("pid", "pid="), ("ppid", "ppid="), ("exe", "exe="), ("op", "op="), ("vault", "vault="),
            ("names", "names="), ("grant_id", "grant="))


def _shown(value: Any) -> str:
    from ..output import one_line

    if value is None or value == []:
        return "-"
    if isinstance(value, list):
        return one_line(",".join(str(v) for v in value))
    return one_line(str(value))


def _compact(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def human_lines(records: list[dict[str, Any]]) -> list[str]:
    """One aligned line per record: `<ts> pid=<n> ppid=<n> exe=<path> op=<op> vault=<p>
    names=<a,b> grant=<id> <outcome> [count=<n>] [ctx(advisory)=<context as compact JSON>]`,
    null fields as `-`."""
    from ..output import one_line

    rows = []
    for record in records:
        cells = [prefix + _shown(record.get(field)) for field, prefix in _COLUMNS]
        cells.append(_shown(record.get("outcome")))
        extra = []
        if record.get("count") is not None:
            extra.append(f"count={_shown(record['count'])}")
        if record.get("context") is not None:
            extra.append(f"ctx(advisory)={one_line(_compact(record['context']))}")
        rows.append((cells, extra))
    widths = [max((len(cells[i]) for cells, _ in rows), default=0) for i in range(len(_COLUMNS) + 1)]
    any_extra = any(extra for _, extra in rows)
    out = []
    for cells, extra in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        if not any_extra:
            padded[-1] = cells[-1]
        out.append(" ".join(padded + extra).rstrip())
    return out


def json_line(record: dict[str, Any]) -> str:
    """A record as one JSON Lines line (`session log --json`), without the newline."""
    return _compact(record)
