"""Envfile formats: dotenv, shell, docker, json.

Each encoder either produces text that reads back as exactly one variable with exactly the value,
or refuses the value with `value_not_representable` naming the variable. `render` encodes every
variable before the caller writes anything, so a refused value leaves no file behind. A newline
inside a value can never start a second variable: it is only ever written inside quotes that the
reader keeps open across lines (dotenv, shell) or refused (docker).

dotenv is the narrowest: it must read back the same through python-dotenv's defaults (which expand
`${...}` even inside single quotes and have no escape for `$` or a backquote) and through POSIX
`set -a; . FILE`, so only values that mean the same to both are accepted.
"""

from __future__ import annotations

from .. import errors

TYPE_CHECKING = False  # `direnv --unsafe-stdout` renders through here: no typing, no `re` (~5 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence

# the bytes a dotenv value may hold unquoted, [A-Za-z0-9_./:@+,-]: a set, not a regular expression
_DOTENV_BARE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:@+,-")
_HINTS = {
    "dotenv": "use --format shell or --format json for values with such characters",
    "docker": "a docker env file holds one UTF-8 line under 64 KiB per variable; pass such a value with "
              "`kimen run` (or as a file), or use --format shell",
}
# docker reads an env file with Go's bufio.Scanner: a line of 64 KiB or more is "token too long"
_DOCKER_MAX_LINE = 64 * 1024 - 1


def _refuse(name: str, fmt: str) -> errors.KimenError:
    return errors.ValueNotRepresentable(name=name, format=fmt, variable=name, hint=_HINTS.get(fmt))


def dotenv_line(name: str, v: bytes) -> bytes:
    if b"\0" in v or b"\r" in v:
        raise _refuse(name, "dotenv")
    try:
        v.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(name, "dotenv") from None
    key = name.encode()
    if v == b"":
        return key + b"=''\n"
    if _DOTENV_BARE.issuperset(v):  # not empty: handled above
        return key + b"=" + v + b"\n"
    if b"'" not in v and b"\\" not in v and b"${" not in v:
        return key + b"='" + v + b"'\n"
    if b"$" not in v and b"`" not in v and not v.endswith(b"\\"):
        return key + b'="' + v.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"\n'
    raise _refuse(name, "dotenv")


def shell_line(name: str, v: bytes) -> bytes:
    if b"\0" in v:
        raise _refuse(name, "shell")
    return b"export " + name.encode() + b"='" + v.replace(b"'", b"'\\''") + b"'\n"


def docker_line(name: str, v: bytes) -> bytes:
    """`NAME=v` as docker's `--env-file` reads it: no quoting, one line, valid UTF-8 (docker
    refuses a file with invalid UTF-8), shorter than its line limit."""
    line = name.encode() + b"=" + v
    if b"\n" in v or b"\r" in v or b"\0" in v or len(line) >= _DOCKER_MAX_LINE:
        raise _refuse(name, "docker")
    try:
        v.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(name, "docker") from None
    return line + b"\n"


def render(fmt: str, variables: Sequence[tuple[str, bytes]]) -> bytes:
    """The whole envfile for `variables` (sorted by name here), or a refusal before any output."""
    items = sorted(variables, key=lambda item: item[0])
    if fmt == "json":
        import json

        doc = {}
        for name, v in items:
            try:
                doc[name] = v.decode("utf-8")
            except UnicodeDecodeError:
                raise _refuse(name, "json") from None
        return (json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    encode = {"dotenv": dotenv_line, "shell": shell_line, "docker": docker_line}[fmt]
    return b"".join(encode(name, v) for name, v in items)
