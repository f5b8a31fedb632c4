"""The fs transport: the remote contract on a real directory, plus what only fs has — the lock file
and its holder, modes in plain and setgid directories, history and in-flight files, symlinks and
FIFOs where the head should be, the mount-table warning."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from kimen import errors
from kimen.sync.base import Published
from kimen.sync.fs import HISTORY_KEEP, FsTransport, head_path, mount_warning
from kimen.sync.transport import MAX_HEAD_BYTES, PAUSE_VARIABLE
from tests.remote_contract import Remote, RemoteContract, make_head, publish, start_worker, wait_paused


class FsRemote(Remote):
    kind = "fs"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.dir = tmp / "team"
        self.dir.mkdir()
        self.head = self.dir / "vault.age"

    def transport(self, member: str = "ana") -> FsTransport:
        return FsTransport(str(self.dir))

    def spec(self, member: str) -> dict[str, Any]:
        return {"kind": "fs", "path": str(self.dir)}

    def plant(self, data: bytes) -> None:
        self.head.write_bytes(data)

    def plant_huge(self) -> None:
        with open(self.head, "wb") as file:
            file.truncate(MAX_HEAD_BYTES + 1)  # sparse: no disk used

    def plant_directory(self) -> None:
        self.head.mkdir()

    def rewind(self, published: Published, data: bytes) -> None:
        tmp = self.dir / "copy"
        tmp.write_bytes(data)
        tmp.rename(self.head)


@pytest.fixture
def remote(tmp_path: Path) -> FsRemote:
    return FsRemote(tmp_path)


class TestFsContract(RemoteContract):
    def assert_no_debris(self, remote: Remote) -> None:
        assert isinstance(remote, FsRemote)
        assert remote.transport().lock_holder() is None
        assert (remote.dir / "vault.age.lock").exists()  # never removed


# -- layout --------------------------------------------------------------------------------------


def test_the_head_is_vault_age_in_a_directory_or_the_age_file_named(tmp_path: Path):
    assert head_path(str(tmp_path)) == str(tmp_path / "vault.age")
    assert head_path(str(tmp_path / "team.age")) == str(tmp_path / "team.age")
    assert head_path(str(tmp_path / "a" / ".." / "b")) == str(tmp_path / "b" / "vault.age")
    transport = FsTransport(str(tmp_path / "team.age"))
    publish(transport, make_head("1"), None, 1)
    assert sorted(os.listdir(tmp_path)) == ["team.age", "team.age.lock"]


def test_a_missing_remote_directory_is_an_error_not_an_empty_remote(tmp_path: Path):
    transport = FsTransport(str(tmp_path / "unmounted"))
    for call in (transport.read_head, transport.probe, lambda: transport.publish(
            make_head("1"), None, seq=1, by="ana", expected_seq=None)):
        with pytest.raises(errors.SyncFailed, match="does not exist"):
            call()
    assert not (tmp_path / "unmounted").exists()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize(("dir_mode", "file_mode", "history_mode"), [
    (0o755, 0o644, 0o755),
    (0o2775, 0o664, 0o2775),  # a setgid directory: a team sharing through a group
])
def test_modes_follow_the_remote_directory_whatever_the_umask(remote: FsRemote, dir_mode: int, file_mode: int,
                                                              history_mode: int):
    os.chmod(remote.dir, dir_mode)
    old = os.umask(0o077)
    try:
        transport = remote.transport()
        publish(transport, make_head("1"), None, 1)
        publish(transport, make_head("2"), transport.read_head(), 2)
    finally:
        os.umask(old)
    group = os.stat(remote.dir).st_gid
    for path in (remote.head, remote.dir / "vault.age.lock", remote.dir / "vault.age.history" / "000000000001.age"):
        assert _mode(path) == file_mode and os.stat(path).st_gid == group, path
    assert _mode(remote.dir / "vault.age.history") == history_mode


def test_history_keeps_the_last_64_replaced_heads_as_hard_links(remote: FsRemote):
    transport = remote.transport()
    heads = [make_head(str(i)) for i in range(HISTORY_KEEP + 3)]
    current = None
    for seq, data in enumerate(heads, 1):
        replaced = os.stat(remote.head).st_ino if current else None
        publish(transport, data, current, seq)
        current = transport.read_head()
    last = len(heads) - 1
    kept = sorted(os.listdir(remote.dir / "vault.age.history"))
    assert kept == [f"{seq:012d}.age" for seq in range(last - HISTORY_KEEP + 1, last + 1)]
    assert transport.history(last) == heads[-2] and transport.history(1) is None
    assert os.stat(remote.dir / "vault.age.history" / f"{last:012d}.age").st_ino == replaced  # a link, not a copy


def test_an_existing_history_entry_is_kept(remote: FsRemote):
    transport = remote.transport()
    first = make_head("1")
    publish(transport, first, None, 1)
    publish(transport, make_head("2"), transport.read_head(), 2)
    # a publish claiming that the head it replaces is seq 1 again does not overwrite history 1
    publish(transport, make_head("3"), transport.read_head(), 2)
    assert transport.history(1) == first


def test_old_in_flight_files_are_swept_by_the_next_push_young_ones_kept(remote: FsRemote):
    old = remote.dir / "vault.age.tmp.0123456789abcdef"
    young = remote.dir / "vault.age.tmp.fedcba9876543210"
    other = remote.dir / "vault.age.tmp.not-ours"
    for path in (old, young, other):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 3601, time.time() - 3601))
    publish(remote.transport(), make_head("1"), None, 1)
    assert not old.exists() and young.exists() and other.exists()
    assert remote.transport().sweep_temp_files(0) == [str(young)]


# -- the lock ------------------------------------------------------------------------------------


def test_a_held_lock_is_remote_lock_present_naming_its_holder_and_dies_with_it(remote: FsRemote):
    transport = remote.transport()
    first = publish(transport, make_head("1"), None, 1)
    proc = start_worker(remote, "bo", make_head("2"), 2, env={PAUSE_VARIABLE: "after_write"})
    try:
        wait_paused(proc, "after_write")
        assert f"pid={proc.pid}" in (transport.lock_holder() or "")
        started = time.monotonic()
        waiting = FsTransport(str(remote.dir), lock_wait=0.6)
        with pytest.raises(errors.RemoteLockPresent) as info:
            waiting.publish(make_head("x"), first.rev, seq=2, by="ana", expected_seq=1)
        assert 0.5 <= time.monotonic() - started < 5
        assert info.value.fields["lock_path"] == str(remote.dir / "vault.age.lock")
        assert f"pid={proc.pid}" in info.value.fields["lock_owner"] and "user=" in info.value.fields["lock_owner"]
        assert info.value.fields["recommended_action"] == "wait_or_sync_unlock"
    finally:
        proc.kill()
        proc.wait()
    assert transport.lock_holder() is None
    with transport.locked(wait=0):
        pass
    assert (remote.dir / "vault.age.lock").read_bytes() == b""  # the holder lines go with the holder


def test_the_lock_is_retried_until_the_wait_ends(remote: FsRemote):
    a, b = FsTransport(str(remote.dir)), FsTransport(str(remote.dir))
    with a.locked(wait=0):
        started = time.monotonic()
        with pytest.raises(errors.RemoteLockPresent), b.locked(wait=0.6):
            pass
        assert 0.5 <= time.monotonic() - started < 3
        holder = b.lock_holder()
        assert holder is not None and f"pid={os.getpid()}" in holder and "created_at=" in holder
    with b.locked(wait=0):
        assert a.lock_holder() is not None


def test_the_lock_holder_lines_are_shown_printable_only(remote: FsRemote):
    lock = remote.dir / "vault.age.lock"
    lock.write_bytes(b"pid=1\x1b[31m\nhost=h o s t\nuser=\x07eve\nevil=rm -rf\ncreated_at=2026-01-01T00:00:00Z\n")
    a = FsTransport(str(remote.dir))
    import fcntl

    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert a.lock_holder() == "pid=1[31m host=host user=eve created_at=2026-01-01T00:00:00Z"
    finally:
        os.close(fd)


# -- hostile locations ---------------------------------------------------------------------------


def test_a_symlinked_head_is_neither_read_nor_replaced(remote: FsRemote, tmp_path: Path):
    target = tmp_path / "elsewhere.age"
    target.write_bytes(make_head("theirs"))
    remote.head.symlink_to(target)
    transport = remote.transport()
    with pytest.raises(errors.SyncFailed, match="symlink"):
        transport.read_head()
    with pytest.raises(errors.SyncFailed, match="symlink"):
        transport.publish(make_head("1"), None, seq=1, by="ana", expected_seq=None)
    assert remote.head.is_symlink() and target.read_bytes().startswith(b"age-encryption.org/v1")


def test_a_symlinked_lock_file_is_refused(remote: FsRemote, tmp_path: Path):
    target = tmp_path / "victim"
    (remote.dir / "vault.age.lock").symlink_to(target)
    with pytest.raises(errors.SyncFailed, match="symlink"):
        remote.transport().publish(make_head("1"), None, seq=1, by="ana", expected_seq=None)
    assert not target.exists()


def test_a_fifo_head_is_refused_without_blocking(remote: FsRemote):
    os.mkfifo(remote.head)
    started = time.monotonic()
    with pytest.raises(errors.SyncFailed, match="not a regular file"):
        remote.transport().read_head()
    assert time.monotonic() - started < 5


def test_a_symlinked_history_directory_is_not_written_through(remote: FsRemote, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (remote.dir / "vault.age.history").symlink_to(elsewhere)
    transport = remote.transport()
    publish(transport, make_head("1"), None, 1)
    publish(transport, make_head("2"), transport.read_head(), 2)
    assert os.listdir(elsewhere) == [] and transport.history(1) is None


# -- probe ---------------------------------------------------------------------------------------


def test_probe_checks_lock_and_rename_and_leaves_nothing_but_the_lock(remote: FsRemote):
    report = remote.transport().probe()
    assert report.location == str(remote.head)
    assert sorted(os.listdir(remote.dir)) == ["vault.age.lock"]


MOUNTS = """\
sysfs /sys sysfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/team nfs4 rw 0 0
server:/old /mnt/old nfs rw,vers=3 0 0
//nas/share /mnt/smb cifs rw 0 0
me@host:/x /mnt/ssh fuse.sshfs rw 0 0
/dev/sdb1 /mnt/ssh/local ext4 rw 0 0
tmpfs /mnt/with\\040space tmpfs rw 0 0
"""


@pytest.mark.parametrize(("path", "fstype"), [
    ("/home/ana/team", None),
    ("/mnt/team/kimen", None),
    ("/mnt/old/kimen", "nfs"),
    ("/mnt/smb", "cifs"),
    ("/mnt/ssh/kimen", "fuse.sshfs"),
    ("/mnt/ssh/local/kimen", None),
    ("/mnt/sshx", None),
    ("/mnt/with space/x", None),
])
def test_the_mount_table_warning_names_network_and_fuse_filesystems_but_nfs4(path: str, fstype: str | None):
    warning = mount_warning(path, MOUNTS)
    if fstype is None:
        assert warning is None
    else:
        assert warning is not None and f"a {fstype} filesystem" in warning and "docs/sync.md" in warning
