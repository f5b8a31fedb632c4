"""The command model every command module shares: the command records, what a handler returns, and
the frozen invocation value a handler receives.

A leaf: it imports no command module and nothing of `kimen.cli` (so a command module, the parser and
the dispatcher can all import it without a cycle), and nothing heavy (it is on the `run` hot path:
no dataclasses, no typing at run time).
"""

from __future__ import annotations

TYPE_CHECKING = False  # neither typing nor collections.abc is imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeVar

    Handler = Callable[["Invocation"], "Result | int | None"]
    H = TypeVar("H", bound=Handler)

# command word -> (module that registers it, one-line help). The order is the order of `kimen help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "vault": ("kimen.cli.vault", "create, inspect and rekey the vault"),
    "secret": ("kimen.cli.secret", "set, list, read, remove, rename and import secrets"),
    "config": ("kimen.cli.config", "show and edit the config file"),
    "session": ("kimen.cli.session", "unlock once, then use the vault without a passphrase (session daemon)"),
    "run": ("kimen.cli.project", "run a command with secrets projected into env, files and stdin"),
    "render": ("kimen.cli.project", "write a profile's files into a directory (e.g. for a service)"),
    "envfile": ("kimen.cli.project", "write an envfile (dotenv, shell, docker or json)"),
    "plan": ("kimen.cli.project", "show what a projection would do, without values"),
    "map": ("kimen.cli.checks", "check .kmap profiles (map lint)"),
    "doctor": ("kimen.cli.checks", "check the setup: config, vault or bundles, session, profile"),
    "project": ("kimen.cli.project", "aliases of run, render and plan"),
    "bundle": ("kimen.cli.bundle", "seal and open signed, age-encrypted bundles (vault.age)"),
    "remote": ("kimen.cli.sync", "add, show, change and remove team remotes (fs or git)"),
    "sync": ("kimen.cli.sync", "share secrets with a team through a remote: init, pull, push, status, resolve"),
    # -- daily use --
    "inject": ("kimen.cli.daily", "render a template with {{ kimen:NAME }} references into a 0600 file"),
    "migrate": ("kimen.cli.daily", "import .env files into the vault and write profiles that reproduce them"),
    "status": ("kimen.cli.daily", "one screen: vault, session, the profile here, visible profiles"),
    "direnv": ("kimen.cli.daily", "print the .envrc lines that select a profile (eval in direnv)"),
    # --
    "init": ("kimen.cli.init", "write CI workflow templates (GitHub Actions)"),
    "version": ("kimen.cli.misc", "print the version"),
    "help": ("kimen.cli.misc", "show help for a command"),
    "completion": ("kimen.cli.misc", "print a shell completion script"),
}

# The commands whose profile defaults to KIMEN_PROFILE when neither --profile nor --map is given
# (never `bundle seal`, `session grant` or `migrate`: they name their scope or target explicitly).
PROFILE_ENV_COMMANDS = frozenset({"run", "render", "envfile", "plan", "doctor", "map", "project", "status", "direnv"})

# Handlers named by "module:function" instead of the function itself: a command registered by one
# module whose handler lives in another (the `run` command is registered with render, envfile and
# plan, but its handler is the hot path's own module), so command modules never import each other.
RUN_HANDLER = "kimen.cli.run:cmd_run"



