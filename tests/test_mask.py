"""The masker of `run --mask` (docs/run.md, "Masking"): every form of every value of at least 6
bytes is replaced by `[masked:NAME]`, leftmost then longest, whatever the chunking of the output;
bytes that cannot begin a match are released at once; clean output passes through byte-identical."""

from __future__ import annotations

import base64
import itertools
import os
import random
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.projection.mask import HEAD, Masker, masked_forms

# Known answers, worked out by hand from the rules: a UTF-8 multi-line value with characters every
# encoding treats differently, and a binary one (not UTF-8, base64 with + and /, a NUL, a final \n).
TEXT = 'é+/ "k"\n2nd line'.encode()
TEXT_FORMS = {
    TEXT,
    b"w6krLyAiayIKMm5kIGxpbmU=", b"w6krLyAiayIKMm5kIGxpbmU",  # base64 (the URL-safe one is the same)
    b"%C3%A9%2B%2F%20%22k%22%0A2nd%20line", b"%C3%A9%2B%2F+%22k%22%0A2nd+line",
    b'\\u00e9+/ \\"k\\"\\n2nd line', 'é+/ \\"k\\"\\n2nd line'.encode(),
    b"c3a92b2f20226b220a326e64206c696e65", b"C3A92B2F20226B220A326E64206C696E65",
    'é+/ "k"'.encode(), b"2nd line",  # the lines
}
BINARY = b"\xfb\xef\xff\x00k\xe9y\n"
BINARY_FORMS = {
    BINARY,
    b"++//AGvpeQo=", b"++//AGvpeQo", b"--__AGvpeQo=", b"--__AGvpeQo",
    b"%FB%EF%FF%00k%E9y%0A",  # quote and quote_plus agree (no space)
    b"\\udcfb\\udcef\\udcff\\u0000k\\udce9y\\n",  # what json.dumps gives a Python child's os.environ
    b"fbefff006be9790a", b"FBEFFF006BE9790A",
    b"\xfb\xef\xff\x00k\xe9y",  # the one line
}


def mask(values: dict[str, bytes], chunks: list[bytes], *, pty: bool = False) -> bytes:
    stream = Masker(values, pty=pty).stream()
    return b"".join(stream.feed(chunk) for chunk in chunks) + stream.flush()


def reference(values: dict[str, bytes], data: bytes) -> bytes:
    """Leftmost-longest replacement, one position at a time, straight from the rule."""
    owner: dict[bytes, bytes] = {}
    for name in sorted(values):
        for form in masked_forms(values[name]):
            owner.setdefault(form, f"[masked:{name}]".encode())
    out, at = [], 0
    while at < len(data):
        form = max((f for f in owner if data.startswith(f, at)), key=len, default=None)
        if form is None:
            out.append(data[at:at + 1])
            at += 1
        else:
            out.append(owner[form])
            at += len(form)
    return b"".join(out)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("value", "expected"), [(TEXT, TEXT_FORMS), (BINARY, BINARY_FORMS)], ids=["text", "binary"])
def test_forms_are_the_documented_ones(value, expected):
    assert masked_forms(value) == expected
    assert masked_forms(value, pty=True) == expected | {value.replace(b"\n", b"\r\n")}


@pytest.mark.parametrize(("value", "forms"), [(TEXT, TEXT_FORMS), (BINARY, BINARY_FORMS)], ids=["text", "binary"])
def test_every_form_is_masked(value, forms):
    for form in forms:
        data = b"before " + form + b" after"
        assert mask({"API_KEY": value}, [data]) == b"before [masked:API_KEY] after", form
        assert mask({"API_KEY": value}, [data[i:i + 1] for i in range(len(data))]) == mask({"API_KEY": value}, [data])


def test_ensure_ascii_escape_of_a_utf8_value():
    out = mask({"pw": "pässwörd-é".encode()}, [b'{"pw": "p\\u00e4ssw\\u00f6rd-\\u00e9"}'])
    assert out == b'{"pw": "[masked:pw]"}'


def test_split_at_every_boundary_and_one_byte_writes():
    values = {"A": b"s3cr3t-value", "B": TEXT}
    data = b"x" + base64.b64encode(b"s3cr3t-value") + b"-y-" + TEXT.hex().encode() + b"-z-s3cr3t-valu"
    expected = reference(values, data)
    assert expected.count(b"[masked:") == 2
    for cut in range(len(data) + 1):
        assert mask(values, [data[:cut], data[cut:]]) == expected, cut
    assert mask(values, [data[i:i + 1] for i in range(len(data))]) == expected


