"""`kimen run` replacing itself with the child (`execve`), and what the supervised start shares.

Exec in place is the common case (no private files, no projected stdin, no `--mask`): it needs
only this module, so the supervision machinery of `kimen.projection.run` (signal sets, fork,
process groups, parent death) is not imported on that path.
"""

from __future__ import annotations

import _signal  # the C module: `signal` only wraps it in enums (~1 ms on every run)
import os
import sys

from .. import errors

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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
        except (OSError, ValueError):
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
