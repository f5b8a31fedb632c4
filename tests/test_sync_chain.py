"""kimen.sync.chain: the `sync` member's field rules, membership records, join requests, and the
acceptance checks against hostile heads (outsider, reader, removed member, other remote, rollback,
fork, replay, history gap, writes outside scope, forged records, clock skew)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json

import pytest

from kimen import errors
from kimen.bundle import document
from kimen.sigfmt import canonical
from kimen.sync import chain, merge
from tests.sync_helpers import NOW, REMOTE_ID, Chain, identity, member, resign, rfc3339, sign


def _reason(exc_info) -> str:
    return exc_info.value.reason


@pytest.fixture(scope="module")
def rich() -> Chain:
    """seq 1 genesis (ana), 2 secrets, 3 +bo (writer, app.*), 4 +cy (reader), 5 bo's set and delete,
    6 -cy (rotation_due), 7 a set by ana."""
    c = Chain()
    c.push("ana", {"app.a": b"1", "app.b": b"2", "ops.k": b"3"})
    c.push("ana", membership=merge.AddMember(member("bo", "writer", ("app.*",))))
    c.push("ana", membership=merge.AddMember(member("cy", "reader")))
    c.push("bo", {"app.a": b"4", "app.b": None})
    c.push("ana", membership=merge.RemoveMember("cy"))
    c.push("ana", {"ops.k": b"5"})
    return c


# -- hashes, records, fingerprints --------------------------------------------------------------


def test_head_id_is_sha256_of_the_canonical_signed_document(rich):
    doc = rich.doc
    payload = canonical(doc.raw)
    assert doc.raw["signature"] is not None
    assert rich.head.id == hashlib.sha256(payload).hexdigest() == chain.head_id(doc.raw)
    assert rich.head.sync.parent == rich.heads[-2].id


def test_record_hash_and_members_fp_definitions(rich):
    record = rich.head.current
    assert chain.record_hash(record) == hashlib.sha256(canonical(record.to_json())).hexdigest()
    assert rich.head.sync.membership[record.epoch - 1] is record
    assert record.prev == chain.record_hash(rich.head.sync.membership[-2])
    expected = hashlib.sha256(b"kimen-members-fp-v1\x00" + canonical([m.to_json() for m in record.members]))
    assert chain.members_fp(record.members) == expected.hexdigest()
    assert chain.members_fp(rich.heads[3].current.members) != chain.members_fp(record.members)  # cy still in


def test_record_signature_covers_every_field(rich):
    record = rich.head.current
    assert chain.verify_record(record)
    message = b"kimen-members-v1\x00" + canonical(record.body())
    from kimen import crypto, sigfmt
    assert crypto.ed25519_verify(sigfmt.parse_signer(record.signer), message, base64.b64decode(record.sig))
    for field, value in (("seq", record.seq + 1), ("remote_id", "f" * 32), ("prev", "0" * 64), ("epoch", 9),
                         ("members", record.members[:1])):
        forged = type(record)(**{**{f: getattr(record, f) for f in record.__slots__}, field: value})
        assert not chain.verify_record(forged), field
    assert not chain.verify_record(type(record)(**{**{f: getattr(record, f) for f in record.__slots__},
                                                   "sig": "AAAA"}))


def test_known_head_remembers_seq_id_epoch_and_record(rich):
    known = chain.known_head(rich.head)
    assert (known.seq, known.head_id, known.epoch, known.remote_id) == (7, rich.head.id, 4, REMOTE_ID)
    assert known.record_hash == chain.record_hash(rich.head.current)
    assert known.generation == rich.head.generation


def test_membership_at_and_parent_membership(rich):
    head = rich.head
    assert head.membership_at(1).epoch == 1 and head.membership_at(2).epoch == 1
    assert head.membership_at(3).epoch == 2 and head.membership_at(5).epoch == 3
    assert head.membership_at(6).epoch == 4 and head.parent_membership.epoch == 4
    assert rich.heads[0].parent_membership.epoch == 1


# -- field rules -------------------------------------------------------------------------------


def _sync(raw):
    return raw["sync"]


def _last_record(raw):
    return raw["sync"]["membership"][-1]


def _set(path, value):
    def mutate(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _del(path):
    def mutate(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _swap_members(raw):
    members = raw["sync"]["membership"][1]["members"]
    members.reverse()


def _dup_recipient(raw):
    members = raw["sync"]["membership"][1]["members"]
    members[1]["recipient"] = members[0]["recipient"]


def _no_admin(raw):
    for m in raw["sync"]["membership"][0]["members"]:
        m["role"] = "writer"


FIELD_RULES = {
    "sync not an object": _set(["sync"], []),
    "format as text": _set(["sync", "format"], "1"),
    "format true": _set(["sync", "format"], True),
    "extra sync key": _set(["sync", "extra"], 1),
    "missing sync key": _del(["sync", "tombstones"]),
    "remote_id upper case": _set(["sync", "remote_id"], REMOTE_ID.upper()),
    "remote_id short": _set(["sync", "remote_id"], "abc"),
    "seq zero": _set(["sync", "seq"], 0),
    "seq true": _set(["sync", "seq"], True),
    "seq too large": _set(["sync", "seq"], 2**53),
    "parent null after genesis": _set(["sync", "parent"], None),
    "parent short": _set(["sync", "parent"], "ab"),
    "by invalid": _set(["sync", "by"], "Ana"),
    "membership empty": _set(["sync", "membership"], []),
    "membership not a list": _set(["sync", "membership"], {}),
    "record epoch wrong": _set(["sync", "membership", 1, "epoch"], 3),
    "record seq after head": _set(["sync", "membership", 1, "seq"], 99),
    "record seqs decrease": _set(["sync", "membership", 2, "seq"], 2),
    "record 1 not at seq 1": _set(["sync", "membership", 0, "seq"], 2),
    "prev null after record 1": _set(["sync", "membership", 1, "prev"], None),
    "prev on record 1": _set(["sync", "membership", 0, "prev"], "0" * 64),
    "record extra key": _set(["sync", "membership", 0, "extra"], 1),
    "record signer malformed": _set(["sync", "membership", 0, "signer"], "kimen-sig-v1:xyz"),
    "record sig not text": _set(["sync", "membership", 0, "sig"], 5),
    "members unsorted": _swap_members,
    "members duplicate recipient": _dup_recipient,
    "no admin": _no_admin,
    "members empty": _set(["sync", "membership", 0, "members"], []),
    "member id invalid": _set(["sync", "membership", 0, "members", 0, "id"], "-ana"),
    "member role unknown": _set(["sync", "membership", 0, "members", 0, "role"], "owner"),
    "member extra key": _set(["sync", "membership", 0, "members", 0, "extra"], 1),
    "admin without signer": _set(["sync", "membership", 0, "members", 0, "signer"], None),
    "admin with ssh recipient": _set(["sync", "membership", 0, "members", 0, "recipient"],
                                     "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"
                                                                       + bytes(32)).decode()),
    "recipient malformed": _set(["sync", "membership", 0, "members", 0, "recipient"], "age1nope"),
    "scope empty": _set(["sync", "membership", 0, "members", 0, "scope"], []),
    "scope glob invalid": _set(["sync", "membership", 0, "members", 0, "scope"], ["a*"]),
    "scope duplicate": _set(["sync", "membership", 0, "members", 0, "scope"], ["**", "**"]),
    "entry without by": _del(["secrets", 0, "by"]),
    "entry by invalid": _set(["secrets", 0, "by"], "A"),
    "entry revision zero": _set(["secrets", 0, "revision"], 0),
    "entry revision after head": _set(["secrets", 0, "revision"], 8),
    "tombstone also a secret": _set(["sync", "tombstones", 0, "name"], "app.a"),
    "tombstone seq after head": _set(["sync", "tombstones", 0, "seq"], 8),
    "tombstone seq zero": _set(["sync", "tombstones", 0, "seq"], 0),
    "tombstone by invalid": _set(["sync", "tombstones", 0, "by"], ""),
    "tombstone name invalid": _set(["sync", "tombstones", 0, "name"], "a..b"),
    "tombstones unsorted": _set(["sync", "tombstones"], [{"name": "z", "seq": 5, "by": "bo"},
                                                         {"name": "app.b", "seq": 5, "by": "bo"}]),
    "rotation_due unsorted": lambda raw: raw["sync"]["rotation_due"].insert(
        0, {**raw["sync"]["rotation_due"][0], "name": "ops.k"}),
    "rotation_due not a secret": _set(["sync", "rotation_due", 0, "name"], "nope"),
    "rotation_due removed empty": _set(["sync", "rotation_due", 0, "removed"], []),
    "rotation_due since zero": _set(["sync", "rotation_due", 0, "since_seq"], 0),
    "log empty": _set(["sync", "log"], []),
    "log gap": _del(["sync", "log", 3]),
    "log last seq": _set(["sync", "log", -1, "seq"], 8),
    "log last parent": _set(["sync", "log", -1, "parent"], "0" * 64),
    "log last by": _set(["sync", "log", -1, "by"], "bo"),
    "log last at": _set(["sync", "log", -1, "at"], "2020-01-01T00:00:00Z"),
    "log set wrong": _set(["sync", "log", -1, "set"], []),
    "log del wrong": _set(["sync", "log", -1, "del"], ["app.b"]),
    "log members flag": _set(["sync", "log", -1, "members"], True),
    "log note unknown": _set(["sync", "log", -1, "note"], "hello"),
    "log genesis note later": _set(["sync", "log", -1, "note"], "genesis"),
    "log genesis note missing": _set(["sync", "log", 0, "note"], ""),
    "log at malformed": _set(["sync", "log", 0, "at"], "yesterday"),
    "log set unsorted": _set(["sync", "log", 1, "set"], ["b", "a"]),
    "log set and del overlap": _set(["sync", "log", 1, "del"], ["app.a"]),
}


@pytest.mark.parametrize("rule", sorted(FIELD_RULES))
def test_every_field_rule_is_bundle_invalid(rich, rule):
    doc = resign(rich.doc, "ana", FIELD_RULES[rule])
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(doc)
    assert _reason(info) == "bundle_invalid", info.value.message


def test_the_unmodified_rich_head_parses(rich):
    head = chain.parse_head(resign(rich.doc, "ana", lambda raw: None))
    assert [t.name for t in head.sync.tombstones] == ["app.b"]
    assert [(d.name, d.since_seq, d.removed) for d in head.sync.rotation_due] == [("app.a", 6, ("cy",))]
    assert [e.seq for e in head.sync.log] == list(range(1, 8))


def test_a_parsed_document_keeps_its_canonical_text_for_the_id(rich):
    """The signature check's serialisation is the one the head id hashes (one encoding for both)."""
    assert rich.doc.canonical_text == canonical(rich.doc.raw)
    assert chain.parse_head(rich.doc).id == chain.head_id(rich.doc.raw)


