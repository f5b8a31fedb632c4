"""Every CCTV age vector through `kimen bundle open`: refused with a bundle reason, nothing written,
no traceback (vectors' payloads are not kimen documents, so even `success` ones are refused as
`bundle_not_a_document`)."""

from __future__ import annotations

import pytest

from ..age_vectors import all_vectors

VECTORS = all_vectors()
REFUSALS = {"bundle_invalid", "bundle_unsupported", "bundle_no_match", "bundle_decrypt_failed",
            "age_work_factor_rejected", "invalid_identity", "bundle_not_a_document"}


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_open_vector(kimen, vector):
    (kimen.cwd / "in.age").write_bytes(vector.body)
    args = ["bundle", "open", "--in", "in.age", "--out-vault", str(kimen.root / "out.db"), "--allow-unsigned",
            "--kdf-memory", "8MiB", "--kdf-time", "1", "--kdf-parallelism", "1", "--json"]
    stdin = None
    if vector.passphrase is not None:
        args.append("--age-passphrase-stdin")
        stdin = vector.passphrase.encode() + b"\n"
    elif vector.identities:
        (kimen.cwd / "id.txt").write_text(vector.identities[0] + "\n")
        args += ["--identity", "id.txt"]
    else:
        kimen.ok("bundle", "keygen", "--out", "id.txt")
        args += ["--identity", "id.txt"]
    done = kimen.run(*args, input=stdin, env={"KIMEN_PASSPHRASE": "vault passphrase 1"})
    assert done.code == 25, done.err
    reason = done.err_json()["reason"]
    assert reason in REFUSALS, reason
    if vector.expect == "success":  # not kimen documents (or post-quantum: unsupported)
        assert reason in ("bundle_not_a_document", "bundle_unsupported"), reason
    assert not any(p.name.startswith("out.db") for p in kimen.root.iterdir())
