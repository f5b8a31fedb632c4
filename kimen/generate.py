"""Random values for `secret generate` (docs/daily.md): the recipe, its strength, the draw.

Text mode draws `length` characters (1-4096, default 32) uniformly from a charset with
`secrets.choice`, which picks an index with `secrets.randbelow` (rejection sampling: no modulo
bias). Bytes mode takes `--bytes` (1-65 536) from `secrets.token_bytes` and stores them hex, base64,
base64url (RFC 4648, padded) or raw. Strength in bits is length x log2(|charset|), or 8 x bytes;
below 64 bits kimen warns (`generated_value_weak`: a 6-digit PIN may be what is wanted).

The value is only ever returned to the caller that stores it: never printed, logged or put in a
message. Options are checked before anything else happens (no unlock for a bad recipe).
"""

from __future__ import annotations

import math

from . import errors
from .output import warn

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"
CHARSETS: dict[str, str] = {
    "alnum": _UPPER + _LOWER + _DIGITS,
    "alpha": _UPPER + _LOWER,
    "digits": _DIGITS,
    "hex": "0123456789abcdef",
    "base32": _UPPER + "234567",
    # no quote, backslash, backquote, `$`, space or other shell metacharacter
    "symbols": _UPPER + _LOWER + _DIGITS + "-_.~!@#%^*+=:?",
}
ENCODINGS = ("hex", "base64", "base64url", "raw")
DEFAULT_LENGTH = 32
DEFAULT_CHARSET = "alnum"
DEFAULT_ENCODING = "hex"
MAX_LENGTH = 4096
MAX_BYTES = 65536
WEAK_BITS = 64


class Recipe:
    """What to generate: text (`length` characters of `charset`) or bytes (`nbytes`, `encoding`)."""

    __slots__ = ("charset", "encoding", "length", "nbytes")

    def __init__(self, *, length: int | None = None, charset: str | None = None, nbytes: int | None = None,
                 encoding: str | None = None) -> None:
        self.length = length
        self.charset = charset
        self.nbytes = nbytes
        self.encoding = encoding

    @property
    def bits(self) -> float:
        """The strength: the log2 of the number of values this recipe can draw."""
        if self.nbytes is not None:
            return 8.0 * self.nbytes
        assert self.length is not None and self.charset is not None
        return self.length * math.log2(len(CHARSETS[self.charset]))

    def describe(self) -> str:
        """`32 alnum chars` / `32 bytes (hex)`, for the human line and `--dry-run`."""
        if self.nbytes is not None:
            return f"{self.nbytes} byte{'s' if self.nbytes != 1 else ''} ({self.encoding})"
        return f"{self.length} {self.charset} char{'s' if self.length != 1 else ''}"

    def as_json(self) -> dict[str, object]:
        """The recipe's fields of the `generate` envelope (`length`/`charset` or `bytes`/`encoding`)."""
        if self.nbytes is not None:
            return {"bytes": self.nbytes, "encoding": self.encoding, "bits": int(self.bits)}
        return {"length": self.length, "charset": self.charset, "bits": int(self.bits)}


def recipe(*, length: int | None = None, charset: str | None = None, nbytes: int | None = None,
           encoding: str | None = None) -> Recipe:
    """Check the options (`conflicting_generate_options`, `invalid_generate_options`) and return
    the recipe; warns `generated_value_weak` below 64 bits."""
    if nbytes is not None and (length is not None or charset is not None):
        raise errors.ConflictingGenerateOptions(detail="--bytes cannot be combined with --length or --charset")
    if encoding is not None and nbytes is None:
        raise errors.ConflictingGenerateOptions(detail="--encoding needs --bytes")
    if nbytes is not None:
        if not 1 <= nbytes <= MAX_BYTES:
            raise errors.InvalidGenerateOptions(detail=f"--bytes must be 1-{MAX_BYTES}, not {nbytes}")
        encoding = encoding or DEFAULT_ENCODING
        if encoding not in ENCODINGS:
            raise errors.InvalidGenerateOptions(detail=f"unknown encoding {encoding!r} (use {', '.join(ENCODINGS)})")
        made = Recipe(nbytes=nbytes, encoding=encoding)
    else:
        length = DEFAULT_LENGTH if length is None else length
        charset = charset or DEFAULT_CHARSET
        if not 1 <= length <= MAX_LENGTH:
            raise errors.InvalidGenerateOptions(detail=f"--length must be 1-{MAX_LENGTH}, not {length}")
        if charset not in CHARSETS:
            raise errors.InvalidGenerateOptions(detail=f"unknown charset {charset!r} (use {', '.join(CHARSETS)})")
        made = Recipe(length=length, charset=charset)
    if made.bits < WEAK_BITS:
        warn(f"the generated value has {int(made.bits)} bits of strength (below {WEAK_BITS}): "
             f"{made.describe()}", reason="generated_value_weak")
    return made


def generate(made: Recipe) -> bytes:
    """A fresh value for `made` from the OS CSPRNG."""
    import secrets

    if made.nbytes is not None:
        raw = secrets.token_bytes(made.nbytes)
        if made.encoding == "raw":
            return raw
        if made.encoding == "hex":
            return raw.hex().encode("ascii")
        import base64

        return base64.urlsafe_b64encode(raw) if made.encoding == "base64url" else base64.b64encode(raw)
    assert made.length is not None and made.charset is not None
    alphabet = CHARSETS[made.charset]
    return "".join(secrets.choice(alphabet) for _ in range(made.length)).encode("ascii")