def _entry_rule(mutate):
    def change(raw):
        mutate(next(e for e in raw["secrets"] if e["name"] == "app.a"))
    return change


@pytest.mark.parametrize("mutate", [
    lambda e: e.update(revision=99), lambda e: e.update(revision="7"), lambda e: e.update(by="Not A Member Id"),
    lambda e: e.update(updated_at=7), lambda e: e.pop("by"), lambda e: e.update(extra=1),
    lambda e: e.update(value_b64=7),
], ids=["revision-above-seq", "revision-text", "by", "updated_at", "missing-field", "extra-field", "value"])
def test_built_from_checks_every_entry_not_carried_unchanged(rich, mutate):
    """`built_from` (a head built from this parent) takes an entry equal to the parent's as is; an
    entry that differs in any field is checked as every entry is."""
    class Built:  # as a member's own new head reaches the check: the document it built, no re-parse
        def __init__(self, raw, signer):
            self.raw, self.signer = raw, signer

    parent = rich.heads[-2]
    raw = copy.deepcopy(rich.doc.raw)
    _entry_rule(mutate)(raw)
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(Built(raw, rich.doc.signer), built_from=parent)
    assert _reason(info) == "bundle_invalid"
    chain.parse_head(Built(copy.deepcopy(rich.doc.raw), rich.doc.signer), built_from=parent)  # unchanged: fine


