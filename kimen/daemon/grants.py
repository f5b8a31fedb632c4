"""The daemon's grants: least-privilege tokens for agents (docs/agents.md).

A grant narrows what a request carrying its token may do: one vault, a scope (exact names — a
profile the client resolved when the grant was asked for, so later edits cannot widen it — and/or
globs of `kimen.globs`; an entry without a wildcard is a name), optionally read-only, until
`expires_at` — the earlier of now + TTL and the vault's max deadline, so no grant outlives its
session. The table lives in daemon memory only: grants end when the daemon stops. The daemon keeps
the SHA-256 of each token, never the token, and compares digests with `hmac.compare_digest`.

`GrantTable.authorize` is the one check every request goes through (`TOKEN_RULES` says what each
op needs; an op it does not name is refused to a token holder):

- no token: fine, except a store op while grants are required → `grant_required`;
- `unlock` and `grant_create` ignore a token (the passphrase is the proof);
- a malformed, unknown or revoked token → `grant_invalid`, an expired one → `grant_expired`; both
  fail every op but `status`, `unlock`, `grant_create` and `stop`;
- with a valid token: another vault, or any name outside the scope → `grant_denied` with field
  `denied` (the names outside; nothing is served: all-or-nothing) and `grant_id`, a write under a
  read-only grant → `grant_denied`, `verify` and `sync_state` need the scope `**`; `grant_list` and `grant_revoke`
  see only that grant (`visible`, `revoke`).

A grant counts as used (`last_used_at`, `use_count`) when it authorizes a store op. Times are kept
on the boot clock (`kimen.daemon.session`), the clock of every daemon deadline, and shown as
RFC 3339 UTC. Stdlib only; thread-safe (the daemon serves some ops in worker threads).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from typing import TYPE_CHECKING, Any

from .. import errors
from ..durations import format_time
from ..globs import Glob
from . import tokens
from .session import boot_clock, wall_time

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

# What a token holder may do with each op (the daemon's op table refers to these):
LENIENT = "lenient"  # allowed, even with an invalid or expired token
IGNORED = "ignored"  # the token is not looked at (the passphrase is the proof)
ALLOWED = "allowed"  # allowed with a valid token
OWN = "own"  # allowed with a valid token, narrowed to that grant
NAMES = "names"  # the grant's vault, every name in scope
WRITE = "write"  # the grant's vault, every name in scope, not read-only
WHOLE = "whole"  # the grant's vault, scope `**`
TOKEN_RULES: dict[str, str] = {
    "status": LENIENT, "stop": LENIENT,
    "unlock": IGNORED, "grant_create": IGNORED,
    "lock": ALLOWED,
    "grant_list": OWN, "grant_revoke": OWN,
    "read": NAMES, "digest": NAMES, "read_revision": NAMES,
    "write": WRITE, "restore": WRITE, "purge_history": WRITE,
    "verify": WHOLE, "sync_state": WHOLE,
}
STORE_OPS = frozenset(op for op, rule in TOKEN_RULES.items() if rule in (NAMES, WRITE, WHOLE))

MAX_GRANTS = 4096  # live and expired grants held at once (each mint costs a KDF run)
MAX_SCOPE = 100_000  # names and globs of one grant
MAX_ENTRY_CHARS = 256
_ID_BYTES = 8  # grant ids: 16 hex digits
_WHOLE_VAULT = "**"


class Grant:
    """One grant. `digest` is the SHA-256 of its token; times are on the boot clock."""

    __slots__ = ("created_at", "digest", "expires_at", "globs", "grant_id", "last_used_at", "names",
                 "read_only", "use_count", "vault_path")

    def __init__(self, grant_id: str, digest: bytes, vault_path: str, names: frozenset[str],
                 globs: tuple[Glob, ...], read_only: bool, created_at: float, expires_at: float) -> None:
        self.grant_id = grant_id
        self.digest = digest
        self.vault_path = vault_path
        self.names = names
        self.globs = globs
        self.read_only = read_only
        self.created_at = created_at
        self.expires_at = expires_at
        self.last_used_at: float | None = None
        self.use_count = 0

    def __repr__(self) -> str:  # never the digest
        return f"Grant({self.grant_id!r}, {self.vault_path!r})"

    def covers(self, name: str) -> bool:
        return name in self.names or any(glob.match(name) for glob in self.globs)

    def outside(self, names: Iterable[str]) -> list[str]:
        """The names this grant does not cover, sorted, each once."""
        return sorted({name for name in names if not self.covers(name)})

    @property
    def whole_vault(self) -> bool:
        return any(glob.text == _WHOLE_VAULT for glob in self.globs)

    @property
    def scope(self) -> list[str]:
        """The scope as given: the exact names (sorted), then the globs."""
        return sorted(self.names) + [glob.text for glob in self.globs]

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def describe(self, now: float) -> dict[str, Any]:
        """The grant as `session grants` shows it (never its token or digest)."""

        def shown(at: float | None) -> str | None:
            return None if at is None else format_time(wall_time(at, now))

        return {
            "grant_id": self.grant_id, "vault_path": self.vault_path, "secrets": self.scope,
            "read_only": self.read_only, "created_at": shown(self.created_at),
            "expires_at": shown(self.expires_at), "last_used_at": shown(self.last_used_at),
            "use_count": self.use_count, "expired": self.expired(now),
        }


class Minted:
    """A new grant and its token: the only moment the token exists in the daemon."""

    __slots__ = ("grant", "token")

    def __init__(self, grant: Grant, token: str) -> None:
        self.grant, self.token = grant, token

    def __repr__(self) -> str:  # never the token
        return f"Minted({self.grant!r})"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _denied(grant: Grant, names: Iterable[str], message: str) -> errors.KimenError:
    """`grant_denied`: `denied` the names refused; `grant_id` for the audit record and the holder."""
    return errors.GrantDenied(message=message, denied=sorted(set(names)), grant_id=grant.grant_id)


def _listing(names: list[str], most: int = 10) -> str:
    """`a, b, c` — at most `most` names in a message (field `denied` has them all)."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


