"""Units of the session daemon: frame encoding and limits over a real socket pair, error round
trips, deadlines (on explicit clock values), TTL rules and the locked key buffer."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from kimen import errors
from kimen.daemon import protocol
from kimen.daemon.session import Deadlines, LockedKey, boot_clock, ttl_problem
from kimen.sensitive import Sensitive


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def test_frame_round_trip(pair):
    a, b = pair
    doc = {"v": 1, "op": "status", "text": "ünïcode", "n": [1, 2, 3]}
    protocol.send(a, doc)
    assert protocol.receive(b, idle=5) == doc
    frame = protocol.encode(doc)
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4


def test_several_requests_on_one_connection_and_split_writes(pair):
    a, b = pair
    frames = protocol.encode({"i": 1}) + protocol.encode({"i": 2})

    def dribble():
        for byte in frames:
            a.sendall(bytes([byte]))

    t = threading.Thread(target=dribble)
    t.start()
    assert protocol.receive(b, idle=5) == {"i": 1}
    assert protocol.receive(b, idle=5) == {"i": 2}
    t.join()


def test_oversize_prefix_is_refused_before_reading_the_body(pair):
    a, b = pair
    a.sendall(struct.pack(">I", protocol.MAX_FRAME + 1) + b"{}")
    with pytest.raises(errors.FrameTooLarge):
        protocol.receive(b, idle=5)
    assert b.recv(10) == b"{}"  # the body was left unread
    a.sendall(struct.pack(">I", 100) + b"x" * 100)
    with pytest.raises(errors.FrameTooLarge):
        protocol.receive(b, idle=5, limit=99)


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b"\xff\xfe", b'"text"', b"{" * 100000])
def test_malformed_frames(pair, body):
    a, b = pair
    a.sendall(struct.pack(">I", len(body)) + body)
    with pytest.raises(errors.SessionProtocolError):
        protocol.receive(b, idle=5)


def test_clean_close_short_frame_and_timeouts(pair):
    a, b = pair
    a.sendall(struct.pack(">I", 10) + b"{}")
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(errors.SessionProtocolError):
        protocol.receive(b, idle=5)
    c, d = socket.socketpair()
    try:
        c.close()
        with pytest.raises(protocol.PeerClosed):
            protocol.receive(d, idle=5)
    finally:
        d.close()
    e, f = socket.socketpair()
    try:
        with pytest.raises(TimeoutError):
            protocol.receive(f, idle=0.05)
    finally:
        e.close()
        f.close()


def test_encode_refuses_oversize(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_FRAME", 10)
    with pytest.raises(errors.FrameTooLarge):
        protocol.encode({"long": "x" * 20})


def test_peer_uid_is_ours(pair):
    import os

    assert protocol.peer_uid(pair[0]) == os.getuid()


@pytest.mark.parametrize("err", [
    errors.SecretNotFound(["b", "a"]),
    errors.SecretExists(["x"]),
    errors.SessionLocked(vault="/v.db"),
    errors.WrongPassphrase(),
    errors.InvalidTtl(detail="bad"),
])
def test_errors_round_trip(err):
    doc = protocol.error_fields(err)
    with pytest.raises(errors.KimenError) as raised:
        protocol.raise_for(doc)
    assert type(raised.value) is type(err)
    assert raised.value.message == err.message and raised.value.reason == err.reason
    assert raised.value.envelope(34) == err.envelope(34)


def test_unknown_reason_is_a_protocol_error():
    with pytest.raises(errors.SessionProtocolError):
        protocol.raise_for({"ok": False, "reason": "from_the_future", "message": "x"})
    with pytest.raises(errors.SessionProtocolError):
        protocol.raise_for({"ok": False})
    protocol.raise_for({"ok": True})


def test_socket_path_limit():
    assert protocol.socket_path({"KIMEN_SESSION_DIR": "/tmp/ks"}) == "/tmp/ks/session.sock"
    with pytest.raises(errors.SocketPathTooLong):
        protocol.socket_path({"KIMEN_SESSION_DIR": "/tmp/" + "x" * 200})


def test_deadlines_idle_and_max():
    d = Deadlines(ttl=10, max_ttl=25, now=100.0)
    assert (d.idle_at, d.max_at) == (110.0, 125.0)
    assert not d.expired(109.9) and d.expired(110.0)
    d.touch(105.0)
    assert d.idle_at == 115.0 and not d.expired(114.0)
    d.touch(120.0)  # activity never extends past the max deadline
    assert d.idle_at == 125.0
    assert not d.expired(124.9) and d.expired(125.0)
    assert d.next_deadline() == 125.0


def test_deadlines_idle_capped_at_start():
    d = Deadlines(ttl=10, max_ttl=10, now=0.0)
    assert d.idle_at == d.max_at == 10.0


def test_boot_clock_is_monotonic():
    a = boot_clock()
    assert boot_clock() >= a


@pytest.mark.parametrize(("ttl", "max_ttl", "ok"), [
    (1, 1, True), (900, 28800, True), (7 * 86400, 7 * 86400, True), (0, 10, False), (10, 0, False),
    (11, 10, False), (10, 7 * 86400 + 1, False), (-1, 10, False), (0.5, 1, True),
])
def test_ttl_rules(ttl, max_ttl, ok):
    assert (ttl_problem(ttl, max_ttl) is None) is ok


def test_locked_key_holds_and_wipes():
    source = Sensitive(bytes(range(32)))
    key = LockedKey(source)
    assert len(source) == 0  # the source is wiped
    assert key.reveal() == bytes(range(32)) and bytes(key.view()) == bytes(range(32))
    assert repr(key) == "<Sensitive: hidden>"
    page = key._map
    key.wipe()
    assert len(key) == 0 and page.closed
    key.wipe()  # idempotent


def test_drop_sent_keeps_exactly_what_the_socket_did_not_take():
    """The daemon sends a response's chunks with one sendmsg per batch; what the socket took is
    removed from the front, a chunk sent in part keeps its rest, empty chunks never stall it."""
    from collections import deque

    from kimen.daemon.server.loop import _drop_sent

    def left(chunks: list[bytes], sent: int) -> list[bytes]:
        out = deque(memoryview(c) for c in chunks)
        _drop_sent(out, sent)
        return [bytes(c) for c in out]

    chunks = [b"", b"head", b"", b"value", b"tail"]
    assert left(chunks, 0) == [b"head", b"", b"value", b"tail"]
    assert left(chunks, 2) == [b"ad", b"", b"value", b"tail"]
    assert left(chunks, 4) == [b"value", b"tail"]
    assert left(chunks, 6) == [b"lue", b"tail"]
    assert left(chunks, 13) == []
    assert b"".join(left(chunks, 7)) == b"".join(chunks)[7:]