def test_built_from_gives_the_same_head(rich):
    parent, child = rich.heads[-2], rich.doc
    head = chain.parse_head(child, built_from=parent)
    plain = chain.parse_head(child)
    assert (head.id, head.entries, head.sync) == (plain.id, plain.entries, plain.sync)
    assert head.entries["app.a"] is parent.entries["app.a"]  # carried unchanged: the parent's entry


def test_unknown_sync_format_is_unsupported(rich):
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(resign(rich.doc, "ana", _set(["sync", "format"], 2)))
    assert _reason(info) == "bundle_unsupported"


def test_a_plain_bundle_is_not_a_sync_document():
    payload, _ = document.build([document.Secret("a", b"1", 1, "t")], source_vault_id="ab" * 16, generation=5,
                                creator={}, identity=identity("ana"))
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(document.parse(payload))
    assert _reason(info) == "sync_not_a_sync_document"


def test_an_unsigned_head_is_refused(rich):
    raw = copy.deepcopy(rich.doc.raw)
    raw["signature"] = None
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(document.parse(canonical(raw)))
    assert _reason(info) == "bundle_unsigned"


def test_a_head_is_still_an_ordinary_bundle(rich):
    """`bundle open` and `--bundle` read a head, ignoring `sync`."""
    doc = document.parse(canonical(rich.doc.raw))
    assert {s.name: s.value for s in doc.secrets} == {"app.a": b"4", "ops.k": b"5"}
    document.check_trust(doc, [identity("ana").signer], allow_unsigned=False)


