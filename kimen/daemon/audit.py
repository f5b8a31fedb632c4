"""The daemon's audit log: one JSON line per request, written before it is answered (docs/agents.md).

`<state>/audit.jsonl` (directory 0700 when kimen creates it, file 0600) is opened
``O_APPEND|O_CREAT|O_NOFOLLOW`` and each record is one ``write(2)`` of one line, so records of two
daemons sharing the state directory never interleave. There is no fsync per record: a power loss
may lose the last records (the page cache had them; the answers had been sent).

Fail closed: before each line the path is checked (lstat: device and inode) to still be the regular
file held open; if it was removed, renamed or replaced (by a directory, a symlink, a FIFO or another
file) the path is opened again, and when that fails — or a line cannot be written — `record`
raises `audit_unavailable` and the daemon refuses the request instead of answering it unaudited.
A short write leaves a partial line behind; the next record starts on a new line, and the reader
(`kimen.daemon.audit_reader`) skips the fragment.

Folding: records of refused connections and broken frames (`op` null, outcome
`session_protocol_error`, `frame_too_large`, `frame_timeout`, `peer_rejected`) and `status`
requests are written at once the first time, and repeats of the same op and outcome within the
next second are folded into one record (the fields of the last, `count`: how many) written when
that second ends — so a flood writes at most two records a second per outcome and cannot rotate
evidence away. The event loop calls `tick()` at `next_deadline()` (boot clock).

Rotation: past 16 MiB the file becomes `audit.jsonl.1` (`.1` → `.2` → `.3`; three are kept).

`peer_info` reads who a client is from /proc when its connection is accepted: its executable, its
working directory, and up to 4 ancestors `{pid, exe, comm}` nearest first (a kimen client's `exe`
is the Python interpreter; its parents name the agent). Without /proc (macOS) these are null.

Stdlib only. Thread-safe: worker threads and the event loop write through one lock.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, Any

from .. import errors, fsutil
from . import protocol
from .session import boot_clock

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

LOG_NAME = "audit.jsonl"
KEEP = 3  # rotated files: audit.jsonl.1 (newest) ... audit.jsonl.3 (oldest)
MAX_BYTES = 16 * 1024 * 1024
FOLD_WINDOW = 1.0
MAX_PARENTS = 4
CONTEXT_LIMIT = 1024  # bytes of the client's context as compact JSON; larger ones are replaced
TEXT_LIMIT = 256  # characters of one short field (op, outcome, request id, version, grant id, a name)
CONNECTION_OUTCOMES = ("session_protocol_error", "frame_too_large", "frame_timeout", "peer_rejected")
FIELDS = ("ts", "daemon_pid", "pid", "ppid", "parents", "uid", "exe", "cwd", "op", "vault", "names",
          "grant_id", "outcome", "request_id", "client_version", "context")  # and `count` when folded

_OPEN_FLAGS = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))


def rotated(path: str, n: int) -> str:
    return f"{path}.{n}"


def log_files(path: str, keep: int = KEEP) -> list[str]:
    """The log's files, oldest first: `audit.jsonl.3` … `.1`, then `audit.jsonl`."""
    return [rotated(path, n) for n in range(keep, 0, -1)] + [path]


