"""`kimen run --mask` / `--strict-mask` end to end through the installed command (docs/run.md,
"Masking"): values from a live session and `const:` sources masked in every form on stdout and
stderr, across 1-byte writes and on a real pty; exit codes and signals as plain `run`; the 6-byte
rule refused or named; the plan says the run is supervised."""

from __future__ import annotations

import base64
import os
import pty
import select
import signal
import sys
import time
from urllib.parse import quote

import pytest

from kimen.projection.mask import masked_forms
from tests.conftest import KIMEN

TOKEN = b"tok_live_5f4e3d2c1b"
PY = sys.executable
ONE_BYTE = ("import os, sys\ndata = bytes.fromhex(sys.argv[1])\nfd = int(sys.argv[2])\n"
            "for i in range(len(data)):\n    os.write(fd, data[i:i + 1])\n")


@pytest.fixture
def live(kimen):
    kimen.init_vault()
    kimen.set("app.token", TOKEN)
    kimen.ok("session", "start", env=kimen.with_pass())
    kimen.write_profile("dev", "env API_TOKEN=app.token\nfile conf/key.pem=app.token\n")
    return kimen


def test_session_values_are_masked_in_every_form_across_one_byte_writes(live):
    forms = sorted(masked_forms(TOKEN))
    text = b"".join(b"<" + form + b">\n" for form in forms)
    for fd in ("1", "2"):
        done = live.ok("run", "--profile", "dev", "--mask", "--", PY, "-c", ONE_BYTE, text.hex(), fd)
        got = done.out if fd == "1" else done.err.encode()
        assert got.count(b"[masked:API_TOKEN]") == len(forms), got
        for form in forms:
            assert form not in got


def test_const_values_named_by_variable_file_and_stdin(kimen):
    code = ("import os, sys\nprint(os.environ['DB_URL'], open(os.environ['KIMEN_FILES_DIR'] + '/app.key').read(),"
            " sys.stdin.read())")
    done = kimen.ok("run", "--env", "DB_URL=const:postgres://u:pw@db/app", "--file", "app.key=const:key-material-1",
                    "--stdin", "const:stdin-secret-1", "--mask", "--", PY, "-c", code)
    assert done.out == b"[masked:DB_URL] [masked:app.key] [masked:stdin]\n"


def test_a_variable_and_a_file_or_stdin_of_one_name_are_both_masked(kimen):
    """`TOKEN` as a variable and as a file, `stdin` as a variable and the projected stdin: every
    value is masked (one name must not hide another's value), and both count for --strict-mask."""
    code = "import os, sys\nprint(os.environ['TOKEN'], os.environ['stdin'], sys.stdin.read())"
    done = kimen.ok("run", "--env", "TOKEN=const:env-value-123", "--file", "TOKEN=const:file-value-123",
                    "--env", "stdin=const:var-named-stdin", "--stdin", "const:projected-stdin-1", "--mask", "--",
                    PY, "-c", code + "; print(open(os.environ['KIMEN_FILES_DIR'] + '/TOKEN').read())")
    assert done.out == (b"[masked:TOKEN] [masked:stdin] [masked:stdin (projected)]\n[masked:file TOKEN]\n")
    kimen.fail(23, "mask_value_too_short", "run", "--env", "TOKEN=const:long-enough-1", "--file", "TOKEN=const:abc",
               "--strict-mask", "--", "true")
    # a file literally named `file A` as well: its value is not dropped either
    code = ("import os\nd = os.environ['KIMEN_FILES_DIR']\n"
            "print(os.environ['A'], open(d + '/file A').read(), open(d + '/A').read())")
    done = kimen.ok("run", "--env", "A=const:value-number-1", "--file", "file A=const:value-number-2",
                    "--file", "A=const:value-number-3", "--mask", "--", PY, "-c", code)
    assert b"value-number" not in done.out and done.out.count(b"[masked:") == 3, done.out


