"""Grants and the audit log, end to end: a real daemon (started by the installed `kimen`) on a real
socket, real clients (kimen's own `Connection`, raw frames, and `kimen` commands with a token).

Invariant 19 (docs/security.md): in grant-required mode no store request succeeds without a valid
token covering every name; in every mode a token is validated on every request that carries one; a
garbage, unknown, revoked or expired token is refused; a session alone cannot mint a grant.
Invariant 20: every daemon request is audited before it is answered, or it fails with
`audit_unavailable`; a moved or replaced audit file is noticed before the next line.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
import sys
import time

import pytest

from kimen.daemon import tokens
from kimen.daemon.client import Connection
from tests.conftest import PASSPHRASE, Kimen, wait_for
from tests.e2e.session_helpers import frame, read_frame

VALUES = {"prod.db.password": b"pw-value-111111", "prod.api_key": b"api-value-222222",
          "prod.deep.a.b": b"deep-value-3333", "dev.token": b"dev-value-444444"}
PASS_B64 = base64.b64encode(PASSPHRASE.encode()).decode()


class Session:
    """A vault with VALUES, unlocked in a daemon of its own; requests through kimen's client."""

    def __init__(self, k: Kimen, *, require_grant: bool = False, max_ttl: int = 3600) -> None:
        self.kimen = k
        self.sock_path = str(k.session_dir / "session.sock")
        self.vault = os.path.realpath(k.vault)
        self.log_path = k.root / "state" / "kimen" / "audit.jsonl"
        k.ok("session", "start", "--ttl", f"{min(max_ttl, 600)}s", "--max-ttl", f"{max_ttl}s", env=k.with_pass())
        if require_grant:
            self.call("unlock", vault_path=self.vault, passphrase_b64=PASS_B64, ttl=600, max_ttl=max_ttl,
                      require_grant=True)

    def raw(self, op: str, token: str | None = None, **fields) -> dict:
        with Connection(self.sock_path, token=token) as conn:
            return conn.call_raw(op, timeout=60, **fields)

    def call(self, op: str, token: str | None = None, **fields) -> dict:
        reply = self.raw(op, token, **fields)
        assert reply["ok"] is True, reply
        return reply

    def refused(self, reason: str, op: str, token: str | None = None, **fields) -> dict:
        reply = self.raw(op, token, **fields)
        assert reply["ok"] is False and reply["reason"] == reason, (op, reason, reply)
        return reply

    def read(self, names: list[str], token: str | None = None) -> dict:
        return self.raw("read", token, vault_path=self.vault, names=names)

    def grant(self, secrets: list[str], *, ttl: float = 600, read_only: bool = False) -> dict:
        return self.call("grant_create", vault_path=self.vault, passphrase_b64=PASS_B64, secrets=secrets,
                         ttl=ttl, read_only=read_only)

    def records(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_path.parent.glob("audit.jsonl*")
                       if p.is_file())


@pytest.fixture
def session(kimen):
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    return Session(kimen)


@pytest.fixture
def required(kimen):
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    return Session(kimen, require_grant=True)


def values(reply: dict) -> dict[str, bytes]:
    assert reply["ok"] is True, reply
    return {s["name"]: base64.b64decode(s["value_b64"]) for s in reply["secrets"]}


# -- the audit log --


def test_every_request_is_recorded_before_it_is_answered(session):
    assert values(session.read(["prod.db.password"])) == {"prod.db.password": VALUES["prod.db.password"]}
    last = session.records()[-1]  # read right after the answer: the line was written before it
    assert last["op"] == "read" and last["outcome"] == "ok" and last["names"] == ["prod.db.password"]
    assert last["pid"] == os.getpid() and last["uid"] == os.getuid()
    assert last["exe"] == os.path.realpath(f"/proc/{os.getpid()}/exe")
    assert last["cwd"] == os.getcwd()
    assert last["ppid"] == os.getppid() and last["parents"][0]["pid"] == os.getppid()
    assert 1 <= len(last["parents"]) <= 4 and all(set(p) == {"pid", "exe", "comm"} for p in last["parents"])
    assert last["vault"] == session.vault and last["request_id"] == "1" and last["grant_id"] is None
    assert last["daemon_pid"] == session.call("status")["pid"]
    # a refused request too, with its reason
    assert session.read(["prod.nope"])["reason"] == "secret_not_found"
    assert session.records()[-1]["outcome"] == "secret_not_found"
    # the session start of the fixture was recorded (its status, unlock) — never the passphrase
    ops = [r["op"] for r in session.records()]
    assert "unlock" in ops and "status" in ops
    text = session.log_text()
    assert PASSPHRASE not in text and PASS_B64 not in text
    assert not any(v.decode() in text for v in VALUES.values())
    mode = os.stat(session.log_path).st_mode & 0o777
    assert mode == 0o600 and os.stat(session.log_path.parent).st_mode & 0o777 == 0o700


