"""No bytes a same-user process sends can kill, stall or mislead the session daemon.

A real daemon (started by the installed `kimen session start`) gets, on its socket: every crasher
found so far (kept as explicit regression cases), a frame per wrong-typed field of every op, frames
that are not UTF-8, not JSON, too deep or with numbers out of range, length prefixes at and past
the 64 MiB limit, half-closed sockets, and seeded random and mutated frames. Each frame must be
answered `session_protocol_error` (or `frame_too_large`) and its connection closed — or just
closed — and after every batch the daemon must still answer `status` and serve a real read.
The daemon-op half of the hostile-input sweep (hostile vault paths for every op, and for the
`session` commands) lives here too: never an `internal_error`, an exit 1 or a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import random
import socket
import struct
import threading
import time

import pytest

from kimen import __version__
from kimen.daemon import protocol, requests
from kimen.daemon.client import Connection
from tests.conftest import PASSPHRASE
from tests.e2e.session_helpers import frame, read_frame

VERSION = __version__
VALUE = b"fuzz-value-\x00\xff"
MAX = protocol.MAX_FRAME


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon for the module (start-up is the slow part); each test checks it stays healthy."""
    from tests.conftest import Kimen

    k = Kimen(tmp_path_factory.mktemp("fuzz"))
    k.init_vault()
    k.set("app.token", VALUE)
    k.ok("session", "start", env=k.with_pass())
    d = Daemon(k)
    yield d
    k.run("session", "stop")


class Daemon:
    def __init__(self, k) -> None:
        self.kimen = k
        self.sock_path = str(k.session_dir / "session.sock")
        self.vault = os.path.realpath(k.vault)
        self.pid = self.status()["pid"]

    def status(self) -> dict:
        with Connection(self.sock_path) as conn:
            return conn.call("status", timeout=10)

    def healthy(self) -> None:
        """Still the same process, answering `status` and serving a real read."""
        assert self.status()["pid"] == self.pid
        with Connection(self.sock_path) as conn:
            doc = conn.call("read", vault_path=self.vault, names=["app.token"], timeout=10)
        assert base64.b64decode(doc["secrets"][0]["value_b64"]) == VALUE

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.sock_path)
        return s

    def send(self, data: bytes, *, half_close: bool = False) -> dict | None:
        """Send raw bytes on a new connection; the reply (None when closed without one). A
        protocol error must close the connection."""
        s = self.connect()
        try:
            try:
                s.sendall(data)
                if half_close:
                    s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                return None
            reply = read_frame(s)
            if reply is not None and reply.get("reason") in ("session_protocol_error", "frame_too_large"):
                assert read_frame(s) is None, "the connection stays open after a protocol error"
            return reply
        finally:
            s.close()

    def request(self, doc: dict, **kw) -> dict | None:
        return self.send(frame(body_of(doc)), **kw)


def body_of(doc) -> bytes:
    """JSON as a peer might write it: surrogates as escapes, NaN allowed (the daemon refuses them)."""
    return json.dumps(doc, ensure_ascii=True).encode()


def refused(reply: dict | None) -> bool:
    return reply is None or (reply.get("ok") is False and reply.get("reason") in (
        "session_protocol_error", "frame_too_large"))


def base(op: str, vault: str) -> dict:
    """A valid request of `op` (the fields each test then breaks one at a time)."""
    doc = {"v": 1, "kimen": VERSION, "id": "1", "op": op}
    doc.update({
        "status": {"vault_path": vault},
        "stop": {},
        "unlock": {"vault_path": vault, "passphrase_b64": base64.b64encode(PASSPHRASE.encode()).decode(),
                   "ttl": 600, "max_ttl": 3600, "require_grant": False},
        "lock": {"vault_path": "/nonexistent/not-held.db"},
        "read": {"vault_path": vault, "names": ["app.token"]},
        "write": {"vault_path": vault, "changes": [{"op": "set", "name": "fuzz.written", "value_b64": "eA=="}],
                  "if_generation": None},
        "verify": {"vault_path": vault},
        "grant_create": {"vault_path": vault, "passphrase_b64": base64.b64encode(PASSPHRASE.encode()).decode(),
                         "secrets": ["fuzz.**"], "read_only": True, "ttl": 60},
        "grant_list": {},
        "grant_revoke": {"grant_id": "0123456789abcdef"},
        "read_revision": {"vault_path": vault, "name": "app.token", "revision": 1},
        "restore": {"vault_path": vault, "name": "app.token", "revision": 1},
        "purge_history": {"vault_path": vault, "names": ["app.token"]},
    }[op])
    return doc


