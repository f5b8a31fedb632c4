"""`secret edit`'s private file handling (kimen/editing.py) with real editor processes.

A driver process plays kimen: it calls `editing.edit` as the command will, with `$EDITOR` set to a
shell script that edits, fails, kills itself, replaces the file, or hangs while the test signals
the driver. After every outcome no `edit-*` directory is left under the runtime base; the file was
0600 in a 0700 directory under umask 022; the editor saw no private variable.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kimen import editing, errors
from kimen.projection import files
from tests.conftest import wait_for

DRIVER = textwrap.dedent("""
    import os, sys
    from kimen import editing, errors
    old = open(sys.argv[1], "rb").read()
    try:
        editor = editing.editor_command(os.environ)
        new = editing.edit("app.pem", old, editor, os.environ, keep_newline=sys.argv[3] == "keep")
    except errors.KimenError as err:
        open(sys.argv[2], "w").write(err.reason + " " + repr(err.fields))
        sys.exit(11)
    open(sys.argv[2], "wb").write(b"unchanged" if new is None else b"new:" + new)
""")


class Editing:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.log = root / "log"
        self.log.mkdir()
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(root), "XDG_RUNTIME_DIR": str(self.runtime),
            "KIMEN_PASSPHRASE": "private-passphrase-canary", "LOG": str(self.log), "LC_ALL": "C.UTF-8",
        }

    def script(self, name: str, body: str) -> str:
        path = self.root / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)
        return str(path)

    def start(self, old: bytes, editor: str, *, keep: bool = False, env: dict | None = None) -> subprocess.Popen:
        (self.root / "old").write_bytes(old)
        return subprocess.Popen(
            ["sh", "-c", 'umask 022; exec "$@"', "sh", sys.executable, "-c", DRIVER, str(self.root / "old"),
             str(self.root / "result"), "keep" if keep else "drop"],
            env={**self.env, "EDITOR": editor, **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)

    def run(self, old: bytes, editor: str, **kw) -> tuple[int, bytes]:
        proc = self.start(old, editor, **kw)
        out, err = proc.communicate(timeout=60)
        assert out == b"" and b"Traceback" not in err, err
        return proc.returncode, (self.root / "result").read_bytes()

    def leftovers(self) -> list[str]:
        base = self.runtime / "kimen" / "run"
        return sorted(p.name for p in base.iterdir() if p.name.startswith("edit-")) if base.exists() else []


@pytest.fixture
def ed(tmp_path):
    return Editing(tmp_path)


RECORD = """
    d=$(dirname "$1")
    stat -c '%a' "$1" > "$LOG/file_mode"; stat -c '%a' "$d" > "$LOG/dir_mode"
    echo "$1" > "$LOG/path"; cp "$1" "$LOG/seen"; tr '\\0' '\\n' < /proc/$$/environ > "$LOG/environ"
