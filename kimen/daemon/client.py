"""The light session client (SPEC §5.10): connect, ask, and the session store.

Stdlib only, and nothing heavy at import time: `secret get`, `run` and `session status` served by a
live session load this module and `protocol`, never sqlite3, crypto or the server (an
import-linter contract and a subprocess test hold this). A client that cannot connect (no
socket, refused, a daemon of another uid) treats the session as absent; a daemon of another
version is absent too, with a warning. Starting and stopping the daemon process
(`session start`/`stop`) lives here as well, with its imports inside the functions.
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
START_TIMEOUT = 5.0


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
            raise errors.SessionDirUnsafe(path=directory, problem=problem, hint=_dir_hint(directory))
        from ..output import warn

        warn(f"ignoring the session: session directory is unsafe: {directory} ({problem})")
        return None
    try:
        return Connection(path, token=env.get("KIMEN_SESSION_TOKEN") or None)
    except Absent:
        return None


def _dir_hint(directory: str) -> str:
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
             "run `kimen session start` to replace it")
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


# -- status, lock, stop, start (session commands) --


def status(env: Mapping[str, str]) -> tuple[str, dict[str, Any] | None]:
    """(socket path, the daemon's status response or None when no daemon answers)."""
    path = protocol.socket_path(env)
    conn = connect(env, strict=True)
    if conn is None:
        return path, None
    with conn:
        try:
            return path, conn.call("status")
        except errors.KimenError:
            return path, None


def lock(env: Mapping[str, str], vault_path: str | None) -> dict[str, Any] | None:
    conn = connect(env, strict=True)
    if conn is None:
        return None
    with conn:
        fields = {} if vault_path is None else {"vault_path": vault_path}
        return conn.call("lock", **fields)


def stop(env: Mapping[str, str]) -> None:
    """Stop the daemon and return once its process is gone and the socket removed."""
    path = protocol.socket_path(env)
    with session_lock(env):
        conn = connect(env, strict=True)
        if conn is None:
            _remove_stale_socket(path)
            return
        with conn:
            try:
                pid = conn.call("status").get("pid")
                conn.call("stop")
            except errors.KimenError:
                return
        _wait_gone(pid if isinstance(pid, int) else None, path)


def _wait_gone(pid: int | None, path: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (pid is None or not _alive(pid)) and not _is_socket(path):
            return
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (its parent has not reaped it yet) is gone for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_stale_socket(path: str) -> None:
    """Remove a socket nobody answers on, only if it is a socket of ours (SPEC §5.2)."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid():
        probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            try:
                os.unlink(path)
            except OSError:
                pass
        except OSError:
            pass
        finally:
            probe.close()


class session_lock:
    """`session.lock` (flock) while deciding whether to start, reuse or stop a daemon."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.fd = -1

    def __enter__(self) -> session_lock:
        import fcntl

        from .. import paths
        from ..fsutil import ensure_private_dir

        directory = paths.session_dir(self.env)
        protocol.socket_path(self.env)  # socket_path_too_long before creating anything
        try:
            ensure_private_dir(directory, errors.SessionDirUnsafe)
        except errors.SessionDirUnsafe as err:
            raise errors.SessionDirUnsafe(path=directory, problem=err.fields.get("problem"),
                                          hint=_dir_hint(directory)) from None
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            self.fd = os.open(os.path.join(directory, protocol.LOCK_NAME), flags, 0o600)
        except OSError as exc:
            raise errors.SessionDirUnsafe(path=directory, problem=f"cannot open session.lock: {exc.strerror}") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the flock
            self.fd = -1


def ensure_daemon(env: Mapping[str, str]) -> tuple[Connection, bool]:
    """A connection to a daemon of this version, starting one when needed (under session.lock).

    Returns (connection, started). A daemon of another version is stopped and replaced.
    """
    path = protocol.socket_path(env)
    with session_lock(env):
        conn = connect(env, strict=True)
        if conn is not None:
            try:
                current = conn.call("status")
            except errors.KimenError:
                current = None
            if current is not None and same_version(current):
                return conn, False
            if current is not None:  # another version: stop it (status and stop are frozen)
                pid = current.get("pid")
                try:
                    conn.call("stop")
                except errors.KimenError:
                    pass
                conn.close()
                _wait_gone(pid if isinstance(pid, int) else None, path)
            conn.close()
        if os.path.lexists(path):
            _remove_stale_socket(path)
            if os.path.lexists(path):
                raise errors.DaemonStartFailed(
                    message=f"session daemon failed to start: {path} is in use and does not answer")
        _spawn(env, path)
        conn = connect(env, strict=True)
        if conn is None:
            raise errors.DaemonStartFailed(message="session daemon failed to start: it does not answer")
        return conn, True


def _spawn(env: Mapping[str, str], path: str) -> int:
    """Start `python -m kimen.daemon.server` detached; wait for `ok <pid>` on the readiness pipe."""
    import select
    import subprocess
    import sys
    import time

    from ..environ import public_environ

    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "kimen.daemon.server", "--socket", path, "--ready-fd", str(write_fd)],
            pass_fds=(write_fd,), env=public_environ(env), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
        )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise errors.DaemonStartFailed(message=f"session daemon failed to start: {exc.strerror}") from None
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                break
            chunk = os.read(read_fd, 512)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_fd)
    line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if line.startswith("ok "):
        proc.returncode = 0  # detached on purpose: never waited for (silences Popen's destructor)
        return int(line[3:]) if line[3:].isdigit() else proc.pid
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    detail = line[6:] if line.startswith("error ") else "no readiness signal within 5 s"
    raise errors.DaemonStartFailed(message=f"session daemon failed to start: {detail[:200]}")
