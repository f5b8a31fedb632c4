"""kimen's private environment variables, the scrubbed environment every child gets, and
the PATH lookup that finds a child's program.

Private variables (the passphrase, the new passphrase, a grant token, an age identity) are read
by kimen itself and never passed to any process it starts: `run` children, `exec:` sources,
passphrase and unlock commands, git, the daemon. Kimen never mutates its own `os.environ`; child
environments are new mappings built here.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Mapping


PRIVATE_VARS = frozenset({
    "KIMEN_PASSPHRASE",
    "KIMEN_NEW_PASSPHRASE",
    "KIMEN_SESSION_TOKEN",
    "KIMEN_AGE_IDENTITY",
})


def public_environ(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` without kimen's private variables."""
    return {k: v for k, v in env.items() if k not in PRIVATE_VARS}


def which(command: str, path_var: str | None) -> str | None:
    """PATH lookup as execvp does it; None when nothing executable is found. A command holding a
    `/` is returned as given (the caller's exec reports whether it exists)."""
    if "/" in command:
        return command
    for directory in (path_var if path_var is not None else os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
