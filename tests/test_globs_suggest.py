"""The one glob grammar (docs/profiles.md "Globs"), did-you-mean, and the git questions."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kimen import gitcheck
from kimen.globs import Glob, _match, select
from kimen.suggest import hint, nearest

GLOB_TABLE = [
    ("prod.*", "prod.x", True),
    ("prod.*", "prod.x.y", False),
    ("prod.*", "prod", False),
    ("prod.**", "prod.x", True),
    ("prod.**", "prod.x.y", True),
    ("prod.**", "prod", False),
    ("**", "a", True),
    ("**", "a.b.c", True),
    ("*", "a", True),
    ("*", "a.b", False),
    ("a?c", "abc", True),
    ("a?c", "a.c", False),
    ("a?c", "ac", False),
    ("p*d.x", "prod.x", True),
    ("*.db_*", "prod.db_url", True),
    ("*.db_*", "prod.x.db_url", False),
    ("**.db_url", "a.b.db_url", True),
    ("prod.x", "prod.x", True),
    ("prod.x", "prod.xy", False),
    ("a.**.z", "a.b.c.z", True),
    ("a.**.z", "a.z", False),
]


@pytest.mark.parametrize(("glob", "name", "matches"), GLOB_TABLE)
def test_glob_table(glob: str, name: str, matches: bool) -> None:
    assert Glob(glob).match(name) is matches


def test_select_is_a_union_in_order() -> None:
    names = ["dev.a", "prod.a", "prod.b.c", "prod.b"]
    assert select([Glob("prod.*"), Glob("dev.*")], names) == ["dev.a", "prod.a", "prod.b"]


_PIECES = st.lists(st.sampled_from(["a", "b", ".", "ab.", "*", "**", "?"]), max_size=5).map("".join)


@given(_PIECES, st.lists(st.sampled_from(["a", "b", ".", "ab"]), max_size=6).map("".join))
def test_the_fast_shapes_match_as_the_walker_does(glob: str, name: str) -> None:
    """`**`, a literal and `prefix**` skip the walker; every glob answers as the walker would."""
    compiled = Glob(glob)
    assert compiled.match(name) is _match(compiled._tokens, 0, name, 0, {})


def test_glob_matcher_is_not_exponential() -> None:
    name = "a" * 120 + "b"
    assert not Glob("*a*a*a*a*a*a*a*a*a*a*c").match(name)


def test_nearest() -> None:
    assert nearest("secert", ["secret", "session", "vault"]) == ["secret"]
    assert nearest("xyzzy", ["secret"]) == []
    assert nearest("ab", ["ac", "ad", "zz"]) == ["ac", "ad"]  # ties: all, sorted
    assert nearest("prod.api_ky", ["prod.api_key", "prod.api_kez", "dev.x"], most=3) == [
        "prod.api_key", "prod.api_kez"]  # by distance, then name
    assert hint("secert", ["secret"]) == "did you mean secret?"
    assert hint("qqqqqq", ["secret"]) is None


def test_gitcheck(tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = gitcheck.git_environ({"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_DIR": "/nowhere",
                                "KIMEN_PASSPHRASE": "x", "GIT_AUTHOR_NAME": "a"})
    assert "GIT_DIR" not in env and "KIMEN_PASSPHRASE" not in env and env["GIT_AUTHOR_NAME"] == "a"
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
    (repo / ".gitignore").write_text(".env*\n")
    hostile = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_DIR": str(tmp_path / "elsewhere")}
    assert gitcheck.is_ignored(str(repo / ".env.runtime"), hostile) is True
    assert gitcheck.is_ignored(str(repo / "key.txt"), hostile) is False
    outside = tmp_path / "outside"
    outside.mkdir()
    assert gitcheck.is_ignored(str(outside / "x"), hostile) is None
    assert gitcheck.work_tree_top(str(repo / "a" / "b")) == str(repo)
