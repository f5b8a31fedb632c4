"""The daemon's audit writer (kimen.daemon.audit) on real files: modes, record fields, one write(2)
per record, the path checked before every line (removed, renamed, replaced), fail-closed writes,
folding on an explicit clock, rotation, and the /proc facts of real client processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kimen import errors
from kimen.daemon import audit, protocol
from kimen.daemon.audit import AuditLog, Peer
from tests.agents_helpers import Clock, raised_within

CANARY = "canary-value-7f3a9c"
PEER = Peer(4242, os.getuid(), ppid=4241, exe="/usr/bin/python3", cwd="/work",
            parents=[{"pid": 4241, "exe": "/usr/bin/bash", "comm": "bash"}])


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "state" / "kimen" / "audit.jsonl")


@pytest.fixture
def clock():
    return Clock(100.0)


@pytest.fixture
def log(log_path, clock):
    log = AuditLog(log_path, clock=clock)
    log.open()
    yield log
    log.close()


def lines(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def read_request(**extra):
    return {"v": 1, "kimen": "0.1.0", "id": "7", "op": "read", "vault_path": "/v/vault.db",
            "names": ["prod.db", "prod.api"], **extra}


# -- files and fields --


def test_directory_0700_and_file_0600_under_umask_022(tmp_path):
    path = tmp_path / "state" / "kimen" / "audit.jsonl"
    old = os.umask(0o022)
    try:
        log = AuditLog(str(path))
        log.open()
        log.request(PEER, read_request(), outcome="ok")
        log.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path.parent.parent).st_mode) == 0o700  # created by kimen too
    assert len(lines(str(path))) == 1


def test_a_loose_existing_file_is_made_private(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    log = AuditLog(str(path))
    log.open()
    log.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("problem", ["group-writable", "symlink", "file"])
def test_an_unsafe_state_directory_is_refused(tmp_path, problem):
    directory = tmp_path / "kimen"
    if problem == "group-writable":
        directory.mkdir()
        os.chmod(directory, 0o770)
    elif problem == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        directory.symlink_to(tmp_path / "elsewhere")
    else:
        directory.write_bytes(b"")
    with pytest.raises(errors.AuditUnavailable) as caught:
        AuditLog(str(directory / "audit.jsonl")).open()
    assert caught.value.reason == "audit_unavailable" and caught.value.code == 34
    assert not (tmp_path / "elsewhere" / "audit.jsonl").exists()


def test_record_fields_in_order(log, log_path):
    log.request(PEER, read_request(token="kimen_grant_v1_x_" + "A" * 43, context={"command": "run", "profile": "p"}),
                outcome="ok", grant_id="0123abcd")
    (record,) = lines(log_path)
    assert tuple(record) == audit.FIELDS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert abs(time.time() - _epoch(record["ts"])) < 60
    assert record == {**record, "daemon_pid": os.getpid(), "pid": 4242, "ppid": 4241, "uid": os.getuid(),
                      "exe": "/usr/bin/python3", "cwd": "/work", "op": "read", "vault": "/v/vault.db",
                      "names": ["prod.db", "prod.api"], "grant_id": "0123abcd", "outcome": "ok",
                      "request_id": "7", "client_version": "0.1.0",
                      "context": {"command": "run", "profile": "p"}}
    assert record["parents"] == [{"pid": 4241, "exe": "/usr/bin/bash", "comm": "bash"}]
    assert "kimen_grant_v1" not in Path(log_path).read_text()  # the token is never recorded


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_a_write_records_names_never_values(log, log_path):
    import base64

    value = base64.b64encode(CANARY.encode()).decode()
    request = {"v": 1, "kimen": "0.1.0", "id": 9, "op": "write", "vault_path": "/v/vault.db", "changes": [
        {"op": "set", "name": "prod.new", "value_b64": value, "mode": "upsert"},
        {"op": "mv", "name": "prod.old", "new_name": "prod.moved"},
        {"op": "rm", "name": "prod.new"},
    ]}
    log.request(PEER, request, outcome="secret_not_found")
    data = Path(log_path).read_text()
    assert CANARY not in data and value not in data
    (record,) = lines(log_path)
    assert record["names"] == ["prod.new", "prod.old", "prod.moved"] and record["request_id"] == 9
    assert record["outcome"] == "secret_not_found"


def test_request_fields_of_hostile_requests():
    fields = audit.request_fields({"op": ["read"], "vault_path": 5, "names": "abc", "id": 1.5, "kimen": None,
                                   "context": "x"})
    assert fields == {"op": None, "vault": None, "names": [], "request_id": None, "client_version": None,
                      "context": None}
    fields = audit.request_fields({"op": "read", "names": ["a", 3, None, "a", "b" * 1000], "id": "x" * 500,
                                   "context": {"blob": "y" * 5000}})
    assert fields["names"] == ["a", "b" * audit.TEXT_LIMIT] and len(fields["request_id"]) == 128
    assert fields["context"] == {"truncated": True, "bytes": len(protocol.dump_bytes({"blob": "y" * 5000}))}
    grant = audit.request_fields({"op": "grant_create", "secrets": ["prod.*", "x"], "passphrase_b64": CANARY})
    assert grant["names"] == ["prod.*", "x"] and CANARY not in str(grant)


def test_strings_that_are_not_unicode_are_written_escaped(log, log_path):
    log.request(PEER, read_request(vault_path="/v/\udcff.db", context={"k": "\ud800"}), outcome="ok")
    (record,) = lines(log_path)
    assert record["vault"] == "/v/\udcff.db"


def test_one_write_per_record(log, log_path, monkeypatch):
    """Every record reaches the file in a single write(2) of the whole line (counted on the
    real call, which still happens)."""
    calls: list[int] = []
    real = os.write

    def counting(fd, data):
        if fd == log._fd:
            calls.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    big = {"op": "read", "vault_path": "/v", "names": [f"n{i:05d}.{'x' * 100}" for i in range(1000)]}
    for request in (read_request(), big, read_request(id="8")):
        log.request(PEER, request, outcome="ok")
    monkeypatch.undo()
    with open(log_path, "rb") as f:
        sizes = [len(line) + 1 for line in f.read().splitlines()]
    assert calls == sizes and len(calls) == 3 and calls[1] > 100_000


WRITER = textwrap.dedent("""
    import sys
    from kimen.daemon.audit import AuditLog, Peer
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = AuditLog(path)
    log.open()
    names = [f"{tag}.{i}.{'x' * 60}" for i in range(200)]  # lines of ~15 KB: several pages each
    for i in range(count):
        log.record(Peer(i, 0), op="read", vault="/v", names=names, outcome="ok", request_id=f"{tag}-{i}")
    log.close()
