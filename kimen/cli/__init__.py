"""Dispatch and the one error handler; the argparse tree itself is in `kimen.cli.parser`.

Commands live in small modules under `kimen.cli` (one per area). Each module exposes
``register(subparsers, name)`` and imports what its commands need *inside* the command functions.
To keep start-up light, only the parser of the command being run is built: the first non-flag
word before ``--`` picks the module; help, completion and unknown words build the tree. The
common argv shapes of `run` are read without argparse at all (`kimen.cli.run_args`), so `kimen
run` with a live session pays only for the projection code and the daemon client.

Nothing imports this package except `kimen.__main__` (an import-linter contract).
"""

from __future__ import annotations

import os
import sys

from .. import errors, output

TYPE_CHECKING = False  # neither typing nor collections.abc is imported on the hot path
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any, TypeVar

    Handler = Callable[["Context"], "Result | int | None"]
    H = TypeVar("H", bound=Handler)

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


def takes_child_argv(handler: H) -> H:
    """Mark a command that reads the words after `--` (`run`, `plan`, `config unlock set exec`).

    Every other command refuses them as a usage error (SPEC §2.1: a wrong argument count), rather
    than silently dropping what the user typed."""
    handler.takes_child_argv = True  # type: ignore[attr-defined]
    return handler


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


def _suggest_secret_names(ctx: Context, err: errors.SecretNotFound) -> None:
    """Near names from the vault file, read without unlocking (names are not secret). A bundle
    store suggests from its own names when it raises; here only the vault is asked."""
    if err.suggested or getattr(ctx.args, "bundle", None):
        return
    try:
        from ..access import open_metadata

        with output.capture_warnings(), open_metadata(ctx) as vault:
            err.suggest(vault.list_names())
    except Exception:  # noqa: S110 - a courtesy: never let it replace the error being reported
        pass


def _report_error(ctx: Context | None, err: errors.KimenError, area: int, want_json: bool) -> int:
    code = err.exit_code(area)
    if isinstance(err, errors.SecretNotFound) and ctx is not None:
        _suggest_secret_names(ctx, err)
    if want_json:
        output.print_error_envelope(err.envelope(area))
    else:
        usage = err.fields.get("usage") if isinstance(err, errors.UsageError) else None
        if isinstance(err, errors.UsageError) and not usage and ctx is not None:
            # raised by a command after parsing: still printed with that command's usage line (§2.1)
            parser = getattr(ctx.args, "parser", None)
            usage = parser.format_usage().strip() if parser is not None else None
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


def run_cli(argv: Sequence[str] | None = None, *, fast: bool = True) -> int:
    """Parse `argv`, run the command, render its result or error; returns the exit code.

    `fast=False` always builds the argparse parser (the tests compare both readings)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    kimen_argv, child_argv = split_child_argv(raw)
    want_json = "--json" in kimen_argv
    want_debug = "--debug" in kimen_argv
    output.collect_warnings(want_json)
    ctx: Context | None = None
    area = 1
    try:
        word = _command_word(kimen_argv)
        args = parser = None
        if fast and (word == "run" or word == "project") and child_argv:
            from .run_args import read_run_args

            args = read_run_args(kimen_argv)
        if args is None:
            from .parser import build_parser, parse

            parser = build_parser(word if word in COMMANDS else None)
            if not raw:
                parser.print_help()
                return 0
            args = parse(parser, kimen_argv)  # `kimen --bogus` is a usage error, not the overview
        if getattr(args, "version", False):  # like --help: the top-level action wins over a command word
            return run_cli(["version", *(t for t in ("--json", "--debug") if t in kimen_argv)])
        handler: Handler | None = getattr(args, "handler", None)
        area = getattr(args, "area", 1)
        ctx = Context(args=args, child_argv=child_argv, env=dict(os.environ), area=area)
        if want_json != ctx.json:  # `--json` was the value of another flag
            want_json = ctx.json
            output.collect_warnings(want_json)
        if child_argv and not getattr(handler, "takes_child_argv", False):
            leaf = getattr(args, "parser", None) or parser
            raise errors.UsageError(detail=f"{leaf.prog} takes no arguments after --",
                                    usage=leaf.format_usage().strip())
        if handler is None:  # only on the argparse path: global flags alone
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

