"""The session protocol's JSON (kimen.daemon.protocol.dumps/loads over the `_json` C module) is
exactly the `json` module's: same text out, same values in, the same inputs refused."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen.daemon import protocol

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


def _same(a, b) -> bool:
    """Equality that treats NaN as equal to itself."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=400)
@given(documents)
def test_dumps_matches_the_json_module(doc):
    assert protocol.dumps(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=400)
@given(documents)
def test_loads_reads_back_what_json_writes(doc):
    for text in (json.dumps(doc), json.dumps(doc, ensure_ascii=False), json.dumps(doc, indent=2)):
        body = text.encode("utf-8", "surrogatepass")
        try:
            expected = json.loads(body)
        except ValueError:
            continue
        try:
            got = protocol.loads(body)
        except UnicodeDecodeError:  # lone surrogates: not UTF-8, refused by the protocol
            continue
        assert _same(got, expected)


def test_other_types_fall_back_to_the_json_module():
    doc = {"t": (1, 2), "k": {1: "int key"}}
    assert protocol.dumps(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(TypeError):
        protocol.dumps({"x": object()})


@pytest.mark.parametrize("body", [
    b"", b"   ", b"{", b"{}x", b'{"a":1}{"b":2}', b"[1,]", b'{"a":}', b"nul", b'"\\x"', b"01",
    b'{"a":"\x01"}', b"\xff", b"{'a': 1}",
])
def test_malformed_frames_are_refused_like_json(body):
    with pytest.raises(ValueError):
        json.loads(body.decode("utf-8", "replace") if body == b"\xff" else body)
    with pytest.raises(ValueError):  # UnicodeDecodeError is a ValueError too
        protocol.loads(body)


def test_whitespace_around_one_value_is_accepted():
    assert protocol.loads(b' \n{"a": [1, 2.5, "x"]}\r\n') == {"a": [1, 2.5, "x"]}


def test_decode_wraps_every_failure_as_a_protocol_error():
    from kimen import errors

    for body in (b"[]", b"{", b"\xff\xfe", b"[" * 100_000):
        with pytest.raises(errors.SessionProtocolError):
            protocol.decode(body)


@settings(max_examples=400)
@given(documents)
def test_the_cli_envelopes_and_the_protocol_share_one_encoder(doc):
    """`kimen.jsontext.compact_json` writes every envelope (`status --json` imports no `json`, no
    `re`): it is the protocol's encoder and the `json` module's text."""
    from kimen import jsontext, output

    assert protocol.dumps is jsontext.compact_json
    assert jsontext.compact_json(doc) == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    try:
        output.dumps(doc).encode()
    except UnicodeEncodeError:  # pragma: no cover - output.dumps escapes lone surrogates
        raise AssertionError("output.dumps wrote a lone surrogate") from None


def _a2b_or_error(text: str):
    import binascii

    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
        return ValueError


@settings(max_examples=600)
@given(st.binary(max_size=64) | st.binary(min_size=3000, max_size=3100))
def test_values_read_back_as_binascii_reads_them(value):
    import binascii

    text = binascii.b2a_base64(value, newline=False).decode()
    assert protocol.value_from_b64(text) == value


@settings(max_examples=1500)
@given(st.text(alphabet=st.sampled_from([*"AQgw/+z9=", "\n", " ", "-", "_", "é", "\x00"]), max_size=14))
def test_malformed_base64_is_refused_as_binascii_refuses_it(text):
    """Every text, canonical or not (padding in the middle, too much padding, other characters, a
    length that is no multiple of 4, non-zero spare bits): the same bytes or the same refusal."""
    expected = _a2b_or_error(text)
    try:
        got = protocol.value_from_b64(text)
    except ValueError:
        got = ValueError
    assert got == expected, (text, got, expected)