def _far_genesis(seq: int, tombstone_seq: int) -> document.Document:
    """A valid head at `seq` (its older log entries name parents nobody can check) with a tombstone."""
    raw = merge.build_genesis(member("ana", "admin"), identity("ana"), at=rfc3339(NOW), now_ms=NOW * 1000,
                              creator={}, remote_id=REMOTE_ID)
    log = [{"seq": s, "parent": f"{s:064x}", "by": "ana", "at": raw["created_at"], "set": [], "del": [],
            "members": False, "note": ""} for s in range(seq - 999, seq + 1)]
    raw["sync"].update(seq=seq, parent=log[-1]["parent"], log=log,
                       tombstones=[{"name": "gone", "seq": tombstone_seq, "by": "ana"}])
    return sign(raw, "ana")


def test_tombstones_older_than_the_window_are_invalid():
    head = chain.parse_head(_far_genesis(2000, 1000))  # 1000 is not below 2000 - 1000: kept
    assert head.sync.tombstones[0].seq == 1000 and len(head.sync.log) == 1000
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(_far_genesis(2000, 999))  # it had to be dropped
    assert _reason(info) == "bundle_invalid"


def test_a_log_longer_than_the_window_is_invalid():
    doc = _far_genesis(2000, 1500)
    longer = resign(doc, "ana", lambda raw: raw["sync"]["log"].insert(
        0, {**raw["sync"]["log"][0], "seq": 1000, "parent": "0" * 64}))
    with pytest.raises(errors.KimenError) as info:
        chain.parse_head(longer)
    assert _reason(info) == "bundle_invalid" and "1..1000 entries" in info.value.message


# -- acceptance: the good path -------------------------------------------------------------------


def test_first_contact_pins_the_remote_id(rich):
    accepted = chain.accept(rich.doc, None, None, NOW + 100, 900)
    assert accepted.outcome == "first_contact" and accepted.pin_remote_id == REMOTE_ID
    configured = chain.accept(rich.doc, None, REMOTE_ID, NOW + 100, 900)
    assert configured.outcome == "first_contact" and configured.pin_remote_id is None


def test_unchanged_and_advanced(rich):
    assert rich.accept(rich.doc).outcome == "unchanged"
    accepted = rich.accept(rich.doc, known=rich.heads[1])
    assert accepted.outcome == "advanced" and accepted.head.seq == 7


# -- acceptance: hostile heads ------------------------------------------------------------------


