"""The argparse tree, dispatch and the one error handler.

Commands live in small modules under `kimen.cli` (one per area). Each module exposes
``register(subparsers, name)`` and imports what its commands need *inside* the command functions,
so `kimen run` with a live session pays only for argparse, the projection code and the daemon
client. To keep start-up light, only the parser of the command being run is built: the first
non-flag word before ``--`` picks the module. Help, completion and unknown words build the tree.

Nothing imports this package except `kimen.__main__` (an import-linter contract).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from .. import errors, output


def _argparse_without_gettext():
    """kimen's messages are English, but argparse looks every message up through gettext: importing
    gettext compiles a regular expression (~1.2 ms, a tenth of `kimen run`), and each lookup stats a
    handful of locale paths that cannot exist for kimen. argparse is imported against a stand-in
    that returns messages unchanged; the real gettext stays importable for anyone else."""
    stand_in = type(sys)("gettext")
    stand_in.gettext = lambda message: message
    stand_in.ngettext = lambda singular, plural, n: singular if n == 1 else plural
    installed = sys.modules.setdefault("gettext", stand_in) is stand_in
    try:
        import argparse
    finally:
        if installed:
            del sys.modules["gettext"]
    argparse._ = stand_in.gettext  # type: ignore[attr-defined]  # argparse imported earlier elsewhere
    argparse.ngettext = stand_in.ngettext  # type: ignore[attr-defined]
    return argparse


argparse = _argparse_without_gettext()

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# command word -> (module, one-line help). The order is the order of `kimen help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "vault": ("kimen.cli.vault", "create, inspect and rekey the vault"),
    "secret": ("kimen.cli.secret", "set, list, read, remove, rename and import secrets"),
    "config": ("kimen.cli.config", "show and edit the config file"),
    "session": ("kimen.cli.session", "unlock once, then use the vault without a passphrase (session daemon)"),
    "run": ("kimen.cli.projection", "run a command with secrets projected into env, files and stdin"),
    "render": ("kimen.cli.projection", "write a profile's files into a directory (e.g. for a service)"),
    "envfile": ("kimen.cli.projection", "write an envfile (dotenv, shell, docker or json)"),
    "plan": ("kimen.cli.projection", "show what a projection would do, without values"),
    "map": ("kimen.cli.projection", "check .kmap profiles (map lint)"),
    "doctor": ("kimen.cli.projection", "check the setup: config, vault or bundles, session, profile"),
    "project": ("kimen.cli.projection", "aliases of run, render and plan"),
    "bundle": ("kimen.cli.bundle", "seal and open signed, age-encrypted bundles (vault.age)"),
    "init": ("kimen.cli.init", "write CI workflow templates (GitHub Actions)"),
    "version": ("kimen.cli.misc", "print the version"),
    "help": ("kimen.cli.misc", "show help for a command"),
    "completion": ("kimen.cli.misc", "print a shell completion script"),
}

# Global flags with a value (needed to find the command word without building the tree).
_VALUE_FLAGS = {"--vault", "--passphrase-cmd"}


class Result:
    """What a command produced: JSON fields under `action`, and the human lines."""

    __slots__ = ("action", "exit_code", "fields", "human")

    def __init__(self, action: str, human: str | list[str] | None = None,
                 fields: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        self.action = action
        self.human = human
        self.fields = fields if fields is not None else {}
        self.exit_code = exit_code


class Context:
    """Everything a command needs besides its own arguments."""

    def __init__(self, args: argparse.Namespace, child_argv: list[str] | None, env: dict[str, str],
                 area: int = 1) -> None:
        self.args = args
        self.child_argv = child_argv
        self.env = env
        self.area = area
        # filled lazily by kimen.access: the loaded config, the stdin claim, memoised sources
        self.config: Any = None
        self.stdin: Any = None
        self.memo: dict[str, Any] = {}

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def debug(self) -> bool:
        return bool(getattr(self.args, "debug", False))

    @property
    def vault_flag(self) -> str | None:
        return getattr(self.args, "vault", None)

    @property
    def passphrase_cmd(self) -> str | None:
        return getattr(self.args, "passphrase_cmd", None)

    @property
    def passphrase_stdin(self) -> bool:
        return bool(getattr(self.args, "passphrase_stdin", False))

    @property
    def no_session(self) -> bool:
        return bool(getattr(self.args, "no_session", False))


Handler = Callable[[Context], "Result | int | None"]


class Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` instead of exiting, so usage errors get envelopes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse builds a formatter for every add_argument(), which imports shutil and asks the
        # terminal for its size each time; one cached width keeps parser construction cheap.
        return self.formatter_class(prog=self.prog, width=_help_width())

    def error(self, message: str):  # type: ignore[override]
        raise errors.UsageError(detail=message, usage=self.format_usage().strip())


_WIDTH: list[int] = []


def _help_width() -> int:
    """The help width argparse would use (COLUMNS, else the terminal, else 80; minus 2)."""
    if not _WIDTH:
        try:
            columns = int(os.environ.get("COLUMNS", ""))
        except ValueError:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, OSError, ValueError):
                columns = 80
        _WIDTH.append(max(columns - 2, 20))
    return _WIDTH[0]


def _global_flags() -> argparse.ArgumentParser:
    """The flags every command accepts (SPEC §2.4); SUPPRESS keeps sub-parsers from resetting them."""
    g = Parser(add_help=False)
    s = argparse.SUPPRESS
    g.add_argument("--json", action="store_true", default=s, help="machine-readable output")
    g.add_argument("--vault", metavar="PATH", default=s, help="vault to use")
    g.add_argument("--passphrase-cmd", metavar="CMD", default=s,
                   help="run CMD; its first output line is the passphrase")
    g.add_argument("--passphrase-stdin", action="store_true", default=s, help="read the passphrase from stdin")
    g.add_argument("--no-session", action="store_true", default=s, help="never use the session daemon")
    g.add_argument("--debug", action="store_true", default=s, help="print a traceback for internal errors")
    return g


GLOBAL = _global_flags()


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    *,
    handler: Handler | None = None,
    area: int | None = None,
    aliases: Sequence[str] = (),
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add a command (or a group when `handler` is None) that accepts the global flags."""
    parser = sub.add_parser(
        name,
        help=help,
        aliases=list(aliases),
        description=description or help,
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

    top = Parser(
        prog="kimen",
        description="kimen: local-first secrets. Run `kimen help COMMAND` for details.",
        parents=[GLOBAL],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="store_true", default=argparse.SUPPRESS, help="print the version")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, prog="kimen")
    registered: set[str] = set()
    for name, (module_name, _help) in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        module.register(sub, name)
        registered.add(name)
    return top


