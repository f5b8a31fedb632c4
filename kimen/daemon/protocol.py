"""The session wire protocol: framing, versions and where the socket lives.

A frame is a 4-byte big-endian length then that many bytes of UTF-8 JSON (one object). Sizes are
checked on the length prefix before anything else is read. Requests carry the protocol version
and the kimen version; `status` and `stop` keep their shapes forever so a client can talk to a
daemon of another version. Stdlib only: this module is on the hot path.

Any bytes decode to a dict or `SessionProtocolError` (never another exception: the daemon must
survive every frame), and any document encodes (a string that is not valid Unicode, such as a lone
surrogate echoed from a request, is written as a JSON escape instead of failing). A `read` is split
by the client so that no response exceeds `READ_RESPONSE_BUDGET` (`read_batches`).
"""

from __future__ import annotations

import os
import sys

from .. import __version__, errors, paths
from ..jsontext import compact_json as dumps
from ..jsontext import read_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Mapping
    from typing import Any, Literal, NotRequired, TypedDict

    # The frames' shapes, for the type checker only (`typing` is not imported at run time). A
    # request is any JSON object until `kimen.daemon.requests.check` accepted it as a `Request`.

    class Request(TypedDict, total=False):
        v: int
        kimen: str
        id: str | int | None
        op: str
        token: str
        context: dict[str, Any]
        vault_path: str | None  # `status`, `lock`: optional; the store ops and `unlock`: required
        passphrase_b64: str  # unlock, grant_create
        ttl: int | float
        max_ttl: int | float
        require_grant: bool
        names: list[str]  # read, purge_history
        changes: list[dict[str, Any]]  # write: {op, name, value_b64?, mode?, new_name?}
        if_generation: int | None
        baseline: Any
        secrets: list[str]  # grant_create: the scope (exact names and globs)
        read_only: bool  # grant_create
        grant_id: str  # grant_revoke
        name: str  # read_revision, restore
        revision: int  # read_revision, restore
        history_op: str | None  # write: what replaced values in their history rows
        history_keep: int  # write, restore: the client's config `history.keep` (0-100; default 10)

    class VaultState(TypedDict):
        """An unlocked vault in `status`, `unlock` and `lock` responses."""

        vault_path: str
        vault_id: str
        state: Literal["unlocked"]
        unlocked_at: str
        idle_expires_at: str
        max_expires_at: str
        ttl_seconds: float
        max_ttl_seconds: float
        mlock: bool

    class ExpiredState(TypedDict):
        """A vault whose TTL ran out (until lock, unlock or stop)."""

        vault_path: str
        vault_id: str
        state: Literal["expired"]
        unlocked_at: str
        ttl_seconds: float
        max_ttl_seconds: float
        expired_at: str
        expired_by: Literal["idle_ttl", "max_ttl"]

    class Status(TypedDict):
        """The `status` answer (its shape is frozen: any version's client reads it)."""

        running: bool
        pid: int
        version: str
        protocol: int
        require_grant: bool
        mlock: bool
        vaults: list[VaultState | ExpiredState]
        grant_count: int
        held: NotRequired[bool]  # `lock` answers a status with this added

PROTOCOL = 1
VERSION = __version__
MAX_FRAME = 64 * 1024 * 1024
FRAME_TIMEOUT = 5.0  # a frame must arrive within 5 s of its first byte
# Session sockets whose daemon took a request of this process and did not answer in time (the fast
# path's read): the normal path then takes it as busy at once instead of waiting as long again.
UNANSWERED: set[str] = set()
IDLE_TIMEOUT = 10.0  # a connection with no request for 10 s is closed
READ_BATCH = 1000  # a client splits reads of more names into several requests
READ_RESPONSE_BUDGET = 48 * 1024 * 1024  # ... and of more bytes: each response stays under this
SOCKET_NAME = "session.sock"
LOCK_NAME = "session.lock"
FROZEN_OPS = frozenset({"status", "stop"})  # answered whatever the peer's version
# AF_UNIX sun_path: 108 bytes on Linux, 104 on the BSDs and macOS, including the final NUL
MAX_SOCKET_PATH = 107 if os.uname().sysname == "Linux" else 103

