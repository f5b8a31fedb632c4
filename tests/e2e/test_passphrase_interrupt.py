"""Ctrl-C while a passphrase command runs (`--passphrase-cmd`, the configured `exec` unlock,
`--new-passphrase-cmd`) ends that command too: kimen exits 130 and leaves no orphan behind. The
command here ignores SIGINT, as tools that read a terminal often do, so only kimen can end it; the
signal goes to kimen alone (`kill -INT`) and to its whole process group (a terminal's Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tests.conftest import wait_for

PASS = {"KIMEN_PASSPHRASE": "correct horse battery staple"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead: only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _interrupt(proc, child: int, to_group: bool, what: str) -> tuple[bytes, bytes]:
    """SIGINT to kimen alone or to its group (a terminal's Ctrl-C); kimen exits 130 and `child`
    is gone within 5 s. Returns kimen's (stdout, stderr)."""
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and b"interrupted" in err, err
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), f"{what} outlived kimen"
    return out, err


@pytest.fixture
def slow_command(kimen):
    """A passphrase command that ignores SIGINT, writes its pid, then sleeps."""
    pid_file = kimen.root / "cmd.pid"
    script = kimen.root / "slow-pass"
    script.write_text(f"#!{sys.executable}\n"
                      "import os, signal, sys, time\n"
                      "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                      f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                      "time.sleep(120)\n"
                      "print('pw')\n")
    script.chmod(0o700)
    started: list[int] = []
    yield script, pid_file, started
    for pid in started:  # the fix's absence must not leave a sleeper behind either
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("to_group", [False, True], ids=["kill-kimen", "ctrl-c-group"])
@pytest.mark.parametrize("source", ["passphrase-cmd", "unlock-exec", "new-passphrase-cmd"])
def test_interrupt_ends_the_passphrase_command(kimen, slow_command, source, to_group):
    script, pid_file, started = slow_command
    kimen.init_vault()
    env: dict[str, str] = {}
    if source == "passphrase-cmd":
        argv = ["vault", "info", "--verify", "--passphrase-cmd", str(script)]
    elif source == "unlock-exec":
        kimen.ok("config", "unlock", "set", "exec", "--", str(script))
        argv = ["vault", "info", "--verify"]
    else:
        argv = ["vault", "rekey", "--new-passphrase-cmd", str(script)]
        env = PASS
    proc = kimen.popen(*argv, "--json", env=env)
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the passphrase command to start"))
    started.append(child)
    assert _alive(child)
    out, err = _interrupt(proc, child, to_group, "the passphrase command")
    assert json.loads(err)["reason"] == "interrupted" and out == b""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="descendants are found through /proc (Linux)")
@pytest.mark.parametrize("to_group", [False, True], ids=["kill-kimen", "ctrl-c-group"])
def test_interrupt_ends_what_a_wrapper_script_started(kimen, slow_command, to_group):
    """The passphrase command is a shell script whose own child does the waiting (a wrapper around
    `pass`, `op`, `gpg`): the shell dies of kimen's SIGTERM at once, and its child must not be left
    running on its own."""
    sleeper, pid_file, started = slow_command
    wrapper = kimen.root / "wrapper"
    wrapper.write_text(f"#!/bin/sh\n{sleeper} 2>/dev/null\n")
    wrapper.chmod(0o700)
    kimen.init_vault()
    proc = kimen.popen("vault", "info", "--verify", "--passphrase-cmd", str(wrapper), "--json")
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the wrapped command to start"))
    started.append(child)
    out, err = _interrupt(proc, child, to_group, "the wrapper's child")
    assert out == b"" and json.loads(err)["reason"] == "interrupted", err


@pytest.mark.parametrize("to_group", [False, True], ids=["kill-kimen", "ctrl-c-group"])
@pytest.mark.parametrize("command", ["run", "envfile"])
def test_interrupt_ends_an_exec_source(kimen, slow_command, command, to_group):
    """An `exec:` source of a profile is ended the same way (and what it started): it must not run
    on after `kimen run` or `envfile` exited 130."""
    script, pid_file, started = slow_command
    wrapper = kimen.root / "wrapper"
    wrapper.write_text(f"#!/bin/sh\n{script} 2>/dev/null\n")
    wrapper.chmod(0o700)
    argv = ["run", "--env", f"A=exec:{wrapper}", "--", "true"] if command == "run" else \
        ["envfile", "--env", f"A=exec:{wrapper}", "--out", str(kimen.root / "x.env")]
    proc = kimen.popen(*argv, "--json")
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the exec: source to start"))
    started.append(child)
    _interrupt(proc, child, to_group, "the exec: source")
