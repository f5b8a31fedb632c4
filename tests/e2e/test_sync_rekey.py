"""`vault rekey --rotate-data-key` of a syncing vault, through the installed command: the next
`sync status`, `changes`, `pull` and `push` behave as if no rotation happened (docs/sync.md)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.e2e.test_sync_cli import sync, team  # noqa: F401 (team: the fixture)


@pytest.fixture
def pair(team):  # noqa: F811 (the fixture imported above)
    ana, bo, _remote_dir = team
    for name, value in (("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")):
        ana.set(name, value)
    sync(ana, "push")
    sync(bo, "pull")
    return ana, bo


def rotate(k) -> None:
    done = k.ok("vault", "rekey", "--rotate-data-key", "--no-backup", "--json", env=k.with_pass()).json()
    assert done["rotated_data_key"] is True


def test_rotation_changes_nothing_sync_sees(pair):
    ana, bo = pair
    before = sync(ana, "status")
    assert before["in_sync"]
    rotate(ana)
    after = sync(ana, "status")
    assert after["in_sync"] and not after["local_changed"] and after["recommended_action"] == "none"
    assert after["local_rev"] != before["local_rev"]  # the rows were re-encrypted, and followed

    # local changes made before a rotation stay exactly those changes
    ana.set("b", "2-ana")
    ana.ok("secret", "rm", "d", env=ana.with_pass())
    rotate(ana)
    status = sync(ana, "status")
    assert status["local_changed"] and status["reason"] is None and status["recommended_action"] == "sync_push"
    changes = sync(ana, "changes")  # loads the baseline: its MAC verifies under the new key
    assert changes["local_only_changed_keys"] == ["b", "d"] and changes["conflict_keys"] == []
    assert changes["remote_changed_keys"] == []

    # a change of the other member: pulled with --reconcile, no conflict, no reset-baseline
    bo.set("a", "1-bo")
    bo.set("e", "5")
    sync(bo, "push")
    pulled = sync(ana, "pull", "--reconcile")
    assert pulled["applied_keys"] == ["a", "e"] and pulled["kept_local_keys"] == ["b", "d"]
    pushed = sync(ana, "push")
    assert pushed["published_keys"] == ["b"] and pushed["deleted_keys"] == ["d"]
    assert sync(bo, "pull")["applied_keys"] == ["b"]
    assert bo.get("b") == b"2-ana" and ana.get("a") == b"1-bo"
    assert sync(ana, "status")["in_sync"] and sync(bo, "status")["in_sync"]


def test_a_value_no_longer_kept_is_read_by_its_revision(pair):
    """12 local sets push the synced value of `c` out of its history (10 kept): the rotation cannot
    recompute that digest, and `c` still merges as a local-only change, not a conflict."""
    ana, bo = pair
    for i in range(12):
        ana.set("c", f"3-{i}")
    rotate(ana)
    changes = sync(ana, "changes")
    assert changes["local_only_changed_keys"] == ["c"] and changes["conflict_keys"] == []
    bo.set("a", "1-bo")
    sync(bo, "push")
    assert sync(ana, "pull", "--reconcile")["applied_keys"] == ["a"]
    assert sync(ana, "push")["published_keys"] == ["c"]
    sync(bo, "pull")
    assert bo.get("c") == b"3-11"


def test_a_tampered_baseline_stays_tampered_across_a_rotation(pair):
    ana, _bo = pair
    conn = sqlite3.connect(ana.vault)
    conn.execute("UPDATE sync_baseline SET seq = seq + 1 WHERE name = 'a'")
    conn.commit()
    conn.close()
    rotate(ana)
    ana.fail(32, "sync_baseline_tampered", "sync", "pull", env=ana.with_pass())
    sync(ana, "reset-baseline", "--to-remote", "--yes")
    assert sync(ana, "pull")["in_sync"]
