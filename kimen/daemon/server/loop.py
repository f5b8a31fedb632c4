"""The event loop: the listening socket, connections, frames, worker threads and their limits.

One thread runs the loop (selectors, non-blocking sockets): it accepts connections, checks the
peer's uid, reads frames and hands each request to the `Service` (`kimen.daemon.server.ops`),
inline or in a worker thread; workers hand their replies back through a queue and a self-pipe.

No bytes a peer sends can stop the loop: a frame is checked before any handler runs, every
response is encoded safely, and an unexpected exception while serving one connection closes that
connection only. Resources are bounded so that hostile or broken peers cannot lock others out:

- connections: at most `max_connections` (`MAX_CONNECTIONS`, lowered to fit RLIMIT_NOFILE). At the
  cap a new connection evicts a slow one — a partial frame that sent nothing for `STALL` seconds
  first, then the longest idle — and is refused only when every connection has a request in
  service;
- memory: a frame up to `SMALL_FRAME` bytes is read into the connection's own small buffer; a
  larger one must first reserve its length from `BUFFER_CAP`, shared by all connections, as must a
  large `read` response. Without room, slow partial frames are evicted, else the connection waits
  unread (its 5 s frame deadline still runs). A connection reads its next request only after its
  response is sent, so no peer can pile up responses it does not read.

Every request is recorded in the audit log before it is answered (`Service.handle`); what never
becomes a request is recorded here, folded per outcome (`AuditLog.refusal`): a peer of another
uid (`peer_rejected`), a frame that is not a valid request (`session_protocol_error`), an oversize
prefix (`frame_too_large`) and a frame that does not arrive in time (`frame_timeout`). Who the
peer is (`audit.peer_info`: pid, uid, exe, cwd, ancestors from /proc) is read once, on accept.

A timer thread expires keys at their deadlines (boot clock), checks every 10 s that the socket
path still names this daemon's socket, and exits after an hour with nothing held.
"""

from __future__ import annotations

import collections
import os
import queue
import selectors
import socket
import stat
import struct
import threading

from ... import errors
from ...fsutil import unlink_quietly
from .. import protocol
from ..audit import Peer, peer_info
from ..session import boot_clock
from ..vaults import Registry, WouldBlock
from .limits import BUFFER_CAP, MAX_CONNECTIONS, MAX_WORKERS, SMALL_FRAME, STALL, Budget
from .ops import INTERNAL_ERROR, Reply, Service, error_reply

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..audit import AuditLog

_HEADER = struct.Struct(">I")
SOCKET_CHECK_INTERVAL = 10.0
IDLE_EXIT = 3600.0  # nothing unlocked (and no grant) for an hour: exit
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
SEND_BATCH = 256  # chunks per sendmsg (Linux and macOS allow 1 024 buffers)


def _drop_sent(out: collections.deque[memoryview], sent: int) -> None:
    """Remove the chunks `sent` bytes covered from the front of `out` (empty ones too); a chunk
    sent in part keeps its rest."""
    while out and sent >= len(out[0]):
        sent -= len(out.popleft())
    if sent:
        out[0] = out[0][sent:]


class Conn:
    """One client connection, owned by the event loop."""

    __slots__ = ("busy", "closing", "frame", "frame_at", "got", "held_in", "held_out", "idle_at", "inbuf",
                 "last_rx", "mask", "out", "out_at", "paused", "peer", "sock")

    def __init__(self, sock: socket.socket, now: float, peer: Peer | None = None) -> None:
        self.sock: socket.socket | None = sock
        self.peer = peer or Peer()  # who connected (for the audit log)
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


