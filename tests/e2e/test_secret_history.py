"""`secret history`, `secret restore`, `secret get --revision` and `secret history --purge`, through
the installed kimen: locally and through a session; values never in history output; history
never in a bundle."""

from __future__ import annotations

import pytest

from .bundle_helpers import Team, needs_age

CANARY = "CANARY-history-5b1e-old-value"


@pytest.fixture
def hist(kimen):
    """x: revision 1 = CANARY, 2 = "second"; then removed (3)."""
    kimen.init_vault()
    kimen.set("app.x", CANARY)
    kimen.set("app.x", "second")
    kimen.ok("secret", "rm", "app.x", env=kimen.with_pass())
    return kimen


def test_history_needs_no_passphrase_and_shows_no_value(hist):
    done = hist.ok("secret", "history", "app.x")
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["2", "1"]
    assert lines[0].endswith("(rm)") and lines[1].endswith("(set)") and "size=6" in lines[0]
    doc = hist.ok("secret", "history", "app.x", "--json").json()
    assert doc["action"] == "history" and doc["current"] is None and doc["keep"] == 10
    assert [(e["revision"], e["op"], e["size"]) for e in doc["entries"]] == [(2, "rm", 6), (1, "set", len(CANARY))]
    assert set(doc["entries"][0]) == {"revision", "size", "created_at", "replaced_at", "op"}
    for out in (done.stdout + done.err, str(doc)):
        assert CANARY not in out and "second" not in out


def test_unknown_name(hist):
    hist.fail(12, "secret_not_found", "secret", "history", "app.never")
    hist.fail(12, "secret_not_found", "secret", "restore", "app.never", "--revision", "1")


def test_restore_undoes_rm_and_is_itself_kept(hist):
    dry = hist.ok("secret", "restore", "app.x", "--revision", "1", "--dry-run", "--json").json()
    assert dry == {**dry, "name": "app.x", "from_revision": 1, "revision": None, "dry_run": True}
    doc = hist.ok("secret", "restore", "app.x", "--revision", "1", "--json", env=hist.with_pass()).json()
    assert doc["action"] == "restore" and doc["from_revision"] == 1 and doc["revision"] == 4
    assert doc["dry_run"] is False and doc["unchanged"] is False
    assert hist.get("app.x") == CANARY.encode()
    hist.set("app.x", "third")
    assert hist.ok("secret", "restore", "app.x", "--revision", "4", env=hist.with_pass()).code == 0
    assert hist.get("app.x") == CANARY.encode()
    info = hist.ok("secret", "history", "app.x", "--json").json()
    assert info["current"]["revision"] == 6
    assert [e["op"] for e in info["entries"]] == ["restore", "set", "rm", "set"]


def test_restore_of_the_current_revision_and_of_one_not_kept(hist):
    hist.ok("secret", "restore", "app.x", "--revision", "2", env=hist.with_pass())
    same = hist.ok("secret", "restore", "app.x", "--revision", "4", "--json", env=hist.with_pass()).json()
    assert same["unchanged"] is True and same["revision"] == 4
    done = hist.fail(11, "revision_not_found", "secret", "restore", "app.x", "--revision", "99",
                     env=hist.with_pass())
    assert done.err_json()["available"] == [4, 2, 1]
    hist.fail(2, "usage_error", "secret", "restore", "app.x", "--revision", "x1")


def test_get_revision(hist):
    out = hist.ok("secret", "get", "app.x", "--revision", "1", "--unsafe-stdout", env=hist.with_pass()).out
    assert out == CANARY.encode()
    doc = hist.ok("secret", "get", "app.x", "--revision", "2", "--unsafe-stdout", "--json",
                  env=hist.with_pass()).json()
    assert doc["revision"] == 2 and doc["size"] == 6
    hist.fail(11, "unsafe_stdout_required", "secret", "get", "app.x", "--revision", "1", env=hist.with_pass())
    hist.fail(11, "revision_not_found", "secret", "get", "app.x", "--revision", "7", "--unsafe-stdout",
              env=hist.with_pass())