def test_leftmost_then_longest_on_overlapping_values():
    values = {"A": b"abcdefgh", "B": b"defghijk", "C": b"abcdefghij"}
    assert mask(values, [b"..abcdefghijk.."]) == b"..[masked:C]k.."  # longest at the leftmost start
    assert mask(values, [b"..abcdefghi.."]) == b"..[masked:A]i.."
    assert mask(values, [b"..bcdefghijk.."]) == b"..bc[masked:B].."  # the scan resumes after a match


def test_a_value_that_is_a_prefix_of_another():
    values = {"SHORT": b"secret1", "LONG": b"secret12345"}
    one_byte = [bytes([c]) for c in b"secret1234!"]
    for chunks in ([b"secret12345!"], [b"secret1", b"2345!"], [b"secret1234", b"!"], one_byte):
        expected = b"[masked:LONG]!" if b"".join(chunks) == b"secret12345!" else b"[masked:SHORT]234!"
        assert mask(values, chunks) == expected, chunks


def test_same_form_of_two_names_is_shown_under_the_first_name():
    assert mask({"Z_NAME": b"shared-value", "A_NAME": b"shared-value"}, [b"shared-value"]) == b"[masked:A_NAME]"


def test_clean_binary_passes_through_byte_identical():
    data = random.Random(7).randbytes(1 << 20)
    values = {f"S{i}": os.urandom(32) for i in range(20)}
    stream = Masker(values).stream()
    out = [stream.feed(data[i:i + 4096]) for i in range(0, len(data), 4096)]
    assert b"".join(out) + stream.flush() == data


def test_bytes_that_cannot_begin_a_match_are_released_at_once():
    stream = Masker({"A": b"password123"}).stream()
    assert stream.feed(b"prompt> ") == b"prompt> "
    assert stream.feed(b"ok pass") == b"ok "  # "pass" may begin the value: held
    assert stream.feed(b"port\n") == b"passport\n"  # no longer: released with the rest
    assert stream.feed(b"password1") == b""
    assert stream.feed(b"23") == b"[masked:A]"
    assert stream.flush() == b""


def test_held_bytes_are_released_at_end_of_stream():
    stream = Masker({"A": b"password123"}).stream()
    assert stream.feed(b"x passwor") == b"x "
    assert stream.flush() == b"passwor"


def test_short_values_are_reported_and_not_masked():
    masker = Masker({"PIN": b"12345", "EMPTY": b"", "OK": b"123456", "B": b"ab"})
    assert masker.unmasked == ["B", "PIN"]
    stream = masker.stream()
    assert stream.feed(b"12345 ab 123456") + stream.flush() == b"12345 ab [masked:OK]"


def test_no_values_passes_through():
    stream = Masker({"PIN": b"1234"}).stream()
    assert stream.feed(b"1234\x00\xff") == b"1234\x00\xff"
    assert stream.flush() == b""


def test_pty_matches_the_multiline_value_with_crlf():
    value = b"line one\nline two\n"
    on_tty = b"> line one\r\nline two\r\n<"
    assert mask({"KEY": value}, [on_tty], pty=True) == b"> [masked:KEY]<"
    # without the flag the lines are still masked one by one
    assert mask({"KEY": value}, [on_tty]) == b"> [masked:KEY]\r\n[masked:KEY]\r\n<"
    assert mask({"KEY": value}, [bytes([c]) for c in on_tty], pty=True) == b"> [masked:KEY]<"


def test_large_value_in_small_writes():
    pem = b"-----BEGIN KEY-----\n" + b"\n".join(base64.b64encode(os.urandom(48)) for _ in range(3000))
    pem += b"\n-----END KEY-----\n"
    values = {"PEM": pem, "TOKEN": b"tok-0123456789"}
    for form in (pem, pem.hex().encode(), base64.b64encode(pem)):
        data = b"start\n" + form + b"\ntok-0123456789 end"
        chunks = [data[i:i + 61] for i in range(0, len(data), 61)]
        assert mask(values, chunks) == b"start\n[masked:PEM]\n[masked:TOKEN] end"
    # a long form that breaks off near its end is not one match: its lines still are
    broken = pem[:-30] + b"!"
    out = mask(values, [broken[i:i + 97] for i in range(0, len(broken), 97)])
    assert out.count(b"[masked:PEM]") == 3000 and pem[-30:] not in out


def test_long_values_sharing_a_long_prefix():
    stem = b"x" * (2 * HEAD)
    values = {"A": stem + b"-alpha", "B": stem + b"-alphabet", "C": stem + b"-beta"}
    for data, expected in ((stem + b"-alphabet.", b"[masked:B]."), (stem + b"-alphab.", b"[masked:A]b."),
                           (stem + b"-beta-alpha", b"[masked:C]-alpha"), (stem + b"-gamma", stem + b"-gamma")):
        assert mask(values, [bytes([c]) for c in data]) == expected, data
        assert mask(values, [data]) == expected


