"""Starting, stopping, locking and asking the status of the session daemon (`kimen session …`).

The commands that only *use* a session (`secret get`, `run`, …) need `kimen.daemon.client` alone;
this module holds what the session commands add: the `session.lock` flock under which a daemon is
started, reused or stopped, the spawn of `python -P -m kimen.daemon.server` with its readiness
pipe, replacing a daemon of another version, and removing a stale socket.
"""

from __future__ import annotations

import _socket
import os

from .. import errors
from . import protocol
from .client import Connection, connect, same_version

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

START_TIMEOUT = 5.0


def lock(env: Mapping[str, str], vault_path: str | None) -> dict[str, Any] | None:
    conn = connect(env, strict=True)
    if conn is None:
        return None
    with conn:
        return conn.call("lock") if vault_path is None else conn.call("lock", vault_path=vault_path)


STOP_TIMEOUT = 5.0  # for the `stop` answer, then for the exit after each step


def stop(env: Mapping[str, str]) -> str | None:
    """Stop the daemon and return once its process is gone and the socket removed.

    The daemon is asked first (`stop`: it forgets every key and exits). One that refuses (its audit
    log cannot be written), does not answer (stopped, hung) or does not exit gets SIGTERM (and
    SIGCONT, so a stopped one handles it), then SIGKILL: a key in a killed process is gone too.
    Returns how it stopped when it had to be forced ("terminated", "killed"), else None; a daemon
    that outlives SIGKILL raises `session_stop_failed`."""
    with session_lock(env):
        return _stop_locked(env)


def stop_unused(env: Mapping[str, str], pid: int | None) -> None:
    """Stop the daemon `pid` that a `session start` spawned and then failed to unlock in, if it
    still holds no vault: between the spawn and the failure (a prompt may stay open for minutes)
    another command may have unlocked a vault in it, and that session stays."""
    with session_lock(env):
        conn = connect(env, strict=True)
        if conn is None:
            return
        with conn:
            if pid is None or conn.pid != pid:
                return
            try:
                unused = not conn.call("status", timeout=STOP_TIMEOUT).get("vaults")
            except errors.AuditUnavailable:
                unused = True  # it refuses every request, so nobody can be using it
            except errors.KimenError:
                return
        if unused:
            _stop_locked(env)


def _stop_locked(env: Mapping[str, str]) -> str | None:
    """`stop`, with `session.lock` held."""
    path = protocol.socket_path(env)
    conn = connect(env, strict=True)
    if conn is None:
        _remove_stale_socket(path)
        return None
    with conn:
        pid = conn.pid
        process = _pin(pid)  # this very process, whatever happens to its pid later
        try:
            if pid is None:
                pid = conn.call("status", timeout=STOP_TIMEOUT).get("pid")
            conn.call("stop", timeout=STOP_TIMEOUT)
            asked = True
        except errors.KimenError:
            asked = False
    try:
        known = pid if isinstance(pid, int) else None
        if asked and _wait_gone(known, path, 2 * STOP_TIMEOUT):
            return None
        from ..procs import is_session_daemon

        # no pid (no peer credentials, no answer), or the socket's listener is not kimen's daemon
        # (another program of this user bound it): never signalled
        if known is None or not is_session_daemon(known):
            raise errors.SessionStopFailed(pid=known if known is not None else "unknown")
        import signal

        for sig, outcome in ((signal.SIGTERM, "terminated"), (signal.SIGKILL, "killed")):
            _send(process, known, sig)
            if sig == signal.SIGTERM:
                _send(process, known, signal.SIGCONT)
            if _wait_gone(known, path, STOP_TIMEOUT, socket_too=sig == signal.SIGTERM):
                _remove_stale_socket(path)
                return outcome
        raise errors.SessionStopFailed(pid=known)
    finally:
        if process is not None:
            os.close(process)


def _pin(pid: int | None) -> int | None:
    """A pidfd for `pid` (Linux 5.3+), so a signal can never reach a process that took the pid over."""
    if pid is None or not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _send(process: int | None, pid: int, sig: int) -> None:
    import signal

    try:
        if process is not None:
            signal.pidfd_send_signal(process, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int | None, path: str, timeout: float, *, socket_too: bool = True) -> bool:
    """Whether the process exited (and, with `socket_too`, its socket was removed) within `timeout`."""
    import time

    from ..procs import is_running

    deadline = time.monotonic() + timeout
    while True:
        if (pid is None or not is_running(pid)) and not (socket_too and _is_socket(path)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def _is_socket(path: str) -> bool:
    import stat

    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove_stale_socket(path: str) -> None:
    """Remove a socket nobody answers on, only if it is a socket of ours."""
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
            from ..fsutil import unlink_quietly

            unlink_quietly(path)
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
        from ..fsutil import make_private_dirs

        directory = paths.session_dir(self.env)
        protocol.socket_path(self.env)  # socket_path_too_long before creating anything
        try:
            make_private_dirs(directory)  # 0700 when missing; an existing one is only checked
        except OSError as exc:
            problem: str | None = f"cannot create: {exc.strerror}"
        else:
            problem = paths.session_dir_problem(directory)
        if problem:
            raise errors.SessionDirUnsafe(path=directory, problem=problem, hint=paths.session_dir_hint(directory))
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
                _wait_gone(pid if isinstance(pid, int) else None, path, 2 * STOP_TIMEOUT)
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

    from .. import paths
    from ..environ import public_environ

    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "kimen.daemon.server", "--socket", path, "--ready-fd", str(write_fd),
             "--audit-log", paths.audit_log(env)],
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


# -- grants (`kimen session grant|grants|revoke`) --


def _connected(env: Mapping[str, str]) -> Connection:
    """A connection to a running daemon of this version; never starts one (`session_unavailable`)."""
    conn = connect(env, strict=True)
    if conn is None:
        raise errors.SessionUnavailable(message="no session daemon is running",
                                        hint="start one with `kimen session start` first")
    return conn


def grant(env: Mapping[str, str], vault_path: str, passphrase_b64: str, secrets: list[str], *, read_only: bool,
          ttl: float) -> dict[str, Any]:
    """Mint a grant in the running daemon (the vault must be unlocked there); the response holds
    the token, which the caller hands over once and never stores."""
    from .client import UNLOCK_TIMEOUT

    with _connected(env) as conn:
        return conn.call("grant_create", timeout=UNLOCK_TIMEOUT, vault_path=vault_path,
                         passphrase_b64=passphrase_b64, secrets=secrets, read_only=read_only, ttl=ttl)


def grants(env: Mapping[str, str]) -> list[dict[str, Any]]:
    """The daemon's grants (a token holder: its own); no daemon, no grants."""
    conn = connect(env, strict=True)
    if conn is None:
        return []
    with conn:
        found = conn.call("grant_list").get("grants")
    return [g for g in found or () if isinstance(g, dict)]


def revoke(env: Mapping[str, str], grant_id: str) -> str:
    """Revoke a grant; `grant_not_found` when the daemon does not hold it (or runs no more)."""
    conn = connect(env, strict=True)
    if conn is None:
        raise errors.GrantNotFound(grant_id=grant_id[:64])
    with conn:
        return str(conn.call("grant_revoke", grant_id=grant_id).get("grant_id", grant_id))
