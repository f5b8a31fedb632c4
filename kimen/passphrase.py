"""Passphrase sources, in one place.

Order for commands that need values: KIMEN_PASSPHRASE > --passphrase-cmd > --passphrase-stdin
(explicit) > a live session (decided in `kimen.access`) > the configured unlock method > a hidden
prompt on the controlling terminal. When several explicit sources are set the first wins and one
warning names the others: a stale variable must never win silently.

Passphrases travel as `Sensitive` (hidden repr, wiped after use); commands run without a shell,
with kimen's private variables removed from their environment; their output and exit status never
appear in messages beyond the status. prompt_toolkit is imported only when a prompt is shown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence

from . import errors
from .environ import public_environ
from .output import warn
from .sensitive import Sensitive

MAX_SOURCE_BYTES = 64 * 1024
PROMPT_ATTEMPTS = 3


class StdinClaim:
    """Stdin can feed exactly one consumer (a passphrase, a value, a file to import).

    The passphrase pair of `vault rekey --passphrase-stdin --new-passphrase-stdin` is the one
    exception: both lines come from one read.
    """

    def __init__(self) -> None:
        self.owner: str | None = None
        self._lines: list[bytes] = []  # the passphrase lines read so far

    def claim(self, purpose: str) -> None:
        if self.owner is not None and self.owner != purpose:
            raise errors.ConflictingStdinInputs()
        self.owner = purpose

    def read(self, purpose: str, limit: int) -> bytes:
        """All of stdin for `purpose`, at most `limit`+1 bytes (so the caller can tell "too
        large"). A closed stdin, or one that fails to read, is `stdin_unreadable`."""
        self.claim(purpose)
        stream = sys.stdin
        if stream is None:  # kimen was started with fd 0 closed (`kimen … <&-`)
            raise errors.StdinUnreadable(problem="it is closed")
        from .fsutil import read_limited

        try:
            return read_limited(stream.buffer, limit)
        except OSError as exc:
            raise errors.StdinUnreadable(problem=exc.strerror or type(exc).__name__) from None

    def passphrase_line(self, index: int) -> Sensitive:
        """Line `index` of stdin without CR (at most 64 KiB each). Stdin is read one byte at a
        time up to that line's end and no further: what follows is left for whoever reads it next
        (the command `kimen run` starts inherits it)."""
        self.claim("passphrase")
        while len(self._lines) <= index:
            line = self._next_line()
            if line is None:
                return Sensitive(b"")
            self._lines.append(line)
        return Sensitive(self._lines[index])

    def _next_line(self) -> bytes | None:
        """The next line of fd 0 (None at its end), read unbuffered so nothing past it is taken. A
        line longer than 64 KiB is refused (`stdin_unreadable`), never cut: the rest of it would be
        read as the next line, or reach the command `run` starts."""
        if sys.stdin is None:  # kimen was started with fd 0 closed (`kimen … <&-`)
            raise errors.StdinUnreadable(problem="it is closed")
        fd = sys.stdin.fileno()
        data = bytearray()
        try:
            while True:
                byte = os.read(fd, 1)
                if not byte or byte == b"\n":
                    break
                if len(data) == MAX_SOURCE_BYTES:
                    raise errors.StdinUnreadable(problem="a passphrase line is longer than 64 KiB",
                                                 hint="give each passphrase on a line of its own, at most 64 KiB")
                data += byte
            line = bytes(data)
        except OSError as exc:
            raise errors.StdinUnreadable(problem=exc.strerror or type(exc).__name__) from None
        finally:
            data[:] = b"\0" * len(data)
        return None if not byte and not line else line.rstrip(b"\r")


class Source:
    """One way to obtain a passphrase. `get()` may be called again only when `attempts` > 1."""

    __slots__ = ("attempts", "get", "kind", "name")

    def __init__(self, name: str, kind: str, get: Callable[[], Sensitive], attempts: int = 1) -> None:
        self.name = name
        self.kind = kind  # explicit | configured | prompt
        self.get = get
        self.attempts = attempts


def _checked(value: Sensitive, empty: type[errors.KimenError] = errors.EmptyPassphrase) -> Sensitive:
    if not value:
        value.wipe()
        raise empty()
    return value


def explicit_source(
    env: Mapping[str, str],
    passphrase_cmd: str | None,
    passphrase_stdin: bool,
    stdin: StdinClaim,
) -> Source | None:
    """The first explicit source set (with a warning naming the ignored ones), or None."""
    found: list[Source] = []
    if env.get("KIMEN_PASSPHRASE"):
        found.append(Source("KIMEN_PASSPHRASE", "explicit",
                            lambda: _checked(Sensitive(os.fsencode(env["KIMEN_PASSPHRASE"])))))
    if passphrase_cmd is not None:
        found.append(Source("--passphrase-cmd", "explicit",
                            lambda: _checked(run_command(split_command(passphrase_cmd), env))))
    if passphrase_stdin:
        found.append(Source("--passphrase-stdin", "explicit",
                            lambda: _checked(stdin.passphrase_line(0))))
    if len(found) > 1:
        warn(f"several passphrase sources are set; using {found[0].name}, ignoring "
             + ", ".join(s.name for s in found[1:]), reason="passphrase_source_conflict")
    return found[0] if found else None


def configured_source(unlock: Mapping[str, object] | None, env: Mapping[str, str], stdin: StdinClaim) -> Source | None:
    """The unlock method stored in the config (`config unlock set`; checked by `Config.unlock`), or
    None for `prompt`."""
    method = (unlock or {}).get("method", "prompt")
    if method in (None, "", "prompt"):
        return None
    if method == "env":
        def from_env() -> Sensitive:
            raise errors.MissingPassphrase(hint="unlock.method=env but KIMEN_PASSPHRASE is not set")
        return Source("unlock.method=env", "configured", from_env)
    if method == "stdin":
        return Source("unlock.method=stdin", "configured", lambda: _checked(stdin.passphrase_line(0)))
    if method == "exec":
        argv = (unlock or {}).get("exec")
        if not isinstance(argv, list) or not argv:
            raise errors.MissingUnlockExecCommand()
        return Source("unlock.method=exec", "configured", lambda: _checked(run_command(list(argv), env)))
    raise errors.UnknownUnlockMethod(method=str(method))


def prompt_source(label: str) -> Source | None:
    """A hidden prompt on the controlling terminal, if there is one."""
    if not terminal_available():
        return None

    def ask() -> Sensitive:
        try:
            return _checked(prompt_hidden(f"Passphrase for {label}: "))
        except EOFError:
            raise errors.MissingPassphrase() from None

    return Source("prompt", "prompt", ask, attempts=PROMPT_ATTEMPTS)


def split_command(command: str) -> list[str]:
    """`--passphrase-cmd CMD`: split on whitespace; no shell, no quoting, no globbing."""
    argv = command.split()
    if not argv:
        raise errors.EmptyPassphraseCommand()
    return argv


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    failed: type[errors.KimenError] = errors.PassphraseCommandFailed,
) -> Sensitive:
    """Run `argv` and return the first line of its stdout (capped at 64 KiB), without CR.

    stdin is the terminal when kimen's stdin is one, else the null device; stderr is inherited so
    the tool's own prompts stay visible. Only the exit status ever reaches a message.
    """
    import subprocess

    stdin_target = None if sys.stdin is not None and _isatty(sys.stdin) else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(list(argv), stdin=stdin_target, stdout=subprocess.PIPE,
                                env=public_environ(env), close_fds=True)
    except FileNotFoundError:
        raise failed(status="command not found") from None
    except PermissionError:
        raise failed(status="command not executable") from None
    except OSError as exc:
        raise failed(status=exc.strerror or "cannot start") from None
    assert proc.stdout is not None
    from .fsutil import read_limited

    try:
        data = bytearray(read_limited(proc.stdout, MAX_SOURCE_BYTES)[:MAX_SOURCE_BYTES])
        proc.stdout.close()
        code = proc.wait()
    except BaseException:  # Ctrl-C (or any failure) while it runs: it must not outlive kimen
        from .procs import stop_tree

        stop_tree(proc)
        raise
    try:
        if code != 0:
            raise failed(status=f"exit status {code}" if code > 0 else f"killed by signal {-code}")
        first = bytes(data).split(b"\n", 1)[0].rstrip(b"\r")
        if not first:
            raise failed(status="empty output")
        return Sensitive(first)
    finally:
        data[:] = b"\0" * len(data)