def _forge(c: Chain, forger: str, changes, *, parent=None) -> document.Document:
    """A head with `changes` that claims `forger` made it: built as the admin would, then every
    attribution of the new seq rewritten to `forger`, and signed with `forger`'s identity."""
    built = c.build("ana", changes, parent=parent)
    seq = built.raw["sync"]["seq"]

    def rewrite(raw):
        raw["sync"]["by"] = forger
        raw["sync"]["log"][-1]["by"] = forger
        for item in raw["secrets"]:
            if item["revision"] == seq:
                item["by"] = forger
        for item in raw["sync"]["tombstones"]:
            if item["seq"] == seq:
                item["by"] = forger
    return resign(built, forger, rewrite)


def _refused(c: Chain, doc, reason: str, **kw) -> errors.KimenError:
    with pytest.raises(errors.KimenError) as info:
        c.accept(doc, **kw)
    assert _reason(info) == reason, info.value.message
    return info.value


def test_outsiders_head_is_refused(rich):
    err = _refused(rich, _forge(rich, "eve", {"app.a": b"evil"}), "sync_signer_not_writer")
    assert "eve is not a member" in err.message


def test_a_members_head_signed_by_someone_else_is_refused(rich):
    built = rich.build("ana", {"app.a": b"x"})
    _refused(rich, resign(built, "eve", lambda raw: None), "sync_signer_not_writer")


def test_readers_head_is_refused(rich):
    c = Chain()
    c.push("ana", membership=merge.AddMember(member("dee", "reader")))
    with pytest.raises(errors.KimenError) as info:
        c.build("dee", {"a": b"1"})
    assert _reason(info) == "sync_role_forbidden"  # kimen itself never builds it
    err = _refused(c, _forge(c, "dee", {"a": b"1"}), "sync_signer_not_writer")
    assert "dee is a reader" in err.message


def test_removed_members_head_is_refused(rich):
    c = Chain()
    c.push("ana", membership=merge.AddMember(member("bo", "writer")))
    c.push("bo", {"a": b"1"})
    c.push("ana", membership=merge.RemoveMember("bo"))
    with pytest.raises(errors.KimenError) as info:
        c.build("bo", {"a": b"2"})
    assert _reason(info) == "sync_not_a_member"
    _refused(c, _forge(c, "bo", {"a": b"2"}), "sync_signer_not_writer")
    # bo's head built on the head before the removal competes with it: a fork
    stale = c.build("bo", {"a": b"3"}, parent=c.heads[-2])
    _refused(c, stale, "remote_fork")


def test_other_remotes_head_is_refused(rich):
    other = Chain()
    other_doc = merge.build_genesis(member("ana", "admin"), identity("ana"), at=rfc3339(NOW), now_ms=NOW * 1000,
                                    creator={}, remote_id="f" * 32)
    err = _refused(rich, sign(other_doc, "ana"), "bundle_wrong_remote")
    assert err.fields["remote_id"] == "f" * 32
    assert other.head.remote_id == REMOTE_ID
    with pytest.raises(errors.KimenError) as info:  # also with no known head, when the id is configured
        chain.accept(sign(other_doc, "ana"), None, REMOTE_ID, NOW, 900)
    assert _reason(info) == "bundle_wrong_remote"


def test_a_head_relabelled_with_our_remote_id_keeps_its_foreign_records(rich):
    other_doc = merge.build_genesis(member("ana", "admin"), identity("ana"), at=rfc3339(NOW), now_ms=NOW * 1000,
                                    creator={}, remote_id="f" * 32)
    relabelled = resign(sign(other_doc, "ana"), "ana", _set(["sync", "remote_id"], REMOTE_ID))
    with pytest.raises(errors.KimenError) as info:
        chain.accept(relabelled, None, REMOTE_ID, NOW, 900)
    assert _reason(info) == "sync_membership_invalid"


def test_rollback_is_refused_with_both_seqs(rich):
    err = _refused(rich, rich.docs[2], "remote_rollback")
    assert err.fields["known_seq"] == 7 and err.fields["remote_seq"] == 3
    assert err.exit_code(32) == 31
    envelope = err.envelope(32)
    assert envelope["known_seq"] == 7 and envelope["remote_seq"] == 3


