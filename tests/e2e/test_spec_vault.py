"""Audit of the vault and secret commands, driven through the installed `kimen`: the human
lines and exact JSON fields of every command, hints that never suggest a session to a
command that never uses one, the init warning counted in characters, `--vault ""`, strict KDF
numbers, what a rekey leaves behind, and the busy vault."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
import time

import pytest

from tests.conftest import PASSPHRASE, SMALL_KDF
from tests.e2e.vault_helpers import vault_state

ENVELOPE = {"ok", "action", "exit_code", "warnings"}
TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
NEW = "another passphrase"
SHA_V2 = hashlib.sha256(b"v2").hexdigest()

# One session of commands, run twice on two fresh vaults: once for the human lines, once with
# --json for the exact field set. (args, stdin, extra env, human line patterns, action, JSON fields);
# {vault} and {dir} stand for the vault path and its directory.
STEPS = [
    (["vault", "init", *SMALL_KDF], None, {}, [r"initialized vault: {vault}", r"a lost passphrase cannot be .*"],
     "vault_init", {"path", "vault_id", "kdf"}),
    (["vault", "path"], None, {}, [r"{vault}"], "vault_path", {"path", "canonical_path", "source"}),
    (["secret", "set", "app.db", "--from-env", "V1"], None, {"V1": "v1"}, [r"set app\.db \(revision 1\)"],
     "set", {"name", "created", "replaced", "revision", "size", "dry_run"}),
    (["secret", "set", "app.db", "--stdin", "--strip-newline", "--dry-run"], b"v2\r\n", {},
     [rf"\[dry-run\] would set app\.db \(update\) size=2 sha256={SHA_V2}"],
     "set", {"name", "created", "replaced", "revision", "size", "dry_run", "sha256"}),
    (["secret", "set", "app.new", "--stdin", "--dry-run"], b"v2", {},
     [rf"\[dry-run\] would set app\.new \(create\) size=2 sha256={SHA_V2}"],
     "set", {"name", "created", "replaced", "revision", "size", "dry_run", "sha256"}),
    (["secret", "list", "--long"], None, {}, [rf"app\.db\t1\t2\t{TS}"], "list", {"names", "count", "secrets"}),
    (["secret", "mv", "app.db", "app.key"], None, {}, [r"renamed app\.db to app\.key \(revision 2\)"],
     "mv", {"from", "to", "revision"}),
    (["secret", "import", "-", "--prefix", "imp."], b"A=1\nB=2\n", {}, [r"create imp\.A", r"create imp\.B"],
     "import", {"file", "count", "created", "updated", "skipped", "backup_path", "dry_run"}),
    (["secret", "import", "-", "--prefix", "imp.", "--overwrite", "--dry-run"], b"A=3\nC=4\n", {},
     [r"\[dry-run\] create imp\.C", r"\[dry-run\] update imp\.A"],
     "import", {"file", "count", "created", "updated", "skipped", "backup_path", "dry_run"}),
    (["secret", "import", "-", "--prefix", "imp.", "--skip-existing"], b"A=5\nD=6\n", {},
     [r"create imp\.D", r"skip imp\.A"], "import",
     {"file", "count", "created", "updated", "skipped", "backup_path", "dry_run"}),
    (["secret", "rm", "imp.B"], None, {}, [r"removed imp\.B"], "rm", {"name"}),
    (["secret", "list"], None, {}, [r"app\.key", r"imp\.A", r"imp\.D"], "list", {"names", "count", "secrets"}),
    (["vault", "info", "--verify"], None, {},
     [r"path: {vault}", r"format: kimen-sqlite-vault/1", r"kdf: argon2id m=8192 t=1 p=1", r"vault_id: [0-9a-f]{32}",
      r"generation: 5", r"secrets: 3", rf"created_at: {TS}", r"integrity: ok"],
     "vault_info", {"path", "format", "schema_version", "vault_id", "created_at", "generation", "secret_count",
                    "size_bytes", "mode", "kdf", "integrity"}),
    (["vault", "rekey", "--dry-run", "--no-backup"], None, {"KIMEN_NEW_PASSPHRASE": NEW},
     [r"rekey preflight ok: {vault}"], "vault_rekey", {"dry_run", "would_backup", "rotate_data_key", "path"}),
    (["vault", "rekey", "--rotate-data-key", "--backup-dir", "{dir}"], None, {},
     [r"rekeyed vault: {vault}", r"backup: {dir}/v\.db\.bak\.\d+ \(opens with the old passphrase\)",
      r"hint: backups made before this rekey open with the old passphrase; .*vault backups --prune.*"],
     "vault_rekey", {"path", "backup_path", "rotated_data_key", "kdf", "dry_run"}),
    (["secret", "get", "app.key", "--unsafe-stdout"], None, {}, None,
     "get", {"name", "encoding", "value_b64", "revision", "size"}),
]


def test_every_command_prints_the_spec_lines_and_exactly_its_json_fields(kimen):
    """the human lines (in order) and, with --json, exactly the envelope's fields."""
    for mode in ("human", "json"):
        vault_dir = kimen.root / mode
        vault_dir.mkdir()
        vault = str(vault_dir / "v.db")
        for args, stdin, env, lines, action, fields in STEPS:
            args = [a.replace("{dir}", str(vault_dir)) for a in args]
            run_env = {**kimen.with_pass(), "KIMEN_VAULT": vault, **env}
            done = kimen.ok(*args, *(["--json"] if mode == "json" else []), input=stdin, env=run_env)
            if mode == "json":
                doc = done.json()
                assert set(doc) == ENVELOPE | fields, args
                assert (doc["ok"], doc["action"], doc["exit_code"]) == (True, action, 0), args
            elif lines is None:
                assert done.out == b"v1"  # raw bytes, no added newline
            else:
                patterns = [p.replace("{vault}", re.escape(vault)).replace("{dir}", re.escape(str(vault_dir)))
                            for p in lines]
                got = done.stdout.splitlines()
                assert len(got) == len(patterns), (args, got)
                assert all(re.fullmatch(p, line) for p, line in zip(patterns, got, strict=True)), (args, got)
    doc = kimen.ok("secret", "list", "--json", env={"KIMEN_VAULT": str(kimen.root / "json" / "v.db")}).json()
    assert doc["names"] == ["app.key", "imp.A", "imp.D"] and doc["count"] == 3
    assert not kimen.vault.exists()


