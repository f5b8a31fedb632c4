"""`secret list --json` writes its envelope directly (100k rows): the text must be exactly what the
general encoder writes, and any stored value that would need escaping falls back to it."""

from __future__ import annotations

import pytest

from kimen import output
from kimen.cli.secret import _list_json


def _general(rows):
    secrets = [{"name": n, "revision": r, "size": s, "created_at": c, "updated_at": u} for n, r, s, c, u in rows]
    return output.dumps(output.success_envelope("list", {"names": [row[0] for row in rows], "count": len(rows),
                                                         "secrets": secrets}))


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
    assert _list_json(rows) == _general(rows)


def test_warnings_are_kept():
    output.collect_warnings(True)
    output.warn("loose", reason="vault_permissions_loose")
    text = _list_json(ROWS)
    output.collect_warnings(True)
    output.warn("loose", reason="vault_permissions_loose")
    assert text == _general(ROWS)


@pytest.mark.parametrize("bad", [
    ('a"b', 1, 1, "t", "t"), ("a\\b", 1, 1, "t", "t"), ("a\nb", 1, 1, "t", "t"), ("é", 1, 1, "t", "t"),
    ("a", 1.5, 1, "t", "t"), ("a", 1, "2", "t", "t"), ("a", 1, 1, None, "t"), ("a", True, 1, "t", "t"),
])
def test_a_value_needing_escapes_falls_back(bad):
    assert _list_json([ROWS[0], bad]) is None
