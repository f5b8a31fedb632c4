"""`secret generate` and `secret edit` through the installed kimen: values never printed, the
refusals and their exit codes, and a real `$EDITOR` process that edits, fails, kills itself or
hangs while kimen is told to stop; no `edit-*` directory is left after any of it."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

CANARY = "CANARY-edit-77c1-old-value"


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    (kimen.root / "runtime").mkdir(mode=0o700, exist_ok=True)
    return kimen


# -- generate --


def test_generate_stores_a_value_it_never_prints(vault):
    done = vault.ok("secret", "generate", "app.token", env=vault.with_pass())
    value = vault.get("app.token")
    assert len(value) == 32 and value.isalnum()
    assert value.decode() not in done.stdout + done.err
    assert done.stdout.strip() == "generated app.token (revision 1, 32 alnum chars, 190 bits)"
    again = vault.fail(13, "secret_exists", "secret", "generate", "app.token", env=vault.with_pass())
    assert "--replace" in again.err
    doc = vault.ok("secret", "generate", "app.token", "--replace", "--bytes", "16", "--encoding", "base64url",
                   "--json", env=vault.with_pass()).json()
    new = vault.get("app.token")
    assert doc == {**doc, "action": "generate", "name": "app.token", "created": False, "replaced": True,
                   "revision": 2, "size": 24, "bytes": 16, "encoding": "base64url", "bits": 128, "dry_run": False}
    assert new.decode() not in str(doc) and len(new) == 24
    assert "length" not in doc and "charset" not in doc
    history = vault.ok("secret", "history", "app.token", "--json").json()
    assert [e["revision"] for e in history["entries"]] == [1]


def test_generate_charsets_and_a_weak_value(vault):
    vault.ok("secret", "generate", "pin", "--length", "6", "--charset", "digits", env=vault.with_pass())
    assert vault.get("pin").isdigit() and len(vault.get("pin")) == 6
    doc = vault.ok("secret", "generate", "pin2", "--length", "6", "--charset", "digits", "--json",
                   env=vault.with_pass()).json()
    assert [w["reason"] for w in doc["warnings"]] == ["generated_value_weak"] and doc["bits"] == 19
    vault.ok("secret", "generate", "sym", "--charset", "symbols", "--length", "200", env=vault.with_pass())
    assert not set(vault.get("sym").decode()) & set("'\"\\`$ ;&|<>()")


def test_generate_dry_run_needs_no_passphrase(vault):
    doc = vault.ok("secret", "generate", "new.one", "--dry-run", "--json").json()
    assert doc == {**doc, "created": True, "revision": None, "length": 32, "charset": "alnum", "bits": 190,
                   "dry_run": True, "size": 32}
    vault.fail(12, "secret_not_found", "secret", "get", "new.one", "--unsafe-stdout", env=vault.with_pass())


@pytest.mark.parametrize(("args", "reason"), [
    (["--bytes", "4", "--length", "8"], "conflicting_generate_options"),
    (["--bytes", "4", "--charset", "hex"], "conflicting_generate_options"),
    (["--encoding", "hex"], "conflicting_generate_options"),
    (["--length", "0"], "invalid_generate_options"),
    (["--length", "4097"], "invalid_generate_options"),
    (["--length", "x"], "invalid_generate_options"),
    (["--bytes", "65537"], "invalid_generate_options"),
    (["--charset", "emoji"], "invalid_generate_options"),
    (["--bytes", "4", "--encoding", "base58"], "invalid_generate_options"),
])
def test_generate_refuses_bad_recipes_before_any_unlock(vault, args, reason):
    vault.fail(11, reason, "secret", "generate", "x", *args, unset=("KIMEN_PASSPHRASE",))


# -- edit --


def _editor(tmp: Path, body: str) -> str:
    path = tmp / "editor.py"
    path.write_text(f"#!{sys.executable}\nimport os, sys, signal, time\npath = sys.argv[-1]\n{body}\n")
    path.chmod(0o755)
    return str(path)


def _edit_dirs(vault) -> list[str]:
    base = vault.root / "runtime" / "kimen" / "run"
    return sorted(p.name for p in base.iterdir() if p.name.startswith("edit-")) if base.exists() else []


REPLACE = (
    "st = os.stat(path); d = os.stat(os.path.dirname(path))\n"
    "log = open(os.environ['EDIT_LOG'], 'w')\n"
    "log.write('%o %o %s\\n' % (st.st_mode & 0o777, d.st_mode & 0o777, 'KIMEN_PASSPHRASE' in os.environ))\n"
    "log.write(open(path).read())\n"
    "open(path, 'w').write('new value\\n')\n"
)


def test_edit_replaces_the_value_and_drops_the_added_newline(vault, tmp_path):
    vault.set("app.x", CANARY)
    log = tmp_path / "log"
    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, REPLACE), "EDIT_LOG": str(log)}
    done = vault.ok("secret", "edit", "app.x", env=env)
    assert done.stdout.strip() == "edited app.x (revision 2)"
    modes, seen = log.read_text().split("\n", 1)
    assert modes == "600 700 False" and seen == CANARY
    assert vault.get("app.x") == b"new value"
    assert CANARY not in done.stdout + done.err and _edit_dirs(vault) == []
    doc = vault.ok("secret", "edit", "app.x", "--keep-newline", "--json", env=env).json()
    assert doc == {**doc, "name": "app.x", "created": False, "changed": True, "revision": 3}
    assert vault.get("app.x") == b"new value\n"


def test_edit_unchanged_writes_nothing_and_create(vault, tmp_path):
    vault.set("app.x", CANARY)
    env = {**vault.with_pass(), "VISUAL": _editor(tmp_path, "pass"), "EDITOR": "/nonexistent"}
    doc = vault.ok("secret", "edit", "app.x", "--json", env=env).json()
    assert doc == {**doc, "changed": False, "revision": 1}
    assert vault.ok("secret", "edit", "app.x", env=env).stdout.strip() == "unchanged app.x"
    assert vault.ok("secret", "history", "app.x", "--json").json()["entries"] == []
    vault.fail(12, "secret_not_found", "secret", "edit", "new.x", env=env)
    vault.fail(11, "empty_secret_value", "secret", "edit", "new.x", "--create", env=env)
    env["VISUAL"] = _editor(tmp_path, "open(path, 'w').write('made')")
    assert vault.ok("secret", "edit", "new.x", "--create", env=env).stdout.startswith("created new.x (revision ")
    assert vault.get("new.x") == b"made" and _edit_dirs(vault) == []


def test_an_editor_that_prints_the_file_reaches_a_terminal_never_a_pipe(vault, tmp_path):
    """vi without a terminal draws its screen, the value in it, to stdout: into a pipe (an agent's
    or CI's log) the editor's stdout goes to /dev/null; on a terminal it is the editor's."""
    import subprocess

    from tests.conftest import KIMEN

    vault.set("app.x", CANARY)
    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, "sys.stdout.write(open(path).read()); sys.stdout.flush()")}
    piped = vault.ok("secret", "edit", "app.x", env=env)
    assert CANARY.encode() not in piped.out and piped.stdout.strip() == "unchanged app.x"
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([KIMEN, "secret", "edit", "app.x"], stdin=subprocess.DEVNULL, stdout=slave,
                                stderr=subprocess.PIPE, env={**vault.env, **env}, cwd=vault.cwd)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal has closed it
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
    assert CANARY.encode() in seen and b"unchanged app.x" in seen
    assert _edit_dirs(vault) == []


