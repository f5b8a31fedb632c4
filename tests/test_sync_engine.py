"""The sync engine with several members — separate vault files, identities and state directories —
over the real fs transport in temporary directories (docs/sync.md, "Pulling", "Pushing")."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kimen import errors, vault
from kimen.bundle import age, document, keys
from kimen.sensitive import Sensitive
from kimen.store import Change, KdfParams
from kimen.sync import chain, merge
from kimen.sync.base import Member, Transport
from kimen.sync.engine import Engine, Remote, endpoint
from kimen.sync.fs import FsTransport
from kimen.sync.git import GitTransport
from kimen.vault.syncstate import VaultSyncState, read_local_revision, read_state

SMALL = KdfParams(memory_kib=8192, time=1, parallelism=1)
PW = b"correct horse battery staple"
CANARY = b"canary-3f9a1c-value-never-on-the-remote"


class Person:
    """One member: a vault, an identity, a state directory, an engine over the shared fs remote."""

    def __init__(self, root: Path, name: str, remote_dir: Path, ident: keys.Identity | None = None,
                 transport: Callable[[Person], Transport] | None = None) -> None:
        self.name = name
        self.make_transport = transport or (lambda me: FsTransport(str(me.remote_dir), lock_wait=30))
        home = root / name
        home.mkdir()
        self.vault_path = str(home / "vault.db")
        self.vault = vault.create_vault(self.vault_path, Sensitive(PW), SMALL)
        self.store = self.vault.unlock(Sensitive(PW))
        self.identity = ident or keys.generate()[0]
        self.state_base = str(home / "state")
        self.remote_dir = remote_dir
        self.remote_id: str | None = None
        self.backups = 0
        self.home = home

    def engine(self) -> Engine:
        remote = Remote("team", self.make_transport(self), remote_id=self.remote_id,
                        endpoint=endpoint("fs", str(self.remote_dir)), state_base=self.state_base)
        return Engine(remote, self.identity)

    def local(self) -> VaultSyncState:
        return VaultSyncState(self.store)

    def backup(self) -> str:
        self.backups += 1
        return str(self.home / f"vault.db.bak.{self.backups}")

    def set(self, name: str, value: bytes) -> None:
        self.store.write([Change.set(name, value)])

    def rm(self, name: str) -> None:
        self.store.write([Change.rm(name)])

    def values(self) -> dict[str, bytes]:
        names = self.vault.list_names()
        return {n: v.value for n, v in self.store.read(names).items()} if names else {}

    def pull(self, **kw):
        result = self.engine().pull(self.local(), backup_path=self.backup(), **kw)
        self.remote_id = self.remote_id or result.pin_remote_id
        return result

    def push(self, **kw):
        result = self.engine().push(self.local(), backup_path=self.backup(), **kw)
        self.remote_id = self.remote_id or result.pin_remote_id
        return result

    def resolve(self, take, keys=(), **kw):
        return self.engine().resolve(self.local(), take, keys, backup_path=self.backup(), **kw)

    def status(self):
        state = read_state(self.vault, "team")
        return self.engine().status(state, lambda scope: read_local_revision(self.vault, scope))


@pytest.fixture
def team(tmp_path):
    """ana (admin, creates the remote), bo and cy (writers), over one fs remote directory."""
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    people = {name: Person(tmp_path, name, remote_dir) for name in ("ana", "bo", "cy")}
    ana = people["ana"]
    created = ana.engine().init("ana")
    assert created.created_remote and created.seq == 1
    ana.remote_id = created.remote_id
    for name in ("bo", "cy"):
        add(ana, member_of(people[name]))
        people[name].remote_id = created.remote_id
    return people


def head_of(person: Person):
    """The current head, decrypted with `person`'s identity."""
    data = (person.remote_dir / "vault.age").read_bytes()
    return chain.parse_head(document.parse(age.decrypt(data, [person.identity])))


