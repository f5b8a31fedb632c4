"""The light session client: connect, ask, and the session store.

Stdlib only, and nothing heavy at import time: `secret get`, `run` and `session status` served by a
live session load this module and `protocol`, never sqlite3, crypto or the server (an
import-linter contract and a subprocess test hold this). A client that cannot connect (no
socket, refused, a daemon of another uid) treats the session as absent; a daemon of another
version is absent too, with a warning. `probe` tells the cases apart for the commands that report
them (`session status`, `doctor`, the `session_expired` fallback): stopped, busy (a daemon holds
the socket but does not answer in time), another version, and the selected vault locked, expired
or unlocked. A command that already knows the names it will read (`run` and the other
projections) asks for them first: an answer means a daemon of this version serves the vault, so
the `status` request is sent only when the read is refused. Starting, stopping and locking the
daemon process (`session start|stop|lock|status`) is `kimen.daemon.control`'s job.
"""

from __future__ import annotations

import _socket  # the C module: `socket` would add `selectors` and its wrappers (~2.5 ms) to every command
import os

from .. import errors
from . import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from ..store import Change, RestoreResult, SecretHistory, SecretInfo, VaultMeta, WriteResult
    from ..values import SecretValue

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 60.0
STATUS_TIMEOUT = 1.0  # `session status`: a daemon that does not answer within 1 s is busy
UNLOCK_TIMEOUT = 3600.0  # a KDF at the ceiling parameters takes minutes