class Result:
    """What a command produced: JSON fields under `action`, and the human lines."""

    __slots__ = ("action", "exit_code", "fields", "human")

    def __init__(self, action: str, human: str | list[str] | None = None,
                 fields: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        self.action = action
        self.human = human
        self.fields = fields if fields is not None else {}
        self.exit_code = exit_code


class Frozen:
    """Attributes set once in `__init__` (through `object.__setattr__`), never changed afterwards."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be deleted")


class Options(Frozen):
    """A command's own options, as argparse names them (`options.profile`, `options.dry_run`);
    read-only. An option the command does not have raises AttributeError, so `getattr(options,
    name, default)` works as on an argparse namespace."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name: str) -> bool:
        return name in self._values


_GLOBAL_NAMES = ("json", "debug", "vault", "passphrase_cmd", "passphrase_stdin", "no_session")


class Invocation(Frozen):
    """One command as typed, resolved before its handler runs, and never edited by it.

    `env` (a read-only copy of the environment), the output mode (`json`, `debug`), the vault and
    passphrase inputs (`vault_flag`, `passphrase_cmd`, `passphrase_stdin`, `no_session`), the child
    argv (the words after `--`), the command's `options`, its error `area` and `command_name`.
    `usage()` is the command's usage line (built on demand: the fast paths have no parser).
    A command that needs another view (rekey hides the new-passphrase variable from the old
    passphrase's command) derives a new value with `replace(...)`.

    `derived` memoises what `kimen.access` derives from these inputs on first use (the config file,
    the stdin claim, the explicit passphrase source): a pure function of the frozen inputs, computed
    at most once per invocation and never set from outside `kimen.access`.
    """

    __slots__ = ("area", "child_argv", "command_name", "debug", "derived", "env", "json", "no_session",
                 "options", "passphrase_cmd", "passphrase_stdin", "usage", "vault_flag")

    if TYPE_CHECKING:
        area: int
        child_argv: list[str] | None
        command_name: str
        debug: bool
        derived: dict[str, Any]
        env: Mapping[str, str]
        json: bool
        no_session: bool
        options: Options
        passphrase_cmd: str | None
        passphrase_stdin: bool
        usage: Callable[[], str | None]
        vault_flag: str | None

    def __init__(self, options: Mapping[str, Any], *, env: Mapping[str, str], child_argv: Sequence[str] | None,
                 area: int = 1, usage: Callable[[], str | None] | None = None) -> None:
        get = options.get
        init = object.__setattr__
        init(self, "options", Options(options))
        init(self, "env", _read_only(env))
        init(self, "child_argv", list(child_argv) if child_argv is not None else None)
        init(self, "area", area)
        init(self, "command_name", get("command_name") or "")
        init(self, "json", bool(get("json", False)))
        init(self, "debug", bool(get("debug", False)))
        init(self, "vault_flag", get("vault"))
        init(self, "passphrase_cmd", get("passphrase_cmd"))
        init(self, "passphrase_stdin", bool(get("passphrase_stdin", False)))
        init(self, "no_session", bool(get("no_session", False)))
        init(self, "usage", usage or _no_usage)
        init(self, "derived", {})

    def replace(self, *, env: Mapping[str, str] | None = None, **options: Any) -> Invocation:
        """A new invocation with another environment or other option values (a fresh `derived`)."""
        values = {**self.options._values, **options}
        return Invocation(values, env=self.env if env is None else env, child_argv=self.child_argv,
                          area=self.area, usage=self.usage)


_MappingProxy = type(type.__dict__)  # types.MappingProxyType, without importing `types`


def _read_only(env: Mapping[str, str]) -> Mapping[str, str]:
    return env if isinstance(env, _MappingProxy) else _MappingProxy(dict(env))


def _no_usage() -> None:
    return None


def takes_child_argv(handler: H) -> H:
    """Mark a command that reads the words after `--` (`run`, `plan`, `config unlock set exec`).

    Every other command refuses them as a usage error (a wrong argument count), rather than
    silently dropping what the user typed."""
    handler.takes_child_argv = True  # type: ignore[attr-defined]  # a marker attribute on a function
    return handler


def split_child_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Everything after the first `--` belongs to the child: kimen reads none of it."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def output_loaded() -> bool:
    """Whether `kimen.output` is imported. The argparse-free commands import it only to write
    something (`run` that succeeds writes nothing of its own, ~0.2 ms of its start-up), so when it
    is not, no warning is waiting and a fresh one would print warnings, not collect them."""
    import sys

    return "kimen.output" in sys.modules
