"""`secret list --json` writes its envelope directly (100k rows): the text must be exactly what the
general encoder writes, and any stored value that would need escaping falls back to it."""

from __future__ import annotations

import pytest

from kimen import errors, output
from kimen.cli.secret import _envelope, _list_json


def _general(rows):
    secrets = [{"name": n, "revision": r, "size": s, "created_at": c, "updated_at": u} for n, r, s, c, u in rows]
    return output.dumps(output.success_envelope("list", {"names": [row[0] for row in rows], "count": len(rows),
                                                         "secrets": secrets})).encode()


@pytest.fixture(autouse=True)
def _warnings_printed_again():
    """Collecting warnings is process state: give later tests the default (printed) back."""
    yield
    output.collect_warnings(False)


ROWS = [("app.db_password", 3, 17, "2026-01-02T03:04:05Z", "2026-02-03T04:05:06Z"),
        ("Z-9_x", 1, 0, "2026-01-02T03:04:05.123456Z", "2026-01-02T03:04:05.123456Z")]


@pytest.mark.parametrize("rows", [[], ROWS[:1], ROWS])
def test_direct_text_is_the_general_encoding(rows):
    output.collect_warnings(True)
    assert b"".join(_list_json(rows)) == _general(rows)


def test_warnings_are_kept():
    output.collect_warnings(True)
    output.warn("loose", reason="vault_permissions_loose")
    text = b"".join(_list_json(ROWS))
    output.collect_warnings(True)
    output.warn("loose", reason="vault_permissions_loose")
    assert text == _general(ROWS)


@pytest.mark.parametrize("bad", [
    ('a"b', 1, 1, "t", "t"), ("a\\b", 1, 1, "t", "t"), ("a\nb", 1, 1, "t", "t"), ("é", 1, 1, "t", "t"),
    ("a", 1.5, 1, "t", "t"), ("a", 1, "2", "t", "t"), ("a", 1, 1, None, "t"), ("a", True, 1, "t", "t"),
])
def test_a_value_needing_escapes_falls_back(bad):
    assert _list_json([ROWS[0], bad]) is None


def _vault_with(tmp_path, rows, n):
    """A real vault file whose secrets table holds `rows` as stored (values of any SQLite type)."""
    import sqlite3

    from kimen import vault
    from kimen.sensitive import Sensitive
    from kimen.store import Change, KdfParams

    path = str(tmp_path / f"v{n}.db")
    store = vault.create_vault(path, Sensitive(b"pw"), KdfParams(memory_kib=8192, time=1, parallelism=1)).unlock(
        Sensitive(b"pw"))
    store.write([Change("set", f"seed.n{i}", b"v") for i in range(len(rows))])
    store.close()
    conn = sqlite3.connect(path)
    with conn:
        for i, (name, rev, size, created, updated) in enumerate(rows):
            conn.execute("UPDATE secrets SET name=?, revision=?, size=?, created_at=?, updated_at=? WHERE name=?",
                         (name, rev, size, created, updated, f"seed.n{i}"))
    conn.close()
    return vault.Vault.open(path)


@pytest.mark.parametrize("odd", [
    None, ('a"b', 1, 1, "t", "t"), ("a\\b", 1, 1, "t", "t"), ("a\nb", 1, 1, "t", "t"), ("é", 1, 1, "t", "t"),
    ("a", 1.5, 1, "t", "t"), ("a", 1, "2", "t", "t"), ("a", 1, 1, 5, "t"), ("a\x7f", 1, 1, "t", "t"),
    ("a/b", 1, 1, "t", "t"), (7, 1, 1, "t", "t"), ("a", "3", 1, "t", "t"), ("a", 1, 2.5, "t", "t"),
    ("a", 1, 1, "t", 7.5), ("a", 2**63 - 1, 1, "t", "t"), ("a", 1, "x", "t", "t"), ("a", 1, 1, "t", "a\tb"),
])
def test_sqlite_built_arrays_are_the_general_encoding_or_refused(tmp_path, odd):
    """The arrays SQLite builds, in the envelope, are the general encoder's text for the same rows
    (shuffled on insert, read sorted); any row it would write differently makes it refuse (None)."""
    from kimen.cli.secret import _envelope

    rows = [ROWS[1], ROWS[0], *([odd] if odd else [])]
    v = _vault_with(tmp_path, rows, 0)
    try:
        for prefix in (None, "app.", "Z", "nothing"):
            built = v.list_json(prefix)
            output.collect_warnings(True)
            if built is None:
                assert odd is not None and odd[0] not in ("a/b", "a\x7f"), "a plain row was refused"
                continue
            try:
                stored = v.list_rows(prefix)
            except errors.VaultTampered:
                raise AssertionError("SQLite wrote arrays for a tampered name") from None
            output.collect_warnings(True)
            assert b"".join(_envelope(*built)) == _general(stored), prefix
    finally:
        v.close()


def test_a_blob_name_is_refused_then_tampered(tmp_path):
    v = _vault_with(tmp_path, [ROWS[0], (b"app.x", 1, 1, "t", "t")], 1)
    try:
        assert v.list_json() is None
        with pytest.raises(errors.VaultTampered):
            v.list_rows()
    finally:
        v.close()


def test_the_arrays_are_in_name_order_whatever_the_insertion_order(tmp_path):
    """Rows stored in another order than their names' (row ids shuffled): SQLite's arrays still
    list them by name, as the general encoder does."""
    import random

    from kimen import vault
    from kimen.sensitive import Sensitive
    from kimen.store import Change, KdfParams

    names = [f"app.n{i:03d}" for i in range(300)]
    random.Random(7).shuffle(names)
    path = str(tmp_path / "shuffled.db")
    store = vault.create_vault(path, Sensitive(b"pw"), KdfParams(memory_kib=8192, time=1, parallelism=1)).unlock(
        Sensitive(b"pw"))
    for name in names:  # one write each: the row ids follow the shuffled order
        store.write([Change("set", name, b"v")])
    store.close()
    v = vault.Vault.open(path)
    try:
        for prefix in (None, "app.n1"):
            built = v.list_json(prefix)
            assert built is not None
            output.collect_warnings(True)
            stored = v.list_rows(prefix)
            assert [row[0] for row in stored] == sorted(n for n in names if n.startswith(prefix or ""))
            output.collect_warnings(True)
            assert b"".join(_envelope(*built)) == _general(stored)
    finally:
        v.close()
