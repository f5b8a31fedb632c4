"""The age header pre-parser: stdlib only, run before pyrage sees a byte.

pyrage (rust-age) is lenient in places the age specification is not, and it would run any scrypt
work factor it is given. kimen therefore removes the ASCII armor itself (strictly) and checks the
binary header: the version line, every stanza (arguments, 64-column canonical base64 body ending
in a short line), the MAC line, the 64-stanza and 64 KiB limits, the shapes of the stanza types
it knows, and that an `scrypt` stanza is alone with a work factor of at most 20. Only then does
the caller hand the binary file to pyrage, which checks the MAC, unwraps the file key and
decrypts the payload.

Every refusal is a `KimenError` whose message names the problem and never echoes file content.
"""

from __future__ import annotations

import binascii

from . import errors

VERSION_LINE = b"age-encryption.org/v1"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
MAX_STANZAS = 64
MAX_HEADER_BYTES = 64 * 1024
MAX_SCRYPT_WORK_FACTOR = 20
PQ_STANZA_TYPES = frozenset({b"mlkem768x25519"})

# Byte-set tests rather than regular expressions: `re` costs ~2 ms of start-up, which `sync status`
# (it checks a head's header) should not pay.
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _is_b64_unpadded(text: bytes) -> bool:
    """`[A-Za-z0-9+/]*`"""
    return not text.translate(None, _B64_ALPHABET)


def _is_b64_padded(text: bytes) -> bool:
    """`[A-Za-z0-9+/]*={0,2}`"""
    body = text.rstrip(b"=")
    return len(text) - len(body) <= 2 and _is_b64_unpadded(body)


def _is_work_factor(text: bytes) -> bool:
    """`[1-9][0-9]*` (ASCII digits: `bytes.isdigit` knows no others)"""
    return text.isdigit() and not text.startswith(b"0")


def _b64decode(text: bytes) -> bytes:
    """`base64.b64decode(text, validate=True)` (which is exactly this), without importing base64."""
    return binascii.a2b_base64(text, strict_mode=True)


def _b64encode(data: bytes) -> bytes:
    """`base64.b64encode(data)`, without importing base64."""
    return binascii.b2a_base64(data, newline=False)
_WHITESPACE = b" \t\r\n"


class Stanza:
    """One recipient stanza: its type, further arguments and decoded body."""

    __slots__ = ("args", "body", "type")

    def __init__(self, type_: bytes, args: list[bytes], body: bytes) -> None:
        self.type = type_
        self.args = args
        self.body = body


class Header:
    """A checked age header; `payload_offset` is where the payload (nonce, chunks) starts."""

    __slots__ = ("payload_offset", "stanzas")

    def __init__(self, stanzas: list[Stanza], payload_offset: int) -> None:
        self.stanzas = stanzas
        self.payload_offset = payload_offset

    @property
    def is_scrypt(self) -> bool:
        return any(s.type == b"scrypt" for s in self.stanzas)


def _invalid(detail: str) -> errors.KimenError:
    return errors.BundleInvalid(detail=detail)


def is_armored(data: bytes) -> bool:
    return data.lstrip(_WHITESPACE).startswith(ARMOR_BEGIN)


def dearmor(data: bytes) -> bytes:
    """The binary age file inside strict ASCII armor (whitespace around it and CRLF allowed)."""
    text = data.lstrip(_WHITESPACE)
    if not text.startswith(ARMOR_BEGIN):
        raise _invalid("malformed armor: no begin line")
    lines = text.split(b"\n")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if lines[0] != ARMOR_BEGIN:
        raise _invalid("malformed armor: begin line")
    try:
        end = lines.index(ARMOR_END, 1)
    except ValueError:
        raise _invalid("malformed armor: no end line") from None
    if b"".join(lines[end + 1:]).strip(_WHITESPACE):
        raise _invalid("malformed armor: data after the end line")
    body = lines[1:end]
    if not body:
        raise _invalid("malformed armor: empty")
    for i, line in enumerate(body):
        last = i == len(body) - 1
        if not line or len(line) > 64 or (not last and len(line) != 64):
            raise _invalid("malformed armor: lines must be 64 columns, the last one at most")
        if not (_is_b64_padded if last else _is_b64_unpadded)(line):
            raise _invalid("malformed armor: invalid base64")
    joined = b"".join(body)
    if len(joined) % 4:
        raise _invalid("malformed armor: missing base64 padding")
    try:
        decoded = _b64decode(joined)
    except (binascii.Error, ValueError):
        raise _invalid("malformed armor: invalid base64") from None
    if _b64encode(decoded) != joined:
        raise _invalid("malformed armor: non-canonical base64")
    return decoded


