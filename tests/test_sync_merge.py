"""kimen.sync.merge: keyed digests and baseline MACs, the per-key merge (three-way, first pull,
mirror), forged carry-forward detection, and the construction of the next and the genesis head."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.sync import base, chain, merge
from kimen.sync.base import Scope
from kimen.sync.merge import Keyed
from kimen.vault.syncrows import local_revision
from tests.sync_helpers import CREATOR, NOW, REMOTE_ID, Chain, identity, member, rfc3339, sign

K = bytes(range(32))
K2 = bytes(range(1, 33))


def _d(name: str, value: bytes | None) -> bytes | None:
    return None if value is None else merge.key_digest(K, name, value)


# -- digests and MACs ---------------------------------------------------------------------------


def test_key_digest_definition():
    expected = hmac.new(K, struct.pack(">H", 5) + b"app.a" + b"value", hashlib.sha256).digest()
    assert merge.key_digest(K, "app.a", b"value") == expected
    assert merge.key_digest(K, "app.a", b"value") != merge.key_digest(K2, "app.a", b"value")
    # the name is bound: the same value under another name, or a shifted boundary, differs
    assert merge.key_digest(K, "app.b", b"value") != expected
    assert merge.key_digest(K, "a", b"bc") != merge.key_digest(K, "ab", b"c")


def test_baseline_acc_is_an_order_free_xor_of_row_macs():
    rows = [("a", 1, b"\x01" * 32), ("b.c", 7, b"\x02" * 32), ("d", 2**40, b"\x03" * 32)]
    row = merge.baseline_row_mac(K, "a", 1, b"\x01" * 32)
    assert row == hmac.new(K, b"brow" + struct.pack(">H", 1) + b"a" + struct.pack(">Q", 1) + b"\x01" * 32,
                           hashlib.sha256).digest()
    acc = merge.baseline_acc(K, rows)
    assert acc == merge.baseline_acc(K, reversed(rows))
    assert merge.baseline_acc(K, []) == bytes(32)
    # O(1) updates: removing one row's MAC gives the accumulator of the others
    assert merge.xor32(acc, row) == merge.baseline_acc(K, rows[1:])
    # every field of a row counts
    for changed in [("a", 2, b"\x01" * 32), ("A", 1, b"\x01" * 32), ("a", 1, b"\x09" * 32)]:
        assert merge.baseline_acc(K, [changed, *rows[1:]]) != acc


def _state(**changes) -> base.SyncState:
    fields: dict[str, Any] = dict(remote="origin", remote_id=REMOTE_ID, endpoint="e" * 64, head_seq=4, head_id="a" * 64,
                  head_rev="b" * 64, head_generation=123, epoch=2, record_hash="c" * 64, members_fp="d" * 64,
                  member="ana", role="admin", scope=("**",), rotation_due_count=0, last_local_rev="f" * 64,
                  updated_at="2026-01-01T00:00:00Z")
    fields.update(changes)
    return base.SyncState(**fields)


def test_state_mac_covers_every_column_and_the_baseline():
    acc = merge.baseline_acc(K, [("a", 1, b"\x01" * 32)])
    mac = merge.state_mac(K, _state(), acc)
    assert len(mac) == 32 and mac == merge.state_mac(K, _state(), acc)
    for field, value in [("remote", "team"), ("remote_id", "0" * 32), ("endpoint", "0" * 64), ("head_seq", 5),
                         ("head_id", "0" * 64), ("head_rev", "0" * 64), ("head_generation", 124), ("epoch", 3),
                         ("record_hash", "0" * 64), ("members_fp", "0" * 64), ("member", "bo"),
                         ("role", "writer"), ("scope", ("app.*",)), ("rotation_due_count", 1),
                         ("last_local_rev", None), ("updated_at", "2026-01-01T00:00:01Z")]:
        assert merge.state_mac(K, _state(**{field: value}), acc) != mac, field
    assert merge.state_mac(K, _state(), bytes(32)) != mac
    assert merge.state_mac(K2, _state(), acc) != mac
    # null and the empty string are different columns; lengths keep fields apart
    assert merge.state_mac(K, _state(last_local_rev=""), acc) != merge.state_mac(K, _state(last_local_rev=None), acc)
    assert merge.state_mac(K, _state(member="ab", role="c"), acc) != merge.state_mac(K, _state(member="a", role="bc"),
                                                                                     acc)


def test_local_revision_is_order_free_and_row_sensitive():
    rows = [("b", 2, b"\x02" * 32), ("a", 1, b"\x01" * 32)]
    rev = local_revision(rows)
    assert rev == local_revision(reversed(rows)) and len(rev) == 64
    assert local_revision([("b", 3, b"\x02" * 32), rows[1]]) != rev
    assert local_revision(rows[:1]) != rev
    assert local_revision([]) == hashlib.sha256().hexdigest()


# -- the merge ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote() -> Chain:
    """seq 2: app.a=1, app.b=2, ops.k=3, x.out=4; seq 3: app.b deleted."""
    c = Chain()
    c.push("ana", {"app.a": b"1", "app.b": b"2", "ops.k": b"3", "x.out": b"4"})
    c.push("ana", {"app.b": None})
    return c


SCOPE = Scope(["app.*", "ops.*", "new.*"])


def _base(remote: Chain, head_index: int = 1) -> dict[str, Keyed]:
    head = remote.heads[head_index]
    return {n: Keyed(merge.key_digest(K, n, e.value), e.revision) for n, e in head.entries.items() if SCOPE.covers(n)}


# (case, baseline value, local value, remote value at seq 3 given the fixture)  — values per name
THREE_WAY = [
    # name      B      L      R      outcome        kind
    ("app.a", b"1", b"1", b"1", "unchanged", None),
    ("app.a", b"1", b"9", b"1", "local_only", None),
    ("app.a", b"1", None, b"1", "local_only", None),  # a local delete
    ("app.b", b"2", b"2", None, "remote_only", None),  # the remote deleted it
    ("app.b", b"2", b"9", None, "conflict", "remote_deleted"),
    ("app.b", b"2", None, None, "converged", None),
]


@pytest.mark.parametrize(("name", "b", "l_", "r", "outcome", "kind"), THREE_WAY)
def test_three_way_outcomes_against_a_real_head(remote, name, b, l_, r, outcome, kind):
    baseline = _base(remote)
    assert baseline[name].digest == _d(name, b)
    local = {n: k.digest for n, k in baseline.items()}
    if l_ is None:
        del local[name]
    else:
        local[name] = _d(name, l_)
    result = merge.merge(K, SCOPE, remote.head, local, baseline)
    key = result.keys[name]
    assert (key.outcome, key.kind) == (outcome, kind)
    assert key.remote == _d(name, r)


def test_three_way_table_in_full():
    """Every row of the table with digests alone, including both-changed and local-deleted."""
    one, two, three = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    table = [
        (one, one, one, "unchanged", None), (one, one, two, "remote_only", None), (one, one, None, "remote_only", None),
        (None, None, one, "remote_only", None), (one, two, one, "local_only", None),
        (None, one, None, "local_only", None), (one, two, two, "converged", None),
        (one, None, None, "converged", None), (one, two, three, "conflict", "both_changed"),
        (one, None, two, "conflict", "local_deleted"), (one, two, None, "conflict", "remote_deleted"),
        (None, one, two, "conflict", "both_changed"),
    ]
    for b, l_, r, outcome, kind in table:
        got = merge._three_way("n", b, l_, r)
        assert (got.outcome, got.kind) == (outcome, kind), (b, l_, r)


def test_merge_summaries_and_out_of_scope(remote):
    baseline = _base(remote, 1)
    local = {n: k.digest for n, k in baseline.items()}
    local["app.a"] = _d("app.a", b"mine")  # local-only
    local["new.x"] = _d("new.x", b"new")  # local-only addition
    local["x.out"] = _d("x.out", b"ignored")  # outside the scope: never considered
    result = merge.merge(K, SCOPE, remote.head, local, baseline)
    assert result.local_changed == ["app.a", "new.x"]
    assert result.remote_deletes == ["app.b"] and result.remote_sets == []
    assert result.names("unchanged") == ["ops.k"] and "x.out" not in result.keys
    assert result.out_of_scope_count == 1 and not result.first_pull
    result.check_conflicts()  # none


def test_conflicts_stop_with_exit_31_naming_the_keys(remote):
    baseline = _base(remote, 1)
    local = {n: k.digest for n, k in baseline.items()}
    local["app.b"] = _d("app.b", b"changed")  # remote deleted it
    result = merge.merge(K, SCOPE, remote.head, local, baseline)
    assert result.conflict_keys == ["app.b"]
    assert result.conflicts == [{"key": "app.b", "kind": "remote_deleted"}]
    with pytest.raises(errors.KimenError) as info:
        merge.push_changes(result, {"app.b": b"changed"})
    err = info.value
    assert err.reason == "overlapping_changes" and err.exit_code(32) == 31
    assert err.envelope(32)["conflict_keys"] == ["app.b"]
    assert err.envelope(32)["conflicts"] == [{"key": "app.b", "kind": "remote_deleted"}]
    assert b"changed".hex() not in str(err.envelope(32)) and "app.b" in err.message


def test_first_pull_is_a_union_that_never_deletes(remote):
    local = {
        "app.a": _d("app.a", b"1"),  # equal: converged
        "ops.k": _d("ops.k", b"other"),  # different: conflict
        "app.b": _d("app.b", b"2"),  # tombstoned in the head: conflict
        "new.x": _d("new.x", b"x"),  # local only: kept
        "x.out": _d("x.out", b"y"),  # outside the scope: ignored
    }
    result = merge.merge(K, SCOPE, remote.head, local, None)
    assert result.first_pull
    outcomes = {n: (k.outcome, k.kind) for n, k in result.keys.items()}
    assert outcomes == {"app.a": ("converged", None), "ops.k": ("conflict", "both_changed"),
                        "app.b": ("conflict", "remote_deleted"), "new.x": ("local_only", None)}
    assert result.remote_deletes == []
    empty = merge.merge(K, SCOPE, remote.head, {}, None)
    assert empty.remote_sets == ["app.a", "ops.k"] and empty.remote_deletes == []


def test_mirror_makes_the_in_scope_set_equal_to_the_head(remote):
    local = {"app.a": _d("app.a", b"1"), "ops.k": _d("ops.k", b"old"), "new.x": _d("new.x", b"x"),
             "x.out": _d("x.out", b"kept")}
    result = merge.mirror(K, SCOPE, remote.head, local)
    assert result.remote_sets == ["ops.k"] and result.remote_deletes == ["new.x"]
    assert result.names("unchanged") == ["app.a"] and "x.out" not in result.keys


def test_a_head_that_changes_values_without_a_new_revision_is_refused(remote):
    """The baseline knows each entry's revision: an equal revision must mean an equal value, and a
    name that disappears must leave a newer tombstone."""
    baseline = _base(remote, 1)
    local = {n: k.digest for n, k in baseline.items()}
    forged = dict(baseline)
    forged["ops.k"] = Keyed(_d("ops.k", b"something else"), baseline["ops.k"].seq)  # same revision, other value
    with pytest.raises(errors.KimenError) as info:
        merge.merge(K, SCOPE, remote.head, local, forged)
    assert info.value.reason == "sync_write_unauthorized" and "ops.k" in info.value.message
    newer = dict(baseline)
    newer["app.a"] = Keyed(baseline["app.a"].digest, 99)  # the head lowered a revision
    with pytest.raises(errors.KimenError):
        merge.merge(K, SCOPE, remote.head, local, newer)
    gone = dict(baseline)
    gone["app.gone"] = Keyed(_d("app.gone", b"v"), 2)  # vanished without a tombstone
    with pytest.raises(errors.KimenError) as info:
        merge.merge(K, SCOPE, remote.head, local, gone)
    assert "app.gone" in info.value.message
    stale_tomb = dict(baseline)
    stale_tomb["app.b"] = Keyed(_d("app.b", b"2"), 3)  # tombstone (seq 3) not newer than the entry
    with pytest.raises(errors.KimenError):
        merge.merge(K, SCOPE, remote.head, local, stale_tomb)
    merge.merge(K, SCOPE, remote.head, local, baseline)  # the honest baseline merges
    untranslated = dict(baseline)
    untranslated["ops.k"] = Keyed(_d("ops.k", b"matches nothing"), 0)  # no revision claimed
    result = merge.merge(K, SCOPE, remote.head, local, untranslated)
    assert result.keys["ops.k"].outcome == "converged"  # L = R, both differ from the unusable digest


def test_an_untranslated_baseline_digest_is_read_by_its_revision(remote):
    """A rotation that could not recompute a digest keeps the row's revision: the head's entry of
    that revision is the baseline value, any other value differs from it."""
    baseline = _base(remote, 1)
    seq = baseline["ops.k"].seq
    lost = {**baseline, "ops.k": Keyed(merge.UNTRANSLATED, seq)}
    local = {n: k.digest for n, k in baseline.items()}
    for value, outcome in ((b"3", "unchanged"), (b"9", "local_only")):
        result = merge.merge(K, SCOPE, remote.head, {**local, "ops.k": _d("ops.k", value)}, lost)
        assert result.keys["ops.k"].outcome == outcome
    newer = Chain()
    newer.push("ana", {"app.a": b"1", "app.b": b"2", "ops.k": b"3", "x.out": b"4"})
    newer.push("ana", {"app.b": None})
    newer.push("ana", {"ops.k": b"remote"})  # a later revision: the remote changed it
    for value, outcome in ((b"9", "conflict"), (b"remote", "converged")):
        result = merge.merge(K, SCOPE, newer.head, {**local, "ops.k": _d("ops.k", value)}, lost)
        assert result.keys["ops.k"].outcome == outcome
    with pytest.raises(errors.KimenError):  # an older revision is still a rollback
        merge.merge(K, SCOPE, remote.head, local, {**lost, "ops.k": Keyed(merge.UNTRANSLATED, seq + 5)})


def test_push_changes_takes_local_values_and_deletes():
    c = Chain()
    c.push("ana", {"app.a": b"1", "app.b": b"2"})
    baseline = {n: Keyed(merge.key_digest(K, n, e.value), e.revision) for n, e in c.head.entries.items()}
    local = {"app.a": _d("app.a", b"new"), "app.c": _d("app.c", b"c")}
    result = merge.merge(K, Scope(["**"]), c.head, local, baseline)
    assert merge.push_changes(result, {"app.a": b"new", "app.c": b"c"}) == {"app.a": b"new", "app.b": None,
                                                                            "app.c": b"c"}
    with pytest.raises(ValueError):
        merge.push_changes(result, {"app.a": b"new"})


# -- building heads -----------------------------------------------------------------------------


def test_genesis_head():
    raw = merge.build_genesis(member("ana", "admin", ("**",)), identity("ana"), at=rfc3339(NOW), now_ms=NOW * 1000,
                              creator=CREATOR, remote_id=REMOTE_ID, bundle_id="b" * 32)
    assert raw["signature"] is None and raw["secrets"] == [] and raw["bundle_id"] == "b" * 32
    sync = raw["sync"]
    assert (sync["seq"], sync["parent"], sync["by"], sync["remote_id"]) == (1, None, "ana", REMOTE_ID)
    assert [r["epoch"] for r in sync["membership"]] == [1] and sync["membership"][0]["prev"] is None
    assert sync["log"] == [{"seq": 1, "parent": None, "by": "ana", "at": rfc3339(NOW), "set": [], "del": [],
                            "members": True, "note": "genesis"}]
    accepted = chain.accept(sign(raw, "ana"), None, None, NOW, 900)
    assert accepted.outcome == "first_contact" and accepted.pin_remote_id == REMOTE_ID
    fresh = merge.build_genesis(member("ana", "admin"), identity("ana"), at=rfc3339(NOW), now_ms=1, creator={})
    assert len(fresh["sync"]["remote_id"]) == 32 and fresh["sync"]["remote_id"] != REMOTE_ID
    with pytest.raises(errors.KimenError) as info:
        merge.build_genesis(member("ana", "writer"), identity("ana"), at=rfc3339(NOW), now_ms=1, creator={})
    assert info.value.reason == "sync_role_forbidden"


def test_next_head_carries_everything_it_did_not_change():
    c = Chain()
    c.push("ana", {"app.a": b"1", "ops.k": b"2", "old": b"x"})
    c.push("ana", {"old": None})
    c.push("ana", membership=merge.AddMember(member("bo", "writer", ("app.*",))))
    before = c.head
    after = c.push("bo", {"app.a": b"3", "app.new": b"4"})
    assert after.entries["ops.k"] == before.entries["ops.k"]  # outside bo's scope, byte for byte
    assert after.entries["app.a"].revision == after.seq and after.entries["app.a"].by == "bo"
    assert after.entries["app.a"].value == b"3" and after.entries["app.new"].updated_at == rfc3339(c.clock)
    assert after.sync.tombstones == before.sync.tombstones
    assert after.sync.membership == before.sync.membership
    assert after.sync.log[:-1] == before.sync.log
    assert after.sync.log[-1].to_json() == {"seq": 5, "parent": before.id, "by": "bo", "at": rfc3339(c.clock),
                                            "set": ["app.a", "app.new"], "del": [], "members": False, "note": ""}
    assert after.generation == c.clock * 1000 and after.seq == before.seq + 1 and after.sync.parent == before.id
    assert after.bundle_id != before.bundle_id


def test_delete_leaves_a_tombstone_and_a_set_removes_it():
    c = Chain()
    c.push("ana", {"a": b"1"})
    deleted = c.push("ana", {"a": None, "never.existed": None})
    assert "a" not in deleted.entries
    assert [(t.name, t.seq, t.by) for t in deleted.sync.tombstones] == [("a", 3, "ana")]
    assert deleted.sync.log[-1].deleted == ("a",)
    revived = c.push("ana", {"a": b"2"})
    assert revived.sync.tombstones == () and revived.entries["a"].revision == 4


def test_generation_exceeds_the_parents_even_with_a_slow_clock():
    c = Chain()
    c.push("ana", {"a": b"1"})
    raw = merge.build_next(c.head, author="ana", changes={"a": b"2"}, at=rfc3339(NOW), now_ms=5, creator={})
    assert raw["generation"] == c.head.generation + 1


def test_membership_changes():
    c = Chain()
    bo = member("bo", "writer", ("app.*",))
    head = c.push("ana", membership=merge.AddMember(bo))
    assert [m.id for m in head.current.members] == ["ana", "bo"] and head.current.epoch == 2
    assert head.sync.log[-1].members and head.sync.log[-1].note == "members"
    head = c.push("ana", membership=merge.UpdateMember("bo", scope=("app.**", "ci.*")))
    assert head.current.member("bo").scope == ("app.**", "ci.*") and head.current.member("bo").role == "writer"
    head = c.push("ana", membership=merge.UpdateMember("bo", role="admin"))
    assert head.current.member("bo").role == "admin"
    head = c.push("bo", membership=merge.RemoveMember("ana"))  # bo is an admin now
    assert [m.id for m in head.current.members] == ["bo"]
    cases = [
        (merge.AddMember(member("bo")), "member_exists"),
        (merge.AddMember(member("cy", scope=("a*",))), "invalid_scope_glob"),
        (merge.AddMember(merge.Member("Cy", "writer", identity("cy").recipient, identity("cy").signer, ("**",))),
         "invalid_member_id"),
        (merge.AddMember(merge.Member("cy", "writer", identity("cy").recipient, None, ("**",))), "invalid_signer"),
        (merge.AddMember(merge.Member("cy", "writer", "age1bad", identity("cy").signer, ("**",))),
         "invalid_recipient"),
        (merge.AddMember(merge.Member("cy", "writer", identity("bo").recipient, identity("cy").signer, ("**",))),
         "member_exists"),
        (merge.RemoveMember("zed"), "member_not_found"),
        (merge.UpdateMember("zed", role="reader"), "member_not_found"),
        (merge.RemoveMember("bo"), "sync_last_admin"),
        (merge.UpdateMember("bo", role="writer"), "sync_last_admin"),
    ]
    for change, reason in cases:
        with pytest.raises(errors.KimenError) as info:
            c.build("bo", membership=change)
        assert info.value.reason == reason, change


def test_only_admins_change_the_membership_and_only_writers_push():
    c = Chain()
    c.push("ana", membership=merge.AddMember(member("bo", "writer", ("app.*",))))
    c.push("ana", membership=merge.AddMember(member("cy", "reader")))
    for author, kw, reason in [
        ("bo", {"membership": merge.AddMember(member("dee"))}, "sync_role_forbidden"),
        ("cy", {"changes": {"app.a": b"1"}}, "sync_role_forbidden"),
        ("eve", {"changes": {"app.a": b"1"}}, "sync_not_a_member"),
        ("bo", {"changes": {"ops.k": b"1"}}, "key_out_of_scope"),
        ("bo", {"changes": {"app..x": b"1"}}, "invalid_secret_name"),
        ("bo", {"changes": {"app.big": b"x" * (1024 * 1024 + 1)}}, "secret_too_large"),
    ]:
        with pytest.raises(errors.KimenError) as info:
            c.build(author, kw.get("changes"), membership=kw.get("membership"))
        assert info.value.reason == reason, (author, kw.keys())


def test_removing_a_member_lists_every_live_name_until_rotated():
    c = Chain()
    c.push("ana", {"a": b"1", "b": b"2", "c": b"3"})
    c.push("ana", membership=merge.AddMember(member("bo", "writer")))
    c.push("ana", membership=merge.AddMember(member("cy", "writer")))
    removed = c.push("ana", membership=merge.RemoveMember("bo"))
    assert [(d.name, d.since_seq, d.removed) for d in removed.sync.rotation_due] == [
        ("a", 5, ("bo",)), ("b", 5, ("bo",)), ("c", 5, ("bo",))]
    assert removed.entries == c.heads[-2].entries  # a membership head changes no secret
    rotated = c.push("cy", {"a": b"new", "b": None})
    assert [d.name for d in rotated.sync.rotation_due] == ["c"]
    again = c.push("ana", membership=merge.RemoveMember("cy"))
    assert [(d.name, d.since_seq, d.removed) for d in again.sync.rotation_due] == [
        ("a", 7, ("cy",)), ("c", 5, ("bo", "cy"))]
    c.push("ana", {"c": b"rotated"})
    assert [d.name for d in c.head.sync.rotation_due] == ["a"]


def _far_head(c: Chain, seq: int) -> base.Head:
    """`c`'s head re-dated to `seq` with a full log, to exercise the window (not a signed head)."""
    head = c.head
    log = tuple(base.LogEntry(s, "0" * 64, "ana", head.created_at, (), (), False, "")
                for s in range(seq - 999, seq + 1))
    tombs = tuple(base.Tombstone(f"t{i:04d}", seq - 1000 + i, "ana") for i in range(3))
    sync = base.SyncMember(1, REMOTE_ID, seq, "0" * 64, "ana", head.sync.membership, tombs, (), log)
    return base.Head("1" * 64, head.bundle_id, head.created_at, head.generation, head.creator, head.signer,
                     head.entries, sync)


