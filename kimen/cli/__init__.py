"""Dispatch and the one error handler; the argparse tree itself is in `kimen.cli.parser`.

Commands live in small modules under `kimen.cli` (one per area). Each module exposes
``register(subparsers, name)`` and imports what its commands need *inside* the command functions.
To keep start-up light, only the parser of the command being run is built: the first non-flag
word before ``--`` picks the module; help, completion and unknown words build the tree. The
common argv shapes of `run` are read without argparse at all (`kimen.cli.fastargs`, from the same
flag tables, `kimen.cli.flags`), so `kimen run` with a live session pays only for the projection
code and the daemon client.

The shared parts live in leaves that import no command module: the command records, results and
the frozen `Invocation` a handler receives (`model`), the flag tables (`flags`), the argparse
helpers (`parser`), and the projection pipeline (`pipeline`). Command modules import those and
never each other; this module imports command modules only by name (`importlib`).

Nothing imports this package except `kimen.__main__` (an import-linter contract).
"""

from __future__ import annotations

import os
import sys

from .. import errors
from .flags import GLOBAL, value_flags
from .model import COMMANDS, PROFILE_ENV_COMMANDS, Invocation, Result, output_loaded, split_child_argv

TYPE_CHECKING = False  # neither typing nor collections.abc is imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

    from .model import Handler

__all__ = ["run_cli", "split_child_argv"]

# Global flags with a value (needed to find the command word without building the tree).
_VALUE_FLAGS = value_flags(GLOBAL)
# The first words of the commands `kimen.cli.fastargs.simple_options` reads (kept in step with its
# table by tests/test_fastargs.py, so this module need not import the reader for other commands).
_SIMPLE_WORDS = frozenset({"version", "vault", "secret", "session", "status", "direnv", "sync"})


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


def _collect_warnings(want_json: bool) -> None:
    """With --json, warnings wait for the envelope; else they are printed (`output_loaded`)."""
    if want_json or output_loaded():
        from .. import output

        output.collect_warnings(want_json)


def _print_result(inv: Invocation, result: Result) -> None:
    from .. import output

    fields = result.fields
    if result.exit_code and "exit_code" not in fields:  # a report that failed (`sync status --strict`)
        fields = {**fields, "ok": False, "exit_code": result.exit_code}
    if inv.json:
        output.print_json(output.success_envelope(result.action, fields))
    elif getattr(inv.options, "terse", False):
        output.print_lines(output.terse_line(result.action, fields))
    elif result.human is not None:
        output.print_lines(result.human)


def _suggest_secret_names(inv: Invocation, err: errors.SecretNotFound) -> None:
    """Near names from the vault file, read without unlocking (names are not secret). A bundle
    store suggests from its own names when it raises; here only the vault is asked."""
    if err.suggested or getattr(inv.options, "bundle", None):
        return
    try:
        from .. import output
        from ..access import open_metadata

        with output.capture_warnings(), open_metadata(inv) as vault:
            err.suggest(vault.list_names())
    except Exception:  # noqa: S110 - a courtesy: never let it replace the error being reported
        pass


def _report_error(inv: Invocation | None, err: errors.KimenError, area: int, want_json: bool) -> int:
    from .. import output

    code = err.exit_code(area)
    if isinstance(err, errors.SecretNotFound) and inv is not None:
        _suggest_secret_names(inv, err)
    if want_json:
        output.print_error_envelope(err.envelope(area))
    else:
        usage = err.fields.get("usage") if isinstance(err, errors.UsageError) else None
        if isinstance(err, errors.UsageError) and not usage and inv is not None:
            usage = inv.usage()  # raised by a command after parsing: still printed with its usage line
        if usage:
            output.write_err(f"{usage}\n")
        output.print_error(err.message, err.hint_text)
    return code


def _debug_traceback(exc: BaseException) -> None:
    """Frames and exception types only: exception *text* may carry secret material (a value in a
    parse error, a passphrase in a decoding error), so no message is printed."""
    import traceback

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    from ..output import write_err

    for item in reversed(chain):
        write_err("Traceback (most recent call last):\n")
        write_err("".join(traceback.format_list(traceback.extract_tb(item.__traceback__))))
        write_err(f"{type(item).__module__}.{type(item).__qualname__}: <message withheld>\n")


def _handler(found: Handler | str | None) -> Handler | None:
    """A handler named "module:function" (see `kimen.cli.model.RUN_HANDLER`) is imported here."""
    if not isinstance(found, str):
        return found
    module, _, name = found.partition(":")
    __import__(module)  # importlib itself (and the `warnings` it brings) would cost more than the lookup
    handler: Handler = getattr(sys.modules[module], name)
    return handler


def _fast_usage(words: list[str]) -> Callable[[], str | None]:
    """The usage line of a command read without argparse: the parser is built only when needed."""
    def usage() -> str | None:
        from .parser import build_parser, parse

        leaf = parse(build_parser(words[0]), words).parser
        return str(leaf.format_usage().strip())

    return usage


def _parser_usage(leaf: Any) -> Callable[[], str | None]:
    return lambda: str(leaf.format_usage().strip())