def test_clean_output_is_byte_identical(kimen, tmp_path):
    blob = os.urandom(256 * 1024) + bytes(range(256))
    (tmp_path / "blob").write_bytes(blob)
    done = kimen.ok("run", "--env", "A=const:not-in-the-blob-123", "--mask", "--", "cat", str(tmp_path / "blob"))
    assert done.out == blob


@pytest.mark.parametrize(("code", "status"), [
    ("raise SystemExit(0)", 0), ("raise SystemExit(42)", 42), ("raise SystemExit(255)", 255),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
])
def test_exit_status_is_the_commands(kimen, code, status):
    done = kimen.run("run", "--env", "A=const:secret-value-1", "--mask", "--", PY, "-c",
                     "import os; print(os.environ['A'], flush=True)\n" + code)
    assert done.code == status
    assert done.out == b"[masked:A]\n"


def test_missing_command_keeps_its_reason(kimen):
    kimen.fail(127, "command_not_found", "run", "--env", "A=const:secret-value-1", "--mask", "--", "no-such-cmd-x")


def test_sigterm_is_forwarded_and_the_output_drained(kimen):
    code = ("import os, signal, sys\n"
            "def bye(*_):\n    os.write(1, b'bye ' + os.environb[b'A'] + b'\\n')\n    os._exit(9)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "print('ready', flush=True)\nwhile True: signal.pause()\n")
    proc = kimen.popen("run", "--env", "A=const:secret-value-1", "--mask", "--", PY, "-c", code)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert (proc.wait(timeout=30), out) == (9, b"bye [masked:A]\n"), proc.stderr.read()


def test_strict_mask_refuses_short_values_before_anything_runs(kimen, tmp_path):
    marker = tmp_path / "ran"
    done = kimen.fail(23, "mask_value_too_short", "run", "--env", "PIN=const:1234", "--env", "OK=const:long-enough",
                      "--strict-mask", "--", "touch", str(marker))
    assert "PIN" in done.err and "1234" not in done.err and "OK" not in done.err_json()["error"]
    assert not marker.exists()


def test_short_values_are_named_in_a_warning(kimen):
    done = kimen.ok("run", "--env", "PIN=const:1234", "--env", "KEY=const:long-enough", "--mask", "--",
                    PY, "-c", "import os; print(os.environ['PIN'], os.environ['KEY'])")
    assert done.out == b"1234 [masked:KEY]\n"
    assert "warning: values under 6 bytes are not masked: PIN" in done.err
    assert "1234" not in done.err
    done = kimen.run("--json", "run", "--env", "PIN=const:1234", "--mask", "--", "true")
    assert done.code == 0 and '"mask_value_unmasked"' in done.err


def test_plan_says_a_masked_run_is_supervised(kimen):
    plan = kimen.ok("run", "--env", "A=const:secret-value-1", "--mask", "--dry-run", "--json", "--", "true").json()
    assert plan["exec_in_place"] is False
    plan = kimen.ok("run", "--env", "A=const:secret-value-1", "--dry-run", "--json", "--", "true").json()
    assert plan["exec_in_place"] is True


def test_on_a_terminal_the_command_sees_one_pty_and_its_output_is_masked(live):
    code = ("import os, base64\nprint(os.isatty(0), os.isatty(1), os.isatty(2))\n"
            "print(os.environ['API_TOKEN'], base64.b64encode(os.environ['API_TOKEN'].encode()).decode())\n")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the forked child: kimen on a terminal, as in a shell
        try:
            os.chdir(live.cwd)
            os.execve(KIMEN, [KIMEN, "run", "--profile", "dev", "--mask", "--", PY, "-c", code], live.env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"True True True" in out
    assert b"[masked:API_TOKEN] [masked:API_TOKEN]" in out
    for form in (TOKEN, base64.b64encode(TOKEN), quote(TOKEN).encode()):
        assert form not in out
