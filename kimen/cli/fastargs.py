"""The common argv shapes of `kimen run` and of the commands of `SIMPLE`, read without argparse.

`run` is the command scripts type most, and argparse with what it imports (`re`, `enum`,
`functools`, `collections`) costs about as much as the interpreter's own start-up. This module
reads the flags of the tables in `kimen.cli.flags` (the same rows the argparse tree registers)
into the options argparse would have produced, and the command then runs through the same
handler, the same error rendering and the same exit codes:

    [global flags] run|project run [global flags | run flags] -- CMD [ARGS...]
    [global flags] version | vault path | vault info | secret list | session status | status | direnv
                   | sync status | sync conflicts  [global flags | the command's own flags]

The latter are what shell prompts, agent wrappers and scripts call most (`session status` before
every step): with argparse they would pay more for parsing than for their work.

**Anything else returns None and argparse reads the argv from the start**: `--flag=value`, a
value that starts with `-`, a missing value, a repeatable (append) flag such as
`--trusted-signer`, help, any unknown word. So every usage error still comes from the one parser
of truth, and a test (tests/test_fastargs.py) checks that both readings agree on every argv this
module accepts.
"""

from __future__ import annotations

from ..errors import AREA_CONFIG, AREA_ENVFILE, AREA_RUN, AREA_SECRET, AREA_SESSION, AREA_SYNC, AREA_VAULT
from .flags import (
    DIRENV,
    GLOBAL,
    RUN_ALL,
    SECRET_LIST,
    STATUS,
    SYNC_ALL,
    SYNC_CONFLICTS,
    SYNC_STATUS,
    VAULT_INFO,
    defaults,
)
from .model import RUN_HANDLER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .flags import Row

# flag -> (dest, kind) for the flags this reader accepts (append flags are left to argparse)
_GLOBAL = {row[0]: (row[1], row[2]) for row in GLOBAL}
_RUN = {row[0]: (row[1], row[2]) for row in RUN_ALL if row[2] != "append"}


# The commands read here besides `run`: words -> (handler, error area or None, own flag rows). The
# command modules register the same handlers and rows with argparse; tests/test_fastargs.py checks
# that both readings agree for every command of this table.
SIMPLE: dict[tuple[str, ...], tuple[str, int | None, tuple[Row, ...]]] = {
    ("version",): ("kimen.cli.misc:cmd_version", None, ()),
    ("vault", "path"): ("kimen.cli.vault:cmd_path", AREA_VAULT, ()),
    ("vault", "info"): ("kimen.cli.vault:cmd_info", AREA_VAULT, VAULT_INFO),
    ("secret", "list"): ("kimen.cli.secret:cmd_list", AREA_SECRET, SECRET_LIST),
    ("session", "status"): ("kimen.cli.session:cmd_status", AREA_SESSION, ()),
    # -- daily use: prompts and .envrc files run these constantly --
    ("status",): ("kimen.cli.daily:cmd_status", AREA_CONFIG, STATUS),
    ("direnv",): ("kimen.cli.daily:cmd_direnv", AREA_ENVFILE, DIRENV),
    # -- sync: the no-passphrase reports a prompt or a CI step polls --
    ("sync", "status"): ("kimen.cli.sync:cmd_status", AREA_SYNC, SYNC_STATUS),
    ("sync", "conflicts"): ("kimen.cli.sync:cmd_conflicts", AREA_SYNC, SYNC_CONFLICTS),
}
# A group that is itself a command with flags: argparse sets the defaults of its flags for each of its
# subcommands too (accepted only before the subcommand word, so never read here).
PARENT: dict[str, tuple[Row, ...]] = {"sync": SYNC_ALL}
SIMPLE_WORDS = frozenset(words[0] for words in SIMPLE)


def simple_options(argv: list[str]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """The command words and options of a `SIMPLE` command, or None when argparse must read `argv`."""
    values: dict[str, Any] = {}
    i, n = 0, len(argv)
    while i < n and argv[i].startswith("-"):
        i = _flag(argv, i, _GLOBAL, values, [])
        if i < 0:
            return None
    words = tuple(argv[i:i + 2])
    if words not in SIMPLE:
        words = words[:1]
        if words not in SIMPLE:
            return None
    handler, area, rows = SIMPLE[words]
    own = {row[0]: (row[1], row[2]) for row in rows}
    options = defaults(PARENT[words[0]]) if words[0] in PARENT else {}
    options.update(defaults(rows))
    i += len(words)
    while i < n:
        j = _flag(argv, i, own, options, []) if own else -1
        if j < 0:
            j = _flag(argv, i, _GLOBAL, values, [])
            if j < 0:
                return None
        i = j
    options.update(values, command=words[0], handler=handler)
    if len(words) > 1:
        options[f"{words[0]}_command"] = words[1]
    if area is not None:
        options["area"] = area
    return words, options


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
    while i < n:
        j = _flag(argv, i, _RUN, options, inline)
        if j < 0:
            j = _flag(argv, i, _GLOBAL, values, inline)
            if j < 0:
                return None
        i = j
    options.update(values, inline=inline, handler=RUN_HANDLER, area=AREA_RUN)
    return options


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
    elif kind == "append":  # `secret list --match GLOB` (repeatable)
        values.setdefault(dest, []).append(argv[i + 1])
    else:
        values[dest] = argv[i + 1]
    return i + 2
