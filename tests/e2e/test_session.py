"""The session daemon end to end: a real daemon on a real socket, driven by the installed
`kimen`. Timing-dependent cases use TTLs of seconds and generous waits, never timing assertions."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimen import __version__
from tests.conftest import PASSPHRASE, SMALL_KDF, wait_for
from tests.e2e.session_helpers import json_frame, read_frame, status

PY = sys.executable
VERSION = __version__


def start(kimen, *extra: str, passphrase: str = PASSPHRASE, **kw):
    return kimen.ok("session", "start", *extra, env={**kimen.with_pass(passphrase), **kw.pop("env", {})}, **kw)


def get(kimen, name: str, **kw):
    """`secret get` with no passphrase source: only a session can serve it."""
    return kimen.run("secret", "get", name, "--unsafe-stdout", "--json", **kw)


def served(kimen, name: str, value: bytes, **kw) -> None:
    done = get(kimen, name, **kw)
    assert done.code == 0, done.err
    import base64

    assert base64.b64decode(done.json()["value_b64"]) == value


def not_served(kimen, name: str, **kw) -> None:
    done = get(kimen, name, **kw)
    assert done.code == 10, done.err  # fell back; no passphrase source in tests
    assert done.err_json()["reason"] == "missing_passphrase"


def expired(kimen, name: str, **kw) -> dict:
    """No passphrase source and the vault's session expired: `session_expired` (10), never a bare
    `missing_passphrase`; returns the error envelope."""
    done = get(kimen, name, **kw)
    assert done.code == 10, done.err
    envelope = done.err_json()
    assert envelope["reason"] == "session_expired", envelope
    assert "kimen session start" in envelope["error"] and envelope["expired_at"], envelope
    return envelope


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return False


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.token", b"s3cret-value")
    kimen.set("app.other", b"\x00binary\xff")
    return kimen.vault


# -- start / status / lock / stop --


def test_status_without_a_daemon(kimen):
    assert kimen.ok("session", "status").stdout == "session: stopped\n"
    doc = status(kimen)
    assert doc["action"] == "session_status" and doc["running"] is False
    assert doc["state"] == "stopped" and doc["locked"] is True and doc["version_mismatch"] is False
    assert doc["socket_path"] == str(kimen.session_dir / "session.sock")


def test_start_status_lock_stop(kimen, vault):
    done = start(kimen, "--ttl", "10m", "--max-ttl", "2h")
    pid = status(kimen)["pid"]
    assert done.stdout == f"session unlocked: {vault} (idle 10m, max 2h, pid {pid})\n"
    doc = status(kimen)
    assert doc["running"] and doc["state"] == "unlocked" and doc["locked"] is False
    assert doc["vault_path"] == str(vault) and doc["ttl_seconds"] == 600 and doc["protocol"] == 1
    assert [v["vault_path"] for v in doc["vaults"]] == [str(vault)]
    assert doc["vaults"][0]["max_ttl_seconds"] == 7200 and doc["expires_at"] == doc["vaults"][0]["idle_expires_at"]
    human = kimen.ok("session", "status").stdout
    assert human.startswith(f"session: unlocked (vault={vault} idle_expires_at=") and human.endswith(f"pid={pid})\n")
    # the session directory and socket are private
    assert stat.S_IMODE(kimen.session_dir.stat().st_mode) == 0o700
    sock = kimen.session_dir / "session.sock"
    assert stat.S_ISSOCK(sock.lstat().st_mode) and stat.S_IMODE(sock.lstat().st_mode) == 0o600

    served(kimen, "app.token", b"s3cret-value")
    served(kimen, "app.other", b"\x00binary\xff")
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout").out == b"s3cret-value"

    lock = kimen.ok("session", "lock", "--json").json()
    assert lock["action"] == "session_lock" and lock["state"] == "locked" and lock["pid"] == pid
    assert kimen.ok("session", "status").stdout == f"session: locked (pid={pid})\n"
    not_served(kimen, "app.token")
    assert alive(pid)

    start(kimen)
    assert status(kimen)["pid"] == pid  # the running daemon is reused
    stop = kimen.ok("session", "stop", "--json").json()
    assert stop["action"] == "session_stop" and stop["running"] is False
    assert not alive(pid)
    assert not (kimen.session_dir / "session.sock").exists()
    assert status(kimen)["state"] == "stopped"
    not_served(kimen, "app.token")


def test_lock_and_stop_succeed_without_a_daemon(kimen, vault):
    assert kimen.ok("session", "lock").stdout == "session locked\n"
    assert kimen.ok("session", "lock", "--all").stdout == "session locked\n"
    assert kimen.ok("session", "stop").stdout == "session stopped\n"


def test_writes_and_verify_go_through_the_session(kimen, vault):
    start(kimen)
    kimen.ok("secret", "set", "app.new", "--stdin", input=b"fresh")
    kimen.ok("secret", "mv", "app.new", "app.moved")
    served(kimen, "app.moved", b"fresh")
    kimen.ok("secret", "rm", "app.moved")
    done = kimen.fail(12, "secret_not_found", "secret", "get", "app.moved", "--unsafe-stdout")
    assert done.err_json()["missing"] == ["app.moved"]
    kimen.fail(13, "secret_exists", "secret", "mv", "app.token", "app.other")
    assert "integrity: ok" in kimen.ok("vault", "info", "--verify").stdout
    # the local path reads what the session wrote
    assert kimen.get("app.token") == b"s3cret-value"


def test_explicit_sources_win_and_no_session_skips_it(kimen, vault):
    start(kimen)
    kimen.fail(15, "wrong_passphrase", "secret", "get", "app.token", "--unsafe-stdout",
               env={"KIMEN_PASSPHRASE": "not the passphrase"})
    kimen.fail(10, "missing_passphrase", "secret", "get", "app.token", "--unsafe-stdout", "--no-session")
    kimen.fail(15, "wrong_passphrase", "secret", "get", "app.token", "--unsafe-stdout", "--passphrase-stdin",
               input="nope\n")


def test_wrong_passphrase_keeps_the_existing_session(kimen, vault):
    start(kimen)
    kimen.fail(15, "wrong_passphrase", "session", "start", env={"KIMEN_PASSPHRASE": "wrong passphrase"})
    served(kimen, "app.token", b"s3cret-value")


def test_start_needs_a_vault_and_a_passphrase(kimen):
    kimen.fail(14, "vault_not_found", "session", "start", env=kimen.with_pass())
    kimen.init_vault()
    kimen.fail(10, "missing_passphrase", "session", "start")


@pytest.mark.parametrize("flags", [
    ("--ttl", "0"), ("--ttl", "abc"), ("--ttl", "2h", "--max-ttl", "1h"), ("--max-ttl", "8d"), ("--ttl", "-5"),
])
def test_invalid_ttls(kimen, flags):
    kimen.init_vault()
    done = kimen.fail(34, "invalid_ttl", "session", "start", *flags, env=kimen.with_pass())
    assert "hint" in done.err_json()
    assert not (kimen.session_dir / "session.sock").exists()


def test_start_with_passphrase_stdin_alias(kimen, vault):
    kimen.ok("session", "start", "--stdin", input=PASSPHRASE + "\n")
    served(kimen, "app.token", b"s3cret-value")


# -- several vaults, canonical paths --


def test_other_vault_falls_back_and_several_vaults_at_once(kimen, vault, tmp_path):
    other = tmp_path / "other.db"
    kimen.ok("vault", "init", *SMALL_KDF, "--vault", str(other), env=kimen.with_pass("other passphrase"))
    kimen.ok("secret", "set", "x.y", "--vault", str(other), "--stdin", input=b"other-value",
             env=kimen.with_pass("other passphrase"))
    start(kimen)
    not_served(kimen, "x.y", env={"KIMEN_VAULT": str(other)})
    start(kimen, "--vault", str(other), passphrase="other passphrase")
    served(kimen, "x.y", b"other-value", env={"KIMEN_VAULT": str(other)})
    served(kimen, "app.token", b"s3cret-value")
    doc = status(kimen)
    assert sorted(v["vault_path"] for v in doc["vaults"]) == sorted([str(vault), str(other)])
    assert "also unlocked: vault=" in kimen.ok("session", "status").stdout
    # lock one, keep the other
    kimen.ok("session", "lock", "--vault", str(other))
    not_served(kimen, "x.y", env={"KIMEN_VAULT": str(other)})
    served(kimen, "app.token", b"s3cret-value")
    start(kimen, "--vault", str(other), passphrase="other passphrase")
    kimen.ok("session", "lock", "--all")
    assert status(kimen)["vaults"] == []
    not_served(kimen, "app.token")


def test_a_symlink_to_the_vault_uses_its_session(kimen, vault, tmp_path):
    link = tmp_path / "link.db"
    link.symlink_to(vault)
    start(kimen)
    served(kimen, "app.token", b"s3cret-value", env={"KIMEN_VAULT": str(link)})
    assert status(kimen, env={"KIMEN_VAULT": str(link)})["state"] == "unlocked"


# -- TTLs --


def test_idle_ttl_expires_the_key(kimen, vault):
    start(kimen, "--ttl", "2s")
    wait_for(lambda: status(kimen)["state"] == "expired", "idle expiry", limit=30)
    expired(kimen, "app.token")
    assert status(kimen)["running"] is True  # the daemon keeps running


def test_use_refreshes_the_idle_ttl(kimen, vault):
    start(kimen, "--ttl", "6s")
    first = status(kimen)["vaults"][0]["idle_expires_at"]
    time.sleep(1.5)
    served(kimen, "app.token", b"s3cret-value")
    after_use = status(kimen)["vaults"][0]["idle_expires_at"]
    assert after_use > first
    time.sleep(1.5)
    assert status(kimen)["vaults"][0]["idle_expires_at"] == after_use  # status does not refresh


def test_max_ttl_wins_over_activity(kimen, vault):
    start(kimen, "--ttl", "3s", "--max-ttl", "5s")
    doc = status(kimen)["vaults"][0]
    assert doc["max_ttl_seconds"] == 5
    begun = time.monotonic()
    while time.monotonic() - begun < 9:
        get(kimen, "app.token")  # keep it busy; some of these succeed
        time.sleep(0.5)
    assert expired(kimen, "app.token")["expired_by"] == "max_ttl"


# -- vault identity --


def test_rekey_invalidates_the_session(kimen, vault):
    start(kimen)
    kimen.ok("vault", "rekey", "--no-backup", env={**kimen.with_pass(), "KIMEN_NEW_PASSPHRASE": "new passphrase x"})
    not_served(kimen, "app.token")
    assert status(kimen)["state"] == "locked"


def test_rotation_invalidates_the_session(kimen, vault):
    start(kimen)
    kimen.ok("vault", "rekey", "--rotate-data-key", "--no-backup", env=kimen.with_pass())
    not_served(kimen, "app.token")


def test_replaced_vault_is_not_served_with_a_stale_key(kimen, vault, tmp_path):
    start(kimen)
    served(kimen, "app.token", b"s3cret-value")
    aside = tmp_path / "aside.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{vault}{suffix}").exists():
            os.rename(f"{vault}{suffix}", f"{aside}{suffix}")
    kimen.init_vault()  # same path, same passphrase, another vault id
    kimen.set("app.token", b"replacement")
    not_served(kimen, "app.token")
    assert status(kimen)["state"] == "locked"


# -- processes --


def test_kill_9_then_status_is_honest_and_start_recovers(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), "daemon death")
    assert (kimen.session_dir / "session.sock").exists()  # the stale socket is still there
    assert status(kimen)["state"] == "stopped"
    not_served(kimen, "app.token")
    start(kimen)
    new_pid = status(kimen)["pid"]
    assert new_pid != pid
    served(kimen, "app.token", b"s3cret-value")


# tgkill(2) by architecture: a signal sent to one thread of another process (no Python call does it)
_TGKILL = {"x86_64": 234, "aarch64": 131, "i686": 270, "armv7l": 268, "ppc64le": 250, "s390x": 241}


def _signal_thread(pid: int, tid: int, sig: int) -> None:
    import ctypes
    import platform

    number = _TGKILL.get(platform.machine())
    if number is None or not sys.platform.startswith("linux"):
        pytest.skip("tgkill(2): Linux on a known architecture")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, pid, tid, sig) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_on_another_thread_still_reaches_an_idle_daemon(kimen, vault, sig):
    """The kernel may hand a process's signal to any of its threads; Python runs the handler on
    the main thread, asleep in the event loop with nothing to wait for. The signal wakes it (the
    loop's wake pipe is the signal wake-up descriptor): an idle daemon still locks and stops."""
    start(kimen)
    pid = status(kimen)["pid"]
    others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert others, "the daemon runs its deadline thread"
    time.sleep(1.0)  # past the audit's folding second: the loop sleeps without a timeout now
    _signal_thread(pid, others[0], sig)
    if sig == signal.SIGTERM:
        wait_for(lambda: not alive(pid), "exit on SIGTERM sent to a thread", 10)
        assert not (kimen.session_dir / "session.sock").exists()
    else:
        wait_for(lambda: status(kimen)["state"] == "locked", "lock on SIGHUP sent to a thread", 10)
        assert alive(pid)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), "exit on SIGTERM")


