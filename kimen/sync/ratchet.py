"""The local sync state outside the vault: `<state>/sync/<remote_id>/` (docs/sync.md, "What
this machine keeps").

- `ratchet.json`: the highest head accepted for the remote (`remote_id`, `seq`, `head_id`,
  `generation`, `epoch`, `record_hash`, `updated_at`). It only rises: `raise_to` never lowers it or
  moves it sideways to another head of the same seq; only `accept_fork` (an explicit
  `--accept-fork`) re-anchors it. Living outside the vault, it stops a restored old vault from
  rolling the team back; every command starts from `known_head` = the larger of it and the
  vault's sync state.
- `head.age`: the bytes of that head (ciphertext), written just before the ratchet, so that
  `--restore-head` and an offline `sync log` have it. A reader checks that it is the ratchet's head.
- `head-rev.<rev>`: a hard link of `head.age` named by its remote rev (SHA-256 of the bytes), made once
  `head.age` is complete. A name given to a file that is never written again, so its bytes are
  always the ones of its rev: `sync status` compares the remote's head file with the link of the
  rev its vault last accepted instead of hashing it (`same_as_kept`). Only the newest is kept.
- `ack.json`: the `members_fp` and the members last acknowledged (`sync members ack`).

Files are 0600 and replaced atomically (`kimen.fsutil`), the directories 0700. A file that is not
what kimen wrote is refused (`sync_failed`), never silently ignored: ignoring the ratchet would
lower the protection it gives.
"""

from __future__ import annotations

import os

from .. import errors
from ..durations import format_time
from ..fsutil import atomic_write, directory_problem, make_private_dirs, read_regular, unlink_quietly
from ..paths import state_dir
from ..sigfmt import canonical, loads
from ..values import Record
from .base import KnownHead, Member, is_lower_hex
from .transport import MAX_HEAD_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .base import SyncState

RATCHET = "ratchet.json"
HEAD = "head.age"
REV_LINK = "head-rev."  # + the kept head's remote rev (64 hex digits)
ACK = "ack.json"
_MAX_JSON = 4 * 1024 * 1024
_RATCHET_KEYS = frozenset({"remote_id", "seq", "head_id", "generation", "epoch", "record_hash", "updated_at"})
_ACK_KEYS = frozenset({"members_fp", "members"})


def check_remote_id(remote_id: str) -> str:
    if not is_lower_hex(remote_id, 32):
        raise errors.InvalidRemoteId(remote_id=str(remote_id)[:40])
    return remote_id


def known_head(vault: SyncState | None, ratchet: KnownHead | None) -> KnownHead | None:
    """The highest head accepted: the larger seq of the vault's sync state and the ratchet; on a
    tie the ratchet's (the one a restored vault cannot roll back)."""
    if vault is None:
        return ratchet
    if ratchet is not None and ratchet.seq >= vault.head_seq:
        return ratchet
    return KnownHead(remote_id=vault.remote_id, seq=vault.head_seq, head_id=vault.head_id,
                     generation=vault.head_generation, epoch=vault.epoch, record_hash=vault.record_hash)


class Ack(Record):
    """The membership last acknowledged: its fingerprint and members."""

    __slots__ = ("members", "members_fp")
    members_fp: str
    members: tuple[Member, ...]

    def __init__(self, members_fp: str, members: tuple[Member, ...]) -> None:
        self._init(members_fp=members_fp, members=members)


def _int(value: Any, what: str, path: str) -> int:
    if type(value) is not int or value < 0:
        raise _damaged(path, f"{what} is not a count")
    return value


def _damaged(path: str, detail: str) -> errors.KimenError:
    return errors.SyncFailed(detail=f"{path}: {detail}",
                             hint="kimen wrote this file; remove it only if you know why it changed "
                                  "(that lowers the rollback protection to the vault's own sync state)")


