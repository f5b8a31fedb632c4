"""The session daemon process (SPEC §5): `python -m kimen.daemon.server --socket PATH --ready-fd N`.

One daemon per session directory serves any number of vaults, each keyed by its canonical path,
holding the unwrapped data key (never the passphrase) and performing the store operations of
§3.6 for same-uid clients. Design:

- one event loop (selectors, non-blocking sockets) accepts connections, checks the peer's uid,
  reads frames, and answers `status` and `read` inline — no thread hand-off on the hot path;
- everything that may wait (`unlock` and its KDF, `write`, `verify`, `lock`, `stop`, and a read
  of a vault busy with another request) runs in a thread of its own and hands its response back
  through a queue and a self-pipe, so a KDF never delays reads of vaults already unlocked;
- each unlocked vault has its own SQLite connection guarded by `VaultEntry.op_lock`: requests on
  one vault are serialised, requests on different vaults are not;
- `lock`, expiry, identity changes, signals and `stop` wipe the key under that lock, so once a
  `lock` response is sent no request can get a value from the key;
- a timer thread expires keys at their deadlines (boot clock), checks every 10 s that the socket
  path still names this daemon's socket, and exits after an hour with nothing held.

Grants (§5.8) and the audit log (§5.9) are not implemented yet: `token` and `context` are
accepted and ignored, `require_grant` is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import queue
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
from typing import Any

from .. import errors
from ..sensitive import Sensitive
from ..store import Change
from ..vault import LocalStore, Vault
from . import protocol
from .session import (
    DEFAULT_MAX_TTL,
    DEFAULT_TTL,
    Deadlines,
    LockedKey,
    boot_clock,
    rfc3339,
    ttl_problem,
    wall_time,
)

MAX_CONNECTIONS = 512
KDF_SLOTS = 2  # concurrent unlocks (each KDF may use up to 2 GiB); more wait in their worker thread
# ops that may wait (a KDF, a write on a busy vault, forgetting a key in use): never on the event loop
WORKER_OPS = frozenset({"unlock", "write", "verify", "lock", "stop", "digest", "sync_state"})
BLOCKING_AWARE = frozenset({"status", "read"})
_HEADER = struct.Struct(">I")
SOCKET_CHECK_INTERVAL = 10.0
IDLE_EXIT = 3600.0  # nothing unlocked (and no grant) for an hour: exit
STORE_OPS = frozenset({"read", "write", "verify", "digest", "sync_state"})
_PR_SET_DUMPABLE = 4


class DaemonStore(LocalStore):
    """A local store whose key is refused as soon as the vault was replaced or rekeyed (§5.4)."""

    def check_key(self, header: Any) -> None:
        if (header.vault_id != self._vault_id or header.wrap_id != self._wrap_id
                or header.key_epoch != self._key_epoch):
            raise errors.SessionLocked(vault=self.vault.canonical_path)


class VaultEntry:
    """One unlocked vault: its store (and key), identity and deadlines."""

    def __init__(self, path: str, store: DaemonStore, key: LockedKey, deadlines: Deadlines) -> None:
        self.path = path
        self.store = store
        self.key = key
        self.deadlines = deadlines
        self.unlocked_wall = wall_time(deadlines.unlocked_at)
        vault = store.vault
        self.device, self.inode = vault.device, vault.inode
        self.vault_id = vault.header().vault_id.hex()
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

    def same_file(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        # a vault read as immutable (read-only mount) that was written since is not served stale
        return (st.st_dev, st.st_ino) == (self.device, self.inode) and not self.store.vault.changed_on_disk()

    def state(self) -> dict[str, Any]:
        d = self.deadlines
        now = boot_clock()
        return {
            "vault_path": self.path, "vault_id": self.vault_id, "unlocked_at": rfc3339(self.unlocked_wall),
            "idle_expires_at": rfc3339(wall_time(d.idle_at, now)),
            "max_expires_at": rfc3339(wall_time(d.max_at, now)),
            "ttl_seconds": d.ttl, "max_ttl_seconds": d.max_ttl, "mlock": self.key.locked,
        }


class Conn:
    """One client connection, owned by the event loop."""

    __slots__ = ("busy", "closing", "frame_at", "idle_at", "inbuf", "mask", "out", "out_at", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock: socket.socket | None = sock
        self.inbuf = bytearray()
        self.out = bytearray()
        self.busy = False  # a request of this connection is being served by a worker thread
        self.closing = False  # close once `out` is sent (after an error frame)
        self.idle_at = now + protocol.IDLE_TIMEOUT
        self.frame_at: float | None = None  # deadline of a partly received frame
        self.out_at: float | None = None  # deadline of a partly sent response
        self.mask = selectors.EVENT_READ


class WouldBlock(Exception):
    """An inline request met a vault busy with another request (internal: go to a worker)."""


class Daemon:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.uid = os.getuid()
        self.pid = os.getpid()
        self.entries: dict[str, VaultEntry] = {}
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.conns: set[Conn] = set()
        self.done: queue.SimpleQueue[tuple[Conn, dict[str, Any], str]] = queue.SimpleQueue()
        self.rejected = 0
        self.kdf_slots = threading.BoundedSemaphore(KDF_SLOTS)  # argon2 may take up to 2 GiB each
        self.mlock_ok = _mlock_probe()
        self.last_held = boot_clock()
        self.listener: socket.socket | None = None
        self.socket_id: tuple[int, int] | None = None
        self.sel: selectors.BaseSelector | None = None
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

    # -- lifecycle --

    def bind(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old)
        listener.listen(512)
        listener.setblocking(False)
        st = os.lstat(self.socket_path)
        self.socket_id = (st.st_dev, st.st_ino)
        self.listener = listener

    def owns_socket(self) -> bool:
        try:
            st = os.lstat(self.socket_path)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self.socket_id

    def request_stop(self) -> None:
        """Forget every key and remove the socket now; the event loop then exits."""
        self._halt()
        self._release_all()
        self._poke()

    def _halt(self) -> None:
        with self.lock:
            self.stopping = True
            self.wake.notify_all()

    def _release_all(self) -> None:
        self.lock_all()
        if self.owns_socket():
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass

    def _poke(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except OSError:  # the pipe is full: a wake-up is pending anyway
            pass

    def lock_all(self) -> None:
        with self.lock:
            entries = list(self.entries.values())
            self.entries.clear()
            self.last_held = boot_clock()
        for entry in entries:
            entry.forget()

    def lock_vault(self, path: str) -> None:
        with self.lock:
            entry = self.entries.pop(path, None)
            if self.entries == {}:
                self.last_held = boot_clock()
        if entry is not None:
            entry.forget()

    # -- the event loop --

    def serve(self) -> None:
        """Accept, read frames, answer `status` and `read` inline; other ops go to worker threads.

        Nothing here waits: sockets are non-blocking, a vault busy with another request sends the
        read to a worker, and a KDF or a write never runs on this thread.
        """
        assert self.listener is not None
        sel = self.sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        sel.register(self._rfd, selectors.EVENT_READ, "wake")
        threading.Thread(target=self._timer, name="deadlines", daemon=True).start()
        next_sweep = boot_clock() + 0.5
        while not self.stopping:
            events = sel.select(0.5 if self.conns else None)
            for key, mask in events:
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    self._drain_wake()
                else:
                    conn = key.data
                    if mask & selectors.EVENT_WRITE and conn.sock is not None:
                        self._flush(conn)
                    if mask & selectors.EVENT_READ and conn.sock is not None:
                        self._readable(conn)
            now = boot_clock()
            if now >= next_sweep:
                next_sweep = now + 0.5
                self._sweep(now)
        for conn in list(self.conns):
            self._close(conn)
        sel.close()

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(128):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. out of descriptors: try again on the next wake-up
                return
            try:
                uid = protocol.peer_uid(sock)
            except OSError:
                uid = None
            if uid != self.uid or len(self.conns) >= MAX_CONNECTIONS or self.stopping:
                # another uid gets not a single byte (logged as peer_rejected once audit exists)
                self.rejected += uid != self.uid
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock, boot_clock())
            self.conns.add(conn)
            assert self.sel is not None
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                conn, response, op = self.done.get_nowait()
            except queue.Empty:
                return
            stop = op == "stop" and response.get("ok") is True
            if conn.sock is not None:
                conn.busy = False
                conn.idle_at = boot_clock() + protocol.IDLE_TIMEOUT
                self._respond(conn, response)
                if stop:
                    self._flush_blocking(conn)
                else:
                    self._parse(conn)
            if stop:  # keys and socket are gone already; the loop ends (even if the asker hung up)
                self._halt()
                return

    def _readable(self, conn: Conn) -> None:
        assert conn.sock is not None
        try:
            data = conn.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        if conn.busy and len(conn.inbuf) > protocol.MAX_FRAME + 4:  # pipelining without reading replies
            self._close(conn)
            return
        self._parse(conn)

    def _parse(self, conn: Conn) -> None:
        while not conn.busy and not conn.closing and conn.sock is not None:
            buf = conn.inbuf
            if len(buf) < 4:
                conn.frame_at = (conn.frame_at or boot_clock() + protocol.FRAME_TIMEOUT) if buf else None
                return
            (length,) = _HEADER.unpack_from(buf)
            if length > protocol.MAX_FRAME:
                self._fail(conn, errors.FrameTooLarge())
                return
            if len(buf) < 4 + length:
                conn.frame_at = conn.frame_at or boot_clock() + protocol.FRAME_TIMEOUT
                return
            body = bytes(buf[4:4 + length])
            del buf[:4 + length]
            conn.frame_at = None
            conn.idle_at = boot_clock() + protocol.IDLE_TIMEOUT
            try:
                request = protocol.decode(body)
            except errors.SessionProtocolError as err:
                self._fail(conn, err)
                return
            del body
            self._dispatch(conn, request)

    def _dispatch(self, conn: Conn, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op not in WORKER_OPS:
            try:
                self._respond(conn, self.handle(request, blocking=False))
                return
            except WouldBlock:
                pass
        conn.busy = True
        try:
            threading.Thread(target=self._work, args=(conn, request), daemon=True).start()
        except RuntimeError:
            conn.busy = False
            self._fail(conn, errors.SessionUnavailable(message="the session daemon is overloaded"))

    def _work(self, conn: Conn, request: dict[str, Any]) -> None:
        op = request.get("op")
        response = self.handle(request, blocking=True)
        self.done.put((conn, response, op if isinstance(op, str) else ""))
        self._poke()

    def _fail(self, conn: Conn, err: errors.KimenError) -> None:
        """An error frame for a broken request, then close the connection."""
        conn.closing = True
        self._respond(conn, {"v": protocol.PROTOCOL, "id": None, **protocol.error_fields(err)})

    def _respond(self, conn: Conn, doc: dict[str, Any]) -> None:
        try:
            frame = protocol.encode(doc)
        except errors.FrameTooLarge as err:
            conn.closing = True
            frame = protocol.encode({"v": protocol.PROTOCOL, "id": doc.get("id"), **protocol.error_fields(err)})
        conn.out += frame
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        if conn.sock is None:
            return
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn)
                return
            del conn.out[:sent]
        if conn.out:
            conn.out_at = conn.out_at or boot_clock() + protocol.FRAME_TIMEOUT
            self._watch(conn, selectors.EVENT_READ | selectors.EVENT_WRITE)
            return
        conn.out_at = None
        if conn.closing:
            self._close(conn)
            return
        self._watch(conn, selectors.EVENT_READ)

    def _flush_blocking(self, conn: Conn) -> None:
        if conn.sock is None:
            return
        try:
            conn.sock.settimeout(protocol.FRAME_TIMEOUT)
            conn.sock.sendall(conn.out)
        except OSError:
            pass

    def _watch(self, conn: Conn, mask: int) -> None:
        if conn.mask != mask and conn.sock is not None and self.sel is not None:
            self.sel.modify(conn.sock, mask, conn)
            conn.mask = mask

    def _close(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        conn.sock = None
        self.conns.discard(conn)
        try:
            if self.sel is not None:
                self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        try:
            sock.close()
        except OSError:
            pass

    def _sweep(self, now: float) -> None:
        """Close idle connections, slow frames and slow readers (never one whose request is served)."""
        for conn in list(self.conns):
            if conn.busy:
                continue
            slow_frame = conn.frame_at is not None and now >= conn.frame_at
            slow_reader = conn.out_at is not None and now >= conn.out_at
            idle = not conn.inbuf and not conn.out and now >= conn.idle_at
            if slow_frame or slow_reader or idle:
                self._close(conn)

    # -- timers --

    def _timer(self) -> None:
        next_socket_check = boot_clock() + SOCKET_CHECK_INTERVAL
        while True:
            expired: list[VaultEntry] = []
            with self.lock:
                if self.stopping:
                    return
                now = boot_clock()
                for path, entry in list(self.entries.items()):
                    if entry.deadlines.expired(now):
                        expired.append(self.entries.pop(path))
                if expired and not self.entries:
                    self.last_held = now
                idle_exit = not self.entries and now - self.last_held >= IDLE_EXIT
                wait = min([e.deadlines.next_deadline() for e in self.entries.values()]
                           + [next_socket_check, now + 5.0]) - now
            for entry in expired:
                entry.forget()
            if idle_exit:
                self.request_stop()
                return
            if now >= next_socket_check:
                next_socket_check = now + SOCKET_CHECK_INTERVAL
                if not self.owns_socket():  # replaced or removed: lock, leave the path alone, exit
                    with self.lock:
                        self.stopping = True
                    self.lock_all()
                    self._poke()
                    return
            if expired:
                continue
            with self.lock:
                if not self.stopping:
                    self.wake.wait(max(wait, 0.01))

    # -- requests --

    def handle(self, request: dict[str, Any], *, blocking: bool = True) -> dict[str, Any]:
        """One request -> one response. `blocking=False` (the event loop) raises `WouldBlock`
        instead of waiting for a vault that is busy with another request."""
        rid = request.get("id")
        base = {"v": protocol.PROTOCOL, "id": rid if isinstance(rid, (str, int)) else None}
        op = request.get("op")
        try:
            if not isinstance(op, str):
                raise errors.SessionProtocolError(message="session request without an op")
            same_version = request.get("v") == protocol.PROTOCOL and request.get("kimen") == protocol.VERSION
            if not same_version and op not in protocol.FROZEN_OPS:
                raise errors.SessionVersionMismatch()
            method = getattr(self, f"op_{op}", None)
            if method is None:
                raise errors.SessionProtocolError(message=f"unknown session op: {op[:40]}")
            result = method(request, blocking) if op in BLOCKING_AWARE else method(request)
            return {**base, "ok": True, **result}
        except WouldBlock:
            raise
        except errors.KimenError as err:
            return {**base, **protocol.error_fields(err)}
        except Exception as exc:  # a bug must not kill the daemon; the type name only, never the text
            return {**base, **protocol.error_fields(errors.InternalError(type=type(exc).__name__))}

    # -- ops --

    def op_status(self, request: dict[str, Any], blocking: bool = True) -> dict[str, Any]:
        path = request.get("vault_path")
        if isinstance(path, str):
            entry = self._entry(path, required=False)
            # the identity check is skipped when the vault is busy: the next store request checks it
            if entry is not None and entry.op_lock.acquire(blocking=blocking):
                try:
                    self._check_identity(entry)
                except errors.SessionLocked:
                    pass
                finally:
                    entry.op_lock.release()
        self._expire_now()
        with self.lock:
            vaults = [e.state() for e in self.entries.values()]
            mlock = all(e.key.locked for e in self.entries.values()) if self.entries else self.mlock_ok
        return {
            "running": True, "pid": self.pid, "version": protocol.VERSION, "protocol": protocol.PROTOCOL,
            "require_grant": False, "mlock": mlock, "vaults": vaults, "grant_count": 0,
        }

    def op_stop(self, request: dict[str, Any]) -> dict[str, Any]:
        """Keys and socket go now; the event loop exits once this response is sent."""
        self._release_all()
        return {"stopping": True}

    def op_lock(self, request: dict[str, Any]) -> dict[str, Any]:
        path = request.get("vault_path")
        if path is None:
            self.lock_all()
        elif isinstance(path, str):
            self.lock_vault(path)
        else:
            raise errors.SessionProtocolError(message="vault_path must be a string")
        return self.op_status({})

    def op_unlock(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _vault_path(request, canonical=True)
        ttl = request.get("ttl", DEFAULT_TTL)
        max_ttl = request.get("max_ttl", DEFAULT_MAX_TTL)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (ttl, max_ttl)):
            raise errors.InvalidTtl(detail="TTLs must be numbers of seconds")
        problem = ttl_problem(ttl, max_ttl)
        if problem:
            raise errors.InvalidTtl(detail=problem)
        if request.get("require_grant"):
            raise errors.SessionUnsupported(message="grant-required sessions are not supported yet")
        encoded = request.get("passphrase_b64")
        if not isinstance(encoded, str):
            raise errors.SessionProtocolError(message="unlock without passphrase_b64")
        try:
            passphrase = Sensitive(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise errors.SessionProtocolError(message="passphrase_b64 is not base64") from None
        del encoded, request["passphrase_b64"]
        vault = Vault.open(path)
        try:
            with passphrase, self.kdf_slots:
                key = vault.unwrap_key(passphrase)  # the KDF, in a worker thread
            locked = LockedKey(key)
            store = DaemonStore(vault, locked, stale_error=errors.SessionLocked)
        except BaseException:
            vault.close()
            raise
        entry = VaultEntry(path, store, locked, Deadlines(ttl, max_ttl))
        with self.lock:
            if self.stopping:
                old = entry
            else:
                old = self.entries.get(path)
                self.entries[path] = entry
                self.wake.notify_all()
        if old is not None:
            old.forget()
        return {"vault": entry.state(), "pid": self.pid}

    def op_read(self, request: dict[str, Any], blocking: bool = True) -> dict[str, Any]:
        names = request.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise errors.SessionProtocolError(message="read needs a list of names")
        if len(names) > protocol.READ_BATCH:
            raise errors.SessionProtocolError(message="too many names in one read")
        values = self._with_store(request, lambda store: store.read(names), blocking)
        return {"secrets": [{"name": v.name, "value_b64": base64.b64encode(v.value).decode(), "revision": v.revision}
                            for v in values.values()]}

    def op_write(self, request: dict[str, Any]) -> dict[str, Any]:
        items = request.get("changes")
        if not isinstance(items, list):
            raise errors.SessionProtocolError(message="write needs a list of changes")
        changes = [_change(item) for item in items]
        if_generation = request.get("if_generation")
        if if_generation is not None and not isinstance(if_generation, int):
            raise errors.SessionProtocolError(message="if_generation must be an integer")
        if request.get("baseline") is not None:
            raise errors.SessionUnsupported(message="sync baselines through a session are not supported yet")
        result = self._with_store(request, lambda store: store.write(changes, if_generation=if_generation))
        return {"generation": result.generation, "results": [
            {"op": r.op, "name": r.name, "revision": r.revision, "created": r.created, "new_name": r.new_name}
            for r in result.results]}

    def op_verify(self, request: dict[str, Any]) -> dict[str, Any]:
        self._with_store(request, lambda store: store.verify())
        return {"integrity": "ok"}

    # -- store access --

    def _entry(self, path: str, *, required: bool = True) -> VaultEntry | None:
        with self.lock:
            entry = self.entries.get(path)
            if entry is not None and entry.deadlines.expired():
                del self.entries[path]
                expired = entry
                entry = None
            else:
                expired = None
        if expired is not None:
            _retire(expired)
        if entry is None and required:
            raise errors.SessionLocked(vault=path)
        return entry

    def _expire_now(self) -> None:
        now = boot_clock()
        with self.lock:
            gone = [self.entries.pop(p) for p, e in list(self.entries.items()) if e.deadlines.expired(now)]
        for entry in gone:
            _retire(entry)

    def _check_identity(self, entry: VaultEntry) -> None:
        """Same file (device, inode) and same vault id and wrap id (§5.4); else forget the key."""
        if entry.alive and entry.same_file():
            try:
                entry.store.check_key(entry.store.vault.header())
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

    def _with_store(self, request: dict[str, Any], fn: Any, blocking: bool = True) -> Any:
        path = _vault_path(request)
        entry = self._entry(path)
        assert entry is not None
        if not entry.op_lock.acquire(blocking=blocking):
            raise WouldBlock()
        try:
            if not entry.alive or entry.deadlines.expired():
                self._drop(entry)
                raise errors.SessionLocked(vault=path)
            if not entry.same_file():
                self._drop(entry)
                raise errors.SessionLocked(vault=path)
            try:
                result = fn(entry.store)
            except errors.SessionLocked:  # vault id, wrap id or key epoch changed under the key
                self._drop(entry)
                raise
            if entry.store.vault.changed_on_disk():  # written during an immutable read: maybe torn
                self._drop(entry)
                raise errors.SessionLocked(vault=path)
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


def _vault_path(request: dict[str, Any], *, canonical: bool = False) -> str:
    """The request's vault path. Store ops only look it up among unlocked vaults (a path that is
    not one of them is `session_locked`); `unlock` requires it canonical before opening it."""
    path = request.get("vault_path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise errors.SessionProtocolError(message="vault_path must be an absolute path")
    if canonical and os.path.realpath(path) != path:
        raise errors.SessionProtocolError(message="vault_path must be canonical")
    return path


def _change(item: Any) -> Change:
    if not isinstance(item, dict):
        raise errors.SessionProtocolError(message="a change must be an object")
    op, name = item.get("op"), item.get("name")
    if not isinstance(name, str):
        raise errors.SessionProtocolError(message="a change needs a name")
    if op == "set":
        mode = item.get("mode", "upsert")
        if mode not in ("upsert", "create", "update"):
            raise errors.SessionProtocolError(message="unknown set mode")
        try:
            value = base64.b64decode(item.get("value_b64", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise errors.SessionProtocolError(message="value_b64 is not base64") from None
        return Change.set(name, value, mode=mode)
    if op == "rm":
        return Change.rm(name)
    if op == "mv" and isinstance(item.get("new_name"), str):
        return Change.mv(name, item["new_name"])
    raise errors.SessionProtocolError(message="unknown change")


# -- process set-up --


def harden() -> None:
    """No core dumps and no ptrace/proc access by same-uid processes (before any key is held)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _mlock_probe() -> bool:
    key = LockedKey(Sensitive(bytes(32)))
    try:
        return key.locked
    finally:
        key.wipe()


