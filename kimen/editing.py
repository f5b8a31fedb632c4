"""`secret edit`'s private file and editor (docs/daily.md): where the plaintext lives, who sees it,
and that it is gone on every path.

- The editor is `$VISUAL`, else `$EDITOR`, else `vi`: split on whitespace (no shell, no quoting)
  and looked up on PATH before anything is unlocked (`editor_not_found`).
- The value is editable text only: UTF-8 without NUL (`value_not_editable`); binary values are
  replaced with `secret set --from-file`.
- The plaintext exists as one file `<NAME>`, 0600, created O_EXCL|O_NOFOLLOW in a private
  `edit-<random>` directory (0700, with the `.kimen-owner` record of `kimen/projection/files.py`)
  under the runtime base (RAM on Linux). The directory is removed on every path: the editor's
  success, failure or death, a read error, a value too large, and kimen's SIGTERM or SIGHUP. After
  a SIGKILL of kimen the next `edit`, or `run` with files, removes it (the stale-directory sweep).
- The editor inherits kimen's stdin and stderr, and its stdout when that is a terminal (else
  /dev/null: nothing the editor prints reaches a pipe or a log), and gets kimen's environment
  minus the private variables. While it runs kimen ignores SIGINT and SIGQUIT (the editor owns the
  terminal); on SIGTERM or SIGHUP it sends SIGTERM to the editor, waits for it, removes the
  directory and exits 128+N having written and printed nothing (`EditorInterrupted`). Signals are
  blocked before the directory exists and collected with `sigwait`, so none is lost between two
  steps; the editor is started with the fork/exec of `kimen run` (a parent-death SIGTERM, default
  SIGINT/SIGQUIT, an empty mask).
- The text rules: an editor-added final LF or CRLF is dropped when the old value had no final LF
  (unless `keep_newline`); an empty result is `empty_secret_value`; identical text is "unchanged".

This module never opens a vault: the command reads the value and revision first and writes the
result compare-and-set afterwards.
"""

from __future__ import annotations

import os
import signal

from . import errors
from .environ import public_environ, which
from .fsutil import read_limited
from .projection import files
from .values import MAX_VALUE_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

STOPPING = frozenset({signal.SIGTERM, signal.SIGHUP})
IGNORED = frozenset({signal.SIGINT, signal.SIGQUIT})
WATCHED = STOPPING | IGNORED | {signal.SIGCHLD}
DEFAULT_EDITOR = "vi"


class EditorInterrupted(SystemExit):
    """kimen received SIGTERM or SIGHUP while editing: the editor was stopped and the directory
    removed; the process exits 128+N and writes nothing (no reason: it was asked to stop)."""


def editor_command(env: Mapping[str, str]) -> list[str]:
    """The editor's argv (its program resolved on PATH); `editor_not_found` otherwise."""
    for var in ("VISUAL", "EDITOR"):
        argv = env.get(var, "").split()
        if argv:
            source = f"${var}"
            break
    else:
        argv, source = [DEFAULT_EDITOR], "the default editor"
    exe = which(argv[0], env.get("PATH"))
    if exe is None or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise errors.EditorNotFound(message=f"editor not found: {argv[0]} ({source})", command=argv[0])
    return [exe, *argv[1:]]


def check_editable(name: str, value: bytes) -> None:
    """`value_not_editable` unless `value` is UTF-8 text without NUL."""
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.ValueNotEditable(secret=name) from None
    if b"\0" in value:
        raise errors.ValueNotEditable(secret=name)


def edited_value(old: bytes, new: bytes, *, keep_newline: bool = False) -> bytes:
    """`new` without the one final LF (or CRLF) an editor adds, when `old` had no final LF."""
    if keep_newline or old.endswith(b"\n"):
        return new
    if new.endswith(b"\r\n") and not old.endswith(b"\r"):
        return new[:-2]
    if new.endswith(b"\n"):
        return new[:-1]
    return new


