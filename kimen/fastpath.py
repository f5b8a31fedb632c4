"""`kimen secret get NAME --unsafe-stdout` served by a live session, without argparse.

Reading one value through the session is the most frequent command of scripts and agents; with
the normal path, argparse, `re`, `enum`, `json` and `socket` cost more than the interpreter's own
start-up. This module recognises exactly two argv shapes,

    secret get NAME --unsafe-stdout
    secret get --unsafe-stdout NAME

and handles only the case where everything is plain: no explicit passphrase source and no grant
token in the environment, a valid secret name, the vault from `KIMEN_VAULT` or the default path
(no config file), a safe session directory, a daemon of this uid and version that returns the
value. **Anything else — any doubt, any error — returns None and the normal parser runs the
command from the start**, so every message, warning, fallback and exit code comes from the one
parser of truth (`kimen.cli`). `tests/e2e/test_session_fastpath.py` checks both paths give the
same exit code, stdout and stderr across states (live, locked, stopped, missing secret, invalid
name, explicit passphrase, unsafe session directory, …).

The request is the protocol's `read` frame; the response is accepted only in the exact shape this
version's daemon writes (a daemon of another version refuses the request). Stdlib C modules only:
`_socket`, `binascii`.
"""

from __future__ import annotations

import os
import sys

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Defer(Exception):
    """Not the plain case: let the normal parser run the command."""


def secret_get(argv: list[str]) -> int | None:
    """Exit code when the fast path served the command, else None (nothing was printed). A value
    read but not written (a full disk on stdout) raises the OSError: `kimen.__main__` reports it."""
    if len(argv) != 4 or argv[0] != "secret" or argv[1] != "get" or sys.stdout is None:
        return None
    if argv[2] == "--unsafe-stdout":
        name = argv[3]
    elif argv[3] == "--unsafe-stdout":
        name = argv[2]
    else:
        return None
    try:
        value = _read(name)
    except (_Defer, OSError, ValueError, KeyError, RuntimeError):
        return None
    out = sys.stdout
    out.flush()
    out.buffer.write(value)
    out.buffer.flush()
    return 0


def _valid_name(name: str) -> bool:
    """The secret-name rule of `kimen.values.check_secret_name` (ASCII letters, digits, `_` and `-`
    in non-empty dot-separated segments, at most 128, not starting with `-`). A copy on purpose:
    importing `kimen.values` costs this command ~0.15 ms (2 % of it, against a 1.3x budget it
    meets by little); tests/e2e/test_session_fastpath.py checks that the two rules agree."""
    if not 0 < len(name) <= 128 or name[0] == "-" or not name.isascii():
        return False
    return all(segment and _NAME_CHARS.issuperset(segment) for segment in name.split("."))


def _quote(text: str) -> str:
    """A JSON string for plain printable ASCII; anything needing escapes defers."""
    if not text.isascii() or not text.isprintable() or '"' in text or "\\" in text:
        raise _Defer()
    return f'"{text}"'


def _read(name: str) -> bytes:
    env = os.environ
    if env.get("KIMEN_PASSPHRASE") or env.get("KIMEN_SESSION_TOKEN") or not _valid_name(name):
        raise _Defer()
    from . import paths
    from .daemon import protocol

    vault = env.get("KIMEN_VAULT", "")
    if vault:
        path = paths.absolute(vault)
    else:
        if not paths.config_absent(env):  # vault.path may be configured: the normal path
            raise _Defer()
        path = paths.default_vault(env)
    if not os.path.exists(path):
        raise _Defer()
    canonical = os.path.realpath(path)
    try:
        sock_path = protocol.socket_path(env)
    except Exception:
        raise _Defer() from None
    st = os.lstat(os.path.dirname(sock_path))
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise _Defer()
    body = (f'{{"v":{protocol.PROTOCOL},"kimen":{_quote(protocol.VERSION)},"id":"1","op":"read",'
            f'"vault_path":{_quote(canonical)},"names":[{_quote(name)}]}}').encode()
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(sock_path)
        if protocol.peer_uid(sock) != os.getuid():  # before sending anything
            raise _Defer()
        sock.sendall(len(body).to_bytes(4, "big") + body)
        sock.settimeout(60.0)
        length = int.from_bytes(_recv(sock, 4), "big")
        if length > protocol.MAX_FRAME:
            raise _Defer()
        reply = _recv(sock, length)
    finally:
        sock.close()
    head = f'{{"v":{protocol.PROTOCOL},"id":"1","ok":true,"secrets":[{{"name":{_quote(name)},"value_b64":"'.encode()
    if not reply.startswith(head):
        raise _Defer()
    encoded, sep, tail = reply[len(head):].partition(b'"')
    revision = tail[len(b',"revision":'):-len(b"}]}")]
    if not sep or not tail.startswith(b',"revision":') or not tail.endswith(b"}]}") or not revision.isdigit():
        raise _Defer()
    import binascii

    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except binascii.Error:
        raise _Defer() from None


def _recv(sock, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise _Defer()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
