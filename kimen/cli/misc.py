"""Utility commands: version, help, completion (SPEC §2.10)."""

from __future__ import annotations

import argparse
import sys

from . import COMMANDS, Context, Result
from .parser import add_command


def register(sub: argparse._SubParsersAction, name: str) -> None:
    if name == "version":
        add_command(sub, "version", COMMANDS["version"][1], handler=cmd_version)
    elif name == "help":
        p = add_command(sub, "help", COMMANDS["help"][1], handler=cmd_help)
        p.add_argument("topic", nargs="*", metavar="COMMAND", help="command to explain")
    elif name == "completion":
        p = add_command(sub, "completion", COMMANDS["completion"][1], handler=cmd_completion)
        p.add_argument("shell", choices=["bash", "zsh", "fish"], nargs="?", help="target shell")
        p.add_argument("--list-profiles", action="store_true", help=argparse.SUPPRESS)


def cmd_version(ctx: Context) -> Result | int:
    from .. import __version__, output

    if ctx.json:
        output.print_json({
            "version": __version__,
            "raw_version": __version__,
            "commit": None,
            "date": None,
            "python": sys.version.split()[0],
        })
        return 0
    return Result("version", __version__)


def cmd_help(ctx: Context) -> int:
    from . import run_cli
    from .parser import build_parser

    topic = list(ctx.args.topic)
    if not topic:
        build_parser().print_help()
        return 0
    flags = [flag for flag in ("--json", "--debug") if getattr(ctx.args, flag[2:], False)]
    return run_cli([*topic, *flags, "--help"])  # a bad topic is a usage error, an envelope with --json


def cmd_completion(ctx: Context) -> int:
    from .. import errors
    from .completion import list_profiles, script

    if ctx.args.list_profiles:
        sys.stdout.write("".join(f"{name}\n" for name in list_profiles(ctx.env)))
        return 0
    if not ctx.args.shell:
        raise errors.UsageError(detail="missing shell: use bash, zsh or fish")
    sys.stdout.write(script(ctx.args.shell))
    return 0
