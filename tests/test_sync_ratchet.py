"""The sync state outside the vault: the ratchet only rises (except an explicit accept-fork),
head.age and ack.json beside it, private modes, damaged files refused, and the known head."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from kimen import errors
from kimen.sync.base import KnownHead, Member, SyncState
from kimen.sync.ratchet import SyncStateDir, known_head

REMOTE = "0123456789abcdef0123456789abcdef"


def head(seq: int, tag: str = "a") -> KnownHead:
    return KnownHead(remote_id=REMOTE, seq=seq, head_id=(tag * 64)[:64], generation=1000 + seq, epoch=1,
                     record_hash="c" * 64)


def state(seq: int, tag: str = "b") -> SyncState:
    return SyncState(remote="origin", remote_id=REMOTE, endpoint="e" * 64, head_seq=seq, head_id=(tag * 64)[:64],
                     head_rev="f" * 64, head_generation=2000 + seq, epoch=2, record_hash="d" * 64,
                     members_fp="0" * 64, member="ana", role="admin", scope=("**",), rotation_due_count=0,
                     last_local_rev=None, updated_at="2026-01-01T00:00:00Z")


@pytest.fixture
def sd(tmp_path: Path) -> SyncStateDir:
    return SyncStateDir(REMOTE, {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")})


def test_the_state_dir_is_state_sync_remote_id(sd: SyncStateDir, tmp_path: Path):
    assert sd.path == str(tmp_path / "state" / "kimen" / "sync" / REMOTE)
    assert sd.read_ratchet() is None and sd.read_head() is None and sd.read_ack() is None
    assert not os.path.exists(sd.path)  # reading creates nothing


@pytest.mark.parametrize("bad", ["", "../../etc", "0123456789ABCDEF0123456789ABCDEF", "0" * 31, "0" * 33, "g" * 32])
def test_a_remote_id_that_is_not_32_lowercase_hex_is_refused(bad: str, tmp_path: Path):
    with pytest.raises(errors.InvalidRemoteId):
        SyncStateDir(bad, {"HOME": str(tmp_path)})


def test_the_ratchet_rises_and_never_falls(sd: SyncStateDir):
    assert sd.raise_to(head(5), b"head five")
    assert sd.read_ratchet() == head(5) and sd.read_head() == b"head five"
    assert not sd.raise_to(head(4), b"older")
    assert not sd.raise_to(head(5, "z"), b"a fork of the same seq")
    assert sd.read_ratchet() == head(5) and sd.read_head() == b"head five"
    assert sd.raise_to(head(9), b"head nine")
    assert sd.read_ratchet() == head(9) and sd.read_head() == b"head nine"


def test_only_accept_fork_lowers_or_moves_it_sideways(sd: SyncStateDir):
    sd.raise_to(head(9), b"nine")
    assert sd.accept_fork(head(7, "f"), b"fork") == head(9)
    assert sd.read_ratchet() == head(7, "f") and sd.read_head() == b"fork"


def test_files_are_private_and_written_atomically(sd: SyncStateDir, tmp_path: Path):
    old = os.umask(0)
    try:
        sd.raise_to(head(1), b"one")
        sd.write_ack("a" * 64, [Member("ana", "admin", "age1x", "kimen-sig-v1:x", ("**",))])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(sd.path).st_mode) == 0o700
    rev_link = "head-rev." + hashlib.sha256(b"one").hexdigest()
    assert sorted(os.listdir(sd.path)) == ["ack.json", rev_link, "head.age", "ratchet.json"]  # no temp file left
    for name in os.listdir(sd.path):
        assert stat.S_IMODE(os.stat(os.path.join(sd.path, name)).st_mode) == 0o600
    doc = (Path(sd.path) / "ratchet.json").read_text()
    for key in ("remote_id", "seq", "head_id", "generation", "epoch", "record_hash", "updated_at"):
        assert f'"{key}":' in doc


def test_the_kept_head_answers_for_its_rev_only(sd: SyncStateDir):
    """`head-rev.<rev>` is a hard link of `head.age` named by its rev: `same_as_kept` holds for
    exactly those bytes under exactly that rev; a newer kept head replaces the older link."""
    one, two = b"head one", b"head two"
    rev_one, rev_two = hashlib.sha256(one).hexdigest(), hashlib.sha256(two).hexdigest()
    assert not sd.same_as_kept(one, rev_one)  # nothing kept yet
    sd.raise_to(head(1), one)
    assert sd.same_as_kept(one, rev_one)
    assert not sd.same_as_kept(two, rev_one) and not sd.same_as_kept(one, rev_two)
    assert not sd.same_as_kept(one, "not hex") and not sd.same_as_kept(one, "../" + rev_one[3:])
    kept = os.stat(os.path.join(sd.path, "head-rev." + rev_one))
    assert kept.st_ino == os.stat(os.path.join(sd.path, "head.age")).st_ino
    sd.raise_to(head(2), two)
    assert sd.same_as_kept(two, rev_two) and not sd.same_as_kept(one, rev_one)
    assert sorted(n for n in os.listdir(sd.path) if n.startswith("head")) == ["head-rev." + rev_two, "head.age"]


def test_a_kept_rev_link_that_is_a_symlink_is_not_trusted(sd: SyncStateDir, tmp_path: Path):
    one = b"head one"
    rev = hashlib.sha256(one).hexdigest()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(one)
    sd.raise_to(head(1), b"other bytes")
    os.symlink(elsewhere, os.path.join(sd.path, "head-rev." + rev))
    assert not sd.same_as_kept(one, rev)


def test_acknowledged_members_round_trip(sd: SyncStateDir):
    members = (Member("ana", "admin", "age1a", "kimen-sig-v1:a", ("**",)),
               Member("cy", "reader", "ssh-ed25519 AAAA", None, ("app.*",)))
    sd.write_ack("b" * 64, members)
    ack = sd.read_ack()
    assert ack is not None and ack.members_fp == "b" * 64 and ack.members == members


@pytest.mark.parametrize(("content", "detail"), [
    (b"{", "not valid JSON"),
    (b"[]", "expected exactly the keys"),
    (b'{"remote_id": "0123456789abcdef0123456789abcdef", "seq": 1}', "expected exactly the keys"),
    (b'{"remote_id": "ffffffffffffffffffffffffffffffff", "seq": 1, "head_id": "' + b"a" * 64 + b'", "generation": 1, '
     b'"epoch": 1, "record_hash": "' + b"c" * 64 + b'", "updated_at": "x"}', "another remote"),
    (b'{"remote_id": "0123456789abcdef0123456789abcdef", "seq": -1, "head_id": "' + b"a" * 64 + b'", '
     b'"generation": 1, "epoch": 1, "record_hash": "' + b"c" * 64 + b'", "updated_at": "x"}', "seq"),
    (b'{"remote_id": "0123456789abcdef0123456789abcdef", "seq": true, "head_id": "' + b"a" * 64 + b'", '
     b'"generation": 1, "epoch": 1, "record_hash": "' + b"c" * 64 + b'", "updated_at": "x"}', "seq"),
    (b'{"remote_id": "0123456789abcdef0123456789abcdef", "seq": 1, "head_id": "short", '
     b'"generation": 1, "epoch": 1, "record_hash": "' + b"c" * 64 + b'", "updated_at": "x"}', "head_id"),
])
def test_a_damaged_ratchet_is_refused_not_ignored(sd: SyncStateDir, content: bytes, detail: str):
    sd.raise_to(head(3), b"x")
    (Path(sd.path) / "ratchet.json").write_bytes(content)
    with pytest.raises(errors.SyncFailed, match=detail):
        sd.read_ratchet()
    with pytest.raises(errors.SyncFailed):  # and so never overwritten by a raise either
        sd.raise_to(head(4))


def test_a_loose_state_dir_is_refused(sd: SyncStateDir):
    sd.raise_to(head(1))
    os.chmod(sd.path, 0o755)
    with pytest.raises(errors.SyncFailed, match="too open"):
        sd.read_ratchet()
    with pytest.raises(errors.SyncFailed, match="too open"):
        sd.raise_to(head(2))


def test_the_known_head_is_the_larger_of_vault_and_ratchet_the_ratchet_on_a_tie():
    assert known_head(None, None) is None
    assert known_head(None, head(3)) == head(3)
    from_vault = known_head(state(4), None)
    assert from_vault == KnownHead(REMOTE, 4, "b" * 64, 2004, 2, "d" * 64)
    assert known_head(state(4), head(3)) == from_vault  # a crash between the vault commit and the ratchet
    assert known_head(state(2), head(3)) == head(3)  # a restored old vault
    assert known_head(state(3), head(3)) == head(3)