# Every crasher found so far, verbatim: each once killed the daemon or made it answer internal_error.
REGRESSIONS: list[tuple[str, bytes]] = [
    ("unquoted key (SystemError in _json on 3.11)", b"{bad}"),
    ("missing colon", b'{"a" 1}'),
    ("number as key", b"{1:2}"),
    ("unterminated string", b'{"op": "sta'),
    ("bad escape", b'{"op": "\\x"}'),
    ("control character in a string", b'{"op": "st\x01atus"}'),
    ("op is a list", body_of({"v": 1, "kimen": VERSION, "op": ["read"]})),
    ("op is an empty list (unhashable: the lookup ran before the guard)", body_of({"op": []})),
    ("op is an object", body_of({"op": {}})),
    ("lone surrogate in id (echoed: encoding the response failed)",
     body_of({"v": 1, "kimen": VERSION, "id": "\ud800", "op": "status"})),
    ("lone surrogate in op", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "\ud800"})),
    ("lone surrogate in a read's vault_path",
     body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "read", "vault_path": "/\ud800", "names": ["a"]})),
    ("lone surrogate in unlock's vault_path (was internal_error)",
     body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "unlock", "vault_path": "/\udcff.db",
              "passphrase_b64": "eA==", "ttl": 60, "max_ttl": 60})),
    ("lone surrogate in a read's names (was internal_error)",
     body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "read", "vault_path": "/x", "names": ["\ud800"]})),
    ("lone surrogate in a grant's scope",
     body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "grant_create", "vault_path": "/x",
              "passphrase_b64": "eA==", "secrets": ["a.\udcff"]})),
    ("lone surrogate in a write's change name (was invalid_secret_name)",
     body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "write", "vault_path": "/x",
              "changes": [{"op": "set", "name": "\ud800", "value_b64": "eA=="}]})),
    ("NaN ttl", b'{"v":1,"kimen":"%s","id":"1","op":"unlock","vault_path":"/x","passphrase_b64":"eA==",'
                b'"ttl":NaN,"max_ttl":60}' % VERSION.encode()),
    ("Infinity", b'{"op":"status","id":Infinity}'),
    ("deep list nesting", b"[" * 100_000),
    ("deep object nesting", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    ("integer of 5000 digits", b'{"op":"status","id":' + b"9" * 5000 + b"}"),
    ("float overflow", b'{"op":"status","v":1e999}'),
    ("bad UTF-8", b'{"op":"\xff\xfe"}'),
    ("truncated UTF-8", b'{"op":"\xe2\x82"}'),
    ("UTF-16", '{"op":"status"}'.encode("utf-16")),
    ("empty body", b""),
    ("not an object", b'"status"'),
    ("null", b"null"),
    ("names is a string", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "read", "vault_path": "/x",
                                   "names": "app.token"})),
    ("a change is a string", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "write", "vault_path": "/x",
                                      "changes": ["set"]})),
    ("if_generation past 64 bits", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "write",
                                            "vault_path": "/x", "changes": [], "if_generation": 2 ** 70})),
    ("ttl is a string", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "unlock", "vault_path": "/x",
                                 "passphrase_b64": "eA==", "ttl": "60"})),
    ("context is a list", body_of({"v": 1, "kimen": VERSION, "id": "1", "op": "status", "context": []})),
    ("v is a string", body_of({"v": "1", "kimen": VERSION, "id": "1", "op": "status"})),
]


