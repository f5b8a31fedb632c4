"""kimen.sync.base: member ids, scope globs (validity, matching, overlap), value types, remote revs."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from kimen import errors
from kimen.globs import Glob
from kimen.sync import base
from kimen.sync.base import Entry, LogEntry, Member, Scope, globs_overlap


@pytest.mark.parametrize("text", ["ana", "a", "0", "bo.smith", "cy_2", "d-e", "a" * 64, "9lives"])
def test_valid_member_ids(text):
    assert base.check_member_id(text) == text


@pytest.mark.parametrize("text", ["", "Ana", "-bo", ".x", "_x", "a b", "ä", "a" * 65, "a/b", "a:b", "a\n"])
def test_invalid_member_ids(text):
    with pytest.raises(errors.KimenError) as info:
        base.check_member_id(text)
    assert info.value.reason == "invalid_member_id"
    assert not base.is_valid_member_id(text)


def test_non_string_member_id_is_invalid():
    assert not base.is_valid_member_id(None) and not base.is_valid_member_id(7)


@pytest.mark.parametrize("glob", ["**", "*", "prod", "prod.*", "prod.**", "*.db", "*.*.x", "a.*.**", "x-y",
                                  "db-2.password", "A_b.*", "a.-b", "a" * 128, "a" * 126 + ".*"])
def test_valid_scope_globs(glob):
    assert base.check_scope_glob(glob) == glob


@pytest.mark.parametrize("glob", ["", ".", "a.", ".a", "a..b", "**.a", "a.**.b", "**.**", "***", "a*", "*a",
                                  "pr?d", "a.b*", "-a", "-a.**", "a b", "a/b", "ä", "a" * 129, "a" * 127 + ".*",
                                  "a" * 127 + ".**"])
def test_invalid_scope_globs(glob):
    with pytest.raises(errors.KimenError) as info:
        base.check_scope_glob(glob)
    assert info.value.reason == "invalid_scope_glob"


def test_scope_matches_with_the_one_glob_matcher():
    scope = Scope(["prod.*", "ci.**"])
    assert scope.covers("prod.x") and not scope.covers("prod.x.y") and not scope.covers("prod")
    assert scope.covers("ci.a") and scope.covers("ci.a.b") and not scope.covers("ci")
    assert Scope(["**"]).covers("anything.at.all") and Scope(["*"]).covers("top")
    assert not Scope(["*"]).covers("two.segments")
    for glob in ("prod.*", "ci.**", "*", "**", "a.*.**"):  # same reading as everywhere else a glob is used
        for name in ("prod.x", "ci.a.b", "top", "a.b.c", "a.b"):
            assert Scope([glob]).covers(name) == Glob(glob).match(name)


# Every pair of segment forms: literal = / literal ≠ / literal vs * / * vs * / trailing ** against
# each, with equal and different fixed lengths.
OVERLAP_TABLE = [
    ("a", "a", True), ("a", "b", False), ("a", "*", True), ("*", "*", True),
    ("a.b", "a.b", True), ("a.b", "a.c", False), ("a.b", "b.b", False), ("a.b", "*.b", True),
    ("a.b", "a.*", True), ("a.*", "*.b", True), ("*.*", "a.b", True), ("a.b", "a", False), ("*", "*.*", False),
    ("**", "a", True), ("**", "a.b.c", True), ("**", "*", True), ("**", "**", True),
    ("a.**", "a", False), ("a.**", "a.b", True), ("a.**", "a.b.c", True), ("a.**", "b.c", False),
    ("a.**", "*", False), ("a.**", "*.*", True), ("a.**", "*.b", True), ("a.**", "b.*", False),
    ("a.**", "a.**", True), ("a.**", "b.**", False), ("a.**", "*.**", True), ("a.**", "**", True),
    ("a.b.**", "a.**", True), ("a.b.**", "a.c.**", False), ("a.b.**", "*.c.**", False),
    ("a.b.**", "*.*.**", True), ("a.*.c", "a.**", True), ("a.*.c", "*.b.**", True), ("a.*.c", "a.b.d", False),
    ("*.x.**", "y.*.**", True), ("*.x.**", "y.z.**", False), ("a.b", "a.b.**", False), ("a.b.c", "a.b.**", True),
    # a common name would be longer than any valid name
    ("a" * 100 + ".**", "*." + "b" * 100, False), ("a" * 60 + ".**", "*." + "b" * 60, True),
    ("a" * 64 + ".**", "a" * 64 + ".**", True), ("a" * 126 + ".**", "**", True), ("a" * 126 + ".*", "**", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), OVERLAP_TABLE)
def test_overlap_table(a, b, expected):
    assert globs_overlap(a, b) is expected
    assert globs_overlap(b, a) is expected  # symmetric
    if expected:  # the witness really is a name both match
        assert base.scope_overlaps([a], [b]) == [(a, b)]
    else:
        assert base.scope_overlaps([a], [b]) == []


def _universe(max_segments: int) -> list[str]:
    segments = ["a", "b", "x"]
    return [".".join(p) for n in range(1, max_segments + 1) for p in itertools.product(segments, repeat=n)]


def test_overlap_agrees_with_the_matcher_on_every_small_glob_pair():
    """Decided segment by segment, confirmed by brute force with kimen.globs over small names."""
    forms = ["a", "b", "*"]
    globs = [".".join(p) for n in (1, 2, 3) for p in itertools.product(forms, repeat=n)]
    globs += [g + ".**" for g in globs if g.count(".") < 2] + ["**"]
    names = _universe(5)
    compiled = {g: Glob(g) for g in globs}
    matches = {g: {n for n in names if compiled[g].match(n)} for g in globs}
    for a, b in itertools.product(globs, repeat=2):
        assert globs_overlap(a, b) == bool(matches[a] & matches[b]), (a, b)


def test_scope_overlaps_names_every_overlapping_pair():
    assert base.scope_overlaps(["prod.**", "ci.*"], ["dev.**", "ci.deploy"]) == [("ci.*", "ci.deploy")]
    assert base.scope_overlaps(["prod.**"], ["dev.**", "staging.*"]) == []


def test_value_types_round_trip_and_hide_values():
    entry = Entry("a.b", "c2VjcmV0", 3, "ana", "2026-01-01T00:00:00Z")
    assert entry.value == b"secret" and "c2VjcmV0" not in repr(entry) and "secret" not in repr(entry)
    assert entry.to_json() == {"name": "a.b", "value_b64": "c2VjcmV0", "revision": 3, "by": "ana",
                               "updated_at": "2026-01-01T00:00:00Z"}
    log = LogEntry(2, "f" * 64, "ana", "2026-01-01T00:00:00Z", ("a",), ("b",), False, "")
    assert log.to_json()["del"] == ["b"] and log.to_json()["set"] == ["a"]
    member = Member("ana", "admin", "age1x", "kimen-sig-v1:x", ("**",))
    assert member.can_write and member.to_json()["scope"] == ["**"]
    assert not Member("bo", "reader", "age1x", None, ("**",)).can_write


def test_remote_rev_is_sha256_of_the_bytes():
    assert base.remote_rev(b"head") == hashlib.sha256(b"head").hexdigest()
    assert repr(base.RemoteHead(b"x" * 10, base.remote_rev(b"x" * 10))).endswith("10 bytes)")


def test_sorted_unique():
    assert base.sorted_unique([]) and base.sorted_unique(["a", "b"])
    assert not base.sorted_unique(["b", "a"]) and not base.sorted_unique(["a", "a"])