def _profile_default(options: dict[str, Any], word: str | None, env: Mapping[str, str]) -> None:
    """KIMEN_PROFILE (non-empty) is the profile of the commands of `PROFILE_ENV_COMMANDS` when
    neither --profile nor --map is given; `profile_source` says which applied (flag, env or None)."""
    if options.get("profile") is not None:
        options["profile_source"] = "flag"
    elif options.get("map") is None and word in PROFILE_ENV_COMMANDS and env.get("KIMEN_PROFILE"):
        options["profile"] = env["KIMEN_PROFILE"]
        options["profile_source"] = "env"
    else:
        options["profile_source"] = None


def run_cli(argv: Sequence[str] | None = None, *, fast: bool = True) -> int:
    """Parse `argv`, run the command, render its result or error; returns the exit code.

    `fast=False` always builds the argparse parser (the tests compare both readings)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    kimen_argv, child_argv = split_child_argv(raw)
    want_json = "--json" in kimen_argv
    want_debug = "--debug" in kimen_argv
    _collect_warnings(want_json)
    inv: Invocation | None = None
    area = 1
    try:
        word = _command_word(kimen_argv)
        options: dict[str, Any] | None = None
        parser = None
        usage: Callable[[], str | None] | None = None
        if fast and (word == "run" or word == "project") and child_argv:
            from .fastargs import run_options

            options = run_options(kimen_argv)
            if options is not None:
                usage = _fast_usage(options["command_name"].split())
        elif fast and word in _SIMPLE_WORDS and child_argv is None:
            from .fastargs import simple_options

            found = simple_options(kimen_argv)
            if found is not None:
                words, options = found
                usage = _fast_usage(list(words))
        if options is None:
            import gc

            gc.enable()  # off since `kimen.__main__` for the argparse-free commands only
            from .parser import build_parser, parse

            parser = build_parser(word if word in COMMANDS else None)
            if not raw:
                parser.print_help()
                return 0
            options = vars(parse(parser, kimen_argv))  # `kimen --bogus` is a usage error, not the overview
            leaf = options.get("parser")
            usage = _parser_usage(leaf) if leaf is not None else None
        if options.get("version"):  # like --help: the top-level action wins over a command word
            return run_cli(["version", *(t for t in ("--json", "--debug") if t in kimen_argv)])
        handler = _handler(options.get("handler"))
        area = options.get("area", 1)
        env: Mapping[str, str] = os.environ
        # The token this command presents (never a child's). Commands of no area (version, help,
        # completion) never talk to the daemon, so they do not read the file either.
        if options.get("token_file") is not None and area != 1:
            from ..daemon.tokens import with_token_file

            env = with_token_file(os.environ, options["token_file"])
        if "profile" in options:
            _profile_default(options, word, env)
        inv = Invocation(options, env=env, child_argv=child_argv, area=area, usage=usage)
        if want_json != inv.json:  # `--json` was the value of another flag
            want_json = inv.json
            _collect_warnings(want_json)
        if child_argv and not getattr(handler, "takes_child_argv", False):
            leaf = options.get("parser") or parser
            assert leaf is not None  # the fast path reads only `run`, which takes child argv
            raise errors.UsageError(detail=f"{leaf.prog} takes no arguments after --",
                                    usage=leaf.format_usage().strip())
        if handler is None:  # only on the argparse path: global flags alone
            parser.print_help()  # type: ignore[union-attr]  # the fast path always names a handler
            return 0
        result = handler(inv)
        if isinstance(result, Result):
            _print_result(inv, result)
            return result.exit_code
        if output_loaded():  # printed no envelope (`inject`, `direnv` to stdout): with --json, the
            from ..output import flush_warnings  # warnings it collected go to stderr as one line

            flush_warnings()
        return int(result or 0)
    except errors.KimenError as err:
        return _report_error(inv, err, area, want_json)
    except KeyboardInterrupt:
        return _report_error(inv, errors.Interrupted(), area, want_json)
    except BrokenPipeError as exc:
        return stdout_failed(exc, inv, area, want_json)
    except SystemExit:
        raise
    except Exception as exc:  # the one place a bug becomes exit 1
        from ..output import StdoutFailed

        if isinstance(exc, StdoutFailed):
            return stdout_failed(exc, inv, area, want_json)
        if want_debug:
            _debug_traceback(exc)
        if isinstance(exc, FileNotFoundError) and _cwd_missing():  # from getcwd, or a relative path
            return _report_error(inv, errors.CwdMissing(), area, want_json)
        return _report_error(inv, errors.InternalError(type=type(exc).__name__), 1, want_json)


def _cwd_missing() -> bool:
    """Whether the working directory was removed (or renamed) under this process."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def report_failure(err: errors.KimenError, area: int) -> int:
    """A failure of a fast path (`kimen.fastpath`: no --json on its argv shapes), reported as the
    normal path reports it; returns the exit code."""
    return _report_error(None, err, area, False)


def stdout_failed(exc: OSError, inv: Invocation | None, area: int, want_json: bool) -> int:
    """A write to stdout failed; returns the exit code. The reader went away (`kimen secret list |
    head`): quietly 141, like other CLI tools. Anything else (a full disk, an I/O error):
    `write_failed` on stderr. Either way what is still buffered for stdout is dropped, so it cannot
    fail again at exit."""
    from ..output import drop_stdout

    drop_stdout()
    if isinstance(exc, BrokenPipeError):
        return 141
    return _report_error(inv, errors.output_failed("standard output", exc), area, want_json)
