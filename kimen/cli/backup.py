"""Backup snapshots before bulk changes: the one owner of where they go and how they are written.

A command that replaces or removes the values of names not each given on its command line
(`vault rekey`, `secret import --overwrite`, `bundle open` into an existing vault) first writes a
snapshot of the vault unless `--no-backup`: `<vault>.bak.<unix-nanoseconds>` (or
`<backup-dir>/<vault basename>.bak.<ns>`), created exclusively, 0600, with SQLite's `VACUUM INTO`
(`Vault.snapshot`), never a raw file copy. A backup that cannot be written (`backup_failed`)
changes nothing; a change that fails after its backup leaves no backup nobody was told about.
"""

from __future__ import annotations

import contextlib
import os
import time

from .. import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..vault.file import VaultFile


def backup_path(vault_path: str, backup_dir: str | None = None) -> str:
    from ..paths import absolute
    from ..vault.backup import default_path

    if backup_dir is None:
        return default_path(vault_path)
    stamp = time.time_ns()
    directory = absolute(backup_dir)
    if not os.path.isdir(directory):
        raise errors.BackupFailed(detail=f"backup directory does not exist: {directory}")
    return os.path.join(directory, f"{os.path.basename(vault_path)}.bak.{stamp}")


def check_writable(directory: str) -> None:
    """A dry run's check that the backup could be written."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise errors.BackupFailed(detail=f"backup directory is not writable: {directory}")


@contextlib.contextmanager
def backed_up(vault: VaultFile, path: str | None, *, unchanged_while: str = "generation") -> Iterator[None]:
    """Snapshot `vault` to `path` (None: no backup), then run the change in the `with` body.

    When the body fails and the vault's header field `unchanged_while` (`generation` for row
    changes, `wrap_id` for a rekey) still has its value from before, the vault provably did not
    change: the snapshot is removed again, so a refused change leaves no file behind.
    """
    if path is None:
        yield
        return
    before = getattr(vault.header(), unchanged_while)
    try:
        vault.snapshot(path)
    except OSError as exc:
        raise errors.BackupFailed(detail=f"{path}: {exc.strerror}") from None
    except errors.KimenError as exc:  # disk_full, vault_read_only, ... while copying
        raise errors.BackupFailed(detail=f"{path}: {exc.message}") from None
    try:
        yield
    except BaseException:
        try:
            unchanged = getattr(vault.header(), unchanged_while) == before
        except (errors.KimenError, OSError):
            unchanged = False
        if unchanged:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
