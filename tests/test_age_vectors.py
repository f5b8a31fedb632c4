"""Every CCTV age vector through kimen's age decryption.

`expect: success` vectors decrypt to the expected payload hash (post-quantum hybrid ones are
refused as `bundle_unsupported`, a documented limit: docs/bundles.md); every other vector is refused with a
reason — including the ones pyrage alone accepts — and never with another exception.
"""

from __future__ import annotations

import hashlib

import pytest

from kimen import errors
from kimen.bundle import age, keys

from .age_vectors import all_vectors, vectors_dir

VECTORS = all_vectors()

REFUSALS = {"bundle_invalid", "bundle_unsupported", "bundle_no_match", "bundle_decrypt_failed",
            "age_work_factor_rejected", "invalid_identity"}


def open_vector(vector) -> bytes:
    identities = [keys.parse_identity(text.encode(), "vector") for text in vector.identities]
    passphrase = vector.passphrase.encode() if vector.passphrase is not None else None
    return age.decrypt(vector.body, identities, passphrase)


def is_hybrid(vector) -> bool:
    return any(i.upper().startswith("AGE-SECRET-KEY-PQ-") for i in vector.identities)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector(vector):
    if vector.expect == "success" and not is_hybrid(vector):
        plaintext = open_vector(vector)
        assert hashlib.sha256(plaintext).hexdigest() == vector.payload
        return
    with pytest.raises(errors.KimenError) as info:
        open_vector(vector)
    reason = info.value.reason
    if vector.expect == "success":  # post-quantum hybrid: unsupported in v1
        assert reason == "bundle_unsupported"
    else:
        assert reason in REFUSALS, (vector.name, reason)
    if vector.expect == "no match" and not is_hybrid(vector):
        assert reason in ("bundle_no_match", "bundle_invalid", "invalid_identity"), reason


def test_vector_set_is_complete():
    """The repository holds the full set (a truncated copy would silently test less), with its
    licence and provenance."""
    assert (vectors_dir() / "LICENSE").is_file() and (vectors_dir().parent / "README.md").is_file()
    assert len(VECTORS) == 143
    assert sum(v.expect == "success" for v in VECTORS) >= 20


def test_work_factor_is_refused_before_any_work():
    vector = next(v for v in VECTORS if v.name == "scrypt_work_factor_23")
    with pytest.raises(errors.KimenError) as info:
        open_vector(vector)
    assert info.value.reason == "age_work_factor_rejected"