# ---------------------------------------------------------------------------------------------
# properties: any chunking gives the same output as one feed, which is the reference rule
# ---------------------------------------------------------------------------------------------

_names = st.sampled_from(["A", "B", "C", "D"])
_values = st.dictionaries(_names, st.one_of(st.binary(min_size=1, max_size=12), st.text(min_size=6, max_size=10)
                                            .map(str.encode)), min_size=1, max_size=4)


@st.composite
def _outputs(draw):
    values = draw(_values)
    forms = sorted(f for v in values.values() for f in masked_forms(v))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        parts.append(draw(st.binary(max_size=8)))
        if forms:
            form = draw(st.sampled_from(forms))
            parts.append(form[:draw(st.integers(1, len(form)))] if draw(st.booleans()) else form)
    return values, b"".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_outputs(), st.lists(st.integers(0, 200), max_size=12), st.booleans())
def test_any_chunking_masks_like_the_reference(case, cuts, one_byte):
    values, data = case
    chunks = [data[i:i + 1] for i in range(len(data))] if one_byte else pieces(data, cuts)
    expected = reference(values, data)
    assert mask(values, chunks) == expected
    assert mask(values, [data]) == expected
    unmasked_pieces = re.split(rb"\[masked:[A-D]\]", expected)
    assert not [f for v in values.values() for f in masked_forms(v) for piece in unmasked_pieces if f in piece]


@settings(max_examples=200, deadline=None)
@given(_outputs(), st.lists(st.integers(0, 200), max_size=12))
def test_only_a_possible_start_of_a_form_is_held(case, cuts):
    """Without a complete form, what is held after each write is exactly the longest end of the
    output so far that a form could still continue."""
    values, data = case
    forms = {f for v in values.values() for f in masked_forms(v)}
    if any(f in data for f in forms):
        return
    stream, released, seen = Masker(values).stream(), b"", b""
    for chunk in pieces(data, cuts):
        released += stream.feed(chunk)
        seen += chunk
        held = max((n for n in range(1, len(seen) + 1) if any(len(f) > n and f.startswith(seen[-n:]) for f in forms)),
                   default=0)
        assert released == seen[:len(seen) - held]
    assert released + stream.flush() == data


def test_errors_name_the_short_values():
    refused = errors.MaskValueTooShort(names="PIN, OTP")
    assert refused.reason == "mask_value_too_short" and refused.code is None
    assert refused.exit_code(errors.AREA_RUN) == 23 and "PIN, OTP" in refused.message
    assert "mask_value_unmasked" in errors.WARNINGS  # shorter values under plain --mask: a warning


def test_plain_run_path_does_not_load_the_masker():
    code = ("import kimen.cli.run, kimen.access\nfrom kimen.projection import kmap, resolve, env, files, run\n"
            "import sys; print(sorted(m for m in sys.modules if 'mask' in m or 'ahocorasick' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# real children: what a pipe and a pty actually deliver (the relay wiring reads the same way)
# ---------------------------------------------------------------------------------------------

_CHILD = """
import base64, os, sys, time
value = bytes.fromhex(sys.argv[1])
out = b"token=" + value + b"\\nb64=" + base64.b64encode(value) + b"\\nlines:\\n" + value + b"\\ndone\\n"
for i in range(len(out)):
    os.write(1, out[i:i + 1])
    if i % 7 == 0:
        time.sleep(0.0005)
"""


def _relay(fd: int, stream) -> bytes:
    out = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # a pty's master reads EIO once the child side is closed
            break
        if not chunk:
            break
        out.append(stream.feed(chunk))
    return b"".join(out) + stream.flush()


def test_real_child_writing_one_byte_at_a_time_through_a_pipe():
    value = b"first-line-secret\nsecond-line-secret"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, value.hex()], stdout=subprocess.PIPE)
    out = _relay(child.stdout.fileno(), Masker({"TLS_KEY": value}).stream())
    assert child.wait() == 0
    assert out == b"token=[masked:TLS_KEY]\nb64=[masked:TLS_KEY]\nlines:\n[masked:TLS_KEY]\ndone\n"


def test_real_child_on_a_pty_is_masked_after_the_line_discipline():
    import pty

    value = b"first-line-secret\nsecond-line-secret"
    master, slave = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, value.hex()], stdout=slave, stdin=slave,
                             stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        out = _relay(master, Masker({"TLS_KEY": value}, pty=True).stream())
    finally:
        os.close(master)
    assert child.wait() == 0
    assert out == b"token=[masked:TLS_KEY]\r\nb64=[masked:TLS_KEY]\r\nlines:\r\n[masked:TLS_KEY]\r\ndone\r\n"