def test_tombstones_and_log_are_trimmed_to_the_window():
    c = Chain()
    far = _far_head(c, 5000)
    raw = merge.build_next(far, author="ana", changes={"t0002": b"back"}, at=rfc3339(NOW), now_ms=1, creator={})
    sync = raw["sync"]
    assert len(sync["log"]) == base.W and sync["log"][0]["seq"] == 5001 - 999 and sync["log"][-1]["seq"] == 5001
    # t0000 (seq 4000) falls out of the window at seq 5001; t0001 (4001) stays; t0002 was set again
    assert [t["name"] for t in sync["tombstones"]] == ["t0001"]


def test_digests_remember_and_equal_key_digest():
    digests = merge.Digests(K)
    assert digests("app.a", b"1") == merge.key_digest(K, "app.a", b"1") == digests("app.a", b"1")
    assert digests("app.b", b"1") == merge.key_digest(K, "app.b", b"1") and "1" not in repr(digests)
    c = Chain()
    c.push("ana", {"app.a": b"1", "ops.k": b"3"})
    assert merge.head_digests(K, c.head, SCOPE, digests) == merge.head_digests(K, c.head, SCOPE)
    assert merge.head_digests(K, c.head, SCOPE, merge.Digests(K2)) == merge.head_digests(K, c.head, SCOPE)