def test_replayed_heads(rich):
    assert rich.accept(rich.doc).outcome == "unchanged"  # the known head itself: nothing to do
    for old in rich.docs[:-1]:
        _refused(rich, old, "remote_rollback")


def test_sibling_head_is_a_fork(rich):
    c = Chain()
    c.push("ana", {"a": b"1"})
    c.push("ana", membership=merge.AddMember(member("bo", "writer")))
    base_head = c.head
    mine = c.push("ana", {"a": b"2"})
    sibling = c.build("bo", {"b": b"1"}, parent=base_head)
    err = _refused(c, sibling, "remote_fork")
    assert err.exit_code(32) == 31 and err.fields["known_seq"] == mine.seq
    # the sibling's child is no better: it does not descend from the known head
    sibling_head = chain.parse_head(sibling)
    child = c.build("bo", {"b": b"2"}, parent=sibling_head)
    _refused(c, child, "remote_fork")


def test_fork_through_a_different_membership_record(rich):
    c = Chain()
    base_head = c.head
    c.push("ana", membership=merge.AddMember(member("bo", "writer")))
    other = c.build("ana", membership=merge.AddMember(member("cy", "writer")), parent=base_head)
    other_head = chain.parse_head(other)
    later = c.build("ana", {"a": b"1"}, parent=other_head)
    err = _refused(c, later, "remote_fork")
    assert "membership record 2" in err.message


def test_history_gap_when_the_log_no_longer_reaches_the_known_head(rich):
    trimmed = resign(rich.doc, "ana", lambda raw: raw["sync"].update(log=raw["sync"]["log"][-2:]))
    err = _refused(rich, trimmed, "remote_history_gap", known=rich.heads[2])
    assert err.exit_code(32) == 31 and err.fields["recommended_action"] == "sync_pull_mirror"
    assert rich.accept(trimmed, known=rich.heads[5]).outcome == "advanced"  # seq 6 is still in the log


def test_writes_outside_the_authors_scope_are_refused(rich):
    err = _refused(rich, _forge(rich, "bo", {"ops.k": b"x"}), "sync_write_unauthorized")
    assert "ops.k" in err.message
    _refused(rich, _forge(rich, "bo", {"ops.k": None}), "sync_write_unauthorized")  # deletes too
    assert rich.accept(_forge(rich, "bo", {"app.z": b"x"})).outcome == "advanced"


def test_changes_attributed_to_another_member_are_refused(rich):
    built = rich.build("ana", {"app.a": b"x"})
    _refused(rich, resign(built, "ana", _set(["secrets", 0, "by"], "bo")), "sync_write_unauthorized")


def test_forged_membership_records_are_refused(rich):
    c = Chain()
    c.push("ana", membership=merge.AddMember(member("bo", "writer", ("app.*",))))
    # bo promotes himself: a record signed by bo, who is no admin of the record before it
    forged_members = [member("ana", "admin"), member("bo", "admin")]
    record = chain.sign_record(epoch=3, seq=3, remote_id=REMOTE_ID, prev=chain.record_hash(c.head.current),
                               members=forged_members, signer=identity("bo"))
    forged = _forge(c, "bo", {"app.x": b"1"})
    forged = resign(forged, "bo", lambda raw: (raw["sync"]["membership"].append(record.to_json()),
                                               raw["sync"]["log"][-1].update(members=True)))
    err = _refused(c, forged, "sync_membership_invalid")
    assert "record 3" in err.message and "admin" in err.message

    # a widened scope in an old record, without the record's signature
    def widen(raw):
        raw["sync"]["membership"][1]["members"][1]["scope"] = ["**"]
    err = _refused(c, resign(c.build("ana", {"a": b"1"}), "ana", widen), "sync_membership_invalid")
    assert "signature" in err.message

    # a record whose prev does not name the record before it
    def unlink(raw):
        raw["sync"]["membership"][1]["prev"] = "0" * 64
    _refused(c, resign(c.build("ana", {"a": b"1"}), "ana", unlink), "sync_membership_invalid")


