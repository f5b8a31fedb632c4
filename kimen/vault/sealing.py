"""What each value's ciphertext and the vault's MACs are bound to.

- A value is sealed under the data key with associated data naming the vault id, the secret's
  revision and its name, so a row moved to another name, vault or revision fails to open.
- `rows_mac` is the XOR of a keyed MAC (k_mac, a subkey of the data key) of every row, so it is
  updated in O(1) per changed row; `meta_mac` binds it to the vault id, generation and key epoch.
  Together they let `verify` detect deleted, added or individually rolled-back rows. Rows of
  `secret_history` are in `rows_mac` too, under their own tag (`hist_mac`).
- Sync baselines are digests under another subkey (k_sync) of a name and its value.
"""

from __future__ import annotations

import hashlib
import struct

from .. import crypto, errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..sensitive import Sensitive

ZERO_MAC = bytes(32)
_SECRET_LABEL = b"kimen/v1/secret\x00"
_MAC_PERSON = b"kimen-mac-v1"
_SYNC_PERSON = b"kimen-sync-v1"


def mac_key(data_key: Sensitive, vault_id: bytes) -> bytes:
    """k_mac: the subkey of the row and meta MACs."""
    return crypto.subkey(data_key.view(), vault_id, _MAC_PERSON)


def sync_key(data_key: Sensitive, vault_id: bytes) -> bytes:
    """k_sync: the subkey of sync baseline digests."""
    return crypto.subkey(data_key.view(), vault_id, _SYNC_PERSON)


def name_field(name: str) -> bytes:
    try:
        raw = name.encode("ascii")
    except (AttributeError, UnicodeEncodeError):  # a row whose name a byte change made another type
        raise errors.VaultTampered() from None
    return struct.pack(">H", len(raw)) + raw


def revision_field(revision: int) -> bytes:
    """The 8 bytes a revision is bound as; a row whose revision a byte change made NULL, text, a
    float or out of range is a tampered vault, not a crash."""
    if type(revision) is not int or not 0 <= revision < 1 << 64:
        raise errors.VaultTampered()
    return struct.pack(">Q", revision)


def _secret_aad(vault_id: bytes, revision: int, name: str) -> bytes:
    return _SECRET_LABEL + vault_id + revision_field(revision) + name_field(name)


def seal_value(data_key: Sensitive, vault_id: bytes, name: str, revision: int, value: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of `value` as row `name` at `revision`."""
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    return nonce, crypto.seal(data_key.view(), nonce, value, _secret_aad(vault_id, revision, name))


def open_value(data_key: Sensitive, vault_id: bytes, name: str, revision: int, nonce: bytes,
               ciphertext: bytes) -> bytes:
    """The value of a row; `SecretCorrupt` naming the secret when it does not open."""
    try:
        return crypto.open_sealed(data_key.view(), nonce, ciphertext, _secret_aad(vault_id, revision, name))
    except crypto.AuthenticationFailed:
        raise errors.SecretCorrupt(secret=name) from None


def row_mac(k_mac: bytes, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
    digest = hashlib.sha256(nonce + ciphertext).digest()
    return crypto.mac(k_mac, b"row" + name_field(name) + revision_field(revision) + digest)


def hist_mac(k_mac: bytes, name: str, revision: int, nonce: bytes, ciphertext: bytes) -> bytes:
    """A history row's share of `rows_mac`: another tag than `row`, so a history row cannot be
    moved into `secrets` (or back) unnoticed."""
    digest = hashlib.sha256(nonce + ciphertext).digest()
    return crypto.mac(k_mac, b"hist" + name_field(name) + revision_field(revision) + digest)


def meta_mac(k_mac: bytes, vault_id: bytes, generation: int, key_epoch: int, rows_mac: bytes) -> bytes:
    return crypto.mac(k_mac, b"meta" + vault_id + struct.pack(">QQ", generation, key_epoch) + rows_mac)


def xor(a: bytes | bytearray, b: bytes) -> bytes:
    """Add or remove one row's MAC from `rows_mac`."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")