@pytest.mark.parametrize("command", [["vault", "init", *SMALL_KDF], ["vault", "rekey", "--rotate-data-key"]])
def test_commands_that_never_use_a_session_do_not_suggest_one(kimen, command):
    """init and rekey never read a session; with none of their sources the hint lists
    theirs, not `kimen session start` -- for rekey even while a session is live."""
    if command[1] == "rekey":
        kimen.init_vault()
        kimen.ok("session", "start", env=kimen.with_pass())
        before = vault_state(kimen.vault)
    done = kimen.fail(10, "missing_passphrase", *command)
    hint = done.err_json()["hint"]
    assert "session" not in hint and "KIMEN_PASSPHRASE" in hint and "--passphrase-stdin" in hint
    if command[1] == "rekey":
        assert vault_state(kimen.vault) == before and _backups(kimen) == []
    else:
        assert not kimen.vault.exists()


ROUND_TRIP = [b"plain", b"", b"it's", b"back\\slash", b'quo"te', b"multi\nline", b"spa ce # hash", b" lead",
              b"trail ", b"tab\there", b"#hash", b"''", b"'\\''", b"dollar ${X}", b"both ' and \\"]
DOTENV_REFUSES = 2  # the last two: `--format dotenv` refuses them, `--format shell` writes them


@pytest.mark.parametrize("fmt", ["dotenv", "shell"])
def test_import_reads_back_what_envfile_writes(kimen, fmt):
    """import reads the dialect envfile writes: every value kimen's own envfile writes comes back
    byte-exact -- also the shell format's `'\\''`, needed for what dotenv refuses."""
    kimen.init_vault()
    values = ROUND_TRIP if fmt == "shell" else ROUND_TRIP[:-DOTENV_REFUSES]
    for i, value in enumerate(values):
        kimen.set(f"v.K{i}", value)
    kimen.ok("envfile", f"--format={fmt}", "--out", "out.env", *(f"--env=K{i}=v.K{i}" for i in range(len(values))),
             env=kimen.with_pass())
    other = {**kimen.with_pass(), "KIMEN_VAULT": str(kimen.root / "other.db")}
    kimen.ok("vault", "init", *SMALL_KDF, env=other)
    kimen.ok("secret", "import", "out.env", "--prefix", "v.", env=other)
    for i, value in enumerate(values):
        assert kimen.ok("secret", "get", f"v.K{i}", "--unsafe-stdout", env=other).out == value, (fmt, value)


