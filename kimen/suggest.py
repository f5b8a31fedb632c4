"""Did-you-mean: the nearest valid words to a mistyped one.

One rule for every suggestion kimen makes (unknown commands, flags and choices; unknown secret and
profile names): Levenshtein distance, at most max(2, len(word) // 3) edits; the words at the
smallest distance, sorted; none within reach gives no suggestion. Names are not secret (they are
plaintext metadata of the vault), so suggesting them leaks nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


def distance(a: str, b: str, limit: int | None = None) -> int:
    """Levenshtein distance between `a` and `b` (stops early above `limit` when given)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if limit is not None and len(a) - len(b) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if limit is not None and min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def nearest(word: str, candidates: Iterable[str], most: int | None = None) -> list[str]:
    """The candidates nearest to `word` within reach, sorted; `most` caps how many are returned.

    With `most` None, only the words at the smallest distance are returned (ties: all of them);
    with `most` set, the nearest words within reach in order of distance then name, up to `most`.
    """
    reach = max(2, len(word) // 3)
    scored = []
    for candidate in set(candidates):
        if candidate == word:
            continue
        d = distance(word, candidate, reach)
        if d <= reach:
            scored.append((d, candidate))
    if not scored:
        return []
    scored.sort()
    if most is None:
        best = scored[0][0]
        return [c for d, c in scored if d == best]
    return [c for _, c in scored[:most]]


def hint(word: str, candidates: Iterable[str], most: int | None = None) -> str | None:
    """`did you mean a, b?` for the nearest candidates, or None."""
    found = nearest(word, candidates, most)
    return f"did you mean {', '.join(found)}?" if found else None