def test_edit_refusals(vault, tmp_path):
    vault.set("bin.x", b"\xff\xfe")
    vault.fail(11, "editor_not_found", "secret", "edit", "bin.x", env={"EDITOR": "no-such-editor-here"},
               unset=("KIMEN_PASSPHRASE", "VISUAL"))
    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, "pass")}
    vault.fail(11, "value_not_editable", "secret", "edit", "bin.x", env=env)
    vault.set("nul.x", b"a\0b")
    vault.fail(11, "value_not_editable", "secret", "edit", "nul.x", env=env)


@pytest.mark.parametrize(("body", "status"), [
    ("open(path, 'w').write('half'); sys.exit(3)", 3),
    ("open(path, 'w').write('half'); os.kill(os.getpid(), signal.SIGKILL)", 128 + 9),
])
def test_a_failing_or_dying_editor_writes_nothing(vault, tmp_path, body, status):
    vault.set("app.x", CANARY)
    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, body)}
    done = vault.fail(11, "editor_failed", "secret", "edit", "app.x", env=env)
    assert done.err_json()["editor_status"] == status
    assert vault.get("app.x") == CANARY.encode() and _edit_dirs(vault) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_kimen_stopped_while_the_editor_hangs(vault, tmp_path, sig):
    vault.set("app.x", CANARY)
    ready = tmp_path / "ready"
    body = (f"open(path, 'w').write('half'); open({str(ready)!r}, 'w').write(path)\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(60)")
    proc = vault.popen("secret", "edit", "app.x", env={**vault.with_pass(), "EDITOR": _editor(tmp_path, body)})
    for _ in range(600):
        if ready.exists() and ready.read_text():
            break
        time.sleep(0.05)
    edited = Path(ready.read_text())
    assert edited.exists() and stat.S_IMODE(edited.stat().st_mode) == 0o600
    proc.send_signal(sig)
    out, _err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig and out == b""
    assert not edited.parent.exists() and _edit_dirs(vault) == []
    assert vault.get("app.x") == CANARY.encode()


