"""Processes by pid: two different questions, kept apart on purpose.

- `is_running(pid)`: does a live process have this pid now? A zombie (exited, not yet reaped by
  its parent) counts as gone. `session stop` asks it while waiting for the daemon it just stopped
  to exit; the pid came from that daemon a moment ago, so pid reuse is not the question.
- `is_same_process(pid, start)`: is `pid` still the process whose start time (`start_time`) was
  recorded as `start`? Asked of the owner record of a private runtime dir, written by a `kimen run`
  that may have died long ago: its pid may belong to an unrelated process by now, which must not
  keep the dir alive.

Both read `/proc/<pid>/stat` where it exists (Linux) and fall back to `kill(pid, 0)` elsewhere.
`is_session_daemon(pid)` reads its command line: `session stop` signals only a kimen daemon.
`descendants(pid)` lists what a process started (and they in turn), from the same files; it knows
nothing without /proc.
"""

from __future__ import annotations

import os

from .fsutil import read_regular

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

_STAT_BYTES = 4096  # /proc/<pid>/stat is one line of 52 fields


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first), or None."""
    try:
        data = read_regular(f"/proc/{pid}/stat", _STAT_BYTES, OSError)
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def _signalable(pid: int) -> bool:
    """`kill(pid, 0)`: a process with this pid exists (one of another user's too)."""
    if pid <= 0:  # 0 and negative pids name process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or None if unknown."""
    fields = _stat_fields(pid) if pid > 0 else None
    # fields[0] is field 3 (state); field 22 is fields[19]
    return fields[19].decode() if fields is not None and len(fields) > 19 else None


def is_running(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    if not _signalable(pid):
        return False
    fields = _stat_fields(pid)
    return not fields or fields[0] != b"Z"  # unknown (no /proc): it exists


_DAEMON_MODULE = ["-m", "kimen.daemon.server"]
_CMDLINE_BYTES = 64 * 1024


def is_session_daemon(pid: int) -> bool:
    """Whether `pid` runs kimen's session daemon (`python … -m kimen.daemon.server …`), from
    /proc/<pid>/cmdline; False where that cannot be read (no /proc, gone, another user's)."""
    try:
        words = read_regular(f"/proc/{pid}/cmdline", _CMDLINE_BYTES, OSError).decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    return any(words[i:i + 2] == _DAEMON_MODULE for i in range(len(words) - 1))


def is_same_process(pid: int, start: str | None) -> bool:
    """Whether `pid` is still the process that recorded `start` (`start_time`; None or "?" when it
    could not tell: then any process with the pid counts)."""
    if pid <= 0:
        return False
    current = start_time(pid)
    if current is not None:
        return start is None or start == "?" or current == start
    if os.path.isdir("/proc/self"):
        return False  # Linux: no /proc entry means no such process
    return _signalable(pid)


def descendants(pid: int) -> list[tuple[int, str | None]]:
    """The processes below `pid` (its children, theirs, ...) with their `start_time`s, read from
    /proc (Linux); `[]` where there is no /proc. A snapshot: signal them through `is_same_process`."""
    try:
        entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for entry in entries:
        fields = _stat_fields(entry)
        if fields is not None and len(fields) > 1 and fields[1].isdigit():  # fields[1] is field 4, the ppid
            children.setdefault(int(fields[1]), []).append(entry)
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return [(child, start_time(child)) for child in found]


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """End a command kimen gives up on (a passphrase command, an `exec:` source: Ctrl-C while it
    runs), and what it started: a wrapper script dies of SIGTERM at once, but the command it waits
    for would run on (its descendants are found through /proc, so on Linux only). SIGTERM, then
    SIGKILL after 2 s (a tool that ignores both is not waited for forever), and reap it so no
    zombie or orphan is left."""
    import signal
    import time

    below = descendants(proc.pid)

    def signal_below(sig: int) -> None:
        for pid, start in below:
            if is_same_process(pid, start):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass

    def done() -> bool:
        return proc.poll() is not None and not any(is_running(p) and is_same_process(p, s) for p, s in below)

    try:
        proc.terminate()
        signal_below(signal.SIGTERM)
        deadline = time.monotonic() + 2
        while not done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        signal_below(signal.SIGKILL)
        proc.wait()
    except OSError:
        pass
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
