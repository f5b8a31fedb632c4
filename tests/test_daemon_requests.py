"""Units of the session protocol's robustness: any bytes decode to a request or a protocol error,
any document encodes, requests are checked field by field, reads are split by encoded bytes, and
the daemon's budget of large buffers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from kimen import errors
from kimen.daemon import protocol, requests
from kimen.daemon.server.limits import Budget
from kimen.values import MAX_VALUE_BYTES


@pytest.mark.parametrize("body", [
    b"{bad}", b'{"a" 1}', b"{1:2}", b'{"a":"\\x"}', b'{"a":"\x01"}', b'{"a":', b"[" * 100_000,
    b'{"a":' * 50_000, b"NaN", b"9" * 5000, b"\xff", b"\xed\xa0\x80",
    b"", b"  ", b"{} {}", b"[]", b'"x"', b"null",
])
def test_any_bytes_are_a_protocol_error_not_a_crash(body):
    with pytest.raises(errors.SessionProtocolError):
        protocol.decode(body)


def test_the_accelerators_systemerror_is_a_protocol_error_in_a_fresh_interpreter():
    """Python 3.11's `_json` raises SystemError on `{bad}` when `json.decoder` was never imported
    (as in the daemon); `decode` must still answer a protocol error."""
    code = ("import sys; from kimen.daemon import protocol; from kimen import errors\n"
            "assert 'json.decoder' not in sys.modules\n"
            "for body in (b'{bad}', b'{\"a\" 1}', b'{1:2}'):\n"
            "    try: protocol.decode(body)\n"
            "    except errors.SessionProtocolError: pass\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "ok\n", out.stderr


def test_documents_with_lone_surrogates_encode_as_escapes():
    frame = protocol.encode({"id": "\ud800", "message": "x\udcffy"})
    body = frame[4:]
    assert body.decode("ascii") == '{"id":"\\ud800","message":"x\\udcffy"}'
    assert json.loads(body) == {"id": "\ud800", "message": "x\udcffy"}
    assert protocol.encode({"a": "é"})[4:] == '{"a":"é"}'.encode()  # valid text stays UTF-8


def test_request_fields_are_checked_before_any_handler():
    base = {"v": 1, "kimen": protocol.VERSION, "id": "1"}
    assert requests.check({**base, "op": "read", "vault_path": "/v", "names": ["a"]}) == "read"
    bad = [
        {**base, "op": ["read"]}, {**base, "op": []}, {**base, "op": {}}, {**base}, {**base, "op": "exec"},
        {**base, "op": "\ud800"}, {**base, "id": [], "op": "status"}, {**base, "id": 2 ** 64, "op": "status"},
        {**base, "op": "read", "vault_path": "/v", "names": "a"}, {**base, "op": "read", "names": ["a"]},
        {**base, "op": "read", "vault_path": "/\ud800", "names": ["a"]},
        {**base, "op": "unlock", "vault_path": "/v", "passphrase_b64": "", "ttl": float("nan")},
        {**base, "op": "unlock", "vault_path": "/v", "passphrase_b64": "", "max_ttl": float("inf")},
        {**base, "op": "status", "id": float("inf")},
        {**base, "op": "unlock", "vault_path": "/v", "passphrase_b64": "", "require_grant": 1},
        {**base, "op": "write", "vault_path": "/v", "changes": [1]},
        {**base, "op": "write", "vault_path": "/v", "changes": [], "if_generation": True},
        {**base, "op": "status", "context": "x"}, {**base, "op": "status", "token": 5},
    ]
    for request in bad:
        with pytest.raises(errors.SessionProtocolError):
            requests.check(request)
    with pytest.raises(errors.SessionVersionMismatch):
        requests.check({"v": 1, "kimen": "0.0.0", "op": "read"})
    assert requests.check({"v": 9, "op": "status"}) == "status"  # status and stop: any version
    assert requests.request_id({"id": "\ud800"}) is None and requests.request_id({"id": 7}) == 7


def test_reads_are_split_by_count_and_by_encoded_bytes():
    names = [f"k{i}" for i in range(2500)]
    assert [len(b) for b in protocol.read_batches(names, {n: 10 for n in names}, MAX_VALUE_BYTES)] == [1000, 1000, 500]
    big = [f"big.k{i}" for i in range(60)]
    batches = protocol.read_batches(big, {n: MAX_VALUE_BYTES for n in big}, MAX_VALUE_BYTES)
    assert [n for b in batches for n in b] == big and len(batches) == 2
    for batch in batches:
        size = sum(protocol.read_item_size(n, MAX_VALUE_BYTES) for n in batch)
        assert size <= protocol.READ_RESPONSE_BUDGET < protocol.MAX_FRAME
    # unknown sizes count as the largest legal value; missing names as nothing
    assert len(protocol.read_batches(big, None, MAX_VALUE_BYTES)) == 2
    assert protocol.read_batches(big, {}, MAX_VALUE_BYTES) == [big]
    # one base64 item really fits its bound
    item = json.dumps({"name": "big.k1", "value_b64": "A" * (4 * ((MAX_VALUE_BYTES + 2) // 3)),
                       "revision": 2 ** 62}, separators=(",", ":"))
    assert len(item) + 1 <= protocol.read_item_size("big.k1", MAX_VALUE_BYTES)


def test_budget_takes_waits_and_gives():
    budget = Budget(100)
    assert budget.try_take(60) and not budget.try_take(50)
    assert not budget.take(50, 0.05)
    threading.Timer(0.05, budget.give, (60,)).start()
    assert budget.take(50, 5.0)
    budget.charge(80)  # already held: may pass the cap
    assert budget.used == 130 and not budget.try_take(1)
    budget.give(130)
    assert budget.used == 0


def test_every_op_has_one_handler_row_and_one_field_spec():
    """The daemon's op table (handler, where it runs) and the request checker's field table name
    the same ops: an op added to one and not the other fails here, not in a client."""
    from kimen.daemon.server import ops

    assert set(ops.OPS) == set(requests.OPS)
    assert {op for op, row in ops.OPS.items() if row.inline} == {"status", "read"}  # the event loop's
    assert [op for op, row in ops.OPS.items() if row.stops] == ["stop"]
