"""A container for key material and passphrases that hides itself from repr and logs.

Borg's habit: secrets live in a mutable buffer whose ``repr`` is a placeholder, and are zeroed when
no longer needed. This is best effort — libraries such as PyNaCl copy their inputs
into immutable ``bytes`` we cannot wipe (docs/security.md says so) — but it keeps a passphrase out
of tracebacks, ``repr`` in debug output and accidental logging.
"""

from __future__ import annotations


class Sensitive:
    """Secret bytes: hidden repr, explicit wipe, no implicit str/bytes conversion."""

    __slots__ = ("_buf",)

    def __init__(self, data: bytes | bytearray) -> None:
        self._buf = bytearray(data)
        if isinstance(data, bytearray):
            data[:] = b"\0" * len(data)

    def __repr__(self) -> str:
        return "<Sensitive: hidden>"

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self._buf)

    def __bool__(self) -> bool:
        return bool(self._buf)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sensitive):
            return NotImplemented
        import hmac

        return hmac.compare_digest(bytes(self._buf), bytes(other._buf))

    __hash__ = None  # type: ignore[assignment]

    def reveal(self) -> bytes:
        """A temporary immutable copy for a library call; keep its lifetime short."""
        return bytes(self._buf)

    def view(self) -> bytearray:
        """The underlying buffer (not a copy)."""
        return self._buf

    def wipe(self) -> None:
        """Overwrite the buffer with zeros and empty it."""
        buf = self._buf
        buf[:] = b"\0" * len(buf)
        buf.clear()

    def __enter__(self) -> Sensitive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.wipe()
