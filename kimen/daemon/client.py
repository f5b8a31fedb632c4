"""The light session client (SPEC §5.10): connect, ask, and the session store.

Stdlib only, and nothing heavy at import time: `secret get`, `run` and `session status` served by a
live session load this module and `protocol`, never sqlite3, crypto or the server (an
import-linter contract and a subprocess test hold this). A client that cannot connect (no
socket, refused, a daemon of another uid) treats the session as absent; a daemon of another
version is absent too, with a warning. Starting, stopping and locking the daemon process
(`session start|stop|lock|status`) is `kimen.daemon.control`'s job.
"""

from __future__ import annotations

import _socket  # the C module: `socket` would add `selectors` and its wrappers (~2.5 ms) to every command
import os

from .. import errors
from ..store import ChangeResult, SecretValue, WriteResult
from . import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from ..store import Change, SecretInfo, VaultMeta

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 60.0
UNLOCK_TIMEOUT = 3600.0  # a KDF at the ceiling parameters takes minutes


class Absent(Exception):
    """No usable daemon at the socket (internal; callers fall back or report `stopped`)."""


class Connection:
    """One connection to the daemon; requests are sent in sequence."""

    def __init__(self, path: str, token: str | None = None) -> None:
        self.path = path
        self.token = token
        self._next = 0
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
            # before sending anything: is the daemon one of ours?
            if protocol.peer_uid(sock) != os.getuid():
                raise Absent("the session socket belongs to another user")
        except (OSError, Absent) as exc:
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
        try:
            protocol.send(self.sock, request)
            response = protocol.receive(self.sock, idle=timeout)
        except protocol.PeerClosed:
            self.close()
            raise errors.SessionUnavailable(message="the session daemon closed the connection") from None
        except OSError:
            self.close()
            raise errors.SessionUnavailable(message="the session daemon did not answer") from None
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


# -- finding the daemon --


def dir_problem(directory: str) -> str | None:
    """Why the session dir is unsafe (symlink, not ours, loose), None when fine or absent."""
    from ..fsutil import directory_problem

    if not os.path.lexists(directory):
        return None
    return directory_problem(directory, strict=True)


def connect(env: Mapping[str, str], *, strict: bool = False) -> Connection | None:
    """A connection to this user's daemon, or None when there is none.

    strict (session commands): an unsafe session dir or a too-long socket path raises; otherwise
    they mean "no session" (with a warning for the unsafe dir).
    """
    from .. import paths

    directory = paths.session_dir(env)
    try:
        path = protocol.socket_path(env)
    except errors.SocketPathTooLong:
        if strict:
            raise
        return None
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        problem = dir_problem(directory) or "unsafe"
        if strict:
            raise errors.SessionDirUnsafe(path=directory, problem=problem, hint=session_dir_hint(directory))
        from ..output import warn

        warn(f"ignoring the session: session directory is unsafe: {directory} ({problem})",
             reason="session_dir_ignored")
        return None
    try:
        return Connection(path, token=env.get("KIMEN_SESSION_TOKEN") or None)
    except Absent:
        return None


def session_dir_hint(directory: str) -> str:
    return (f"remove {directory} (kimen recreates it 0700) or set KIMEN_SESSION_DIR to a private directory; "
            "kimen never changes the permissions of an existing directory")


def same_version(status: dict[str, Any]) -> bool:
    return status.get("protocol") == protocol.PROTOCOL and status.get("version") == protocol.VERSION


def session_store(env: Mapping[str, str], vault_path: str, canonical_path: str,
                  metadata: Callable[[], Any]) -> SessionStore | None:
    """The daemon's store for `canonical_path`, or None when no live session serves that vault."""
    conn = connect(env)
    if conn is None:
        return None
    try:
        status = conn.call("status", vault_path=canonical_path)
    except errors.KimenError:
        conn.close()
        return None
    if not same_version(status):
        conn.close()
        from ..output import warn

        warn(f"ignoring the session daemon: it runs kimen {status.get('version')!s:.40}; "
             "run `kimen session start` to replace it", reason="session_other_version")
        return None
    if not any(isinstance(v, dict) and v.get("vault_path") == canonical_path for v in status.get("vaults") or ()):
        conn.close()
        return None
    return SessionStore(conn, vault_path, canonical_path, metadata)


class SessionStore:
    """The store of SPEC §3.6 served by the daemon; `meta`/`list` read the vault file locally."""

    def __init__(self, conn: Connection, path: str, canonical_path: str, metadata: Callable[[], Any]) -> None:
        self.conn = conn
        self.path = path
        self.canonical_path = canonical_path
        self._metadata = metadata

    def meta(self) -> VaultMeta:
        with self._metadata() as vault:
            return vault.meta()

    def list(self, prefix: str | None = None) -> list[SecretInfo]:
        with self._metadata() as vault:
            return vault.list(prefix)

    def read(self, names: Sequence[str]) -> dict[str, SecretValue]:
        from binascii import a2b_base64  # base64 would import re and struct

        wanted = list(dict.fromkeys(names))
        result: dict[str, SecretValue] = {}
        missing: list[str] = []
        for start in range(0, len(wanted), protocol.READ_BATCH):
            batch = wanted[start:start + protocol.READ_BATCH]
            try:
                response = self.conn.call("read", vault_path=self.canonical_path, names=batch)
            except errors.SecretNotFound as err:
                missing.extend(err.fields.get("missing") or [])
                continue
            for item in response.get("secrets") or ():
                name = item["name"]
                result[name] = SecretValue(name, a2b_base64(item["value_b64"], strict_mode=True), item["revision"])
        if missing:
            raise errors.SecretNotFound(missing)
        return {name: result[name] for name in wanted if name in result}

    def write(self, changes: Sequence[Change], if_generation: int | None = None, baseline: Any = None) -> WriteResult:
        from binascii import b2a_base64

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
        response = self.conn.call("write", **fields)
        return WriteResult(response["generation"], [
            ChangeResult(r["op"], r["name"], r.get("revision"), created=bool(r.get("created")),
                         new_name=r.get("new_name")) for r in response.get("results") or ()])

    def verify(self) -> None:
        self.conn.call("verify", vault_path=self.canonical_path)

    def close(self) -> None:
        self.conn.close()
