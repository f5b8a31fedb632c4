"""Helpers shared by several command modules (KDF parameters, the git-ignore warning, session expiry text,
the session path check).

A leaf of `kimen.cli`: it imports no command module, and nothing heavy at import time."""

from __future__ import annotations

import os

from .. import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..store import KdfParams
    from .model import Options


def add_kdf_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kdf-memory", metavar="SIZE", help="argon2id memory, e.g. 64MiB (bare number: KiB)")
    parser.add_argument("--kdf-time", metavar="N", help="argon2id passes")
    parser.add_argument("--kdf-parallelism", metavar="N", help="argon2id lanes")


def kdf_from_args(args: Options, default: KdfParams) -> KdfParams:
    """The KDF parameters of the --kdf-* flags over `default`; range-checked (invalid_kdf_params)."""
    from ..durations import parse_size_kib
    from ..store import KdfParams
    from ..vault import kdf_problem

    memory, time_cost, lanes = default.memory_kib, default.time, default.parallelism
    if args.kdf_memory is not None:
        try:
            memory = parse_size_kib(args.kdf_memory)
        except ValueError:
            raise errors.InvalidKdfParams(detail=f"--kdf-memory needs a size such as 64MiB (a bare number is KiB), "
                                          f"not {args.kdf_memory!r}") from None
    if args.kdf_time is not None:
        time_cost = _whole_number("--kdf-time", args.kdf_time)
    if args.kdf_parallelism is not None:
        lanes = _whole_number("--kdf-parallelism", args.kdf_parallelism)
    params = KdfParams(memory_kib=memory, time=time_cost, parallelism=lanes)
    problem = kdf_problem(params)
    if problem:
        raise errors.InvalidKdfParams(
            detail=problem, hint="allowed: memory 8 MiB-2 GiB, time 1-10, parallelism 1-16, memory x time <= 4 GiB"
        )
    return params


def _whole_number(flag: str, text: str) -> int:
    """ASCII decimal digits only: int() would also take `+3`, `1_0` (ten) and non-ASCII digits."""
    if not (text.isascii() and text.isdigit()):
        raise errors.InvalidKdfParams(detail=f"{flag} needs a whole number, not {text!r}")
    return int(text)


def warn_if_not_git_ignored(inv: Any, path: str) -> None:
    """After writing a secret-bearing `path` (an identity, an envfile): inside a git work tree
    where git does not ignore it, warn `output_not_git_ignored` with the exact `.gitignore` line.
    git unavailable or no work tree: no warning. git runs only here, never on the `run` hot path."""
    from .. import gitcheck
    from ..output import warn

    if gitcheck.is_ignored(path, inv.env) is not False:
        return
    top = gitcheck.work_tree_top(os.path.dirname(path)) or os.path.dirname(path)
    warn(f"{path} is not ignored by git; add it to .gitignore (the line {gitignore_line(path, top)} "
         f"in {os.path.join(top, '.gitignore')})", reason="output_not_git_ignored")


def gitignore_line(path: str, top: str) -> str:
    """The `.gitignore` line (at `top`) that ignores `path` and the temp files of its atomic writes
    (`<name>.kimen-tmp-<hex>`): anchored with `/`, gitignore's special characters escaped, then `*`.
    A byte a line cannot hold or show (a newline or other control character, a byte that is not
    UTF-8) is `?`, which git matches against exactly one byte."""
    relative = os.path.relpath(path, top).replace(os.sep, "/")
    escaped = "".join("\\" + ch if ch in "\\*?[" else ch if ch.isprintable() else "?" for ch in relative)
    stripped = escaped.rstrip(" ")
    return "/" + stripped + "\\ " * (len(escaped) - len(stripped)) + "*"


_TTL_WORDS = {"idle_ttl": "idle TTL", "max_ttl": "max TTL"}


def expiry_text(vault: dict[str, Any]) -> str:
    """When and by which limit a session vault expired (`2026-01-02T03:04:05Z, idle TTL`)."""
    return f"{vault['expired_at']}, {_TTL_WORDS.get(vault['expired_by'], vault['expired_by'])}"


def check_session_path(canonical: str) -> None:
    """Session requests carry the vault path as JSON text: it must be valid UTF-8."""
    import os

    from ..daemon.protocol import utf8

    if not utf8(canonical):
        shown = os.fsencode(canonical).decode("utf-8", "backslashreplace")
        raise errors.SessionUnsupported(message=f"a session cannot hold a vault whose path is not valid UTF-8: "
                                                f"{shown}", hint="rename the vault file or its directory, or use "
                                                                 "the vault without a session")


def check_fingerprint(text: str | None) -> str | None:
    """A fingerprint given on the command line (a value's, the members'): 64 hex digits, returned
    in lower case → else `invalid_fingerprint`; None stays None."""
    if text is None:
        return None
    import re

    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise errors.InvalidFingerprint()
    return text.lower()
