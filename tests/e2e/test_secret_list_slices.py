"""`secret list --json` through the installed `kimen`: on a vault large enough to be written in
several slices it is byte for byte the document the general encoder writes (`--match '**'` takes
that path), and a row a byte change gave another type is `vault_tampered`, never an internal
error (docs/vault.md, "Listing in JSON")."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import SMALL_KDF

COUNT = 13_000  # over three times `kimen.vault.listing.SLICE_ROWS`: three slices, two cuts


@pytest.fixture
def big(kimen):
    kimen.ok("vault", "init", *SMALL_KDF, env=kimen.with_pass())
    dotenv = "".join(f"n{i:05d}=value-{i}\n" for i in range(COUNT)).encode()
    kimen.ok("secret", "import", "-", "--prefix", "bulk.", input=dotenv, env=kimen.with_pass())
    kimen.set("app.token", "t")
    return kimen


@pytest.mark.parametrize("prefix", [[], ["--prefix", "bulk.n0"], ["--prefix", "bulk.n09"], ["--prefix", "none"]])
def test_the_sliced_document_is_the_general_one(big, prefix):
    sliced = big.ok("secret", "list", "--json", *prefix).out
    general = big.ok("secret", "list", "--json", "--match", "**", *prefix).out
    assert sliced == general
    doc = json.loads(sliced)
    assert doc["count"] == len(doc["names"]) == len(doc["secrets"])
    assert doc["names"] == sorted(doc["names"]) == [s["name"] for s in doc["secrets"]]
    if not prefix:
        assert doc["count"] == COUNT + 1


@pytest.mark.parametrize("column, bad", [("created_at", b"t"), ("revision", 1.5), ("size", "x"),
                                         ("updated_at", b"\xff")])
def test_a_field_of_another_type_is_tampered(kimen, column, bad):
    kimen.init_vault()
    for name in ("app.a", "app.b", "app.c"):
        kimen.set(name, "v")
    conn = sqlite3.connect(kimen.vault)
    with conn:
        conn.execute(f"UPDATE secrets SET {column}=? WHERE name='app.b'", (bad,))
    conn.close()
    kimen.fail(15, "vault_tampered", "secret", "list")
    kimen.fail(15, "vault_tampered", "secret", "list", "--match", "app.*")
    assert "app.b" in kimen.ok("secret", "list", "--long").stdout  # the human listing shows what is stored


@pytest.mark.parametrize("change, types", [
    ("revision='1', created_at=5", ("text", "integer", "text")),  # once let through: their quote counts cancelled out
    ("created_at=5", ("integer", "integer", "text")),
    ("updated_at=7.5", ("integer", "text", "real")),
])
def test_a_number_time_or_a_text_revision_is_tampered(kimen, change, types):
    """A time stored as a number, alone or with a text "1" revision, is refused. The columns'
    types are removed first, as a byte change can (a TEXT column would otherwise store 5 as "5",
    and an INTEGER one a text "1" as 1)."""
    kimen.init_vault()
    for name in ("app.a", "app.b", "app.c"):
        kimen.set(name, "v")
    conn = sqlite3.connect(kimen.vault)
    with conn:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_schema SET sql=replace(replace(sql, 'INTEGER', ''), 'TEXT', '')"
                     " WHERE name='secrets'")
    conn.close()
    conn = sqlite3.connect(kimen.vault)
    with conn:
        conn.execute(f"UPDATE secrets SET {change} WHERE name='app.b'")
    assert conn.execute("SELECT typeof(revision), typeof(created_at), typeof(updated_at) FROM secrets"
                        " WHERE name='app.b'").fetchone() == types
    conn.close()
    kimen.fail(15, "vault_tampered", "secret", "list")
    kimen.fail(15, "vault_tampered", "secret", "list", "--match", "app.*")
    assert "app.b" in kimen.ok("secret", "list", "--long").stdout


@pytest.mark.parametrize("form", [["--json"], [], ["--long"], ["--json", "--match", "**"]])
def test_a_prefix_that_is_not_utf8_lists_nothing(kimen, form):
    """A non-UTF-8 argv byte reaches SQLite as a lone surrogate, which it cannot bind: no name (they
    are ASCII) starts with it, in every form of the listing."""
    kimen.init_vault()
    kimen.set("app.token", "t")
    done = kimen.ok("secret", "list", "--prefix", "\udcff", *form)
    if "--json" in form:
        assert done.json()["names"] == [] and done.json()["count"] == 0
    else:
        assert done.out == b""
