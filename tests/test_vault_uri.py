"""The vault's `file:` URI quotes a path's bytes exactly as `urllib.parse.quote` does (the vault
package spares that import on every command that opens a vault)."""

from __future__ import annotations

import os
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from kimen.vault.sqlite import file_uri


@given(st.binary(max_size=40))
def test_file_uri_quotes_like_urllib(raw):
    """Like urllib, but a path starting with `//` keeps one slash there: `//x` is `/x` to the
    kernel, while `file://x` would name a host `x` to SQLite."""
    path = os.fsdecode(raw)
    expected = b"/" + raw.lstrip(b"/") if raw.startswith(b"//") else raw
    assert file_uri(path) == f"file:{quote(expected)}"


def test_leading_double_slashes_are_one():
    assert file_uri("//tmp/v.db") == file_uri("///tmp/v.db") == "file:/tmp/v.db"
    assert file_uri("//") == "file:/"


def test_plain_and_odd_paths():
    assert file_uri("/tmp/a b/vault.db") == "file:/tmp/a%20b/vault.db"
    assert file_uri("/x/%?#ä") == "file:/x/%25%3F%23%C3%A4"