"""


def test_edit_replaces_the_value_in_a_private_file(ed):
    editor = ed.script("ed.sh", RECORD + 'printf "new line 1\\nnew line 2\\n" > "$1"\n')
    code, result = ed.run(b"-----BEGIN-----\nold\n-----END-----", editor)
    assert code == 0 and result == b"new:new line 1\nnew line 2"  # the editor's final LF dropped
    assert (ed.log / "seen").read_bytes() == b"-----BEGIN-----\nold\n-----END-----"
    assert (ed.log / "file_mode").read_text().strip() == "600"
    assert (ed.log / "dir_mode").read_text().strip() == "700"
    path = Path((ed.log / "path").read_text().strip())
    assert path.name == "app.pem" and path.parent.name.startswith("edit-")
    assert path.parent.parent == ed.runtime / "kimen" / "run"
    environ = (ed.log / "environ").read_text().splitlines()
    assert "LOG=" + str(ed.log) in environ
    assert not [line for line in environ if line.startswith("KIMEN_PASSPHRASE")]
    assert ed.leftovers() == [] and not path.parent.exists()


@pytest.mark.parametrize(("old", "written", "keep", "result"), [
    (b"same", b"same\n", False, b"unchanged"),  # the editor's newline only: nothing to write
    (b"same", b"same", False, b"unchanged"),
    (b"same\n", b"same\n", False, b"unchanged"),
    (b"same", b"same\r\n", False, b"unchanged"),
    (b"old", b"new\n\n", False, b"new:new\n"),  # one newline is the editor's, the other the user's
    (b"old\n", b"new\n", False, b"new:new\n"),  # the old value had one: kept
    (b"old", b"new\n", True, b"new:new\n"),  # --keep-newline
    (b"", b"created\n", False, b"new:created"),  # --create starts empty
])
def test_newline_rule_and_unchanged(ed, old, written, keep, result):
    (ed.root / "written").write_bytes(written)
    editor = ed.script("ed.sh", f'cp "{ed.root / "written"}" "$1"\n')
    assert ed.run(old, editor, keep=keep) == (0, result)
    assert ed.leftovers() == []


@pytest.mark.parametrize(("body", "reason", "status"), [
    ("exit 3\n", "editor_failed", 3),
    ("kill -9 $$\n", "editor_failed", 137),
    (": > \"$1\"\n", "empty_secret_value", None),
    ("printf '\\n' > \"$1\"\n", "empty_secret_value", None),
    ('rm "$1"; ln -s /etc/hostname "$1"\n', "value_source_failed", None),  # never read through a symlink
    ('rm "$1"\n', "value_source_failed", None),
    ('head -c 1048580 /dev/zero | tr "\\0" x > "$1"\n', "secret_too_large", None),
])
def test_every_failure_removes_the_directory_and_writes_nothing(ed, body, reason, status):
    editor = ed.script("ed.sh", RECORD + body)
    code, result = ed.run(b"old value", editor)
    assert code == 11 and result.decode().startswith(reason + " "), result
    if status is not None:
        assert f"'editor_status': {status}" in result.decode()
    assert ed.leftovers() == []
    assert not Path((ed.log / "path").read_text().strip()).parent.exists()


def test_a_value_that_is_not_text_is_refused_before_any_file(ed):
    editor = ed.script("ed.sh", RECORD)
    for old in (b"\xff\xfe binary", b"nul\0inside"):
        code, result = ed.run(old, editor)
        assert code == 11 and result.startswith(b"value_not_editable ")
    assert not (ed.log / "path").exists() and ed.leftovers() == []


HANG = """
    echo "$1" > "$LOG/path"
    trap 'echo term > "$LOG/term"; exit 0' TERM
    echo started > "$LOG/started"
    while [ ! -e "$LOG/go" ]; do sleep 0.05; done
    printf 'after signals' > "$1"
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_stops_the_editor_and_exits_128_plus_n(ed, sig):
    proc = ed.start(b"old", ed.script("hang.sh", HANG))
    wait_for(lambda: (ed.log / "started").exists(), "the editor to start")
    assert len(ed.leftovers()) == 1
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig and out == b"" and err == b""  # nothing written or printed
    assert (ed.log / "term").read_text().strip() == "term"  # the editor got SIGTERM
    assert not (ed.root / "result").exists()
    assert ed.leftovers() == []


def test_sigint_and_sigquit_are_left_to_the_editor(ed):
    proc = ed.start(b"old", ed.script("hang.sh", HANG))
    wait_for(lambda: (ed.log / "started").exists(), "the editor to start")
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGINT):
        proc.send_signal(sig)
    time.sleep(0.3)
    assert proc.poll() is None and not (ed.log / "term").exists()
    (ed.log / "go").touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == b"" and b"Traceback" not in err, err
    assert (ed.root / "result").read_bytes() == b"new:after signals"
    assert ed.leftovers() == []


def test_after_a_sigkill_the_next_run_or_edit_removes_the_directory(ed):
    proc = ed.start(b"old", ed.script("hang.sh", HANG))
    wait_for(lambda: (ed.log / "started").exists(), "the editor to start")
    left = ed.leftovers()
    assert len(left) == 1
    proc.kill()
    proc.wait()
    wait_for(lambda: (ed.log / "term").exists(), "the editor's parent-death SIGTERM")
    assert ed.leftovers() == left  # the SIGKILLed kimen could not clean up
    directory = files.create_runtime_dir(ed.env, "run")  # the next run (or edit) sweeps it
    try:
        assert ed.leftovers() == []
    finally:
        directory.remove()