def test_a_head_adding_a_record_is_signed_by_the_records_signer(rich):
    c = Chain()
    c.push("ana", membership=merge.AddMember(member("dee", "admin")))
    by_dee = c.build("dee", membership=merge.AddMember(member("bo", "writer")))
    # ana publishes dee's record as her own head
    swapped = resign(by_dee, "ana", lambda raw: (raw["sync"].update(by="ana"),
                                                 raw["sync"]["log"][-1].update(by="ana")))
    err = _refused(c, swapped, "sync_signer_not_writer")
    assert "another signer" in err.message
    assert c.accept(by_dee).outcome == "advanced"


def test_rotation_due_rules(rich):
    c = Chain()
    c.push("ana", {"a": b"1", "b": b"2"})
    c.push("ana", membership=merge.AddMember(member("bo", "writer")))
    removal = c.build("ana", membership=merge.RemoveMember("bo"))
    assert [d.name for d in chain.parse_head(removal).sync.rotation_due] == ["a", "b"]
    # a removal head that hides a name from rotation
    hidden = resign(removal, "ana", lambda raw: raw["sync"]["rotation_due"].pop())
    _refused(c, hidden, "sync_write_unauthorized")
    c.push("ana", membership=merge.RemoveMember("bo"))
    # rotation_due may not grow in a head that removes nobody
    grown = c.build("ana", {"a": b"3"})
    grown = resign(grown, "ana", lambda raw: raw["sync"]["rotation_due"].insert(
        0, {"name": "a", "since_seq": raw["sync"]["seq"], "removed": ["bo"]}))
    _refused(c, grown, "sync_write_unauthorized")
    # nor name somebody who was never removed
    renamed = resign(c.build("ana", {}), "ana", _set(["sync", "rotation_due", 0, "removed"], ["zed"]))
    _refused(c, renamed, "sync_write_unauthorized")
    # dropping an entry without rotating the name: caught against the parent's content
    dropped = resign(c.build("ana", {"c": b"1"}), "ana", lambda raw: raw["sync"]["rotation_due"].pop(0))
    assert c.accept(dropped).outcome == "advanced"  # nothing in the head itself tells
    _refused(c, dropped, "sync_write_unauthorized", kept=lambda: c.head)


def test_descent_check_against_the_parents_content(rich):
    c = Chain()
    c.push("ana", {"app.a": b"1", "ops.k": b"2"})
    c.push("ana", membership=merge.AddMember(member("bo", "writer", ("app.*",))))
    altered = _forge(c, "bo", {"app.a": b"2"})
    # bo also rewrites ops.k (outside his scope) keeping its old revision and author
    altered = resign(altered, "bo", lambda raw: raw["secrets"][1].update(
        value_b64=base64.b64encode(b"evil").decode()))
    assert c.accept(altered).outcome == "advanced"  # the head alone cannot tell
    err = _refused(c, altered, "sync_write_unauthorized", kept=lambda: c.head)
    assert "ops.k" in err.message
    dropped = resign(_forge(c, "bo", {"app.a": b"2"}), "bo", lambda raw: raw["secrets"].pop(1))
    _refused(c, dropped, "sync_write_unauthorized", kept=lambda: c.head)
    old_gen = resign(c.build("ana", {"app.a": b"3"}), "ana", _set(["generation"], c.head.generation))
    _refused(c, old_gen, "sync_write_unauthorized", kept=lambda: c.head)


def test_clock_skew(rich):
    c = Chain()
    c.clock = NOW + 3600  # an author whose clock runs an hour ahead
    ahead = c.build("ana", {"a": b"1"})
    c.clock = NOW
    err = _refused(c, ahead, "generation_in_future", known=c.heads[0])
    assert "head 2 is dated 3601s ahead" in err.message and err.fields["generation"] == (NOW + 3601) * 1000
    c.clock = NOW + 3000  # within a larger --max-skew
    assert c.accept(ahead, known=c.heads[0], max_skew=900).outcome == "advanced"
    # the generation alone can be in the future too
    c.clock = NOW
    gen = resign(c.build("ana", {"a": b"1"}), "ana", _set(["generation"], (NOW + 7200) * 1000))
    _refused(c, gen, "generation_in_future")


