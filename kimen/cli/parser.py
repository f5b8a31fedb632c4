"""The argparse tree: the parser class, the global flags and the helpers command modules use.

Only imported when a command needs the parser (every command except the argv shapes that
`kimen.cli.fastargs` reads without it): argparse pulls in `re`, `enum`, `functools` and
`collections`, together about as much as the interpreter's own start-up.
"""

from __future__ import annotations

import os
import sys

from .. import errors
from . import flags
from .model import COMMANDS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

    from .model import Handler


def _argparse_without_gettext() -> Any:
    """kimen's messages are English, but argparse looks every message up through gettext: importing
    gettext compiles a regular expression (~1.2 ms), and each lookup stats a
    handful of locale paths that cannot exist for kimen. argparse is imported against a stand-in
    that returns messages unchanged; the real gettext stays importable for anyone else."""
    stand_in = type(sys)("gettext")
    stand_in.__dict__.update(gettext=lambda message: message,
                             ngettext=lambda singular, plural, n: singular if n == 1 else plural)
    installed = sys.modules.setdefault("gettext", stand_in) is stand_in
    try:
        import argparse
    finally:
        if installed:
            del sys.modules["gettext"]
    # argparse imported earlier elsewhere still looks its messages up through the stand-in
    argparse.__dict__.update(_=stand_in.gettext, ngettext=stand_in.ngettext)
    return argparse


if TYPE_CHECKING:
    import argparse
else:
    argparse = _argparse_without_gettext()


class Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` instead of exiting, so usage errors get envelopes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse builds a formatter for every add_argument(), which imports shutil and asks the
        # terminal for its size each time; one cached width keeps parser construction cheap.
        return self.formatter_class(prog=self.prog, width=_help_width())  # type: ignore[call-arg]  # typeshed's _FormatterClass omits `width`, which HelpFormatter takes

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # an unknown command, subcommand or choice: remember the nearest valid word for the hint
        choices = action.choices
        if choices is not None and value not in choices:
            from ..suggest import hint

            self._hint = hint(str(value), [str(c) for c in choices])
        super()._check_value(action, value)

    def _print_message(self, message: str, file: Any = None) -> None:
        # help and usage on stdout go through `output.write_text`, so a failed write is reported
        # as `write_failed` (not left in the buffer to fail at exit with Python's own message)
        if message and (file is None or file is sys.stdout):
            from ..output import write_text

            write_text(message)
        else:
            super()._print_message(message, file)

    def error(self, message: str, hint: str | Sequence[str] | None = None) -> NoReturn:
        hint = hint or getattr(self, "_hint", None)
        self._hint = None
        raise errors.UsageError(detail=message, usage=self.format_usage().strip(), hint=hint)


_WIDTH: list[int] = []


def _help_width() -> int:
    """The help width argparse would use (COLUMNS, else the terminal, else 80; minus 2)."""
    if not _WIDTH:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]  # no stdout at all: caught below
            except (AttributeError, OSError, ValueError):
                columns = 80
        _WIDTH.append(max(columns - 2, 20))
    return _WIDTH[0]


def add_flags(parser: argparse.ArgumentParser, rows: tuple[flags.Row, ...], *, suppress: bool = False) -> None:
    """Register the rows of a flag table (`kimen.cli.flags`) on `parser`. `suppress`: an absent flag
    sets nothing (the global flags, so a sub-parser never resets what the top level read)."""
    for flag, dest, kind, metavar, text in rows:
        default: Any = argparse.SUPPRESS if suppress else ([] if kind == "append" else None)
        if kind == "bool":
            parser.add_argument(flag, dest=dest, action="store_true",
                                default=argparse.SUPPRESS if suppress else False, help=text)
        elif kind == "inline":
            parser.add_argument(flag, action=InlineAction, kind=dest, metavar=metavar, help=text, dest="inline")
        elif kind == "append":
            parser.add_argument(flag, dest=dest, metavar=metavar, action="append", default=default, help=text)
        else:
            parser.add_argument(flag, dest=dest, metavar=metavar, default=default, help=text)
    if any(row[2] == "inline" for row in rows):
        parser.set_defaults(inline=[])


def _global_flags() -> argparse.ArgumentParser:
    """The flags every command accepts; SUPPRESS keeps sub-parsers from resetting them."""
    g = Parser(add_help=False)
    add_flags(g, flags.GLOBAL, suppress=True)
    return g


GLOBAL = _global_flags()


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    *,
    handler: Handler | str | None = None,
    area: int | None = None,
    aliases: Sequence[str] = (),
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add a command (or a group when `handler` is None) that accepts the global flags."""
    from .guides import command_epilog

    prog = f"{sub._prog_prefix} {name}".split()
    parser = sub.add_parser(
        name,
        help=help,
        aliases=list(aliases),
        description=description or help,
        epilog=command_epilog(prog[1], COMMANDS) if len(prog) > 1 else None,
        parents=[GLOBAL],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults: dict[str, Any] = {"parser": parser}
    if handler is not None:
        defaults["handler"] = handler
    if area is not None:
        defaults["area"] = area
    parser.set_defaults(**defaults)
    return parser


def add_subcommands(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """Subcommands of `parser`. Passing `prog` spares argparse a help formatter (and `shutil`)."""
    return parser.add_subparsers(dest=dest, metavar="COMMAND", required=True, prog=parser.prog)


def add_group(sub: argparse._SubParsersAction, name: str, help: str, *, area: int) -> argparse._SubParsersAction:
    """Add a command with subcommands; returns the subparsers action for them."""
    parser = add_command(sub, name, help, area=area)
    return add_subcommands(parser, f"{name}_command")


def build_parser(only: str | None = None) -> Parser:
    """The argparse tree: the whole tree, or just the top level plus command `only`."""
    import importlib

    from .guides import overview_epilog

    top = Parser(
        prog="kimen",
        description="kimen: local-first secrets. Run `kimen help COMMAND` for details.",
        epilog=overview_epilog(COMMANDS),
        parents=[GLOBAL],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="store_true", default=argparse.SUPPRESS, help="print the version")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, prog="kimen")
    for name, (module_name, _help) in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        module.register(sub, name)
    return top


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but unknown arguments are reported with the usage of the command they follow."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf: Parser = getattr(args, "parser", parser)
        leaf.error(f"unrecognized arguments: {' '.join(extra)}", hint=_flag_hint(leaf, extra))
    return args


def _flag_hint(parser: argparse.ArgumentParser, extra: list[str]) -> list[str] | None:
    """`did you mean --prefix?` for each unknown flag with a near valid one."""
    from ..suggest import hint

    flags = [flag for action in parser._actions if action.help != argparse.SUPPRESS
             for flag in action.option_strings if flag.startswith("--")]
    lines = [hint(token.split("=", 1)[0], flags) for token in extra if token.startswith("--")]
    return [line for line in lines if line] or None


def choice_hint(word: str, choices: Sequence[str], usage_hint: str) -> list[str]:
    """The hint for a word a command checks itself (a mode, an unlock method): the nearest valid
    choice when there is one, then what is accepted."""
    from ..suggest import hint

    near = hint(word, choices)
    return [near, usage_hint] if near else [usage_hint]


def check_mode(mode: str) -> str:
    """`--mode`'s value (run, render or envfile), else `invalid_mode` with the nearest choice."""
    if mode not in flags.MODES:
        raise errors.InvalidMode(mode=mode, hint=choice_hint(mode, flags.MODES, errors.InvalidMode.hint or ""))
    return mode


def complete_with(action: argparse.Action, words: Sequence[str]) -> None:
    """Words the completion scripts offer for `action` without argparse enforcing them: the command
    refuses other words with its own reason (`unknown_unlock_method`, `invalid_mode`)."""
    action.completions = list(words)  # type: ignore[attr-defined]  # a marker attribute the completion scripts read


def add_mode_flag(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """`--mode run|render|envfile` (plan, map lint, doctor): checked by the command itself."""
    complete_with(p.add_argument("--mode", default=default, help=help), flags.MODES)


def complete_names(action: argparse.Action, kind: str) -> argparse.Action:
    """Mark a positional whose completions are names (`secrets` or `profiles`): the completion
    scripts ask `kimen completion --names KIND` for them at completion time."""
    action.complete_names = kind  # type: ignore[attr-defined]  # a marker attribute the completion scripts read
    return action


class InlineAction(argparse.Action):
    """Appends `(kind, value)` to `dest`, so several flags keep one shared argv order (the order
    inline directives are typed in is the order they apply in, later ones winning)."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(*args, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.kind, values))
        setattr(namespace, self.dest, items)