def test_purge(hist):
    hist.set("app.y", "y1")
    hist.set("app.y", "y2")
    hist.fail(11, "purge_confirmation_required", "secret", "history", "--purge", "--all", env=hist.with_pass())
    doc = hist.ok("secret", "history", "--purge", "app.x", "--json", env=hist.with_pass()).json()
    assert doc["action"] == "history_purge" and doc["count"] == 2
    hist.fail(12, "secret_not_found", "secret", "history", "app.x")  # nothing left of it
    done = hist.ok("secret", "history", "--purge", "--all", "--yes", env=hist.with_pass())
    assert "purged 1 kept value of every secret" in done.stdout
    assert hist.ok("secret", "history", "app.y", "--json").json()["entries"] == []
    hist.ok("vault", "info", "--verify", env=hist.with_pass())
    hist.fail(2, "usage_error", "secret", "history", "--all")
    hist.fail(2, "usage_error", "secret", "history", "--purge", "app.y", "--all", "--yes")


def test_through_a_session(hist):
    hist.ok("session", "start", env=hist.with_pass())
    no_pass = {"KIMEN_PASSPHRASE": ""}
    assert hist.ok("secret", "get", "app.x", "--revision", "1", "--unsafe-stdout", env=no_pass).out == CANARY.encode()
    hist.ok("secret", "restore", "app.x", "--revision", "2", env=no_pass)
    assert hist.ok("secret", "get", "app.x", "--unsafe-stdout", env=no_pass).out == b"second"
    assert hist.ok("secret", "history", "--purge", "app.x", "--json", env=no_pass).json()["count"] == 2
    hist.fail(11, "revision_not_found", "secret", "get", "app.x", "--revision", "1", "--unsafe-stdout", env=no_pass)


@needs_age
def test_history_is_never_sealed_into_a_bundle(hist):
    hist.set("app.x", "current")
    team = Team(hist)
    team.seal("vault.age")
    target = hist.root / "opened.db"
    assert team.open_new("vault.age", target).code == 0
    doc = hist.ok("--vault", str(target), "secret", "history", "app.x", "--json").json()
    assert doc["entries"] == [] and doc["current"]["size"] == len("current")
    assert CANARY.encode() not in (hist.cwd / "vault.age").read_bytes()


def test_import_overwrite_is_kept_as_import(kimen):
    kimen.init_vault()
    kimen.set("app.k", "before")
    (kimen.cwd / "in.env").write_text("app.k=after\n")
    kimen.ok("secret", "import", "in.env", "--overwrite", "--no-backup", env=kimen.with_pass())
    entries = kimen.ok("secret", "history", "app.k", "--json").json()["entries"]
    assert [e["op"] for e in entries] == ["import"]


def test_a_purge_that_cannot_truncate_the_wal_says_so_and_a_rerun_does(kimen):
    """Another connection reading an older state of the vault keeps the WAL from being truncated,
    so the purged ciphertext would stay there: the purge says so (after SQLite's busy wait), and
    run again once the reader is gone it truncates the WAL, though nothing is left to delete."""
    import sqlite3

    kimen.init_vault()
    kimen.set("app.y", CANARY)
    kimen.set("app.y", "rotated")
    wal = kimen.vault.with_name(kimen.vault.name + "-wal")
    reader = sqlite3.connect(f"file:{kimen.vault}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM secrets").fetchone()  # holds its snapshot
        done = kimen.fail(11, "wal_not_truncated", "secret", "history", "--purge", "app.y", "--no-session",
                          "--json", env=kimen.with_pass())
        assert done.err_json()["deleted"] == 1 and "run the same purge again" in done.err_json()["hint"]
    finally:
        reader.close()
    doc = kimen.ok("secret", "history", "--purge", "app.y", "--no-session", "--json", env=kimen.with_pass()).json()
    assert doc["count"] == 0 and (not wal.exists() or wal.stat().st_size == 0)
    assert kimen.ok("secret", "history", "app.y", "--json").json()["entries"] == []


def test_through_a_session_a_purge_of_everything_run_again_truncates_the_wal(kimen):
    """The session client sends the purge even when no kept value is left (`--all` lists the names
    from the file): the daemon then truncates the WAL the last run could not."""
    import sqlite3

    kimen.init_vault()
    kimen.set("app.y", CANARY)
    kimen.set("app.y", "rotated")
    kimen.ok("session", "start", env=kimen.with_pass())
    wal = kimen.vault.with_name(kimen.vault.name + "-wal")
    reader = sqlite3.connect(f"file:{kimen.vault}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM secrets").fetchone()
        assert kimen.fail(11, "wal_not_truncated", "secret", "history", "--purge", "--all", "--yes",
                          "--json").err_json()["deleted"] == 1
    finally:
        reader.close()
    assert kimen.ok("secret", "history", "--purge", "--all", "--yes", "--json").json()["count"] == 0
    assert not wal.exists() or wal.stat().st_size == 0
