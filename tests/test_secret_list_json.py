"""`secret list --json` writes the text SQLite builds, a slice of objects at a time (100k rows): the
document must be exactly what the general encoder writes for the same rows, and a slice SQLite
would write differently (a tampered file) is encoded row by row."""

from __future__ import annotations

import random

import pytest

from kimen import errors, output
from kimen.cli.secret import _write_listing
from kimen.vault import listing


def _general(rows):
    secrets = [{"name": n, "revision": r, "size": s, "created_at": c, "updated_at": u} for n, r, s, c, u in rows]
    return (output.dumps(output.success_envelope("list", {"names": [row[0] for row in rows], "count": len(rows),
                                                          "secrets": secrets})) + "\n").encode()


@pytest.fixture(autouse=True)
def _warnings_printed_again():
    """Collecting warnings is process state: give later tests the default (printed) back."""
    yield
    output.collect_warnings(False)


ROWS = [("app.db_password", 3, 17, "2026-01-02T03:04:05Z", "2026-02-03T04:05:06Z"),
        ("Z-9_x", 1, 0, "2026-01-02T03:04:05.123456Z", "2026-01-02T03:04:05.123456Z")]


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
    # As a byte change can: no column affinity (a text "3" stays text, a 5 in a time stays a
    # number), and a NULL needs the NOT NULL constraints gone too.
    with conn:
        conn.execute("PRAGMA writable_schema=ON")
        conn.execute("UPDATE sqlite_schema SET sql=replace(replace(replace(sql, 'NOT NULL', ''), 'INTEGER', ''),"
                     " 'TEXT', '') WHERE name='secrets'")
    conn.close()
    conn = sqlite3.connect(path)
    with conn:
        for i, (name, rev, size, created, updated) in enumerate(rows):
            conn.execute("UPDATE secrets SET name=?, revision=?, size=?, created_at=?, updated_at=? WHERE name=?",
                         (name, rev, size, created, updated, f"seed.n{i}"))
    conn.close()
    return vault.Vault.open(path)


def _written(v, prefix, capsysbinary):
    """What `secret list --json` writes from SQLite's text, with the parts `objects()` gave (the
    listing is read twice in one snapshot); None when SQLite's text was refused."""
    with v.json_listing(prefix) as built:
        if built is None:
            return None, []
        parts = list(built.objects())
        capsysbinary.readouterr()
        _write_listing(built)
    return capsysbinary.readouterr().out, parts


def _typed(row):
    return [type(field) for field in row] == [str, int, int, str, str]


def _stored(v, prefix):
    try:
        return [(i.name, i.revision, i.size, i.created_at, i.updated_at) for i in v.list(prefix)]
    except errors.VaultTampered:
        raise AssertionError("SQLite wrote arrays for a tampered name") from None


@pytest.mark.parametrize("slice_rows", [1, 2, 4096])
@pytest.mark.parametrize("odd", [
    None, ('a"b', 1, 1, "t", "t"), ("a\\b", 1, 1, "t", "t"), ("a\nb", 1, 1, "t", "t"), ("é", 1, 1, "t", "t"),
    ("a", 1.5, 1, "t", "t"), ("a", 1, "2", "t", "t"), ("a", 1, 1, 5, "t"), ("a\x7f", 1, 1, "t", "t"),
    ("a/b", 1, 1, "t", "t"), (7, 1, 1, "t", "t"), ("a", "3", 1, "t", "t"), ("a", 1, 2.5, "t", "t"),
    ("a", 1, 1, "t", 7.5), ("a", 2**63 - 1, 1, "t", "t"), ("a", 1, "x", "t", "t"), ("a", 1, 1, "t", "a\tb"),
    ("a", None, 1, "t", "t"), ("a", 1, None, "t", "t"), ("a", 1, 1, None, "t"), ("a", float("inf"), 1, "t", "t"),
    ("a", 1, 1, "t", "é"), ("a", 2**63 - 1, 2, "t", "t"), ("a", 1, 1, "t", None), ("a", 1, 1, 2.5, "t"),
    ("a", 1, 1, "", ""),
    # two changes a quote count of the text would let through (their quotes cancel out): a text
    # number where a number belongs, and a time that is not text
    ("a", "1", 1, None, "t"), ("a", 1, "2", "t", 5), ("a", "1", "2", 3, 4.5),
])
def test_the_listing_is_the_general_encoding(tmp_path, monkeypatch, capsysbinary, odd, slice_rows):
    """The text written from SQLite's slices is the general encoder's for the same rows (stored
    shuffled, read sorted), whatever the slice size; a name that is not plain text refuses it
    all (the command then lists row by row, and refuses a tampered name)."""
    monkeypatch.setattr(listing, "SLICE_ROWS", slice_rows)
    rows = [ROWS[1], ROWS[0], *([odd] if odd else [])]
    v = _vault_with(tmp_path, rows, 0)
    try:
        for prefix in (None, "app.", "Z", "a", "nothing"):
            output.collect_warnings(True)
            try:
                text, _ = _written(v, prefix, capsysbinary)
            except errors.VaultTampered:
                assert not all(map(_typed, _stored(v, prefix))), "rows of the stored types were refused"
                continue
            if text is None:
                assert odd is not None and odd[0] not in ("a/b", "a\x7f", "a"), "a plain name was refused"
                continue
            stored = _stored(v, prefix)
            assert all(map(_typed, stored)), "a row of another type was listed"
            output.collect_warnings(True)
            assert text == _general(stored), prefix
    finally:
        v.close()