def add(person: Person, member: Member) -> None:
    """A membership head published by hand (the membership commands come later): build_next with an
    AddMember change, signed by the admin `person`, sealed to every member of the new membership."""
    import time

    from kimen.durations import format_time
    from kimen.sigfmt import canonical

    transport = person.make_transport(person)
    current = transport.read_head()
    head = chain.parse_head(document.parse(age.decrypt(current.data, [person.identity])))
    now = time.time()
    doc = merge.build_next(head, author=person.name, changes={}, at=format_time(now), now_ms=int(now * 1000),
                           creator={"user": person.name}, membership=merge.AddMember(member),
                           signer=person.identity)
    document.sign(doc, person.identity)
    plaintext = canonical(doc)
    new = chain.parse_head(document.parse(plaintext))
    data = age.encrypt(plaintext, [keys.parse_recipient(m.recipient).obj for m in new.current.members])
    assert transport.publish(data, current.rev, seq=new.seq, by=person.name, expected_seq=head.seq).rev


def member_of(person: Person, role: str = "writer", scope: tuple[str, ...] = ("**",)) -> Member:
    return Member(person.name, role, person.identity.recipient, person.identity.signer, scope)  # type: ignore[arg-type]


def diverge(team) -> tuple[Person, Person]:
    """ana and bo both change `k` after agreeing on it: ana publishes first."""
    ana, bo = team["ana"], team["bo"]
    ana.set("k", b"base")
    ana.push()
    bo.pull()
    ana.set("k", b"ana")
    ana.push()
    bo.set("k", b"bo")
    return ana, bo


# -- converge, union, conflicts --------------------------------------------------------------------


def test_members_converge_and_first_pull_is_a_union(team):
    ana, bo, cy = team["ana"], team["bo"], team["cy"]
    ana.set("app.db_url", b"postgres://a")
    ana.set("app.token", b"t1")
    pushed = ana.push()
    assert pushed.published_keys == ["app.db_url", "app.token"] and not pushed.noop and pushed.attempts == 1

    bo.set("bo.only", b"mine")  # a local-only name before bo's first pull
    bo.set("app.token", b"t1")  # the same value: converges
    first = bo.pull()
    assert first.first_pull and first.applied_keys == ["app.db_url"] and first.kept_local_keys == ["bo.only"]
    assert bo.values() == {"app.db_url": b"postgres://a", "app.token": b"t1", "bo.only": b"mine"}
    assert first.backup_path is not None and os.path.exists(first.backup_path)

    bo.push()  # publishes bo.only
    cy.pull()
    ana.pull()
    expected = {"app.db_url": b"postgres://a", "app.token": b"t1", "bo.only": b"mine"}
    assert ana.values() == bo.values() == cy.values() == expected
    assert all(p.status().in_sync for p in (ana, bo, cy))


