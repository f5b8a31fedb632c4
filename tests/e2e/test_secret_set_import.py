"""`secret set` says when it replaced a value and `--no-clobber` refuses instead (checked inside the
write transaction, through the local store and through a session alike); `secret import` keeps
`${VAR}` and `\\$` literally but says so per value, naming file, line and key, never the value."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.e2e.vault_helpers import CANARY

PASS = {"KIMEN_PASSPHRASE": "correct horse battery staple"}


@pytest.fixture(params=["local", "session"])
def store(request, kimen):
    """A vault with app.key, reached by a local unlock or through a live session."""
    kimen.init_vault()
    kimen.set("app.key", CANARY)
    if request.param == "session":
        kimen.ok("session", "start", env=PASS)
        return kimen, {}  # no passphrase: only the session can serve
    return kimen, PASS


def _revision(kimen, name: str) -> int:
    with sqlite3.connect(kimen.vault) as conn:
        return conn.execute("SELECT revision FROM secrets WHERE name=?", (name,)).fetchone()[0]


def test_set_says_replaced_for_an_existing_name(store):
    kimen, env = store
    done = kimen.ok("secret", "set", "app.new", "--stdin", input=b"v", env=env)
    assert done.stdout == f"set app.new (revision {_revision(kimen, 'app.new')})\n"
    done = kimen.ok("secret", "set", "app.key", "--stdin", input=b"w", env=env)
    assert done.stdout == f"replaced app.key (revision {_revision(kimen, 'app.key')})\n"
    doc = kimen.ok("secret", "set", "app.key", "--stdin", "--json", input=b"x", env=env).json()
    assert (doc["created"], doc["replaced"], doc["revision"]) == (False, True, _revision(kimen, "app.key"))
    doc = kimen.ok("secret", "set", "app.other", "--stdin", "--json", input=b"x", env=env).json()
    assert (doc["created"], doc["replaced"]) == (True, False)
    doc = kimen.ok("secret", "set", "app.key", "--stdin", "--dry-run", "--json", input=b"x").json()
    assert (doc["created"], doc["replaced"], doc["dry_run"]) == (False, True, True)


def test_no_clobber_refuses_an_existing_name_and_writes_nothing(store):
    kimen, env = store
    before = _revision(kimen, "app.key")
    for extra in ([], ["--dry-run"]):
        done = kimen.fail(13, "secret_exists", "secret", "set", "app.key", "--stdin", "--no-clobber", *extra,
                          input=b"other", env=env)
        envelope = done.err_json()
        assert envelope["existing"] == ["app.key"] and "--no-clobber" in envelope["hint"]
    assert _revision(kimen, "app.key") == before
    assert kimen.get("app.key") == CANARY
    done = kimen.ok("secret", "set", "app.fresh", "--stdin", "--no-clobber", input=b"v", env=env)
    assert done.stdout.startswith("set app.fresh ")


def test_no_clobber_is_decided_inside_the_write_transaction(kimen):
    """Two `--no-clobber` writers of one new name: exactly one creates it, the other gets
    secret_exists (a check of the names before the write would let both through)."""
    import subprocess

    from tests.conftest import KIMEN

    kimen.init_vault()
    rounds, created, refused = 6, 0, 0
    for i in range(rounds):
        procs = [subprocess.Popen([KIMEN, "secret", "set", f"race.n{i}", "--value", f"w{k}", "--no-clobber",
                                   "--json"], env={**kimen.env, **PASS}, cwd=kimen.cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True) for k in range(2)]
        codes = [p.wait(timeout=60) for p in procs]
        for p, code in zip(procs, codes, strict=True):
            out, err = p.communicate()
            if code == 13:
                assert json.loads(err)["reason"] == "secret_exists"
            else:
                assert code == 0 and json.loads(out)["created"] is True, err
        created += codes.count(0)
        refused += codes.count(13)
    assert created == rounds and refused == rounds


@pytest.mark.parametrize(("flag", "preset", "meanwhile", "expected", "value"), [
    ("--overwrite", True, ("secret", "rm", "c"), {"created": ["c"], "updated": [], "skipped": []}, b"new"),
    ("--overwrite", False, ("secret", "set", "c", "--value", "other"), {"created": [], "updated": ["c"],
                                                                         "skipped": []}, b"new"),
    ("--skip-existing", False, ("secret", "set", "c", "--value", "other"), {"created": [], "updated": [],
                                                                             "skipped": ["c"]}, b"other"),
])
def test_import_decides_existing_names_again_at_the_write(kimen, flag, preset, meanwhile, expected, value):
    """A name another command removes or creates between the import's look at the names and its
    write: the import still does what its flag says, instead of failing with secret_not_found /
    secret_exists, and a value `--overwrite` replaced has its backup (none when none was)."""
    import sys
    import time

    from tests.conftest import PASSPHRASE

    kimen.init_vault()
    if preset:
        kimen.set("c", "old")
    (kimen.cwd / "c.env").write_text("c=new\n")
    started, release = kimen.root / "started", kimen.root / "release"
    slow = kimen.root / "slow-pass"  # the import has looked at the names; now it waits to unlock
    slow.write_text(f"#!{sys.executable}\nimport os, time\nopen({str(started)!r}, 'w').close()\n"
                    f"while not os.path.exists({str(release)!r}): time.sleep(0.02)\nprint({PASSPHRASE!r})\n")
    slow.chmod(0o700)
    proc = kimen.popen("secret", "import", "c.env", flag, "--no-session", "--passphrase-cmd", str(slow), "--json")
    for _ in range(1500):
        if started.exists() or proc.poll() is not None:
            break
        time.sleep(0.02)
    assert started.exists(), proc.communicate()
    kimen.ok(*meanwhile, "--no-session", env=PASS)
    release.touch()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert {k: doc[k] for k in expected} == expected
    assert kimen.get("c") == value
    assert (doc["backup_path"] is not None) == bool(expected["updated"]), doc
    backups = [p for p in kimen.vault.parent.iterdir() if ".bak." in p.name]
    assert len(backups) == len(expected["updated"]), backups  # none left behind for a pure create


def test_import_warns_per_value_kept_literally_never_showing_it(kimen):
    kimen.init_vault()
    text = ("PLAIN=nothing-to-see\n"
            "REF=${HOME}/" + CANARY.decode() + "\n"
            'ESCAPED="p\\$' + CANARY.decode() + '"\n'
            "SINGLE='${X}'\n"
            "DOLLAR=$HOME\n")
    (kimen.cwd / "in.env").write_text(text)
    done = kimen.ok("secret", "import", "in.env", "--prefix", "app.", env=PASS)
    path = kimen.cwd / "in.env"
    expected = [f"kimen: warning: {path}:{line}: {key} imported literally (no ${{…}} interpolation, no \\$ unescaping)"
                for line, key in ((2, "REF"), (3, "ESCAPED"), (4, "SINGLE"))]
    assert done.err.splitlines() == expected
    assert CANARY.decode() not in done.err
    assert kimen.get("app.REF") == b"${HOME}/" + CANARY  # imported literally, as before
    assert kimen.get("app.ESCAPED") == b"p\\$" + CANARY
    doc = kimen.ok("secret", "import", "in.env", "--prefix", "dry.", "--dry-run", "--json").json()
    assert [(w["reason"], w["message"]) for w in doc["warnings"]] == [
        ("import_not_interpolated", line.removeprefix("kimen: warning: ")) for line in expected]
    assert CANARY.decode() not in json.dumps(doc)
    stdin = kimen.ok("secret", "import", "-", "--prefix", "in.", "--dry-run", input=text)
    assert stdin.err.splitlines()[0].startswith("kimen: warning: -:2: REF imported literally")