def test_the_context_a_client_sends_is_recorded(session):
    session.call("status", context={"command": "run", "profile": "prod"})
    wait_for(lambda: any(r["context"] == {"command": "run", "profile": "prod"} for r in session.records()),
             "the status record")


def test_kimen_commands_are_recorded_with_their_parents(session):
    k = session.kimen
    assert k.ok("secret", "get", "dev.token", "--unsafe-stdout").out == VALUES["dev.token"]
    reads = [r for r in session.records() if r["op"] == "read"]
    assert reads and reads[-1]["names"] == ["dev.token"] and reads[-1]["outcome"] == "ok"
    assert reads[-1]["pid"] != os.getpid() and reads[-1]["cwd"] == str(k.cwd)


def test_broken_frames_are_recorded_and_folded(session):
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(session.sock_path)
        s.sendall(frame(b"{not json"))
        assert read_frame(s)["reason"] == "session_protocol_error"
        s.close()
    broken = [r for r in session.records() if r["outcome"] == "session_protocol_error"]
    assert broken and broken[0]["op"] is None and broken[0]["pid"] == os.getpid()  # the first at once
    folded = wait_for(lambda: [r for r in session.records() if r["outcome"] == "session_protocol_error"
                               and r.get("count")], "the folded record", limit=10)
    assert sum(r.get("count", 1) for r in session.records() if r["outcome"] == "session_protocol_error") == 5
    assert folded[-1]["count"] == 4


def test_repeated_status_is_folded(session):
    before = len(session.records())
    for _ in range(20):
        session.call("status")
    statuses = wait_for(lambda: [r for r in session.records()[before:] if r.get("count")], "a folded status", 10)
    assert statuses[0]["op"] == "status"
    assert len(session.records()) - before < 20
    assert sum(r.get("count", 1) for r in session.records()[before:] if r["op"] == "status") == 20


def test_a_moved_or_removed_log_is_noticed(session):
    session.read(["dev.token"])
    moved = session.log_path.with_name("moved.jsonl")
    os.rename(session.log_path, moved)
    session.read(["prod.api_key"])
    assert session.records()[-1]["names"] == ["prod.api_key"]  # a new file at the path
    assert "prod.api_key" not in moved.read_text()
    os.unlink(session.log_path)
    session.read(["dev.token"])
    assert session.records()[-1]["names"] == ["dev.token"]
    assert os.stat(session.log_path).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("replacement", ["directory", "symlink"])
