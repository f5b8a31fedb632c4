"""The inject template scanner and renderer (kimen/projection/template.py): references, blanks,
escapes, other `{{` syntaxes, malformed references with line and column, bytes in and out."""

from __future__ import annotations

import io
import os

import pytest

from kimen import errors
from kimen.projection import template

VALUES = {"a": b"<A>", "prod.db_url": b"postgres://u:p@h/db", "x": b"<X>", "raw": b"\x00\xff\r\n"}

# template -> (rendered with VALUES, distinct names, reference count)
RENDERED = [
    (b"{{ kimen:a }}", b"<A>", ["a"], 1),
    (b"{{kimen:a}}", b"<A>", ["a"], 1),
    (b"{{\t kimen:a \t}}", b"<A>", ["a"], 1),
    (b"url: {{ kimen:prod.db_url }}\n", b"url: postgres://u:p@h/db\n", ["prod.db_url"], 1),
    (b"{{ kimen:a }}{{ kimen:a }}-{{ kimen:x }}", b"<A><A>-<X>", ["a", "x"], 3),
    (b"no references at all\n", b"no references at all\n", [], 0),
    (b"", b"", [], 0),
    # any other {{ passes through: Helm, Jinja, Go, Mustache
    (b"{{ .Values.image }} {{ kimen:a }}", b"{{ .Values.image }} <A>", ["a"], 1),
    (b"{% if x %}{{ user.name | upper }}{% endif %}", b"{% if x %}{{ user.name | upper }}{% endif %}", [], 0),
    (b"{{kimen}} {{ kimenx:a }} {{ Kimen:a }} {{ kimen :a }}", b"{{kimen}} {{ kimenx:a }} {{ Kimen:a }} {{ kimen :a }}",
     [], 0),
    (b"{{{ kimen:a }}}", b"{<A>}", ["a"], 1),
    (b"{ { kimen:a } }", b"{ { kimen:a } }", [], 0),
    # escapes: the backslash before a reference goes, the reference stays literally
    (b"\\{{ kimen:a }}", b"{{ kimen:a }}", [], 0),
    (b"\\{{kimen:a}} and {{ kimen:a }}", b"{{kimen:a}} and <A>", ["a"], 1),
    (b"\\\\{{ kimen:a }}", b"\\{{ kimen:a }}", [], 0),  # only the one backslash directly before it
    (b"C:\\path\\n \\{{ .Values }} \\x", b"C:\\path\\n \\{{ .Values }} \\x", [], 0),  # no other backslash
    (b"\\{{ kimen:not valid }}", b"\\{{ kimen:not valid }}", [], 0),  # escaped, not a reference: untouched
    (b"\\{{ kimen:a", b"\\{{ kimen:a", [], 0),
    # line ends and bytes that are not UTF-8 around references
    (b"a\r\n{{ kimen:a }}\r\nb\r\n", b"a\r\n<A>\r\nb\r\n", ["a"], 1),
    (b"\xff\xfe{{ kimen:raw }}\x80", b"\xff\xfe\x00\xff\r\n\x80", ["raw"], 1),
    (b"{{ kimen:raw }}", b"\x00\xff\r\n", ["raw"], 1),
]

# template -> (line, column) of the invalid reference (1-based, bytes, at its `{{`)
MALFORMED = [
    (b"{{ kimen:a", 1, 1),
    (b"{{ kimen:a }", 1, 1),
    (b"{{ kimen:a\n}}", 1, 1),  # a reference is on one line
    (b"{{ kimen:a \r\n}}", 1, 1),
    (b"{{ kimen: a }}", 1, 1),  # no blank between kimen: and NAME
    (b"{{ kimen:}}", 1, 1),
    (b"{{ kimen:a b }}", 1, 1),
    (b"{{ kimen:a..b }}", 1, 1),
    (b"{{ kimen:-a }}", 1, 1),
    (b"{{ kimen:a/b }}", 1, 1),
    (b"{{ kimen:" + b"a" * 129 + b" }}", 1, 1),
    (b"{{ kimen:a | upper }}", 1, 1),  # no filters
    (b"ok {{ kimen:a }}\nline two\n  x {{kimen:bad name}}", 3, 5),
    (b"\xff\xfe\r\n\t{{ kimen:", 2, 2),
    (b"{{ kimen:a }} {{ kimen:", 1, 15),
]


@pytest.mark.parametrize(("text", "rendered", "names", "count"), RENDERED)
def test_references_render(text, rendered, names, count):
    parsed = template.parse(text)
    assert parsed.names == names
    assert parsed.references == count
    assert parsed.render(VALUES) == rendered


@pytest.mark.parametrize(("text", "line", "column"), MALFORMED)
def test_malformed_references_name_line_and_column_never_the_text(text, line, column):
    with pytest.raises(errors.InvalidTemplate) as caught:
        template.parse(text)
    err = caught.value
    assert (err.fields["line"], err.fields["column"]) == (line, column)
    envelope = err.envelope(28)
    assert envelope["line"] == line and envelope["column"] == column and envelope["exit_code"] == 28
    assert "kimen:" not in err.message and "bad" not in err.message


def test_render_needs_only_the_parsed_names_and_keeps_values_raw():
    parsed = template.parse(b"k: {{ kimen:a }}")
    assert parsed.render({"a": b"line1\nline2 \"q\" ${X} {{ kimen:x }}"}) == b"k: line1\nline2 \"q\" ${X} {{ kimen:x }}"
    with pytest.raises(KeyError):
        parsed.render({})


def test_limits_and_reading(tmp_path):
    big = b"x" * (template.MAX_TEMPLATE_BYTES + 1)
    with pytest.raises(errors.TemplateTooLarge):
        template.parse(big)
    assert template.parse(big[:-1]).references == 0
    path = tmp_path / "t.yml"
    path.write_bytes(b"a: {{ kimen:a }}\n")
    assert template.read(str(path)) == b"a: {{ kimen:a }}\n"
    assert template.read("-", lambda limit: io.BytesIO(b"stdin {{ kimen:a }}").read(limit + 1)) == (
        b"stdin {{ kimen:a }}")
    with pytest.raises(errors.TemplateTooLarge):
        template.read("-", lambda limit: io.BytesIO(big).read(limit + 1))
    path.write_bytes(big)
    with pytest.raises(errors.TemplateTooLarge):
        template.read(str(path))
    for unreadable in (tmp_path / "missing", tmp_path):
        with pytest.raises(errors.TemplateUnreadable):
            template.read(str(unreadable))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(errors.TemplateUnreadable):  # never waits for a writer
        template.read(str(fifo))


def test_large_template_with_many_references_is_linear():
    """100 000 references in a 2 MiB template parse and render (a quadratic scan would not finish)."""
    text = b"k{{ kimen:a }}\n" * 100_000
    parsed = template.parse(text)
    assert parsed.references == 100_000 and parsed.names == ["a"]
    assert parsed.render({"a": b"v"}) == b"kv\n" * 100_000
