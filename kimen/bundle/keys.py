"""Identities, recipients and signer ids.

An identity file holds `#` comments and exactly one `AGE-SECRET-KEY-1…` line, or is an
unencrypted OpenSSH ed25519 private key. An X25519 identity also signs: its Ed25519 key pair is
derived from the identity text (`kimen.crypto.bundle_signing_seed`), and the signer id is
`kimen-sig-v1:` + unpadded base64url of the public key. ssh-ed25519 identities decrypt only.

Messages name files and line numbers, never key material.
"""

from __future__ import annotations

import binascii
import struct

from .. import errors
from ..sigfmt import SIGNER_PREFIX as SIGNER_PREFIX  # the signer-id codec lives in kimen.sigfmt
from ..sigfmt import parse_signer, signer_id

_SSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_SSH_END = b"-----END OPENSSH PRIVATE KEY-----"


class Identity:
    """One parsed identity; its text never appears in repr or messages. An X25519 identity's
    pyrage object and recipient are made on first use: checking that an identity file is valid
    (`sync status`) imports no pyrage."""

    __slots__ = ("_obj", "_recipient", "_signer", "_text", "kind")

    def __init__(self, kind: str, text: bytes, obj: object | None, recipient: str | None) -> None:
        self.kind = kind  # "x25519" | "ssh-ed25519"
        self._text = text
        self._obj = obj  # None: an X25519 identity not yet handed to pyrage
        self._recipient = recipient
        self._signer: tuple[bytes, str] | None = None

    def __repr__(self) -> str:
        return f"Identity({self.kind})"

    def pyrage_identity(self) -> object:
        if self._obj is None:
            from pyrage import IdentityError, x25519

            try:
                self._obj = x25519.Identity.from_str(self._text.decode("ascii"))
            except (IdentityError, ValueError):  # `is_age_secret_key` accepts what pyrage does
                raise errors.InvalidIdentity(detail="not a valid age identity") from None
        return self._obj

    @property
    def recipient(self) -> str | None:
        if self._recipient is None and self.kind == "x25519":
            self._recipient = str(self.pyrage_identity().to_public())  # type: ignore[attr-defined]  # pyrage's x25519.Identity
        return self._recipient

    @property
    def can_sign(self) -> bool:
        return self.kind == "x25519"

    def _signing(self) -> tuple[bytes, str]:
        if self._signer is None:
            from .. import crypto

            seed = crypto.bundle_signing_seed(self._text)
            self._signer = (seed, signer_id(crypto.ed25519_public(seed)))
        return self._signer

    @property
    def signer(self) -> str | None:
        return self._signing()[1] if self.can_sign else None

    def sign(self, message: bytes) -> bytes:
        from .. import crypto

        return crypto.ed25519_sign(self._signing()[0], message)


def generate() -> tuple[Identity, str]:
    """A new X25519 identity and its age-keygen file text."""
    from pyrage import x25519

    from ..durations import format_time

    obj = x25519.Identity.generate()
    text = str(obj)
    recipient = str(obj.to_public())
    created = format_time()
    file_text = f"# created: {created}\n# public key: {recipient}\n{text}\n"
    return Identity("x25519", text.encode("ascii"), obj, recipient), file_text


def parse_identity(data: bytes, source: str) -> Identity:
    """The one identity in `data` (an identity file's content); `source` names it in messages."""
    if _SSH_BEGIN in data:
        return _parse_ssh(data, source)
    candidates: list[tuple[int, bytes]] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        upper = line.upper()
        if upper.startswith(b"AGE-SECRET-KEY-PQ-"):
            raise errors.BundleUnsupported(detail="post-quantum hybrid identities are not supported")
        if upper.startswith(b"AGE-PLUGIN-"):
            raise errors.InvalidIdentity(detail=f"{source}: plugin identities are not supported")
        if not upper.startswith(b"AGE-SECRET-KEY-1"):
            raise errors.InvalidIdentity(detail=f"{source}: line {number} is not an age identity")
        candidates.append((number, upper))
    if not candidates:
        raise errors.NoIdentityFound(source=source)
    if len(candidates) > 1:
        raise errors.MultipleIdentitiesFound(source=source)
    text = candidates[0][1]
    if not is_age_secret_key(text):
        raise errors.InvalidIdentity(detail=f"{source}: not a valid age identity")
    return Identity("x25519", text, None, None)


# -- the bech32 check of an age identity (BIP 173), the rule pyrage applies -------------------------

_BECH32 = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L"  # upper case: identities are compared upper-cased
_BECH32_VALUES = {char: value for value, char in enumerate(_BECH32)}
_IDENTITY_HRP = "age-secret-key-"
_KEY_GROUPS = 52  # 32 bytes in 5-bit groups (4 padding bits)