def test_a_killed_kimen_leaves_a_directory_the_next_edit_sweeps(vault, tmp_path):
    vault.set("app.x", CANARY)
    ready = tmp_path / "ready"
    body = f"open({str(ready)!r}, 'w').write(path)\ntime.sleep(60)"
    proc = vault.popen("secret", "edit", "app.x", env={**vault.with_pass(), "EDITOR": _editor(tmp_path, body)})
    for _ in range(600):
        if ready.exists() and ready.read_text():
            break
        time.sleep(0.05)
    left = Path(ready.read_text()).parent
    os.killpg(proc.pid, signal.SIGKILL)  # kimen and the editor (one process group)
    proc.wait(timeout=30)
    assert left.exists()
    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, "pass")}
    vault.ok("secret", "edit", "app.x", env=env)
    assert not left.exists() and _edit_dirs(vault) == []


def test_edit_loses_to_a_concurrent_change(vault, tmp_path):
    vault.set("app.x", CANARY)
    body = ("import subprocess\n"
            "subprocess.run([os.environ['KIMEN_BIN'], 'secret', 'set', 'app.x', '--value', 'other'], check=True,"
            " capture_output=True)\n"
            "subprocess.run([os.environ['KIMEN_BIN'], 'secret', 'set', 'app.y', '--value', 'y'], check=True,"
            " capture_output=True)\n"
            "open(path, 'w').write('mine')")
    from tests.conftest import KIMEN

    env = {**vault.with_pass(), "EDITOR": _editor(tmp_path, body), "KIMEN_BIN": str(KIMEN)}
    # the editor gets no private variable: hand it the passphrase under another name, as a user would not
    env["EDITOR"] = _editor(tmp_path, "os.environ['KIMEN_PASSPHRASE'] = os.environ['P2']\n" + body)
    env["P2"] = vault.with_pass()["KIMEN_PASSPHRASE"]
    vault.fail(11, "secret_changed_concurrently", "secret", "edit", "app.x", env=env)
    assert vault.get("app.x") == b"other" and _edit_dirs(vault) == []
    # only another name changed meanwhile: the edit still lands
    body2 = ("import subprocess\nos.environ['KIMEN_PASSPHRASE'] = os.environ['P2']\n"
             "subprocess.run([os.environ['KIMEN_BIN'], 'secret', 'set', 'app.z', '--value', 'z'], check=True,"
             " capture_output=True)\nopen(path, 'w').write('mine')")
    env["EDITOR"] = _editor(tmp_path, body2)
    vault.ok("secret", "edit", "app.x", env=env)
    assert vault.get("app.x") == b"mine"


def test_generate_and_edit_through_a_session_and_its_grants(vault, tmp_path):
    vault.set("app.x", CANARY)
    vault.ok("session", "start", "--require-grant", env=vault.with_pass())
    try:
        read_only = vault.ok("session", "grant", "--secret", "app.*", "--read-only",
                             env=vault.with_pass()).stdout.strip()
        writer = vault.ok("session", "grant", "--secret", "app.*", env=vault.with_pass()).stdout.strip()
        editor = _editor(tmp_path, "open(path, 'w').write('through the session')")
        vault.fail(35, "grant_denied", "secret", "generate", "app.new", env={"KIMEN_SESSION_TOKEN": read_only})
        ran = tmp_path / "editor-ran"  # refused before the editor opens: no edit is made to be lost
        (tmp_path / "ro").mkdir()
        opened = _editor(tmp_path / "ro", f"open({str(ran)!r}, 'w').write('ran'); open(path, 'w').write('lost')")
        denied = vault.fail(35, "grant_denied", "secret", "edit", "app.x",
                            env={"KIMEN_SESSION_TOKEN": read_only, "EDITOR": opened}).err_json()
        assert not ran.exists() and denied["error"] == "the grant is read-only" and denied["denied"] == ["app.x"]
        assert vault.get("app.x") == CANARY.encode()
        vault.ok("secret", "generate", "app.new", env={"KIMEN_SESSION_TOKEN": writer})
        vault.fail(35, "grant_denied", "secret", "generate", "other.new", env={"KIMEN_SESSION_TOKEN": writer})
        doc = vault.ok("secret", "edit", "app.x", "--json",
                       env={"KIMEN_SESSION_TOKEN": writer, "EDITOR": editor}).json()
        assert doc["changed"] is True and _edit_dirs(vault) == []
        assert vault.get("app.x") == b"through the session"
        assert len(vault.get("app.new")) == 32
    finally:
        vault.run("session", "stop")