class Daemon:
    """The daemon's socket, event loop and lifetime; requests are the `Service`'s."""

    def __init__(self, socket_path: str, max_connections: int = MAX_CONNECTIONS, *, mlock_ok: bool,
                 audit: AuditLog | None = None) -> None:
        self.socket_path = socket_path
        self.max_connections = max_connections
        self.uid = os.getuid()
        self.pid = os.getpid()
        self.registry = Registry()
        self.budget = Budget(BUFFER_CAP)
        self.audit = audit
        self.service = Service(self.registry, self.budget, pid=self.pid, mlock_ok=mlock_ok, release=self.release,
                               audit=audit)
        self.conns: set[Conn] = set()
        self.done: queue.SimpleQueue[tuple[Conn, Reply]] = queue.SimpleQueue()
        self.paused: collections.deque[Conn] = collections.deque()
        self.backlog: collections.deque[tuple[Conn, dict[str, Any]]] = collections.deque()
        self.workers = 0
        self.listener: socket.socket | None = None
        self.listening = False
        self.socket_id: tuple[int, int] | None = None
        self.sel: selectors.BaseSelector | None = None
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

    @property
    def wake_fd(self) -> int:
        """The write end of the loop's wake pipe (non-blocking): a byte written there wakes the loop."""
        return self._wfd

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

    @property
    def stopping(self) -> bool:
        return self.registry.stopping

    def request_stop(self) -> None:
        """Forget every key and remove the socket now; the event loop then exits."""
        self.registry.stop()
        self.release()
        self._poke()

    def release(self) -> None:
        """Forget every key and grant and remove the socket (when it is still this daemon's)."""
        self.registry.lock_all()
        self.service.grants.clear()
        if self.owns_socket():
            unlink_quietly(self.socket_path)

    def _poke(self) -> None:
        try:
            os.write(self._wfd, b"x")
        except OSError:  # the pipe is full: a wake-up is pending anyway
            pass

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
            folding = self.audit is not None and self.audit.next_deadline() is not None
            events = sel.select(0.5 if self.conns or not self.listening or folding else None)
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
                if self.audit is not None:
                    self.audit.tick()  # folded records whose second has ended
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
                uid, pid = protocol.peer_uid(sock), protocol.peer_pid(sock)
            except OSError:
                uid = pid = None
            now = boot_clock()
            if uid != self.uid or self.stopping:
                sock.close()  # another uid gets not a single byte
                if uid != self.uid:
                    self._refusal(peer_info(pid, uid), "peer_rejected")
                continue
            if len(self.conns) >= self.max_connections and not self._evict_for_slot(now):
                sock.close()  # every connection has a request in service: refuse the newcomer
                continue
            sock.setblocking(False)
            conn = Conn(sock, now, peer_info(pid, uid))
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
        if not self.service.inline(request):
            self._to_worker(conn, request)
            return
        try:
            reply = self.service.handle(request, conn.peer, blocking=False)
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
            reply = self.service.handle(request, conn.peer, blocking=True)
        except BaseException:  # pragma: no cover - handle() answers everything; the loop must hear back
            reply = Reply([INTERNAL_ERROR], False, close=True)
        self.done.put((conn, reply))
        self._poke()

    def _fail(self, conn: Conn, err: errors.KimenError) -> None:
        """An error frame for a broken frame, then close the connection; recorded first (when
        the record cannot be written, the answer is `audit_unavailable`)."""
        try:
            self._refusal(conn.peer, err.reason, strict=True)
        except errors.KimenError as failed:
            err = failed
        reply = error_reply(None, err)
        reply.close = True
        self._deliver(conn, reply)

    def _refusal(self, peer: Peer, outcome: str, *, strict: bool = False) -> None:
        """Record what never became a request (folded per outcome). Nothing is answered for a
        refused peer or a slow frame, so their record is best effort; `strict` raises."""
        if self.audit is None:
            return
        try:
            self.audit.refusal(peer, outcome)
        except errors.KimenError:
            if strict:
                raise

    def _deliver(self, conn: Conn, reply: Reply) -> None:
        """Queue a response (releasing the request's reservation) and send what the socket takes."""
        conn.busy = False
        self._give(conn.held_in)
        conn.held_in = 0
        if reply.stop:
            self.registry.stop()  # keys and socket are gone already; the loop ends (even if the asker hung up)
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
            # One sendmsg per batch of chunks (scatter-gather): a `read` response of 20 values is
            # one system call and one wake-up of the client, not three per value.
            batch = [out[i] for i in range(min(len(out), SEND_BATCH))]
            try:
                sent = sock.sendmsg(batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            _drop_sent(out, sent)
            if sent < sum(len(chunk) for chunk in batch):
                break
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
                if slow_frame:
                    self._refusal(conn.peer, "frame_timeout")
                self._close(conn)

    # -- the timer thread --

    def _timer(self) -> None:
        """Expire keys at their deadlines, check every `SOCKET_CHECK_INTERVAL` that the socket path
        still names this daemon's socket (else lock, leave the path alone and exit), and exit after
        `IDLE_EXIT` with nothing held."""
        next_socket_check = boot_clock() + SOCKET_CHECK_INTERVAL
        while True:
            now = boot_clock()
            tick = self.registry.tick(now)
            if tick is None:  # stopping
                return
            expired, idle_since, deadline = tick
            for entry in expired:
                entry.forget()
            if idle_since is not None and now - idle_since >= IDLE_EXIT and not self.service.grants.live_count():
                self.request_stop()
                return
            if now >= next_socket_check:
                next_socket_check = now + SOCKET_CHECK_INTERVAL
                if not self.owns_socket():  # replaced or removed: lock, leave the path alone, exit
                    self.registry.stop()
                    self.registry.lock_all()
                    self._poke()
                    return
            if expired:
                continue
            self.registry.wait(min(deadline, next_socket_check, now + 5.0) - now)
