"""Starting the child of `kimen run`: exec in place, or spawn and supervise (`relay` under `--mask`).

Exec in place (`execve`) when nothing must outlive the child's start: status and signals then
pass natively. Otherwise (a private runtime dir to remove, stdin to feed) kimen forks and execs
the child and stays as a thin supervisor:

- Every signal it relays is *blocked* before the runtime dir exists and collected with
  `sigwaitinfo`, so there is no handler race and a signal that arrives at any moment is seen.
- Process groups. On a terminal (kimen in the terminal's foreground process group) the child
  shares kimen's group, so job control works, and `si_code` tells a terminal-generated
  SIGINT/SIGQUIT/SIGWINCH (sent by the kernel to the whole foreground group, which already includes
  the child) from a `kill` aimed at kimen: only the latter is forwarded, so Ctrl-C reaches the
  child once. Off a terminal (no terminal, or kimen in the background) the child runs in a process
  group of its own: a group kill (`kill -- -PGID`, a CI runner cancelling a job) then reaches only
  kimen, which forwards it once, to the child's group. `si_code` cannot tell a group kill from a
  direct one; the structure does. SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 are forwarded once per delivery.
- Parent death. On Linux the child asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), so
  a SIGKILLed kimen never leaves it running unsupervised. The kernel sends it when the *thread*
  that forked the child exits: kimen forks from its main thread, which is the thread that waits
  for the child and exits only after it. The child re-checks its parent after setting the signal
  (kimen may have died just before) and exits 143 then, without running the command.
- The child starts with an empty signal mask, SIGINT and SIGQUIT at their default action (a
  non-interactive shell's `&` ignores them) and SIGPIPE/SIGXFSZ at default (Python ignores SIGPIPE);
  other inherited dispositions are kept, so `nohup` still works.
- kimen waits for the child however long it takes: no timeout, never SIGKILL. Then it removes the
  runtime dir and exits with the child's code, or 128+N when the child died of signal N.
- Projected stdin goes through a pipe fed by a writer thread; it never touches the disk.

fork + exec rather than `posix_spawn` (which cannot set a parent-death signal) or `subprocess`
(whose `preexec_fn` is unsafe with threads, and ~13 ms of imports): kimen forks while it is the
only thread (the stdin writer starts after), so the code between fork and exec — setpgid, prctl,
dup2, dispositions, mask — cannot meet a lock another thread held. kimen's own descriptors are all
close-on-exec (PEP 446); descriptors kimen inherited pass through, exactly as with exec.
"""

from __future__ import annotations

import _signal  # the C module: `signal` only wraps it in enums (~1 ms on every run)
import os
import sys

from .env import RESET_FOR_CHILD as _RESET_FOR_CHILD
from .env import flush as _flush
from .env import start_error as _start_error

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

FORWARDED = (
    _signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1, _signal.SIGUSR2,
    _signal.SIGWINCH,
)
TERMINAL_SIGNALS = frozenset({_signal.SIGINT, _signal.SIGQUIT, _signal.SIGWINCH})
STOPPING = frozenset({_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT})
WATCHED = frozenset({*FORWARDED, _signal.SIGCHLD})
SI_KERNEL = 0x80


def block_signals(watched: frozenset[int] = WATCHED) -> None:
    """Hold every relayed signal (and SIGCHLD) pending until `supervise` collects it (`--mask` on
    a pty also holds the job-control signals: `relay.Relay.watched`)."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, watched)


def pending_stop() -> int | None:
    """A stopping signal that arrived while setting up (before the child exists)."""
    pending = _signal.sigpending() & STOPPING
    return min(pending) if pending else None


PR_SET_PDEATHSIG = 1


def _pdeathsig() -> object | None:
    """libc's `prctl` (Linux), resolved before the fork so the child only calls it; else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def own_group_wanted() -> bool:
    """Off a terminal (none, or kimen not in its foreground process group) the child gets a
    process group of its own, so a group kill reaches it only through kimen."""
    return not _in_terminal_foreground()


