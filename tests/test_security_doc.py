"""docs/security.md maps every security invariant to tests: every item has a row, every named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> dict[int, str]:
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## Invariants and their tests", 1)[1].split("\n## ", 1)[0]
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^\| (\d+) \| [^|]+ \| (.+) \|$", section, re.M)}


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_every_invariant_has_a_row_and_every_named_test_exists():
    rows = _rows()
    assert list(rows) == list(range(1, 43)), list(rows)
    for number, cell in rows.items():
        refs = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", cell)
        assert refs, f"item {number} names no test"
        for file, name in refs:
            assert (ROOT / file).is_file(), f"item {number}: {file} does not exist"
            assert name in _test_names(ROOT / file), f"item {number}: {file}::{name} does not exist"
