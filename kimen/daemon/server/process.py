"""Start-up of the daemon process: arguments, hardening, limits, signals and the readiness line.

`main` hardens the process before anything else (no core dumps, not dumpable: no ptrace or /proc
access by same-uid processes), opens the audit log (`--audit-log PATH`, default
`<state>/audit.jsonl`), becomes a session leader in `/` with umask 077, raises its
descriptor limit, binds the socket, reports `ok <pid>` (or `error …`) on the readiness pipe
`kimen.daemon.control` waits on, and runs the event loop. SIGTERM and SIGINT stop it; SIGHUP and
SIGUSR1 forget every key.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from ... import errors
from ...sensitive import Sensitive
from ..audit import AuditLog
from ..session import LockedKey
from .limits import MAX_CONNECTIONS, RESERVED_FDS
from .loop import Daemon

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType

_PR_SET_DUMPABLE = 4


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (at most the hard limit); the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


def tune_malloc() -> None:
    """glibc: return large buffers to the system as soon as they are freed (a fixed mmap
    threshold) and keep few arenas, so a burst of large frames does not stay in the RSS."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 4)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def harden() -> None:
    """No core dumps and no ptrace/proc access by same-uid processes (before any key is held)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _mlock_probe() -> bool:
    """Whether a key page can be mlocked here (what `status` says while no key is held)."""
    key = LockedKey(Sensitive(bytes(32)))
    try:
        return key.locked
    finally:
        key.wipe()


def _parse_args(argv: list[str]) -> tuple[str, int | None, str]:
    socket_path, ready_fd, audit_path = None, None, None
    it = iter(argv)
    for arg in it:
        if arg == "--socket":
            socket_path = next(it, None)
        elif arg == "--ready-fd":
            value = next(it, None)
            ready_fd = int(value) if value is not None and value.isdigit() else None
        elif arg == "--audit-log":
            audit_path = next(it, None)
        else:
            raise SystemExit(f"kimen.daemon.server: unknown argument {arg[:40]!r}")
    if not socket_path or not os.path.isabs(socket_path):
        raise SystemExit("usage: python -m kimen.daemon.server --socket PATH [--ready-fd N] [--audit-log PATH]")
    if audit_path is None:
        from ... import paths

        audit_path = paths.audit_log(os.environ)
    if not os.path.isabs(audit_path):
        raise SystemExit("kimen.daemon.server: --audit-log must be an absolute path")
    return socket_path, ready_fd, audit_path


def _report(ready_fd: int | None, line: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, line.encode() + b"\n")
        os.close(ready_fd)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    socket_path, ready_fd, audit_path = _parse_args(sys.argv[1:] if argv is None else argv)
    harden()
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (started with start_new_session)
    os.chdir("/")
    os.umask(0o077)
    tune_malloc()
    audit = AuditLog(audit_path)
    try:
        audit.open()
    except errors.KimenError:
        pass  # every request tries again, and fails closed (`audit_unavailable`) while it cannot
    daemon = Daemon(socket_path, max(16, min(MAX_CONNECTIONS, raise_fd_limit(MAX_CONNECTIONS + RESERVED_FDS)
                                             - RESERVED_FDS)), mlock_ok=_mlock_probe(), audit=audit)
    try:
        daemon.bind()
    except OSError as exc:
        _report(ready_fd, f"error cannot bind {socket_path}: {exc.strerror}")
        return 1

    def on_stop(signum: int, frame: FrameType | None) -> None:  # runs on the loop thread: never block it
        threading.Thread(target=daemon.request_stop, daemon=True).start()

    def on_lock(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=daemon.registry.lock_all, daemon=True).start()

    # The kernel may deliver a signal to any thread; Python runs its handler on the main thread,
    # which may be asleep in the event loop's `select` with no timeout (idle, no connection). The
    # wake-up descriptor is the loop's own wake pipe: a signal arriving on any thread wakes it, so
    # a stop or a lock is never left waiting for the next connection.
    signal.set_wakeup_fd(daemon.wake_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_lock)
    signal.signal(signal.SIGUSR1, on_lock)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _report(ready_fd, f"ok {daemon.pid}")
    try:
        daemon.serve()
    finally:
        daemon.release()
        audit.close()  # folded records still pending are written
    os._exit(0)
