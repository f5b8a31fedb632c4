"""Run a command to its end and capture what it wrote: `capture(argv, env=…)` → `Captured`.

The git transport's runner. It is `subprocess.run(…, capture_output=True)` built on
`os.posix_spawn`, because importing `subprocess` costs about 4 ms of CPU (it imports `locale`,
hence `re` and `enum`, `threading`, `selectors`, `signal`), which was most of what `sync status`
over git spent above its yardstick. What `subprocess.run` does and a caller here relies on, it
does too: standard input from a file or `/dev/null`, both outputs read together (neither pipe
can fill up and stall the child), `SIGPIPE` and `SIGXFSZ` back to their defaults in the child,
no descriptor inherited (Python opens kimen's own close-on-exec; those kimen was given are
closed in the child), and the child killed
and reaped when reading is interrupted. No shell, no `PATH` search: `argv[0]` is the program's
path.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_CHUNK = 65536


class Captured:
    """A finished command: its exit code (negative: killed by that signal) and its two outputs."""

    __slots__ = ("code", "err", "out")

    def __init__(self, code: int, out: bytes, err: bytes) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Captured(code={self.code}, {len(self.out)} + {len(self.err)} bytes)"


def _above_stdio(fd: int, ours: list[int]) -> int:
    """`fd`, or a duplicate of it above 2 when it is a standard descriptor (a process started with
    one closed gets it back from `pipe()`): `dup2` onto itself would keep its close-on-exec flag.
    Every duplicate is added to `ours`, to be closed after the spawn."""
    while fd <= 2:
        fd = os.dup(fd)
        ours.append(fd)
    return fd


def _close_inherited(ours: set[int]) -> list[tuple[int, int]]:
    """Close actions for every inheritable descriptor above 2 (those kimen itself was given: its
    own are close-on-exec), as `subprocess`'s `close_fds` does."""
    try:
        names = os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    except OSError:
        return []
    actions = []
    for name in names:
        fd = int(name)
        if fd > 2 and fd not in ours:
            try:
                if os.get_inheritable(fd):
                    actions.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:  # the descriptor listdir itself held
                pass
    return actions


def capture(argv: Sequence[str], *, env: Mapping[str, str], stdin: int | None = None) -> Captured:
    """Run `argv` (its first item a path) with exactly `env`, standard input from the descriptor
    `stdin` (None: `/dev/null`), and wait for it. `OSError` when it cannot be started."""
    import _signal  # the C module: `signal` imports `enum`
    import select

    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    ours = [out_write, err_write]  # closed once the child has them
    pid = None
    try:
        source = (os.POSIX_SPAWN_DUP2, _above_stdio(stdin, ours), 0) if stdin is not None else \
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        outputs = [(os.POSIX_SPAWN_DUP2, _above_stdio(out_write, ours), 1),
                   (os.POSIX_SPAWN_DUP2, _above_stdio(err_write, ours), 2)]
        pid = os.posix_spawn(argv[0], list(argv), dict(env),
                             file_actions=[source, *outputs, *_close_inherited({out_read, err_read, *ours})],
                             setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    finally:
        for fd in ours:
            os.close(fd)
        if pid is None:
            os.close(out_read)
            os.close(err_read)
    chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
    try:
        poller = select.poll()
        for fd in chunks:
            poller.register(fd, select.POLLIN)
        open_fds = len(chunks)
        while open_fds:
            for fd, _event in poller.poll():
                data = os.read(fd, _CHUNK)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_fds -= 1
        _pid, status = os.waitpid(pid, 0)
        pid = None
    finally:
        os.close(out_read)
        os.close(err_read)
        if pid is not None:  # interrupted: the child does not outlive the call
            try:
                os.kill(pid, _signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
    return Captured(os.waitstatus_to_exitcode(status), b"".join(chunks[out_read]), b"".join(chunks[err_read]))