# -- join requests ------------------------------------------------------------------------------


def _join(remote_id: str | None = REMOTE_ID) -> chain.JoinRequest:
    ident = identity("bo")
    assert ident.recipient is not None
    return chain.make_join_request("bo", ident, ident.recipient, remote_id, rfc3339(NOW))


def test_join_request_round_trip_and_fingerprint():
    request = _join()
    assert request.text.startswith("kimen-join-v1:") and request.text.count(".") == 1
    parsed = chain.parse_join_request(request.text, REMOTE_ID)
    assert (parsed.member, parsed.recipient, parsed.signer, parsed.remote_id) == (
        "bo", identity("bo").recipient, identity("bo").signer, REMOTE_ID)
    body_b64 = request.text[len("kimen-join-v1:"):].split(".")[0]
    body = _unb64u(body_b64)
    assert body == canonical({"member": "bo", "recipient": identity("bo").recipient,
                              "signer": identity("bo").signer, "remote_id": REMOTE_ID, "created_at": rfc3339(NOW)})
    digest = hashlib.sha256(body).hexdigest()[:16]
    assert parsed.fingerprint == "-".join(digest[i:i + 4] for i in (0, 4, 8, 12))
    assert "bo" in repr(parsed) and identity("bo").signer not in repr(parsed)


def test_join_request_without_a_remote_id_fits_any_remote():
    request = _join(None)
    assert chain.parse_join_request(request.text, REMOTE_ID).remote_id is None


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tampered_body(text: str, **changes) -> str:
    body_b64, sig = text[len("kimen-join-v1:"):].split(".")
    fields = {**json.loads(_unb64u(body_b64)), **changes}
    return f"kimen-join-v1:{_b64u(canonical(fields))}.{sig}"


def test_invalid_join_requests():
    good = _join().text
    body_b64, sig = good[len("kimen-join-v1:"):].split(".")
    cases = {
        "other remote": (good, "f" * 32),
        "wrong prefix": ("kimen-join-v2:" + good[14:], REMOTE_ID),
        "no signature": (good.split(".")[0], REMOTE_ID),
        "garbage": ("kimen-join-v1:!!!.???", REMOTE_ID),
        "padded base64": (f"kimen-join-v1:{body_b64}==.{sig}", REMOTE_ID),
        "tampered member": (_tampered_body(good, member="root"), REMOTE_ID),
        "tampered recipient": (_tampered_body(good, recipient=identity("eve").recipient), REMOTE_ID),
        "signer swapped": (_tampered_body(good, signer=identity("eve").signer), REMOTE_ID),
        "not canonical": (f"kimen-join-v1:{_b64u(b' ' + _unb64u(body_b64))}.{sig}", REMOTE_ID),
        "too long": ("kimen-join-v1:" + "A" * 5000 + "." + sig, REMOTE_ID),
        "extra field": (_tampered_body(good, extra=1), REMOTE_ID),
        "other signature": (f"kimen-join-v1:{body_b64}.{_b64u(identity('eve').sign(b'x'))}", REMOTE_ID),
    }
    for label, (text, remote_id) in cases.items():
        with pytest.raises(errors.KimenError) as info:
            chain.parse_join_request(text, remote_id)
        assert _reason(info) == "invalid_join_request", label


def test_join_request_member_id_is_checked():
    ident = identity("bo")
    with pytest.raises(errors.KimenError) as info:
        chain.make_join_request("Bo", ident, ident.recipient, REMOTE_ID, rfc3339(NOW))
    assert _reason(info) == "invalid_member_id"


def test_the_strict_reader_refuses_floats_nan_and_duplicate_keys():
    from kimen import sigfmt
    assert sigfmt.loads('{"a":[1,"x",null,true]}') == {"a": [1, "x", None, True]}
    for text in ('{"a":1.5}', '{"a":NaN}', '{"a":Infinity}', '{"a":1,"a":2}', '{"a":1e3}'):
        with pytest.raises(ValueError):
            sigfmt.loads(text)
    assert sigfmt.canonical({"b": 1, "a": "é"}) == b'{"a":"\\u00e9","b":1}'