def _polymod(values: list[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            if top >> bit & 1:
                check ^= generator
    return check


def is_age_secret_key(text: bytes) -> bool:
    """`text` (upper case) is `AGE-SECRET-KEY-1` + bech32 data of exactly 32 bytes (52 groups)
    with a valid bech32 checksum: what pyrage's `x25519.Identity.from_str` accepts
    (`tests/test_bundle_units.py` checks the two agree)."""
    prefix = _IDENTITY_HRP.upper().encode("ascii") + b"1"
    if not text.startswith(prefix) or len(text) != len(prefix) + _KEY_GROUPS + 6:
        return False
    try:
        data = [_BECH32_VALUES[char] for char in text[len(prefix):].decode("ascii")]
    except (KeyError, UnicodeDecodeError):
        return False
    hrp = [ord(c) >> 5 for c in _IDENTITY_HRP] + [0] + [ord(c) & 31 for c in _IDENTITY_HRP]
    return _polymod(hrp + data) == 1  # the last group's 4 padding bits are ignored, as pyrage does


def _parse_ssh(data: bytes, source: str) -> Identity:
    """An unencrypted OpenSSH ed25519 private key; anything else is `invalid_identity`."""
    import base64  # here: base64 imports `re`, which an age identity (`sync status`) does not need

    bad = errors.InvalidIdentity(detail=f"{source}: not an unencrypted OpenSSH ed25519 key")
    start = data.find(_SSH_BEGIN)
    end = data.find(_SSH_END, start)
    if end < 0:
        raise bad
    try:
        blob = base64.b64decode(b"".join(data[start + len(_SSH_BEGIN):end].split()), validate=True)
        fields, pos = [], 15
        if blob[:15] != b"openssh-key-v1\0":
            raise bad
        for _ in range(3):  # cipher, kdf, kdf options
            (n,) = struct.unpack(">I", blob[pos:pos + 4])
            fields.append(blob[pos + 4:pos + 4 + n])
            pos += 4 + n
        (count,) = struct.unpack(">I", blob[pos:pos + 4])
        (n,) = struct.unpack(">I", blob[pos + 4:pos + 8])
        public = blob[pos + 8:pos + 8 + n]
    except (binascii.Error, ValueError, struct.error):
        raise bad from None
    if fields[0] != b"none" or count != 1 or not public.startswith(b"\x00\x00\x00\x0bssh-ed25519"):
        raise bad
    from pyrage import IdentityError, ssh

    try:
        obj = ssh.Identity.from_buffer(data[start:end + len(_SSH_END)] + b"\n")
    except (IdentityError, ValueError, TypeError):
        raise bad from None
    recipient = "ssh-ed25519 " + base64.b64encode(public).decode("ascii")
    return Identity("ssh-ed25519", b"", obj, recipient)


class Recipient:
    """A parsed recipient (public: it may be shown)."""

    __slots__ = ("obj", "text")

    def __init__(self, text: str, obj: object) -> None:
        self.text = text
        self.obj = obj


def _looks_like_identity(line: str) -> bool:
    upper = line.upper()
    return upper.startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in upper or upper.startswith("AGE-PLUGIN-")


def parse_recipient(text: str, where: str = "--recipient") -> Recipient:
    """`age1…` or `ssh-ed25519 AAAA… [comment]`; `where` names the source in messages."""
    from pyrage import RecipientError, ssh, x25519

    line = text.strip()
    if _looks_like_identity(line):
        raise errors.InvalidRecipient(detail=f"{where}: this is a secret identity, not a recipient",
                                      hint="give the public key (age1...) from `kimen bundle recipient`")
    try:
        if line.startswith("age1"):
            return Recipient(line, x25519.Recipient.from_str(line))
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "ssh-ed25519":
            canonical = f"{parts[0]} {parts[1]}"
            return Recipient(canonical, ssh.Recipient.from_str(canonical))
    except (RecipientError, ValueError):
        raise errors.InvalidRecipient(detail=f"{where}: not a valid age1... or ssh-ed25519 recipient") from None
    raise errors.InvalidRecipient(detail=f"{where}: not an age1... or ssh-ed25519 recipient")


def parse_recipients_file(data: bytes, path: str) -> list[Recipient]:
    out: list[Recipient] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise errors.InvalidRecipient(detail=f"{path}:{number}: not UTF-8") from None
        if not line or line.startswith("#"):
            continue
        if _looks_like_identity(line):
            raise errors.RecipientsFileContainsIdentity(path=path, line=number)
        out.append(parse_recipient(line, f"{path}:{number}"))
    return out


def parse_signers_text(data: str, where: str) -> list[str]:
    """Signer ids from a file or variable: separated by newlines, commas or spaces; `#` comments."""
    found: list[str] = []
    for line in data.splitlines():
        line = line.split("#", 1)[0]
        for item in line.replace(",", " ").split():
            try:
                parse_signer(item)
            except errors.KimenError as exc:
                raise errors.InvalidSigner(detail=f"{where}: {exc.fields.get('detail', '')}") from None
            found.append(item)
    return found