TOO_BIG = b"z" * (1024 * 1024 + 1)


@pytest.mark.parametrize(("args", "stdin", "message", "fields"), [
    (["secret", "set", "app.big", "--stdin"], TOO_BIG, "value of app.big exceeds 1 MiB", {"secret": "app.big"}),
    (["secret", "import", "-", "--prefix", "imp."], b"OK=1\n\nBIG=" + TOO_BIG + b"\n",
     "line 3: value of imp.BIG exceeds 1 MiB", {"secret": "imp.BIG", "line": 3}),
])
def test_an_oversize_value_names_its_secret(kimen, args, stdin, message, fields):
    """messages name the thing -- in an import of many keys, which one is too large (and on
    which line); never its value."""
    kimen.init_vault()
    before = vault_state(kimen.vault)
    envelope = kimen.fail(11, "secret_too_large", *args, input=stdin, env=kimen.with_pass()).err_json()
    assert envelope["error"] == message and fields.items() <= envelope.items()
    assert vault_state(kimen.vault) == before


@pytest.mark.parametrize(("flags", "named"), [
    ([], "set KIMEN_NEW_PASSPHRASE, "), (["--new-passphrase-env", "MY_NEW"], "set MY_NEW, "),
    (["--new-passphrase-env="], ""),
])
def test_missing_new_passphrase_hint_names_the_variable_rekey_reads(kimen, flags, named):
    """the variable is `--new-passphrase-env`'s; the hint must not send the user to
    another one (nor to any when the flag names none)."""
    kimen.init_vault()
    done = kimen.fail(10, "missing_new_passphrase", "vault", "rekey", *flags,
                      env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": "", "MY_NEW": ""})
    hint = done.err_json()["hint"]
    assert hint == f"{named}pass --new-passphrase-cmd or --new-passphrase-stdin, or run in a terminal"


@pytest.mark.parametrize("variable", ["MY_NEW", "KIMEN_NEW_PASSPHRASE", "KIMEN_MY_NEW"])
def test_the_new_passphrase_variable_never_reaches_the_old_passphrase_command(kimen, variable):
    """the variable `--new-passphrase-env` names holds a passphrase: like
    KIMEN_NEW_PASSPHRASE it is kept from every process kimen starts (here `--passphrase-cmd`)."""
    kimen.init_vault()
    dump = kimen.root / "seen.env"
    tool = kimen.root / "old-pass"
    tool.write_text(f"#!/bin/sh\nenv > {dump}\necho '{PASSPHRASE}'\n")
    tool.chmod(0o700)
    kimen.ok("vault", "rekey", "--no-backup", "--passphrase-cmd", str(tool), "--new-passphrase-env", variable,
             env={variable: NEW, "OTHER": "kept"})
    seen = dump.read_text()
    assert NEW not in seen and "OTHER=kept" in seen
    kimen.set("app.key", "v", passphrase=NEW)  # the vault took the new passphrase


@pytest.mark.parametrize(("passphrase", "warns"), [
    ("1234567", True), ("12345678", False),
    ("ääää", True),  # 8 bytes, 4 characters
    ("日本語の鍵", True),  # 15 bytes, 5 characters
    ("ääääää日本", False),  # 8 characters
])
def test_init_warns_about_short_passphrases_by_characters(kimen, passphrase, warns):
    """"shorter than 8 characters" -- characters, not UTF-8 bytes."""
    done = kimen.ok("vault", "init", *SMALL_KDF, env=kimen.with_pass(passphrase))
    assert ("kimen: warning: the passphrase is shorter than 8 characters" in done.err) is warns
    assert kimen.vault.exists()


@pytest.mark.parametrize("command", [  # `secret list` and `vault path`: tests/e2e/test_spec_cli.py
    ["vault", "info"], ["vault", "init", *SMALL_KDF], ["vault", "rekey", "--rotate-data-key"],
    ["secret", "get", "app.key", "--unsafe-stdout"], ["secret", "set", "app.key", "--value", "v"],
    ["secret", "import", "-", "--dry-run"], ["run", "--env", "A=app.key", "--", "true"],
])
@pytest.mark.parametrize("flag", [["--vault", ""], ["--vault="]])
def test_an_empty_vault_flag_is_a_usage_error(kimen, command, flag):
    """as "unset", `--vault "$VAULT"` with an empty variable would silently use the
    default (or KIMEN_VAULT's) vault -- also in the commands that read a value or unlock first, and
    in `run`'s own argv reader. Nothing is read, created or changed."""
    kimen.init_vault()
    kimen.set("app.key", "v")
    before = vault_state(kimen.vault)
    i = command.index("--") if "--" in command else len(command)
    done = kimen.fail(2, "usage_error", *command[:i], *flag, *command[i:], input=b"A=1\n",
                      env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": "x"})
    assert "--vault" in done.err_json()["error"]
    assert vault_state(kimen.vault) == before and sorted(os.listdir(kimen.cwd)) == []


@pytest.mark.parametrize(("flag", "value", "ok"), [
    ("--kdf-memory", "8192", True), ("--kdf-memory", "8192KiB", True), ("--kdf-memory", "8 MiB", True),
    ("--kdf-memory", "8mib", False), ("--kdf-memory", "\uff18MiB", False), ("--kdf-memory", "+8192", False),
    ("--kdf-time", "1", True), ("--kdf-time", "+1", False), ("--kdf-time", "1_0", False),
    ("--kdf-time", "\u0661", False), ("--kdf-parallelism", "0x1", False), ("--kdf-parallelism", "-1", False),
])
def test_kdf_flags_take_plain_decimal_numbers(kimen, flag, value, ok):
    """a size is an integer with an optional KiB/MiB/GiB suffix; N is an integer. int() alone
    would take `1_0` as ten and other scripts' digits; a refusal names the flag."""
    params = dict(zip(SMALL_KDF[::2], SMALL_KDF[1::2], strict=True))
    params[flag] = value
    args = ["vault", "init", *(f"{k}={v}" for k, v in params.items())]
    if ok:
        kimen.ok(*args, env=kimen.with_pass())
        assert kimen.vault.exists()
    else:
        done = kimen.fail(24, "invalid_kdf_params", *args, env=kimen.with_pass())
        assert flag in done.err_json()["error"]
        assert not kimen.vault.exists()


def test_rekey_reads_old_then_new_from_stdin_and_the_backup_keeps_the_old(kimen):
    """stdin's first line is the old passphrase, its second the new one; the
    backup in --backup-dir is 0600 and opens with the old passphrase, the vault with the new."""
    kimen.init_vault()
    kimen.set("app.key", "v")
    backups = kimen.root / "backups"
    backups.mkdir()
    doc = kimen.ok("vault", "rekey", "--passphrase-stdin", "--new-passphrase-stdin", "--backup-dir", "../backups",
                   "--json", input=f"{PASSPHRASE}\n{NEW}\n").json()
    backup = backups / os.path.basename(doc["backup_path"])
    assert doc["backup_path"] == str(backup) and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert kimen.get("app.key", NEW) == b"v"
    kimen.fail(15, "wrong_passphrase", "secret", "get", "app.key", "--unsafe-stdout", env=kimen.with_pass())
    old = {**kimen.with_pass(), "KIMEN_VAULT": str(backup)}
    assert kimen.ok("secret", "get", "app.key", "--unsafe-stdout", env=old).out == b"v"
    # a dry run and a missing backup dir change nothing and leave no file
    before = vault_state(kimen.vault)
    env = {**kimen.with_pass(NEW), "KIMEN_NEW_PASSPHRASE": PASSPHRASE}
    kimen.ok("vault", "rekey", "--dry-run", env=env)
    kimen.fail(24, "backup_failed", "vault", "rekey", "--backup-dir", str(kimen.root / "absent"), env=env)
    assert vault_state(kimen.vault) == before and _backups(kimen) == []
    assert sorted(os.listdir(backups)) == [backup.name]


def test_a_busy_vault_fails_writers_cleanly_and_keeps_serving_readers(kimen):
    """while another process holds the write lock, every writer waits the busy timeout and
    fails with vault_busy (never "database is locked"), the vault unchanged; readers still work.
    A rekey that snapshotted first removes its snapshot when it then cannot write."""
    kimen.init_vault()
    kimen.set("app.key", "v")
    env = {**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": NEW}
    writers = [["secret", "set", "app.key", "--value", "w"], ["secret", "rm", "app.key"],
               ["secret", "mv", "app.key", "app.other"], ["secret", "import", "-"], ["vault", "rekey"]]
    before = vault_state(kimen.vault)
    lock = sqlite3.connect(str(kimen.vault), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        procs = [kimen.popen(*args, "--json", env=env, stdin=-1) for args in writers]
        for proc in procs:
            proc.stdin.write(b"B=1\n")
            proc.stdin.close()
        assert kimen.ok("secret", "list").stdout == "app.key\n"
        assert kimen.get("app.key") == b"v"
        kimen.ok("vault", "info", "--verify", env=kimen.with_pass())
        for args, proc in zip(writers, procs, strict=True):
            out, err = proc.stdout.read(), proc.stderr.read()
            proc.wait(timeout=120)
            assert proc.returncode == 24 and out == b"", (args, err)
            text = err.decode()
            assert '"reason":"vault_busy"' in text.splitlines()[-1] and "database is locked" not in text, args
        assert time.monotonic() - started >= 4.5  # they waited the busy timeout
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert vault_state(kimen.vault) == before
    assert _backups(kimen) == []
    assert kimen.get("app.key") == b"v"


def _backups(kimen) -> list[str]:
    return sorted(n for n in os.listdir(kimen.vault.parent) if ".bak." in n)


def test_import_reads_a_blank_value_with_a_comment_as_empty(kimen):
    """`KEY= # note` holds an empty value, as a shell reads it and as the docs' "a ` #` starts a
    comment" says; `KEY=#x` (no blank before the `#`) keeps `#x`."""
    kimen.init_vault()
    kimen.ok("secret", "import", "-", "--prefix", "c.", input=b"E= # comment\nH=#x\nA=a # c\n", env=kimen.with_pass())
    got = {name: kimen.ok("secret", "get", f"c.{name}", "--unsafe-stdout", env=kimen.with_pass()).stdout
           for name in ("E", "H", "A")}
    assert got == {"E": "", "H": "#x", "A": "a"}


@pytest.mark.parametrize("data", [b"A=1\rB=2\r", b"# note\rA=1\r", b'A="1" # first\rB=2\r', b"A='1'\rB=2\r"])
def test_import_refuses_a_file_with_cr_line_endings(kimen, data):
    """A CR-only file would read as one line: `B` lost, or every key swallowed by a comment.
    It is refused by line number, with nothing written."""
    kimen.init_vault()
    before = vault_state(kimen.vault)
    envelope = kimen.fail(11, "invalid_dotenv", "secret", "import", "-", "--prefix", "cr.", input=data,
                          env=kimen.with_pass()).err_json()
    assert envelope["line"] == 1 and "carriage return" in envelope["error"]
    assert vault_state(kimen.vault) == before


def test_vault_init_where_it_cannot_be_created_is_a_reasoned_error(kimen):
    """A file where a parent directory should be: `vault_failed` naming it, not an internal error."""
    (kimen.root / "afile").write_text("x")
    target = kimen.root / "afile" / "sub" / "v.db"
    done = kimen.fail(24, "vault_failed", "--vault", str(target), "vault", "init", *SMALL_KDF, env=kimen.with_pass())
    assert str(kimen.root / "afile" / "sub") in done.err_json()["error"]


def test_vault_init_on_a_directory_or_an_empty_file_says_what_is_there(kimen):
    done = kimen.fail(24, "vault_exists", "--vault", str(kimen.root), "vault", "init", *SMALL_KDF,
                      env=kimen.with_pass())
    assert "it is a directory" in done.err_json()["hint"]
    empty = kimen.root / "empty.db"
    empty.write_bytes(b"")
    done = kimen.fail(24, "vault_exists", "--vault", str(empty), "vault", "init", *SMALL_KDF, env=kimen.with_pass())
    assert "remove it" in done.err_json()["hint"]


def test_vault_init_killed_during_the_key_derivation_leaves_no_file(kimen):
    """argon2 runs before the file is created: a CI timeout's SIGTERM (or a kill -9) during it leaves
    nothing that blocks the next `vault init`."""
    slow = ("--kdf-memory", "256MiB", "--kdf-time", "8", "--kdf-parallelism", "1")
    proc = kimen.popen("vault", "init", *slow, env=kimen.with_pass())
    time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    proc.terminate()
    proc.wait(30)
    assert not kimen.vault.exists() and not kimen.vault.with_name("vault.db-wal").exists()
    kimen.init_vault()


@pytest.mark.parametrize("other", ["rotate", "passphrase"])
def test_a_rekey_that_another_rekey_overtook_changes_nothing(kimen, other):
    """Two rekeys at once: the one that unlocked first and commits second would wrap a key the
    other already replaced (a rotation: every value unreadable) or undo the other's new
    passphrase. It is refused instead, nothing written; the other's change stands."""
    import sys

    kimen.init_vault()
    kimen.set("app.token", "tok-value")
    started, release = kimen.root / "started", kimen.root / "release"
    slow = kimen.root / "slow-new-passphrase"
    slow.write_text(f"#!{sys.executable}\nimport os, time\nopen({str(started)!r}, 'w').close()\n"
                    f"while not os.path.exists({str(release)!r}): time.sleep(0.02)\nprint('first-new-pass')\n")
    slow.chmod(0o700)
    first = kimen.popen("vault", "rekey", "--no-backup", "--new-passphrase-cmd", str(slow), *SMALL_KDF,
                        env=kimen.with_pass())  # unlocked, now waits for its new passphrase
    for _ in range(1500):
        if started.exists() or first.poll() is not None:
            break
        time.sleep(0.02)
    assert started.exists(), first.communicate()
    if other == "rotate":
        kimen.ok("vault", "rekey", "--rotate-data-key", "--no-backup", env=kimen.with_pass())
        now = PASSPHRASE
    else:
        kimen.ok("vault", "rekey", "--no-backup", *SMALL_KDF, env={**kimen.with_pass(),
                                                                  "KIMEN_NEW_PASSPHRASE": "second new pass"})
        now = "second new pass"
    release.touch()
    _out, err = first.communicate(timeout=60)
    assert first.returncode == 24 and b"another command rekeyed the vault meanwhile" in err, err
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout", env={"KIMEN_PASSPHRASE": now}).out == b"tok-value"
    assert "integrity: ok" in kimen.ok("vault", "info", "--verify", env={"KIMEN_PASSPHRASE": now}).stdout
    kimen.fail(15, "wrong_passphrase", "secret", "get", "app.token", "--unsafe-stdout",
               env={"KIMEN_PASSPHRASE": "first-new-pass"})


def test_a_rekey_while_a_reader_keeps_the_wal_warns_that_the_old_record_stays_there(kimen):
    """The rekey is done (the new passphrase opens the vault), but a reader holding an older
    snapshot keeps SQLite from truncating the WAL: the old key record stays there, and kimen says
    so instead of claiming it is gone."""
    import sqlite3

    kimen.init_vault()
    kimen.set("app.token", "tok-value")
    reader = sqlite3.connect(f"file:{kimen.vault}?mode=ro", uri=True)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM secrets").fetchone()
        done = kimen.ok("vault", "rekey", "--no-backup", "--json", *SMALL_KDF,
                        env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": "the new passphrase"})
    finally:
        reader.close()
    assert [w["reason"] for w in done.json()["warnings"]] == ["rekey_wal_not_truncated"]
    assert kimen.get("app.token", passphrase="the new passphrase") == b"tok-value"
