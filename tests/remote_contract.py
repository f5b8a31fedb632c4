"""The remote contract: one suite that every transport passes (keyring's habit, like
tests/store_contract.py).

Subclass `RemoteContract` and provide a `remote` fixture yielding a `Remote`: an empty location
plus the means to reach it as several members and to plant what no transport would write. Heads
are real age files (the transport checks parse their headers); publishers that race or are killed
run as separate processes (`tests/remote_worker.py`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kimen import errors
from kimen.bundle import age, keys
from kimen.sync.base import HeadRev, LostRace, Published, RemoteHead, Transport, remote_rev
from kimen.sync.transport import MAX_HEAD_BYTES, PAUSE_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")

_RECIPIENT: list[Any] = []
T = TypeVar("T")


def make_head(label: str) -> bytes:
    """A real age file (what a head is on the wire); its payload is only a label."""
    if not _RECIPIENT:
        _RECIPIENT.append(keys.parse_recipient(keys.generate()[0].recipient or "").obj)
    return age.encrypt(f"head {label}".encode(), _RECIPIENT)


class Remote:
    """A remote location under test. Subclasses implement the abstract parts."""

    kind = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp

    def transport(self, member: str = "ana") -> Transport:
        """The transport as `member` sees it (each member has their own caches)."""
        raise NotImplementedError

    def spec(self, member: str) -> dict[str, Any]:
        """What tests/remote_worker.py needs to build the same transport."""
        raise NotImplementedError

    def plant(self, data: bytes) -> None:
        """Put `data` where the head is, as a hostile or careless writer would (no transport)."""
        raise NotImplementedError

    def plant_huge(self) -> None:
        """A head over the size limit."""
        raise NotImplementedError

    def plant_directory(self) -> None:
        """A directory where the head file should be."""
        raise NotImplementedError

    def rewind(self, published: Published, data: bytes) -> None:
        """Make the remote show an older head again (fs: a copy over it; git: a force push)."""
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp / "home"),
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def start_worker(remote: Remote, member: str, head: bytes, seq: int, go: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    path = remote.tmp / f"head-{member}-{time.monotonic_ns()}.{seq}"
    path.write_bytes(head)
    args = [sys.executable, "-m", "tests.remote_worker", json.dumps(remote.spec(member)), str(path)]
    if go is not None:
        args.append(str(go))
    return subprocess.Popen(args, cwd=ROOT, env={**remote.worker_env(), **(env or {})}, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_paused(proc: subprocess.Popen[str], point: str) -> None:
    """Until the worker stopped itself at `point` (it says so on stderr first)."""
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        assert line, f"worker ended before pausing at {point}: {proc.wait()} {proc.stderr.read()}"
        if line.strip() == f"kimen-test-paused {point}":
            break
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the line is written just before SIGSTOP
        with open(f"/proc/{proc.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.005)
    raise AssertionError("worker did not stop")


def paused_publish(remote: Remote, point: str, head: bytes, seq: int,
                   meanwhile: Callable[[], T]) -> tuple[dict[str, Any], T]:
    """A worker publishing `head` stops at `point`; `meanwhile()` runs; the worker goes on. Its
    result and what `meanwhile` returned."""
    proc = start_worker(remote, "bo", head, seq, env={PAUSE_VARIABLE: point})
    try:
        wait_paused(proc, point)
        done = meanwhile()
        os.kill(proc.pid, signal.SIGCONT)
        return result_of(proc), done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The worker's one JSON line (its `ready` line may have been read already)."""
    out, err = proc.communicate(timeout=60)
    lines = [line for line in out.splitlines() if not line.startswith("ready")]
    assert proc.returncode == 0 and len(lines) == 1, (out, err)
    return json.loads(lines[0])


def publish(transport: Transport, data: bytes, expected: RemoteHead | None, seq: int) -> Published:
    result = transport.publish(data, expected.rev if expected else None, seq=seq, by="ana",
                               expected_seq=seq - 1 if expected else None)
    assert isinstance(result, Published), result
    assert result.rev == remote_rev(data)
    return result


