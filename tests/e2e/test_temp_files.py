"""Temp files of atomic writes: `<name>.kimen-tmp-<16 hex>`, held under `flock` by their writer, and
removed by the next atomic write to the same directory once their writer is dead (a SIGKILL during
`envfile` or `render` leaves no plaintext behind for long). A live writer's file is never touched,
nor a symlink, nor another user's file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLAINTEXT = b"PLAINTEXT-of-a-dead-writer"


def _dead_temp(directory: Path, name: str, data: bytes = PLAINTEXT, age: float = 0) -> Path:
    """A temp file as a writer killed mid-write leaves it: no process holds its lock."""
    path = directory / f"{name}.kimen-tmp-{os.urandom(8).hex()}"
    path.write_bytes(data)
    path.chmod(0o600)
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path


def _temps(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.kimen-tmp-*"))


def test_envfile_removes_dead_writers_temp_files_and_names_its_own(kimen):
    out = kimen.cwd / ".env"
    dead = _dead_temp(kimen.cwd, ".env")
    empty_old = _dead_temp(kimen.cwd, "other", b"", age=3600)
    empty_new = _dead_temp(kimen.cwd, "fresh", b"")  # maybe a writer between create and lock: kept
    unrelated = kimen.cwd / "notes.kimen-tmp-zz"  # not kimen's pattern
    unrelated.write_text("mine")
    kimen.ok("envfile", "--env", "A=const:x", "--out", str(out))
    assert out.read_text() == "A=x\n"
    assert not dead.exists() and not empty_old.exists()
    assert empty_new.exists() and unrelated.read_text() == "mine"


@pytest.mark.parametrize("target", ["render", "files-dir"])
def test_render_and_files_dir_sweep_every_directory_they_write(kimen, target):
    out = kimen.root / "out"
    (out / "tls").mkdir(parents=True, mode=0o700)
    out.chmod(0o700)
    dead_top = _dead_temp(out, "token")
    dead_sub = _dead_temp(out / "tls", "cert.pem")
    files = ["--file", "token=const:t", "--file", "tls/cert.pem=const:c"]
    if target == "render":
        kimen.ok("render", *files, "--dir", str(out))
    else:
        kimen.ok("run", *files, "--files-dir", str(out), "--", "true")
    assert (out / "token").read_text() == "t" and (out / "tls" / "cert.pem").read_text() == "c"
    assert not dead_top.exists() and not dead_sub.exists()
    assert _temps(out) == [] and _temps(out / "tls") == []


def test_a_really_killed_writer_leaves_a_temp_the_next_write_removes(kimen):
    """kimen's own writer, SIGKILLed after writing plaintext into its locked temp file."""
    code = ("import os, sys\nfrom kimen import fsutil\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
            "tmp, t = fsutil._locked_temp(fd, '.env')\n"
            f"os.write(t, {PLAINTEXT!r})\nos.kill(os.getpid(), 9)\n")
    done = subprocess.run([sys.executable, "-c", code, str(kimen.cwd)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    [left] = _temps(kimen.cwd)
    assert left.name.startswith(".env.kimen-tmp-") and left.read_bytes() == PLAINTEXT
    assert kimen.ok("envfile", "--env", "A=const:x", "--out", ".env").code == 0
    assert _temps(kimen.cwd) == []


def test_a_live_writers_locked_temp_is_left_alone(kimen):
    live = kimen.cwd / f".env.kimen-tmp-{os.urandom(8).hex()}"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'half')\nprint('locked', flush=True)\ntime.sleep(60)\n",
         str(live)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        kimen.ok("envfile", "--env", "A=const:x", "--out", ".env")
        assert live.read_bytes() == b"half"
    finally:
        holder.kill()
        holder.wait()
    kimen.ok("envfile", "--env", "A=const:y", "--out", ".env")  # its writer is gone now
    assert not live.exists()


def test_symlinks_and_other_users_files_are_never_touched(kimen, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = kimen.cwd / f".env.kimen-tmp-{os.urandom(8).hex()}"
    link.symlink_to(victim)
    foreign = _dead_temp(kimen.cwd, "x", age=3600)
    chowned = False
    if os.getuid() == 0:
        os.chown(foreign, 12345, 12345)
        chowned = True
    kimen.ok("envfile", "--env", "A=const:x", "--out", ".env")
    assert link.is_symlink() and victim.read_bytes() == b"keep"
    assert foreign.exists() == chowned


@pytest.mark.slow
def test_sigkill_of_a_real_envfile_mid_write(kimen, tmp_path):
    """The real command, killed while its temp file exists (caught by polling; skipped if the
    machine never lets the poll see the short window)."""
    kimen.init_vault()
    big = os.urandom(700 * 1024).hex()[: 1024 * 1024 - 8]  # a large value makes the write window longer
    kimen.set("big", big)
    for _ in range(30):
        proc = kimen.popen("envfile", "--env", "BIG=big", "--format", "json", "--out", ".env.json",
                           env=kimen.with_pass())
        caught = None
        while proc.poll() is None and caught is None:
            found = _temps(kimen.cwd)
            if found:
                os.kill(proc.pid, signal.SIGKILL)
                caught = found
        proc.wait()
        if caught and _temps(kimen.cwd):
            break
    else:
        pytest.skip("the write window was never caught by the poll on this machine")
    kimen.ok("envfile", "--env", "A=const:x", "--out", ".env")
    assert _temps(kimen.cwd) == []