@given(st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.sampled_from([b"x", b"y"]), st.integers(1, 3))),
       st.dictionaries(st.sampled_from("abcdef"), st.tuples(st.sampled_from([b"x", b"y"]), st.integers(1, 3))))
def test_baseline_acc_update_equals_the_acc_of_the_new_rows(old, new):
    old_rows = {n: Keyed(_d(n, v), s) for n, (v, s) in old.items()}
    new_rows = {n: Keyed(_d(n, v), s) for n, (v, s) in new.items()}

    def acc(rows):
        return merge.baseline_acc(K, [(n, k.seq, k.digest) for n, k in rows.items()])

    assert merge.baseline_acc_update(K, acc(old_rows), old_rows, new_rows) == acc(new_rows)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=150), messages=st.lists(st.binary(max_size=300), max_size=5))
def test_mac_with_is_hmac_sha256(key: bytes, messages: list[bytes]) -> None:
    """The keyed MAC of many messages (pads hashed once) is HMAC-SHA256 byte for byte, any key length."""
    from kimen import crypto

    keyed = crypto.mac_with(key)
    for message in messages:
        assert keyed(message) == hmac.digest(key, message, "sha256") == crypto.mac(key, message)


def test_digests_many_and_entry_equal_key_digest() -> None:
    """`Digests` (one operation's memo, by value and by base64 text) gives `key_digest`'s bytes."""
    import base64

    digests = merge.Digests(K)
    values = {"app.a": b"1", "app.b": b"", "ops.k": bytes(range(256))}
    assert digests.many(values) == {n: merge.key_digest(K, n, v) for n, v in values.items()}
    for name, value in values.items():
        assert digests.entry(name, base64.b64encode(value).decode()) == merge.key_digest(K, name, value)
        assert digests(name, value) == merge.key_digest(K, name, value)
