"""The session daemon process: `python -m kimen.daemon.server --socket PATH --ready-fd N`.

One daemon per session directory serves any number of vaults, each keyed by its canonical path,
holding the unwrapped data key (never the passphrase) and performing the store operations for
same-uid clients (docs/session.md). Design:

- one event loop (selectors, non-blocking sockets) accepts connections, checks the peer's uid,
  reads frames, and answers `status` and `read` inline — no thread hand-off on the hot path;
- everything that may wait (`unlock` and its KDF, `write`, `verify`, `lock`, `stop`, and a read
  of a vault busy with another request) runs in a worker thread (at most `MAX_WORKERS`, more wait
  in line) and hands its response back through a queue and a self-pipe, so a KDF never delays
  reads of vaults already unlocked;
- each unlocked vault has its own SQLite connection guarded by `VaultEntry.op_lock`: requests on
  one vault are serialised, requests on different vaults are not; `kimen.daemon.vaults` owns the
  entries, their identity checks and the records of expired vaults;
- `lock`, expiry, identity changes, signals and `stop` wipe the key under that lock, so once a
  `lock` response is sent no request can get a value from the key;
- a timer thread expires keys at their deadlines (boot clock), checks every 10 s that the socket
  path still names this daemon's socket, and exits after an hour with nothing held.

No bytes a peer sends can stop the loop: a frame is checked (`kimen.daemon.requests`) before any
handler runs, every response is encoded safely, and an unexpected exception while serving one
connection closes that connection only. Resources are bounded so that hostile or broken peers
cannot lock others out:

- connections: at most `max_connections` (`MAX_CONNECTIONS`, lowered to fit RLIMIT_NOFILE, whose
  soft limit is first raised towards the hard one). At the cap a new connection evicts a slow one
  — a partial frame that sent nothing for `STALL` seconds first, then the longest idle — and is
  refused only when every connection has a request in service;
- memory: a frame up to `SMALL_FRAME` bytes is read into the connection's own small buffer; a
  larger one must first reserve its length from `BUFFER_CAP`, shared by all connections, as must a
  large `read` response. Without room, slow partial frames are evicted, else the connection waits
  unread (its 5 s frame deadline still runs). A connection reads its next request only after its
  response is sent, so no peer can pile up responses it does not read.

Grants and the audit log are not implemented yet: `token` and `context` are type-checked and
otherwise ignored, `require_grant` is refused.
"""

from __future__ import annotations

import base64
import binascii
import collections
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
from ..vault import Vault
from . import protocol, requests
from .session import (
    DEFAULT_MAX_TTL,
    DEFAULT_TTL,
    Deadlines,
    LockedKey,
    boot_clock,
    ttl_problem,
)
from .vaults import DaemonStore, Expired, VaultEntry, file_stamp

