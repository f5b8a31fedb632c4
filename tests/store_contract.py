"""The store contract: one suite, run against every Store implementation.

Subclass `StoreContract` and provide a `store` fixture yielding an empty, writable store.
(keyring's habit: every backend passes the same tests.)
"""

from __future__ import annotations

import pytest

from kimen import errors
from kimen.store import Change
from kimen.values import MAX_VALUE_BYTES

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

    # -- per-secret history --

    def test_history_keeps_replaced_and_removed_values(self, store):
        first = store.write([Change.set("h.key", b"one")]).generation
        second = store.write([Change.set("h.key", b"two")]).generation
        info = store.history("h.key")
        assert info.current.revision == second and info.keep == 10
        assert [(e.revision, e.size, e.op) for e in info.entries] == [(first, 3, "set")]
        assert "one" not in repr(info) and "two" not in repr(info)
        store.write([Change.rm("h.key")])
        info = store.history("h.key")
        assert info.current is None
        assert [(e.revision, e.op) for e in info.entries] == [(second, "rm"), (first, "set")]
        assert store.read_revision("h.key", first).value == b"one"
        assert store.read_revision("h.key", second).value == b"two"
        store.verify()

    def test_history_keeps_what_its_source_says_per_write(self, store):
        """`keep_history_from` (the command's config): read at each write, so a lowered setting
        trims the name written, and 0 empties it; a name not written keeps its rows."""
        keep = [3]
        store.keep_history_from(lambda: keep[0])
        revisions = [store.write([Change.set(n, f"{n}{i}".encode())]).generation
                     for i in range(5) for n in ("k.a", "k.b")]
        assert [e.revision for e in store.history("k.a").entries] == revisions[-4:-10:-2]
        assert store.history("k.a").keep == 3
        keep[0] = 1
        store.write([Change.set("k.a", b"new")])
        assert [e.revision for e in store.history("k.a").entries] == [revisions[-2]]
        assert len(store.history("k.b").entries) == 3
        restored = store.restore("k.b", store.history("k.b").entries[-1].revision)
        assert [e.revision for e in store.history("k.b").entries] == [revisions[-1]] and not restored.unchanged
        keep[0] = 0
        store.write([Change.set("k.a", b"newer")])
        assert store.history("k.a").entries == []
        store.verify()

    def test_history_of_an_unknown_name(self, store):
        with pytest.raises(errors.SecretNotFound):
            store.history("h.never")
        with pytest.raises(errors.SecretNotFound):
            store.read_revision("h.never", 1)

    def test_read_revision_current_and_not_kept(self, store):
        rev = store.write([Change.set("h.cur", b"now")]).generation
        assert store.read_revision("h.cur", rev).value == b"now"
        with pytest.raises(errors.RevisionNotFound) as info:
            store.read_revision("h.cur", rev + 100)
        assert info.value.fields["available"] == [rev]

    def test_keeps_the_last_ten(self, store):
        revs = [store.write([Change.set("h.many", b"v%d" % i)]).generation for i in range(13)]
        info = store.history("h.many")
        assert [e.revision for e in info.entries] == revs[-2:-12:-1]
        with pytest.raises(errors.RevisionNotFound):
            store.read_revision("h.many", revs[0])
        store.verify()

    def test_restore_an_older_value_is_itself_undoable(self, store):
        old = store.write([Change.set("h.r", b"good")]).generation
        bad = store.write([Change.set("h.r", b"bad")]).generation
        result = store.restore("h.r", old)
        assert (result.from_revision, result.unchanged) == (old, False) and result.revision > bad
        got = store.read(["h.r"])["h.r"]
        assert got.value == b"good" and got.revision == result.revision
        entries = store.history("h.r").entries
        assert [(e.revision, e.op) for e in entries] == [(bad, "restore"), (old, "set")]
        assert store.restore("h.r", bad).unchanged is False
        assert store.read(["h.r"])["h.r"].value == b"bad"
        store.verify()

    def test_restore_undoes_rm_and_current_is_unchanged(self, store):
        rev = store.write([Change.set("h.gone", b"back")]).generation
        store.write([Change.rm("h.gone")])
        result = store.restore("h.gone", rev)
        assert store.read(["h.gone"])["h.gone"].value == b"back"
        again = store.restore("h.gone", result.revision)
        assert again.unchanged is True and again.revision == result.revision
        with pytest.raises(errors.RevisionNotFound):
            store.restore("h.gone", 999999)
        store.verify()

    def test_mv_carries_history(self, store):
        first = store.write([Change.set("h.old", b"a")]).generation
        second = store.write([Change.set("h.old", b"b")]).generation
        store.write([Change.mv("h.old", "h.new")])
        with pytest.raises(errors.SecretNotFound):
            store.history("h.old")
        entries = store.history("h.new").entries
        assert [(e.revision, e.op) for e in entries] == [(second, "mv"), (first, "set")]
        assert store.read_revision("h.new", first).value == b"a"
        store.verify()

    def test_purge_one_name_and_all(self, store):
        store.write([Change.set("h.p1", b"1"), Change.set("h.p2", b"1")])
        store.write([Change.set("h.p1", b"2"), Change.set("h.p2", b"2")])
        store.write([Change.set("h.p1", b"3")])
        assert store.purge_history(["h.p1"]) == 2
        assert store.history("h.p1").entries == [] and len(store.history("h.p2").entries) == 1
        store.verify()
        assert store.purge_history() == 1
        assert store.history("h.p2").entries == []
        assert store.purge_history() == 0
        assert store.read(["h.p1", "h.p2"])["h.p1"].value == b"3"
        store.verify()

    def test_history_op_names_the_bulk_change(self, store):
        store.write([Change.set("h.imp", b"1")])
        store.write([Change.set("h.imp", b"2")], history_op="import")
        store.write([Change.rm("h.imp")], history_op="bundle")
        assert [e.op for e in store.history("h.imp").entries] == ["bundle", "import"]