def timestamp(unix: float) -> str:
    """RFC 3339 UTC with milliseconds: `2026-11-25T10:00:00.123Z`."""
    whole = int(unix)
    millis = min(int((unix - whole) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


# -- who is asking (/proc) --


class Peer:
    """A client as seen when its connection was accepted. Fields are None where unknown."""

    __slots__ = ("cwd", "exe", "parents", "pid", "ppid", "uid")

    def __init__(self, pid: int | None = None, uid: int | None = None, *, ppid: int | None = None,
                 exe: str | None = None, cwd: str | None = None,
                 parents: list[dict[str, Any]] | None = None) -> None:
        self.pid, self.uid, self.ppid, self.exe, self.cwd, self.parents = pid, uid, ppid, exe, cwd, parents

    def fields(self) -> dict[str, Any]:
        return {"pid": self.pid, "ppid": self.ppid, "parents": self.parents, "uid": self.uid, "exe": self.exe,
                "cwd": self.cwd}


def _link(proc: str, pid: int, name: str) -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/{name}")
    except OSError:
        return None


def _stat(proc: str, pid: int) -> tuple[str, int] | None:
    """(comm, ppid) from /proc/<pid>/stat; the comm sits in parentheses and may hold any byte."""
    try:
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)  # 3 system calls, not open()'s 7
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    start, end = raw.find(b"("), raw.rfind(b")")
    rest = raw[end + 1:].split()
    if start < 0 or end < start or len(rest) < 2 or not rest[1].isdigit():
        return None
    return os.fsdecode(raw[start + 1:end]), int(rest[1])


def peer_info(pid: int | None, uid: int | None, proc: str = "/proc") -> Peer:
    """The client `pid` (from its socket's credentials): exe, cwd, ppid and up to `MAX_PARENTS`
    ancestors, nearest first, from `proc`; None for what cannot be read (no /proc, a process that
    already exited, one that is not dumpable)."""
    if pid is None or pid <= 0 or not os.path.isdir(proc):
        return Peer(pid, uid)
    own = _stat(proc, pid)
    peer = Peer(pid, uid, ppid=own[1] if own else None, exe=_link(proc, pid, "exe"), cwd=_link(proc, pid, "cwd"),
                parents=[] if own else None)
    ancestor = peer.ppid
    while peer.parents is not None and ancestor and len(peer.parents) < MAX_PARENTS:
        info = _stat(proc, ancestor)
        peer.parents.append({"pid": ancestor, "exe": _link(proc, ancestor, "exe"), "comm": info[0] if info else None})
        ancestor = info[1] if info else None
    return peer


# -- what a request says --


def _text(value: Any, limit: int = TEXT_LIMIT) -> str | None:
    return value[:limit] if isinstance(value, str) else None


# The field that names the secrets of each op that reads or changes them (a write's are in its
# changes). Chosen by op, never by which field a frame happens to carry: an extra `names` on a
# `restore` must not stand in for the `name` it restores, for the grant check or the audit log.
NAMES_FIELD = {"read": "names", "purge_history": "names", "grant_create": "secrets",
               "read_revision": "name", "restore": "name"}


def request_names(request: dict[str, Any]) -> list[str]:
    """The secret names a request touches (never values): a read's `names`, a write's change names
    (both names of a move), a grant's scope, the `name` of a revision read or restore; each once,
    in order. Any other op touches none."""
    op = request.get("op")
    found: list[Any] = []
    if op == "write" and isinstance(request.get("changes"), list):
        for change in request["changes"]:
            if isinstance(change, dict):
                found += [change.get("name"), change.get("new_name")]
    elif isinstance(op, str) and op in NAMES_FIELD:
        value = request.get(NAMES_FIELD[op])
        found = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return list(dict.fromkeys(name[:TEXT_LIMIT] for name in found if isinstance(name, str)))


def bounded_context(context: Any) -> dict[str, Any] | None:
    """The client's advisory context, or `{"truncated": true, "bytes": n}` past `CONTEXT_LIMIT`."""
    if not isinstance(context, dict):
        return None
    size = len(protocol.dump_bytes(context))
    return context if size <= CONTEXT_LIMIT else {"truncated": True, "bytes": size}


def request_fields(request: dict[str, Any]) -> dict[str, Any]:
    """The record fields a (type-checked or not) request supplies; wrong types become null."""
    rid = request.get("id")
    return {
        "op": _text(request.get("op"), 64), "vault": _text(request.get("vault_path"), 4096),
        "names": request_names(request),
        "request_id": rid if type(rid) is int else _text(rid, 128),
        "client_version": _text(request.get("kimen"), 64), "context": bounded_context(request.get("context")),
    }


# -- the writer --


class _Fold:
    __slots__ = ("count", "doc", "until")

    def __init__(self, until: float) -> None:
        self.until, self.count = until, 0
        self.doc: dict[str, Any] | None = None


class AuditLog:
    """The audit file of one daemon. `open()` first; `request`/`refusal`/`record` before each
    answer (they raise `AuditUnavailable` when the line cannot be written); `tick()` at
    `next_deadline()`; `close()` when the daemon stops (pending folds are written)."""

    def __init__(self, path: str, *, daemon_pid: int | None = None, max_bytes: int = MAX_BYTES, keep: int = KEEP,
                 window: float = FOLD_WINDOW, clock: Callable[[], float] = boot_clock,
                 wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self.daemon_pid = os.getpid() if daemon_pid is None else daemon_pid
        self._max, self._keep, self._window = max_bytes, keep, window
        self._clock, self._wall = clock, wall
        self._fd: int | None = None
        self._held: tuple[int, int] | None = None  # (device, inode) of the file behind _fd
        self._broken = False  # the last write was short: start the next record on a new line
        self._folds: dict[tuple[str | None, str], _Fold] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the directory (0700) and open the file (0600); `AuditUnavailable` on failure."""
        with self._lock:
            self._reopen()

    def close(self) -> None:
        with self._lock:
            self._flush_folds(None)
            if self._fd is not None:
                os.close(self._fd)
                self._fd, self._held = None, None

    def ready(self) -> None:
        """`AuditUnavailable` unless the path names a file a line can be written to now (checked,
        and opened again when moved or replaced, before a request is served)."""
        with self._lock:
            self._check_path()

    # -- recording --

    def request(self, peer: Peer, request: dict[str, Any], *, outcome: str, grant_id: str | None = None) -> None:
        """Record one request and its outcome (`ok` or the reason it failed with)."""
        self.record(peer, outcome=outcome, grant_id=grant_id, **request_fields(request))

    def refusal(self, peer: Peer, outcome: str) -> None:
        """Record a refused connection or a broken frame (`op` null; folded)."""
        self.record(peer, outcome=outcome)

    def record(self, peer: Peer, *, outcome: str, op: str | None = None, vault: str | None = None,
               names: Iterable[str] = (), grant_id: str | None = None, request_id: str | int | None = None,
               client_version: str | None = None, context: dict[str, Any] | None = None) -> None:
        now = self._clock()
        doc = {"ts": timestamp(self._wall()), "daemon_pid": self.daemon_pid, **peer.fields(), "op": op,
               "vault": vault, "names": list(names), "grant_id": grant_id, "outcome": outcome[:TEXT_LIMIT],
               "request_id": request_id, "client_version": client_version, "context": context}
        key = (op, outcome) if op is None or op == "status" else None
        with self._lock:
            self._flush_folds(now)
            if key is not None:
                fold = self._folds.get(key)
                if fold is not None:  # within the second after a written one: folded
                    fold.count += 1
                    fold.doc = doc
                    return
            self._write(doc)
            if key is not None:
                self._folds[key] = _Fold(now + self._window)

    def next_deadline(self) -> float | None:
        """When the next folded record is due (boot clock), None when none is pending."""
        with self._lock:
            return min((f.until for f in self._folds.values() if f.count), default=None)

    def tick(self, now: float | None = None) -> None:
        """Write the folded records whose second has ended."""
        with self._lock:
            self._flush_folds(self._clock() if now is None else now)

    def _flush_folds(self, now: float | None) -> None:
        """Write the folds due at `now` (all with None) and forget their windows (lock held).
        A folded record that cannot be written is dropped: it answers no request, and the next
        record's own write fails the same way, closed."""
        for key, fold in list(self._folds.items()):
            if now is not None and now < fold.until:
                continue
            del self._folds[key]
            if fold.count and fold.doc is not None:
                try:
                    self._write({**fold.doc, "count": fold.count})
                except errors.KimenError:
                    pass

    # -- the file --

    def _unavailable(self, problem: str) -> errors.KimenError:
        return errors.AuditUnavailable(path=self.path, problem=problem)

    def _write(self, doc: dict[str, Any]) -> None:
        """One line, one write(2), to the file the path names now (lock held)."""
        line = protocol.dump_bytes(doc) + b"\n"
        if self._broken:
            line = b"\n" + line
        self._check_path()
        self._rotate_if_full(len(line))
        assert self._fd is not None
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise self._unavailable(exc.strerror or "cannot write") from None
        self._broken = written != len(line)
        if self._broken:
            raise self._unavailable(f"short write ({written} of {len(line)} bytes)")

    def _check_path(self) -> None:
        """The path still names the regular file held open; else open it again (lock held)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise self._unavailable(exc.strerror or "cannot inspect") from None
        if self._fd is None or st is None or not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != self._held:
            self._reopen()

    def _reopen(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            fsutil.make_private_dirs(directory)
        except OSError as exc:
            raise self._unavailable(f"cannot create {directory}: {exc.strerror}") from None
        problem = fsutil.directory_problem(directory, strict=False)
        if problem:
            raise self._unavailable(f"{directory} {problem}")
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o600)
        except OSError as exc:
            raise self._unavailable(_open_problem(exc)) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._unavailable("not a regular file")
            if st.st_uid != os.getuid():
                raise self._unavailable("owned by another user")
            if st.st_mode & 0o077:  # a file put there by hand: the log is private
                os.fchmod(fd, 0o600)
            os.set_blocking(fd, True)
        except OSError as exc:
            os.close(fd)
            raise self._unavailable(exc.strerror or "cannot open") from None
        except BaseException:
            os.close(fd)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._held = fd, (st.st_dev, st.st_ino)

    def _rotate_if_full(self, incoming: int) -> None:
        """Past `max_bytes`: `.2` → `.3`, `.1` → `.2`, the file → `.1`, and a new file (lock held).
        An flock on the file makes a second daemon sharing it see the rotation and not repeat it."""
        import fcntl

        assert self._fd is not None
        try:
            size = os.fstat(self._fd).st_size
            if not size or size + incoming <= self._max:
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                st = os.lstat(self.path)
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == self._held:
                    for n in range(self._keep - 1, 0, -1):
                        if os.path.lexists(rotated(self.path, n)):
                            os.replace(rotated(self.path, n), rotated(self.path, n + 1))
                    os.replace(self.path, rotated(self.path, 1))
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise self._unavailable(f"cannot rotate: {exc.strerror}") from None
        self._reopen()


def _open_problem(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symlink"
    if exc.errno == errno.EISDIR:
        return "is a directory"
    if exc.errno == errno.ENXIO:
        return "is a FIFO or a socket"
    return exc.strerror or "cannot open"