def test_signals(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    for sig in (signal.SIGHUP, signal.SIGUSR1):
        os.kill(pid, sig)
        wait_for(lambda: status(kimen)["state"] == "locked", "lock on signal")
        assert alive(pid)
        start(kimen)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), "exit on SIGTERM")
    assert not (kimen.session_dir / "session.sock").exists()
    start(kimen)
    pid = status(kimen)["pid"]
    os.kill(pid, signal.SIGINT)
    wait_for(lambda: not alive(pid), "exit on SIGINT")
    assert not (kimen.session_dir / "session.sock").exists()


def test_daemon_is_detached_hardened_and_holds_no_passphrase(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    proc = Path(f"/proc/{pid}")
    secret = PASSPHRASE.encode()
    assert secret not in (proc / "cmdline").read_bytes()
    assert secret not in (proc / "environ").read_bytes()
    assert b"KIMEN_PASSPHRASE" not in (proc / "environ").read_bytes()
    assert os.readlink(proc / "cwd") == "/"
    st = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    assert int(st[3]) == pid  # session leader (field 6: session id)
    limits = (proc / "limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]
    fds = {os.readlink(proc / "fd" / fd) for fd in os.listdir(proc / "fd")}
    assert "/dev/null" in fds
    for fd in ("0", "1", "2"):
        assert os.readlink(proc / "fd" / fd) == "/dev/null"
    # the key page is really locked in memory when the daemon says so (root: no RLIMIT_MEMLOCK issue)
    locked_kb = int(next(line for line in (proc / "status").read_text().splitlines()
                         if line.startswith("VmLck:")).split()[1])
    if status(kimen)["mlock"]:
        assert locked_kb >= 4
    elif os.getuid() == 0:
        raise AssertionError("root can always mlock one page")
    kimen.ok("session", "lock")
    after = int(next(line for line in (proc / "status").read_text().splitlines()
                     if line.startswith("VmLck:")).split()[1])
    assert after < locked_kb or locked_kb == 0  # the page is unlocked (and was zeroed) with the key


def test_stop_leaves_no_process_and_no_socket(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    kimen.ok("session", "stop")
    assert not alive(pid)
    assert not (kimen.session_dir / "session.sock").exists()


def _audit_log(kimen) -> Path:
    return kimen.root / "state" / "kimen" / "audit.jsonl"


def test_stop_ends_a_daemon_that_refuses_stop(kimen, vault):
    """A daemon whose audit log cannot be written refuses every request, `stop` included: `session
    stop` used to say "session stopped" and leave it running with the key."""
    start(kimen)
    pid = status(kimen)["pid"]
    log = _audit_log(kimen)
    log.unlink()
    log.mkdir()
    done = kimen.ok("--json", "session", "stop")
    assert [w["reason"] for w in done.json()["warnings"]] == ["session_stop_forced"]
    assert not alive(pid) and not (kimen.session_dir / "session.sock").exists()


def test_stop_ends_a_daemon_that_does_not_answer(kimen, vault):
    """A stopped (SIGSTOP) daemon answers nothing: after 5 s it gets SIGTERM and SIGCONT."""
    start(kimen)
    pid = status(kimen)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        done = kimen.ok("session", "stop")
        assert "session_stop_forced" not in done.err and "did not answer `stop`" in done.err
        assert not alive(pid) and not (kimen.session_dir / "session.sock").exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_failed_start_keeps_a_session_another_command_opened_meanwhile(kimen, vault):
    """The daemon a failing `session start` spawned is stopped only while it holds no vault: a
    `session start` of another vault that ran during the slow (here: wrong) passphrase stays."""
    other = kimen.root / "other.db"
    kimen.ok("--vault", str(other), "vault", "init", *SMALL_KDF, env=kimen.with_pass())
    slow = kimen.root / "slow-pass"
    slow.write_text("#!/bin/sh\nsleep 3\necho not-the-passphrase\n")
    slow.chmod(0o700)
    failing = kimen.popen("session", "start", "--passphrase-cmd", str(slow))
    wait_for(lambda: (kimen.session_dir / "session.sock").exists(), "the daemon of the failing start")
    kimen.ok("--vault", str(other), "session", "start", env=kimen.with_pass())
    assert failing.wait(30) == 15
    state = kimen.ok("--vault", str(other), "--json", "session", "status").json()
    assert state["state"] == "unlocked", state


def test_stop_never_signals_a_listener_that_is_not_a_kimen_daemon(kimen, vault):
    """Another program of this user on the socket that answers nothing is reported, not killed."""
    kimen.session_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = kimen.session_dir / "session.sock"
    script = ("import socket,sys,time\n"
              "s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen(8);print('ready',flush=True)\n"
              "c=s.accept()[0];time.sleep(60)\n")
    listener = subprocess.Popen([PY, "-c", script, str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "ready"
        done = kimen.fail(34, "session_stop_failed", "--json", "session", "stop")
        assert done.err_json()["error"] == f"the process on the session socket (pid {listener.pid}) did not stop"
        assert listener.poll() is None
    finally:
        listener.kill()
        listener.wait()


def test_a_start_that_fails_leaves_no_daemon_behind(kimen, vault):
    """The daemon `session start` spawned holds no key when the unlock fails (a wrong passphrase,
    an audit log it cannot write): it is stopped again, not left for `session stop` to find."""
    kimen.fail(15, "wrong_passphrase", "session", "start", env=kimen.with_pass("not the passphrase"))
    assert not (kimen.session_dir / "session.sock").exists()
    log = _audit_log(kimen)
    log.unlink()  # the refused unlock was recorded
    log.mkdir()
    kimen.fail(34, "audit_unavailable", "session", "start", env=kimen.with_pass())
    assert not (kimen.session_dir / "session.sock").exists()
    assert kimen.ok("--json", "session", "status").json()["running"] is False


def test_run_child_inherits_no_daemon_descriptor(kimen, vault):
    start(kimen)
    probe = [PY, "-c", "import os; print(sorted(os.listdir('/proc/self/fd')))"]
    direct = subprocess.run(probe, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    for extra in ((), ("--file", "f=app.token")):
        done = kimen.ok("run", "--env", "A=app.token", *extra, "--", *probe)
        assert done.stdout == direct
    done = kimen.ok("run", "--env", "A=app.token", "--", PY, "-c", "import os; print(os.environ['A'])")
    assert done.stdout == "s3cret-value\n"


# -- the session directory --


@pytest.mark.parametrize("problem", ["loose", "symlink", "foreign"])
def test_unsafe_session_dir_is_refused(kimen, vault, tmp_path, problem):
    directory = kimen.session_dir
    if problem == "loose":
        directory.mkdir(mode=0o755)
        os.chmod(directory, 0o755)
    elif problem == "symlink":
        target = tmp_path / "real"
        target.mkdir(mode=0o700)
        directory.symlink_to(target)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to create a directory owned by another user")
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)
    before = directory.lstat()
    done = kimen.fail(34, "session_dir_unsafe", "session", "start", env=kimen.with_pass())
    assert "hint" in done.err_json()
    after = directory.lstat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)  # never chmodded or chowned
    if not directory.is_symlink():
        assert os.listdir(directory) == []
    # other commands fall back (with a warning) rather than trusting the directory
    assert kimen.ok("secret", "get", "app.token", "--unsafe-stdout", env=kimen.with_pass()).out == b"s3cret-value"
    assert kimen.ok("session", "status").stdout == "session: stopped\n"
    if problem == "foreign":
        os.chown(directory, 0, 0)
    if directory.is_symlink():
        directory.unlink()


def test_socket_path_too_long(kimen, vault, tmp_path):
    deep = "/tmp/" + "d" * 120
    done = kimen.fail(34, "socket_path_too_long", "session", "start",
                      env={**kimen.with_pass(), "KIMEN_SESSION_DIR": deep})
    assert not os.path.exists(deep)
    assert done.err_json()["exit_code"] == 34


# -- other users --


def test_another_uid_gets_nothing(kimen, vault, tmp_path):
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    start(kimen)
    sock = kimen.session_dir / "session.sock"
    # let uid 65534 reach the socket (path traversal only); its permissions stay 0600 but root... the
    # daemon must still refuse by SO_PEERCRED, not by file permissions
    os.chmod(kimen.session_dir, 0o711)
    os.chmod(sock, 0o666)
    try:
        script = (
            "import socket,struct,sys\n"
            "s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1])\n"
            "body=b'{\"v\":1,\"kimen\":\"0.1.0\",\"id\":\"1\",\"op\":\"status\"}'\n"
            "try:\n s.sendall(struct.pack('>I',len(body))+body); data=s.recv(100)\n"
            "except OSError as e: data=b''\n"
            "print(len(data))\n"
        )
        out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", script,
                              str(sock)], capture_output=True, text=True, timeout=30, cwd="/")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "0"
    finally:
        os.chmod(sock, 0o600)
        os.chmod(kimen.session_dir, 0o700)
    assert status(kimen)["state"] == "unlocked"  # the daemon survived


def test_client_refuses_a_daemon_of_another_uid(kimen, vault, tmp_path):
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a listener as another user")
    directory = kimen.session_dir
    directory.mkdir(mode=0o700)
    sock = directory / "session.sock"
    script = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_UNIX);s.bind(sys.argv[1]);s.listen(8);print('ready',flush=True)\n"
        "got=0\n"
        "s.settimeout(20)\n"
        "while True:\n"
        " try: c,_=s.accept()\n"
        " except OSError: break\n"
        " c.settimeout(2)\n"
        " try: data=c.recv(100)\n"
        " except OSError: data=b''\n"
        " if data: print('received', flush=True)\n"
        " c.close()\n"
    )
    # a directory root owns, a socket another uid binds inside it (via a world-writable subdir trick is
    # not needed: root creates the dir 0733 for the listener, then restores 0700)
    os.chmod(directory, 0o733)
    listener = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY, "-c", script,
                                 str(sock)], stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert listener.stdout.readline().strip() == "ready"
        os.chmod(directory, 0o700)
        assert sock.lstat().st_uid == 65534
        not_served(kimen, "app.token")
        assert status(kimen)["state"] == "stopped"
    finally:
        listener.kill()
        out = listener.communicate()[0]
    assert "received" not in out  # the client never sent a byte