def test_fail_closed_when_the_log_is_replaced(session, replacement):
    os.unlink(session.log_path)
    if replacement == "directory":
        session.log_path.mkdir()
    else:
        session.log_path.symlink_to(session.kimen.root / "elsewhere.jsonl")
    reply = session.read(["prod.db.password"])
    assert reply["ok"] is False and reply["reason"] == "audit_unavailable" and "secrets" not in reply
    assert session.refused("audit_unavailable", "grant_create", vault_path=session.vault, passphrase_b64=PASS_B64,
                           secrets=["**"])
    assert session.raw("status")["reason"] == "audit_unavailable"
    # the kimen commands fail with that reason and its hint (not "no passphrase", not "busy"), and
    # never print the value; `kimen status` shows it on its session line
    done = session.kimen.fail(34, "audit_unavailable", "secret", "get", "prod.db.password", "--unsafe-stdout")
    assert VALUES["prod.db.password"] not in done.out and done.err_json()["hint"]
    status = session.kimen.ok("session", "status", "--json").json()  # status exits 0, and says why
    assert status["state"] == "unknown" and status["reason"] == "audit_unavailable" and status["running"]
    assert [w["reason"] for w in status["warnings"]] == ["session_refused"]
    shown = session.kimen.ok("status", "--json").json()["session"]
    assert shown["state"] == "unavailable" and shown["reason"] == "audit_unavailable" and shown["hint"]
    assert "session:  unavailable: " in session.kimen.ok("status").stdout
    (session.log_path.rmdir() if replacement == "directory" else session.log_path.unlink())
    assert values(session.read(["prod.db.password"]))  # the path is a file again: served, recorded
    assert session.records()[-1]["names"] == ["prod.db.password"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_fail_closed_when_the_log_directory_is_unwritable(session):
    directory = session.log_path.parent
    os.unlink(session.log_path)
    os.chmod(directory, 0o500)
    try:
        reply = session.read(["prod.db.password"])
        assert reply["reason"] == "audit_unavailable" and "secrets" not in reply
        assert str(session.log_path) in reply["message"]
    finally:
        os.chmod(directory, 0o700)
    assert values(session.read(["prod.db.password"]))


def test_fail_closed_when_the_state_directory_is_replaced_by_a_file(session):
    directory = session.log_path.parent
    shutil.rmtree(directory)
    directory.write_text("not a directory")
    reply = session.read(["prod.db.password"])
    assert reply["reason"] == "audit_unavailable" and "secrets" not in reply
    directory.unlink()  # a removed state directory is created again (0700)
    assert values(session.read(["prod.db.password"]))
    assert os.stat(directory).st_mode & 0o777 == 0o700


# -- grants --


def test_grant_required_mode(required):
    s = required
    assert s.call("status")["require_grant"] is True
    s.refused("grant_required", "read", vault_path=s.vault, names=["dev.token"])
    s.refused("grant_required", "write", vault_path=s.vault, changes=[{"op": "rm", "name": "dev.token"}])
    s.refused("grant_required", "verify", vault_path=s.vault)
    assert s.records()[-1]["outcome"] == "grant_required"
    g = s.grant(["prod.*"], read_only=True)
    assert values(s.read(["prod.api_key"], g["token"])) == {"prod.api_key": VALUES["prod.api_key"]}
    assert s.call("status")["grant_count"] == 1
    # kimen commands: the token from the environment
    k = s.kimen
    env = {"KIMEN_SESSION_TOKEN": g["token"]}
    assert k.ok("secret", "get", "prod.api_key", "--unsafe-stdout", env=env).out == VALUES["prod.api_key"]
    k.fail(35, "grant_required", "secret", "get", "prod.api_key", "--unsafe-stdout")
    done = k.fail(35, "grant_denied", "secret", "get", "dev.token", "--unsafe-stdout", env=env)
    assert VALUES["dev.token"] not in done.out


def test_scope_by_glob_and_by_exact_names(session):
    s = session
    one = s.grant(["prod.*"])
    deep = s.grant(["prod.**"])
    exact = s.grant(["prod.db.password", "dev.token"])
    assert s.read(["prod.deep.a.b"], one["token"])["reason"] == "grant_denied"
    assert values(s.read(["prod.deep.a.b"], deep["token"]))
    assert values(s.read(["prod.db.password", "dev.token"], exact["token"])).keys() == {"prod.db.password",
                                                                                         "dev.token"}
    # all or nothing: one name outside the scope refuses the whole request, naming only it
    reply = s.read(["prod.db.password", "prod.api_key", "dev.token"], exact["token"])
    assert reply["reason"] == "grant_denied" and reply["denied"] == ["prod.api_key"] and "secrets" not in reply
    assert reply["grant_id"] == exact["grant_id"]
    last = s.records()[-1]
    assert last["outcome"] == "grant_denied" and last["grant_id"] == exact["grant_id"]
    # a token narrows a daemon that does not require grants: the same read without it is served
    assert len(values(s.read(["prod.db.password", "prod.api_key", "dev.token"]))) == 3


def test_read_only_grants_refuse_writes(session):
    s = session
    ro = s.grant(["prod.**"], read_only=True)
    rw = s.grant(["prod.**"])
    change = [{"op": "set", "name": "prod.new", "value_b64": base64.b64encode(b"new-value").decode()}]
    reply = s.raw("write", ro["token"], vault_path=s.vault, changes=change)
    assert reply["reason"] == "grant_denied"
    assert s.raw("write", rw["token"], vault_path=s.vault, changes=change)["ok"] is True
    # a move needs both names in scope
    move = [{"op": "mv", "name": "prod.new", "new_name": "dev.new"}]
    assert s.raw("write", rw["token"], vault_path=s.vault, changes=move)["denied"] == ["dev.new"]
    # verify needs the whole vault
    assert s.raw("verify", rw["token"], vault_path=s.vault)["reason"] == "grant_denied"
    assert s.raw("verify", s.grant(["**"])["token"], vault_path=s.vault)["ok"] is True


def test_another_vault_is_denied(session, tmp_path):
    g = session.grant(["**"])
    reply = session.raw("read", g["token"], vault_path=str(tmp_path / "other.db"), names=["dev.token"])
    assert reply["reason"] == "grant_denied"


def test_expiry_and_the_vault_max_deadline(kimen):
    kimen.init_vault()
    kimen.set("dev.token", VALUES["dev.token"])
    s = Session(kimen, max_ttl=120)
    g = s.grant(["dev.token"], ttl=7 * 86400)
    vault = next(v for v in s.call("status")["vaults"] if v["vault_path"] == s.vault)
    assert g["expires_at"] <= vault["max_expires_at"]  # no grant outlives its session
    short = s.grant(["dev.token"], ttl=0.5)
    time.sleep(0.6)
    reply = s.read(["dev.token"], short["token"])
    assert reply["reason"] == "grant_expired" and reply["grant_id"] == short["grant_id"]
    assert s.raw("status", short["token"])["ok"] is True  # status is lenient
    s.refused("invalid_ttl", "grant_create", vault_path=s.vault, passphrase_b64=PASS_B64, secrets=["a"], ttl=0)


def test_revocation_and_what_a_token_holder_sees(session):
    s = session
    a, b = s.grant(["dev.token"]), s.grant(["prod.*"])
    listed = s.call("grant_list")["grants"]
    assert [g["grant_id"] for g in listed] == [a["grant_id"], b["grant_id"]]
    assert tokens.PREFIX not in json.dumps(listed)
    # a token holder sees and revokes its own grant only
    assert [g["grant_id"] for g in s.call("grant_list", a["token"])["grants"]] == [a["grant_id"]]
    s.refused("grant_not_found", "grant_revoke", a["token"], grant_id=b["grant_id"])
    assert values(s.read(["prod.api_key"], b["token"]))
    s.call("grant_revoke", grant_id=b["grant_id"])
    assert s.read(["prod.api_key"], b["token"])["reason"] == "grant_invalid"
    s.refused("grant_not_found", "grant_revoke", grant_id=b["grant_id"])
    s.call("grant_revoke", a["token"], grant_id=a["grant_id"])
    assert s.read(["dev.token"], a["token"])["reason"] == "grant_invalid"
    assert s.call("grant_list")["grants"] == []
    revokes = [r for r in s.records() if r["op"] == "grant_revoke" and r["outcome"] == "ok"]
    assert {r["grant_id"] for r in revokes} == {a["grant_id"], b["grant_id"]}


def test_an_invalid_token_fails_every_op_but_four(session):
    s = session
    bad = tokens.compose("abc123", os.urandom(32))  # well formed, unknown
    for op, fields in {"read": {"vault_path": s.vault, "names": ["dev.token"]},
                       "write": {"vault_path": s.vault, "changes": [{"op": "rm", "name": "dev.token"}]},
                       "verify": {"vault_path": s.vault}, "lock": {}, "grant_list": {},
                       "grant_revoke": {"grant_id": "abc123"}}.items():
        s.refused("grant_invalid", op, bad, **fields)
    assert s.raw("status", bad)["ok"] is True
    assert s.raw("grant_create", bad, vault_path=s.vault, passphrase_b64=PASS_B64, secrets=["x"])["ok"] is True
    assert s.raw("unlock", bad, vault_path=s.vault, passphrase_b64=PASS_B64, ttl=600, max_ttl=3600)["ok"] is True
    assert values(s.read(["dev.token"]))  # nothing was locked or written
    assert s.raw("stop", bad)["ok"] is True


def test_a_session_alone_cannot_mint_or_widen(session):
    s = session
    g = s.grant(["dev.token"])
    s.refused("session_protocol_error", "grant_create", g["token"], vault_path=s.vault, secrets=["**"])
    wrong = base64.b64encode(b"not the passphrase").decode()
    s.refused("wrong_passphrase", "grant_create", vault_path=s.vault, passphrase_b64=wrong, secrets=["**"])
    s.refused("wrong_passphrase", "grant_create", g["token"], vault_path=s.vault, passphrase_b64=wrong,
              secrets=["**"])
    s.refused("grant_scope_empty", "grant_create", vault_path=s.vault, passphrase_b64=PASS_B64, secrets=[])
    assert [x["grant_id"] for x in s.call("grant_list")["grants"]] == [g["grant_id"]]
    # a vault that is not unlocked in the session: no grant
    s.call("lock")
    s.refused("session_locked", "grant_create", vault_path=s.vault, passphrase_b64=PASS_B64, secrets=["**"])


def test_tokens_never_reach_the_log_or_a_listing(session):
    s = session
    minted = [s.grant(["prod.**"]), s.grant(["dev.token"], read_only=True)]
    for g in minted:
        s.read(["prod.api_key"], g["token"])
        s.raw("grant_list", g["token"])
    listing = json.dumps(s.call("grant_list")) + json.dumps(s.call("status"))
    text = s.log_text()
    for g in minted:
        secret_part = g["token"].split("_", 4)[4]  # kimen_grant_v1_<id>_<secret>: the secret may hold "_"
        assert g["token"] not in text and secret_part not in text and secret_part not in listing
        assert g["grant_id"] in text
    assert not any(v.decode() in text for v in VALUES.values())


def test_fuzzed_tokens_are_refused(session):
    s = session
    real = s.grant(["**"])["token"]
    rng = random.Random(7)
    alphabet = "".join(chr(c) for c in range(33, 127)) + "é\u2028"
    cases = ["", "x", tokens.PREFIX, real + "A", real[:-1], real[:-1] + ("B" if real[-1] != "B" else "C"),
             real.upper(), real.replace("_", "-"), " " + real, real + "\n", "kimen_grant_v2_" + real[15:],
             real + "=" * 2, tokens.PREFIX + "_" + real.rsplit("_", 1)[1], "y" * 5000]
    for _ in range(150):
        chars = list(real)
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        cases.append("".join(chars))
        cases.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120))))
    with Connection(s.sock_path) as conn:
        for case in cases:
            if case == real:
                continue
            conn.token = case
            reply = conn.call_raw("read", vault_path=s.vault, names=["dev.token"])
            if not case:  # an empty token is no token (the client drops it)
                assert reply["ok"] is True
                continue
            assert reply["ok"] is False and reply["reason"] == "grant_invalid", (case, reply)
    assert values(s.read(["dev.token"], real))
    assert real not in s.log_text()


