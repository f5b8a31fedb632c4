"""The `inject` template: finding `{{ kimen:NAME }}` references and rendering them (docs/daily.md).

A reference is `{{`, optional spaces or tabs, `kimen:`, a secret NAME, optional spaces or tabs,
`}}`, all on one line. Nothing else is special: any other `{{` (Helm, Jinja, Go, Mustache) is
copied as is. A backslash directly before a complete reference (`\\{{ kimen:x }}`) is removed and
the reference is copied literally; an escaped opener that is not a complete reference is copied
untouched, backslash included; no other backslash is ever touched. An unescaped `{{ kimen:` whose
NAME is invalid, or with no `}}` after it on the line, is `invalid_template`, reported by line and
column (1-based, in bytes, at the `{{`) and never with the text.

Templates are bytes and values are raw bytes: nothing is decoded, so a template in any encoding
(or none) passes through byte for byte, CRLF line ends included. The template is parsed whole
before anything is read or written (`parse`), so the command reads every name in one store call
and writes nothing when a reference is malformed or a name is missing. Values are inserted
unescaped: the template owns its quoting. This module never reads a store or writes a file.
"""

from __future__ import annotations

import re

from .. import errors
from ..fsutil import read_regular
from ..values import is_valid_secret_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAX_TEMPLATE_BYTES = 16 * 1024 * 1024

# `{{`, blanks, `kimen:` begins a reference attempt; the whole reference must then follow on the line
_OPENER = re.compile(rb"\{\{[ \t]*kimen:")
_NAME_END = re.compile(rb"([A-Za-z0-9_.-]*)[ \t]*\}\}")


class Template:
    """A parsed template: literal byte runs and the secret names between them."""

    __slots__ = ("names", "parts", "references")

    def __init__(self, parts: list[bytes | str], references: int) -> None:
        self.parts = parts  # bytes: copied as is; str: the secret of that name
        self.references = references  # how many references (a name used twice counts twice)
        self.names = sorted({p for p in parts if isinstance(p, str)})  # distinct, sorted

    def render(self, values: Mapping[str, bytes]) -> bytes:
        """The output with each reference replaced by its value's raw bytes; every name of
        `names` must be in `values` (the caller read them all first)."""
        return b"".join(values[p] if isinstance(p, str) else p for p in self.parts)


def parse(data: bytes, path: str = "-") -> Template:
    """Parse the whole template (`path` only names it in errors); raises `invalid_template` (line,
    column) or `template_too_large`."""
    if len(data) > MAX_TEMPLATE_BYTES:
        raise errors.TemplateTooLarge(path=path)
    parts: list[bytes | str] = []
    references = 0
    pos = 0  # the bytes before pos are in parts already
    for opener in _OPENER.finditer(data):
        start = opener.start()
        reference = _NAME_END.match(data, opener.end())
        name = reference.group(1).decode("ascii") if reference else ""
        if start > 0 and data[start - 1] == 0x5C:  # escaped by a backslash
            if reference is not None and is_valid_secret_name(name):  # the backslash goes
                parts += [data[pos:start - 1], data[start:reference.end()]]
                pos = reference.end()
            continue
        if reference is None or not is_valid_secret_name(name):
            line_start = data.rfind(b"\n", 0, start) + 1
            raise errors.InvalidTemplate(line=data.count(b"\n", 0, start) + 1, column=start - line_start + 1)
        parts += [data[pos:start], name]
        references += 1
        pos = reference.end()
    parts.append(data[pos:])
    return Template([p for p in parts if p != b""], references)


def read(path: str, stdin: Callable[[int], bytes] | None = None) -> bytes:
    """The template's bytes: the file at `path`, or for `-` what `stdin(limit)` reads (at most
    limit+1 bytes); bounded by 16 MiB.

    A missing, unreadable or non-regular file (a FIFO, a directory) is `template_unreadable`."""
    if path == "-":
        if stdin is None:
            raise errors.TemplateUnreadable(path="-", problem="no standard input")
        data = stdin(MAX_TEMPLATE_BYTES)
        if len(data) > MAX_TEMPLATE_BYTES:
            raise errors.TemplateTooLarge(path="-")
        return data
    return read_regular(path, MAX_TEMPLATE_BYTES,
                        lambda problem: errors.TemplateUnreadable(path=path, problem=problem),
                        too_large=lambda: errors.TemplateTooLarge(path=path))