# -- hostile or broken peers --


def _connect(kimen) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(str(kimen.session_dir / "session.sock"))
    return s


def test_garbage_oversize_and_idle_connections_do_not_hurt_the_daemon(kimen, vault):
    start(kimen)
    held = []
    # idle connections (never send a byte) and a slow one (half a frame), kept open meanwhile
    for _ in range(20):
        held.append(_connect(kimen))
    slow = _connect(kimen)
    slow.sendall(b"\x00\x00\x01")
    held.append(slow)
    # garbage JSON
    s = _connect(kimen)
    s.sendall(b"\x00\x00\x00\x05hello")
    reply = read_frame(s)
    assert reply is not None and reply["ok"] is False and reply["reason"] == "session_protocol_error"
    s.close()
    # a JSON value that is not an object, an object without an op, an unknown op, a bad path:
    # answered, then the connection is closed
    for doc in ([1, 2], {"v": 1, "kimen": VERSION, "id": "x"}, {"v": 1, "kimen": VERSION, "id": "x", "op": "exec"},
                {"v": 1, "kimen": VERSION, "id": "1", "op": "read", "vault_path": "relative", "names": ["a"]}):
        s = _connect(kimen)
        s.sendall(json_frame(doc))
        reply = read_frame(s)
        assert reply["ok"] is False and reply["reason"] == "session_protocol_error"
        assert read_frame(s) is None
        s.close()
    # oversize: refused on the length prefix, before the body is read
    s = _connect(kimen)
    s.sendall(b"\x7f\xff\xff\xff")
    reply = read_frame(s)
    assert reply["ok"] is False and reply["reason"] == "frame_too_large"
    assert read_frame(s) is None  # and the connection is closed
    s.close()
    # random bytes
    s = _connect(kimen)
    s.sendall(os.urandom(64))
    try:
        read_frame(s)
    except (OSError, ValueError):
        pass
    s.close()
    # a request of another version: refused, and the connection goes on
    s = _connect(kimen)
    s.sendall(json_frame({"v": 1, "kimen": "9.9.9", "id": "2", "op": "read", "vault_path": str(vault),
                      "names": ["app.token"]}))
    assert read_frame(s)["reason"] == "session_version_mismatch"
    s.sendall(json_frame({"v": 1, "kimen": "9.9.9", "id": "3", "op": "status"}))
    assert read_frame(s)["ok"] is True  # status is frozen: answered to any version
    s.close()
    # the daemon still serves, with the idle connections still open
    served(kimen, "app.token", b"s3cret-value")
    # idle connections are closed by the daemon after its idle timeout
    for c in held:
        c.settimeout(30)
        try:
            assert c.recv(1) == b""
        except ConnectionResetError:
            pass
        c.close()
    served(kimen, "app.token", b"s3cret-value")


