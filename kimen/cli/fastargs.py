"""The common argv shapes of `kimen run` / `kimen project run`, read without argparse.

`run` is the command scripts type most, and argparse with what it imports (`re`, `enum`,
`functools`, `collections`) costs about as much as the interpreter's own start-up. This module
reads the flags of the tables in `kimen.cli.flags` (the same rows the argparse tree registers)
into the options argparse would have produced, and the command then runs through the same
handler, the same error rendering and the same exit codes:

    [global flags] run|project run [global flags | run flags] -- CMD [ARGS...]

**Anything else returns None and argparse reads the argv from the start**: `--flag=value`, a
value that starts with `-`, a missing value, a repeatable (append) flag such as
`--trusted-signer`, help, any unknown word. So every usage error still comes from the one parser
of truth, and a test (tests/test_fastargs.py) checks that both readings agree on every argv this
module accepts.
"""

from __future__ import annotations

from ..errors import AREA_CONFIG, AREA_ENVFILE, AREA_RUN
from .flags import DIRENV, GLOBAL, RUN_ALL, STATUS, defaults
from .model import DIRENV_HANDLER, RUN_HANDLER, STATUS_HANDLER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# flag -> (dest, kind) for the flags this reader accepts (append flags are left to argparse)
_GLOBAL = {row[0]: (row[1], row[2]) for row in GLOBAL}
_RUN = {row[0]: (row[1], row[2]) for row in RUN_ALL if row[2] != "append"}


def run_options(argv: list[str]) -> dict[str, Any] | None:
    """The options of `run` for `argv` (kimen's words before `--`), or None when argparse must read it."""
    values: dict[str, Any] = {}
    inline: list[tuple[str, str]] = []
    i, n = 0, len(argv)
    while i < n and argv[i] != "run" and argv[i] != "project":
        i = _flag(argv, i, _GLOBAL, values, inline)
        if i < 0:
            return None
    if i == n:
        return None
    if argv[i] == "project":
        if i + 1 == n or argv[i + 1] != "run":
            return None
        values.update(command="project", project_command="run", command_name="project run")
        i += 2
    else:
        values.update(command="run", command_name="run")
        i += 1
    options = defaults(RUN_ALL)
    if not _command_flags(argv, i, _RUN, options, values, inline):
        return None
    options.update(values, inline=inline, handler=RUN_HANDLER, area=AREA_RUN)
    return options


# the flag-only commands read here too (`status`, `direnv`: prompts and .envrc run them constantly):
# word -> (flag rows, handler, error area)
SIMPLE = {
    "status": (STATUS, STATUS_HANDLER, AREA_CONFIG),
    "direnv": (DIRENV, DIRENV_HANDLER, AREA_ENVFILE),
}


def simple_options(argv: list[str], word: str) -> dict[str, Any] | None:
    """The options of the flag-only command `word` (a key of `SIMPLE`), or None for argparse:

        [global flags] WORD [global flags | WORD's flags]"""
    rows, handler, area = SIMPLE[word]
    table = {row[0]: (row[1], row[2]) for row in rows if row[2] != "append"}
    values: dict[str, Any] = {}
    inline: list[tuple[str, str]] = []
    i, n = 0, len(argv)
    while i < n and argv[i] != word:
        i = _flag(argv, i, _GLOBAL, values, inline)
        if i < 0:
            return None
    if i == n:
        return None
    options = defaults(rows)
    if not _command_flags(argv, i + 1, table, options, values, inline):
        return None
    options.update(values, command=word, command_name=word, map=None, handler=handler, area=area)
    return options


def _command_flags(argv: list[str], i: int, table: dict[str, tuple[str, str]], options: dict[str, Any],
                   values: dict[str, Any], inline: list[tuple[str, str]]) -> bool:
    """The words from `i` on: the command's flags into `options`, global ones into `values`;
    False at the first word that is neither."""
    n = len(argv)
    while i < n:
        j = _flag(argv, i, table, options, inline)
        if j < 0:
            j = _flag(argv, i, _GLOBAL, values, inline)
            if j < 0:
                return False
        i = j
    return True


def _flag(argv: list[str], i: int, table: dict[str, tuple[str, str]], values: dict[str, Any],
          inline: list[tuple[str, str]]) -> int:
    """Read the flag at `i` of `table` into `values`; the next index, or -1 when it is not one."""
    found = table.get(argv[i])
    if found is None:
        return -1
    dest, kind = found
    if kind == "bool":
        values[dest] = True
        return i + 1
    if i + 1 == len(argv) or argv[i + 1].startswith("-"):
        return -1
    if kind == "inline":
        inline.append((dest, argv[i + 1]))
    else:
        values[dest] = argv[i + 1]
    return i + 2