@pytest.mark.parametrize("odd", [("a", 1.5, 1, "t", "t"), ("a", 1, "x", "t", "t"), ("a", None, 1, "t", "t"),
                                 ("a", 1, 1, "t", "a\tb"), ("a", 1, 1, "t", b"t"), ("a", float("inf"), 1, "t", "t"),
                                 ("a", 1, 1, 5, "t"), ("a", 1, 1, "t", None)])
def test_only_the_slice_sqlite_cannot_write_comes_as_rows(tmp_path, monkeypatch, capsysbinary, odd):
    """That slice is encoded here, or refused as vault_tampered when a field is not of its stored
    type: JSON readers rely on the types (a blob made this an internal error)."""
    monkeypatch.setattr(listing, "SLICE_ROWS", 1)
    plain = [(f"app.x{i}", *ROWS[0][1:]) for i in range(8)]
    v = _vault_with(tmp_path, [*plain, odd], 0)
    try:
        with v.json_listing() as built:
            parts = list(built.objects())
        rows = [part for part in parts if isinstance(part, list)]
        assert len(rows) == 1 and odd in rows[0] and len(rows[0]) < 3  # "a" and at most one neighbour
        assert len(parts) > 4  # the other slices are SQLite's text
        if _typed(odd):
            output.collect_warnings(True)
            text, _ = _written(v, None, capsysbinary)
            output.collect_warnings(True)
            assert text == _general(_stored(v, None))
        else:
            with pytest.raises(errors.VaultTampered):
                _written(v, None, capsysbinary)
    finally:
        v.close()


def test_a_blob_name_is_refused_then_tampered(tmp_path):
    v = _vault_with(tmp_path, [ROWS[0], (b"app.x", 1, 1, "t", "t")], 1)
    try:
        with v.json_listing() as built:
            assert built is None
        with pytest.raises(errors.VaultTampered):
            v.list()
    finally:
        v.close()


@pytest.mark.parametrize("slice_rows", [7, 100, 4096])
def test_slices_in_name_order_whatever_the_insertion_order(tmp_path, monkeypatch, capsysbinary, slice_rows):
    """Rows stored in another order than their names' (row ids shuffled): the slices still list
    them by name, as the general encoder does, each in about `SLICE_ROWS` names."""
    from kimen import vault
    from kimen.sensitive import Sensitive
    from kimen.store import Change, KdfParams

    monkeypatch.setattr(listing, "SLICE_ROWS", slice_rows)
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
        for prefix, count in ((None, 300), ("app.n1", 100)):
            output.collect_warnings(True)
            text, parts = _written(v, prefix, capsysbinary)
            assert all(isinstance(part, bytes) for part in parts)
            assert len(parts) == max(1, count // slice_rows)
            stored = _stored(v, prefix)
            assert [row[0] for row in stored] == sorted(n for n in names if n.startswith(prefix or ""))
            output.collect_warnings(True)
            assert text == _general(stored)
    finally:
        v.close()


def test_warnings_are_kept(tmp_path, capsysbinary):
    v = _vault_with(tmp_path, ROWS, 2)
    try:
        output.collect_warnings(True)
        output.warn("loose", reason="vault_permissions_loose")
        text, _ = _written(v, None, capsysbinary)
        output.collect_warnings(True)
        output.warn("loose", reason="vault_permissions_loose")
        assert text == _general(_stored(v, None))
    finally:
        v.close()
