"""Envfile formats: every accepted value reads back as exactly one variable with the
exact value — dotenv through python-dotenv and `bash -c 'set -a; . FILE'`, shell through bash,
docker by its line rule, json through json.load — and everything else is refused."""

from __future__ import annotations

import io
import json
import subprocess

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen import errors
from kimen.projection import envfmt

NASTY = [
    "", "plain", "with space", "a'b", 'a"b', "a\\b", "ends\\", "$HOME", "${HOME}", "`id`", "$(id)",
    "line1\nline2", "x\nB=injected", "#not a comment", " lead", "trail ", "tab\there", "é ü",
    "a=b", "'", '"', "\\n", "${", "$", "--", "http://u:p@h/x?a=b&c#d", "mixed ' and $x", "\x1b[31m",
]
_values = st.one_of(st.sampled_from(NASTY), st.text(alphabet=st.sampled_from(list("ab $'\"\\`(){}#=\n\t\r\x00é")),
                                                    max_size=12))
# Variables bash keeps to itself: read-only (UID, EUID, PPID), numbers it keeps (OPTIND, SHLVL) or
# values that change as they are read. A file that sets them reads back differently under bash
# whatever its encoding (docs/run.md).
BASH_OWNED = frozenset({"UID", "EUID", "PPID", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "BASHPID", "HISTCMD",
                        "GROUPS", "OPTIND", "SHLVL"})
_vars = st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True).filter(lambda n: n not in BASH_OWNED),
                        _values, min_size=1, max_size=5)


def _bash_env(path: str) -> dict[bytes, bytes]:
    # `env` by its path: the file may set PATH
    out = subprocess.run(["bash", "-c", 'set -a; . "$1"; /usr/bin/env -0', "_", path], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, check=True).stdout
    return dict(item.split(b"=", 1) for item in out.split(b"\0") if item)


def _encode(fmt: str, variables: dict[str, str]) -> bytes | None:
    try:
        return envfmt.render(fmt, [(k, v.encode()) for k, v in variables.items()])
    except errors.ValueNotRepresentable as exc:
        assert exc.fields["name"] in variables
        return None


@settings(max_examples=120, deadline=None)
@given(variables=_vars)
def test_dotenv_round_trips_through_python_dotenv_and_bash(tmp_path_factory, variables):
    data = _encode("dotenv", variables)
    if data is None:
        return
    path = tmp_path_factory.mktemp("e") / "f.env"
    path.write_bytes(data)
    assert dict(dotenv_values(stream=io.StringIO(data.decode()))) == variables
    got = _bash_env(str(path))
    for name, value in variables.items():
        assert got[name.encode()] == value.encode()
    assert data.count(b"=") >= len(variables)


@settings(max_examples=120, deadline=None)
@given(variables=_vars)
def test_shell_round_trips_through_bash(tmp_path_factory, variables):
    data = _encode("shell", variables)
    if data is None:
        assert any("\0" in v for v in variables.values())
        return
    path = tmp_path_factory.mktemp("e") / "f.sh"
    path.write_bytes(data)
    got = _bash_env(str(path))
    for name, value in variables.items():
        assert got[name.encode()] == value.encode()


@settings(max_examples=120, deadline=None)
@given(variables=_vars)
def test_docker_and_json_round_trip(variables):
    docker = _encode("docker", variables)
    if docker is None:
        assert any(set(v) & {"\n", "\r", "\0"} for v in variables.values())
    else:
        lines = docker.decode().split("\n")
        assert lines[-1] == ""
        assert dict(line.split("=", 1) for line in lines[:-1]) == variables
    doc = json.loads(_encode("json", variables))
    assert doc == variables and list(doc) == sorted(variables)


def test_dotenv_accepts_the_documented_shapes():
    cases = {
        "plain.value-1:2@x+y,z/": b"A=plain.value-1:2@x+y,z/\n",
        "": b"A=''\n",
        "has space $x `y` $(z)": b"A='has space $x `y` $(z)'\n",
        "it's \\ \"q\"": b'A="it\'s \\\\ \\"q\\""\n',
        "two\nlines": b"A='two\nlines'\n",
    }
    for value, line in cases.items():
        assert envfmt.render("dotenv", [("A", value.encode())]) == line


@pytest.mark.parametrize("value", [b"a\0b", b"a\rb", b"\xff", b"it's $HOME", b"a'${b}", b"a'`b`", b"'\\"])
def test_dotenv_refuses_what_readers_disagree_on(value):
    with pytest.raises(errors.ValueNotRepresentable) as info:
        envfmt.render("dotenv", [("OK", b"fine"), ("BAD", value)])
    assert info.value.fields["name"] == "BAD"
    assert "--format shell" in info.value.hint_text


def test_json_refuses_invalid_utf8_and_docker_multiline():
    with pytest.raises(errors.ValueNotRepresentable):
        envfmt.render("json", [("A", b"\xff")])
    for value in (b"a\nb", b"\xff", b"x" * (64 * 1024)):
        with pytest.raises(errors.ValueNotRepresentable):
            envfmt.render("docker", [("A", value)])
    assert envfmt.render("shell", [("A", b"\xff'")]) == b"export A='\xff'\\'''\n"


@settings(max_examples=400)
@given(st.binary(min_size=1, max_size=12) | st.text(alphabet=st.sampled_from(list("aZ09_./:@+,-~ $'\"é")), min_size=1,
                                                    max_size=12).map(str.encode))
def test_dotenv_bare_set_is_the_documented_pattern(value):
    """The unquoted-value rule is a byte set (no `re` on the `direnv --unsafe-stdout` path); it
    accepts exactly the non-empty values `[A-Za-z0-9_./:@+,-]+` matches."""
    import re

    expected = re.fullmatch(rb"[A-Za-z0-9_./:@+,-]+", value) is not None
    assert envfmt._DOTENV_BARE.issuperset(value) == expected