def _isatty(stream: object) -> bool:
    try:
        return os.isatty(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


def terminal_available() -> bool:
    """True when a controlling terminal can be opened for a prompt."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def prompt_hidden(message: str) -> Sensitive:
    """Ask for hidden input on /dev/tty with prompt_toolkit.

    Ctrl-C raises KeyboardInterrupt (exit 130, terminal restored by prompt_toolkit).
    Raises EOFError on Ctrl-D; callers map it to their reason.
    """
    from prompt_toolkit import PromptSession
    from prompt_toolkit.input import create_input
    from prompt_toolkit.output import create_output

    # two handles: a text file opened "r+" on a terminal is refused (not seekable)
    with open("/dev/tty", encoding="utf-8", errors="surrogateescape") as tty_in, \
            open("/dev/tty", "w", encoding="utf-8", errors="surrogateescape") as tty_out:
        session: PromptSession[str] = PromptSession(
            input=create_input(stdin=tty_in), output=create_output(stdout=tty_out)
        )
        text = session.prompt(message, is_password=True)
    return Sensitive(os.fsencode(text))


def prompt_new(first: str, second: str, mismatch: type[errors.KimenError],
               empty: type[errors.KimenError]) -> Sensitive:
    """Ask twice; the answers must match."""
    try:
        one = prompt_hidden(first)
        two = prompt_hidden(second)
    except EOFError:
        raise errors.MissingPassphrase() from None
    with two:
        if one != two:
            one.wipe()
            raise mismatch()
    return _checked(one, empty)
