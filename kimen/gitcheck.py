"""Questions kimen asks git about paths: are they ignored, are they tracked.

Used to warn when a secret-bearing output (an envfile, an identity) would not be ignored by git,
or when a value source is already in git's history. The git CLI runs with a scrubbed environment
(`git_environ`, the one owner of that rule: the sync git transport uses it too): kimen's private
variables removed, every ``GIT_*`` variable except the SSH/askpass/identity ones removed (so a
``GIT_DIR``, ``GIT_WORK_TREE`` or ``GIT_CONFIG_*`` of the caller's shell cannot redirect it),
prompts off, fsmonitor off (a configured fsmonitor is a command git would run).
git unavailable, or the path outside a work tree: the answer is None and no warning is given.

`subprocess` is imported inside the functions: this module is never on the `run` hot path.
"""

from __future__ import annotations

import os

from .environ import public_environ
from .paths import work_tree_top  # one owner of the walk (profile lookup uses it too)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

GIT_ENV_ALLOWED = frozenset({"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_ASKPASS"})
_GIT_ENV_ALLOWED_PREFIXES = ("GIT_AUTHOR_", "GIT_COMMITTER_")


def git_environ(env: Mapping[str, str] | None = None, *, index_file: str | None = None) -> dict[str, str]:
    """The environment every git process kimen starts gets (here and in `kimen.sync.git`): `env`
    (default: kimen's own) without private variables and without every ``GIT_*`` variable but
    ``GIT_SSH``, ``GIT_SSH_COMMAND``, ``GIT_SSH_VARIANT``, ``GIT_ASKPASS``, ``GIT_AUTHOR_*`` and
    ``GIT_COMMITTER_*``; prompts off; and `index_file` as ``GIT_INDEX_FILE`` when given (the sync
    transport's private index)."""
    source = os.environ if env is None else env
    clean = {
        key: value for key, value in public_environ(source).items()
        if not key.startswith("GIT_") or key in GIT_ENV_ALLOWED or key.startswith(_GIT_ENV_ALLOWED_PREFIXES)
    }
    clean["GIT_TERMINAL_PROMPT"] = "0"
    clean["GCM_INTERACTIVE"] = "never"
    if index_file is not None:
        clean["GIT_INDEX_FILE"] = index_file
    return clean


def _git(directory: str, args: list[str], env: dict[str, str] | None, data: bytes | None = None,
         *, output: bool = False) -> tuple[int, bytes] | None:
    """Run git in `directory` (`data` on its stdin); its exit status and stdout (when `output`),
    or None when git cannot be run."""
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-c", "core.fsmonitor=false", "-C", directory, *args],
            env=git_environ(env), input=data if data is not None else b"",
            stdout=subprocess.PIPE if output else subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=10 if data is None else 60, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode, done.stdout or b""


def _answer(done: tuple[int, bytes] | None) -> bool | None:
    if done is None or done[0] not in (0, 1):
        return None
    return done[0] == 0


def is_ignored(path: str, env: dict[str, str] | None = None) -> bool | None:
    """Whether git ignores `path` (`git check-ignore` semantics); None outside a work tree or without git."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if work_tree_top(directory) is None:
        return None
    return _answer(_git(directory, ["check-ignore", "-q", "--no-index", "--", path], env))


def is_tracked(path: str, env: dict[str, str] | None = None) -> bool | None:
    """Whether `path` is tracked by git (in the index); None outside a work tree or without git."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if work_tree_top(directory) is None:
        return None
    return _answer(_git(directory, ["ls-files", "--error-unmatch", "--", path], env))


def ignored_among(top: str, paths: list[str], env: dict[str, str] | None = None) -> set[str] | None:
    """Which of `paths` (relative to the work tree top `top`) git ignores, in one git process;
    None without git. A directory is ignored when a pattern ignores it (`build/`, `/dist`)."""
    if not paths:
        return set()
    done = _git(top, ["check-ignore", "--stdin", "-z", "--no-index"], env, b"\0".join(map(os.fsencode, paths)),
                output=True)
    if done is None or done[0] not in (0, 1):
        return None
    return {os.fsdecode(p) for p in done[1].split(b"\0") if p}


def tracked_among(top: str, paths: list[str], env: dict[str, str] | None = None) -> set[str] | None:
    """Which of `paths` (relative to the work tree top `top`) are tracked by git; None without git."""
    if not paths:
        return set()
    done = _git(top, ["ls-files", "-z", "--", *(f":(literal){p}" for p in paths)], env, output=True)
    if done is None or done[0] != 0:
        return None
    return {os.fsdecode(p) for p in done[1].split(b"\0") if p}
