"""The vaults a session daemon holds: unlocked entries (key, store, deadlines), expiry records,
and the `Registry` of both through which every store request reaches a vault.

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

Locking: `Registry.lock` guards the two maps and `stopping`; each entry's `op_lock` serialises the
requests on one vault. A key is wiped under its `op_lock`, so once `lock` answers no request can
still get a value from it.
"""

from __future__ import annotations

import threading

from .. import errors
from ..durations import format_time
from ..vault import LocalStore, Vault, file_stamp, main_file_vault_id
from .session import Deadlines, LockedKey, boot_clock, wall_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Literal, TypeVar

    from ..vault import Header
    from .protocol import ExpiredState, VaultState

    T = TypeVar("T")


class WouldBlock(Exception):
    """A request served on the event loop would have to wait: its vault is busy with another
    request, or no memory budget is free (internal: the request goes to a worker thread)."""


class DaemonStore(LocalStore):
    """A local store whose key is refused as soon as the vault was replaced or rekeyed."""

    def check_key(self, header: Header) -> None:
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

    def expired_by(self, now: float) -> Literal["idle_ttl", "max_ttl"]:
        d = self.deadlines
        return "max_ttl" if now >= d.max_at and d.max_at <= d.idle_at else "idle_ttl"

    def state(self) -> VaultState:
        d = self.deadlines
        now = boot_clock()
        return {
            "vault_path": self.path, "vault_id": self.vault_id, "state": "unlocked",
            "unlocked_at": format_time(self.unlocked_wall),
            "idle_expires_at": format_time(wall_time(d.idle_at, now)),
            "max_expires_at": format_time(wall_time(d.max_at, now)),
            "ttl_seconds": d.ttl, "max_ttl_seconds": d.max_ttl, "mlock": self.key.locked,
        }


class Expired:
    """What the daemon remembers of a vault whose TTL ran out (until lock, unlock or stop)."""

    __slots__ = ("expired_at", "expired_by", "max_ttl", "path", "ttl", "unlocked_at", "vault_id")

    def __init__(self, entry: VaultEntry, now: float) -> None:
        d = entry.deadlines
        self.path = entry.path
        self.vault_id = entry.vault_id
        self.unlocked_at = format_time(entry.unlocked_wall)
        self.ttl, self.max_ttl = d.ttl, d.max_ttl
        self.expired_by = entry.expired_by(now)
        self.expired_at = format_time(wall_time(d.next_deadline(), now))  # when it ran out, not when noticed

    def error(self) -> errors.KimenError:
        return errors.SessionExpired(vault_path=self.path, expired_at=self.expired_at, expired_by=self.expired_by)

    def state(self) -> ExpiredState:
        return {
            "vault_path": self.path, "vault_id": self.vault_id, "state": "expired",
            "unlocked_at": self.unlocked_at, "ttl_seconds": self.ttl, "max_ttl_seconds": self.max_ttl,
            "expired_at": self.expired_at, "expired_by": self.expired_by,
        }


