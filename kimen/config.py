"""The config file: a JSON object, written atomically 0600 in a 0700 directory.

It stores how to get the passphrase (`unlock`), never the passphrase itself. Unknown keys are
preserved on every write so newer kimen versions and hand edits survive.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from . import errors, paths
from .fsutil import atomic_write, make_private_dirs, read_regular
from .store import HISTORY_KEEP, HISTORY_KEEP_MAX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNLOCK_METHODS = ("prompt", "env", "stdin", "exec")
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class _Absent(Exception):
    """No config file: the defaults apply."""


def config_path(env: Mapping[str, str] = os.environ) -> str:
    """KIMEN_CONFIG (non-empty) > <config>/config.json; `config_path_unavailable` when unresolvable."""
    try:
        return paths.config_file(env)
    except (KeyError, OSError, RuntimeError):
        raise errors.ConfigPathUnavailable() from None


class Config:
    """A loaded config file; `data` is the raw JSON object."""

    def __init__(self, path: str, data: dict[str, Any], exists: bool) -> None:
        self.path = path
        self.data = data
        self.exists = exists

    @classmethod
    def load(cls, env: Mapping[str, str] = os.environ) -> Config:
        path = config_path(env)
        try:
            # unusable from every command, so the fixed-code reason (26), not the config area's
            raw = read_regular(path, MAX_CONFIG_BYTES, lambda problem: errors.ConfigPathUnavailable(
                f"cannot read the config file: {path} ({problem})", path=path,
                hint="make it a readable file (and its directories searchable), or point KIMEN_CONFIG "
                     "at one"), missing=_Absent)
        except _Absent:
            return cls(path, {}, exists=False)
        try:
            data = _parse(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8 (a ValueError too), nested too deep
            raise errors.InvalidConfigJson(path=path) from None
        if not isinstance(data, dict):
            raise errors.InvalidConfigJson(f"config file is not a JSON object: {path}", path=path,
                                           hint="the file holds one object: `{}` at the least")
        field = _field_not_text(data)
        if field is not None:
            raise errors.InvalidConfigJson(
                f"config file is not valid JSON: {path}: {field} holds a lone surrogate escape (not text)",
                path=path, field=field, hint=f"fix `{field}` in {path}")
        return cls(path, data, exists=True)

    def save(self) -> None:
        field = _field_not_text(self.data)  # load refuses such a file, so the value is this command's
        if field is not None:
            raise errors.UsageError(
                detail=f"`{field}` would not be text: the value given is not valid UTF-8, and the config "
                       f"file is JSON text (nothing was written)",
                hint="rename the file or a directory on its path, or link it from a UTF-8 path; --vault and "
                     "KIMEN_VAULT take any path" if field.startswith("vault.") else
                     "give only UTF-8 words (a command at another path: call it from a script)")
        # A symlinked config (a dotfiles checkout) is replaced where it points and the link kept:
        # the config holds no secret, and renaming over the link would silently detach the user's copy.
        # Only a link of the user's own: one someone else planted (a KIMEN_CONFIG in a shared
        # directory) is refused as before (unsafe_output_path), never followed to a file of theirs.
        target = os.path.realpath(self.path) if _own_symlink(self.path) else self.path
        try:
            make_private_dirs(os.path.dirname(target))
        except OSError as exc:
            raise errors.ConfigFailed(detail=f"cannot create {os.path.dirname(target)}: {exc.strerror}",
                                      path=self.path) from None
        import json

        text = json.dumps(self.data, indent=2, sort_keys=False) + "\n"
        atomic_write(target, text.encode(), mode=0o600, failed=errors.ConfigFailed)
        self.exists = True

    # -- typed views --

    def section(self, key: str) -> dict[str, Any]:
        value = self.data.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise errors.InvalidConfigValue(field=key, path=self.path, detail="must be an object",
                                            hint=f"fix `{key}` in {self.path}")
        return value

    def vault_path(self) -> str | None:
        value = self.section("vault").get("path")
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise errors.InvalidConfigValue(field="vault.path", path=self.path, detail="must be a string",
                                            hint=f"fix `vault.path` in {self.path}")
        return value

    def history_keep(self) -> int:
        """`history.keep`: how many older values `secret history` keeps per name (absent or null:
        10). A whole number from 0 to 100; anything else is `invalid_config_value` naming the
        field, never silently replaced by the default (a typo must not keep more, or less, than
        the user asked for)."""
        keep = self.section("history").get("keep")
        if keep is None:
            return HISTORY_KEEP
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= HISTORY_KEEP_MAX:
            shown = keep if isinstance(keep, int | float) else type(keep).__name__
            raise errors.InvalidConfigValue(
                field="history.keep", path=self.path,
                detail=f"{shown} is not a whole number from 0 to {HISTORY_KEEP_MAX}",
                hint=f'set "history": {{"keep": N}} in {self.path} with N from 0 (keep none) to '
                     f"{HISTORY_KEEP_MAX}, or remove it for the default {HISTORY_KEEP}")
        return keep

    def unlock(self) -> dict[str, Any]:
        """`unlock`, checked as every reader needs it: a known method (absent, null or "" mean
        prompt) and, for exec, a non-empty argv of strings. A hand edit gone wrong is reported
        with the file to fix, never shown or run half-understood."""
        unlock = self.section("unlock")
        method = unlock.get("method")
        if method in (None, ""):
            return unlock
        if method not in UNLOCK_METHODS:
            raise errors.UnknownUnlockMethod(method=str(method)[:40], path=self.path,
                                             hint=f"fix `unlock` in {self.path}, or run `kimen config unlock set`")
        argv = unlock.get("exec")
        if method == "exec" and not (isinstance(argv, list) and argv and argv[0]
                                     and all(isinstance(a, str) for a in argv)):
            raise errors.MissingUnlockExecCommand(
                f"unlock method exec has no usable command in {self.path}", path=self.path,
                hint="`unlock.exec` must be a list of strings (the argv); "
                     "run `kimen config unlock set exec -- CMD ARGS...`")
        return unlock


def _parse(raw: bytes) -> Any:
    """`json.loads(raw)`. UTF-8 text is read without importing `json` (the commands called before
    every step read the config); any other encoding `json` accepts (a BOM, UTF-16, UTF-32) and
    every error go to `json` itself, so the same files are accepted and refused."""
    from .jsontext import read_json

    try:
        return read_json(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        import json

        return json.loads(raw)


def _field_not_text(value: Any, where: str = "") -> str | None:
    """The first field (`vault.path`, `unlock.exec[1]`) whose key or string holds a lone surrogate
    (`"\\ud800"` in the JSON text): valid JSON grammar, but no path, argv or UTF-8 output can carry
    it, so the file is refused once here instead of failing wherever a command uses the field."""
    if isinstance(value, str):
        return None if _is_text(value) else where or "(top level)"
    if isinstance(value, dict):
        for key, item in value.items():
            name = key if _is_text(key) else ascii(key)[1:-1]
            here = f"{where}.{name}" if where else name
            if not _is_text(key):
                return here
            found = _field_not_text(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _field_not_text(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _own_symlink(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISLNK(st.st_mode) and st.st_uid == os.geteuid()
