"""Grant tokens: their text, and how a client presents one (docs/agents.md, "Tokens").

A token is ``kimen_grant_v1_<grant id>_<secret>``: the grant id is ``[0-9A-Za-z]+`` (public: it
names the grant in `session grants` and in the audit log), the secret is 32 random bytes in
unpadded base64url (43 characters). The daemon keeps only the SHA-256 of the whole text
(`kimen.daemon.grants`); this module owns the text's shape, so minting and checking agree.

A client presents the token from ``--token-file PATH`` or ``KIMEN_SESSION_TOKEN``; the file wins,
with warning ``token_source_conflict`` when both are set. The file is checked on the opened
descriptor, never by path first: a regular file owned by the user and not readable by group or
others, else ``unsafe_token_file``; its first line without CR/LF is the token.

Client side and on the hot path (a token may be set for every command): stdlib only, no `re`, no
`base64`, nothing read unless a token is given. Nothing here prints, logs or raises a token's text.
"""

from __future__ import annotations

import os
import stat

from .. import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

ENV = "KIMEN_SESSION_TOKEN"
PREFIX = "kimen_grant_v1_"
SECRET_BYTES = 32
SECRET_CHARS = 43  # 32 bytes in unpadded base64url
MAX_ID_CHARS = 32
MAX_CHARS = len(PREFIX) + MAX_ID_CHARS + 1 + SECRET_CHARS
FILE_LIMIT = 4096  # a token file's first line must end within this many bytes

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64URL = _ALNUM + "-_"  # in value order: 'A' is 0, '_' is 63
_ID_SET = frozenset(_ALNUM)
_SECRET_SET = frozenset(_B64URL)
# 43 characters carry 258 bits for 256: the canonical last character has its two low bits clear
_LAST_SET = frozenset(_B64URL[::4])


def compose(grant_id: str, secret: bytes) -> str:
    """The token text for `grant_id` and a 32-byte `secret`."""
    import binascii

    if not is_grant_id(grant_id) or len(secret) != SECRET_BYTES:
        raise ValueError("a grant id of [0-9A-Za-z] and a 32-byte secret are required")
    text = binascii.b2a_base64(secret, newline=False).decode().rstrip("=")
    return f"{PREFIX}{grant_id}_{text.replace('+', '-').replace('/', '_')}"


def is_grant_id(text: str) -> bool:
    return 0 < len(text) <= MAX_ID_CHARS and all(c in _ID_SET for c in text)


def grant_id_of(token: str) -> str | None:
    """The grant id of a well-formed token, None for anything else (garbage, another version,
    a secret of the wrong length or alphabet, a non-canonical last character)."""
    if len(token) > MAX_CHARS or not token.startswith(PREFIX):
        return None
    grant_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not is_grant_id(grant_id) or len(secret) != SECRET_CHARS:
        return None
    if not all(c in _SECRET_SET for c in secret) or secret[-1] not in _LAST_SET:
        return None
    return grant_id


# -- presenting a token (client side) --


def _file_problem(st: os.stat_result) -> str | None:
    """Why the opened token file is refused, or None."""
    mode = st.st_mode
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        return f"is {kind}, not a regular file"
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by you"
    if mode & 0o044:
        return f"readable by group or others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
    return None


def read_token_file(path: str) -> str:
    """The token in the file at `path`: its first line without CR/LF.

    The open never blocks (a FIFO without a writer would stall it) and follows symlinks; the checks
    apply to what was opened (`fstat`), so a file swapped in after a check cannot slip through.
    Anything refused or unreadable is `unsafe_token_file` naming the path and the problem.
    """

    def unsafe(problem: str) -> errors.KimenError:
        return errors.UnsafeTokenFile(path=path, problem=problem)

    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise unsafe(exc.strerror or "cannot open") from None
    try:
        problem = _file_problem(os.fstat(fd))
        if problem:
            raise unsafe(problem)
        os.set_blocking(fd, True)
        data = b""
        while len(data) <= FILE_LIMIT and b"\n" not in data:
            chunk = os.read(fd, FILE_LIMIT + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise unsafe(exc.strerror or "cannot read") from None
    finally:
        os.close(fd)
    line, newline, _rest = data.partition(b"\n")
    if len(line) > FILE_LIMIT or (not newline and len(data) > FILE_LIMIT):
        raise unsafe(f"its first line is longer than {FILE_LIMIT} bytes")
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        token = line.decode("utf-8")
    except UnicodeDecodeError:
        raise unsafe("its first line is not UTF-8 text") from None
    if not token:
        raise unsafe("its first line is empty")
    return token


def presented(env: Mapping[str, str], token_file: str | None = None) -> str | None:
    """The token this command presents to the daemon: `token_file`'s (which wins, with a warning
    when the variable is set too), else ``KIMEN_SESSION_TOKEN`` (empty counts as unset)."""
    if token_file is not None:
        token = read_token_file(token_file)
        if env.get(ENV):
            from ..output import warn

            warn(f"both --token-file and {ENV} are set; the token file is used ({token_file})",
                 reason="token_source_conflict")
        return token
    return env.get(ENV) or None


def with_token_file(env: Mapping[str, str], token_file: str) -> dict[str, str]:
    """A copy of `env` presenting `token_file`'s token as ``KIMEN_SESSION_TOKEN`` (`presented`'s
    rules: the file wins, with a warning when the variable is set too). The variable is private:
    kimen passes it to no child."""
    token = presented(env, token_file)
    return {**env, ENV: token} if token else dict(env)