def test_a_live_edit_directory_is_not_swept(ed):
    proc = ed.start(b"old", ed.script("hang.sh", HANG))
    wait_for(lambda: (ed.log / "started").exists(), "the editor to start")
    left = ed.leftovers()
    other = files.create_runtime_dir(ed.env, "edit")
    try:
        assert set(left) < set(ed.leftovers())  # the running edit's directory is kept
    finally:
        other.remove()
    (ed.log / "go").touch()
    assert proc.wait(timeout=30) == 0 and ed.leftovers() == []


def test_editor_lookup(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("vi", "nano", "code"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "notexec").write_text("")
    path = {"PATH": str(bin_dir)}
    assert editing.editor_command(path) == [str(bin_dir / "vi")]
    assert editing.editor_command({**path, "EDITOR": "nano"}) == [str(bin_dir / "nano")]
    assert editing.editor_command({**path, "EDITOR": "nano", "VISUAL": "code --wait"}) == [str(bin_dir / "code"),
                                                                                           "--wait"]
    assert editing.editor_command({**path, "VISUAL": "  ", "EDITOR": "nano -w"}) == [str(bin_dir / "nano"), "-w"]
    assert editing.editor_command({**path, "EDITOR": f"{bin_dir}/nano"}) == [f"{bin_dir}/nano"]
    for env, missing in (({**path, "EDITOR": "emacs"}, "emacs"), ({**path, "EDITOR": "notexec"}, "notexec"),
                         ({**path, "VISUAL": "'vi'"}, "'vi'"), ({"PATH": str(tmp_path)}, "vi"),
                         ({**path, "EDITOR": f"{tmp_path}/nope"}, f"{tmp_path}/nope")):
        with pytest.raises(errors.EditorNotFound) as caught:
            editing.editor_command(env)
        assert caught.value.fields["command"] == missing and caught.value.exit_code(11) == 11


@pytest.mark.parametrize(("old", "new", "keep", "expected"), [
    (b"a", b"b\n", False, b"b"),
    (b"a", b"b\r\n", False, b"b"),
    (b"a\r", b"b\r\n", False, b"b\r"),  # the old value ended with CR: only the LF is the editor's
    (b"a", b"b\n\n", False, b"b\n"),
    (b"a", b"b", False, b"b"),
    (b"a\n", b"b\n", False, b"b\n"),
    (b"a\r\n", b"b\r\n", False, b"b\r\n"),
    (b"a", b"b\n", True, b"b\n"),
    (b"", b"\n", False, b""),
])
def test_edited_value_table(old, new, keep, expected):
    assert editing.edited_value(old, new, keep_newline=keep) == expected


def test_runtime_dir_kinds_share_one_owner_record_and_sweep(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)}
    tmp_path.chmod(0o700)
    made = [files.create_runtime_dir(env, kind) for kind in ("run", "edit")]
    try:
        base = Path(made[0].base)
        for d in made:
            owner = (Path(d.path) / ".kimen-owner").read_text().split()
            assert owner[0] == str(os.getpid()) and stat.S_IMODE(os.stat(d.path).st_mode) == 0o700
        # a dead owner's dirs of both kinds go at the next creation
        for kind in ("run", "edit"):
            dead = base / f"{kind}-deadbeefdeadbeef"
            dead.mkdir(mode=0o700)
            (dead / ".kimen-owner").write_text("999999999 1\n")
            (dead / "secret").write_text("x")
        other = files.create_runtime_dir(env, "edit")
        names = sorted(p.name for p in base.iterdir())
        assert not [n for n in names if "deadbeef" in n]
        assert {Path(d.path).name for d in [*made, other]} <= set(names)
        other.remove()
    finally:
        for d in made:
            d.remove()