class RemoteContract:
    # -- publish and read back ---------------------------------------------------------------------

    def test_an_empty_location_has_no_head(self, remote: Remote):
        transport = remote.transport()
        assert transport.read_head() is None
        assert transport.history(1) is None
        assert transport.probe().location == transport.location

    def test_publish_then_every_member_reads_it_back(self, remote: Remote):
        first, second = make_head("1"), make_head("2")
        ana, bo = remote.transport("ana"), remote.transport("bo")
        published = publish(ana, first, None, 1)
        for reader in (ana, bo):
            head = reader.read_head()
            assert head is not None and head.data == first and head.rev == published.rev
        publish(bo, second, bo.read_head(), 2)
        head = ana.read_head()
        assert head is not None and head.data == second

    def test_head_rev_is_the_rev_and_commit_read_head_gives(self, remote: Remote):
        """`sync status`'s read: the current head's rev and commit, whoever published it."""
        ana, bo = remote.transport("ana"), remote.transport("bo")
        assert ana.head_rev() is None
        published = publish(ana, make_head("1"), None, 1)
        for reader in (ana, bo):
            assert reader.head_rev() == HeadRev(published.rev, published.commit)
        second = publish(bo, make_head("2"), bo.read_head(), 2)
        for reader in (ana, bo):  # a new head is seen at once, by the pusher and by the others
            assert reader.head_rev() == HeadRev(second.rev, second.commit)
            head = reader.read_head()
            assert head is not None and (head.rev, head.commit) == (second.rev, second.commit)

    def test_head_rev_refuses_hostile_heads_like_read_head(self, remote: Remote):
        remote.plant(b"not an age file\n")
        with pytest.raises(errors.KimenError) as info:
            remote.transport().head_rev()
        assert info.value.reason == "bundle_invalid"

    def test_a_stale_expected_rev_is_a_lost_race_and_changes_nothing(self, remote: Remote):
        transport = remote.transport()
        old = publish(transport, make_head("1"), None, 1)
        current = publish(transport, make_head("2"), transport.read_head(), 2)
        for expected in (old.rev, None, "0" * 64):
            result = transport.publish(make_head("x"), expected, seq=3, by="ana", expected_seq=2)
            assert result == LostRace(current.rev)
        head = transport.read_head()
        assert head is not None and head.rev == current.rev

    def test_an_expected_head_that_disappeared_is_a_lost_race(self, remote: Remote):
        transport = remote.transport()
        result = transport.publish(make_head("1"), "f" * 64, seq=2, by="ana", expected_seq=1)
        assert result == LostRace(None)
        assert transport.read_head() is None

    def test_publish_inside_locked_runs_read_build_publish_as_one_step(self, remote: Remote):
        transport = remote.transport()
        with transport.locked(wait=1):
            assert transport.read_head() is None
            publish(transport, make_head("1"), None, 1)
            head = transport.read_head()
            publish(transport, make_head("2"), head, 2)
        with transport.locked(wait=1):  # released on the way out
            assert transport.read_head() is not None

    def test_history_returns_older_heads_by_seq(self, remote: Remote):
        transport = remote.transport()
        heads = [make_head(str(i)) for i in range(1, 5)]
        current = None
        for seq, data in enumerate(heads, 1):
            publish(transport, data, current, seq)
            current = transport.read_head()
        for seq, data in enumerate(heads[:-1], 1):
            assert transport.history(seq) == data
        assert transport.history(99) is None

    def test_a_rewound_remote_shows_the_older_head_and_is_never_built_on(self, remote: Remote):
        """A force push or a restored copy of an older head: the transport returns what the remote
        holds (acceptance refuses it as a rollback) and a publish based on the newer head loses."""
        transport = remote.transport()
        first = make_head("1")
        one = publish(transport, first, None, 1)
        two = publish(transport, make_head("2"), transport.read_head(), 2)
        remote.rewind(one, first)
        head = remote.transport("bo").read_head()
        assert head is not None and head.rev == one.rev and head.data == first
        assert transport.publish(make_head("3"), two.rev, seq=3, by="ana", expected_seq=2) == LostRace(one.rev)
        head = transport.read_head()
        assert head is not None and head.rev == one.rev

    # -- concurrent publishers ---------------------------------------------------------------------

    def test_two_publishers_racing_exactly_one_wins_each_round(self, remote: Remote):
        publish(remote.transport(), make_head("genesis"), None, 1)
        for round_ in range(3):
            go = remote.tmp / f"go-{round_}"
            seq = round_ + 2
            heads = {member: make_head(f"{member} {seq}") for member in ("ana", "bo")}
            procs = {member: start_worker(remote, member, heads[member], seq, go) for member in heads}
            for proc in procs.values():
                assert proc.stdout is not None and proc.stdout.readline().startswith("ready")
            go.touch()
            results = {member: result_of(proc) for member, proc in procs.items()}
            winners = [m for m, r in results.items() if r["result"] == "published"]
            losers = [m for m, r in results.items() if r["result"] == "lost_race"]
            assert len(winners) == 1 and len(losers) == 1, results
            head = remote.transport().read_head()
            assert head is not None and head.data == heads[winners[0]]
            assert results[losers[0]]["actual_rev"] == head.rev

    @pytest.mark.parametrize("point", ["before_write", "after_write", "after_replace"])
    def test_kill_9_mid_publish_leaves_a_complete_head_and_no_lock(self, remote: Remote, point: str):
        transport = remote.transport()
        old, new = make_head("old"), make_head("new")
        publish(transport, old, None, 1)
        proc = start_worker(remote, "bo", new, 2, env={PAUSE_VARIABLE: point})
        try:
            wait_paused(proc, point)
        finally:
            proc.kill()
            proc.wait()
        head = transport.read_head()
        assert head is not None
        assert head.data == (new if point == "after_replace" else old)
        started = time.monotonic()
        with transport.locked(wait=2):
            publish(transport, make_head("next"), head, 3)
        assert time.monotonic() - started < 2
        self.assert_no_debris(remote)

    def test_a_head_replaced_before_the_read_back_is_unconfirmed(self, remote: Remote):
        publish(remote.transport(), make_head("1"), None, 1)
        result, _ = paused_publish(remote, "after_replace", make_head("2"), 2,
                                   lambda: remote.plant(make_head("foreign")))
        assert result["result"] == "error" and result["reason"] == "sync_push_unconfirmed", result

    def assert_no_debris(self, remote: Remote) -> None:
        """What a killed publisher may leave that the next push must not trip over (transport-specific)."""

    # -- hostile content ---------------------------------------------------------------------------

    @pytest.mark.parametrize(("content", "reason"), [
        (b"", "bundle_invalid"),
        (b"not an age file\n", "bundle_invalid"),
        (b"age-encryption.org/v1\n-> X25519 short\n", "bundle_invalid"),
        (LFS_POINTER, "git_lfs_pointer"),
        (b"age-encryption.org/v1\n-> scrypt AAAAAAAAAAAAAAAAAAAAAA 30\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
         b"--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", "age_work_factor_rejected"),
    ])
    def test_hostile_heads_are_refused_with_their_reason(self, remote: Remote, content: bytes, reason: str):
        remote.plant(content)
        for member in ("ana", "bo"):
            with pytest.raises(errors.KimenError) as info:
                remote.transport(member).read_head()
            assert info.value.reason == reason

    @pytest.mark.slow  # git: a real 256 MiB blob, hashed and fetched (seconds)
    def test_a_head_over_the_size_limit_is_refused_before_it_is_read(self, remote: Remote):
        remote.plant_huge()
        with pytest.raises(errors.KimenError) as info:
            remote.transport().read_head()
        assert info.value.reason == "bundle_too_large"

    def test_a_directory_where_the_head_should_be_is_refused(self, remote: Remote):
        remote.plant_directory()
        transport = remote.transport()
        with pytest.raises(errors.KimenError) as info:
            transport.read_head()
        assert info.value.reason == "sync_failed" and "directory" in info.value.message
        with pytest.raises(errors.KimenError):
            transport.publish(make_head("1"), None, seq=1, by="ana", expected_seq=None)

    def test_the_size_limit_is_256_mib(self):
        assert MAX_HEAD_BYTES == 256 * 1024 * 1024
