"""Helpers of the session e2e tests: the status document, and raw frames on the daemon's socket
(what a hostile or broken peer sends, bypassing kimen's client)."""

from __future__ import annotations

import json
import socket
import struct


def status(kimen, **kw) -> dict:
    """`kimen session status --json`."""
    return kimen.ok("session", "status", "--json", **kw).json()


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def json_frame(doc) -> bytes:
    """A frame of JSON as any peer might write it: surrogates as escapes, NaN allowed."""
    return frame(json.dumps(doc, ensure_ascii=True).encode())


def read_frame(s: socket.socket) -> dict | None:
    """The next response on `s`, or None when the daemon closed the connection first."""
    data = b""
    try:
        for size in (4, None):
            want = struct.unpack(">I", data)[0] if size is None else size
            data = b""
            while len(data) < want:
                chunk = s.recv(want - len(data))
                if not chunk:
                    return None
                data += chunk
    except ConnectionResetError:
        return None
    return json.loads(data)