def _b64_unpadded(text: bytes, what: str) -> bytes:
    """Canonical unpadded standard base64 (age's encoding), else `bundle_invalid`."""
    if not _is_b64_unpadded(text) or len(text) % 4 == 1:
        raise _invalid(f"{what}: invalid base64")
    try:
        decoded = _b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(f"{what}: invalid base64") from None
    if _b64encode(decoded).rstrip(b"=") != text:
        raise _invalid(f"{what}: non-canonical base64")
    return decoded


class _Lines:
    """Header lines (LF-terminated) with a running byte limit."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def next(self) -> bytes:
        end = self.data.find(b"\n", self.pos, MAX_HEADER_BYTES + 1)
        if end < 0:
            if len(self.data) > MAX_HEADER_BYTES:
                raise _invalid("header exceeds 64 KiB")
            raise _invalid("header is truncated")
        line = self.data[self.pos:end]
        self.pos = end + 1
        if b"\r" in line:
            raise _invalid("header line contains CR")
        return line


def parse_header(data: bytes) -> Header:
    """Check the binary header of an age file (not armored) and return its stanzas."""
    lines = _Lines(data)
    first = data[: len(VERSION_LINE) + 1]
    if not first.startswith(b"age-encryption.org/"):
        raise _invalid("not an age file")
    version = lines.next()
    if version != VERSION_LINE:
        raise _invalid("unsupported age version (only age-encryption.org/v1)")
    stanzas: list[Stanza] = []
    while True:
        line = lines.next()
        if line.startswith(b"--- "):
            _b64_mac(line[4:])
            break
        if not line.startswith(b"-> "):
            raise _invalid("malformed stanza or MAC line")
        if len(stanzas) >= MAX_STANZAS:
            raise _invalid("more than 64 stanzas")
        args = line[3:].split(b" ")
        for arg in args:
            if not arg or any(c < 0x21 or c > 0x7E for c in arg):
                raise _invalid("malformed stanza arguments")
        body = _body(lines)
        stanzas.append(Stanza(args[0], args[1:], body))
    if not stanzas:
        raise _invalid("no recipient stanzas")
    _check_types(stanzas)
    return Header(stanzas, lines.pos)


def _b64_mac(text: bytes) -> None:
    if len(text) != 43 or len(_b64_unpadded(text, "header MAC")) != 32:
        raise _invalid("malformed header MAC")


def _body(lines: _Lines) -> bytes:
    parts: list[bytes] = []
    while True:
        line = lines.next()
        if len(line) > 64:
            raise _invalid("stanza body line longer than 64 columns")
        if not _is_b64_unpadded(line):
            raise _invalid("stanza body: invalid base64")
        parts.append(line)
        if len(line) < 64:
            return _b64_unpadded(b"".join(parts), "stanza body")


def _check_types(stanzas: list[Stanza]) -> None:
    """Shapes of the stanza types kimen knows; scrypt alone with a bounded work factor."""
    for s in stanzas:
        if s.type in PQ_STANZA_TYPES:
            raise errors.BundleUnsupported(detail="post-quantum hybrid recipients are not supported")
    scrypt = [s for s in stanzas if s.type == b"scrypt"]
    if scrypt and len(stanzas) != 1:
        raise _invalid("an scrypt stanza must be alone")
    for s in stanzas:
        if s.type == b"X25519":
            if len(s.args) != 1 or len(_b64_unpadded(s.args[0], "X25519 share")) != 32:
                raise _invalid("malformed X25519 stanza")
            if len(s.body) != 32:
                raise _invalid("malformed X25519 stanza body")
        elif s.type == b"ssh-ed25519":
            if (len(s.args) != 2 or len(_b64_unpadded(s.args[0], "ssh-ed25519 tag")) != 4
                    or len(_b64_unpadded(s.args[1], "ssh-ed25519 share")) != 32):
                raise _invalid("malformed ssh-ed25519 stanza")
            if len(s.body) != 32:
                raise _invalid("malformed ssh-ed25519 stanza body")
        elif s.type == b"scrypt":
            if len(s.args) != 2 or len(_b64_unpadded(s.args[0], "scrypt salt")) != 16:
                raise _invalid("malformed scrypt stanza")
            factor = s.args[1]
            if not _is_work_factor(factor):
                raise _invalid("malformed scrypt work factor")
            value = int(factor) if len(factor) <= 4 else 10_000
            if value > MAX_SCRYPT_WORK_FACTOR:
                raise errors.AgeWorkFactorRejected(work_factor=factor.decode("ascii")
                                                   if len(factor) <= 8 else factor[:8].decode("ascii") + "...")
            if len(s.body) != 32:
                raise _invalid("malformed scrypt stanza body")


def binary(data: bytes) -> tuple[bytes, Header]:
    """The binary age file (armor removed) and its checked header."""
    raw = dearmor(data) if is_armored(data) else data
    return raw, parse_header(raw)


def max_plaintext(header: Header, raw_len: int) -> int:
    """An upper bound of the plaintext size: payload minus the 16-byte nonce (tags ignored)."""
    return max(raw_len - header.payload_offset - 16, 0)