""")


def test_concurrent_writers_never_interleave(log_path):
    """Four processes (daemons sharing a state dir) append large records at once: every line is one
    whole record, none lost."""
    os.makedirs(os.path.dirname(log_path), mode=0o700)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, log_path, tag, "150"]) for tag in "abcd"]
    for proc in procs:
        assert proc.wait(60) == 0
    records = lines(log_path)
    assert len(records) == 600
    for tag in "abcd":
        mine = [r["request_id"] for r in records if r["request_id"].startswith(f"{tag}-")]
        assert mine == [f"{tag}-{i}" for i in range(150)]
        assert all(len(r["names"]) == 200 for r in records)


# -- the path is checked before every line --


def test_a_removed_file_is_recreated(log, log_path):
    log.request(PEER, read_request(id="1"), outcome="ok")
    os.unlink(log_path)
    log.request(PEER, read_request(id="2"), outcome="ok")
    assert [r["request_id"] for r in lines(log_path)] == ["2"]
    assert stat.S_IMODE(os.stat(log_path).st_mode) == 0o600


def test_a_renamed_file_keeps_its_lines_and_a_new_one_takes_the_next(log, log_path):
    log.request(PEER, read_request(id="1"), outcome="ok")
    os.rename(log_path, log_path + ".moved")
    log.request(PEER, read_request(id="2"), outcome="ok")
    assert [r["request_id"] for r in lines(log_path + ".moved")] == ["1"]
    assert [r["request_id"] for r in lines(log_path)] == ["2"]


def test_a_file_replaced_by_another_file_is_reopened(log, log_path):
    log.request(PEER, read_request(id="1"), outcome="ok")
    replacement = log_path + ".new"
    with open(replacement, "w") as f:
        f.write('{"planted": true}\n')
    os.replace(replacement, log_path)
    log.request(PEER, read_request(id="2"), outcome="ok")
    assert lines(log_path) == [{"planted": True}, lines(log_path)[1]]
    assert lines(log_path)[1]["request_id"] == "2"


def test_the_whole_state_directory_removed_is_recreated(log, log_path):
    log.request(PEER, read_request(id="1"), outcome="ok")
    shutil.rmtree(os.path.dirname(log_path))
    log.request(PEER, read_request(id="2"), outcome="ok")
    assert [r["request_id"] for r in lines(log_path)] == ["2"]
    assert stat.S_IMODE(os.stat(os.path.dirname(log_path)).st_mode) == 0o700


def _replace_with(kind: str, path: str, tmp_path) -> str | None:
    os.unlink(path)
    if kind == "directory":
        os.mkdir(path)
    elif kind == "symlink":
        target = tmp_path / "target"
        target.write_bytes(b"")
        os.symlink(target, path)
        return str(target)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    return None


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "socket"])
def test_a_file_replaced_by_something_else_fails_closed(log, log_path, tmp_path, kind):
    log.request(PEER, read_request(id="1"), outcome="ok")
    target = _replace_with(kind, log_path, tmp_path)
    err = raised_within(10, log.request, PEER, read_request(id="2"), outcome="ok")
    assert isinstance(err, errors.AuditUnavailable) and err.fields["path"] == log_path
    if target is not None:
        assert os.path.getsize(target) == 0  # nothing written through the symlink
    # once the path is a file again, records flow
    if os.path.isdir(log_path) and not os.path.islink(log_path):
        os.rmdir(log_path)
    else:
        os.unlink(log_path)
    log.request(PEER, read_request(id="3"), outcome="ok")
    assert [r["request_id"] for r in lines(log_path)] == ["3"]


FULL_DISK = textwrap.dedent("""
    import os, resource, signal, sys
    from kimen import errors
    from kimen.daemon.audit import AuditLog, Peer
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = AuditLog(sys.argv[1])
    log.open()
    log.record(Peer(1, 0), op="read", names=["a"], outcome="ok", request_id="1")
    size = os.path.getsize(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))
    outcomes = []
    for rid in ("2", "3"):
        try:
            log.record(Peer(1, 0), op="read", names=["b" * 300], outcome="ok", request_id=rid)
            outcomes.append("written")
        except errors.AuditUnavailable as err:
            outcomes.append(err.reason)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    log.record(Peer(1, 0), op="read", names=["c"], outcome="ok", request_id="4")
    print(",".join(outcomes))
