"""The child's environment and command: what `run` hands to execve.

Starts from kimen's environment without private variables (or the `--pristine` minimum), applies
the winning `env`/`envpath` directives, marks the child with `KIMEN_RUN=1` and `KIMEN_FILES_DIR`,
and checks everything the kernel would otherwise refuse with an opaque E2BIG or Python with a
ValueError: NUL in a value, one oversized entry, the whole block over ARG_MAX. Also finds the
command on the *child's* PATH so "not found" (127) and "not executable" (126) are told apart.
"""

from __future__ import annotations

import os
import stat

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