def spawn(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes], stdin_fd: int | None,
          *, own_group: bool, redirect: Mapping[int, int] | None = None, ctty: int | None = None) -> int:
    """Start the child (signals must already be blocked, no other thread running); returns its pid.

    redirect: child fd -> kimen fd to put there (the relay's pipes and pty). ctty: a pty the child
    takes as its controlling terminal, in a session of its own (then `own_group` must be False).
    A failed exec is reported through a close-on-exec pipe and raised here, as `posix_spawn` would.
    """
    prctl = _pdeathsig()
    moves = sorted((redirect or {}).items())
    ioctl = tiocsctty = None
    if ctty is not None:
        import fcntl
        import termios

        ioctl, tiocsctty = fcntl.ioctl, getattr(termios, "TIOCSCTTY", None)
    parent = os.getpid()
    args, env = list(argv), dict(environ)
    report_r, report_w = os.pipe()  # close-on-exec: EOF means the exec succeeded
    _flush()
    pid = os.fork()
    if pid == 0:  # the child: nothing here may raise past os._exit
        try:
            os.close(report_r)
            if ctty is not None:
                os.setsid()
                if ioctl is not None and tiocsctty is not None:
                    ioctl(ctty, tiocsctty, 0)
            elif own_group:
                os.setpgid(0, 0)
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, _signal.SIGTERM, 0, 0, 0)  # type: ignore[operator]
                if os.getppid() != parent:  # kimen died before the signal was armed
                    os._exit(128 + _signal.SIGTERM)
            if stdin_fd == 0:  # kimen's own stdin was closed, so the pipe took fd 0: dup2 would do nothing
                os.set_inheritable(0, True)
            elif stdin_fd is not None:
                os.dup2(stdin_fd, 0)
            for target, source in moves:
                if source == target:
                    os.set_inheritable(target, True)
                else:
                    os.dup2(source, target)
            for sig in _RESET_FOR_CHILD:  # default actions first: a pending signal then acts as after exec
                _signal.signal(sig, _signal.SIG_DFL)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
            os.execve(exe, args, env)  # noqa: S606 - no shell, by design
        except OSError as exc:
            os.write(report_w, str(exc.errno or 0).encode())
        except BaseException:  # noqa: S110 - the child must reach os._exit whatever happened
            pass
        os._exit(127)
    os.close(report_w)
    if own_group:
        try:
            os.setpgid(pid, pid)  # also here, so the group exists before kimen forwards anything
        except OSError:
            pass  # the child already exec'd (it set its group itself) or is gone
    report = b""
    try:
        while chunk := os.read(report_r, 64):
            report += chunk
    finally:
        os.close(report_r)
    if report:
        os.waitpid(pid, 0)
        import errno

        code = int(report) if report.isdigit() else errno.ENOEXEC
        raise _start_error(OSError(code, os.strerror(code)), argv[0]) from None
    return pid


def start(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes], stdin_data: bytes | None, *,
          own_group: bool, spawner: Callable[..., int] | None = None) -> int:
    """Spawn the child (`spawner`, default `spawn`) with the projected stdin, if any, fed through a
    pipe by a writer thread started after the fork; returns its pid."""
    pipe = stdin_pipe() if stdin_data is not None else None
    try:
        pid = (spawner or spawn)(exe, argv, environ, pipe[0] if pipe else None, own_group=own_group)
    except BaseException:
        if pipe is not None:
            os.close(pipe[1])
        raise
    finally:
        if pipe is not None:
            os.close(pipe[0])
    if pipe is not None and stdin_data is not None:  # kimen forks single-threaded
        start_stdin_feeder(pipe[1], stdin_data)
    return pid


def _feed(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass  # the child closed its stdin or exited: what it did not read is not ours to force
    finally:
        os.close(fd)


def stdin_pipe() -> tuple[int, int]:
    """(read end for the child's stdin, write end for `start_stdin_feeder`)."""
    return os.pipe()


def start_stdin_feeder(write_fd: int, data: bytes) -> None:
    """Feed `data` into the pipe from a daemon thread (started after the fork: see the module doc)."""
    import threading

    threading.Thread(target=_feed, args=(write_fd, data), name="kimen-stdin", daemon=True).start()


def next_signal(watched: frozenset[int] = WATCHED) -> tuple[int, bool]:
    """The next relayed signal, and whether the kernel (a terminal) generated it.

    `si_code` says who sent it: > 0 (SI_KERNEL) is the tty driver signalling the whole foreground
    process group; SI_USER/SI_QUEUE/SI_TKILL are a process aiming at kimen. macOS has no
    sigwaitinfo: there kimen treats SIGINT/SIGQUIT/SIGWINCH as the terminal's whenever it is in the
    terminal's foreground process group (docs/run.md).
    """
    if _HAS_SIGWAITINFO:
        info = _signal.sigwaitinfo(watched)
        return info.si_signo, info.si_code > 0 or info.si_code == SI_KERNEL
    sig = _signal.sigwait(watched)
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


def supervise(pid: int, *, own_group: bool = False) -> int:
    """Relay signals to `pid` until it exits; returns kimen's exit code for its status.

    own_group: the child leads a process group of its own; signals go to that group (once), as a
    group kill aimed at kimen's group would have reached every process of the command."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        sig, from_terminal = next_signal()
        if sig == _signal.SIGCHLD:
            continue
        if sig in TERMINAL_SIGNALS and from_terminal and shares_foreground(pid):
            continue
        forward(pid, sig, own_group)


def forward(pid: int, sig: int, own_group: bool) -> None:
    try:
        if own_group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def shares_foreground(pid: int) -> bool:
    """The child is in kimen's process group (it always is), which received the terminal's signal."""
    try:
        return os.getpgid(pid) == os.getpgrp()
    except OSError:
        return True
