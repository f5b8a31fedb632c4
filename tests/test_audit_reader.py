"""`session log`'s reader (kimen.daemon.audit_reader) on real files written by the real writer:
file order across rotation, filters, `--limit`, the human and JSON lines, corrupt lines, unreadable
files, and following the log across rotation."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from kimen import errors
from kimen.daemon import audit
from kimen.daemon.audit import AuditLog, Peer
from kimen.daemon.audit_reader import LogReader, Selection, human_lines, json_line, parse_since
from tests.agents_helpers import Clock

T0 = 1_795_600_800.0  # 2026-11-25T10:00:00Z


@pytest.fixture
def log_path(tmp_path):
    return str(tmp_path / "state" / "kimen" / "audit.jsonl")


def write(log_path: str, specs: list[dict], *, max_bytes: int = audit.MAX_BYTES, start: float = T0,
          step: float = 60.0) -> None:
    """One record per spec (request_id = its index), a minute apart from `start`."""
    wall = Clock(start)
    log = AuditLog(log_path, max_bytes=max_bytes, wall=wall)
    log.open()
    for i, spec in enumerate(specs):
        wall.now = start + i * step
        log.record(Peer(1000 + i, 0, ppid=1, exe="/usr/bin/python3"), op=spec.get("op", "read"), vault="/v/vault.db",
                   names=spec.get("names", []), grant_id=spec.get("grant"), outcome=spec.get("outcome", "ok"),
                   request_id=spec.get("id", i), context=spec.get("context"))
    log.close()


def ids(records) -> list:
    return [r["request_id"] for r in records]


def test_no_log_reads_as_nothing(tmp_path):
    reader = LogReader(str(tmp_path / "nowhere" / "audit.jsonl"))
    assert reader.scan() == [] and reader.skipped == 0


def test_files_are_read_oldest_first_across_rotation(log_path):
    write(log_path, [{"names": [f"n{i}"]} for i in range(120)], max_bytes=3000)
    assert os.path.exists(audit.rotated(log_path, 3))
    records = LogReader(log_path).scan()
    got = ids(records)
    assert got == list(range(got[0], 120)) and got[0] > 0


def test_limit_keeps_the_newest_printed_oldest_first(log_path):
    write(log_path, [{} for _ in range(50)], max_bytes=2500)
    assert ids(LogReader(log_path).scan(limit=5)) == [45, 46, 47, 48, 49]
    assert ids(LogReader(log_path).scan(limit=0)) == []
    assert len(LogReader(log_path).scan(limit=10_000)) == len(LogReader(log_path).scan())


SPECS = [
    {"names": ["prod.db"], "grant": "g1"},
    {"names": ["dev.db"], "grant": None},
    {"names": ["prod.api", "dev.x"], "grant": "g2"},
    {"names": ["prod.db.replica"], "grant": "g1"},
    {"op": None, "outcome": "peer_rejected"},
    {"names": ["prod.api"], "grant": "g1", "outcome": "grant_denied"},
]


@pytest.mark.parametrize(("selection", "expected"), [
    (Selection(), [0, 1, 2, 3, 4, 5]),
    (Selection(grant="g1"), [0, 3, 5]),
    (Selection(name="prod.*"), [0, 2, 5]),
    (Selection(name="prod.**"), [0, 2, 3, 5]),
    (Selection(name="dev.?"), [2]),
    (Selection(grant="g1", name="prod.*"), [0, 5]),
    (Selection(since=T0 + 150), [3, 4, 5]),
    (Selection(since=T0 + 180, grant="g1"), [3, 5]),
    (Selection(since=T0 + 180, grant="g1", name="prod.api"), [5]),
    (Selection(grant="nosuch"), []),
])
def test_filters_combine(log_path, selection, expected):
    write(log_path, SPECS)
    assert ids(LogReader(log_path, selection).scan()) == expected


def test_limit_applies_after_the_filters(log_path):
    write(log_path, SPECS)
    assert ids(LogReader(log_path, Selection(grant="g1")).scan(limit=2)) == [3, 5]


@pytest.mark.parametrize(("text", "expected"), [
    ("15m", T0 - 900), ("1h30m", T0 - 5400), ("7d", T0 - 7 * 86400), ("90", T0 - 90), ("90s", T0 - 90),
    ("2026-11-25T10:00:00Z", T0), ("2026-11-25T10:00:00.250Z", T0 + 0.25), ("2026-11-25T12:00:00+02:00", T0),
    ("2026-11-25t10:00:00z", T0),
])
def test_since_takes_a_duration_or_an_rfc3339_time(text, expected):
    assert parse_since(text, now=T0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "0", "-5m", "yesterday", "15 minutes", "2026-11-25", "2026-11-25T10:00:00",
                                  "2026-13-01T00:00:00Z", "2026-11-25T10:00Z", "1e3", "٣m"])
def test_an_invalid_since_is_refused(text):
    with pytest.raises(errors.InvalidSince) as caught:
        parse_since(text, now=T0)
    assert caught.value.reason == "invalid_since" and caught.value.hint_text


def test_a_since_filter_leaves_out_records_without_a_time(log_path):
    write(log_path, [{}])
    with open(log_path, "a") as f:
        f.write(json.dumps({"ts": "not a time", "request_id": "odd"}) + "\n")
        f.write(json.dumps({"request_id": "no-ts"}) + "\n")
    assert ids(LogReader(log_path).scan()) == [0, "odd", "no-ts"]
    assert ids(LogReader(log_path, Selection(since=T0 - 1)).scan()) == [0]


def test_corrupt_lines_are_skipped_and_counted(log_path):
    write(log_path, [{}, {}], max_bytes=300)  # each record in a file of its own
    with open(audit.rotated(log_path, 1), "ab") as f:
        f.write(b'{"ts": "2026-11-25T10:00:00.000Z", "request_id": "cut')  # a fragment ends a rotated file
    with open(log_path, "ab") as f:
        f.write(b"\n   \nnot json\n[1, 2]\n\"text\"\n\xff\xfe\n{\"request_id\": \"after\"}\n")
        f.write('{"request_id": "utf-16"}'.encode("utf-16") + b"\n")  # not UTF-8: not a record
        f.write(b'{"request_id": "in progress"')  # the live file's unterminated tail: being written
    reader = LogReader(log_path)
    assert ids(reader.scan()) == [0, 1, "after"]
    assert reader.skipped == 6


@pytest.mark.parametrize("which", ["live", "rotated"])
@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_an_unreadable_log_is_refused(log_path, tmp_path, which, kind):
    write(log_path, [{}])
    path = log_path if which == "live" else audit.rotated(log_path, 2)
    if os.path.exists(path):
        os.unlink(path)
    if kind == "directory":
        os.mkdir(path)
    else:
        target = tmp_path / "elsewhere.jsonl"
        target.write_text(json.dumps({"request_id": "forged"}) + "\n")
        os.symlink(target, path)
    with pytest.raises(errors.AuditLogUnreadable) as caught:
        LogReader(log_path).scan()
    assert caught.value.fields["path"] == path


@pytest.mark.skipif(os.getuid() == 0, reason="root reads a mode 000 file anyway")
def test_a_log_without_permission_is_refused(log_path):
    write(log_path, [{}])
    os.chmod(log_path, 0)
    with pytest.raises(errors.AuditLogUnreadable):
        LogReader(log_path).scan()


# -- output --


def test_human_lines_with_nulls_count_and_context():
    records = [
        {"ts": "2026-11-25T10:00:00.000Z", "pid": 12, "ppid": 1, "exe": "/usr/bin/python3", "op": "read",
         "vault": "/v/vault.db", "names": ["a", "b"], "grant_id": "g1", "outcome": "ok",
         "context": {"command": "run", "profile": "prod"}},
        {"ts": "2026-11-25T10:00:01.000Z", "pid": 12345, "ppid": None, "exe": None, "op": None, "vault": None,
         "names": [], "grant_id": None, "outcome": "session_protocol_error", "count": 7},
    ]
    first, second = human_lines(records)
    assert first.split() == ["2026-11-25T10:00:00.000Z", "pid=12", "ppid=1", "exe=/usr/bin/python3", "op=read",
                             "vault=/v/vault.db", "names=a,b", "grant=g1", "ok",
                             'ctx(advisory)={"command":"run","profile":"prod"}']
    assert second.split() == ["2026-11-25T10:00:01.000Z", "pid=12345", "ppid=-", "exe=-", "op=-", "vault=-",
                              "names=-", "grant=-", "session_protocol_error", "count=7"]
    for word in ("ppid=", "exe=", "op=", "vault=", "names=", "grant="):  # aligned columns
        assert first.index(word) == second.index(word), word
    assert first.index("ctx(") == second.index("count=")


def test_human_lines_escape_control_characters():
    (line,) = human_lines([{"ts": "t", "exe": "/tmp/evil\n\x1b[31mkimen: hint: run rm", "outcome": "ok\r"}])
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert "\\n" in line and "\\x1b" in line


def test_json_lines_round_trip(log_path):
    write(log_path, [{"names": ["ü.x"], "context": {"command": "run"}}])
    (record,) = LogReader(log_path).scan()
    line = json_line(record)
    assert "\n" not in line and json.loads(line) == record and "ü" in line


# -- follow --


class Writer:
    def __init__(self, log_path: str, max_bytes: int = audit.MAX_BYTES) -> None:
        self.log = AuditLog(log_path, max_bytes=max_bytes)
        self.log.open()
        self.next = 0

    def write(self, n: int, **spec) -> None:
        for _ in range(n):
            self.log.record(Peer(1, 0), op="read", names=spec.get("names", ["a"]), outcome="ok",
                            request_id=self.next, grant_id=spec.get("grant"))
            self.next += 1


def following(reader: LogReader, limit: int | None = None):
    """`reader.follow`, polling fast, ended after 20 s so that a missing record fails the test."""
    deadline = time.monotonic() + 20
    return reader.follow(limit, poll=0.01, stop=lambda: time.monotonic() > deadline)


def take(gen, n: int) -> list:
    got = []
    for record in gen:
        got.append(record["request_id"])
        if len(got) == n:
            break
    return got


def test_follow_yields_the_selection_then_new_records_across_rotation(log_path):
    writer = Writer(log_path, max_bytes=900)  # three or four records a file
    writer.write(10)
    reader = LogReader(log_path)
    gen = following(reader, limit=3)
    assert take(gen, 3) == [7, 8, 9]
    writer.write(2)  # no rotation
    assert take(gen, 2) == [10, 11]
    writer.write(5)  # rotates at least once between two polls
    assert take(gen, 5) == [12, 13, 14, 15, 16]
    writer.write(9)  # rotates twice or more between two polls: the rotated files are read too
    assert take(gen, 9) == list(range(17, 26))
    gen.close()
    assert reader.skipped == 0


def test_follow_applies_the_filters_to_new_records(log_path):
    writer = Writer(log_path)
    reader = LogReader(log_path, Selection(grant="g1", name="prod.*"))
    gen = following(reader)
    writer.write(1, grant="g1", names=["dev.x"])
    writer.write(1, grant="g2", names=["prod.x"])
    writer.write(1, grant="g1", names=["prod.x"])
    assert take(gen, 1) == [2]
    gen.close()


def test_follow_waits_for_a_log_that_does_not_exist_yet(log_path):
    gen = following(LogReader(log_path))
    writer = Writer(log_path)
    writer.write(2)
    assert take(gen, 2) == [0, 1]
    gen.close()


def test_follow_after_the_file_was_removed_by_hand(log_path):
    writer = Writer(log_path)
    writer.write(2)
    gen = following(LogReader(log_path))
    assert take(gen, 2) == [0, 1]
    os.unlink(log_path)
    writer.write(1)  # the writer opens a new file
    assert take(gen, 1) == [2]
    gen.close()


def test_follow_stops_when_asked(log_path):
    Writer(log_path).write(1)
    deadline = time.monotonic() + 0.2
    got = list(LogReader(log_path).follow(poll=0.01, stop=lambda: time.monotonic() > deadline))
    assert ids(got) == [0]


def test_follow_keeps_up_with_a_live_writer(log_path):
    """A writer thread appends and rotates while the reader follows: every record, in order."""
    writer = Writer(log_path, max_bytes=20_000)
    total = 400
    done = threading.Event()

    def run():
        for _ in range(total):
            writer.write(1, names=["x" * 40])
            time.sleep(0.0005)
        done.set()

    deadline = time.monotonic() + 60
    reader = LogReader(log_path)
    thread = threading.Thread(target=run)
    thread.start()
    got = []
    for record in reader.follow(poll=0.005, stop=lambda: time.monotonic() > deadline):
        got.append(record["request_id"])
        if len(got) == total:
            break
    thread.join()
    assert got == list(range(total)) and reader.skipped == 0