@pytest.mark.parametrize("case", REGRESSIONS, ids=[c[0] for c in REGRESSIONS])
def test_regressions(daemon, case):
    _name, body = case
    assert refused(daemon.send(frame(body)))
    daemon.healthy()


# -- every field of every op, with every wrong type --

WRONG = [None, True, False, 0, -1, 2 ** 64, 1.5, "", "x", "\ud800", "\udcff", [], ["x"], [1], [{}], {}, {"a": 1},
         "y" * 5000, [[[[]]]]]


def _wrong_values(kind: str) -> list:
    return [v for v in WRONG if not requests.KINDS[kind](v)]


def test_wrong_type_for_every_field_of_every_op(daemon):
    sent = 0
    for op, fields in requests.OPS.items():
        for field, kind in [*requests.COMMON.items(), *((f, k) for f, (k, _req) in fields.items())]:
            for value in _wrong_values(kind):
                doc = base(op, daemon.vault)
                doc[field] = value
                reply = daemon.request(doc)
                assert refused(reply) and reply is not None, (op, field, value, reply)
                assert reply["reason"] == "session_protocol_error", (op, field, value, reply)
                sent += 1
            # a required field left out
            if field in fields and fields[field][1]:
                doc = base(op, daemon.vault)
                del doc[field]
                assert daemon.request(doc)["reason"] == "session_protocol_error", (op, field)
        daemon.healthy()
    assert sent > 200
    # the change items of a write, field by field
    for field, values in {"op": [None, 1, [], "exec"], "name": [None, 1, []],
                          "value_b64": [None, 1, [], "%%%", "\ud800"], "mode": [None, 1, [], "sometimes"],
                          "new_name": [None, 1, []]}.items():
        for value in values:
            change = {"op": "mv" if field == "new_name" else "set", "name": "fuzz.a", "value_b64": "eA==",
                      "new_name": "fuzz.b"}
            change[field] = value
            doc = {**base("write", daemon.vault), "changes": [change]}
            assert daemon.request(doc)["reason"] == "session_protocol_error", (field, value)
    daemon.healthy()
    with Connection(daemon.sock_path) as conn:  # none of them wrote anything
        names = conn.call("read", vault_path=daemon.vault, names=["app.token"])["secrets"]
    assert [s["name"] for s in names] == ["app.token"]


# -- tokens: every op with garbage, unknown and mutated tokens --

_LENIENT = {"status", "stop", "unlock", "grant_create"}  # answered whatever the token


def test_garbage_tokens_for_every_op(daemon):
    rng = random.Random(11)
    valid = "kimen_grant_v1_0123456789abcdef_" + "A" * 43  # well formed, unknown
    garbage = ["", "x", "kimen_grant_v1_", valid, valid[:-1], valid + "A", "kimen_grant_v1_\u00e9_" + "A" * 43,
               "\x00" * 10, "y" * 70_000]
    garbage += ["".join(rng.choice(valid + "-_=+/ .é") for _ in range(rng.randint(1, 100))) for _ in range(30)]
    for op in requests.OPS:
        if op == "stop":
            continue
        for token in garbage:
            doc = {**base(op, daemon.vault), "token": token}
            if op == "unlock":
                doc["ttl"], doc["max_ttl"] = 3600, 7200  # the fixture's session goes on
            reply = daemon.request(doc)
            assert reply is not None, (op, token[:40])
            if op in _LENIENT:
                assert reply["ok"] is True or reply["reason"] not in ("internal_error", "grant_invalid"), (op, reply)
            else:
                assert reply["ok"] is False and reply["reason"] == "grant_invalid", (op, token[:40], reply)
        daemon.healthy()
    with Connection(daemon.sock_path) as conn:  # the grants minted above (unlock and grant_create ignore tokens)
        for grant in conn.call("grant_list")["grants"]:
            conn.call("grant_revoke", grant_id=grant["grant_id"])


# -- framing: length prefixes, half-closed and slow sockets --