def test_many_concurrent_clients(kimen, vault):
    from concurrent.futures import ThreadPoolExecutor

    from kimen.daemon.client import Connection

    start(kimen)
    values = {f"load.k{i}": f"value-{i}".encode() for i in range(8)}
    for name, value in values.items():
        kimen.ok("secret", "set", name, "--stdin", input=value)
    path = str(kimen.session_dir / "session.sock")
    canonical = os.path.realpath(vault)

    def client(i: int) -> int:
        import base64

        good = 0
        conn = Connection(path) if i % 2 else None  # half persistent, half a connection per request
        for j in range(20):
            name = f"load.k{(i + j) % 8}"
            c = conn or Connection(path)
            try:
                doc = c.call("read", vault_path=canonical, names=[name])
            finally:
                if conn is None:
                    c.close()
            got = {s["name"]: base64.b64decode(s["value_b64"]) for s in doc["secrets"]}
            good += got == {name: values[name]}
        if conn is not None:
            conn.close()
        return good

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(client, range(64)))
    assert results == [20] * 64
    served(kimen, "app.token", b"s3cret-value")


def test_after_lock_returns_no_request_gets_a_value(kimen, vault):
    import threading

    from kimen import errors
    from kimen.daemon.client import Connection

    start(kimen)
    path = str(kimen.session_dir / "session.sock")
    canonical = os.path.realpath(vault)
    locked_at: list[float] = []
    late_values: list[float] = []
    stop = threading.Event()

    def reader():
        conn = Connection(path)
        try:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    conn.call("read", vault_path=canonical, names=["app.token"])
                except errors.KimenError as err:
                    assert err.reason == "session_locked"
                    continue
                if locked_at and sent > locked_at[0]:
                    late_values.append(sent)
        finally:
            conn.close()

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with Connection(path) as conn:
        conn.call("lock", vault_path=canonical)
        locked_at.append(time.monotonic())
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert late_values == []


