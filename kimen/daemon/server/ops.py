"""The ops the daemon answers: one table of handlers, and the request path from frame to reply.

`Service.handle` takes one decoded request to one encoded `Reply`, in fixed steps:

1. `requests.check`: the op and every field this version knows have their types, or
   `session_protocol_error` / `session_version_mismatch` before any handler runs;
2. the token: `GrantTable.authorize` (kimen.daemon.grants) checks the token a request carries —
   on every request that carries one, whether or not grants are required — and gives the grant
   that narrows it; `grant_required`, `grant_invalid`, `grant_expired` or `grant_denied` otherwise;
3. the audit file is checked to be writable (`AuditLog.ready`): a request is never served when
   its record could not be written;
4. the op's row in `OPS`: its handler, where it runs and whether it ends the daemon; the handler
   returns the fields of the success response (or a `ReadResult`);
5. the audit record (kimen.daemon.audit): one line with the op, the names (never values), the
   grant and the outcome (`ok` or the reason) — before the response is sent. A record that cannot
   be written turns the answer into `audit_unavailable` (fail closed: a read returns no value);
6. the response encoded — an error as `{reason, message, ...}`, any other exception as
   `internal_error` with its type name only.

Broken frames, oversize prefixes, slow frames and refused peers never reach `handle`: the event
loop records them (`AuditLog.refusal`, folded per outcome).

Where an op runs (`Op.inline`): `status` and `read` are answered on the event loop, no thread
hand-off on the hot path, given `blocking=False`; when they would wait (a vault busy with another
request, no memory budget) they raise `WouldBlock` and run again in a worker thread. Every other op
may wait (a KDF, a write behind another, forgetting a key in use) and always runs in a worker.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading

from ... import errors
from ...sensitive import Sensitive
from ...store import HISTORY_KEEP, HISTORY_KEEP_MAX, Change, RestoreResult, WriteResult
from ...vault import Vault
from ...vault.schema import HISTORY_OPS
from .. import protocol, requests
from ..audit import NAMES_FIELD, Peer, request_names
from ..grants import GrantTable
from ..session import DEFAULT_MAX_TTL, DEFAULT_TTL, Deadlines, LockedKey, boot_clock, ttl_problem
from ..vaults import DaemonStore, VaultEntry, WouldBlock, file_stamp
from .limits import KDF_SLOTS, SMALL_FRAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ...values import SecretValue
    from ..audit import AuditLog
    from ..grants import Grant
    from ..protocol import Request, Status
    from ..vaults import Registry
    from .limits import Budget

    Answer = dict[str, Any]  # the fields of a success response
    Handler = Callable[["Service", Request, "Grant | None", bool], "Answer | ReadResult"]

_CLOSING_REASONS = frozenset({"session_protocol_error", "frame_too_large"})
DEFAULT_GRANT_TTL = 10 * 60
# ops whose names (`audit.request_names`) the token's scope must cover: every store op that names
# secrets (a write's are in its changes); minting a grant is checked by its passphrase instead
_NAMED_OPS = (frozenset(NAMES_FIELD) | {"write"}) - {"grant_create"}
_AUDIT = "_audit"  # a handler's extra audit fields (popped before the response is encoded)


class Reply:
    """An encoded response: its chunks, whether it succeeded, the budget it holds, what follows."""

    __slots__ = ("chunks", "close", "held", "ok", "stop")

    def __init__(self, chunks: list[bytes], ok: bool, *, held: int = 0, close: bool = False,
                 stop: bool = False) -> None:
        self.chunks, self.ok, self.held, self.close, self.stop = chunks, ok, held, close, stop


class ReadResult:
    """The values of a `read`, and the budget their response reserved."""

    __slots__ = ("held", "values")

    def __init__(self, values: dict[str, SecretValue], held: int) -> None:
        self.values, self.held = values, held


class Op:
    """One row of `OPS`: the handler, where it runs (`inline`: tried on the event loop first) and
    whether the daemon ends once its response is sent (`stops`)."""

    __slots__ = ("handler", "inline", "stops")

    def __init__(self, handler: Handler, *, inline: bool = False, stops: bool = False) -> None:
        self.handler, self.inline, self.stops = handler, inline, stops


class Service:
    """What the handlers work with: the vaults held, the byte budget, the KDF slots, the grants,
    the audit log (None: not recorded — only in-process tests run without one), and `release`,
    which forgets every key and grant and removes the socket (`stop`)."""

    def __init__(self, registry: Registry, budget: Budget, *, pid: int, mlock_ok: bool,
                 release: Callable[[], None], audit: AuditLog | None = None,
                 grants: GrantTable | None = None) -> None:
        self.registry = registry
        self.budget = budget
        self.pid = pid
        self.mlock_ok = mlock_ok
        self.release = release
        self.audit = audit
        self.grants = GrantTable() if grants is None else grants
        self.kdf_slots = threading.BoundedSemaphore(KDF_SLOTS)  # argon2 may take up to 2 GiB each

    def inline(self, request: dict[str, Any]) -> bool:
        """Whether the event loop may try `request` itself (an unknown op is refused inline)."""
        op = OPS.get(request["op"]) if type(request.get("op")) is str else None
        return op is None or op.inline

    def handle(self, request: dict[str, Any], peer: Peer | None = None, *, blocking: bool = True) -> Reply:
        """One request -> one encoded reply, its audit record written first. `blocking=False`
        (the event loop) raises `WouldBlock` instead of waiting for a vault that is busy with
        another request (nothing is recorded then: the worker thread serves it again)."""
        rid = requests.request_id(request)
        grant: Grant | None = None
        audit_fields: dict[str, Any] = {}
        try:
            name = requests.check(request)
            op = OPS[name]
            checked: Request = request  # type: ignore[assignment]  # requests.check accepted its fields
            grant = self.grants.authorize(request.get("token"), name, vault_path=request.get("vault_path"),
                                          names=request_names(request) if name in _NAMED_OPS else ())
            if self.audit is not None:
                self.audit.ready()
            try:
                result = op.handler(self, checked, grant, blocking)
            except WouldBlock:
                if grant is not None and name in _NAMED_OPS:
                    self.grants.unuse(grant)  # counted again when the worker serves it
                raise
            if isinstance(result, ReadResult):
                try:
                    self._record(peer, request, "ok", grant)
                    return Reply(_read_frame(rid, result.values), True, held=result.held)
                except BaseException:
                    self.budget.give(result.held)
                    raise
            audit_fields = result.pop(_AUDIT, None) or {}
            self._record(peer, request, "ok", grant, **audit_fields)
            return Reply([protocol.encode({"v": protocol.PROTOCOL, "id": rid, "ok": True, **result})], True,
                         stop=op.stops)
        except WouldBlock:
            raise
        except errors.KimenError as err:
            return self._refuse(peer, request, rid, err, grant)
        except Exception as exc:  # a bug must not kill the daemon; the type name only, never the text
            return self._refuse(peer, request, rid, errors.InternalError(type=type(exc).__name__), grant)

    def _record(self, peer: Peer | None, request: dict[str, Any], outcome: str, grant: Grant | None,
                grant_id: str | None = None) -> None:
        """The request's audit line (`AuditUnavailable` when it cannot be written). A frame that
        is not a valid request is recorded like a broken frame: `op` null, folded per outcome."""
        if self.audit is not None and outcome in _CLOSING_REASONS:
            self.audit.refusal(peer or Peer(), outcome)
        elif self.audit is not None:
            found = grant.grant_id if grant is not None else grant_id
            self.audit.request(peer or Peer(), request, outcome=outcome, grant_id=found)

    def _refuse(self, peer: Peer | None, request: dict[str, Any], rid: str | int | None, err: errors.KimenError,
                grant: Grant | None) -> Reply:
        """The error reply, its audit line written first; when that line cannot be written the
        answer is `audit_unavailable` instead."""
        if err.reason != "audit_unavailable":
            granted = err.fields.get("grant_id")
            try:
                self._record(peer, request, err.reason, grant, granted if isinstance(granted, str) else None)
            except errors.KimenError as failed:
                err = failed
        return error_reply(rid, err)

    def status(self) -> Status:
        vaults, mlock = self.registry.states()
        return {
            "running": True, "pid": self.pid, "version": protocol.VERSION, "protocol": protocol.PROTOCOL,
            "require_grant": self.grants.required, "mlock": self.mlock_ok if mlock is None else mlock,
            "vaults": vaults, "grant_count": self.grants.live_count(),
        }


def error_reply(rid: str | int | None, err: errors.KimenError) -> Reply:
    """The error frame of `err` (a broken frame's also closes the connection)."""
    try:
        frame = protocol.encode({"v": protocol.PROTOCOL, "id": rid, **protocol.error_fields(err)})
    except Exception:  # pragma: no cover - error fields are plain strings
        frame = INTERNAL_ERROR
    return Reply([frame], False, close=err.reason in _CLOSING_REASONS)


INTERNAL_ERROR = protocol.encode({"v": protocol.PROTOCOL, "id": None,
                                  **protocol.error_fields(errors.InternalError(type="Exception"))})


# -- the ops --


def op_status(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    path = request.get("vault_path")
    if path is not None:
        svc.registry.refresh(path, blocking=blocking)
    return dict(svc.status())


def op_stop(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """Keys and socket go now; the event loop exits once this response is sent."""
    svc.release()
    return {"stopping": True}


def op_lock(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """`held`: whether the daemon held that vault (any vault without `vault_path`) — the client
    says so when it did not, and names the vaults that remain unlocked."""
    path = request.get("vault_path")
    held = svc.registry.lock_all() if path is None else svc.registry.lock_vault(path)
    return {"held": held, **svc.status()}


def op_unlock(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    path = _vault_path(request, canonical=True)
    ttl = request.get("ttl", DEFAULT_TTL)
    max_ttl = request.get("max_ttl", DEFAULT_MAX_TTL)
    problem = ttl_problem(ttl, max_ttl)
    if problem:
        raise errors.InvalidTtl(detail=problem)
    passphrase = _passphrase(request)
    stamp = file_stamp(path)
    vault = Vault.open(path)
    try:
        with passphrase, svc.kdf_slots:
            header = vault.header()  # the store remembers the key record the key comes from
            key = vault.unwrap_key(passphrase, header)  # the KDF, in a worker thread
        locked = LockedKey(key)
        store = DaemonStore(vault, locked, stale_error=errors.SessionLocked, header=header)
        if vault.header().wrap_id != header.wrap_id:  # rekeyed during the KDF: that key may be gone
            locked.wipe()
            raise errors.VaultFailed(detail="the vault was rekeyed while it was being unlocked; run "
                                            "`kimen session start` again", path=path)
    except BaseException:
        vault.close()
        raise
    entry = VaultEntry(path, store, locked, Deadlines(ttl, max_ttl), stamp)
    svc.registry.add(entry)
    if request.get("require_grant"):  # only a daemon stop ends grant-required mode
        svc.grants.require()
    return {"vault": entry.state(), "pid": svc.pid}


def op_grant_create(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """Mint a grant on a vault unlocked in this session. The vault's passphrase is the proof (a
    session alone never mints or widens a grant): the KDF runs on the vault file, whose identity
    must be the unlocked one's. The token is in this response only; the daemon keeps its hash."""
    path = _vault_path(request)
    ttl = request.get("ttl", DEFAULT_GRANT_TTL)
    if not (ttl > 0):
        raise errors.InvalidTtl(detail="the grant TTL must be greater than zero")
    passphrase = _passphrase(request)
    with passphrase:
        entry = svc.registry.entry(path)  # session_locked / session_expired when not unlocked here
        assert entry is not None
        vault = Vault.open(path)
        try:
            if vault.header().vault_id != entry.vault_id_raw:
                raise errors.SessionLocked(vault=path)
            with svc.kdf_slots:
                key = vault.unwrap_key(passphrase)  # the KDF, in a worker thread; wrong_passphrase
            key.wipe()
        finally:
            vault.close()
    entry = svc.registry.entry(path)  # still unlocked after the KDF, and its max deadline now
    assert entry is not None
    minted = svc.grants.mint(path, request["secrets"], read_only=bool(request.get("read_only")), ttl=float(ttl),
                             max_deadline=entry.deadlines.max_at)
    described = minted.grant.describe(boot_clock())
    return {"grant_id": minted.grant.grant_id, "token": minted.token, "expires_at": described["expires_at"],
            "created_at": described["created_at"], "vault_path": path, "secrets": described["secrets"],
            "read_only": minted.grant.read_only, _AUDIT: {"grant_id": minted.grant.grant_id}}


def op_grant_list(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """Every grant, oldest first (a token holder: its own only). Never a token or its hash."""
    return {"grants": svc.grants.visible(grant)}


def op_grant_revoke(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """Forget a grant: its token is `grant_invalid` from now on (a token holder: its own only)."""
    gone = svc.grants.revoke(request["grant_id"], grant)
    return {"grant_id": gone.grant_id, _AUDIT: {"grant_id": gone.grant_id}}


def op_read(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> ReadResult:
    """Values as one response; its size is bounded from the stored sizes before any value
    is decrypted (`frame_too_large` past the frame limit), and a large one reserves its
    bytes from the budget first (waiting up to 5 s in a worker)."""
    names = request["names"]
    if len(names) > protocol.READ_BATCH:
        raise errors.SessionProtocolError(message="too many names in one read")

    def read(store: DaemonStore) -> ReadResult:
        sizes = store.vault.sizes(names)
        estimate = 64 + sum(protocol.read_item_size(n, sizes.get(n, 0)) for n in dict.fromkeys(names))
        if estimate > protocol.MAX_FRAME:
            raise errors.FrameTooLarge(message="session frame too large: read fewer names at once")
        held = estimate if estimate > SMALL_FRAME else 0
        if held and not svc.budget.take(held, protocol.FRAME_TIMEOUT if blocking else 0):
            if not blocking:
                raise WouldBlock()
            raise errors.SessionUnavailable(message="the session daemon is busy; retry")
        try:
            return ReadResult(store.read(names), held)
        except BaseException:
            svc.budget.give(held)
            raise

    return svc.registry.with_store(_vault_path(request), read, blocking=blocking, retry=True,
                                   discard=lambda result: svc.budget.give(result.held))


def op_write(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    changes = [_change(item) for item in request["changes"]]
    if_generation = request.get("if_generation")
    if request.get("baseline") is not None:
        raise errors.SessionUnsupported(message="sync baselines through a session are not supported yet")
    history_op = request.get("history_op")
    if history_op is not None and history_op not in HISTORY_OPS:
        raise errors.SessionProtocolError(message="unknown history_op")
    keep = _history_keep(request)

    def write(store: DaemonStore) -> tuple[WriteResult, str | None]:
        store.history_keep = keep  # this request's setting (under the vault's op lock)
        return store.write(changes, if_generation=if_generation, history_op=history_op), store.vault.take_migrated()

    result, migrated = svc.registry.with_store(_vault_path(request), write)
    return _migrated({"generation": result.generation, "results": [
        {"op": r.op, "name": r.name, "revision": r.revision, "created": r.created, "new_name": r.new_name}
        for r in result.results]}, migrated)


def _migrated(answer: Answer, backup: str | None) -> Answer:
    """A change that migrated the vault's schema says where the backup went: the client warns
    `vault_migrated` as a local change does."""
    if backup is not None:
        answer["migrated_backup"] = backup
    return answer


def _history_keep(request: Request) -> int:
    """The client's `history.keep` (its config), the default when it sends none."""
    keep = request.get("history_keep", HISTORY_KEEP)
    if not 0 <= keep <= HISTORY_KEEP_MAX:
        raise errors.SessionProtocolError(message=f"history_keep must be from 0 to {HISTORY_KEEP_MAX}")
    return keep


def op_verify(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    svc.registry.with_store(_vault_path(request), lambda store: store.verify(), retry=True)
    return {"integrity": "ok"}


def op_read_revision(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """An older value of one name (a value of at most 1 MiB: always a small frame)."""
    name, revision = request["name"], request["revision"]
    value = svc.registry.with_store(_vault_path(request), lambda store: store.read_revision(name, revision),
                                    retry=True)
    return {"name": value.name, "revision": value.revision,
            "value_b64": binascii.b2a_base64(value.value, newline=False).decode()}


def op_restore(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    name, revision = request["name"], request["revision"]
    keep = _history_keep(request)

    def restore(store: DaemonStore) -> tuple[RestoreResult, str | None]:
        store.history_keep = keep  # this request's setting (under the vault's op lock)
        return store.restore(name, revision), store.vault.take_migrated()

    result, migrated = svc.registry.with_store(_vault_path(request), restore)
    return _migrated({"name": result.name, "from_revision": result.from_revision, "revision": result.revision,
                      "generation": result.generation, "unchanged": result.unchanged}, migrated)


def op_purge_history(svc: Service, request: Request, grant: Grant | None, blocking: bool) -> Answer:
    """The history of `names` (always named, so a grant checks each; the client lists every name
    for "all")."""
    names = request["names"]
    if len(names) > protocol.READ_BATCH:
        raise errors.SessionProtocolError(message="too many names in one purge_history")
    count, migrated = svc.registry.with_store(_vault_path(request),
                                              lambda store: (store.purge_history(names), store.vault.take_migrated()))
    return _migrated({"count": count}, migrated)


# op -> handler and where it runs; `kimen.daemon.requests.OPS` holds each op's fields
OPS: dict[str, Op] = {
    "status": Op(op_status, inline=True),
    "read": Op(op_read, inline=True),
    "unlock": Op(op_unlock),
    "write": Op(op_write),
    "verify": Op(op_verify),
    "read_revision": Op(op_read_revision),
    "restore": Op(op_restore),
    "purge_history": Op(op_purge_history),
    "lock": Op(op_lock),
    "stop": Op(op_stop, stops=True),
    "grant_create": Op(op_grant_create),
    "grant_list": Op(op_grant_list),
    "grant_revoke": Op(op_grant_revoke),
}


# -- request fields --


def _vault_path(request: Request, *, canonical: bool = False) -> str:
    """The request's vault path. Store ops only look it up among unlocked vaults (a path that is
    not one of them is `session_locked`); `unlock` requires it canonical before opening it."""
    path = request.get("vault_path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise errors.SessionProtocolError(message="vault_path must be an absolute path")
    if canonical and os.path.realpath(path) != path:
        raise errors.SessionProtocolError(message="vault_path must be canonical")
    return path


def _passphrase(request: Request) -> Sensitive:
    """The request's passphrase (removed from the request: nothing later sees or logs it)."""
    try:
        return Sensitive(base64.b64decode(request.pop("passphrase_b64"), validate=True))
    except (binascii.Error, ValueError):
        raise errors.SessionProtocolError(message="passphrase_b64 is not base64") from None


def _change(item: dict[str, Any]) -> Change:
    op, name = item.get("op"), item.get("name")
    if not isinstance(name, str):
        raise errors.SessionProtocolError(message="a change needs a name")
    if op == "set":
        mode = item.get("mode", "upsert")
        if mode not in ("upsert", "create", "update"):
            raise errors.SessionProtocolError(message="unknown set mode")
        encoded = item.get("value_b64", "")
        if not isinstance(encoded, str):
            raise errors.SessionProtocolError(message="value_b64 is not base64")
        try:
            value = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise errors.SessionProtocolError(message="value_b64 is not base64") from None
        return Change.set(name, value, mode=mode)
    if op == "rm":
        return Change.rm(name)
    if op == "mv" and isinstance(item.get("new_name"), str):
        return Change.mv(name, item["new_name"])
    raise errors.SessionProtocolError(message="unknown change")


def _read_frame(rid: str | int | None, values: dict[str, SecretValue]) -> list[bytes]:
    """The `read` response as chunks, values encoded one at a time and dropped as they go: the
    same bytes as `protocol.encode` of `{"v", "id", "ok", "secrets": [{name, value_b64,
    revision}]}` without building the JSON text of 48 MiB of base64 in one piece."""
    head = protocol.dump_bytes({"v": protocol.PROTOCOL, "id": rid, "ok": True})[:-1] + b',"secrets":['
    chunks = [b"", head]
    for i, name in enumerate(list(values)):
        item = values.pop(name)
        chunks.append(b'%s{"name":%s,"value_b64":"' % (b"," if i else b"", protocol.dump_bytes(item.name)))
        chunks.append(binascii.b2a_base64(item.value, newline=False))
        chunks.append(b'","revision":%d}' % item.revision)
        del item
    chunks.append(b"]}")
    size = sum(len(c) for c in chunks)
    if size > protocol.MAX_FRAME:
        raise errors.FrameTooLarge(message="session frame too large: read fewer names at once")
    chunks[0] = size.to_bytes(4, "big")
    return chunks
