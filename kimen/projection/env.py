"""The child's environment and command: what `run` hands to execve.

Starts from kimen's environment without private variables (or the `--pristine` minimum), applies
the winning `env`/`envpath` directives, marks the child with `KIMEN_RUN=1` and `KIMEN_FILES_DIR`,
and checks everything the kernel would otherwise refuse with an opaque E2BIG or Python with a
ValueError: NUL in a value, one oversized entry, the whole block over ARG_MAX. Also finds the
command on the *child's* PATH so "not found" (127) and "not executable" (126) are told apart.

And `run` replacing itself with the child (`exec_in_place`), with what the supervised start
shares: exec in place is the common case (no private files, no projected stdin, no `--mask`) and
needs only this module, so the supervision machinery of `kimen.projection.run` (signal sets,
fork, process groups, parent death) is not imported on that path.
"""

from __future__ import annotations

import _signal  # the C module: `signal` only wraps it in enums (~1 ms on every run)
import os
import stat
import sys

from .. import errors
from ..environ import public_environ
from .kmap import Directive

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PRISTINE_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "TMPDIR")
MAX_ARG_STRLEN = 131072  # Linux: one argv/envp string including its NUL
_ARG_MAX_MARGIN = 4096


def base_environ(env: Mapping[str, str], pristine: bool) -> dict[str, str]:
    """kimen's environment minus private variables, or only the pristine set when asked."""
    public = public_environ(env)
    if pristine:
        return {k: v for k, v in public.items() if k in PRISTINE_KEEP or k.startswith("LC_")}
    # a files dir of an outer `kimen run` must not look like ours
    public.pop("KIMEN_FILES_DIR", None)
    return public


def child_environ(
    env: Mapping[str, str],
    winners: Sequence[Directive],
    values: Mapping[Directive, bytes],
    files_dir: str | None,
    *,
    pristine: bool = False,
) -> dict[str, str | bytes]:
    """The child's environment: base, then `env` values and `envpath` paths, then kimen's marks."""
    out: dict[str, str | bytes] = dict(base_environ(env, pristine))
    for d in winners:
        if d.kind == "env":
            out[d.target] = values[d]
        elif d.kind == "envpath" and files_dir is not None:
            out[d.target] = os.path.join(files_dir, d.relpath)  # type: ignore[arg-type]
    if files_dir is not None:
        out["KIMEN_FILES_DIR"] = files_dir
    out["KIMEN_RUN"] = "1"
    return out


def _encoded(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else os.fsencode(value)


def check_exec_block(environ: Mapping[str, str | bytes], argv: Sequence[str]) -> None:
    """Refuse what execve would refuse, before anything is written or started."""
    total = 0
    for name, value in environ.items():
        raw = _encoded(value)
        if "=" in name or "\0" in name or not name:
            raise errors.InvalidEnvVar("invalid environment variable name in the environment")
        if b"\0" in raw:
            raise errors.InvalidEnvValue(name=name)
        size = len(os.fsencode(name)) + 1 + len(raw) + 1  # NAME=value and its NUL
        if size > MAX_ARG_STRLEN:
            raise errors.ValueTooLargeForEnv(name=name)
        total += size + 8
    for arg in argv:
        total += len(os.fsencode(arg)) + 1 + 8
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = 2 * 1024 * 1024
    if arg_max > 0 and total > arg_max - _ARG_MAX_MARGIN:
        raise errors.EnvironmentTooLarge(hint="project large values as files with `file` and `envpath`")


def find_command(command: str, environ: Mapping[str, str | bytes]) -> str:
    """The executable the child will run, looked up on the child's PATH like execvp.

    Raises CommandNotFound (127) or CommandNotExecutable (126, also for directories).
    """
    shown = command
    if "/" in command:
        return _check_executable(command, shown)
    path_value = environ.get("PATH")
    path_var = os.fsdecode(path_value) if path_value is not None else os.defpath
    denied: str | None = None
    for directory in path_var.split(os.pathsep):
        candidate = os.path.join(directory or ".", command)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
        denied = denied or candidate
    if denied is not None:
        raise errors.CommandNotExecutable(command=shown)
    raise errors.CommandNotFound(command=shown)


def _check_executable(path: str, shown: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise errors.CommandNotFound(command=shown) from None
    except NotADirectoryError:
        raise errors.CommandNotFound(command=shown) from None
    except OSError:
        raise errors.CommandNotExecutable(command=shown) from None
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.X_OK):
        raise errors.CommandNotExecutable(command=shown)
    return path


# -- exec in place --

# Dispositions a child gets back at their default: SIGINT and SIGQUIT (a non-interactive shell's
# `&` ignores them; only the supervised start resets those) and SIGPIPE/SIGXFSZ (Python ignores them).
RESET_FOR_CHILD = tuple(
    s for s in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGPIPE, getattr(_signal, "SIGXFSZ", None))
    if s is not None
)


def flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: the fd was closed at start (None)
            pass


def exec_in_place(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes]) -> None:
    """Replace kimen with the child. Returns only by raising (the exec failed)."""
    flush()
    # Python ignores SIGPIPE (and SIGXFSZ); an exec'd program must get the default action back.
    for sig in RESET_FOR_CHILD[2:]:
        _signal.signal(sig, _signal.SIG_DFL)
    try:
        os.execve(exe, list(argv), dict(environ))  # noqa: S606 - no shell, by design
    except OSError as exc:
        raise start_error(exc, argv[0]) from None


def start_error(exc: OSError, command: str) -> errors.KimenError:
    import errno

    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return errors.CommandNotFound(command=command)
    return errors.CommandNotExecutable(command=command)