MAX_CONNECTIONS = 4096
RESERVED_FDS = 64  # descriptors kept for vault files, pipes and threads beyond the connections
SMALL_FRAME = 16 * 1024  # frames up to this size need no reservation
BUFFER_CAP = 160 * 1024 * 1024  # larger frames and responses held at once, all connections together
STALL = 1.0  # a partial frame with no byte for this long is slow (evicted first)
MAX_WORKERS = 64
KDF_SLOTS = 2  # concurrent unlocks (each KDF may use up to 2 GiB); more wait in their worker thread
# ops that may wait (a KDF, a write on a busy vault, forgetting a key in use): never on the event loop
WORKER_OPS = frozenset({"unlock", "write", "verify", "lock", "stop"})
BLOCKING_AWARE = frozenset({"status", "read"})
_HEADER = struct.Struct(">I")
_CLOSING_REASONS = frozenset({"session_protocol_error", "frame_too_large"})
SOCKET_CHECK_INTERVAL = 10.0
IDLE_EXIT = 3600.0  # nothing unlocked (and no grant) for an hour: exit
_PR_SET_DUMPABLE = 4
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Budget:
    """Bytes of large frames and responses held in memory, shared by the loop and the workers."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self._cond = threading.Condition()

    def try_take(self, n: int) -> bool:
        with self._cond:
            if self.used + n > self.cap:
                return False
            self.used += n
            return True

    def take(self, n: int, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + n <= self.cap, timeout):
                return False
            self.used += n
            return True

    def charge(self, n: int) -> None:
        """Account for bytes already held (a response larger than its estimate)."""
        with self._cond:
            self.used += n

    def give(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


class Reply:
    """An encoded response: its chunks, whether it succeeded, the budget it holds, what follows."""

    __slots__ = ("chunks", "close", "held", "ok", "stop")

    def __init__(self, chunks: list[bytes], ok: bool, *, held: int = 0, close: bool = False,
                 stop: bool = False) -> None:
        self.chunks, self.ok, self.held, self.close, self.stop = chunks, ok, held, close, stop


class Conn:
    """One client connection, owned by the event loop."""

    __slots__ = ("busy", "closing", "frame", "frame_at", "got", "held_in", "held_out", "idle_at", "inbuf",
                 "last_rx", "mask", "out", "out_at", "paused", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock: socket.socket | None = sock
        self.inbuf = bytearray()  # at most SMALL_FRAME bytes
        self.frame: bytearray | None = None  # a large frame being received (its length reserved)
        self.got = 0
        self.held_in = 0  # budget held by the large frame (until its response is queued)
        self.held_out = 0  # budget held by the response being sent
        self.out: collections.deque[memoryview] = collections.deque()
        self.busy = False  # a request of this connection is being served by a worker thread
        self.closing = False  # close once `out` is sent (after an error frame)
        self.paused = False  # waiting for budget: not read meanwhile
        self.idle_at = now + protocol.IDLE_TIMEOUT
        self.frame_at: float | None = None  # deadline of a partly received frame
        self.out_at: float | None = None  # deadline of a partly sent response
        self.last_rx = now
        self.mask = _READ

    def partial(self) -> bool:
        return bool(self.inbuf) or self.frame is not None


class WouldBlock(Exception):
    """An inline request met a vault busy with another request, or no budget (internal)."""


class Daemon:
    def __init__(self, socket_path: str, max_connections: int = MAX_CONNECTIONS) -> None:
        self.socket_path = socket_path
        self.max_connections = max_connections
        self.uid = os.getuid()
        self.pid = os.getpid()
        self.entries: dict[str, VaultEntry] = {}
        self.expired: dict[str, Expired] = {}
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.stopping = False
        self.conns: set[Conn] = set()
        self.done: queue.SimpleQueue[tuple[Conn, Reply]] = queue.SimpleQueue()
        self.budget = Budget(BUFFER_CAP)
        self.paused: collections.deque[Conn] = collections.deque()
        self.backlog: collections.deque[tuple[Conn, dict[str, Any]]] = collections.deque()
        self.workers = 0
        self.rejected = 0
        self.kdf_slots = threading.BoundedSemaphore(KDF_SLOTS)  # argon2 may take up to 2 GiB each
        self.mlock_ok = _mlock_probe()
        self.last_held = boot_clock()
        self.listener: socket.socket | None = None
        self.listening = False
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
        listener.listen(4096)  # the kernel caps it (net.core.somaxconn)
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

    # -- the event loop --

    def serve(self) -> None:
        """Accept, read frames, answer `status` and `read` inline; other ops go to worker threads.

        Nothing here waits: sockets are non-blocking, a vault busy with another request sends the
        read to a worker, and a KDF or a write never runs on this thread.
        """
        assert self.listener is not None
        sel = self.sel = selectors.DefaultSelector()
        sel.register(self.listener, _READ, None)
        self.listening = True
        sel.register(self._rfd, _READ, "wake")
        threading.Thread(target=self._timer, name="deadlines", daemon=True).start()
        next_sweep = boot_clock() + 0.5
        while not self.stopping:
            events = sel.select(0.5 if self.conns or not self.listening else None)
            for key, mask in events:
                conn = key.data
                try:
                    if conn is None:
                        self._accept()
                    elif conn == "wake":
                        self._drain_wake()
                    else:
                        if mask & _WRITE and conn.sock is not None:
                            self._flush(conn)
                            self._parse(conn)  # requests that arrived while the response was queued
                        if mask & _READ and conn.sock is not None:
                            self._readable(conn)
                except Exception:  # a bug while serving one connection closes it, never the daemon
                    if isinstance(conn, Conn):
                        self._close(conn)
            self._resume_paused()
            now = boot_clock()
            if now >= next_sweep:
                next_sweep = now + 0.5
                self._sweep(now)
        for conn in list(self.conns):
            self._close(conn)
        sel.close()

    def _accept(self) -> None:
        assert self.listener is not None and self.sel is not None
        for _ in range(256):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: make room, else stop accepting for a moment
                if not self._evict_for_slot(boot_clock()):
                    self._watch_listener(False)
                return
            try:
                uid = protocol.peer_uid(sock)
            except OSError:
                uid = None
            now = boot_clock()
            if uid != self.uid or self.stopping:
                # another uid gets not a single byte (logged as peer_rejected once audit exists)
                self.rejected += uid != self.uid
                sock.close()
                continue
            if len(self.conns) >= self.max_connections and not self._evict_for_slot(now):
                sock.close()  # every connection has a request in service: refuse the newcomer
                continue
            sock.setblocking(False)
            conn = Conn(sock, now)
            self.conns.add(conn)
            self.sel.register(sock, _READ, conn)

    def _watch_listener(self, on: bool) -> None:
        if self.listener is None or self.sel is None or on == self.listening:
            return
        if on:
            self.sel.register(self.listener, _READ, None)
        else:
            self.sel.unregister(self.listener)
        self.listening = on

    def _drain_wake(self) -> None:
        try:
            while os.read(self._rfd, 4096):
                pass
        except OSError:
            pass
        while True:
            try:
                conn, reply = self.done.get_nowait()
            except queue.Empty:
                break
            self.workers -= 1
            try:
                self._deliver(conn, reply)
                self._parse(conn)
            except Exception:
                self._close(conn)
            if reply.stop:
                return
        while self.backlog and self.workers < MAX_WORKERS:
            conn, request = self.backlog.popleft()
            if conn.sock is None:  # hung up while waiting for a worker
                conn.busy = False
                self._give(conn.held_in)
                conn.held_in = 0
                continue
            self._start_worker(conn, request)

    def _readable(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        if conn.frame is not None:  # a large frame, its length reserved: straight into its buffer
            with memoryview(conn.frame) as view, view[conn.got:] as rest:
                try:
                    n = sock.recv_into(rest, min(len(rest), 1 << 20))
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    n = 0
            if not n:
                self._close(conn)
                return
            conn.got += n
            conn.last_rx = boot_clock()
            if conn.got < len(conn.frame):
                return
            try:  # the bytes become text, and the buffer goes, before the JSON is parsed
                text: str | None = conn.frame.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            conn.frame = None
            conn.frame_at = None
            if text is None:
                self._fail(conn, errors.SessionProtocolError(message="session frame is not UTF-8"))
            else:
                self._serve_frame(conn, text)
            self._parse(conn)
            return
        room = SMALL_FRAME - len(conn.inbuf)
        if room <= 0:  # pragma: no cover - a full small buffer always holds a complete frame
            self._parse(conn)
            return
        try:
            data = sock.recv(room)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        conn.last_rx = boot_clock()
        self._parse(conn)

    def _parse(self, conn: Conn) -> None:
        """Serve the complete frames in the connection's buffer, one request at a time."""
        while conn.sock is not None and not (conn.busy or conn.closing or conn.out or conn.paused
                                             or conn.frame is not None):
            buf = conn.inbuf
            if len(buf) < 4:
                conn.frame_at = (conn.frame_at or boot_clock() + protocol.FRAME_TIMEOUT) if buf else None
                break
            (length,) = _HEADER.unpack_from(buf)
            if length > protocol.MAX_FRAME:
                self._fail(conn, errors.FrameTooLarge())
                break
            if len(buf) >= 4 + length:
                body = bytes(buf[4:4 + length])
                del buf[:4 + length]
                conn.frame_at = None
                self._serve_frame(conn, body)
                continue
            conn.frame_at = conn.frame_at or boot_clock() + protocol.FRAME_TIMEOUT
            if 4 + length <= SMALL_FRAME:
                break  # the rest of a small frame is on its way
            if not self._reserve(conn, length):
                conn.paused = True
                self.paused.append(conn)
                break
            conn.frame = bytearray(length)
            conn.got = len(buf) - 4
            conn.frame[:conn.got] = buf[4:]
            conn.held_in = length
            buf.clear()
        self._rearm(conn)

    def _serve_frame(self, conn: Conn, body: bytes | str) -> None:
        conn.idle_at = boot_clock() + protocol.IDLE_TIMEOUT
        try:
            request = protocol.decode(body)
        except errors.SessionProtocolError as err:
            self._fail(conn, err)
            return
        del body
        op = request.get("op")
        if type(op) is str and op in WORKER_OPS:
            self._to_worker(conn, request)
            return
        try:
            reply = self.handle(request, blocking=False)
        except WouldBlock:
            self._to_worker(conn, request)
            return
        self._deliver(conn, reply)

    def _to_worker(self, conn: Conn, request: dict[str, Any]) -> None:
        conn.busy = True
        self._rearm(conn)
        if self.workers >= MAX_WORKERS:
            self.backlog.append((conn, request))
        else:
            self._start_worker(conn, request)

    def _start_worker(self, conn: Conn, request: dict[str, Any]) -> None:
        self.workers += 1
        try:
            threading.Thread(target=self._work, args=(conn, request), daemon=True).start()
        except RuntimeError:
            self.workers -= 1
            conn.busy = False
            self._fail(conn, errors.SessionUnavailable(message="the session daemon is overloaded"))

    def _work(self, conn: Conn, request: dict[str, Any]) -> None:
        try:
            reply = self.handle(request, blocking=True)
        except BaseException:  # pragma: no cover - handle() answers everything; the loop must hear back
            reply = Reply([_INTERNAL_ERROR], False, close=True)
        self.done.put((conn, reply))
        self._poke()

    def _fail(self, conn: Conn, err: errors.KimenError) -> None:
        """An error frame for a broken frame, then close the connection."""
        self._deliver(conn, self._error_reply(None, err))

    def _deliver(self, conn: Conn, reply: Reply) -> None:
        """Queue a response (releasing the request's reservation) and send what the socket takes."""
        conn.busy = False
        self._give(conn.held_in)
        conn.held_in = 0
        if reply.stop:
            self._halt()  # keys and socket are gone already; the loop ends (even if the asker hung up)
        if conn.sock is None:
            self.budget.give(reply.held)
            return
        size = sum(len(c) for c in reply.chunks)
        held = reply.held
        if size > SMALL_FRAME and size > held:
            self.budget.charge(size - held)
            held = size
        conn.held_out += held
        conn.out.extend(memoryview(c) for c in reply.chunks)
        conn.idle_at = boot_clock() + protocol.IDLE_TIMEOUT
        conn.closing = conn.closing or reply.close
        if reply.stop:
            self._flush_blocking(conn)
            return
        self._flush(conn)  # the caller parses the next request (never from here: no recursion)

    def _flush(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        out = conn.out
        while out:
            chunk = out[0]
            try:
                sent = sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            if sent < len(chunk):
                out[0] = chunk[sent:]
                break
            out.popleft()
        if out:
            conn.out_at = conn.out_at or boot_clock() + protocol.FRAME_TIMEOUT
            self._rearm(conn)
            return
        conn.out_at = None
        self._give(conn.held_out)
        conn.held_out = 0
        if conn.closing:
            self._close(conn)
            return
        self._rearm(conn)

    def _flush_blocking(self, conn: Conn) -> None:
        if conn.sock is None:
            return
        try:
            conn.sock.settimeout(protocol.FRAME_TIMEOUT)
            for chunk in conn.out:
                conn.sock.sendall(chunk)
        except OSError:
            pass
        conn.out.clear()

    def _rearm(self, conn: Conn) -> None:
        """Watch for what the connection waits for: sending its response, or its next request."""
        if conn.sock is None:
            return
        if conn.out:
            mask = _WRITE
        elif conn.busy or conn.paused or conn.closing:
            mask = 0
        else:
            mask = _READ
        if mask == conn.mask or self.sel is None:
            return
        if conn.mask == 0:
            self.sel.register(conn.sock, mask, conn)
        elif mask == 0:
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, mask, conn)
        conn.mask = mask

    def _close(self, conn: Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        conn.sock = None
        self.conns.discard(conn)
        if conn.mask and self.sel is not None:
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass
        conn.frame = None
        conn.inbuf = bytearray()
        conn.out.clear()
        if not conn.busy:  # a request in service keeps its reservation until its reply arrives
            self._give(conn.held_in)
            conn.held_in = 0
        self._give(conn.held_out)
        conn.held_out = 0
        if not self.listening and not self.stopping:
            self._watch_listener(True)

    # -- budget and eviction --

    def _give(self, n: int) -> None:
        self.budget.give(n)

    def _reserve(self, conn: Conn, n: int) -> bool:
        """Reserve `n` bytes for a large frame, evicting slow partial frames when needed."""
        if self.budget.try_take(n):
            return True
        if self.paused and self.paused[0] is not conn:
            return False  # others wait first
        now = boot_clock()
        for victim in sorted(self._slow(now), key=lambda c: c.last_rx):
            if victim is conn or not victim.held_in:
                continue
            self._close(victim)
            if self.budget.try_take(n):
                return True
        return False

    def _resume_paused(self) -> None:
        """Let connections waiting for budget read again, first come first served."""
        while self.paused:
            conn = self.paused[0]
            if conn.sock is None or not conn.paused:
                self.paused.popleft()
                continue
            if len(conn.inbuf) < 4:  # pragma: no cover - a connection pauses on a length prefix
                self.paused.popleft()
                self._close(conn)
                continue
            (length,) = _HEADER.unpack_from(conn.inbuf)
            if not self.budget.try_take(length):
                return
            self.budget.give(length)
            self.paused.popleft()
            conn.paused = False
            try:
                self._parse(conn)
            except Exception:
                self._close(conn)

    def _slow(self, now: float) -> list[Conn]:
        """Partial frames that sent nothing for STALL seconds (not waiting on us)."""
        return [c for c in self.conns
                if c.partial() and not (c.busy or c.paused or c.out) and now - c.last_rx >= STALL]

    def _evict_for_slot(self, now: float) -> bool:
        """Close one connection to make room: the slowest partial frame, else the longest idle."""
        slow = self._slow(now)
        if slow:
            self._close(min(slow, key=lambda c: c.last_rx))
            return True
        idle = [c for c in self.conns if not (c.busy or c.paused or c.out or c.partial())]
        if idle:
            self._close(min(idle, key=lambda c: c.idle_at))
            return True
        return False

    def _sweep(self, now: float) -> None:
        """Close idle connections, slow frames and slow readers (never one whose request is served)."""
        for conn in list(self.conns):
            if conn.busy:
                continue
            slow_frame = conn.frame_at is not None and now >= conn.frame_at
            slow_reader = conn.out_at is not None and now >= conn.out_at
            idle = not conn.partial() and not conn.out and now >= conn.idle_at
            if slow_frame or slow_reader or idle:
                self._close(conn)

    # -- timers --

    def _timer(self) -> None:
        next_socket_check = boot_clock() + SOCKET_CHECK_INTERVAL
        while True:
            with self.lock:
                if self.stopping:
                    return
                now = boot_clock()
                expired = [self._expire_locked(entry, now) for entry in list(self.entries.values())
                           if entry.deadlines.expired(now)]
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

    def _expire_locked(self, entry: VaultEntry, now: float) -> VaultEntry:
        """Move an entry whose TTL ran out to the expiry records (self.lock held); the caller
        forgets its key."""
        if self.entries.get(entry.path) is entry:
            del self.entries[entry.path]
            self.expired[entry.path] = Expired(entry, now)
            if not self.entries:
                self.last_held = now
        return entry

    # -- requests --

    def handle(self, request: dict[str, Any], *, blocking: bool = True) -> Reply:
        """One request -> one encoded reply. `blocking=False` (the event loop) raises `WouldBlock`
        instead of waiting for a vault that is busy with another request."""
        rid = requests.request_id(request)
        try:
            op = requests.check(request)
            method = getattr(self, f"op_{op}")
            result = method(request, blocking) if op in BLOCKING_AWARE else method(request)
            if isinstance(result, ReadResult):
                try:
                    return Reply(_read_frame(rid, result.values), True, held=result.held)
                except BaseException:
                    self.budget.give(result.held)
                    raise
            return Reply([protocol.encode({"v": protocol.PROTOCOL, "id": rid, "ok": True, **result})], True,
                         stop=op == "stop")
        except WouldBlock:
            raise
        except errors.KimenError as err:
            return self._error_reply(rid, err)
        except Exception as exc:  # a bug must not kill the daemon; the type name only, never the text
            return self._error_reply(rid, errors.InternalError(type=type(exc).__name__))

    def _error_reply(self, rid: Any, err: errors.KimenError) -> Reply:
        try:
            frame = protocol.encode({"v": protocol.PROTOCOL, "id": rid, **protocol.error_fields(err)})
        except Exception:  # pragma: no cover - error fields are plain strings
            frame = _INTERNAL_ERROR
        return Reply([frame], False, close=err.reason in _CLOSING_REASONS)

    # -- ops --

    def op_status(self, request: dict[str, Any], blocking: bool = True) -> dict[str, Any]:
        path = request.get("vault_path")
        if path is not None:
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
            vaults = [e.state() for e in self.entries.values()] + [x.state() for x in self.expired.values()]
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
        """`held`: whether the daemon held that vault (any vault without `vault_path`) — the
        client says so when it did not, and names the vaults that remain unlocked."""
        path = request.get("vault_path")
        held = self.lock_all() if path is None else self.lock_vault(path)
        return {"held": held, **self.op_status({})}

    def op_unlock(self, request: dict[str, Any]) -> dict[str, Any]:
        path = _vault_path(request, canonical=True)
        ttl = request.get("ttl", DEFAULT_TTL)
        max_ttl = request.get("max_ttl", DEFAULT_MAX_TTL)
        problem = ttl_problem(ttl, max_ttl)
        if problem:
            raise errors.InvalidTtl(detail=problem)
        if request.get("require_grant"):
            raise errors.SessionUnsupported(message="grant-required sessions are not supported yet")
        try:
            passphrase = Sensitive(base64.b64decode(request.pop("passphrase_b64"), validate=True))
        except (binascii.Error, ValueError):
            raise errors.SessionProtocolError(message="passphrase_b64 is not base64") from None
        stamp = file_stamp(path)
        vault = Vault.open(path)
        try:
            with passphrase, self.kdf_slots:
                key = vault.unwrap_key(passphrase)  # the KDF, in a worker thread
            locked = LockedKey(key)
            store = DaemonStore(vault, locked, stale_error=errors.SessionLocked)
        except BaseException:
            vault.close()
            raise
        entry = VaultEntry(path, store, locked, Deadlines(ttl, max_ttl), stamp)
        with self.lock:
            if self.stopping:
                old = entry
            else:
                old = self.entries.get(path)
                self.entries[path] = entry
                self.expired.pop(path, None)
                self.wake.notify_all()
        if old is not None:
            old.forget()
        return {"vault": entry.state(), "pid": self.pid}

    def op_read(self, request: dict[str, Any], blocking: bool = True) -> ReadResult:
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
            if held and not self.budget.take(held, protocol.FRAME_TIMEOUT if blocking else 0):
                if not blocking:
                    raise WouldBlock()
                raise errors.SessionUnavailable(message="the session daemon is busy; retry")
            try:
                return ReadResult(store.read(names), held)
            except BaseException:
                self.budget.give(held)
                raise

        return self._with_store(request, read, blocking, retry=True)

    def op_write(self, request: dict[str, Any]) -> dict[str, Any]:
        changes = [_change(item) for item in request["changes"]]
        if_generation = request.get("if_generation")
        if request.get("baseline") is not None:
            raise errors.SessionUnsupported(message="sync baselines through a session are not supported yet")
        result = self._with_store(request, lambda store: store.write(changes, if_generation=if_generation))
        return {"generation": result.generation, "results": [
            {"op": r.op, "name": r.name, "revision": r.revision, "created": r.created, "new_name": r.new_name}
            for r in result.results]}

    def op_verify(self, request: dict[str, Any]) -> dict[str, Any]:
        self._with_store(request, lambda store: store.verify(), retry=True)
        return {"integrity": "ok"}

    # -- store access --

    def _entry(self, path: str, *, required: bool = True) -> VaultEntry | None:
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

    def _expire_now(self) -> None:
        now = boot_clock()
        with self.lock:
            gone = [self._expire_locked(e, now) for e in list(self.entries.values()) if e.deadlines.expired(now)]
        for entry in gone:
            _retire(entry)

    def _check_identity(self, entry: VaultEntry) -> None:
        """The file is still this vault (see kimen.daemon.vaults); else forget the key (op_lock held)."""
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

    def _with_store(self, request: dict[str, Any], fn: Any, blocking: bool = True, *, retry: bool = False) -> Any:
        """Run `fn(store)` on the request's vault under its op_lock, its identity checked before
        and — when the file changed meanwhile — after (a read is then retried once)."""
        path = _vault_path(request)
        entry = self._entry(path)
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
                        if isinstance(result, ReadResult):
                            self.budget.give(result.held)
                        raise
                    if retry and attempt == 1:  # the same vault, reopened: read it again
                        if isinstance(result, ReadResult):
                            self.budget.give(result.held)
                        continue
                break
            entry.deadlines.touch()
        finally:
            entry.op_lock.release()
        return result


class ReadResult:
    __slots__ = ("held", "values")

    def __init__(self, values: dict[str, Any], held: int) -> None:
        self.values, self.held = values, held


def _read_frame(rid: Any, values: dict[str, Any]) -> list[bytes]:
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


_INTERNAL_ERROR = protocol.encode({"v": protocol.PROTOCOL, "id": None,
                                   **protocol.error_fields(errors.InternalError(type="Exception"))})


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
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > 4096:
        raise errors.SessionProtocolError(message="vault_path must be an absolute path")
    if canonical and os.path.realpath(path) != path:
        raise errors.SessionProtocolError(message="vault_path must be canonical")
    return path


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


# -- process set-up --


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (at most the hard limit); the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


def tune_malloc() -> None:
    """glibc: return large buffers to the system as soon as they are freed (a fixed mmap
    threshold) and keep few arenas, so a burst of large frames does not stay in the RSS."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 4)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


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
    tune_malloc()
    daemon = Daemon(socket_path, max(16, min(MAX_CONNECTIONS, raise_fd_limit(MAX_CONNECTIONS + RESERVED_FDS)
                                             - RESERVED_FDS)))
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
