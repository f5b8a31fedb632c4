"""Cryptographic primitives: the only importer of argon2 and nacl.

- KEK: argon2id (version 0x13) over the passphrase's UTF-8 bytes, 32-byte output.
- AEAD: XChaCha20-Poly1305-IETF with random 24-byte nonces. With 192-bit nonces, random nonces
  are safe for any realistic number of writes under one key, so a nonce counter (and its
  persistence bugs) is unnecessary.
- Subkeys: keyed BLAKE2b-256 of the data key, personalised per purpose (stdlib hashlib).

Parameters read from a vault file are range-checked by the caller *before* `derive_kek` runs.
Secrets come in as `Sensitive` where we can; argon2-cffi and PyNaCl copy their inputs into
immutable bytes we cannot wipe (documented in docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from nacl import exceptions as nacl_exceptions
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)

from .sensitive import Sensitive
from .store import KdfParams

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

KEY_BYTES = 32
NONCE_BYTES = 24
SALT_BYTES = 16


class AuthenticationFailed(Exception):
    """AEAD open failed. Internal: callers map it to the reason that fits their context."""


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def derive_kek(passphrase: Sensitive, salt: bytes, params: KdfParams) -> Sensitive:
    """argon2id(passphrase, salt, params) -> 32-byte key-encryption key.

    Through argon2's context API on kimen's own buffers: `hash_secret_raw` would copy the passphrase
    into C memory and return the key as `bytes`, copies that nobody wipes.
    """
    from argon2.exceptions import HashingError
    from argon2.low_level import Type, core, ffi, lib

    secret = passphrase.view()
    out = ffi.new("uint8_t[]", KEY_BYTES)
    salt_buf = ffi.new("uint8_t[]", salt)
    ctx = ffi.new("argon2_context *", dict(
        version=19, out=out, outlen=KEY_BYTES, pwd=ffi.from_buffer(secret) if secret else ffi.NULL,
        pwdlen=len(secret), salt=salt_buf, saltlen=len(salt), secret=ffi.NULL, secretlen=0, ad=ffi.NULL, adlen=0,
        t_cost=params.time, m_cost=params.memory_kib, lanes=params.parallelism, threads=params.parallelism,
        allocate_cbk=ffi.NULL, free_cbk=ffi.NULL, flags=lib.ARGON2_DEFAULT_FLAGS))
    try:
        rv = core(ctx, Type.ID.value)
        if rv != lib.ARGON2_OK:
            raise HashingError(ffi.string(lib.argon2_error_message(rv)).decode("ascii"))
        return Sensitive(bytearray(ffi.buffer(out, KEY_BYTES)))
    finally:
        ffi.memmove(out, bytes(KEY_BYTES), KEY_BYTES)


def seal(key: bytes | bytearray, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 encrypt; returns ciphertext || tag."""
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, bytes(key))


def open_sealed(key: bytes | bytearray, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 decrypt; raises AuthenticationFailed (never nacl's exception)."""
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, nonce, bytes(key))
    except (nacl_exceptions.CryptoError, ValueError, TypeError):
        raise AuthenticationFailed() from None


def subkey(data_key: bytes | bytearray, vault_id: bytes, person: bytes) -> bytes:
    """BLAKE2b-256(key=data key, salt=vault_id, person=purpose): k_mac, k_sync."""
    return hashlib.blake2b(digest_size=32, key=bytes(data_key), salt=vault_id, person=person).digest()


def mac(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (one-shot: `hmac.digest` is several times faster than `hmac.new` per row)."""
    return hmac.digest(key, message, "sha256")


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def mac_with(key: bytes) -> Callable[[bytes], bytes]:
    """`mac` under one key for many messages (the rows of a baseline): the key's two padded blocks
    are hashed once (RFC 2104), then each message costs two SHA-256 copies — about half the time
    of `hmac.digest`, which sets its key up again on every call. The same bytes as `mac`."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    block = key.ljust(64, b"\0")
    inner, outer = hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))

    def keyed_mac(message: bytes) -> bytes:
        digest = inner.copy()
        digest.update(message)
        result = outer.copy()
        result.update(digest.digest())
        return result.digest()

    return keyed_mac


# -- bundle signing --

_BUNDLE_SIGNING_LABEL = b"kimen/v1/bundle-signing"


def bundle_signing_seed(identity_text: bytes) -> bytes:
    """HMAC-SHA256(key = the identity's canonical upper-case text, msg = kimen/v1/bundle-signing)."""
    return hmac.new(identity_text.upper(), _BUNDLE_SIGNING_LABEL, hashlib.sha256).digest()


def ed25519_public(seed: bytes) -> bytes:
    from nacl.signing import SigningKey

    return bytes(SigningKey(seed).verify_key)


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    from nacl.signing import SigningKey

    return SigningKey(seed).sign(message).signature


def ed25519_verify(public: bytes, message: bytes, signature: bytes) -> bool:
    from nacl.signing import VerifyKey

    try:
        VerifyKey(public).verify(message, signature)
    except (nacl_exceptions.BadSignatureError, nacl_exceptions.CryptoError, ValueError, TypeError):
        return False
    return True
