"""`secret generate` values (kimen/generate.py): charsets, encodings, strength, option checks, and a
chi-square check that the draw is uniform (which a modulo-biased draw fails)."""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections import Counter

import pytest

from kimen import errors, generate, output

SYMBOLS_EXTRA = set("-_.~!@#%^*+=:?")


def _recipe(**kw):
    with output.capture_warnings() as caught:
        made = generate.recipe(**kw)
    return made, [w["reason"] for w in caught]


@pytest.mark.parametrize(("charset", "alphabet"), [
    ("alnum", set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")),
    ("alpha", set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")),
    ("digits", set("0123456789")),
    ("hex", set("0123456789abcdef")),
    ("base32", set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
    ("symbols", set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") | SYMBOLS_EXTRA),
])
def test_text_values_use_exactly_their_charset(charset, alphabet):
    made, _ = _recipe(length=4096, charset=charset)
    value = generate.generate(made)
    assert len(value) == 4096 and set(value.decode("ascii")) == alphabet  # every member drawn, nothing else
    assert made.bits == pytest.approx(4096 * math.log2(len(alphabet)))


def test_symbols_hold_no_shell_metacharacter_or_quote():
    assert not set(generate.CHARSETS["symbols"]) & set("'\"\\`$ \t\n;&|<>()[]{}*?~!#") - SYMBOLS_EXTRA
    assert not set(generate.CHARSETS["symbols"]) & set("'\"\\`$ ;&|<>()")


def test_defaults_and_description():
    made, warned = _recipe()
    assert (made.length, made.charset, int(made.bits), warned) == (32, "alnum", 190, [])
    assert made.describe() == "32 alnum chars"
    assert made.as_json() == {"length": 32, "charset": "alnum", "bits": 190}
    value = generate.generate(made)
    assert len(value) == 32 and value.isalnum()
    assert generate.generate(made) != value  # fresh each time


@pytest.mark.parametrize(("encoding", "decode", "size"), [
    ("hex", binascii.unhexlify, 96),
    ("base64", base64.b64decode, 64),
    ("base64url", base64.urlsafe_b64decode, 64),
    ("raw", bytes, 48),
])
def test_bytes_mode_encodings(encoding, decode, size):
    made, warned = _recipe(nbytes=48, encoding=encoding)
    value = generate.generate(made)
    assert len(value) == size and len(decode(value)) == 48
    assert (made.bits, warned) == (384, [])
    assert made.as_json() == {"bytes": 48, "encoding": encoding, "bits": 384}
    if encoding == "base64url":
        assert not set(value) & set(b"+/")


def test_bytes_mode_defaults_to_hex_and_reaches_the_limits():
    made, _ = _recipe(nbytes=1)
    assert (made.encoding, made.describe()) == ("hex", "1 byte (hex)")
    assert len(generate.generate(_recipe(nbytes=65536)[0])) == 131072


@pytest.mark.parametrize(("kw", "bits", "weak"), [
    ({"length": 6, "charset": "digits"}, 19, True),  # a PIN: allowed, warned
    ({"length": 19, "charset": "digits"}, 63, True),
    ({"length": 20, "charset": "digits"}, 66, False),
    ({"length": 16, "charset": "hex"}, 64, False),
    ({"length": 15, "charset": "hex"}, 60, True),
    ({"length": 13, "charset": "base32"}, 65, False),
    ({"nbytes": 7}, 56, True),
    ({"nbytes": 8}, 64, False),
])
def test_strength_and_the_weak_warning(kw, bits, weak):
    made, warned = _recipe(**kw)
    assert int(made.bits) == bits
    assert warned == (["generated_value_weak"] if weak else [])


@pytest.mark.parametrize(("kw", "error"), [
    ({"nbytes": 8, "length": 8}, errors.ConflictingGenerateOptions),
    ({"nbytes": 8, "charset": "hex"}, errors.ConflictingGenerateOptions),
    ({"encoding": "hex"}, errors.ConflictingGenerateOptions),
    ({"length": 8, "encoding": "raw"}, errors.ConflictingGenerateOptions),
    ({"length": 0}, errors.InvalidGenerateOptions),
    ({"length": 4097}, errors.InvalidGenerateOptions),
    ({"length": -1}, errors.InvalidGenerateOptions),
    ({"nbytes": 0}, errors.InvalidGenerateOptions),
    ({"nbytes": 65537}, errors.InvalidGenerateOptions),
    ({"charset": "emoji"}, errors.InvalidGenerateOptions),
    ({"nbytes": 8, "encoding": "base85"}, errors.InvalidGenerateOptions),
])
def test_option_conflicts_and_ranges(kw, error):
    with pytest.raises(error) as caught:
        generate.recipe(**kw)
    assert caught.value.exit_code(11) == 11


def _chi_square(counts: Counter, alphabet: str, draws: int) -> float:
    expected = draws / len(alphabet)
    return sum((counts.get(ch, 0) - expected) ** 2 / expected for ch in alphabet)


def _critical(dof: int, z: float = 6.0) -> float:
    """Wilson-Hilferty: the chi-square value exceeded with probability about 1e-9 (z = 6)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("charset", ["alnum", "symbols", "digits"])
def test_draw_is_uniform(charset):
    """Chi-square over 128 Ki characters: a uniform draw passes with probability 1 - 1e-9; the same
    test flags a `byte % len(alphabet)` draw (the bias `secrets.choice` avoids) by a wide margin."""
    alphabet = generate.CHARSETS[charset]
    made, _ = _recipe(length=4096, charset=charset)
    counts: Counter = Counter()
    for _ in range(32):
        counts.update(generate.generate(made).decode("ascii"))
    draws = 32 * 4096
    critical = _critical(len(alphabet) - 1)
    assert _chi_square(counts, alphabet, draws) < critical
    if 256 % len(alphabet) >= 8:  # digits: a 4 % bias needs more draws than this test makes
        biased = Counter(alphabet[b % len(alphabet)] for b in os.urandom(draws))
        assert _chi_square(biased, alphabet, draws) > 3 * critical


def test_values_come_from_the_os_csprng_only():
    """The module draws through `secrets` alone (never `random`, whose seed would make values
    predictable): seeding `random` identically before two draws gives two different values."""
    import ast
    import inspect
    import random

    tree = ast.parse(inspect.getsource(generate))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names} | {node.module for node in ast.walk(tree)
                                            if isinstance(node, ast.ImportFrom) and node.module}
    assert "secrets" in imported and not {"random", "numpy"} & imported
    drawn = {f"{node.value.id}.{node.attr}" for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "secrets"}
    assert drawn == {"secrets.choice", "secrets.token_bytes"}
    made, _ = _recipe()
    random.seed(0)
    first = generate.generate(made)
    random.seed(0)
    assert generate.generate(made) != first