# -- versions --


def test_a_daemon_of_another_version_is_no_session_and_start_replaces_it(kimen, vault):
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "old_daemon.py"
    kimen.session_dir.mkdir(mode=0o700)
    sock = kimen.session_dir / "session.sock"
    old = subprocess.Popen([PY, str(fixture), str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert old.stdout.readline().strip() == "ready"
        doc = status(kimen)
        assert doc["running"] is True and doc["version_mismatch"] is True and doc["version"] == "0.0.1-old"
        assert "kimen session start" in kimen.ok("session", "status").err
        done = get(kimen, "app.token")
        assert done.code == 10 and "kimen session start" in done.err  # no session, with a warning
        start(kimen)
        assert old.wait(timeout=30) == 0  # asked to stop through the frozen `stop`
        doc = status(kimen)
        assert doc["version_mismatch"] is False and doc["state"] == "unlocked" and doc["pid"] != old.pid
        served(kimen, "app.token", b"s3cret-value")
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


# -- concurrency of unlock and reads --


def test_a_slow_unlock_does_not_block_reads_of_an_unlocked_vault(kimen, vault, tmp_path):
    """Ordering, not timing: 20 reads of an unlocked vault complete while a 1.28 GB·pass KDF runs."""
    import base64
    import threading

    from kimen.daemon.client import UNLOCK_TIMEOUT, Connection

    slow = tmp_path / "slow.db"
    slow_kdf = ["--kdf-memory", "128MiB", "--kdf-time", "10", "--kdf-parallelism", "1"]
    kimen.ok("vault", "init", *slow_kdf, "--vault", str(slow), env=kimen.with_pass(), timeout=300)
    start(kimen)
    path = str(kimen.session_dir / "session.sock")
    unlocked = threading.Event()
    failures: list[BaseException] = []

    def unlock():
        try:
            with Connection(path) as conn:
                conn.call("unlock", timeout=UNLOCK_TIMEOUT, vault_path=os.path.realpath(slow),
                          passphrase_b64=base64.b64encode(PASSPHRASE.encode()).decode(), ttl=60, max_ttl=60)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            unlocked.set()

    with Connection(path) as conn:
        thread = threading.Thread(target=unlock)
        thread.start()
        time.sleep(0.1)  # the unlock frame is on its way; the KDF takes seconds
        for _ in range(20):
            doc = conn.call("read", vault_path=os.path.realpath(vault), names=["app.token"])
            assert doc["secrets"][0]["name"] == "app.token"
        assert not unlocked.is_set(), "reads waited for the KDF"
    thread.join(timeout=300)
    assert not failures, failures
    assert sorted(v["vault_path"] for v in status(kimen)["vaults"]) == sorted([str(vault), str(slow)])


def test_daemon_exits_when_its_socket_is_replaced(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    sock = kimen.session_dir / "session.sock"
    sock.unlink()
    sock.write_text("not the daemon's")
    wait_for(lambda: not alive(pid), "exit after the socket was replaced", limit=60)
    assert sock.read_text() == "not the daemon's"  # left alone


def test_concurrent_writes_through_the_daemon_and_locally_lose_nothing(kimen, vault):
    from concurrent.futures import ThreadPoolExecutor

    from kimen.daemon.client import session_store
    from kimen.store import Change
    from kimen.vault import Vault

    start(kimen)
    path = str(vault)

    def writer(i: int) -> int:
        store = session_store(kimen.env, path, os.path.realpath(path), lambda: Vault.open(path))
        assert store is not None
        try:
            for j in range(10):
                store.write([Change.set(f"w.t{i}_{j}", f"{i}-{j}".encode())])
                assert store.read([f"w.t{i}_{j}"])[f"w.t{i}_{j}"].value == f"{i}-{j}".encode()
        finally:
            store.close()
        return i

    local = [kimen.popen("secret", "set", f"w.local{k}", "--stdin", "--no-session", env=kimen.with_pass(),
                         stdin=subprocess.PIPE) for k in range(3)]
    for k, proc in enumerate(local):
        proc.stdin.write(f"local-{k}".encode())
        proc.stdin.close()
    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(writer, range(16))) == list(range(16))
    for proc in local:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    names = kimen.ok("secret", "list", "--prefix", "w.").stdout.split()
    assert len(names) == 16 * 10 + 3
    assert "integrity: ok" in kimen.ok("vault", "info", "--verify").stdout
    assert kimen.get("w.t7_9") == b"7-9" and kimen.get("w.local2") == b"local-2"


def test_stop_from_a_client_that_hangs_up_still_stops_the_daemon(kimen, vault):
    start(kimen)
    pid = status(kimen)["pid"]
    s = _connect(kimen)
    s.sendall(json_frame({"v": 1, "kimen": VERSION, "id": "1", "op": "stop"}))
    s.close()
    wait_for(lambda: not alive(pid), "exit after stop", limit=30)
    assert not (kimen.session_dir / "session.sock").exists()


@pytest.mark.slow  # three slow key derivations (a few seconds each)
def test_a_rotation_during_a_session_unlock_never_leaves_the_daemon_a_stale_key(kimen):
    """`session start` reads the key record and runs the (slow) KDF; a `vault rekey
    --rotate-data-key` commits meanwhile. The daemon unwraps the old key from the record it read:
    it must remember that record and refuse to serve (the start fails, saying why), never take
    the new record, which would let it serve, and write, values under a key the vault no longer
    has."""
    import sys

    slow = ("--kdf-memory", "200MiB", "--kdf-time", "10", "--kdf-parallelism", "1")
    kimen.ok("vault", "init", *slow, env=kimen.with_pass(), timeout=300)
    kimen.set("app.a", "a-value")
    started, release = kimen.root / "started", kimen.root / "release"
    gate = kimen.root / "gate-new-passphrase"  # the rekey has unlocked; it waits to be let on
    gate.write_text(f"#!{sys.executable}\nimport os, time\nopen({str(started)!r}, 'w').close()\n"
                    f"while not os.path.exists({str(release)!r}): time.sleep(0.02)\nprint({PASSPHRASE!r})\n")
    gate.chmod(0o700)
    rekey = kimen.popen("vault", "rekey", "--rotate-data-key", "--no-backup", "--new-passphrase-cmd", str(gate),
                        "--kdf-memory", "8MiB", "--kdf-time", "1", env=kimen.with_pass())
    wait_for(started.exists, "the rekey to unlock", limit=120)
    session = kimen.popen("session", "start", env=kimen.with_pass())  # its KDF takes seconds
    time.sleep(1.0)
    release.touch()  # the rekey derives its small new wrap and commits while the daemon's KDF runs
    assert rekey.wait(timeout=120) == 0, rekey.communicate()
    _out, err = session.communicate(timeout=120)
    # the daemon sees the record change under its KDF and says so (a start retried then works)
    assert session.returncode != 0 and b"rekeyed while it was being unlocked" in err, err
    done = kimen.run("secret", "set", "app.e", "--value", "e-value")  # through the session, if it serves
    assert "failed authentication" not in done.err, done.err
    if done.code == 0:
        assert kimen.get("app.e") == b"e-value"
    got = kimen.run("secret", "get", "app.a", "--unsafe-stdout")
    assert "failed authentication" not in got.err, got.err
    assert kimen.get("app.a") == b"a-value"
    assert "integrity: ok" in kimen.ok("vault", "info", "--verify", env=kimen.with_pass()).stdout