""")


def test_a_line_that_cannot_be_written_fails_closed(log_path):
    """A full file system (here: the file size limit): the short write and the refused one both
    fail their request; afterwards records start on a fresh line and the fragment is skipped."""
    from kimen.daemon.audit_reader import LogReader

    out = subprocess.run([sys.executable, "-c", FULL_DISK, log_path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "audit_unavailable,audit_unavailable"
    reader = LogReader(log_path)
    assert [r["request_id"] for r in reader.scan()] == ["1", "4"]
    assert reader.skipped == 1  # the fragment of the short write


# -- folding --


def test_refused_connections_fold_per_outcome_within_a_second(log, log_path, clock):
    peers = [Peer(100 + i, os.getuid()) for i in range(6)]
    log.refusal(peers[0], "session_protocol_error")  # the first: at once
    assert [r["pid"] for r in lines(log_path)] == [100]
    assert log.next_deadline() is None  # nothing pending yet
    for i in range(1, 5):
        clock.now += 0.2
        log.refusal(peers[i], "session_protocol_error")
    log.refusal(peers[5], "frame_too_large")  # another outcome: its own first record
    assert [(r["pid"], r["outcome"]) for r in lines(log_path)] == [(100, "session_protocol_error"),
                                                                     (105, "frame_too_large")]
    assert log.next_deadline() == 101.0
    log.tick(100.99)
    assert len(lines(log_path)) == 2
    clock.now = 101.0
    log.tick()
    records = lines(log_path)
    assert len(records) == 3
    folded = records[2]
    assert folded["op"] is None and folded["outcome"] == "session_protocol_error"
    assert folded["count"] == 4 and folded["pid"] == 104  # the fields of the last
    assert "count" not in records[0]
    assert log.next_deadline() is None
    clock.now = 101.5  # a new window: at once again
    log.refusal(peers[0], "session_protocol_error")
    assert len(lines(log_path)) == 4 and "count" not in lines(log_path)[3]


def test_a_flood_writes_at_most_two_records_a_second(log, log_path, clock):
    for i in range(10_000):
        clock.now = 100.0 + i * 0.001  # 10 s of 1000 frames a second
        log.refusal(Peer(i, 0), "frame_timeout")
    log.tick(clock.now + 1)
    records = lines(log_path)
    assert len(records) <= 20
    assert sum(r.get("count", 1) for r in records) == 10_000  # every frame is counted


def test_status_requests_fold_and_other_ops_never_do(log, log_path, clock):
    for i in range(3):
        clock.now += 0.1
        log.request(PEER, {"op": "status", "id": str(i)}, outcome="ok")
        log.request(PEER, read_request(id=f"r{i}"), outcome="ok")
    assert [r["request_id"] for r in lines(log_path)] == ["0", "r0", "r1", "r2"]
    log.close()  # the daemon stops: pending folds are written
    records = lines(log_path)
    assert records[-1]["request_id"] == "2" and records[-1]["count"] == 2


def test_a_pending_fold_is_written_before_a_later_record(log, log_path, clock):
    log.refusal(PEER, "peer_rejected")
    clock.now += 0.5
    log.refusal(PEER, "peer_rejected")
    clock.now += 1  # no tick: the next record writes the due fold first
    log.request(PEER, read_request(id="x"), outcome="ok")
    assert [(r["outcome"], r.get("count"), r["request_id"]) for r in lines(log_path)] == [
        ("peer_rejected", None, None), ("peer_rejected", 1, None), ("ok", None, "x")]


# -- rotation --


def _fill(log: AuditLog, first: int, count: int) -> None:
    for i in range(first, first + count):
        log.record(PEER, op="read", vault="/v", names=[f"n.{i}"], outcome="ok", request_id=i)


def test_rotation_keeps_three_files(log_path):
    log = AuditLog(log_path, max_bytes=4000)
    log.open()
    _fill(log, 0, 200)
    log.close()
    files = sorted(os.listdir(os.path.dirname(log_path)))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    ids: list[int] = []
    for path in audit.log_files(log_path):
        assert os.path.getsize(path) <= 4000
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        ids += [r["request_id"] for r in lines(path)]
    assert ids == list(range(ids[0], 200)) and ids[0] > 0  # the newest, in order, without a gap


def test_two_writers_sharing_the_file_rotate_once(log_path):
    a, b = AuditLog(log_path, max_bytes=3000), AuditLog(log_path, max_bytes=3000)
    a.open()
    b.open()
    for i in range(60):
        _fill(a if i % 2 else b, i, 1)
    a.close()
    b.close()
    ids = [r["request_id"] for path in audit.log_files(log_path) for r in lines(path)]
    assert ids == list(range(ids[0], 60))


# -- who is asking: /proc --

CHAIN = textwrap.dedent("""
    import os, subprocess, sys
    depth = int(sys.argv[1])
    if depth:
        sys.exit(subprocess.call([sys.executable, "-c", sys.argv[2], str(depth - 1), sys.argv[2], sys.argv[3]]))
    with open(sys.argv[3], "w") as f:
        f.write(str(os.getpid()))
    sys.stdin.read()
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this platform (the fields are null)")
def test_parents_of_a_real_process_chain(tmp_path):
    pid_file = tmp_path / "pid"
    top = subprocess.Popen([sys.executable, "-c", CHAIN, "5", CHAIN, str(pid_file)], stdin=subprocess.PIPE,
                           cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        leaf = int(pid_file.read_text())
        peer = audit.peer_info(leaf, os.getuid())
        assert peer.pid == leaf and peer.exe == os.path.realpath(sys.executable) and peer.cwd == str(tmp_path)
        assert len(peer.parents) == audit.MAX_PARENTS
        assert peer.ppid == peer.parents[0]["pid"]
        chain = [leaf]
        for parent in peer.parents:  # each the parent of the one before, per the kernel
            assert parent["pid"] == _ppid(chain[-1])
            assert parent["exe"] == os.path.realpath(sys.executable) and parent["comm"]
            chain.append(parent["pid"])
        assert top.pid not in chain  # five levels: the top is beyond the fourth ancestor
    finally:
        top.stdin.close()
        top.wait(30)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this platform")
def test_peer_of_a_real_socket_connection(tmp_path):
    """As the daemon sees a client: its credentials from the socket, then /proc."""
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)
    client = subprocess.Popen([sys.executable, "-c", f"import socket,sys; s=socket.socket(socket.AF_UNIX); "
                               f"s.connect({path!r}); sys.stdin.read()"], stdin=subprocess.PIPE, cwd=tmp_path)
    try:
        conn, _ = server.accept()
        peer = audit.peer_info(protocol.peer_pid(conn), protocol.peer_uid(conn))
        conn.close()
        assert peer.pid == client.pid and peer.uid == os.getuid()
        assert peer.exe == os.path.realpath(sys.executable) and peer.cwd == str(tmp_path)
        assert peer.ppid == os.getpid() and peer.parents[0]["pid"] == os.getpid()
        with open("/proc/self/comm") as f:
            assert peer.parents[0]["comm"] == f.read().strip()
    finally:
        client.stdin.close()
        client.wait(30)
        server.close()


def test_without_proc_the_facts_are_null(tmp_path):
    peer = audit.peer_info(os.getpid(), os.getuid(), proc=str(tmp_path / "no-proc"))
    assert peer.fields() == {"pid": os.getpid(), "ppid": None, "parents": None, "uid": os.getuid(), "exe": None,
                             "cwd": None}
    assert audit.peer_info(None, None).fields()["pid"] is None


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this platform")
def test_a_client_that_already_exited(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    peer = audit.peer_info(proc.pid, os.getuid())
    assert peer.exe is None and peer.cwd is None and peer.ppid is None and peer.parents is None
