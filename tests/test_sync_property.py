"""Heads built from random interleavings of members with different scopes.

Every member keeps a local vault (values), a baseline (keyed digests) and the head it last
accepted. A turn either edits the local vault, syncs (accept the current head, merge, settle any
conflict by taking one side, apply the remote-only changes, push the local-only ones), or — for the
admin — changes the membership. Every new head is accepted against the one before it, and checked
independently of kimen's own carry-forward check:

- a push never lowers a name's revision and never drops or alters an entry it did not change,
  names outside the pusher's scope included; the head's values equal every change ever published;
- the log stays contiguous and carries the previous one forward; tombstones stay disjoint from
  the secrets and inside the window;
- rotation_due lists every live name after a removal, and only shrinks (by the names set or
  deleted) otherwise;
- after a writer's sync its in-scope values equal the head's: no local change is ever lost.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimen.sync import base, chain, merge
from kimen.sync.base import Head, Scope
from kimen.sync.merge import Keyed
from tests.sync_helpers import CREATOR, NOW, REMOTE_ID, identity, member, rfc3339, sign

K = bytes(32)
NAMES = ["app.a", "app.b", "shared.x", "shared.y.z", "ops.k", "ops.l.m", "misc.m", "misc.n"]
ROLES = {"ana": "admin", "bo": "writer", "cy": "writer", "dee": "reader"}
SCOPES = [("app.*", "shared.**"), ("ops.**", "shared.**"), ("app.**",), ("**",), ("misc.*", "ops.*")]


class Local:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.baseline: dict[str, Keyed] | None = None
        self.known: Head | None = None


class Team:
    def __init__(self, rnd: random.Random, start_seq: int = 1) -> None:
        self.rnd = rnd
        self.clock = NOW
        self.published: dict[str, bytes] = {}
        self.locals = {name: Local() for name in ROLES}
        raw = merge.build_genesis(member("ana", "admin"), identity("ana"), at=rfc3339(self.clock),
                                  now_ms=self.clock * 1000, creator=CREATOR, remote_id=REMOTE_ID)
        if start_seq > 1:
            _fast_forward(raw, start_seq)
        self.doc = sign(raw, "ana")  # the current head's document, as a puller reads it
        self.head = chain.accept(self.doc, None, None, self.clock, 900).head
        self.pushes = 0
        self.membership_heads = 0
        self.conflicts = 0

    # -- one turn --------------------------------------------------------------------------------

    def turn(self) -> None:
        rnd = self.rnd
        who = rnd.choice(sorted(ROLES))
        current = self.head.current.member(who)
        if who == "ana" and rnd.random() < 0.06:
            self.change_membership()
        elif current is not None and current.can_write and rnd.random() < 0.45:
            self.edit(who, Scope(current.scope))
        elif current is not None:
            self.sync(who, current)

    def edit(self, who: str, scope: Scope) -> None:
        local = self.locals[who]
        for _ in range(self.rnd.randint(1, 3)):
            name = self.rnd.choice([n for n in NAMES if scope.covers(n)])
            if self.rnd.random() < 0.25:
                local.values.pop(name, None)
            else:
                local.values[name] = f"{who}-{self.rnd.randrange(10**6)}".encode()

    def change_membership(self) -> None:
        rnd = self.rnd
        present = self.head.current.ids()
        absent = sorted(set(ROLES) - present)
        others = sorted(present - {"ana"})
        options: list[merge.MembershipChange] = []
        if absent:
            who = rnd.choice(absent)
            options.append(merge.AddMember(member(who, ROLES[who], rnd.choice(SCOPES))))
        if others:
            options.append(merge.RemoveMember(rnd.choice(others)))
            options.append(merge.UpdateMember(rnd.choice(others), scope=rnd.choice(SCOPES)))
        self.publish("ana", {}, membership=rnd.choice(options))
        self.membership_heads += 1

    def sync(self, who: str, current: base.Member) -> None:
        local = self.locals[who]
        if local.known is None or local.known.id != self.head.id:
            accepted = chain.accept(self.doc, chain.known_head(local.known) if local.known else None,
                                    REMOTE_ID, self.clock, 900, kept=lambda: local.known)
            assert accepted.outcome == ("first_contact" if local.known is None else "advanced")
            local.known = self.head
        scope = Scope(current.scope)
        result = merge.merge(K, scope, self.head, self._digests(local), local.baseline)
        remote = merge.head_digests(K, self.head, scope)
        if result.conflict_keys:
            self.conflicts += 1
            baseline = dict(local.baseline or {})
            for name in result.conflict_keys:  # `sync resolve --take local|remote`
                if self.rnd.random() < 0.5 or not current.can_write:
                    _take_remote(local, self.head, name)
                if name in remote:
                    baseline[name] = remote[name]
                else:
                    baseline.pop(name, None)
            local.baseline = baseline
            result = merge.merge(K, scope, self.head, self._digests(local), local.baseline)
            assert not result.conflict_keys
        for name in result.remote_sets + result.remote_deletes:
            _take_remote(local, self.head, name)
        local.baseline = remote  # B := R for every in-scope name
        if current.can_write and result.local_changed:
            result = merge.merge(K, scope, self.head, self._digests(local), local.baseline)
            changes = merge.push_changes(result, local.values)
            self.publish(who, changes)
            local.known = self.head
            local.baseline = merge.head_digests(K, self.head, scope)
            self.pushes += 1
        in_scope = {n: e.value for n, e in self.head.entries.items() if scope.covers(n)}
        if current.can_write:
            assert {n: v for n, v in local.values.items() if scope.covers(n)} == in_scope, "a local change was lost"

    def _digests(self, local: Local) -> dict[str, bytes]:
        return {n: merge.key_digest(K, n, v) for n, v in local.values.items()}

    # -- publishing and the checks ----------------------------------------------------------------

    def publish(self, who: str, changes: dict[str, bytes | None], membership=None) -> None:
        parent = self.head
        self.clock += self.rnd.choice([0, 1, 1, 2])  # two heads in the same second, sometimes
        raw = merge.build_next(parent, author=who, changes=changes, at=rfc3339(self.clock),
                               now_ms=self.clock * 1000, creator=CREATOR, membership=membership,
                               signer=identity(who) if membership is not None else None)
        doc = sign(raw, who)
        accepted = chain.accept(doc, chain.known_head(parent), REMOTE_ID, self.clock, 900, kept=lambda: parent)
        assert accepted.outcome == "advanced"
        head = accepted.head
        _check_invariants(parent, head, changes)
        for name, value in changes.items():
            if value is None:
                self.published.pop(name, None)
            else:
                self.published[name] = value
        assert {n: e.value for n, e in head.entries.items()} == self.published
        self.head, self.doc = head, doc


def _take_remote(local: Local, head: Head, name: str) -> None:
    entry = head.entries.get(name)
    if entry is None:
        local.values.pop(name, None)
    else:
        local.values[name] = entry.value


def _check_invariants(parent: Head, head: Head, changes: dict[str, bytes | None]) -> None:
    seq = head.seq
    assert seq == parent.seq + 1 and head.sync.parent == parent.id and head.generation > parent.generation
    deleted = {n for n, v in changes.items() if v is None and n in parent.entries}
    set_names = {n for n, v in changes.items() if v is not None}
    for name, entry in parent.entries.items():
        new = head.entries.get(name)
        if name in deleted:
            assert new is None and head.tombstone_map()[name].seq == seq
            continue
        assert new is not None, f"{name} was dropped"
        assert new.revision >= entry.revision, f"{name}'s revision went down"
        if name not in set_names:
            assert new.to_json() == entry.to_json(), f"{name} was altered"
    for name, entry in head.entries.items():
        if entry.revision == seq:
            assert name in set_names and entry.value == changes[name]
        else:
            assert parent.entries[name].to_json() == entry.to_json()
    log = head.sync.log
    assert [e.seq for e in log] == list(range(max(1, seq - base.W + 1), seq + 1))
    assert log[:-1] == parent.sync.log[-(base.W - 1):] and log[-1].parent == parent.id
    tomb_names = {t.name for t in head.sync.tombstones}
    assert not tomb_names & head.entries.keys()
    assert all(seq - base.W <= t.seq <= seq for t in head.sync.tombstones)
    due = {d.name: d for d in head.sync.rotation_due}
    assert due.keys() <= head.entries.keys()
    removed = parent.current.ids() - head.current.ids()
    previous = {d.name: d for d in parent.sync.rotation_due if d.name not in changes}
    if removed:
        for name, entry in head.entries.items():
            if entry.revision < seq:
                assert removed <= set(due[name].removed), f"{name} is not due after removing {removed}"
    else:
        assert due == previous, "rotation_due changed without a removal"


def _fast_forward(raw: dict, seq: int) -> None:
    """Turn a genesis document into a valid head at `seq` whose history came before this test
    (its older log entries name parents nobody can check, which is what a puller sees of history)
    with two tombstones old enough to leave the window during the test."""
    sync = raw["sync"]
    at = raw["created_at"]
    log = [sync["log"][0]] + [{"seq": s, "parent": f"{s:064x}", "by": "ana", "at": at, "set": [], "del": [],
                               "members": False, "note": ""} for s in range(2, seq + 1)]
    sync.update(seq=seq, parent=log[-1]["parent"], log=log[-base.W:],
                tombstones=[{"name": "old.t1", "seq": seq - 975, "by": "ana"},
                            {"name": "old.t2", "seq": seq - 950, "by": "ana"}])


def _run(rnd: random.Random, heads: int, start_seq: int = 1) -> Team:
    team = Team(rnd, start_seq)
    while team.head.seq - start_seq + 1 < heads:
        team.turn()
    return team


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**64 - 1))
def test_random_interleavings_keep_every_change(seed):
    """10 examples of 100 heads: 1 000 heads from random interleavings (a seed per chain: each
    turn draws many random choices, more than hypothesis should record one by one)."""
    team = _run(random.Random(seed), 100)
    assert team.head.seq == 100


@pytest.mark.slow
def test_a_chain_crosses_the_window():
    """From a head at seq 990, 70 more: the log stays at W entries and old tombstones leave."""
    team = _run(random.Random(20261125), 70, start_seq=990)
    head = team.head
    assert head.seq == 1059 and len(head.sync.log) == base.W and head.sync.log[0].seq == head.seq - base.W + 1
    assert not {"old.t1", "old.t2"} & {t.name for t in head.sync.tombstones}
    assert team.pushes > 30 and team.conflicts > 0 and team.membership_heads > 0