class Registry:
    """Every vault this daemon holds, by canonical path: unlocked entries and expiry records."""

    def __init__(self) -> None:
        self.entries: dict[str, VaultEntry] = {}
        self.expired: dict[str, Expired] = {}
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)  # the deadline timer: a deadline moved, or stop
        self.stopping = False  # set once: nothing new is held after it
        self.last_held = boot_clock()  # when the last entry went

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify_all()

    def add(self, entry: VaultEntry) -> None:
        """Hold a newly unlocked vault (replacing the key held for its path, or its expiry record);
        once stopping, its key is forgotten instead."""
        with self.lock:
            if self.stopping:
                old: VaultEntry | None = entry
            else:
                old = self.entries.get(entry.path)
                self.entries[entry.path] = entry
                self.expired.pop(entry.path, None)
                self.wake.notify_all()
        if old is not None:
            old.forget()

    def lock_all(self) -> bool:
        """Forget every key and expiry record; whether anything was held."""
        with self.lock:
            entries = list(self.entries.values())
            held = bool(entries or self.expired)
            self.entries.clear()
            self.expired.clear()
            self.last_held = boot_clock()
        for entry in entries:
            entry.forget()
        return held

    def lock_vault(self, path: str) -> bool:
        """Forget one vault's key (or its expiry record); whether the daemon held it."""
        with self.lock:
            entry = self.entries.pop(path, None)
            record = self.expired.pop(path, None)
            if not self.entries:
                self.last_held = boot_clock()
        if entry is not None:
            entry.forget()
        return entry is not None or record is not None

    def states(self) -> tuple[list[VaultState | ExpiredState], bool | None]:
        """Every vault held, and whether all held keys are mlocked (None when none is held)."""
        self._expire_now()
        with self.lock:
            vaults: list[VaultState | ExpiredState] = [e.state() for e in self.entries.values()]
            vaults += [x.state() for x in self.expired.values()]
            mlock = all(e.key.locked for e in self.entries.values()) if self.entries else None
        return vaults, mlock

    def refresh(self, path: str, *, blocking: bool) -> None:
        """Check the identity of `path`'s entry, if one is held (`status` with a vault path); skipped
        when the vault is busy: the next store request checks it."""
        entry = self.entry(path, required=False)
        if entry is not None and entry.op_lock.acquire(blocking=blocking):
            try:
                self._check_identity(entry)
            except errors.SessionLocked:
                pass
            finally:
                entry.op_lock.release()

    # -- deadlines (the timer thread) --

    def tick(self, now: float) -> tuple[list[VaultEntry], float | None, float] | None:
        """Move the entries whose TTL ran out to the expiry records. Returns (those entries, whose
        keys the caller forgets; since when nothing is held, or None; the next deadline), or None
        once stopping."""
        with self.lock:
            if self.stopping:
                return None
            expired = [self._expire_locked(entry, now) for entry in list(self.entries.values())
                       if entry.deadlines.expired(now)]
            idle_since = None if self.entries else self.last_held
            deadline = min([e.deadlines.next_deadline() for e in self.entries.values()], default=float("inf"))
        return expired, idle_since, deadline

    def wait(self, timeout: float) -> None:
        """Sleep until `timeout` passes, a deadline moves or the daemon stops."""
        with self.lock:
            if not self.stopping:
                self.wake.wait(max(timeout, 0.01))

    def _expire_locked(self, entry: VaultEntry, now: float) -> VaultEntry:
        """Move an entry whose TTL ran out to the expiry records (self.lock held); the caller
        forgets its key."""
        if self.entries.get(entry.path) is entry:
            del self.entries[entry.path]
            self.expired[entry.path] = Expired(entry, now)
            if not self.entries:
                self.last_held = now
        return entry

    def _expire_now(self) -> None:
        now = boot_clock()
        with self.lock:
            gone = [self._expire_locked(e, now) for e in list(self.entries.values()) if e.deadlines.expired(now)]
        for entry in gone:
            _retire(entry)

    # -- store access --

    def entry(self, path: str, *, required: bool = True) -> VaultEntry | None:
        """The unlocked entry for `path`; `SessionExpired` / `SessionLocked` when required and none."""
        with self.lock:
            entry = self.entries.get(path)
            expired = None
            if entry is not None and entry.deadlines.expired():
                expired = self._expire_locked(entry, boot_clock())
                entry = None
            record = self.expired.get(path)
        if expired is not None:
            _retire(expired)
        if entry is None and required:
            raise record.error() if record is not None else errors.SessionLocked(vault=path)
        return entry

    def _check_identity(self, entry: VaultEntry) -> None:
        """The file is still this vault (`VaultEntry.verify_file`); else forget the key (op_lock held)."""
        if entry.alive:
            try:
                entry.verify_file()
                return
            except errors.KimenError:
                pass
        self._drop(entry)
        raise errors.SessionLocked(vault=entry.path)

    def _drop(self, entry: VaultEntry) -> None:
        """Forget `entry` (its op_lock is held by the caller)."""
        with self.lock:
            if self.entries.get(entry.path) is entry:
                del self.entries[entry.path]
        entry._forget_locked()

    def with_store(self, path: str, fn: Callable[[DaemonStore], T], *, blocking: bool = True, retry: bool = False,
                   discard: Callable[[T], None] | None = None) -> T:
        """Run `fn(store)` on the vault at `path` under its op_lock, its identity checked before and
        — when the file changed meanwhile — after (with `retry`, a read is then run once more).
        `discard(result)` releases a result that is not returned. `WouldBlock` when not `blocking`
        and the vault is busy."""
        entry = self.entry(path)
        assert entry is not None
        if not entry.op_lock.acquire(blocking=blocking):
            raise WouldBlock()
        try:
            if not entry.alive or entry.deadlines.expired():  # expired (or locked) since the lookup
                with self.lock:
                    if entry.alive:
                        self._expire_locked(entry, boot_clock())
                    record = self.expired.get(path)
                entry._forget_locked()
                raise record.error() if record is not None else errors.SessionLocked(vault=path)
            for attempt in (1, 2):
                self._check_identity(entry)
                try:
                    result = fn(entry.store)
                except errors.SessionLocked:  # vault id, wrap id or key epoch changed under the key
                    self._drop(entry)
                    raise
                except errors.KimenError:
                    if not entry.changed_since_verified():
                        raise
                    self._check_identity(entry)  # the file moved under the request: locked if replaced
                    if retry and attempt == 1:
                        continue
                    raise
                if entry.changed_since_verified():
                    try:
                        self._check_identity(entry)
                    except errors.SessionLocked:
                        if discard is not None:
                            discard(result)
                        raise
                    if retry and attempt == 1:  # the same vault, reopened: read it again
                        if discard is not None:
                            discard(result)
                        continue
                break
            entry.deadlines.touch()
        finally:
            entry.op_lock.release()
        return result


def _retire(entry: VaultEntry) -> None:
    """Forget an entry already out of the registry without waiting for a request in flight."""
    if entry.op_lock.acquire(blocking=False):
        try:
            entry._forget_locked()
        finally:
            entry.op_lock.release()
    else:  # the request in flight finishes first (it was admitted before the deadline)
        threading.Thread(target=entry.forget, daemon=True).start()