def test_length_prefixes_at_and_past_the_limit(daemon):
    for prefix in (MAX + 1, MAX + 4096, 0x7FFFFFFF, 0xFFFFFFFF):
        reply = daemon.send(struct.pack(">I", prefix) + b"{}")
        assert reply is not None and reply["reason"] == "frame_too_large"
    # exactly at the limit: accepted as a length, then the peer gives up half-way (half-close)
    assert daemon.send(struct.pack(">I", MAX) + b'{"op":', half_close=True) is None
    # exactly at the limit and complete: a real 64 MiB frame is read and answered
    pad = MAX - len(body_of({"v": 1, "kimen": VERSION, "id": "big", "op": "status", "pad": ""}))
    big = body_of({"v": 1, "kimen": VERSION, "id": "big", "op": "status", "pad": "x" * pad})
    assert len(big) == MAX
    reply = daemon.send(frame(big))
    assert reply is not None and reply["ok"] is True and reply["id"] == "big"
    # a zero-length frame, and a prefix split across writes
    assert refused(daemon.send(struct.pack(">I", 0)))
    s = daemon.connect()
    for byte in frame(body_of(base("status", daemon.vault))):
        s.sendall(bytes([byte]))
    assert read_frame(s)["ok"] is True
    s.close()
    daemon.healthy()