class SyncStateDir:
    """`<state>/sync/<remote_id>/` of one remote."""

    def __init__(self, remote_id: str, env: Mapping[str, str] | None = None, *, base: str | None = None) -> None:
        self.remote_id = check_remote_id(remote_id)
        root = base if base is not None else os.path.join(state_dir(os.environ if env is None else env), "sync")
        self.path = os.path.join(root, remote_id)

    def __repr__(self) -> str:
        return f"SyncStateDir({self.path!r})"

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _ensure(self) -> None:
        if not os.path.lexists(self.path):
            try:
                make_private_dirs(self.path)
            except OSError as exc:
                raise errors.SyncFailed(detail=f"{self.path}: {exc.strerror}") from None
        problem = directory_problem(self.path)
        if problem:
            raise errors.SyncFailed(detail=f"sync state directory {self.path} {problem}")

    def _read(self, name: str, limit: int) -> bytes | None:
        path = self._file(name)
        if not os.path.lexists(self.path):
            return None
        problem = directory_problem(self.path)
        if problem:
            raise errors.SyncFailed(detail=f"sync state directory {self.path} {problem}")
        try:
            return read_regular(path, limit, lambda p: _damaged(path, p), missing=lambda: FileNotFoundError())
        except FileNotFoundError:
            return None

    def _read_json(self, name: str, keys: frozenset[str]) -> dict[str, Any] | None:
        data = self._read(name, _MAX_JSON)
        if data is None:
            return None
        path = self._file(name)
        try:
            doc = loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            raise _damaged(path, "not valid JSON") from None
        if not isinstance(doc, dict) or set(doc) != keys:
            raise _damaged(path, f"expected exactly the keys {', '.join(sorted(keys))}")
        return doc

    def _write(self, name: str, data: bytes) -> None:
        self._ensure()
        atomic_write(self._file(name), data, mode=0o600, failed=errors.SyncFailed)

    # -- the ratchet -----------------------------------------------------------------------------

    def read_ratchet(self) -> KnownHead | None:
        doc = self._read_json(RATCHET, _RATCHET_KEYS)
        if doc is None:
            return None
        path = self._file(RATCHET)
        if doc["remote_id"] != self.remote_id:
            raise _damaged(path, "it names another remote")
        for key in ("head_id", "record_hash"):
            if not is_lower_hex(doc[key], 64):
                raise _damaged(path, f"{key} is not 64 hex digits")
        return KnownHead(remote_id=self.remote_id, seq=_int(doc["seq"], "seq", path), head_id=doc["head_id"],
                         generation=_int(doc["generation"], "generation", path),
                         epoch=_int(doc["epoch"], "epoch", path), record_hash=doc["record_hash"])

    def _store(self, known: KnownHead, head: bytes | None) -> None:
        if known.remote_id != self.remote_id:
            raise ValueError("the head belongs to another remote")
        if head is not None:
            self._write(HEAD, head)
            self._link_rev(head)
        doc = {"remote_id": known.remote_id, "seq": known.seq, "head_id": known.head_id,
               "generation": known.generation, "epoch": known.epoch, "record_hash": known.record_hash,
               "updated_at": format_time()}
        self._write(RATCHET, canonical(doc) + b"\n")

    def raise_to(self, known: KnownHead, head: bytes | None = None) -> bool:
        """Raise the ratchet to `known` (and keep `head`, its bytes) when it is higher than the
        ratchet; returns whether it moved. Never lowers it, never replaces a head of the same seq."""
        current = self.read_ratchet()
        if current is not None and known.seq <= current.seq:
            return False
        self._store(known, head)
        return True

    def accept_fork(self, known: KnownHead, head: bytes | None = None) -> KnownHead | None:
        """Re-anchor the ratchet on `known` whatever it held (`--accept-fork`); returns the old one."""
        previous = self.read_ratchet()
        self._store(known, head)
        return previous

    def read_head(self) -> bytes | None:
        """The bytes of the ratchet's head (ciphertext), when kept."""
        return self._read(HEAD, MAX_HEAD_BYTES)

    def _link_rev(self, head: bytes) -> None:
        """`head-rev.<rev>` for the `head.age` just written (`head`), the older ones removed. Best
        effort: without it (a filesystem without hard links) `sync status` hashes the head. The
        rev is computed here from the very bytes written, not taken from the caller: the link's name
        is what `sync status` trusts."""
        from .base import remote_rev

        name = REV_LINK + remote_rev(head)
        try:
            os.link(self._file(HEAD), self._file(name), follow_symlinks=False)
        except OSError:  # already there (the same rev is the same bytes), or no hard links here
            pass
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        for other in names:
            if other != name and other.startswith(REV_LINK) and is_lower_hex(other[len(REV_LINK):], 64):
                unlink_quietly(self._file(other))

    def same_as_kept(self, data: bytes, rev: str) -> bool:
        """Whether `data` is, byte for byte, the kept head of remote rev `rev` (`head-rev.<rev>`): then
        its rev is `rev` without hashing it. False when no such head is kept."""
        if not is_lower_hex(rev, 64):
            return False
        try:
            kept = read_regular(self._file(REV_LINK + rev), MAX_HEAD_BYTES, OSError, follow_symlinks=False)
        except OSError:
            return False
        return kept == data

    # -- acknowledged members --------------------------------------------------------------------

    def read_ack(self) -> Ack | None:
        doc = self._read_json(ACK, _ACK_KEYS)
        if doc is None:
            return None
        path = self._file(ACK)
        if not is_lower_hex(doc["members_fp"], 64):
            raise _damaged(path, "members_fp is not 64 hex digits")
        members = doc["members"]
        if not isinstance(members, list):
            raise _damaged(path, "members is not a list")
        try:
            parsed = tuple(Member(m["id"], m["role"], m["recipient"], m["signer"], tuple(m["scope"]))
                           for m in members)
        except (TypeError, KeyError):
            raise _damaged(path, "a member is malformed") from None
        return Ack(doc["members_fp"], parsed)

    def write_ack(self, members_fp: str, members: Sequence[Member]) -> None:
        if not is_lower_hex(members_fp, 64):
            raise ValueError("members_fp is 64 hex digits")
        self._write(ACK, canonical({"members_fp": members_fp, "members": [m.to_json() for m in members]}) + b"\n")