_PEERCRED_SIZE = 12  # struct ucred: pid, uid, gid (three 32-bit integers)


class PeerClosed(Exception):
    """The peer closed the connection cleanly between frames (internal)."""


def socket_path(env: Mapping[str, str]) -> str:
    """`<session dir>/session.sock`; `SocketPathTooLong` past the platform limit."""
    path = os.path.join(paths.session_dir(env), SOCKET_NAME)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise errors.SocketPathTooLong(path=path)
    return path


def encode(doc: dict[str, Any]) -> bytes:
    """One frame: the length prefix and the compact JSON (`FrameTooLarge` past `MAX_FRAME`)."""
    return frame(dump_bytes(doc))


def frame(body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise errors.FrameTooLarge()
    return len(body).to_bytes(4, "big") + body


def dump_bytes(doc: Any) -> bytes:
    """UTF-8 JSON of `doc`; strings that are not valid Unicode (lone surrogates) become `\\uXXXX`
    escapes instead of failing, so echoing a hostile request's field can never raise."""
    try:
        return dumps(doc).encode()
    except UnicodeEncodeError:
        import json

        return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


def decode(body: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """A frame's JSON object; `SessionProtocolError` for anything else (bad UTF-8, bad JSON,
    nesting deeper than the interpreter's recursion limit, a non-object)."""
    try:
        doc = loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError):
        raise errors.SessionProtocolError() from None
    if not isinstance(doc, dict):
        raise errors.SessionProtocolError()
    return doc


def utf8(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogates), i.e. can be written as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def read_item_size(name: str, size: int) -> int:
    """An upper bound of the bytes one `{name, value_b64, revision}` item takes in a response."""
    return len(name) + 4 * ((size + 2) // 3) + 64


def read_batches(names: list[str], sizes: Mapping[str, int] | None, largest: int) -> list[list[str]]:
    """`names` in requests of at most `READ_BATCH` names whose responses stay under
    `READ_RESPONSE_BUDGET`. Without `sizes` every value counts as `largest` (the largest legal
    value); with them, a name they lack (a missing secret) counts as empty."""
    batches: list[list[str]] = []
    batch: list[str] = []
    used = 0
    for name in names:
        size = largest if sizes is None else sizes.get(name, 0)
        cost = read_item_size(name, size)
        if batch and (len(batch) >= READ_BATCH or used + cost > READ_RESPONSE_BUDGET):
            batches.append(batch)
            batch, used = [], 0
        batch.append(name)
        used += cost
    if batch:
        batches.append(batch)
    return batches


# -- values: standard base64 (`value_b64`) --------------------------------------------------------
# `binascii` loads libz as it is imported (~0.3 ms, a tenth of a `kimen run`'s own work): values up
# to `_SHORT_B64` characters in the canonical shape are decoded with bytes.translate and int(),
# which `a2b_base64(strict_mode=True)` reads the same (tests/test_protocol_json.py compares them);
# anything else, and every longer value, is read by binascii itself.
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# each char: two octal digits, its index // 8 and index % 8 (literals: no loop at import)
_B64_HIGH = bytes.maketrans(_B64, b"0000000011111111222222223333333344444444555555556666666677777777")
_B64_LOW = bytes.maketrans(_B64, b"01234567" * 8)
_SHORT_B64 = 4096


def value_from_b64(text: str) -> bytes:
    """`binascii.a2b_base64(text, strict_mode=True)` (`binascii.Error`, a `ValueError`, on bad input)."""
    if len(text) <= _SHORT_B64 and len(text) % 4 == 0 and text.isascii():
        data = text.encode()
        body = data.rstrip(b"=")
        if len(data) - len(body) <= 2 and not body.translate(None, _B64):
            if not body:
                return b""
            digits = bytearray(2 * len(body))
            digits[0::2] = body.translate(_B64_HIGH)
            digits[1::2] = body.translate(_B64_LOW)
            size = len(body) * 3 // 4
            return (int(digits, 8) >> (len(body) * 6 - size * 8)).to_bytes(size, "big")
    from binascii import a2b_base64

    return a2b_base64(text, strict_mode=True)


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """`json.loads` of UTF-8 bytes (`ValueError` for anything that is not one JSON value,
    `UnicodeDecodeError` for bad UTF-8, `RecursionError` for deep nesting); frames are read with
    `json`'s own semantics without importing it (`kimen.jsontext`)."""
    return read_json(body if isinstance(body, str) else str(body, "utf-8"))


def send(sock: _socket.socket, doc: dict[str, Any]) -> None:
    sock.sendall(encode(doc))


def _recv_exact(sock: _socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise errors.SessionProtocolError(message="session connection closed mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def receive(sock: _socket.socket, *, idle: float | None = None, limit: int = MAX_FRAME) -> dict[str, Any]:
    """Read one frame. `idle` bounds the wait for its first byte (then `FRAME_TIMEOUT` for the rest).

    Raises `PeerClosed` on a clean close before a frame, `FrameTooLarge` when the length prefix
    exceeds `limit` (nothing more is read), `SessionProtocolError` on a short or malformed frame,
    and `TimeoutError` (an OSError) when the peer is too slow.
    """
    sock.settimeout(idle)
    first = sock.recv(4)
    if not first:
        raise PeerClosed()
    sock.settimeout(FRAME_TIMEOUT)
    header = first if len(first) == 4 else first + _recv_exact(sock, 4 - len(first))
    length = int.from_bytes(header, "big")
    if length > limit:
        raise errors.FrameTooLarge()
    return decode(_recv_exact(sock, length))


def peer_uid(sock: _socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED, or getpeereid on the BSDs)."""
    import _socket

    if hasattr(_socket, "SO_PEERCRED"):
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED_SIZE)
        return int.from_bytes(creds[4:8], sys.byteorder, signed=True)
    try:  # pragma: no cover - macOS / BSD
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        uid, gid = ctypes.c_uint32(), ctypes.c_uint32()
        if libc.getpeereid(sock.fileno(), ctypes.byref(uid), ctypes.byref(gid)) != 0:
            return None
        return uid.value
    except (OSError, AttributeError):  # pragma: no cover
        return None


def peer_pid(sock: _socket.socket) -> int | None:
    import _socket

    if not hasattr(_socket, "SO_PEERCRED"):  # pragma: no cover
        return None
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED_SIZE)
    return int.from_bytes(creds[0:4], sys.byteorder, signed=True)


def error_fields(err: errors.KimenError) -> dict[str, Any]:
    """The failure part of a response: reason, message, hint and the envelope's context fields."""
    doc: dict[str, Any] = {"ok": False, "reason": err.reason, "message": err.message}
    if err.hint_text:
        doc["hint"] = err.hint_text
    for key, value in err.fields.items():
        if key in errors.CONTEXT_FIELDS:
            doc.setdefault(key, value)
    return doc


def raise_for(response: dict[str, Any]) -> None:
    """Re-raise a failure response as the `KimenError` class registered for its reason."""
    if response.get("ok") is True:
        return
    reason = response.get("reason")
    if not isinstance(reason, str):
        raise errors.SessionProtocolError()
    cls = errors.error_class(reason)
    message = response.get("message") if isinstance(response.get("message"), str) else None
    hint = response.get("hint") if isinstance(response.get("hint"), str) else None
    fields = {k: v for k, v in response.items() if k in errors.CONTEXT_FIELDS}
    if reason == "secret_not_found":
        raise errors.SecretNotFound(list(fields.get("missing") or []))
    if reason == "secret_exists":
        raise errors.SecretExists(list(fields.get("existing") or []))
    if cls.reason != reason:  # unknown reason (a newer daemon): keep its words, not its code
        raise errors.SessionProtocolError(message=message or "session protocol error")
    raise cls(message, hint=None if hint is None else hint.split("\n"), **fields)  # its lines, as the daemon sent them
