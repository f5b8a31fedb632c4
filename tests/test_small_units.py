"""Pure helpers: durations, sizes, paths (identical to platformdirs), dotenv parsing, names."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kimen import dotenv, durations, errors, paths, values


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("7d", 604800),
                                          ("45", 45), ("2h", 7200), ("1d1h1m1s", 90061)])
def test_parse_duration(text, seconds):
    assert durations.parse_duration(text) == seconds
    assert durations.parse_duration(durations.format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "1x", "m", "1.5h", "-1m", "1h 30m", "h1", "1hh",
                                  "\u0661\u0665m", "\u0967\u0966", "1_0m", "+5m", "\u00b2"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        durations.parse_duration(text)


def _duration_by_regex(text: str) -> int | None:
    """The grammar as a regular expression: ASCII digits, or groups of digits and a unit."""
    import re

    text = text.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    if not re.fullmatch(r"(?:[0-9]+[smhd])+", text):
        return None
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in re.findall(r"([0-9]+)([smhd])", text))


@given(st.text(alphabet="0123456789smhdx .\u0661\u00b2-", max_size=12))
def test_parse_duration_is_its_grammar(text):
    """The hand-written reader accepts exactly the regular grammar, with the same value."""
    expected = _duration_by_regex(text)
    try:
        got: int | None = durations.parse_duration(text, allow_zero=True)
    except ValueError:
        got = None
    assert got == expected


def test_zero_duration_allowed_when_asked():
    assert durations.parse_duration("0", allow_zero=True) == 0


@pytest.mark.parametrize("text,kib", [("64MiB", 65536), ("8192", 8192), ("1GiB", 1048576), ("512KiB", 512)])
def test_parse_size(text, kib):
    assert durations.parse_size_kib(text) == kib


@pytest.mark.parametrize("text", ["", "64MB", "1.5GiB", "-1", "MiB"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        durations.parse_size_kib(text)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the hand-written XDG rules are Linux-only")
@pytest.mark.parametrize("xdg", [None, "", "relative/dir", "/abs/xdg"])
@pytest.mark.parametrize("home", ["/home/someone", "/home/someone/", "relative-home"])
def test_paths_match_platformdirs(monkeypatch, xdg, home):
    import platformdirs

    monkeypatch.setenv("HOME", home)
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        if xdg is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, xdg)
    assert paths.config_dir() == platformdirs.user_config_dir("kimen", appauthor=False)
    assert paths.cache_dir() == platformdirs.user_cache_dir("kimen", appauthor=False)
    assert paths.state_dir() == platformdirs.user_state_dir("kimen", appauthor=False)


def test_session_dir_precedence(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/user/7", "KIMEN_SESSION_DIR": "/x/s"}
    assert paths.session_dir(env) == "/x/s"
    env["KIMEN_SESSION_DIR"] = ""
    assert paths.session_dir(env) == "/run/user/7/kimen"
    env["XDG_RUNTIME_DIR"] = "/run/user/7/../7/"
    assert paths.session_dir(env) == "/run/user/7/kimen"
    cache = os.path.join(str(tmp_path), ".cache", "kimen", "session")
    env["XDG_RUNTIME_DIR"] = "run/user/7"  # relative: invalid, as for the runtime base
    assert paths.session_dir(env) == cache
    del env["XDG_RUNTIME_DIR"]
    assert paths.session_dir(env) == cache


def test_absolute_is_lexical():
    assert paths.absolute("a/../b/./c", cwd="/w") == "/w/b/c"
    assert paths.absolute("/x//y/") == "/x/y"


@pytest.mark.parametrize("name", ["prod.database_url", "ci.GITHUB_TOKEN", "db-2.password", "a", "_x", "9",
                                  "a.-b", "x" * 128])
def test_valid_secret_names(name):
    assert values.check_secret_name(name) == name


@pytest.mark.parametrize("name", ["-a", "a..b", ".a", "a.", "a b", "a:b", "Secret:x", "é", "x" * 129, "a/b",
                                  '"x"', "a#b", "a\nb", "a=b"])
def test_invalid_secret_names(name):
    with pytest.raises(errors.InvalidSecretName):
        values.check_secret_name(name)


@given(st.text(alphabet="aZ9_-.\u00e9 ", max_size=8) | st.text(max_size=4) | st.just("x" * 128 + "y"))
def test_secret_name_rule_is_the_documented_pattern(name):
    import re

    expected = re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*", name) is not None and len(name) <= 128
    assert values.is_valid_secret_name(name) is expected


def test_empty_secret_name():
    with pytest.raises(errors.EmptySecretName):
        values.check_secret_name("")


def test_invalid_name_message_is_bounded_and_printable():
    with pytest.raises(errors.InvalidSecretName) as info:
        values.check_secret_name("a\x1bb" + "x" * 500)
    err = info.value
    assert "\x1b" not in err.message and len(err.message) < 250


DOTENV = b"""# comment
export A=1
B = spaced value # trailing comment
C='single $quoted \\n'
D="double \\"esc\\" \\\\ \\n\\t$"
E=
F=a#b
G="multi
line"
H='also
multi'
   # indented comment

I=last\r
"""


def test_dotenv_parse_variations():
    got = {(e.key, e.line): e.value for e in dotenv.parse(DOTENV)}
    assert got == {
        ("A", 2): b"1", ("B", 3): b"spaced value", ("C", 4): b"single $quoted \\n",
        ("D", 5): b'double "esc" \\ \n\t$', ("E", 6): b"", ("F", 7): b"a#b", ("G", 8): b"multi\nline",
        ("H", 10): b"also\nmulti", ("I", 14): b"last",
    }


def test_dotenv_bytes_are_exact():
    raw = b"K=\xff\xfe caf\xc3\xa9\n"
    assert dotenv.parse(raw)[0].value == b"\xff\xfe caf\xc3\xa9"


@pytest.mark.parametrize("text,line", [(b"A=1\nNOPE\n", 2), (b"A='open\n\n", 1), (b"1A=x\n", 1),
                                       (b'A="x" junk\n', 1), (b"=x\n", 1)])
def test_dotenv_errors_name_the_line_only(text, line):
    with pytest.raises(errors.InvalidDotenv) as info:
        dotenv.parse(text)
    err = info.value
    assert err.fields["line"] == line
    assert b"junk" not in err.message.encode() and "NOPE" not in err.message and "open" not in err.message
