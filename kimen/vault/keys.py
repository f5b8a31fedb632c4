"""The data key and its wrap: KDF bounds, and wrapping the data key under a passphrase's KEK.

The data key is random; a key-encryption key derived with argon2id from the passphrase wraps it
(XChaCha20-Poly1305). The wrap's associated data covers the vault id, the KDF parameters, the salt
and the key epoch, so edited parameters fail to unwrap like a wrong passphrase. Parameters read
from a file are checked against the floor and ceiling below *before* the KDF runs, so an inflated
file cannot make kimen spend gigabytes or minutes.
"""

from __future__ import annotations

import struct

from .. import crypto, errors
from ..sensitive import Sensitive
from ..store import KdfParams
from .schema import KDF_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .schema import Header

KDF_DEFAULT = KdfParams(memory_kib=65536, time=3, parallelism=4)
KDF_MIN = KdfParams(memory_kib=8 * 1024, time=1, parallelism=1)
KDF_MAX = KdfParams(memory_kib=2 * 1024 * 1024, time=10, parallelism=16)
KDF_MAX_MEMORY_TIME = 4 * 1024 * 1024  # KiB * passes (4 GiB·passes)

_WRAP_LABEL = b"kimen/v1/keywrap\x00"


def kdf_problem(params: KdfParams) -> str | None:
    """Why `params` are outside the KDF floor/ceiling (docs/vault.md), or None."""
    if params.alg != "argon2id":
        return f"unsupported KDF {params.alg!r}"
    if params.memory_kib < KDF_MIN.memory_kib:
        return "memory below 8 MiB"
    if params.time < KDF_MIN.time:
        return "time below 1"
    if params.parallelism < KDF_MIN.parallelism:
        return "parallelism below 1"
    if params.memory_kib > KDF_MAX.memory_kib:
        return "memory above 2 GiB"
    if params.time > KDF_MAX.time:
        return "time above 10"
    if params.parallelism > KDF_MAX.parallelism:
        return "parallelism above 16"
    if params.memory_kib * params.time > KDF_MAX_MEMORY_TIME:
        return "memory x time above 4 GiB passes"
    return None


def check_kdf(params: KdfParams) -> None:
    """`InvalidKdfParams` when `params` (asked for by the user) are out of bounds."""
    problem = kdf_problem(params)
    if problem:
        raise errors.InvalidKdfParams(detail=problem)


def _wrap_aad(vault_id: bytes, params: KdfParams, salt: bytes, key_epoch: int) -> bytes:
    return (
        _WRAP_LABEL + vault_id
        + struct.pack(">III", params.memory_kib, params.time, params.parallelism)
        + salt + struct.pack(">Q", key_epoch)
    )


def wrap(kek: Sensitive, data_key: Sensitive, vault_id: bytes, params: KdfParams, salt: bytes,
         key_epoch: int) -> tuple[bytes, bytes]:
    """(nonce, wrapped key): `data_key` sealed under `kek`, bound to the vault and parameters."""
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    return nonce, crypto.seal(kek.view(), nonce, data_key.reveal(), _wrap_aad(vault_id, params, salt, key_epoch))


def unwrap(header: Header, passphrase: Sensitive, path: str) -> Sensitive:
    """Run the KDF and unwrap the data key; `KdfParamsRejected` for parameters out of bounds
    (before any KDF work), `WrongPassphrase` if it does not open."""
    problem = kdf_problem(header.kdf)
    if problem or header.kdf_version != KDF_VERSION or len(header.salt) != crypto.SALT_BYTES:
        raise errors.KdfParamsRejected(path=path)
    with crypto.derive_kek(passphrase, header.salt, header.kdf) as kek:
        aad = _wrap_aad(header.vault_id, header.kdf, header.salt, header.key_epoch)
        try:
            key = crypto.open_sealed(kek.view(), header.wrap_nonce, header.wrapped_key, aad)
        except crypto.AuthenticationFailed:
            raise errors.WrongPassphrase() from None
    if len(key) != crypto.KEY_BYTES:
        raise errors.WrongPassphrase()
    return Sensitive(key)
