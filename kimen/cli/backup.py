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
    from .model import Invocation


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
def backed_up(vault: VaultFile, path: str | None) -> Iterator[tuple[object, ...] | None]:
    """Snapshot `vault` to `path` (None: no backup), then run the change in the `with` body, which
    gets the snapshot's header fingerprint (`Header.fingerprint`; None without a backup).

    When the body fails and the vault still equals the snapshot (same header: the MACs cover every
    row), the change provably did not happen: the snapshot is removed again, so a refused change
    leaves no file behind. Any doubt keeps it.
    """
    if path is None:
        yield None
        return
    if vault.read_only:  # the change cannot happen: say so, not that its backup could not be written
        raise errors.VaultReadOnly(path=vault.path)
    try:
        taken = vault.snapshot(path)
    except OSError as exc:
        raise errors.BackupFailed(detail=f"{path}: {exc.strerror}") from None
    except errors.KimenError as exc:  # disk_full, vault_read_only, ... while copying
        raise errors.BackupFailed(detail=f"{path}: {exc.message}") from None
    record(vault.path, path)
    try:
        yield taken
    except BaseException:
        try:
            unchanged = vault.header().fingerprint() == taken
        except (errors.KimenError, OSError):
            unchanged = False
        if unchanged:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise


# -- what made each backup: the log is `kimen.vault.backup`'s; the command's words are known here --


def _command_words() -> str:
    """The command's first two words (`secret import`), skipping flags and the values of the
    global flags that take one (`--vault PATH`, `--passphrase-cmd CMD` is not a command word)."""
    import sys

    from .flags import GLOBAL, value_flags

    takes_value = value_flags(GLOBAL)
    words: list[str] = []
    skip = False
    for word in sys.argv[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in takes_value
        elif len(words) < 2:
            words.append(word)
    return " ".join(words) or "kimen"


def record(vault_path: str, path: str) -> None:
    """Log the backup at `path` as made by this command (`kimen.vault.backup.record`)."""
    from ..vault.backup import record as record_backup

    record_backup(vault_path, path, _command_words())


def backup_files(vault_path: str) -> list[str]:
    """Every backup of the vault at `vault_path`, oldest first: regular files named `<vault
    basename>.bak.<ns>` that hold this vault (its vault id, read from the main file). Next to the
    vault, the name decides when the vault itself cannot be read (damaged or missing: the backups
    are what restores it); elsewhere (`--backup-dir`), only a file the log recorded for this very
    vault, holding its id, counts. So a log line edited, written before lines named their vault, or
    copied with the vault's directory never makes another file a backup (and `--prune` never
    removes one)."""
    import stat

    from ..vault import main_file_vault_id
    from ..vault.backup import recorded

    directory, base = os.path.split(os.path.abspath(vault_path))
    prefix = base + ".bak."
    beside: set[str] = set()
    try:
        with os.scandir(directory) as entries:
            beside.update(entry.path for entry in entries if entry.name.startswith(prefix))
    except OSError:
        pass
    own = main_file_vault_id(vault_path)
    found = []
    for path in beside | recorded(vault_path):
        name = os.path.basename(path)
        if not (name.startswith(prefix) and name[len(prefix):].isdigit()):
            continue
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        if (own is None and path in beside) or (own is not None and main_file_vault_id(path) == own):
            found.append(path)
    return sorted(found, key=_stamp)


def _stamp(path: str) -> tuple[int, str]:
    tail = path.rsplit(".bak.", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, path)


def restore_backup(inv: Invocation, source: str, *, snapshot: bool) -> tuple[str, str, str | None]:
    """Replace the selected vault with the backup `source` (`vault restore`, `sync restore`): the
    backup must be a kimen vault (checked before any unlock), whoever restores must be able to
    unlock the vault now (never through a session), and the current vault is snapshotted first
    unless `snapshot` is false; the replacement is atomic and 0600. Nothing outside the vault
    changes (a sync remote's ratchet stays). Returns (vault path, backup path, snapshot path)."""
    from ..access import open_metadata, open_store
    from ..paths import absolute
    from ..vault import Vault

    source_path = absolute(source)
    if not os.path.lexists(source_path):
        raise errors.VaultNotFound(path=source_path,
                                   hint="no backup there: `kimen vault backups` lists the ones kimen made")
    with Vault.open(source_path) as backup:
        backup.check_integrity()  # not a kimen vault, or a damaged one: refused before any unlock
    open_store(inv, allow_session=False).close()
    with Vault.open(source_path) as backup, open_metadata(inv) as vault:
        if os.path.samefile(source_path, vault.path):
            raise errors.UsageError(detail="--backup names the vault itself")
        # The snapshot must hold what the copy replaces: the copy never waits for a writer (one
        # that commits meanwhile would be lost, and missing from the snapshot), so a writer at the
        # wrong moment means a new snapshot and another try, within the usual busy timeout.
        from ..vault.sqlite import BUSY_TIMEOUT_MS

        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000  # as long as any write waits for another
        while True:
            vault.wait_for_writers()  # up to the busy timeout itself (`vault_busy`)
            if time.monotonic() >= deadline:
                raise errors.VaultBusy(path=vault.path)
            taken = backup_path(vault.path) if snapshot else None
            try:
                with backed_up(vault, taken) as fingerprint:
                    vault.restore_from(backup, unchanged_since=fingerprint)
            except errors.VaultBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
                continue
            return vault.path, source_path, taken