def _command_word(argv: Sequence[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--":
            return None
        if token.startswith("-"):
            if token in _VALUE_FLAGS:
                skip = True
            continue
        return token
    return None


def split_child_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Everything after the first `--` belongs to the child (SPEC §2.1)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def _print_result(ctx: Context, result: Result) -> None:
    if ctx.json:
        output.print_json(output.success_envelope(result.action, result.fields))
    elif result.human is not None:
        output.print_lines(result.human)


def _report_error(ctx: Context | None, err: errors.KimenError, area: int, want_json: bool) -> int:
    code = err.exit_code(area)
    if want_json:
        output.print_error_envelope(err.envelope(area))
    else:
        usage = err.fields.get("usage") if isinstance(err, errors.UsageError) else None
        if usage:
            sys.stderr.write(f"{usage}\n")
        output.print_error(err.message, err.hint_text)
    return code


def _debug_traceback(exc: BaseException) -> None:
    """Frames and exception types only: exception *text* may carry secret material (SPEC §11.8)."""
    import traceback

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in reversed(chain):
        sys.stderr.write("Traceback (most recent call last):\n")
        sys.stderr.write("".join(traceback.format_list(traceback.extract_tb(item.__traceback__))))
        sys.stderr.write(f"{type(item).__module__}.{type(item).__qualname__}: <message withheld>\n")


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run the command, render its result or error; returns the exit code."""
    raw = list(sys.argv[1:] if argv is None else argv)
    kimen_argv, child_argv = split_child_argv(raw)
    want_json = "--json" in kimen_argv
    want_debug = "--debug" in kimen_argv
    ctx: Context | None = None
    area = 1
    try:
        word = _command_word(kimen_argv)
        only = word if word in COMMANDS else None
        parser = build_parser(only)
        if not kimen_argv or (word is None and not _has_top_level_action(kimen_argv)):
            parser.print_help()
            return 0
        args = _parse(parser, kimen_argv)
        if getattr(args, "version", False) and getattr(args, "command", None) is None:
            return run_cli(["version", *(t for t in kimen_argv if t != "--version")])
        handler: Handler | None = getattr(args, "handler", None)
        area = getattr(args, "area", 1)
        ctx = Context(args=args, child_argv=child_argv, env=dict(os.environ), area=area)
        want_json = ctx.json
        if handler is None:  # a group given without a subcommand is caught by argparse
            parser.print_help()
            return 0
        result = handler(ctx)
        if isinstance(result, Result):
            _print_result(ctx, result)
            return result.exit_code
        return int(result or 0)
    except errors.KimenError as err:
        return _report_error(ctx, err, area, want_json)
    except KeyboardInterrupt:
        return _report_error(ctx, errors.Interrupted(), area, want_json)
    except BrokenPipeError:
        # the reader went away (`kimen secret list | head`): exit quietly like other CLI tools
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 141
    except SystemExit:
        raise
    except Exception as exc:  # the one place a bug becomes exit 1
        if want_debug:
            _debug_traceback(exc)
        return _report_error(ctx, errors.InternalError(type=type(exc).__name__), 1, want_json)


def _parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but unknown arguments are reported with the usage of the command they follow."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        leaf: argparse.ArgumentParser = getattr(args, "parser", parser)
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _has_top_level_action(argv: Sequence[str]) -> bool:
    return any(token in ("--version", "-h", "--help") for token in argv)
