"""The store contract (SPEC §3.6): one suite, run against every Store implementation.

Subclass `StoreContract` and provide a `store` fixture yielding an empty, writable store.
(keyring's habit: every backend passes the same tests.)
"""

from __future__ import annotations

import pytest

from kimen import errors
from kimen.store import MAX_VALUE_BYTES, Change

BINARY = bytes(range(256))


class StoreContract:
    def test_write_then_read_exact_bytes(self, store):
        store.write([Change.set("a.bin", BINARY), Change.set("a.empty", b""), Change.set("a.ml", b"x\r\ny\n")])
        got = store.read(["a.bin", "a.empty", "a.ml"])
        assert {n: v.value for n, v in got.items()} == {"a.bin": BINARY, "a.empty": b"", "a.ml": b"x\r\ny\n"}

    def test_read_reports_every_missing_name_sorted(self, store):
        store.write([Change.set("present", b"1")])
        with pytest.raises(errors.SecretNotFound) as info:
            store.read(["zz", "present", "aa"])
        assert info.value.fields["missing"] == ["aa", "zz"]

    def test_generation_and_revisions_advance_per_write(self, store):
        first = store.write([Change.set("x", b"1"), Change.set("y", b"2")])
        second = store.write([Change.set("x", b"3")])
        assert second.generation == first.generation + 1
        got = store.read(["x", "y"])
        assert got["x"].revision == second.generation and got["y"].revision == first.generation
        assert [r.created for r in first.results] == [True, True] and second.results[0].created is False

    def test_failed_batch_writes_nothing(self, store):
        store.write([Change.set("keep", b"old")])
        with pytest.raises(errors.SecretExists) as info:
            store.write([Change.set("new", b"n"), Change.set("keep", b"x", mode="create")])
        assert info.value.fields["existing"] == ["keep"]
        with pytest.raises(errors.SecretNotFound):
            store.read(["new"])
        assert store.read(["keep"])["keep"].value == b"old"

    def test_update_and_rm_of_missing_fail(self, store):
        with pytest.raises(errors.SecretNotFound):
            store.write([Change.set("ghost", b"x", mode="update")])
        with pytest.raises(errors.SecretNotFound):
            store.write([Change.rm("ghost")])

    def test_mv(self, store):
        store.write([Change.set("old", b"v"), Change.set("other", b"o")])
        with pytest.raises(errors.SecretExists):
            store.write([Change.mv("old", "other")])
        assert store.read(["old", "other"])["other"].value == b"o"
        result = store.write([Change.mv("old", "new")])
        assert result.results[0].revision == result.generation
        assert store.read(["new"])["new"].value == b"v"
        with pytest.raises(errors.SecretNotFound):
            store.read(["old"])

    def test_rm(self, store):
        store.write([Change.set("gone", b"v")])
        store.write([Change.rm("gone")])
        with pytest.raises(errors.SecretNotFound):
            store.read(["gone"])

    def test_list_sorted_bytewise_with_prefix(self, store):
        store.write([Change.set(n, b"v") for n in ("b", "B", "a.z", "a.b", "_x", "a-1")])
        assert [i.name for i in store.list()] == sorted(["b", "B", "a.z", "a.b", "_x", "a-1"])
        assert [i.name for i in store.list("a.")] == ["a.b", "a.z"]
        info = store.list("a.b")[0]
        assert info.size == 1 and info.revision >= 1 and info.created_at.endswith("Z")

    def test_names_and_sizes_are_validated(self, store):
        with pytest.raises(errors.InvalidSecretName):
            store.write([Change.set("bad name", b"x")])
        with pytest.raises(errors.SecretTooLarge):
            store.write([Change.set("big", b"x" * (MAX_VALUE_BYTES + 1))])
        store.write([Change.set("max", b"x" * MAX_VALUE_BYTES)])
        assert len(store.read(["max"])["max"].value) == MAX_VALUE_BYTES

    def test_verify_passes_after_changes(self, store):
        store.write([Change.set("a", b"1"), Change.set("b", b"2")])
        store.write([Change.mv("a", "c"), Change.rm("b")])
        store.verify()

    def test_meta(self, store):
        store.write([Change.set("a", b"1")])
        meta = store.meta()
        assert meta.secret_count == 1 and meta.generation >= 1 and len(meta.vault_id) == 32
