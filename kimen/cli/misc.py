"""Utility commands: version, help, completion."""

from __future__ import annotations

import sys

from .model import COMMANDS, Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .parser import add_command, argparse
    if name == "version":
        add_command(sub, "version", COMMANDS["version"][1], handler=cmd_version)
    elif name == "help":
        p = add_command(sub, "help", COMMANDS["help"][1], handler=cmd_help)
        p.add_argument("topic", nargs="*", metavar="COMMAND", help="command to explain")
    elif name == "completion":
        from .completion import NAME_KINDS, SHELLS

        p = add_command(sub, "completion", COMMANDS["completion"][1], handler=cmd_completion)
        p.add_argument("shell", choices=SHELLS, nargs="?", help="target shell")
        # used by the scripts at completion time: names one per line, silent, exit 0 on any failure
        p.add_argument("--names", choices=NAME_KINDS, help=argparse.SUPPRESS)


def cmd_version(inv: Invocation) -> Result:
    from .. import __version__

    return Result("version", __version__, {
        "version": __version__, "raw_version": __version__, "commit": None, "date": None,
        "python": sys.version.split()[0],
    })


def cmd_help(inv: Invocation) -> int:
    """`kimen help [COMMAND…]` is `--help`; `kimen help GUIDE` prints a guide shipped with kimen."""
    from .. import errors
    from .guides import guide_path, guides, topic
    from .parser import build_parser

    words = list(inv.options.topic)
    if not words:
        build_parser().print_help()
        return 0
    if words[0] not in COMMANDS:
        path = guide_path(words[0]) if len(words) == 1 else None
        if path is None:
            from ..suggest import hint

            known = [*COMMANDS, *(topic(g, COMMANDS) for g in guides())]
            raise errors.UsageError(detail=f"unknown help topic: {' '.join(words)}",
                                    hint=hint(words[0], known) or f"topics: {', '.join(known)}")
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        from ..output import write_text

        write_text(text)
        return 0
    flags = [flag for flag in ("--json", "--debug") if getattr(inv.options, flag[2:], False)]
    from .parser import parse

    parser = build_parser(words[0])
    _check_command_path(parser, words)
    parse(parser, [*words, *flags, "--help"])  # prints the help and exits 0
    return 0


def _check_command_path(parser: argparse.ArgumentParser, words: list[str]) -> None:
    """Every word names a subcommand of the one before (`help secret get extra` is a usage error,
    not the help of `secret get`)."""
    import argparse

    from .. import errors
    from ..suggest import hint

    node = parser
    for i, word in enumerate(words):
        choices = next((a.choices for a in node._actions if isinstance(a, argparse._SubParsersAction)), {})
        if word not in choices:
            where = " ".join(words[:i])
            raise errors.UsageError(detail=f"unknown help topic: {' '.join(words)}",
                                    hint=hint(word, list(choices)) or (f"`{where}` has no subcommands" if not choices
                                                                       else f"{where}: {', '.join(choices)}"))
        node = choices[word]


def cmd_completion(inv: Invocation) -> int:
    from .. import errors
    from .completion import SHELLS, names, script

    if inv.options.names:
        try:
            sys.stdout.write("".join(f"{name}\n" for name in names(inv.options.names, inv)))
            sys.stdout.flush()
        except Exception:  # noqa: S110 - no vault, a bad config, a closed pipe: nothing, silently
            pass
        return 0
    if not inv.options.shell:
        raise errors.UsageError(detail=f"missing shell: use {', '.join(SHELLS[:-1])} or {SHELLS[-1]}")
    from ..output import write_text

    write_text(script(inv.options.shell))
    return 0