def _parse_args(argv: list[str]) -> tuple[str, int | None]:
    socket_path, ready_fd = None, None
    it = iter(argv)
    for arg in it:
        if arg == "--socket":
            socket_path = next(it, None)
        elif arg == "--ready-fd":
            value = next(it, None)
            ready_fd = int(value) if value is not None and value.isdigit() else None
        else:
            raise SystemExit(f"kimen.daemon.server: unknown argument {arg[:40]!r}")
    if not socket_path or not os.path.isabs(socket_path):
        raise SystemExit("usage: python -m kimen.daemon.server --socket PATH [--ready-fd N]")
    return socket_path, ready_fd


def _report(ready_fd: int | None, line: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, line.encode() + b"\n")
        os.close(ready_fd)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    socket_path, ready_fd = _parse_args(sys.argv[1:] if argv is None else argv)
    harden()
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (started with start_new_session)
    os.chdir("/")
    os.umask(0o077)
    daemon = Daemon(socket_path)
    try:
        daemon.bind()
    except OSError as exc:
        _report(ready_fd, f"error cannot bind {socket_path}: {exc.strerror}")
        return 1

    def on_stop(signum: int, frame: Any) -> None:  # the handler runs on the loop thread: never block it
        threading.Thread(target=daemon.request_stop, daemon=True).start()

    def on_lock(signum: int, frame: Any) -> None:
        threading.Thread(target=daemon.lock_all, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_lock)
    signal.signal(signal.SIGUSR1, on_lock)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _report(ready_fd, f"ok {daemon.pid}")
    try:
        daemon.serve()
    finally:
        daemon.lock_all()
        if daemon.owns_socket():
            try:
                os.unlink(socket_path)
            except OSError:
                pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