class Absent(Exception):
    """No usable daemon at the socket (internal; callers fall back or report `stopped`).
    `busy`: something listens there but did not take the connection in time."""

    def __init__(self, message: str, *, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


class Connection:
    """One connection to the daemon; requests are sent in sequence. `pid`: the daemon's, from
    its credentials (known as soon as the connection exists, before any answer)."""

    def __init__(self, path: str, token: str | None = None, timeout: float = CONNECT_TIMEOUT) -> None:
        self.path = path
        self.token = token
        self.context: dict[str, Any] | None = None  # advisory: what the client says it is doing (audited)
        self._next = 0
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            _connect(sock, path, timeout)
            # before sending anything: is the daemon one of ours?
            if protocol.peer_uid(sock) != os.getuid():
                raise Absent("the session socket belongs to another user")
            self.pid = protocol.peer_pid(sock)
        except Absent:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            raise Absent(str(exc)) from None
        self.sock: _socket.socket | None = sock

    def call(self, op: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send one request and return the successful response; failures raise their KimenError."""
        response = self.call_raw(op, timeout, **fields)
        protocol.raise_for(response)
        return response

    def call_raw(self, op: str, timeout: float = REPLY_TIMEOUT, **fields: Any) -> dict[str, Any]:
        if self.sock is None:
            raise errors.SessionUnavailable()
        self._next += 1
        rid = str(self._next)
        request = {"v": protocol.PROTOCOL, "kimen": protocol.VERSION, "id": rid, "op": op, **fields}
        if self.token:
            request["token"] = self.token
        if self.context:
            request["context"] = self.context
        try:
            protocol.send(self.sock, request)
            response = protocol.receive(self.sock, idle=timeout)
        except protocol.PeerClosed:
            self.close()
            raise errors.SessionUnavailable(message="the session daemon closed the connection") from None
        except OSError:
            self.close()
            raise errors.SessionUnavailable(
                message="the session daemon did not answer",
                hint="it is running but busy, stopped or hung: try again, or end it with `kimen session stop`",
            ) from None
        if response.get("id") not in (rid, None):
            raise errors.SessionProtocolError()
        return response

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(sock: _socket.socket, path: str, timeout: float) -> None:
    """Connect within `timeout`. A full listen queue (EAGAIN: the daemon is busy accepting) is
    retried until then; it, or a timeout, is `Absent(busy=True)`."""
    import time

    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while True:
        try:
            sock.connect(path)
            return
        except (BlockingIOError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) or time.monotonic() >= deadline:
                raise Absent("the session daemon does not accept connections", busy=True) from None
            time.sleep(0.01)


# -- finding the daemon --


def connect(env: Mapping[str, str], *, strict: bool = False) -> Connection | None:
    """A connection to this user's daemon, or None when there is none.

    strict (session commands): an unsafe session dir or a too-long socket path raises; otherwise
    they mean "no session" (with a warning for the unsafe dir).
    """
    try:
        return open_connection(env, strict=strict)
    except Absent:
        return None


def open_connection(env: Mapping[str, str], *, strict: bool = False,
                    timeout: float = CONNECT_TIMEOUT) -> Connection | None:
    """`connect`, but a daemon that is there and busy raises `Absent(busy=True)`."""
    from .. import paths

    directory = paths.session_dir(env)
    try:
        path = protocol.socket_path(env)
    except errors.SocketPathTooLong:
        if strict:
            raise
        return None
    if not os.path.lexists(directory):
        return None
    problem = paths.session_dir_problem(directory)
    if problem:
        if strict:
            raise errors.SessionDirUnsafe(path=directory, problem=problem, hint=paths.session_dir_hint(directory))
        from ..output import warn

        warn(f"ignoring the session: session directory is unsafe: {directory} ({problem})",
             reason="session_dir_ignored")
        return None
    if path in protocol.UNANSWERED:  # it did not answer this process's fast path: busy, not asked again
        raise Absent("the session daemon did not answer", busy=True)
    token = env.get("KIMEN_SESSION_TOKEN") or None
    if token is not None and not protocol.utf8(token):  # bytes that are not UTF-8: no grant's (ASCII),
        token = os.fsencode(token).decode("utf-8", "replace")  # so grant_invalid like any malformed token
    return Connection(path, token=token, timeout=timeout)


def same_version(status: dict[str, Any]) -> bool:
    return status.get("protocol") == protocol.PROTOCOL and status.get("version") == protocol.VERSION


class Probe:
    """What the session socket says about one vault.

    `state`: `stopped` (no usable daemon), `busy` (a daemon holds the socket but did not answer in
    time: it may hold keys), `other_version`, or the vault's `locked`, `expired`, `unlocked`.
    `conn` stays open only for `unlocked` (the caller serves the command through it). `answer`:
    the daemon's response to the read `probe` sent first, for the store to use (`unlocked` only).
    """

    __slots__ = ("answer", "conn", "pid", "state", "status", "vault")

    def __init__(self, state: str, *, status: dict[str, Any] | None = None, pid: int | None = None,
                 conn: Connection | None = None, vault: dict[str, Any] | None = None,
                 answer: tuple[list[str], dict[str, Any]] | None = None) -> None:
        self.state, self.status, self.pid, self.conn, self.vault = state, status, pid, conn, vault
        self.answer = answer

    def store(self, vault_path: str, metadata: Callable[[], Any]) -> SessionStore | None:
        if self.conn is None or self.vault is None:
            return None
        return SessionStore(self.conn, vault_path, self.vault["vault_path"], metadata, answered=self.answer)

    def refusal(self, vault_path: str) -> errors.KimenError:
        """Why this session cannot serve `vault_path` (a grant token requires it to)."""
        if self.state == "other_version":
            return errors.SessionVersionMismatch()
        if self.state == "expired":
            return expired_error(self.vault or {}, vault_path)
        if self.state in ("locked", "unlocked"):
            return errors.SessionLocked(vault=vault_path)
        return errors.SessionUnavailable()


def status(env: Mapping[str, str], vault_path: str | None) -> tuple[str, Probe]:
    """(socket path, what the daemon says about `vault_path`); a daemon that holds the socket but
    does not answer within `STATUS_TIMEOUT` is `busy`, never `stopped`. Here rather than in
    `kimen.daemon.control`, so `kimen status` asks without importing the process control."""
    path = protocol.socket_path(env)
    return path, probe(env, vault_path, strict=True, timeout=STATUS_TIMEOUT, keep=False)


def expired_error(vault: dict[str, Any], vault_path: str) -> errors.KimenError:
    """`session_expired` naming the vault as the session does (its canonical path)."""
    return errors.SessionExpired(vault_path=vault.get("vault_path") or vault_path,
                                 expired_at=vault.get("expired_at"), expired_by=vault.get("expired_by"))


# refusals of a read that mean "this session does not serve the vault", not "it refuses the names"
_NOT_SERVED = frozenset({"session_locked", "session_expired", "session_version_mismatch"})


def probe(env: Mapping[str, str], canonical_path: str | None, *, strict: bool = False,
          timeout: float = REPLY_TIMEOUT, keep: bool = True, context: dict[str, Any] | None = None,
          reading: Sequence[str] = ()) -> Probe:
    """Ask the daemon's status (about `canonical_path` when given; see `Probe`). `keep=False`:
    close the connection in every case. `reading`: the names the caller will read, asked for first
    (one request instead of two when the session serves them). A daemon that answers `status`
    with a refusal (`audit_unavailable`) raises it."""
    if canonical_path is not None and not protocol.utf8(canonical_path):
        canonical_path, keep = None, False  # a path that is not valid UTF-8 is never a session's vault
    try:
        conn = open_connection(env, strict=strict, timeout=min(timeout, CONNECT_TIMEOUT))
    except Absent as absent:
        return Probe("busy" if absent.busy else "stopped")
    if conn is None:
        return Probe("stopped")
    conn.context = context
    if reading and canonical_path is not None and keep:
        from ..values import MAX_VALUE_BYTES

        names = list(dict.fromkeys(reading))
        if len(protocol.read_batches(names, None, MAX_VALUE_BYTES)) == 1:
            try:
                response = conn.call_raw("read", timeout, vault_path=canonical_path, names=names)
            except errors.KimenError:  # it took the connection but gave no answer in time
                conn.close()
                return Probe("busy", pid=conn.pid)
            if response.get("ok") is True:  # only a daemon of this version serving the vault reads
                return Probe("unlocked", pid=conn.pid, conn=conn, vault={"vault_path": canonical_path},
                             answer=(names, response))
            # Refused: whatever the reason, the status request tells the state, on a fresh
            # connection (a daemon may close one after a refusal). Served, the refusal is the
            # answer, unless it said the vault was not served (it was unlocked in between).
            conn.close()
            found = probe(env, canonical_path, strict=strict, timeout=timeout, context=context)
            if found.state == "unlocked" and response.get("reason") not in _NOT_SERVED:
                found.answer = (names, response)
            return found
    fields = {} if canonical_path is None else {"vault_path": canonical_path}
    try:
        status = conn.call_raw("status", timeout, **fields)
    except errors.KimenError:  # it took the connection but gave no answer in time
        conn.close()
        return Probe("busy", pid=conn.pid)
    if status.get("ok") is not True:  # it answered, and refused (its audit log unwritable): that is
        conn.close()  # the reason, not "busy"; it fails closed and so does the command
        protocol.raise_for(status)
    pid = status.get("pid") if type(status.get("pid")) is int else conn.pid
    if not same_version(status):
        conn.close()
        return Probe("other_version", status=status, pid=pid)
    vault = next((v for v in status.get("vaults") or () if isinstance(v, dict)
                  and v.get("vault_path") == canonical_path), None) if canonical_path is not None else None
    state = "locked" if vault is None else vault.get("state", "unlocked")
    if state != "unlocked" or canonical_path is None or not keep:
        conn.close()
        conn = None
    return Probe(state if state in ("expired", "unlocked") else "locked", status=status, pid=pid, conn=conn,
                 vault=vault)


def warn_other_version(probe: Probe) -> None:
    from ..output import warn

    version = (probe.status or {}).get("version")
    warn(f"ignoring the session daemon: it runs kimen {version!s:.40}; run `kimen session start` to replace it",
         reason="session_other_version")


def session_store(env: Mapping[str, str], vault_path: str, canonical_path: str,
                  metadata: Callable[[], Any]) -> SessionStore | None:
    """The daemon's store for `canonical_path`, or None when no live session serves that vault."""
    found = probe(env, canonical_path)
    if found.state == "other_version":
        warn_other_version(found)
    return found.store(vault_path, metadata)


class SessionStore:
    """The store served by the daemon; `meta`/`list` read the vault file locally."""

    def __init__(self, conn: Connection, path: str, canonical_path: str, metadata: Callable[[], Any], *,
                 answered: tuple[list[str], dict[str, Any]] | None = None) -> None:
        self.conn = conn
        self.path = path
        self.canonical_path = canonical_path
        self._metadata = metadata
        self._history_keep: Callable[[], int] | None = None
        self._answered = answered  # (names, response) of the read `probe` already sent: used once

    def keep_history_from(self, source: Callable[[], int]) -> None:
        """Send `source()` (the config's `history.keep`) with each write and restore: the daemon
        keeps what the command's own config says, not what the daemon's environment would."""
        self._history_keep = source

    def meta(self) -> VaultMeta:
        with self._metadata() as vault:
            return vault.meta()

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        with self._metadata() as vault:
            return vault.list(prefix)

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        """Values through the daemon, in requests of at most 1 000 names whose responses stay
        under 48 MiB: sizes come from the vault file when the largest legal values could exceed
        that (more than ~30 names), so any set of legal values can be read."""
        from ..values import MAX_VALUE_BYTES, SecretValue  # here: `status` asks the daemon without them
        wanted = list(dict.fromkeys(names))
        result: dict[str, SecretValue] = {}
        missing: list[str] = []
        batches = protocol.read_batches(wanted, None, MAX_VALUE_BYTES)
        if len(batches) > 1:
            with self._metadata() as vault:
                batches = protocol.read_batches(wanted, vault.sizes(wanted), MAX_VALUE_BYTES)
        answered, self._answered = self._answered, None
        for batch in batches:
            try:
                if answered is not None and answered[0] == batch:
                    response = answered[1]
                    protocol.raise_for(response)
                else:
                    response = self.conn.call("read", vault_path=self.canonical_path, names=batch)
            except errors.SecretNotFound as err:
                missing.extend(err.fields.get("missing") or [])
                continue
            for item in response.get("secrets") or ():
                name = item["name"]
                result[name] = SecretValue(name, protocol.value_from_b64(item["value_b64"]), item["revision"])
        if missing:
            raise errors.SecretNotFound(missing)
        return {name: result[name] for name in wanted if name in result}

    def write(self, changes: Sequence[Change], if_generation: int | None = None, baseline: Any = None, *,
              history_op: str | None = None) -> WriteResult:
        from binascii import b2a_base64

        from ..store import ChangeResult, WriteResult

        items = []
        for change in changes:
            item: dict[str, Any] = {"op": change.op, "name": change.name}
            if change.op == "set":
                item["value_b64"] = b2a_base64(change.value or b"", newline=False).decode()
                item["mode"] = change.mode
            if change.new_name is not None:
                item["new_name"] = change.new_name
            items.append(item)
        fields: dict[str, Any] = {"vault_path": self.canonical_path, "changes": items}
        if if_generation is not None:
            fields["if_generation"] = if_generation
        if baseline is not None:
            fields["baseline"] = baseline
        if history_op is not None:
            fields["history_op"] = history_op
        if self._history_keep is not None:
            fields["history_keep"] = self._history_keep()
        response = self._changed(self.conn.call("write", **fields))
        return WriteResult(response["generation"], [
            ChangeResult(r["op"], r["name"], r.get("revision"), created=bool(r.get("created")),
                         new_name=r.get("new_name")) for r in response.get("results") or ()])

    def verify(self) -> None:
        self.conn.call("verify", vault_path=self.canonical_path)

    def history(self, name: str) -> SecretHistory:
        """No key needed: read from the vault file, like `list`."""
        with self._metadata() as vault:
            return vault.history(name, self._history_keep()) if self._history_keep else vault.history(name)

    def read_revision(self, name: str, revision: int) -> SecretValue:
        from ..values import SecretValue, check_secret_name

        check_secret_name(name)
        response = self.conn.call("read_revision", vault_path=self.canonical_path, name=name, revision=revision)
        return SecretValue(response["name"], protocol.value_from_b64(response["value_b64"]),
                           response["revision"])

    def restore(self, name: str, revision: int) -> RestoreResult:
        from ..store import RestoreResult
        from ..values import check_secret_name

        check_secret_name(name)
        keep = {} if self._history_keep is None else {"history_keep": self._history_keep()}
        r = self._changed(self.conn.call("restore", vault_path=self.canonical_path, name=name, revision=revision,
                                         **keep))
        return RestoreResult(r["name"], r["from_revision"], r["revision"], r["generation"], bool(r["unchanged"]))

    def purge_history(self, names: Sequence[str] | None = None) -> int:
        """All names (None) are sent by name, as read from the vault file: a grant then checks
        each one, so an agent's scoped grant cannot purge names outside its scope."""
        if names is None:
            with self._metadata() as vault:
                names = vault.history_names()
        wanted = list(dict.fromkeys(names))
        count = 0
        # at least one request, even with nothing left to delete: the daemon then truncates the WAL
        # a reader kept from being truncated last time (`wal_not_truncated`)
        for start in range(0, max(len(wanted), 1), protocol.READ_BATCH):
            response = self._changed(self.conn.call("purge_history", vault_path=self.canonical_path,
                                                    names=wanted[start:start + protocol.READ_BATCH]))
            count += int(response["count"])
        return count

    def _changed(self, response: dict[str, Any]) -> dict[str, Any]:
        """A change's answer; one that migrated the vault's schema warns as a local change does."""
        backup = response.get("migrated_backup")
        if isinstance(backup, str):
            from ..store import warn_migrated

            warn_migrated(self.canonical_path, backup)
        return response

    def close(self) -> None:
        self.conn.close()