def test_half_closed_and_abandoned_sockets(daemon):
    full = frame(body_of(base("status", daemon.vault)))
    for cut in (1, 2, 3, 4, 5, len(full) // 2, len(full) - 1):
        assert daemon.send(full[:cut], half_close=True) is None
    # a whole request then a half-close: answered, then closed
    reply = daemon.send(full, half_close=True)
    assert reply is None or reply["ok"] is True
    # connections dropped mid-frame and mid-response (a read whose reply is never read)
    for data in (full[:7], frame(body_of(base("read", daemon.vault))) * 50):
        s = daemon.connect()
        s.sendall(data)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
        s.close()
    daemon.healthy()


def test_pipelined_frames_are_answered_in_order(daemon):
    """Hundreds of requests in one write: each answered, in order, one at a time (no recursion
    through the buffered frames, no response piled up unread)."""
    s = daemon.connect()
    try:
        data = b"".join(frame(body_of({**base("status", daemon.vault), "id": str(i)})) for i in range(400))
        sender = threading.Thread(target=s.sendall, args=(data,))
        sender.start()
        assert [read_frame(s)["id"] for _ in range(400)] == [str(i) for i in range(400)]
        sender.join()
    finally:
        s.close()
    daemon.healthy()


# -- seeded random and mutated frames --


def _random_json(rng: random.Random, depth: int = 0):
    kinds = ["null", "bool", "int", "big", "float", "str", "surrogate"] + (["list", "obj"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-5, 5)
    if kind == "big":
        return rng.choice([2 ** 63, -(2 ** 63) - 1, 2 ** 200, 10 ** 300])
    if kind == "float":
        return rng.choice([0.5, -1e308, 1e-300, 3.0])
    if kind == "str":
        return "".join(rng.choice("ab/.\\\"\x00\u00e9\u4e2d\U0001f600") for _ in range(rng.randint(0, 12)))
    if kind == "surrogate":
        return rng.choice(["\ud800", "\udfff", "a\udc80b"])
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["op", "v", "id", "kimen", "vault_path", "names", "changes", "ttl", "x"]):
            _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _mutate(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if how == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif how == 1:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif how == 2:
            del data[pos:pos + rng.randint(1, 8)]
        else:
            data[pos:pos] = rng.choice([b"{", b"}", b"[", b'"', b"\\u", b"\\ud800", b",", b":", b"\xff", b"NaN"])
    return bytes(data)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_and_mutated_frames(daemon, seed):
    rng = random.Random(seed)
    # a valid `stop` or `lock` is obeyed (it would end the session the health check reads): kept out
    ops = [op for op in requests.OPS if op not in ("stop", "lock")] + ["exec", "grant_create", ""]
    valid = [body_of(base(op, daemon.vault)) for op in ops if op in requests.OPS]
    for i in range(300):
        roll = rng.random()
        if roll < 0.3:
            body = os.urandom(rng.randint(0, 64)) if i % 2 else bytes(rng.randrange(256) for _ in range(40))
        elif roll < 0.6:
            doc = _random_json(rng)
            if isinstance(doc, dict) and rng.random() < 0.7:
                doc.update({"v": 1, "kimen": VERSION, "op": rng.choice(ops)})
            body = body_of(doc)
        else:
            body = _mutate(rng, rng.choice(valid))
        if b'"stop"' in body or b'"lock"' in body:
            continue
        reply = daemon.send(frame(body), half_close=rng.random() < 0.1)
        if reply is not None:  # anything may be answered, but never a crash or an internal error
            assert reply.get("reason") != "internal_error", (seed, i, body[:200], reply)
        if i % 100 == 99:
            daemon.healthy()
    daemon.healthy()


# -- hostile vault paths, for every op that takes one (the daemon-op half of the exit-1 sweep) --


@pytest.fixture(scope="module")
def hostile_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    fifo = root / "fifo.db"
    os.mkfifo(fifo)
    (root / "dir.db").mkdir()
    loop = root / "loop.db"
    loop.symlink_to(loop)
    (root / "binary.db").write_bytes(os.urandom(4096))
    with open(root / "huge.db", "wb") as f:
        f.truncate(8 * 1024 ** 3)  # sparse: 8 GiB that are not a vault
    (root / "text.db").write_text("SQLite format 3\0 but not really")
    return {
        "missing": str(root / "missing.db"), "directory": str(root / "dir.db"), "fifo": str(fifo),
        "symlink loop": str(loop), "/dev/zero": "/dev/zero", "huge": str(root / "huge.db"),
        "binary": str(root / "binary.db"), "text": str(root / "text.db"), "relative": "vault.db",
        "empty": "", "nul": "/tmp/a\0b", "surrogate": "/tmp/\udcff.db", "long": "/" + "a" * 5000,
        "the socket": None,
    }


def test_hostile_vault_paths_for_every_op(daemon, hostile_paths):
    paths = {**hostile_paths, "the socket": daemon.sock_path}
    for op, fields in requests.OPS.items():
        if "vault_path" not in fields or op == "lock":
            continue
        for label, path in paths.items():
            doc = {**base(op, daemon.vault), "vault_path": path}
            started = time.monotonic()
            reply = daemon.request(doc)
            assert time.monotonic() - started < 10, (op, label)  # a FIFO must not hang the daemon
            # status answers about any path; a lone surrogate is not text at all
            assert reply is not None and reply["ok"] is (op == "status" and label != "surrogate"), (op, label, reply)
            if not reply["ok"]:
                assert reply["reason"] in ("session_protocol_error", "session_locked", "invalid_vault_file",
                                           "vault_not_found", "vault_failed", "vault_read_only"), (op, label, reply)
    daemon.healthy()


@pytest.mark.parametrize("label", ["missing", "directory", "fifo", "symlink loop", "/dev/zero", "huge", "binary",
                                   "text", "surrogate", "long"])
def test_hostile_vault_paths_for_the_session_commands(daemon, hostile_paths, label):
    k = daemon.kimen
    path = hostile_paths[label]
    if label == "surrogate":  # a file really named with a byte that is not UTF-8, holding a real vault
        path = os.fsdecode(os.path.join(os.fsencode(os.path.dirname(hostile_paths["missing"])), b"\xff.db"))
        with open(k.vault, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        os.chmod(path, 0o600)
    for args in (("session", "start"), ("session", "status"), ("session", "lock"), ("secret", "get", "app.token",
                                                                                   "--unsafe-stdout")):
        done = k.run(*args, "--vault", path, "--json", env=k.with_pass() if args[1] == "start" else None,
                     timeout=60)
        assert done.code not in (1, 0) or args[1] in ("status", "lock"), (args, label, done.err)
        assert done.code != 1, (args, label, done.err)
    daemon.healthy()
