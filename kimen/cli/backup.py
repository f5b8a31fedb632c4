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
    record(vault.path, path)
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


# -- what made each backup (`kimen vault backups`) --
#
# A backup's file holds the vault as it was, nothing about why it was made; that is one JSON line
# per backup in `<vault>.backups` (0600, next to the vault, appended): `{"path", "made_by"}`.
# `made_by` is the command's words (`secret import`, `vault rekey`). A missing or unreadable log
# only loses that column.

LOG_SUFFIX = ".backups"


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


def record(vault_path: str, path: str, made_by: str | None = None) -> None:
    import json

    line = json.dumps({"path": os.path.abspath(path), "made_by": made_by or _command_words()}) + "\n"
    try:
        fd = os.open(vault_path + LOG_SUFFIX, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def made_by(vault_path: str) -> dict[str, str]:
    """backup path -> the command that made it, from the log (empty when there is none)."""
    import json

    from ..fsutil import read_limited

    try:
        fd = os.open(vault_path + LOG_SUFFIX, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        data = read_limited(fd, 4 * 1024 * 1024)
    except OSError:
        return {}
    finally:
        os.close(fd)
    found: dict[str, str] = {}
    for line in data.splitlines():
        try:
            doc = json.loads(line)
            found[str(doc["path"])] = str(doc["made_by"])
        except (ValueError, KeyError, TypeError, RecursionError):  # a line edited outside kimen
            continue
    return found


def backup_files(vault_path: str) -> list[str]:
    """Every backup of the vault at `vault_path`: `<vault>.bak.<ns>` next to it, and those the log
    names elsewhere (`--backup-dir`) that still exist; oldest first."""
    import stat

    directory, base = os.path.split(os.path.abspath(vault_path))
    prefix = base + ".bak."
    found = set()
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.name[len(prefix):].isdigit() and entry.is_file(
                        follow_symlinks=False):
                    found.add(entry.path)
    except OSError:
        pass
    for path in made_by(vault_path):
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.add(path)
        except OSError:
            continue
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
    with Vault.open(source_path):
        pass  # not a kimen vault: refused before any unlock
    open_store(inv, allow_session=False).close()
    with Vault.open(source_path) as backup, open_metadata(inv) as vault:
        if os.path.samefile(source_path, vault.path):
            raise errors.UsageError(detail="--backup names the vault itself")
        taken = backup_path(vault.path) if snapshot else None
        with backed_up(vault, taken):
            vault.restore_from(backup)
        return vault.path, source_path, taken