def test_a_token_of_one_daemon_is_invalid_at_another(tmp_path):
    sessions = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        k = Kimen(tmp_path / name)
        k.init_vault()
        k.set("dev.token", VALUES["dev.token"])
        sessions.append(Session(k))
    try:
        a, b = sessions
        token = a.grant(["**"])["token"]
        assert b.read(["dev.token"], token)["reason"] == "grant_invalid"
        assert values(a.read(["dev.token"], token))
    finally:
        for s in sessions:
            s.kimen.run("session", "stop")
            shutil.rmtree(s.kimen.session_dir, ignore_errors=True)


def test_a_grant_after_stop_and_restart_is_invalid(session):
    s = session
    token = s.grant(["**"])["token"]
    s.kimen.ok("session", "stop")
    s.kimen.ok("session", "start", env=s.kimen.with_pass())
    assert s.read(["dev.token"], token)["reason"] == "grant_invalid"
    assert s.call("grant_list")["grants"] == []
    k = s.kimen
    k.fail(35, "grant_invalid", "secret", "get", "dev.token", "--unsafe-stdout", env={"KIMEN_SESSION_TOKEN": token})


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.isdir("/proc"), reason="needs root to connect as another uid")
def test_a_peer_of_another_uid_is_refused_and_recorded(tmp_path):
    """A daemon started by hand on a socket another uid may reach: that peer gets not a byte, and
    the refusal is recorded with its pid and uid."""
    import subprocess
    import sys
    import tempfile

    directory = tempfile.mkdtemp(prefix="kp-", dir="/tmp")
    os.chmod(directory, 0o755)
    sock_path = os.path.join(directory, "s.sock")
    log = tmp_path / "state" / "audit.jsonl"
    daemon = subprocess.Popen([sys.executable, "-m", "kimen.daemon.server", "--socket", sock_path,
                               "--audit-log", str(log)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(sock_path), "the daemon's socket", 30)
        os.chmod(sock_path, 0o666)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe and exits
            try:
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                s.connect(sock_path)
                os.write(write_end, b"closed" if s.recv(10) == b"" else b"data")
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        assert os.read(read_end, 16) == b"closed"  # not a byte
        os.close(read_end)
        record = wait_for(lambda: [r for r in (json.loads(x) for x in log.read_text().splitlines())
                                   if r["outcome"] == "peer_rejected"], "the refusal record", 10)[0]
        assert record["op"] is None and record["pid"] == child and record["uid"] == 65534
        with Connection(sock_path) as conn:  # its own uid is still served
            assert conn.call("status")["running"] is True
    finally:
        daemon.terminate()
        daemon.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def test_history_ops_are_narrowed_by_the_grant(session):
    s = session
    k = s.kimen
    k.set("dev.token", b"dev-value-second")
    narrow = s.grant(["prod.**"])
    ro = s.grant(["dev.token"], read_only=True)
    rw = s.grant(["dev.token"])
    revision = s.call("read", vault_path=s.vault, names=["dev.token"])["secrets"][0]["revision"]
    fields = {"vault_path": s.vault, "name": "dev.token", "revision": revision}
    assert s.raw("read_revision", narrow["token"], **fields)["denied"] == ["dev.token"]
    got = s.raw("read_revision", ro["token"], **fields)
    assert got["ok"] is True, got
    assert base64.b64decode(got["value_b64"]) == b"dev-value-second"
    assert s.records()[-1]["names"] == ["dev.token"] and s.records()[-1]["grant_id"] == ro["grant_id"]
    assert s.raw("restore", ro["token"], **fields)["reason"] == "grant_denied"
    everything = s.raw("purge_history", rw["token"], vault_path=s.vault, all=True)  # the op takes names only
    assert everything["reason"] == "session_protocol_error"
    assert s.raw("purge_history", narrow["token"], vault_path=s.vault, names=["dev.token"])["reason"] == "grant_denied"
    assert s.raw("restore", rw["token"], **fields)["ok"] is True
    assert s.raw("purge_history", rw["token"], vault_path=s.vault, names=["dev.token"])["ok"] is True


@pytest.mark.parametrize("names", [[], ["dev.token"]])
def test_an_extra_names_field_cannot_stand_in_for_the_name_a_revision_op_touches(session, names):
    """`read_revision` and `restore` touch their `name`; a `names` list sent beside it (an unknown
    field for these ops) must not be what the grant check or the audit record reads."""
    s = session
    narrow = s.grant(["dev.token"])
    revision = s.call("read", vault_path=s.vault, names=["prod.api_key"])["secrets"][0]["revision"]
    fields = {"vault_path": s.vault, "name": "prod.api_key", "revision": revision, "names": names}
    for op in ("read_revision", "restore"):
        reply = s.raw(op, narrow["token"], **fields)
        assert reply["reason"] == "grant_denied" and reply["denied"] == ["prod.api_key"], (op, reply)
        assert "value_b64" not in reply
        assert s.records()[-1]["names"] == ["prod.api_key"]
    assert s.call("read", vault_path=s.vault, names=["prod.api_key"])["secrets"][0]["revision"] == revision


def test_a_request_with_a_wrong_field_is_recorded_as_a_broken_frame(session):
    reply = session.raw("read", vault_path=session.vault, names="dev.token")
    assert reply["reason"] == "session_protocol_error"
    last = session.records()[-1]
    assert last["op"] is None and last["outcome"] == "session_protocol_error" and last["names"] == []


def test_kimen_commands_send_their_advisory_context(session):
    k = session.kimen
    k.write_profile("dev", "env T=dev.token\n")
    k.ok("run", "--profile", "dev", "--", "true")
    k.ok("secret", "get", "prod.api_key", "--unsafe-stdout", "--json")  # not the fast path
    reads = [r for r in session.records() if r["op"] == "read"]
    assert reads[-2]["context"] == {"command": "run", "profile": "dev"} and reads[-2]["names"] == ["dev.token"]
    assert reads[-1]["context"] == {"command": "secret get"}
    human = k.ok("session", "log", "--limit", "1", "--name", "dev.token").stdout
    assert 'ctx(advisory)={"command":"run","profile":"dev"}' in human
    k.ok("session", "stop")
    with open(session.log_path, "ab") as log:  # a hand edit: a line that is not a record
        log.write(b"not json\n")
    done = k.ok("session", "log", "--json")
    assert json.loads(done.err)["warnings"][0]["reason"] == "audit_lines_skipped"
    assert "1 line of the audit log is not a record: skipped" in k.ok("session", "log").err
    assert all(json.loads(line) for line in done.stdout.splitlines())


def test_a_projection_asks_the_session_once_and_falls_back_on_a_refusal(session):
    """`run` sends its `read` first (request 1 of its connection): served, that is its one request;
    refused, a `status` on a new connection tells the state (status records may be folded, so only
    the reads are counted), and the refusal is the answer only when the session serves the vault."""
    k = session.kimen
    k.write_profile("dev", "env T=dev.token\n")
    k.write_profile("typo", "env T=dev.token\nenv X=prod.nope\n")
    child = [sys.executable, "-c", "import os, sys; sys.stdout.write(os.environ['T'])"]

    def reads_since(mark: int) -> list[tuple[str, str]]:
        return [(r["outcome"], r["request_id"]) for r in session.records()[mark:] if r["op"] == "read"]

    mark = len(session.records())
    assert k.ok("run", "--profile", "dev", "--", *child).out == VALUES["dev.token"]
    assert reads_since(mark) == [("ok", "1")]

    mark = len(session.records())
    done = k.fail(12, "secret_not_found", "run", "--profile", "typo", "--", "true")
    assert done.err_json()["missing"] == ["prod.nope"]
    assert reads_since(mark) == [("secret_not_found", "1")]

    k.ok("session", "lock")
    mark = len(session.records())
    k.fail(10, "missing_passphrase", "run", "--profile", "dev", "--", *child)  # no terminal to prompt on
    assert reads_since(mark) == [("session_locked", "1")]


def test_a_read_refused_as_locked_is_not_the_answer_once_the_vault_is_unlocked(session, monkeypatch):
    """The vault is unlocked between the refused read and the status request: the store reads
    again and gets the value, instead of reporting the stale `session_locked`."""
    from kimen.daemon import client

    session.kimen.ok("session", "lock")
    first_probe = client.probe

    def unlock_then_probe(*args, **kwargs):  # the status request after the refused read
        session.call("unlock", vault_path=session.vault, passphrase_b64=PASS_B64, ttl=600, max_ttl=3600)
        return first_probe(*args, **kwargs)

    monkeypatch.setattr(client, "probe", unlock_then_probe)
    found = first_probe(session.kimen.env, session.vault, reading=["dev.token"])
    assert found.state == "unlocked" and found.answer is None
    store = found.store(session.vault, lambda: None)
    assert store is not None
    try:
        assert store.read(["dev.token"])["dev.token"].value == VALUES["dev.token"]
    finally:
        store.close()
    reads = [r["outcome"] for r in session.records() if r["op"] == "read"]
    assert reads[-2:] == ["session_locked", "ok"]
