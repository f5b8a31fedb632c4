"""The vaults a session daemon holds: unlocked entries (key, store, deadlines) and expiry records.

Identity (docs/session.md, "TTLs"): a key is used only on the vault file it was unwrapped for.
Before every store request `VaultEntry.verify_file` compares a stamp of the file at the canonical
path — device, inode, size, mtime and ctime — with the one last verified:

- another device or inode: the path names another file (replaced by rename): refused;
- the same stamp: nothing wrote the main file since, so SQLite's view is current (writes through
  SQLite go to the `-wal`, which SQLite itself watches through its WAL index);
- any other change: a checkpoint (ours or another process's) or a rewrite in place — another vault
  copied over the file keeps its inode, and SQLite in WAL mode does not notice it: its page cache
  and WAL index still describe the old file. So the vault id is read from the main file alone,
  the `-wal` ignored (`vault.main_file_vault_id`), and must be the unlocked vault's; then the
  connection is reopened (a fresh page cache) and the vault id, wrap id and key epoch are checked
  through it. Only then is the new stamp recorded.

Why a stamp and a second reader rather than SQLite's own change counter: in WAL mode SQLite does
not keep the file change counter current and trusts its WAL index, which a copy over the file
does not touch; a stat is cheap enough for every request, and the reopen costs a millisecond only
when the main file really changed (checkpoints are rare: every ~1000 pages of WAL). The ctime
cannot be set by a process, so restoring mtime does not hide a rewrite; a filesystem whose
timestamps are coarser than the time between two writes of the same size is the limit of this
check (modern Linux kernels give distinct timestamps to a change observed by a stat).

A request during which the stamp moved is checked again afterwards: a read that met a half-copied
file is answered `session_locked` (a replaced vault) or retried once on the fresh connection (the
same vault), never with a value or a `secret_corrupt` from the torn view.
"""

from __future__ import annotations

import threading
from typing import Any

from .. import errors
from ..vault import LocalStore, Vault, file_stamp, main_file_vault_id
from .session import Deadlines, LockedKey, boot_clock, rfc3339, wall_time


class DaemonStore(LocalStore):
    """A local store whose key is refused as soon as the vault was replaced or rekeyed."""

    def check_key(self, header: Any) -> None:
        if (header.vault_id != self._vault_id or header.wrap_id != self._wrap_id
                or header.key_epoch != self._key_epoch):
            raise errors.SessionLocked(vault=self.vault.canonical_path)

    def reopen(self) -> None:
        """A fresh SQLite connection (and page cache) on the same path."""
        fresh = Vault.open(self.vault.canonical_path)
        old, self.vault = self.vault, fresh
        old.close()


class VaultEntry:
    """One unlocked vault: its store (and key), identity, file stamp and deadlines."""

    def __init__(self, path: str, store: DaemonStore, key: LockedKey, deadlines: Deadlines,
                 stamp: tuple[int, ...] | None) -> None:
        self.path = path
        self.store = store
        self.key = key
        self.deadlines = deadlines
        self.unlocked_wall = wall_time(deadlines.unlocked_at)
        vault = store.vault
        self.device, self.inode = vault.device, vault.inode
        self.vault_id_raw = vault.header().vault_id
        self.vault_id = self.vault_id_raw.hex()
        self.stamp = stamp  # taken before the vault was opened: a change during unlock is seen
        self.op_lock = threading.Lock()
        self.alive = True

    def forget(self) -> None:
        """Zero the key and close the vault; waits for a request in flight on this vault."""
        with self.op_lock:
            self._forget_locked()

    def _forget_locked(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.store.forget_key()
        self.store._k_mac = b""  # immutable bytes: dropped, not wiped (docs/session.md)
        self.store.close()

    def verify_file(self) -> None:
        """`SessionLocked` unless the file at the path is still this vault (op_lock held; see the
        module docstring)."""
        stamp = file_stamp(self.path)
        if stamp is None or stamp[:2] != (self.device, self.inode):
            raise errors.SessionLocked(vault=self.path)
        if stamp == self.stamp and not self.store.vault.changed_on_disk():
            return
        file_id = main_file_vault_id(self.path) or main_file_vault_id(self.path)  # once more: a checkpoint
        if file_id != self.vault_id_raw:
            raise errors.SessionLocked(vault=self.path)
        self.store.reopen()
        self.store.check_key(self.store.vault.header())
        self.stamp = stamp

    def changed_since_verified(self) -> bool:
        return file_stamp(self.path) != self.stamp or self.store.vault.changed_on_disk()

    def expired_by(self, now: float) -> str:
        d = self.deadlines
        return "max_ttl" if now >= d.max_at and d.max_at <= d.idle_at else "idle_ttl"

    def state(self) -> dict[str, Any]:
        d = self.deadlines
        now = boot_clock()
        return {
            "vault_path": self.path, "vault_id": self.vault_id, "state": "unlocked",
            "unlocked_at": rfc3339(self.unlocked_wall),
            "idle_expires_at": rfc3339(wall_time(d.idle_at, now)),
            "max_expires_at": rfc3339(wall_time(d.max_at, now)),
            "ttl_seconds": d.ttl, "max_ttl_seconds": d.max_ttl, "mlock": self.key.locked,
        }


class Expired:
    """What the daemon remembers of a vault whose TTL ran out (until lock, unlock or stop)."""

    __slots__ = ("expired_at", "expired_by", "max_ttl", "path", "ttl", "unlocked_at", "vault_id")

    def __init__(self, entry: VaultEntry, now: float) -> None:
        d = entry.deadlines
        self.path = entry.path
        self.vault_id = entry.vault_id
        self.unlocked_at = rfc3339(entry.unlocked_wall)
        self.ttl, self.max_ttl = d.ttl, d.max_ttl
        self.expired_by = entry.expired_by(now)
        self.expired_at = rfc3339(wall_time(d.next_deadline(), now))  # when it ran out, not when noticed

    def error(self) -> errors.KimenError:
        return errors.SessionExpired(vault_path=self.path, expired_at=self.expired_at, expired_by=self.expired_by)

    def state(self) -> dict[str, Any]:
        return {
            "vault_path": self.path, "vault_id": self.vault_id, "state": "expired",
            "unlocked_at": self.unlocked_at, "ttl_seconds": self.ttl, "max_ttl_seconds": self.max_ttl,
            "expired_at": self.expired_at, "expired_by": self.expired_by,
        }
