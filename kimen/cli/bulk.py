"""`secret mv --prefix OLD NEW` and `secret rm --prefix P --yes`: every name under a prefix in one
transaction, after a backup of the vault; moved names keep their history, removed ones can be
restored (`secret restore`). The output names the profiles (the lookup of docs/profiles.md) that
still reference an old name, so a rename does not silently break a `kimen run`.
"""

from __future__ import annotations

import os

from .. import errors
from ..store import Change
from ..values import check_secret_name
from .model import Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _names_under(inv: Invocation, prefix: str) -> tuple[str, list[str]]:
    """The vault path and the sorted names starting with `prefix` (`secret_not_found` when none)."""
    from ..access import open_metadata

    if not prefix:
        raise errors.UsageError(detail="--prefix needs a non-empty prefix")
    with open_metadata(inv) as vault:
        names = vault.list_names(prefix)
        path = vault.path
    if not names:
        raise errors.SecretNotFound([f"{prefix}*"], hint="kimen secret list shows the names in the vault")
    return path, names


def _write_backed_up(inv: Invocation, changes: list[Change]) -> str:
    """Apply `changes` in one store transaction after a snapshot; the snapshot's path."""
    from ..access import open_metadata, open_store
    from .backup import backed_up, backup_path

    store = open_store(inv)
    try:
        with open_metadata(inv) as vault:
            path = backup_path(vault.path)
            with backed_up(vault, path):
                store.write(changes)
    finally:
        store.close()
    return path


def stale_profiles(inv: Invocation, old_names: list[str]) -> list[dict[str, Any]]:
    """The visible profiles (from the working directory) whose env/file/stdin directives still
    reference one of `old_names`: `{name, path, names}`. A profile that does not load is skipped."""
    from ..projection import kmap
    from ..status import visible_profiles

    old = set(old_names)
    cwd = os.getcwd()
    found = []
    for entry in visible_profiles(inv.env, cwd):
        try:
            profile = kmap.load(map_path=entry["path"], env=inv.env, cwd=cwd)
        except errors.KimenError:
            continue
        used = sorted({d.ref.name for d in profile.directives if d.ref is not None and d.ref.kind == "secret"
                       and d.ref.name in old})
        if used:
            found.append({"name": entry["name"], "path": entry["path"], "names": used})
    return found


def _stale_lines(stale: list[dict[str, Any]]) -> list[str]:
    return [f"profile {s['name']} ({s['path']}) still references: {', '.join(s['names'])}" for s in stale]


def mv_prefix(inv: Invocation) -> Result:
    a = inv.options
    old_prefix, new_prefix = a.old, a.new
    if old_prefix == new_prefix:
        raise errors.SameSecretName(name=old_prefix)
    _vault, names = _names_under(inv, old_prefix)
    renamed = [(name, check_secret_name(new_prefix + name[len(old_prefix):])) for name in names]
    backup = _write_backed_up(inv, [Change.mv(old, new) for old, new in renamed])
    stale = stale_profiles(inv, names)
    lines = [f"renamed {old} to {new}" for old, new in renamed] + [f"backup: {backup}"] + _stale_lines(stale)
    return Result("secret_mv", lines, {
        "from": old_prefix, "to": new_prefix, "names": [{"from": old, "to": new} for old, new in renamed],
        "backup_path": backup, "stale_profiles": stale})


def rm_prefix(inv: Invocation) -> Result:
    a = inv.options
    prefix = a.prefix
    if a.name is not None:
        raise errors.UsageError(detail="give NAME or --prefix P, not both")
    _vault, names = _names_under(inv, prefix)
    if not a.yes:
        raise errors.RmConfirmationRequired(prefix=prefix, names=names)
    backup = _write_backed_up(inv, [Change.rm(name) for name in names])
    stale = stale_profiles(inv, names)
    lines = [f"removed {name}" for name in names] + [f"backup: {backup}"] + _stale_lines(stale)
    return Result("secret_rm", lines, {"prefix": prefix, "names": names, "backup_path": backup,
                                       "stale_profiles": stale})
