"""`kimen run` end to end: exit codes, signals, cleanup, stdin, environment hygiene."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import KIMEN, PASSPHRASE, wait_for

CHILD = str(Path(__file__).with_name("child.py"))
PY = sys.executable
FILE = ("--file", "f.txt=const:hello")  # forces a private runtime dir: the supervised path


def _ready(proc) -> tuple[str, int]:
    line = proc.stdout.readline().decode()
    assert line.startswith("ready "), line
    _, files_dir, pid = line.split()
    return files_dir, int(pid)


def _runtime_dirs(kimen) -> list[Path]:
    base = Path(kimen.env["XDG_RUNTIME_DIR"]) / "kimen" / "run"
    return sorted(base.glob("run-*")) if base.exists() else []


# -- exit codes -------------------------------------------------------------------


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
@pytest.mark.parametrize(("script", "code"), [
    ("raise SystemExit(0)", 0),
    ("raise SystemExit(1)", 1),
    ("raise SystemExit(42)", 42),
    ("raise SystemExit(255)", 255),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", 128 + 11),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + 15),
])
def test_exit_status_is_the_childs(kimen, supervised, script, code):
    extra = FILE if supervised else ()
    done = kimen.run("run", *extra, "--", PY, "-c", script)
    if code > 128 and code != 255 and not supervised:
        code = -(code - 128)  # exec in place: the process itself dies of the signal (a shell shows 128+N)
    assert done.code == code, done.err
    assert _runtime_dirs(kimen) == []


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
def test_command_not_found_and_not_executable(kimen, supervised, tmp_path):
    extra = FILE if supervised else ()
    kimen.fail(127, "command_not_found", "run", *extra, "--", "no-such-command-kimen")
    kimen.fail(127, "command_not_found", "run", *extra, "--", str(tmp_path / "missing"))
    plain = tmp_path / "plain.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    kimen.fail(126, "command_not_executable", "run", *extra, "--", str(plain))
    kimen.fail(126, "command_not_executable", "run", *extra, "--", str(tmp_path))
    assert _runtime_dirs(kimen) == []


def test_missing_command(kimen):
    done = kimen.fail(23, "missing_command", "run", "--env", "A=const:x")
    assert "kimen run -- <command>" in done.err_json()["error"]
    done = kimen.fail(23, "missing_command", "project", "run", "--env", "A=const:x")
    assert "kimen project run -- <command>" in done.err_json()["error"]


def test_everything_after_dashdash_belongs_to_the_child(kimen):
    done = kimen.ok("run", "--", PY, "-c", "import sys; print(sys.argv[1:])", "--json", "--profile", "x", "--")
    assert done.stdout.strip() == "['--json', '--profile', 'x', '--']"


# -- signals (docs/run.md table, invariant 22) ----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                                 signal.SIGUSR1])
def test_signal_to_kimen_reaches_the_child_once_and_cleans_up(kimen, tmp_path, sig):
    log = tmp_path / "log"
    proc = kimen.popen("run", *FILE, "--", PY, CHILD, str(log))
    files_dir, _ = _ready(proc)
    assert Path(files_dir, "f.txt").read_text() == "hello"
    os.kill(proc.pid, sig)
    wait_for(lambda: log.exists() and log.read_text(), "the child's handler")
    os.kill(proc.pid, signal.SIGUSR2)  # a marker: anything doubled would arrive before it
    assert proc.wait(timeout=60) == 7
    assert log.read_text().split() == [sig.name[3:], "USR2"]
    assert not Path(files_dir).exists()
    assert proc.stderr.read() == b""


def test_child_killed_by_forwarded_sigterm(kimen, tmp_path):
    proc = kimen.popen("run", *FILE, "--", PY, "-c",
                       "import os,time; print('ready', os.environ['KIMEN_FILES_DIR'], os.getpid(), flush=True); "
                       "time.sleep(600)")
    files_dir, _ = _ready(proc)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not Path(files_dir).exists()


def test_terminal_ctrl_c_is_not_doubled(kimen, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    log = tmp_path / "log"
    argv = ["run", *FILE, "--", PY, CHILD, str(log)]
    from tests.conftest import KIMEN

    term = pexpect.spawn(KIMEN, argv, env=kimen.env, cwd=str(kimen.cwd), timeout=60)
    term.expect(r"ready (\S+) (\d+)")
    files_dir = term.match.group(1).decode()
    term.sendintr()  # the tty driver signals the whole foreground process group
    wait_for(lambda: log.exists() and log.read_text(), "the child's handler")
    os.kill(term.pid, signal.SIGUSR2)
    term.expect(pexpect.EOF)
    term.close()
    assert term.exitstatus == 7
    assert log.read_text().split() == ["INT", "USR2"]
    assert not Path(files_dir).exists()


def _ignored(status: str) -> set[int]:
    mask = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
    return {sig for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE) if mask & (1 << (sig - 1))}


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
def test_child_signal_dispositions(kimen, supervised):
    """kimen inherits SIGINT and SIGQUIT ignored (as under a non-interactive shell's `&`)."""
    import subprocess

    from tests.conftest import KIMEN

    wrapper = [PY, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "signal.signal(signal.SIGQUIT, signal.SIG_IGN); os.execv(sys.argv[1], sys.argv[1:])"]
    extra = FILE if supervised else ()
    out = subprocess.run([*wrapper, KIMEN, "run", *extra, "--", "cat", "/proc/self/status"], env=kimen.env,
                         cwd=kimen.cwd, capture_output=True, timeout=60, check=True)
    ignored = _ignored(out.stdout.decode())
    # SIGPIPE is never left ignored (Python ignores it for itself); the supervised child gets SIGINT and
    # SIGQUIT at default so forwarding works; exec in place passes the inherited dispositions through
    assert ignored == (set() if supervised else {signal.SIGINT, signal.SIGQUIT})


def test_sigkill_of_kimen_leaves_a_dir_the_next_run_sweeps(kimen, tmp_path):
    log = tmp_path / "log"
    proc = kimen.popen("run", *FILE, "--", PY, CHILD, str(log))
    files_dir, child_pid = _ready(proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    os.kill(child_pid, signal.SIGKILL)
    assert Path(files_dir, "f.txt").exists()  # nothing could clean up after SIGKILL...
    kimen.ok("run", *FILE, "--", "true")
    assert not Path(files_dir).exists()  # ...but the next run does
    assert _runtime_dirs(kimen) == []


def test_sweep_never_follows_symlinks_and_keeps_live_dirs(kimen, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    log = tmp_path / "log"
    live = kimen.popen("run", *FILE, "--", PY, CHILD, str(log))
    live_dir, _ = _ready(live)
    base = Path(live_dir).parent
    stale = base / "run-stale"
    stale.mkdir()
    (stale / ".kimen-owner").write_text("999999999 1\n")
    (stale / "link").symlink_to(outside)
    (base / "run-link").symlink_to(outside)
    kimen.ok("run", *FILE, "--", "true")
    assert not stale.exists()
    assert (outside / "keep").exists()
    assert Path(live_dir, "f.txt").exists()  # its owner is alive
    os.kill(live.pid, signal.SIGUSR2)
    assert live.wait(timeout=60) == 7


def test_sweep_does_not_wait_on_a_fifo_in_place_of_an_owner_record(kimen):
    """A leftover dir whose `.kimen-owner` is a FIFO: the next run neither blocks on it (an open
    without a writer would wait forever) nor keeps the dir."""
    kimen.ok("run", *FILE, "--", "true")  # creates the runtime base
    base = Path(kimen.env["XDG_RUNTIME_DIR"]) / "kimen" / "run"
    stale = base / "run-fifo"
    stale.mkdir()
    os.mkfifo(stale / ".kimen-owner")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # past the grace of a dir being made
    kimen.ok("run", *FILE, "--", "true", timeout=20)
    assert not stale.exists()


def test_an_empty_owner_record_is_a_dir_being_made_not_an_orphan(kimen):
    """Between creating `.kimen-owner` and writing it, another kimen's dir has an empty record:
    kept within the grace period (as a dir without a record is), swept after it."""
    kimen.ok("run", *FILE, "--", "true")  # creates the runtime base
    base = Path(kimen.env["XDG_RUNTIME_DIR"]) / "kimen" / "run"
    young = base / "run-00000000deadbeef"
    young.mkdir()
    (young / ".kimen-owner").write_text("")
    kimen.ok("run", *FILE, "--", "true")
    assert young.exists()
    os.utime(young, (time.time() - 3600, time.time() - 3600))
    kimen.ok("run", *FILE, "--", "true")
    assert not young.exists()


# -- stdin and big streams ----------------------------------------------------------------------


def test_ten_mib_through_stdin_and_stdout(kimen):
    data = os.urandom(10 * 1024 * 1024)
    done = kimen.run("run", *FILE, "--", PY, "-c",
                     "import sys, shutil; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)", input=data)
    assert done.code == 0
    assert hashlib.sha256(done.out).digest() == hashlib.sha256(data).digest()


def test_projected_stdin_goes_through_a_pipe_while_the_child_floods_stdout(kimen):
    script = ("import os, stat, sys; sys.stdout.buffer.write(b'x' * (10 << 20)); "
              "mode = os.fstat(0).st_mode; data = sys.stdin.buffer.read(); "
              "sys.stderr.write(f'{stat.S_ISFIFO(mode)} {data!r}')")
    done = kimen.run("run", "--stdin", "const:fed through a pipe", "--", PY, "-c", script)
    assert done.code == 0
    assert len(done.out) == 10 << 20
    assert done.err == "True b'fed through a pipe'"


def test_projected_stdin_reaches_the_child_when_kimens_own_stdin_is_closed(kimen):
    """With fd 0 closed, the pipe's read end is fd 0 itself (close-on-exec): it must still be the
    child's stdin, not closed by the exec."""
    done = subprocess.run([KIMEN, "run", "--stdin", "const:hello-from-kimen", "--", "cat"], capture_output=True,
                          env=kimen.env, cwd=kimen.cwd, timeout=60, stdin=subprocess.DEVNULL,
                          preexec_fn=lambda: os.close(0))
    assert (done.returncode, done.stdout) == (0, b"hello-from-kimen"), done.stderr


def test_passphrase_stdin_takes_only_its_line_and_the_child_gets_the_rest(kimen):
    """`run --passphrase-stdin`: kimen reads its first line and nothing more, so the command it
    starts reads what follows (before, kimen took all of stdin up to 64 KiB and the child got none)."""
    kimen.init_vault()
    kimen.set("app.token", "tok-value")
    data = b"line-for-child\n" + b"x" * 100_000 + b"\nend\n"
    done = kimen.ok("run", "--no-session", "--passphrase-stdin", "--env", "A=app.token", "--", PY, "-c",
                    "import os, sys; sys.stdout.buffer.write(os.environb[b'A'] + b'|' + sys.stdin.buffer.read())",
                    input=PASSPHRASE.encode() + b"\r\n" + data)
    assert done.out == b"tok-value|" + data


def test_a_passphrase_line_over_64_kib_is_refused_not_cut(kimen):
    """Cut at 64 KiB, the rest of the line would become the next passphrase (rekey's new one) or
    reach the command run starts: refused instead, before anything changes or starts."""
    kimen.init_vault()
    kimen.set("app.token", "tok-value")
    long_line = b"A" * 65536 + b"TAIL\n"
    done = kimen.fail(23, "stdin_unreadable", "run", "--no-session", "--passphrase-stdin", "--env", "A=app.token",
                      "--", "cat", input=long_line + b"child-data\n")
    assert b"TAIL" not in done.out and b"child-data" not in done.out and "64 KiB" in done.err
    kimen.fail(24, "stdin_unreadable", "vault", "rekey", "--passphrase-stdin", "--new-passphrase-stdin",
               "--no-backup", input=PASSPHRASE.encode() + b"\n" + long_line)
    assert kimen.get("app.token") == b"tok-value"  # the passphrase is unchanged


def test_child_that_ignores_projected_stdin(kimen):
    kimen.ok("run", "--stdin", "const:" + "y" * 1000, "--", "true")


# -- environment --------------------------------------------------------


def test_child_environment(kimen):
    script = "import os, json; print(json.dumps(dict(os.environ)))"
    done = kimen.ok("run", "--env", "A=const:1", "--", PY, "-c", script,
                    env={"KIMEN_PASSPHRASE": "pp", "KIMEN_SESSION_TOKEN": "tok", "KIMEN_AGE_IDENTITY": "id",
                         "KIMEN_NEW_PASSPHRASE": "np", "KIMEN_FILES_DIR": "/outer", "OTHER": "kept"})
    env = done.json()
    assert env["A"] == "1" and env["KIMEN_RUN"] == "1" and env["OTHER"] == "kept"
    for private in ("KIMEN_PASSPHRASE", "KIMEN_SESSION_TOKEN", "KIMEN_AGE_IDENTITY", "KIMEN_NEW_PASSPHRASE",
                    "KIMEN_FILES_DIR"):
        assert private not in env


def test_pristine(kimen):
    script = "import os, json; print(json.dumps(sorted(os.environ)))"
    done = kimen.ok("run", "--pristine", "--env", "A=const:1", "--", PY, "-c", script,
                    env={"OTHER": "x", "LC_TIME": "C", "TZ": "UTC"})
    names = set(done.json())
    assert {"A", "KIMEN_RUN", "PATH", "HOME", "LANG", "LC_TIME", "TZ"} <= names
    assert not names & {"OTHER", "XDG_CONFIG_HOME", "KIMEN_SESSION_DIR"}


@pytest.mark.parametrize(("locale", "expected"), [({"LANG": "C"}, None), ({}, None),
                                                  ({"LC_CTYPE": "C.UTF-8"}, "C.UTF-8")])
def test_the_child_gets_the_callers_locale_not_pythons_coercion(kimen, locale, expected):
    """Started in the C locale, Python puts LC_CTYPE=C.UTF-8 into its own environment (PEP 538):
    the child gets the caller's environment, with an LC_CTYPE only when the caller set one."""
    env = {k: v for k, v in kimen.env.items() if k not in ("LANG", "LC_ALL")}
    done = subprocess.run([KIMEN, "run", "--env", "A=const:1", "--", "sh", "-c", 'printf %s "${LC_CTYPE-unset}"'],
                          env={**env, **locale}, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == (expected or "unset")


def test_nested_run_warns(kimen):
    done = kimen.ok("run", "--", "true", env={"KIMEN_RUN": "1"})
    assert "kimen: warning: nested kimen run" in done.err


def test_files_and_envpath(kimen):
    kimen.write_profile("p", "file creds/c.json=const:{}\nenvpath CREDS=creds/c.json\n")
    script = ("import os, stat; p = os.environ['CREDS']; d = os.environ['KIMEN_FILES_DIR']; "
              "print(open(p).read(), oct(os.stat(p).st_mode & 0o777), oct(os.stat(d).st_mode & 0o777), "
              "oct(os.stat(os.path.dirname(p)).st_mode & 0o777), p.startswith(d + '/'))")
    done = kimen.ok("run", "--profile", "p", "--", PY, "-c", script)
    assert done.stdout.split() == ["{}", "0o600", "0o700", "0o700", "True"]


def test_files_are_0600_and_the_childs_umask_is_kimens(kimen):
    done = kimen.ok("run", *FILE, "--", "sh", "-c", "umask; stat -c %a \"$KIMEN_FILES_DIR/f.txt\"")
    mask = os.umask(0)
    os.umask(mask)
    assert done.stdout.split() == [f"{mask:04o}", "600"]


def test_a_command_that_cannot_start_leaves_no_value_in_the_files_dir(kimen, tmp_path):
    """A script without `#!` passes the executable check and fails only at execve (ENOEXEC),
    after the files were written: they are removed again, and the error is the usual one."""
    script = tmp_path / "noshebang"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    target = tmp_path / "out"
    for supervised in ((), ("--mask",), ("--stdin", "const:fed-to-stdin")):  # exec in place, then supervised
        kimen.fail(126, "command_not_executable", "run", "--files-dir", str(target), "--file",
                   "token=const:s3cret-value", "--file", "sub/x=const:other-value", *supervised, "--", str(script))
        assert [p for p in target.rglob("*") if p.is_file()] == [], supervised


def test_files_dir_is_kept_and_replaced_atomically(kimen, tmp_path):
    target = tmp_path / "out"
    kimen.ok("run", "--files-dir", str(target), "--file", "a/b=const:one", "--", "true")
    assert (target / "a" / "b").read_text() == "one"
    kimen.ok("run", "--files-dir", str(target), "--file", "a/b=const:two", "--", "true")
    assert (target / "a" / "b").read_text() == "two"
    assert (target.stat().st_mode & 0o777) == 0o700
    (target / "a" / "b").unlink()
    (target / "a" / "b").symlink_to(tmp_path / "victim")
    kimen.fail(23, "unsafe_output_path", "run", "--files-dir", str(target), "--file", "a/b=const:x", "--", "true")
    assert not (tmp_path / "victim").exists()
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    kimen.fail(23, "unsafe_files_dir", "run", "--files-dir", str(loose), "--file", "x=const:x", "--", "true")


def test_values_checked_before_exec(kimen, tmp_path):
    kimen.write_profile("nul", "env A=const:a\x00b\n")
    kimen.fail(23, "invalid_env_value", "run", "--profile", "nul", "--", "true")
    big = tmp_path / "big.sh"
    big.write_text("#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' x\n")
    big.chmod(0o755)
    done = kimen.fail(23, "value_too_large_for_env", "run", "--env", f"A=exec:{big}", "--", "true")
    assert "file" in done.err_json()["hint"]
    # the same value as a file is fine
    kimen.ok("run", "--file", f"a=exec:{big}", "--", "true")
    assert _runtime_dirs(kimen) == []


def test_exec_source_failures(kimen):
    kimen.fail(23, "exec_source_failed", "run", "--env", "A=exec:false", "--", "true")
    kimen.fail(23, "exec_source_failed", "run", "--env", "A=exec:no-such-command-kimen", "--", "true")
    done = kimen.ok("run", "--env", "A=exec:printf a\\r\\n\\n", "--", PY, "-c",
                    "import os; print(repr(os.environ['A']))")
    assert done.stdout.strip() == repr("a\r\n")


def test_exec_source_runs_once_and_without_private_vars(kimen, tmp_path):
    counter = tmp_path / "count"
    script = tmp_path / "src.sh"
    script.write_text(f"#!/bin/sh\necho x >> {counter}\nprintf '%s' \"${{KIMEN_PASSPHRASE:-none}}\"\n")
    script.chmod(0o755)
    done = kimen.ok("run", "--env", f"A=exec:{script}", "--env", f"B=exec:{script}", "--", PY, "-c",
                    "import os; print(os.environ['A'], os.environ['B'])", env={"KIMEN_PASSPHRASE": "pp"})
    assert done.stdout.split() == ["none", "none"]
    assert counter.read_text() == "x\n"


# -- with a vault -------------------------------------------------------------------------------


CANARY = "CANARY-4f1c9e-value"


def test_secrets_from_the_vault_and_canary_hygiene(kimen, tmp_path):
    kimen.init_vault()
    kimen.set("app.token", CANARY)
    kimen.write_profile("p", "env TOKEN=app.token\nfile t.txt=secret:app.token\nenv PLAIN=const:x\n")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "canary = open(sys.argv[1]).read()\n"
        "ppid = os.getppid()\n"
        "own = [k for k, v in os.environ.items() if canary in v]\n"
        "cmd = open(f'/proc/{ppid}/cmdline', 'rb').read()\n"
        "env = open(f'/proc/{ppid}/environ', 'rb').read()\n"
        "print(own, canary.encode() in cmd, canary.encode() in env, 'KIMEN_PASSPHRASE' in os.environ)\n"
        "print(open(os.path.join(os.environ['KIMEN_FILES_DIR'], 't.txt')).read() == canary)\n")
    canary_file = tmp_path / "canary"
    canary_file.write_text(CANARY)
    done = kimen.ok("run", "--profile", "p", "--", PY, str(probe), str(canary_file), env=kimen.with_pass())
    assert done.stdout.splitlines() == ["['TOKEN'] False False False", "True"]
    assert CANARY not in done.err


def test_lazy_vault(kimen):
    # const/exec only: no vault, no passphrase needed
    kimen.ok("run", "--env", "A=const:x", "--file", "f=exec:echo hi", "--", "true")
    # an inline override means the secret is never read: no vault needed either
    kimen.write_profile("p", "env A=missing.secret\n")
    kimen.ok("run", "--profile", "p", "--env", "A=const:v", "--", "true")
    kimen.fail(14, "vault_not_found", "run", "--profile", "p", "--", "true")
    kimen.init_vault()
    kimen.fail(12, "secret_not_found", "run", "--profile", "p", "--", "true", env=kimen.with_pass())
    kimen.fail(15, "wrong_passphrase", "run", "--profile", "p", "--", "true", env=kimen.with_pass("nope nope"))


@pytest.mark.parametrize("line", ["file ../../etc/x=a.b", "file /etc/x=a.b", "env A-B=a.b", "env KIMEN_X=a.b",
                                  "env A=a b", "file a/../b=a.b", "envpath P=t.txt"])
def test_hostile_names_refused_by_lint_and_before_decrypting(kimen, line):
    kimen.write_profile("bad", line + "\n")
    done = kimen.run("map", "lint", "--profile", "bad", "--json")
    assert done.code == 20 and done.json()["error_count"] >= 1
    kimen.init_vault()
    # a wrong passphrase would fail with 15 if kimen tried to decrypt: it must fail on the name first
    done = kimen.run("run", "--profile", "bad", "--json", "--", "true", env=kimen.with_pass("wrong wrong"))
    assert done.code == 23, done.err
    assert done.err_json()["reason"] in {"invalid_relative_path", "invalid_env_var", "reserved_env_var",
                                         "invalid_secret_name", "envpath_requires_projected_files"}


def test_run_json_success_prints_nothing_of_its_own(kimen):
    done = kimen.run("run", "--json", "--file", "f=const:x", "--", "true")
    assert (done.code, done.out, done.err) == (0, b"", "")
    done = kimen.run("run", "--json", "--env", "A=const:x", "--", "true")
    assert (done.code, done.out, done.err) == (0, b"", "")


@pytest.mark.parametrize("supervised", [False, True], ids=["exec", "supervised"])
def test_no_kimen_descriptor_reaches_the_child(kimen, supervised):
    import subprocess

    kimen.init_vault()
    kimen.set("app.token", "v")
    probe = [PY, "-c", "import os; print(sorted(os.listdir('/proc/self/fd')))"]
    direct = subprocess.run(probe, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    extra = FILE if supervised else ()
    done = kimen.ok("run", "--env", "A=app.token", *extra, "--", *probe, env=kimen.with_pass())
    assert done.stdout == direct


def test_a_runtime_dir_that_is_a_file_falls_back_like_a_foreign_one(kimen):
    """XDG_RUNTIME_DIR naming a regular file: projected files go to the fallback base, as doctor says."""
    afile = kimen.root / "afile"
    afile.write_text("")
    kimen.write_profile("f", "file f.txt=const:x\n")
    done = kimen.ok("run", "--profile", "f", "--", "sh", "-c", 'cat "$KIMEN_FILES_DIR/f.txt"',
                    env={"XDG_RUNTIME_DIR": str(afile)})
    assert done.out == b"x"


def test_a_vault_path_with_a_leading_double_slash(kimen):
    """`//x` is `/x` to the kernel; SQLite must not read `file://x` as a host."""
    kimen.init_vault()
    kimen.set("a.b", "v")
    path = "/" + str(kimen.vault)
    assert kimen.ok("--vault", path, "secret", "list").stdout.split() == ["a.b"]
    assert kimen.ok("--vault", path, "secret", "get", "a.b", "--unsafe-stdout", env=kimen.with_pass()).out == b"v"