def edit(name: str, old: bytes, editor: list[str], env: Mapping[str, str], *,
         keep_newline: bool = False) -> bytes | None:
    """Let the user edit `old` (b"" to create); the new value, or None when it is unchanged.

    Raises `value_not_editable`, `editor_failed`, `empty_secret_value`, `secret_too_large`,
    `value_source_failed` (the edited file cannot be read back), or `EditorInterrupted`."""
    check_editable(name, old)
    outer = signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    try:
        new = _edit_in_private_dir(name, old, editor, env)
    finally:
        stop = _take_pending()  # SIGINT/SIGQUIT are dropped; a SIGTERM/SIGHUP still stops kimen
        signal.pthread_sigmask(signal.SIG_SETMASK, outer)
        if stop is not None:
            raise EditorInterrupted(128 + stop)  # replaces any error in flight: kimen was told to stop
    new = edited_value(old, new, keep_newline=keep_newline)
    if new == b"":
        raise errors.EmptySecretValue()
    if len(new) > MAX_VALUE_BYTES:
        raise errors.SecretTooLarge(secret=name)
    return None if new == old else new


def _edit_in_private_dir(name: str, old: bytes, editor: list[str], env: Mapping[str, str]) -> bytes:
    """Write `old` into a fresh `edit-*` dir, run the editor on it, read it back, remove the dir."""
    from .projection.run import spawn

    workdir = files.create_runtime_dir(env, "edit")
    try:
        workdir.write([(name, old)])
        stop = _take_pending()
        if stop is not None:
            raise EditorInterrupted(128 + stop)
        # stdout is the editor's only when it is a terminal: vi without one draws its screen (the
        # value) to stdout, and `cat` as $EDITOR prints it; into a pipe or a log neither may go
        devnull = None if os.isatty(1) else os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            pid = spawn(editor[0], [*editor, os.path.join(workdir.path, name)], public_environ(env), None,
                        own_group=False, redirect=None if devnull is None else {1: devnull})
        except (errors.CommandNotFound, errors.CommandNotExecutable):
            raise errors.EditorNotFound(command=editor[0]) from None
        finally:
            if devnull is not None:
                os.close(devnull)
        status = _wait(pid)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            raise _failed(status)
        return _read_back(workdir.fd, name)
    finally:
        workdir.remove()


def _wait(pid: int) -> int:
    """The editor's wait status; on SIGTERM/SIGHUP the editor is stopped and kimen exits."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        sig = signal.sigwait(WATCHED)
        if sig in STOPPING:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            raise EditorInterrupted(128 + sig)


def _take_pending() -> int | None:
    """Consume every pending watched signal; the first SIGTERM/SIGHUP among them, if any."""
    stop = None
    while True:
        pending = signal.sigpending() & WATCHED
        if not pending:
            return stop
        sig = signal.sigwait(pending)  # returns at once: it is pending
        if stop is None and sig in STOPPING:
            stop = sig


def _failed(status: int) -> errors.KimenError:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        code, detail = 128 + sig, f"killed by signal {sig} ({signal.Signals(sig).name})"
    else:
        code = os.waitstatus_to_exitcode(status)
        detail = f"exit status {code}"
    return errors.EditorFailed(detail=detail, editor_status=code)


def _read_back(dir_fd: int, name: str) -> bytes:
    """The edited file, never through a symlink, never more than the limit (+ a final CRLF)."""
    import stat

    def unreadable(problem: str) -> errors.KimenError:
        return errors.ValueSourceFailed(detail=f"the edited file of {name}: {problem}")

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        raise unreadable(exc.strerror or "cannot open") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise unreadable("not a regular file")
        data = read_limited(fd, MAX_VALUE_BYTES + 2)
    except OSError as exc:
        raise unreadable(exc.strerror or "cannot read") from None
    finally:
        os.close(fd)
    if len(data) > MAX_VALUE_BYTES + 2:
        raise errors.SecretTooLarge(secret=name)
    return data
