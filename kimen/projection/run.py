"""Starting the child of `kimen run` (SPEC §7.1, §11.21-23): exec in place, or spawn and supervise.

Exec in place (`execve`) when nothing must outlive the child's start: status and signals then
pass natively. Otherwise (a private runtime dir to remove, stdin to feed) kimen spawns the child
with `posix_spawn` and stays as a thin supervisor:

- Every signal it relays is *blocked* before the runtime dir exists and collected with
  `sigwaitinfo`, so there is no handler race and a signal that arrives at any moment is seen.
- `si_code` tells a terminal-generated SIGINT/SIGQUIT/SIGWINCH (sent by the kernel to the whole
  foreground process group, which already includes the child) from a `kill` aimed at kimen; only
  the latter is forwarded, so Ctrl-C reaches the child once. SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2
  are forwarded once per delivery.
- The child starts with an empty signal mask, SIGINT and SIGQUIT at their default action (a
  non-interactive shell's `&` ignores them) and SIGPIPE/SIGXFSZ at default (Python ignores SIGPIPE);
  other inherited dispositions are kept, so `nohup` still works.
- kimen waits for the child however long it takes: no timeout, never SIGKILL. Then it removes the
  runtime dir and exits with the child's code, or 128+N when the child died of signal N.
- Projected stdin goes through a pipe fed by a writer thread; it never touches the disk.

posix_spawn rather than subprocess: it sets the child's mask and dispositions without a Python
`preexec_fn`, and keeps `subprocess` (~13 ms of imports) off the path. kimen's own descriptors are
all close-on-exec (PEP 446); descriptors kimen inherited pass through, exactly as with exec.
"""

from __future__ import annotations

import _signal  # the C module: `signal` only wraps it in enums (~1 ms on every run)
import os
import sys

from .. import errors

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

FORWARDED = (
    _signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
    _signal.SIGWINCH,
)
TERMINAL_SIGNALS = frozenset({_signal.SIGINT, _signal.SIGQUIT, _signal.SIGWINCH})
STOPPING = frozenset({_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT})
WATCHED = frozenset({*FORWARDED, _signal.SIGCHLD})
_RESET_FOR_CHILD = tuple(
    s for s in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGPIPE, getattr(_signal, "SIGXFSZ", None))
    if s is not None
)
SI_KERNEL = 0x80


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def exec_in_place(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes]) -> None:
    """Replace kimen with the child. Returns only by raising (the exec failed)."""
    _flush()
    # Python ignores SIGPIPE (and SIGXFSZ); an exec'd program must get the default action back.
    for sig in _RESET_FOR_CHILD[2:]:
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execve(exe, list(argv), dict(environ))  # noqa: S606 - no shell, by design
    except OSError as exc:
        raise _start_error(exc, argv[0]) from None


def _start_error(exc: OSError, command: str) -> errors.KimenError:
    import errno

    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return errors.CommandNotFound(command=command)
    return errors.CommandNotExecutable(command=command)


def block_signals() -> None:
    """Hold every relayed signal (and SIGCHLD) pending until `supervise` collects it."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, WATCHED)


def unblock_signals() -> None:
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, WATCHED)


def pending_stop() -> int | None:
    """A stopping signal that arrived while setting up (before the child exists)."""
    pending = _signal.sigpending() & STOPPING
    return min(pending) if pending else None


def spawn(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes], stdin_fd: int | None) -> int:
    """Start the child (signals must already be blocked); returns its pid."""
    actions = []
    if stdin_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, stdin_fd, 0))
    _flush()
    try:
        return os.posix_spawn(
            exe, list(argv), dict(environ),
            file_actions=actions or None,
            setsigmask=(),
            setsigdef=_RESET_FOR_CHILD,
        )
    except OSError as exc:
        raise _start_error(exc, argv[0]) from None


def _feed(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass  # the child closed its stdin or exited: what it did not read is not ours to force
    finally:
        os.close(fd)


def start_stdin_feeder(data: bytes) -> int:
    """A pipe whose read end becomes the child's stdin, fed by a daemon thread; returns the read fd."""
    import threading

    read_fd, write_fd = os.pipe()
    threading.Thread(target=_feed, args=(write_fd, data), name="kimen-stdin", daemon=True).start()
    return read_fd


def _next_signal() -> tuple[int, bool]:
    """The next relayed signal, and whether the kernel (a terminal) generated it.

    `si_code` says who sent it: > 0 (SI_KERNEL) is the tty driver signalling the whole foreground
    process group; SI_USER/SI_QUEUE/SI_TKILL are a process aiming at kimen. macOS has no
    sigwaitinfo: there kimen treats SIGINT/SIGQUIT/SIGWINCH as the terminal's whenever it is in the
    terminal's foreground process group (docs/run.md).
    """
    if _HAS_SIGWAITINFO:
        info = _signal.sigwaitinfo(WATCHED)
        return info.si_signo, info.si_code > 0 or info.si_code == SI_KERNEL
    sig = _signal.sigwait(WATCHED)
    return sig, _in_terminal_foreground()


_HAS_SIGWAITINFO = hasattr(_signal, "sigwaitinfo")


def _in_terminal_foreground() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def supervise(pid: int) -> int:
    """Relay signals to `pid` until it exits; returns kimen's exit code for its status."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        sig, from_terminal = _next_signal()
        if sig == _signal.SIGCHLD:
            continue
        if sig in TERMINAL_SIGNALS and from_terminal and _shares_foreground(pid):
            continue
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _shares_foreground(pid: int) -> bool:
    """The child is in kimen's process group (it always is), which received the terminal's signal."""
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return True
