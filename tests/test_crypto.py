"""Crypto wrappers against published known-answer vectors."""

from __future__ import annotations

import pytest

from kimen import crypto
from kimen.sensitive import Sensitive
from kimen.store import KdfParams

# draft-irtf-cfrg-xchacha-03, appendix A.3.1
XCHACHA_KEY = bytes.fromhex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
XCHACHA_NONCE = bytes.fromhex("404142434445464748494a4b4c4d4e4f5051525354555657")
XCHACHA_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
XCHACHA_PT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
              b"sunscreen would be it.")
XCHACHA_CT = bytes.fromhex(
    "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39"
    "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
    "21f9664c97637da9768812f615c68b13b52e"
)
XCHACHA_TAG = bytes.fromhex("c0875924c1c7987947deafd8780acf49")


def test_xchacha20poly1305_known_answer():
    assert crypto.seal(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_PT, XCHACHA_AAD) == XCHACHA_CT + XCHACHA_TAG
    assert crypto.open_sealed(XCHACHA_KEY, XCHACHA_NONCE, XCHACHA_CT + XCHACHA_TAG, XCHACHA_AAD) == XCHACHA_PT


@pytest.mark.parametrize("mutate", ["ciphertext", "tag", "aad", "nonce", "key"])
def test_xchacha20poly1305_rejects_any_change(mutate):
    key, nonce, aad, sealed = bytearray(XCHACHA_KEY), bytearray(XCHACHA_NONCE), bytearray(XCHACHA_AAD), bytearray(
        XCHACHA_CT + XCHACHA_TAG)
    target = {"ciphertext": sealed, "tag": sealed, "aad": aad, "nonce": nonce, "key": key}[mutate]
    index = -1 if mutate == "tag" else 0
    target[index] ^= 0x01
    with pytest.raises(crypto.AuthenticationFailed):
        crypto.open_sealed(bytes(key), bytes(nonce), bytes(sealed), bytes(aad))


def test_argon2id_known_answer_through_derive_kek():
    # phc-winner-argon2 src/test.c: Argon2id v=19, t=2, m=2^16 KiB, p=1, "password" / "somesalt"
    kek = crypto.derive_kek(Sensitive(b"password"), b"somesalt", KdfParams(memory_kib=65536, time=2, parallelism=1))
    assert kek.reveal().hex() == "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7"


def test_argon2id_rfc9106_vector_with_the_library_kimen_uses():
    # RFC 9106 §5.3 (secret and associated data need the low-level core API)
    from argon2.low_level import Type, core, ffi, lib

    out = ffi.new("uint8_t[]", 32)
    buffers = [ffi.new("uint8_t[]", b) for b in (b"\x01" * 32, b"\x02" * 16, b"\x03" * 8, b"\x04" * 12)]
    ctx = ffi.new("argon2_context *", dict(
        version=19, out=out, outlen=32, pwd=buffers[0], pwdlen=32, salt=buffers[1], saltlen=16,
        secret=buffers[2], secretlen=8, ad=buffers[3], adlen=12, t_cost=3, m_cost=32, lanes=4, threads=4,
        allocate_cbk=ffi.NULL, free_cbk=ffi.NULL, flags=lib.ARGON2_DEFAULT_FLAGS))
    assert core(ctx, Type.ID.value) == 0
    assert bytes(ffi.buffer(out, 32)).hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_subkeys_are_distinct_and_keyed():
    key, vid = bytes(range(32)), bytes(16)
    mac_key = crypto.subkey(key, vid, b"kimen-mac-v1")
    assert mac_key != crypto.subkey(key, vid, b"kimen-sync-v1")
    assert mac_key != crypto.subkey(key, b"\x01" * 16, b"kimen-mac-v1")
    assert mac_key != crypto.subkey(bytes(32), vid, b"kimen-mac-v1")
    assert len(mac_key) == 32


def test_sensitive_hides_repr_and_wipes():
    secret = Sensitive(b"hunter2-canary")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    source = bytearray(b"abc")
    copy = Sensitive(source)
    assert source == b"\0\0\0" and copy.reveal() == b"abc"
    buf = secret.view()
    secret.wipe()
    assert len(secret) == 0 and bytes(buf) == b""
    assert Sensitive(b"x") == Sensitive(b"x") and Sensitive(b"x") != Sensitive(b"y")
