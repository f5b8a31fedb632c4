"""The SQL of the key-free listings by name, and `secret list --json` as text SQLite writes.

At 100 000 secrets the JSON document is 13 MB. SQLite writes it (`json_object`,
`json_group_array`) far faster than Python builds it, and the command copies that text to stdout
without decoding it. The objects come a slice of about `SLICE_ROWS` names at a time, each written
out before the next is built: the document is never whole in memory. Built at once, its two 13 MB
copies (SQLite's and the bytes Python receives) cost a fresh process 8 000 page faults and about
6 ms of its 77 (bench/README.md, "Stop 25").
"""

from __future__ import annotations

import sqlite3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

SLICE_ROWS = 4096  # names per slice of the objects: about 500 kB of JSON
# The page cache while the JSON listing reads (pages): a one-pass scan reads each page once, so a
# larger cache (SQLite's default is 2 MB) only makes a fresh process fault in more new memory.
SCAN_CACHE_PAGES = 128
ROW_COLUMNS = "name, revision, size, created_at, updated_at"
_SCAN = " FROM secrets INDEXED BY sqlite_autoindex_secrets_1"  # the primary key's index, by name, or fail
_NAMES = "SELECT CAST(json_group_array(name) AS BLOB), count(*)" + _SCAN
_OBJECTS = ("SELECT CAST(group_concat(json_object('name', name, 'revision', revision, 'size', size,"
            " 'created_at', created_at, 'updated_at', updated_at)) AS BLOB),"
            " sum(coalesce(abs(revision) + abs(size), 0.5)"
            " + CASE WHEN created_at >= '' AND updated_at >= '' THEN 0 ELSE 0.5 END)" + _SCAN)


def _name_tests(prefix: str | None) -> tuple[list[str], tuple[Any, ...]]:
    """The tests and parameters that pick the names starting with `prefix` (none without one): a
    range on the primary key (every ASCII name starting with `prefix` sorts below prefix +
    U+10FFFF), then the exact test."""
    if not prefix:
        return [], ()
    if not prefix.isascii():  # names are ASCII; and a lone surrogate (a non-UTF-8 argv byte) cannot be bound
        return ["0"], ()
    return ["name >= ?", "name < ?", "substr(name, 1, ?) = ?"], (prefix, prefix + "\U0010ffff", len(prefix), prefix)


def _where(tests: list[str]) -> str:
    return f" WHERE {' AND '.join(tests)}" if tests else ""


def sorted_select(columns: str, prefix: str | None) -> tuple[str, tuple[Any, ...]]:
    """SELECT `columns` of the secrets whose name starts with `prefix` (all without one), by name."""
    tests, params = _name_tests(prefix)
    return f"SELECT {columns} FROM secrets{_where(tests)} ORDER BY name", params


def _unescaped(text: bytes) -> bool:
    """Whether SQLite's JSON `text` needed no escape and is all ASCII: the general encoder (which
    writes UTF-8 as it is) then writes the same strings."""
    return text.isascii() and b"\\" not in text


class JsonListing:
    """`secret list --json`'s names array, count and objects, read in the caller's snapshot
    (`VaultFile.json_listing`). `None` from `read` when a name is not plain text: a tampered file,
    which the caller lists row by row (and refuses)."""

    def __init__(self, conn: sqlite3.Connection, names: bytes, count: int, prefix: str | None) -> None:
        self.names = names  # `["a","b",...]`, UTF-8
        self.count = count
        self._conn = conn
        self._prefix = prefix

    @classmethod
    def read(cls, conn: sqlite3.Connection, prefix: str | None) -> JsonListing | None:
        tests, params = _name_tests(prefix)
        try:
            names, count = conn.execute(_NAMES + _where(tests), params).fetchone()
        except sqlite3.Error:
            return None  # a blob name; or no such index (the rows path decides)
        # Two quotes a name: a name that is not text (a number, NULL) has none.
        plain = names.count(b'"') == 2 * count and _unescaped(names)
        return cls(conn, names, count, prefix) if plain else None

    def objects(self) -> Iterator[bytes | list[tuple[Any, ...]]]:
        """The `{"name","revision","size","created_at","updated_at"}` objects in name order, a
        slice at a time: SQLite's compact text of the slice (objects joined by commas), or, when
        that text would differ from the general encoder's (a revision or size not an integer, a
        time not text or needing an escape: a tampered file), the slice's rows as stored, for the
        caller to encode. A blob makes `json_object` fail. Any other field of the wrong type makes
        the sum real: a revision or size that is not an integer through `abs` (real for a text or
        a blob, even for "1", which `+` alone would take as the integer 1) or, when NULL, through
        `coalesce`; a time that is not text through the `CASE` (every text sorts at or above '',
        every number below it, and a comparison with NULL is not true)."""
        cuts = self._cuts()
        for low, high in zip([None, *cuts], [*cuts, None], strict=True):
            tests, params = _name_tests(self._prefix)
            if low is not None:
                tests, params = [*tests, "name >= ?"], (*params, low)
            if high is not None:
                tests, params = [*tests, "name < ?"], (*params, high)
            try:
                text, total = self._conn.execute(_OBJECTS + _where(tests), params).fetchone()
            except sqlite3.Error:
                text = None
            if text is not None and type(total) is int and _unescaped(text):
                yield text
            else:
                yield self._conn.execute(f"SELECT {ROW_COLUMNS} FROM secrets{_where(tests)} ORDER BY name",
                                         params).fetchall()

    def _cuts(self) -> list[str]:
        """Names that cut the listing into slices of about `SLICE_ROWS`, read off the names array at
        even byte offsets (each is a `","` followed by the name: no name holds a quote)."""
        names, slices = self.names, self.count // SLICE_ROWS
        cuts: list[str] = []
        for i in range(1, slices):
            at = names.find(b'","', len(names) * i // slices)
            if at < 0:
                break
            cut = names[at + 3:names.index(b'"', at + 3)].decode()
            if not cuts or cut > cuts[-1]:
                cuts.append(cut)
        return cuts
