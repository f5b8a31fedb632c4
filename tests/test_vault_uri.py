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
    path = os.fsdecode(raw)
    assert file_uri(path) == f"file:{quote(os.fsencode(path))}"


def test_plain_and_odd_paths():
    assert file_uri("/tmp/a b/vault.db") == "file:/tmp/a%20b/vault.db"
    assert file_uri("/x/%?#ä") == "file:/x/%25%3F%23%C3%A4"