class GrantTable:
    """Every grant the daemon holds, and whether it requires one for store ops."""

    def __init__(self, clock: Callable[[], float] = boot_clock, max_grants: int = MAX_GRANTS) -> None:
        self._clock = clock
        self._max = max_grants
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()
        self.required = False
        self._decoy = _digest(tokens.PREFIX)  # compared when the id is unknown: same work either way

    def require(self) -> None:
        """Grant-required mode (`session start --require-grant`): only a daemon stop ends it."""
        self.required = True

    # -- minting, listing, revoking --

    def mint(self, vault_path: str, scope: Iterable[str], *, read_only: bool, ttl: float,
             max_deadline: float) -> Minted:
        """A new grant on `vault_path` for `scope` — exact names (a profile the client resolved when
        the grant was asked for) and globs (`--secret`): an entry without a wildcard is a name —
        expiring at the earlier of now + `ttl` and `max_deadline` (the vault's max deadline, boot
        clock). Empty scope → `grant_scope_empty`; a TTL that is not > 0 → `invalid_ttl`; a vault
        whose session is already over → `session_locked`."""
        entries = list(dict.fromkeys(scope))
        if len(entries) > MAX_SCOPE or any(len(text) > MAX_ENTRY_CHARS for text in entries):
            raise errors.SessionProtocolError(message="grant scope too large")
        if not entries:
            raise errors.GrantScopeEmpty()
        compiled = [Glob(text) for text in entries]
        exact = frozenset(glob.text for glob in compiled if glob.is_literal)
        globs = tuple(glob for glob in compiled if not glob.is_literal)
        if not ttl > 0:
            raise errors.InvalidTtl(detail="the grant TTL must be greater than zero")
        now = self._clock()
        expires_at = min(now + ttl, max_deadline)
        if expires_at <= now:
            raise errors.SessionLocked(vault=vault_path)
        with self._lock:
            self._make_room(now)
            grant_id = os.urandom(_ID_BYTES).hex()
            while grant_id in self._grants:  # pragma: no cover - 64 random bits
                grant_id = os.urandom(_ID_BYTES).hex()
            token = tokens.compose(grant_id, os.urandom(tokens.SECRET_BYTES))
            grant = Grant(grant_id, _digest(token), vault_path, exact, globs, bool(read_only), now, expires_at)
            self._grants[grant_id] = grant
        return Minted(grant, token)

    def _make_room(self, now: float) -> None:
        """Forget the oldest expired grants past the cap (self._lock held); all live → refused."""
        if len(self._grants) < self._max:
            return
        expired = sorted((g for g in self._grants.values() if g.expired(now)), key=lambda g: g.expires_at)
        for grant in expired[: len(self._grants) - self._max + 1]:
            del self._grants[grant.grant_id]
        if len(self._grants) >= self._max:
            raise errors.SessionUnavailable(
                message=f"the session daemon holds {len(self._grants)} live grants; revoke some first",
                hint="list them with `kimen session grants`, revoke with `kimen session revoke ID`")

    def visible(self, grant: Grant | None) -> list[dict[str, Any]]:
        """`grant_list`: every grant, oldest first — or, for a token holder, its own grant only."""
        now = self._clock()
        with self._lock:
            shown = [grant] if grant is not None else sorted(self._grants.values(), key=lambda g: g.created_at)
            return [g.describe(now) for g in shown if self._grants.get(g.grant_id) is g]

    def revoke(self, grant_id: str, grant: Grant | None = None) -> Grant:
        """`grant_revoke`: forget `grant_id` (a token holder only its own: any other id is
        `grant_not_found`, whether or not it exists). Its token is `grant_invalid` from now on."""
        with self._lock:
            found = self._grants.get(grant_id)
            if found is None or (grant is not None and grant.grant_id != grant_id):
                raise errors.GrantNotFound(grant_id=grant_id[:64])
            del self._grants[grant_id]
            return found

    def clear(self) -> None:
        """The daemon stops: every grant ends."""
        with self._lock:
            self._grants.clear()

    def live_count(self) -> int:
        """Grants not yet expired (`status`'s `grant_count`; a live grant keeps the daemon up)."""
        now = self._clock()
        with self._lock:
            return sum(not g.expired(now) for g in self._grants.values())

    # -- checking a request --

    def find(self, token: str) -> Grant | None:
        """The grant `token` belongs to (expired ones included), None when it is malformed,
        unknown or revoked. The digests are compared in constant time."""
        grant_id = tokens.grant_id_of(token)
        if grant_id is None:
            return None
        digest = _digest(token)
        with self._lock:
            grant = self._grants.get(grant_id)
        if not hmac.compare_digest(digest, grant.digest if grant is not None else self._decoy):
            return None
        return grant

    def authorize(self, token: str | None, op: str, *, vault_path: str | None = None,
                  names: Sequence[str] = ()) -> Grant | None:
        """Whether a request may run, given its token: the grant that narrows it (None without a
        token, or where the op ignores or tolerates one); raises the grant reason otherwise.
        `names`: every name the request touches (a write's `mv` gives both of its names)."""
        rule = TOKEN_RULES.get(op)
        if rule == IGNORED:
            return None
        if token is None:
            if self.required and op in STORE_OPS:
                raise errors.GrantRequired()
            return None
        grant = self.find(token)
        now = self._clock()
        if grant is None or grant.expired(now):
            if rule == LENIENT:
                return None
            if grant is None:
                raise errors.GrantInvalid()
            raise errors.GrantExpired(grant_id=grant.grant_id)
        if rule in (LENIENT, ALLOWED, OWN):
            return grant
        if rule not in (NAMES, WRITE, WHOLE):
            raise _denied(grant, (), f"a grant does not allow the op {op[:40]}")
        if vault_path != grant.vault_path:
            raise _denied(grant, names, "the grant is for another vault")
        if rule == WHOLE and not grant.whole_vault:
            raise _denied(grant, (), f"{op} needs a grant for the whole vault (--secret '**')")
        outside = grant.outside(names)
        if outside:
            raise _denied(grant, outside, f"grant does not cover: {_listing(outside)}")
        if rule == WRITE and grant.read_only:
            raise _denied(grant, names, "the grant is read-only")
        with self._lock:
            grant.last_used_at = now
            grant.use_count += 1
        return grant