def test_first_pull_never_deletes_and_a_tombstoned_local_name_is_a_conflict(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("gone", b"x")
    ana.push()
    ana.rm("gone")
    assert ana.push().deleted_keys == ["gone"]
    bo.set("gone", b"x")
    with pytest.raises(errors.OverlappingChanges) as caught:
        bo.pull()
    assert caught.value.fields["conflict_keys"] == ["gone"]
    assert caught.value.exit_code(32) == 31
    assert bo.values() == {"gone": b"x"} and read_state(bo.vault, "team") is None


def test_same_key_conflict_stops_with_31_changes_nothing_and_resolves(team):
    ana, bo = diverge(team)
    bo.set("other", b"o")
    generation = bo.vault.header().generation
    for attempt in (bo.pull, lambda: bo.pull(reconcile=True), bo.push):
        with pytest.raises(errors.OverlappingChanges) as caught:
            attempt()
        assert caught.value.fields["conflict_keys"] == ["k"] and caught.value.exit_code(32) == 31
        assert "k" in caught.value.message
    assert bo.vault.header().generation == generation  # nothing changed
    assert head_of(ana).entries["k"].value == b"ana"

    with pytest.raises(errors.ResolveKeyNotConflict):
        bo.resolve("local", ["other"])
    resolved = bo.resolve("local", ["k"])
    assert resolved.keys == ["k"] and resolved.remaining_conflict_keys == [] and resolved.backup_path is None
    pushed = bo.push()
    assert pushed.published_keys == ["k", "other"]
    ana.pull()
    assert ana.values() == {"k": b"bo", "other": b"o"}
    with pytest.raises(errors.NoOverlappingConflicts):
        ana.resolve("remote")


def test_resolve_take_remote_writes_the_head_value_after_a_backup(team):
    _ana, bo = diverge(team)
    resolved = bo.resolve("remote")
    assert resolved.keys == ["k"] and resolved.backup_path and os.path.exists(resolved.backup_path)
    assert bo.values() == {"k": b"ana"}
    assert bo.pull(reconcile=True).in_sync
    assert bo.push().noop


def test_resolve_before_the_first_pull_does_the_first_pull(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("k", b"ana")
    ana.set("shared", b"s")
    ana.push()
    bo.set("k", b"bo")
    with pytest.raises(errors.OverlappingChanges):
        bo.pull()
    bo.resolve("local")
    assert bo.values() == {"k": b"bo", "shared": b"s"}
    bo.push()
    ana.pull()
    assert ana.values()["k"] == b"bo"


def test_manual_pull_required_with_local_changes_unless_reconcile(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    ana.set("b", b"2")
    ana.push()
    bo.set("c", b"3")
    with pytest.raises(errors.ManualPullRequired):
        bo.pull()
    result = bo.pull(reconcile=True)
    assert result.applied_keys == ["b"] and result.kept_local_keys == ["c"] and not result.in_sync
    assert bo.status().local_changed
    bo.push()
    assert not bo.status().local_changed


def test_delete_propagates_as_a_tombstone(team):
    ana, bo, cy = team["ana"], team["bo"], team["cy"]
    ana.set("old", b"x")
    ana.set("keep", b"y")
    ana.push()
    bo.pull()
    cy.pull()
    bo.rm("old")
    pushed = bo.push()
    assert pushed.deleted_keys == ["old"]
    head = head_of(ana)
    assert "old" not in head.entries and head.tombstone_map()["old"].by == "bo"
    pulled = cy.pull()
    assert pulled.deleted_keys == ["old"] and cy.values() == {"keep": b"y"}
    # a set of a tombstoned name brings it back
    cy.set("old", b"again")
    cy.push()
    assert "old" not in head_of(ana).tombstone_map()
    ana.pull()
    assert ana.values() == {"keep": b"y", "old": b"again"}


def test_push_carries_forward_names_outside_the_pushers_scope(tmp_path):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    ana = Person(tmp_path, "ana", remote_dir)
    dev = Person(tmp_path, "dev", remote_dir)
    ana.remote_id = ana.engine().init("ana").remote_id
    dev.remote_id = ana.remote_id
    add(ana, member_of(dev, scope=("dev.**",)))
    ana.set("prod.db", b"p")
    ana.set("dev.db", b"d")
    ana.push()
    before = head_of(ana).entries["prod.db"]

    dev.set("prod.db", b"dev-must-not-publish-this")  # outside dev's scope: never synced
    pulled = dev.pull()
    assert pulled.applied_keys == ["dev.db"]  # prod.db is outside the scope: untouched locally
    assert dev.values()["prod.db"] == b"dev-must-not-publish-this"
    dev.set("dev.db", b"d2")
    pushed = dev.push()
    assert pushed.published_keys == ["dev.db"]
    after = head_of(ana)
    assert after.entries["prod.db"] == before  # carried forward byte for byte
    assert after.entries["dev.db"].by == "dev" and after.entries["dev.db"].revision == after.seq


def test_noop_push_and_ff_only(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    assert ana.push().noop
    bo.pull()
    ana.set("a", b"2")
    ana.push()
    bo.set("b", b"x")
    with pytest.raises(errors.RemoteChanged):
        bo.push(ff_only=True)
    pushed = bo.push()  # merges ana's change locally, publishes b
    assert pushed.merged_remote_keys == ["a"] and pushed.published_keys == ["b"]
    assert bo.values() == {"a": b"2", "b": b"x"}


# -- refusals ---------------------------------------------------------------------------------------


def test_a_replayed_old_head_is_refused_and_changes_nothing(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    old = (ana.remote_dir / "vault.age").read_bytes()
    ana.set("a", b"2")
    ana.push()
    bo.pull()
    (ana.remote_dir / "vault.age").write_bytes(old)
    generation = bo.vault.header().generation
    with pytest.raises(errors.RemoteRollback) as caught:
        bo.pull()
    assert caught.value.exit_code(32) == 31
    with pytest.raises(errors.RemoteRollback):
        bo.push()
    assert bo.vault.header().generation == generation and bo.values() == {"a": b"2"}


def test_the_ratchet_outlives_a_restored_vault(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    snapshot = bo.home / "snap.db"
    bo.vault.snapshot(str(snapshot))
    old = (ana.remote_dir / "vault.age").read_bytes()
    ana.set("a", b"2")
    ana.push()
    bo.pull()
    # bo restores his old vault, and someone puts the old head back on the remote
    bo.store.close()
    os.replace(snapshot, bo.vault_path)
    bo.vault = vault.Vault.open(bo.vault_path)
    bo.store = bo.vault.unlock(Sensitive(PW))
    (ana.remote_dir / "vault.age").write_bytes(old)
    with pytest.raises(errors.RemoteRollback):
        bo.pull()


def test_another_remotes_head_is_refused(team, tmp_path):
    ana, bo = team["ana"], team["bo"]
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    # a second remote whose head bo can decrypt, copied over the first one's
    stranger = Person(tmp_path, "zed", other_dir, ident=bo.identity)
    stranger.engine().init("bo")
    (ana.remote_dir / "vault.age").write_bytes((other_dir / "vault.age").read_bytes())
    with pytest.raises(errors.BundleWrongRemote):
        bo.pull()


def test_outsider_cannot_pull_and_reader_cannot_push(tmp_path):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    ana = Person(tmp_path, "ana", remote_dir)
    rita = Person(tmp_path, "rita", remote_dir)
    eve = Person(tmp_path, "eve", remote_dir)
    ana.remote_id = ana.engine().init("ana").remote_id
    add(ana, member_of(rita, "reader"))
    with pytest.raises(errors.SyncNotAMember):
        eve.pull()
    rita.pull()
    rita.set("x", b"1")
    with pytest.raises(errors.SyncRoleForbidden):
        rita.push()


def tamper(person: Person, sql: str) -> None:
    """An edit of the vault's sync tables behind kimen's back (sqlite3 directly)."""
    import sqlite3

    conn = sqlite3.connect(person.vault_path)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_remote_missing_and_tampered_baseline(team, tmp_path):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    tamper(bo, "UPDATE sync_baseline SET seq = seq + 1")
    with pytest.raises(errors.SyncBaselineTampered):
        bo.pull()
    lonely = Person(tmp_path, "lonely", tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.RemoteMissing):
        lonely.pull()
    assert lonely.status().reason == "remote_missing"


# -- concurrency --------------------------------------------------------------------------------------


def test_concurrent_pushes_lose_nothing(team):
    people = list(team.values())
    for person in people:
        person.pull()
    rounds = 3
    for r in range(rounds):
        for person in people:
            person.set(f"{person.name}.r{r}", f"{person.name}-{r}".encode())
        failures: list[BaseException] = []

        def run(person: Person, failures: list[BaseException] = failures) -> None:
            try:
                person.push()
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures
    head = head_of(people[0])
    # one head per push, each by exactly one member, nothing lost
    assert head.seq == 3 + rounds * len(people)
    assert [e.seq for e in head.sync.log] == list(range(1, head.seq + 1))
    names = {f"{p.name}.r{r}" for p in people for r in range(rounds)}
    assert names <= set(head.entries)
    for person in people:
        person.pull(reconcile=True)
        assert set(person.values()) == names


def test_concurrent_pushes_of_the_same_key_have_exactly_one_winner(team):
    people = list(team.values())
    for person in people:
        person.pull()
    for person in people:
        person.set("shared", person.name.encode())
    outcomes: dict[str, str] = {}

    def run(person: Person) -> None:
        try:
            person.push()
            outcomes[person.name] = "published"
        except errors.OverlappingChanges as exc:
            assert exc.fields["conflict_keys"] == ["shared"]
            outcomes[person.name] = "conflict"

    threads = [threading.Thread(target=run, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, o in outcomes.items() if o == "published"]
    assert len(winners) == 1 and len(outcomes) == 3
    assert head_of(people[0]).entries["shared"].value == winners[0].encode()


# -- what the remote holds ------------------------------------------------------------------------------


def test_a_canary_value_is_absent_from_every_remote_file(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("prod.canary", CANARY)
    ana.push()
    bo.pull()
    bo.set("prod.canary", CANARY + b"-2")
    bo.push()
    ana.pull()
    found = []
    for root in (ana.remote_dir, Path(ana.state_base), Path(bo.state_base)):
        for path in root.rglob("*"):
            if path.is_file() and CANARY in path.read_bytes():
                found.append(path)
    assert ana.values()["prod.canary"] == CANARY + b"-2"
    assert not found
    # and the names of the remote's files
    assert sorted(p.name for p in ana.remote_dir.iterdir()) == ["vault.age", "vault.age.history", "vault.age.lock"]


def test_status_needs_no_identity_and_reads_the_head_every_call(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    state = read_state(bo.vault, "team")
    blind = Engine(Remote("team", FsTransport(str(bo.remote_dir)), remote_id=bo.remote_id,
                          endpoint=endpoint("fs", str(bo.remote_dir)), state_base=bo.state_base), None)
    status = blind.status(state, lambda scope: read_local_revision(bo.vault, scope))
    assert status.reason is None and not status.local_changed and status.head_seq == state.head_seq
    assert status.recommended_action == "configure_remote_identity" and not status.baseline_verified
    ana.set("a", b"2")
    ana.push()
    assert bo.status().reason == "remote_changed" and bo.status().recommended_action == "sync_pull"
    bo.set("b", b"x")
    assert bo.status().local_changed and bo.status().recommended_action == "sync_pull_reconcile"


# -- over a bare git repository: lost races ------------------------------------------------------------


class RacedGit(GitTransport):
    """The real git transport; just before its first publish, another member's push runs (the race
    a lock-free transport has to survive)."""

    def __init__(self, *args, before_publish: Callable[[], None] | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.before_publish = before_publish

    def publish(self, *args, **kw):
        hook, self.before_publish = self.before_publish, None
        if hook is not None:
            hook()
        return super().publish(*args, **kw)


@pytest.fixture
def git_team(tmp_path):
    import git as gitpython

    repo = tmp_path / "team.git"
    gitpython.Repo.init(repo, bare=True)
    (tmp_path / "githome").mkdir()
    hooks: dict[str, Callable[[], None]] = {}

    def transport(me: Person) -> Transport:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "githome"),
               "XDG_CACHE_HOME": str(me.home / "cache")}
        return RacedGit(str(repo), env=env, before_publish=hooks.pop(me.name, None))

    people = {name: Person(tmp_path, name, repo, transport=transport) for name in ("ana", "bo")}
    ana, bo = people["ana"], people["bo"]
    ana.remote_id = ana.engine().init("ana").remote_id
    bo.remote_id = ana.remote_id
    add(ana, member_of(bo))
    return people, hooks


def test_git_a_lost_race_rebuilds_on_the_new_head_when_the_merge_stays_clean(git_team):
    people, hooks = git_team
    ana, bo = people["ana"], people["bo"]
    ana.pull()
    bo.pull()
    ana.set("ana.key", b"a")
    bo.set("bo.key", b"b")
    hooks["ana"] = lambda: bo.push()  # bo publishes between ana's read and ana's publish
    pushed = ana.push()
    assert pushed.attempts == 2 and pushed.published_keys == ["ana.key"] and pushed.merged_remote_keys == ["bo.key"]
    assert ana.values() == {"ana.key": b"a", "bo.key": b"b"}
    bo.pull()
    assert bo.values() == ana.values()
    head = ana.engine().fetch(None).head
    assert [(e.seq, e.by) for e in head.sync.log][-2:] == [(head.seq - 1, "bo"), (head.seq, "ana")]


def test_git_a_lost_race_on_the_same_key_stops_with_31(git_team):
    people, hooks = git_team
    ana, bo = people["ana"], people["bo"]
    ana.pull()
    bo.pull()
    ana.set("k", b"a")
    bo.set("k", b"b")
    hooks["ana"] = lambda: bo.push()
    generation = ana.vault.header().generation
    with pytest.raises(errors.OverlappingChanges) as caught:
        ana.push()
    assert caught.value.fields["conflict_keys"] == ["k"]
    assert ana.vault.header().generation == generation
    assert ana.engine().fetch(None).head.entries["k"].value == b"b"


def test_git_three_lost_races_give_up_with_remote_changed(git_team):
    people, _hooks = git_team
    ana, bo = people["ana"], people["bo"]
    ana.pull()
    bo.pull()
    counter = iter(range(100))

    class AlwaysRaced(RacedGit):
        def publish(self, *args, **kw):
            bo.set("bo.key", str(next(counter)).encode())
            bo.push()
            return GitTransport.publish(self, *args, **kw)

    ana.make_transport = lambda me: AlwaysRaced(str(me.remote_dir), env={
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(me.home), "XDG_CACHE_HOME": str(me.home / "c")})
    ana.set("ana.key", b"a")
    with pytest.raises(errors.RemoteChanged) as caught:
        ana.push()
    assert caught.value.exit_code(32) == 31
    assert "ana.key" not in ana.engine().fetch(None).head.entries


def test_changes_names_keys_and_mirror_makes_the_scope_equal_to_the_head(team):
    ana, bo = diverge(team)
    ana.set("a.only", b"1")
    ana.push()
    bo.set("b.only", b"2")
    changes = bo.engine().changes(bo.local())
    assert changes.conflict_keys == ["k"] and changes.conflicts == [{"key": "k", "kind": "both_changed"}]
    assert changes.local_only_changed_keys == ["b.only"] and changes.remote_only_changed_keys == ["a.only"]
    assert not changes.can_reconcile and not changes.first_pull
    assert bo.status().conflicts()["has_conflict"]
    with pytest.raises(errors.ConflictingPullModes):
        bo.pull(reconcile=True, mirror=True)
    mirrored = bo.pull(mirror=True)
    assert mirrored.mode == "pull_mirror" and mirrored.backup_path and os.path.exists(mirrored.backup_path)
    assert bo.values() == ana.values() == {"a.only": b"1", "k": b"ana"}
    assert bo.status().in_sync


def test_revert_takes_a_value_back_from_an_older_head(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("k", b"v1")
    first = ana.push().seq
    ana.set("k", b"v2")
    ana.set("new", b"n")
    ana.push()
    bo.pull()
    done = bo.engine().revert(bo.local(), "k", first)
    assert done.changed and not done.deleted and bo.values()["k"] == b"v1"
    gone = bo.engine().revert(bo.local(), "new", first)
    assert gone.deleted and "new" not in bo.values()
    assert bo.push().published_keys == ["k"] and head_of(ana).tombstone_map()["new"].by == "bo"
    with pytest.raises(errors.SyncHistoryUnavailable):
        bo.engine().revert(bo.local(), "k", 999)


def test_an_edited_sync_state_row_is_tampering(team):
    ana, bo = team["ana"], team["bo"]
    ana.set("a", b"1")
    ana.push()
    bo.pull()
    tamper(bo, "UPDATE sync_state SET scope = '[\"x.**\"]'")
    with pytest.raises(errors.SyncBaselineTampered):
        bo.push()
    reset = bo.engine().reset_baseline(bo.local())
    assert reset.new_seq == reset.previous_seq
    assert bo.pull().in_sync


def test_one_vault_two_remotes_with_overlapping_scopes_is_refused(team, tmp_path):
    ana = team["ana"]
    ana.set("app.x", b"1")
    ana.push()
    ana.pull()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = Remote("second", FsTransport(str(second_dir)), remote_id=None, endpoint=endpoint("fs", str(second_dir)),
                    state_base=ana.state_base)
    engine = Engine(second, ana.identity)
    engine.init("ana", ("**",))
    with pytest.raises(errors.RemoteScopeOverlap) as caught:
        engine.pull(ana.local())
    assert caught.value.fields["other"] == "team"
    assert read_state(ana.vault, "second") is None


class _Counting(VaultSyncState):
    """The real vault side, counting how often every value in scope is decrypted."""

    reads = 0

    def local_values(self, scope):
        type(self).reads += 1
        return super().local_values(scope)


def test_a_merge_decrypts_nothing_while_no_local_row_changed_since_the_last_sync(team):
    """With the local revision still the one the last sync recorded, every local value is the
    baseline's: pull, changes and a no-op push take the baseline's digests and read no value; one
    local change (or a changed row of any kind) makes them read and compare the values again."""
    ana, bo = team["ana"], team["bo"]
    for i in range(5):
        ana.set(f"k{i}", b"v%d" % i)
    ana.push()
    bo.pull()
    ana.set("k1", b"changed")
    ana.push()
    _Counting.reads = 0
    pulled = bo.engine().pull(_Counting(bo.store), reconcile=True, backup_path=bo.backup())
    assert pulled.applied_keys == ["k1"] and _Counting.reads == 0
    assert bo.engine().changes(_Counting(bo.store)).local_changed_keys == [] and _Counting.reads == 0
    assert bo.engine().push(_Counting(bo.store)).noop and _Counting.reads == 0
    assert bo.values()["k1"] == b"changed"
    bo.set("k2", b"local")
    changes = bo.engine().changes(_Counting(bo.store))
    assert changes.local_only_changed_keys == ["k2"] and _Counting.reads == 1
    assert bo.engine().push(_Counting(bo.store)).published_keys == ["k2"] and _Counting.reads == 2
    ana.pull()
    assert ana.values()["k2"] == b"local"


# -- the cost work of push and pull keeps their rules ------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_push_and_pull_restore_the_garbage_collector(team, enabled):
    """The cyclic collector is paused during a push or pull and left as it was, failure or not."""
    import gc

    ana, bo = diverge(team)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        ana.set("other", b"1")
        ana.push()
        assert gc.isenabled() is enabled
        with pytest.raises(errors.KimenError):
            bo.push()  # the same key changed on both sides: overlapping_changes
        assert gc.isenabled() is enabled
        bo.pull(reconcile=False, mirror=True)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_baseline_rows_written_by_change_stay_verifiable(team):
    """A commit writes only the baseline rows that changed since `load`; after pushes and pulls of
    single keys the stored baseline still verifies and equals the head's digests."""
    from kimen.sync.base import Scope

    ana, bo = team["ana"], team["bo"]
    for i in range(20):
        ana.set(f"app.k{i}", b"v")
    ana.push()
    bo.pull()
    for step in range(3):
        ana.set("app.k3", f"ana-{step}".encode())
        ana.rm(f"app.k{10 + step}")
        ana.push()
        bo.pull()
    for person in (ana, bo):
        local = person.local()
        state, baseline, _generation = local.load("team")
        assert state is not None and baseline is not None
        expected = merge.head_digests(local.k_sync, head_of(person), Scope(state.scope))
        assert baseline == expected and len(baseline) == 17


def test_baseline_rewritten_whole_when_its_rows_changed_since_load(team):
    """When the state row is no longer the one `load` checked (here: removed meanwhile without a
    vault write), the commit rewrites every row instead of the changed ones, so what it records
    verifies."""
    from kimen.sync.base import Scope
    from kimen.vault.syncstate import clear_state

    ana = team["ana"]
    for i in range(5):
        ana.set(f"app.k{i}", b"v")
    ana.push()
    local = ana.local()
    state, baseline, generation = local.load("team")
    assert state is not None and baseline is not None
    changed = dict(baseline)
    changed["app.k0"] = merge.Keyed(merge.key_digest(local.k_sync, "app.k0", b"other"), baseline["app.k0"].seq)
    assert clear_state(ana.vault, "team")
    local.commit("team", [], state, changed, if_generation=generation, scope=Scope(state.scope),
                 keep_local_rev=False, backup_path=None)
    _state, stored, _generation = ana.local().load("team")  # sync_baseline_tampered if rows were missing
    assert stored == changed
