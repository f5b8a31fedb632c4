"""Where kimen keeps things, computed without importing platformdirs on Linux.

On Linux the XDG rules are a few lines; reproducing them keeps ~20 ms of platformdirs import off
the hot path (`kimen run` with a session). `tests/test_paths.py` proves the results identical to
platformdirs for the environments that matter. Other platforms ask platformdirs directly.
This module computes locations and says whether one may be used (`session_dir_problem`); it
never creates or changes anything.
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

APP = "kimen"


def _home(env: Mapping[str, str]) -> str:
    home = env.get("HOME", "")
    if home and os.path.isabs(home):
        return home.rstrip("/") or "/"
    import pwd

    return pwd.getpwuid(os.getuid()).pw_dir


def _xdg(env: Mapping[str, str], var: str, default: str) -> str:
    value = env.get(var, "")
    if value and os.path.isabs(value):
        return os.path.join(value, APP)
    return os.path.join(_home(env), default, APP)


def _platformdirs(kind: str) -> str:
    import platformdirs

    return str(getattr(platformdirs, f"user_{kind}_dir")(APP, appauthor=False))


def config_dir(env: Mapping[str, str] = os.environ) -> str:
    """`<config>`: ~/.config/kimen (or $XDG_CONFIG_HOME/kimen)."""
    if sys.platform.startswith("linux"):
        return _xdg(env, "XDG_CONFIG_HOME", ".config")
    return _platformdirs("config")


def cache_dir(env: Mapping[str, str] = os.environ) -> str:
    """`<cache>`: ~/.cache/kimen (or $XDG_CACHE_HOME/kimen)."""
    if sys.platform.startswith("linux"):
        return _xdg(env, "XDG_CACHE_HOME", ".cache")
    return _platformdirs("cache")


def state_dir(env: Mapping[str, str] = os.environ) -> str:
    """`<state>`: ~/.local/state/kimen (or $XDG_STATE_HOME/kimen)."""
    if sys.platform.startswith("linux"):
        return _xdg(env, "XDG_STATE_HOME", ".local/state")
    return _platformdirs("state")


def absolute(path: str, cwd: str | None = None) -> str:
    """A user-given path made absolute against the cwd and lexically normalised (no symlinks).
    `~` is the home kimen uses for its own locations (`HOME` when absolute, else the account's),
    so `--vault ~/v.db` never lands under `/` or the cwd when `HOME` is empty or relative."""
    if path == "~" or path.startswith("~/"):
        path = os.path.join(_home(os.environ), path[1:].lstrip("/"))  # `~//x` stays under home
    else:
        path = os.path.expanduser(path)  # ~user
    if not os.path.isabs(path):
        path = os.path.join(cwd or os.getcwd(), path)
    return os.path.normpath(path)


def config_file(env: Mapping[str, str] = os.environ) -> str:
    """KIMEN_CONFIG (non-empty) > <config>/config.json."""
    explicit = env.get("KIMEN_CONFIG", "")
    if explicit:
        return absolute(explicit)
    return os.path.join(config_dir(env), "config.json")


def config_absent(env: Mapping[str, str] = os.environ) -> bool:
    """True only when the config file surely does not exist (ENOENT), so the defaults apply without
    loading it. A path that cannot be checked (a directory without search permission, a file where
    a directory should be) is not absent: loading it reports why, rather than a silent fall back to
    the default vault."""
    try:
        os.lstat(config_file(env))
    except FileNotFoundError:
        return True
    except (KeyError, OSError, RuntimeError, ValueError):
        return False
    return False


def default_vault(env: Mapping[str, str] = os.environ) -> str:
    return os.path.join(config_dir(env), "vault.db")


def session_dir(env: Mapping[str, str] = os.environ) -> str:
    """KIMEN_SESSION_DIR > $XDG_RUNTIME_DIR/kimen (when absolute) > <cache>/session."""
    explicit = env.get("KIMEN_SESSION_DIR", "")
    if explicit:
        return absolute(explicit)
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):  # a relative one is invalid (XDG spec), as for runtime_base
        return os.path.join(os.path.normpath(runtime), APP)
    return os.path.join(cache_dir(env), "session")


def session_dir_problem(directory: str) -> str | None:
    """Why `directory` must not be used as the session dir — a symlink, not a directory, another
    user's, or open to group or others (the daemon's socket and `session.lock` live there) — or
    None when it is safe or does not exist (kimen creates it 0700). Never chmodded: the fix is the
    user's (`session_dir_hint`)."""
    try:
        st = os.lstat(directory)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
        return None  # the common case, without importing fsutil (the session client's hot path)
    from .fsutil import directory_problem

    return directory_problem(directory, strict=True) or "unsafe"


def session_dir_hint(directory: str) -> str:
    return (f"remove {directory} (kimen recreates it 0700) or set KIMEN_SESSION_DIR to a private directory; "
            "kimen never changes the permissions of an existing directory")


def audit_log(env: Mapping[str, str] = os.environ) -> str:
    return os.path.join(state_dir(env), "audit.jsonl")


def runtime_base(env: Mapping[str, str] = os.environ) -> str:
    """Base of private per-run directories: prefers tmpfs that only this user can reach."""
    uid = os.getuid()
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(runtime)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022:
            return os.path.join(runtime, APP, "run")
    if os.path.isdir("/dev/shm"):
        return f"/dev/shm/kimen-{uid}"
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"kimen-{uid}")


def work_tree_top(start: str) -> str | None:
    """The top of the git work tree holding `start`: the nearest ancestor (`start` included) with a
    `.git` entry (a directory, or a file for worktrees and submodules). `lstat` only, no git process:
    profile lookup runs this on the `run` hot path."""
    current = os.path.abspath(start)
    while True:
        if os.path.lexists(os.path.join(current, ".git")):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


# [A-Za-z0-9_-][A-Za-z0-9_.-]*: a set, not a regular expression (`re` costs ~5 ms of start-up)
_PROFILE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def is_profile_name(name: str) -> bool:
    """Whether `name` can name a profile, the file `<name>.kmap` in a profile directory
    (docs/profiles.md): ASCII letters, digits, `_`, `-` and `.`, not starting with `.`. Here, not
    in `kimen.projection.kmap`, so `kimen status` lists profiles without importing the parser."""
    return bool(name) and name[0] != "." and _PROFILE_CHARS.issuperset(name)


def profile_dirs(env: Mapping[str, str] = os.environ, cwd: str | None = None) -> list[str]:
    """Profile directories in lookup order, duplicates removed (docs/profiles.md, "Lookup"):
    $KIMEN_PROFILE_DIR; `.kimen/profiles` of the working directory and of each parent up to the git
    work tree's top, nearest first (the working directory only outside a work tree);
    <config>/profiles; $HOME/.config/kimen/profiles."""
    cwd = cwd or os.getcwd()
    dirs: list[str] = []
    explicit = env.get("KIMEN_PROFILE_DIR", "")
    if explicit:
        dirs.append(absolute(explicit, cwd))
    top = work_tree_top(cwd)
    current = os.path.abspath(cwd)
    while True:
        dirs.append(os.path.join(current, ".kimen", "profiles"))
        if top is None or current == top:
            break
        current = os.path.dirname(current)
    dirs.append(os.path.join(config_dir(env), "profiles"))
    dirs.append(os.path.join(_home(env), ".config", APP, "profiles"))
    return list(dict.fromkeys(dirs))
