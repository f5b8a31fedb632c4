"""kimen's one glob grammar and matcher, used by every command that takes a glob.

A glob matches a whole secret name:

- ``*`` any run of characters other than ``.`` (possibly empty): one dot-separated segment;
- ``?`` exactly one character other than ``.``;
- ``**`` any run of characters, dots included (possibly empty);
- every other character is literal.

On valid names: ``prod.*`` matches ``prod.x`` but not ``prod.x.y``; ``prod.**`` matches ``prod.x``
and ``prod.x.y`` but not ``prod``; ``**`` matches every name. The rules are written down for users
in docs/profiles.md ("Globs").

Stdlib only and no regular expressions (importing `re` costs more than a match): a glob compiles
to a token list that a small backtracking matcher walks; names are at most 128 bytes.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# token kinds
_LIT, _ONE, _SEG, _ANY = 0, 1, 2, 3


class Glob:
    """A compiled glob; `match(name)` tells whether it matches the whole name."""

    __slots__ = ("_fast", "_tokens", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        tokens: list[tuple[int, str]] = []
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "*":
                if text.startswith("**", i):
                    if not tokens or tokens[-1][0] != _ANY:
                        tokens.append((_ANY, ""))
                    i += 2
                    continue
                tokens.append((_SEG, ""))
            elif ch == "?":
                tokens.append((_ONE, ""))
            elif tokens and tokens[-1][0] == _LIT:
                tokens[-1] = (_LIT, tokens[-1][1] + ch)
            else:
                tokens.append((_LIT, ch))
            i += 1
        self._tokens = tuple(tokens)
        # the shapes scopes and selections use most, matched without the walker: `**`, a literal,
        # a literal prefix then `**` (`prod.**`)
        self._fast: tuple[int, str] | None = None
        if self._tokens == ((_ANY, ""),):
            self._fast = (_ANY, "")
        elif self.is_literal:
            self._fast = (_LIT, self._tokens[0][1] if self._tokens else "")
        elif len(self._tokens) == 2 and self._tokens[0][0] == _LIT and self._tokens[1][0] == _ANY:
            self._fast = (_SEG, self._tokens[0][1])

    def __repr__(self) -> str:
        return f"Glob({self.text!r})"

    @property
    def is_literal(self) -> bool:
        """True when the glob has no wildcard (it names exactly one name)."""
        return all(kind == _LIT for kind, _ in self._tokens)

    def match(self, name: str) -> bool:
        fast = self._fast
        if fast is not None:
            kind, text = fast
            return True if kind == _ANY else name == text if kind == _LIT else name.startswith(text)
        return _match(self._tokens, 0, name, 0, {})


def can_match_a_name(text: str) -> bool:
    """True when some valid secret name matches the glob `text` (each wildcard taken as one letter):
    `prod.**` and `*.key` can; ``, `prod.` and `bad name!` never match anything."""
    from .values import is_valid_secret_name

    return is_valid_secret_name("".join(part if kind == _LIT else "x" for kind, part in Glob(text)._tokens))


def _match(tokens: tuple[tuple[int, str], ...], t: int, name: str, n: int,
           seen: dict[tuple[int, int], bool]) -> bool:
    key = (t, n)
    if key in seen:
        return seen[key]
    result = False
    if t == len(tokens):
        result = n == len(name)
    else:
        kind, text = tokens[t]
        if kind == _LIT:
            result = name.startswith(text, n) and _match(tokens, t + 1, name, n + len(text), seen)
        elif kind == _ONE:
            result = n < len(name) and name[n] != "." and _match(tokens, t + 1, name, n + 1, seen)
        else:
            end = n
            while True:  # try every length the wildcard may take, shortest first
                if _match(tokens, t + 1, name, end, seen):
                    result = True
                    break
                if end >= len(name) or (kind == _SEG and name[end] == "."):
                    break
                end += 1
    seen[key] = result
    return result


def compile_globs(texts: Iterable[str]) -> list[Glob]:
    return [Glob(text) for text in texts]


def match_any(globs: Iterable[Glob], name: str) -> bool:
    """True when any of `globs` matches `name` (a union of globs)."""
    return any(glob.match(name) for glob in globs)


def select(globs: Iterable[Glob], names: Iterable[str]) -> list[str]:
    """The names any glob matches, in the order given."""
    compiled = list(globs)
    return [name for name in names if match_any(compiled, name)]
