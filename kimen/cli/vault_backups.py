"""`kimen vault backups [--prune --keep N --yes]` and `kimen vault restore --backup FILE`: the
snapshots bulk changes leave next to the vault (`kimen.cli.backup`), listed with what made them
and whether they predate a rekey (then they open with the old passphrase), pruned, and restored
after a snapshot of the current vault.
"""

from __future__ import annotations

import argparse
import os

from .. import errors
from .model import Invocation, Result
from .parser import add_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(group: argparse._SubParsersAction) -> None:
    """Add `backups` and `restore` to the `vault` group."""
    p = add_command(group, "backups", "list the vault's backups (path, time, size, what made them)",
                    handler=cmd_backups)
    p.add_argument("--prune", action="store_true", help="remove all but the newest --keep N backups")
    p.add_argument("--keep", metavar="N", help="with --prune: how many of the newest to keep")
    p.add_argument("--yes", action="store_true", help="confirm --prune")
    p = add_command(group, "restore", "replace the vault with a backup (after snapshotting the current one)",
                    handler=cmd_restore)
    p.add_argument("--backup", metavar="FILE", required=True, help="the backup to restore")
    p.add_argument("--no-backup", action="store_true", help="do not snapshot the current vault first")


def _keep(text: str | None) -> int:
    if text is None:
        raise errors.UsageError(detail="--prune needs --keep N")
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        raise errors.UsageError(detail=f"--keep takes a whole number, not {text[:40]!r}")
    return int(text)


def _describe(path: str, wrap_id: str | None, log: dict[str, str]) -> dict[str, Any]:
    from ..durations import format_time
    from ..vault import Vault

    st = os.stat(path)
    tail = path.rsplit(".bak.", 1)[-1]
    created = int(tail) / 1e9 if tail.isdigit() else st.st_mtime
    before_rekey = None
    try:
        with Vault.open(path) as backup:
            before_rekey = None if wrap_id is None else backup.header().wrap_id.hex() != wrap_id
    except errors.KimenError:
        pass
    return {"path": path, "created_at": format_time(created), "size": st.st_size, "made_by": log.get(path),
            "before_rekey": before_rekey}


def cmd_backups(inv: Invocation) -> Result:
    from ..access import resolve_vault
    from ..vault import Vault
    from ..vault.backup import made_by
    from .backup import backup_files

    a = inv.options
    if not a.prune and (a.keep is not None or a.yes):
        raise errors.UsageError(detail="--keep and --yes go with --prune")
    keep = _keep(a.keep) if a.prune else None
    path = resolve_vault(inv).path
    wrap_id = None
    try:
        with Vault.open(path) as vault:
            wrap_id = vault.header().wrap_id.hex()
    except errors.VaultNotFound:
        pass
    files = backup_files(path)
    log = made_by(path)
    backups = [_describe(f, wrap_id, log) for f in files]
    removed: list[str] = []
    if keep is not None:
        if not a.yes:
            raise errors.PruneConfirmationRequired()
        doomed = files[:max(len(files) - keep, 0)]
        for f in doomed:
            try:
                os.unlink(f)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise errors.WriteFailed(detail=f"{f}: {exc.strerror}", path=f) from None
            removed.append(f)
        backups = [b for b in backups if b["path"] not in removed]
    lines = [f"{b['created_at']}  {b['size']:>10}  {b['made_by'] or '?'}"
             f"{'  (before a rekey: opens with the old passphrase)' if b['before_rekey'] else ''}  {b['path']}"
             for b in backups]
    lines += [f"removed {f}" for f in removed]
    if not lines:
        lines = [f"no backups of {path}"]
    return Result("vault_backups", lines, {"vault": path, "backups": backups, "removed": removed})


def cmd_restore(inv: Invocation) -> Result:
    from .backup import restore_backup

    path, source_path, snapshot = restore_backup(inv, inv.options.backup, snapshot=not inv.options.no_backup)
    lines = [f"restored {path} from {source_path}"]
    if snapshot:
        lines.append(f"backup: {snapshot}")
    return Result("vault_restore", lines, {"vault": path, "backup": source_path, "backup_path": snapshot})
