"""`kimen config path|show`, `config vault set|show|clear`, `config unlock set|show|clear`.

The file and its settings: docs/passphrase-and-config.md."""

from __future__ import annotations

import argparse

from .. import errors
from ..config import UNLOCK_METHODS
from .model import COMMANDS, Invocation, Result, takes_child_argv
from .parser import add_command, add_group, add_subcommands, choice_hint, complete_with


def register(sub: argparse._SubParsersAction, name: str) -> None:
    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_CONFIG)
    add_command(group, "path", "print the config file path", handler=cmd_path)
    p = add_command(group, "show", "print the raw config JSON", handler=cmd_show)
    p.add_argument("--pretty", choices=["true", "false"], default="true", help="indent the JSON (default true)")

    vault = add_command(group, "vault", "the default vault path")
    vault_sub = add_subcommands(vault, "config_vault_command")
    p = add_command(vault_sub, "set", "store the default vault path", handler=cmd_vault_set)
    p.add_argument("path", nargs="?", metavar="PATH")
    add_command(vault_sub, "show", "show the stored vault path", handler=cmd_vault_show)
    add_command(vault_sub, "clear", "remove the stored vault path", handler=cmd_vault_clear)

    unlock = add_command(group, "unlock", "the default unlock method")
    unlock_sub = add_subcommands(unlock, "config_unlock_command")
    p = add_command(unlock_sub, "set", "store the unlock method: prompt, env, stdin, or exec -- CMD ARGS...",
                    handler=cmd_unlock_set)
    complete_with(p.add_argument("method", metavar="METHOD"), UNLOCK_METHODS)
    add_command(unlock_sub, "show", "show the unlock method", handler=cmd_unlock_show)
    add_command(unlock_sub, "clear", "back to the prompt", handler=cmd_unlock_clear)


def _config(inv: Invocation):
    from ..access import load_config

    return load_config(inv)


def cmd_path(inv: Invocation) -> Result:
    """The path only: the file is not read, so a broken config can still be found and fixed."""
    from ..config import config_path

    path = config_path(inv.env)
    return Result("config_path", path, {"path": path})


def cmd_show(inv: Invocation) -> int:
    import json

    from ..output import print_lines

    config = _config(inv)
    if inv.options.pretty == "true":
        print_lines(json.dumps(config.data, indent=2))
    else:
        print_lines(json.dumps(config.data, separators=(",", ":")))
    return 0


def cmd_vault_set(inv: Invocation) -> Result:
    import os

    from ..paths import absolute

    if not inv.options.path:
        raise errors.MissingVaultPath(hint="kimen config vault set PATH")
    config = _config(inv)
    vault_path = absolute(inv.options.path)
    if os.path.isdir(vault_path):
        suggested = os.path.join(vault_path, "vault.db")
        raise errors.InvalidVaultFile(path=vault_path, hint=f"it is a directory: give the vault's file "
                                                            f"(`kimen config vault set {suggested}`)")
    config.data.setdefault("vault", {})
    if not isinstance(config.data["vault"], dict):
        raise errors.InvalidConfigValue(field="vault", path=config.path, detail="must be an object",
                                        hint=f"fix `vault` in {config.path}")
    config.data["vault"]["path"] = vault_path
    config.save()
    return Result("config_vault_set", f"vault path: {vault_path}", {"path": config.path, "vault_path": vault_path})


def cmd_vault_show(inv: Invocation) -> Result:
    config = _config(inv)
    vault_path = config.vault_path()
    return Result("config_vault_show", f"vault path: {vault_path or '(not set)'}",
                  {"path": config.path, "vault_path": vault_path})


def cmd_vault_clear(inv: Invocation) -> Result:
    config = _config(inv)
    section = config.section("vault")
    if "path" in section:
        del section["path"]
        if not section:
            del config.data["vault"]
        config.save()
    return Result("config_vault_clear", "vault path cleared", {"path": config.path, "vault_path": None})


@takes_child_argv
def cmd_unlock_set(inv: Invocation) -> Result:
    method = inv.options.method
    if method not in UNLOCK_METHODS:
        raise errors.UnknownUnlockMethod(method=method, hint=choice_hint(method, UNLOCK_METHODS,
                                                                         errors.UnknownUnlockMethod.hint or ""))
    argv = inv.child_argv or []
    if method == "exec" and not (argv and argv[0].strip()):
        raise errors.MissingUnlockExecCommand()
    if method != "exec" and argv:
        raise errors.UsageError(detail=f"unlock method {method} takes no command")
    config = _config(inv)
    config.section("unlock")  # validates the existing shape
    unlock = {"method": method}
    if method == "exec":
        unlock["exec"] = list(argv)
    config.data["unlock"] = unlock
    config.save()
    human = f"method: {method}" + (f"\nexec: {_argv_text(argv)}" if argv else "")
    return Result("config_unlock_set", human.splitlines(),
                  {"path": config.path, "method": method, "exec": list(argv) if argv else None})


def _argv_text(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def cmd_unlock_show(inv: Invocation) -> Result:
    config = _config(inv)
    unlock = config.unlock()
    default = not unlock.get("method")  # absent, null or "" (Config.unlock checked the rest)
    method = unlock.get("method") or "prompt"
    argv = unlock.get("exec") if method == "exec" else None
    if default:
        human = ["method: prompt (default)"]
    else:
        human = [f"method: {method}"] + ([f"exec: {_argv_text(argv)}"] if argv else [])
    return Result("config_unlock_show", human, {
        "path": config.path, "method": method, "exec": argv, "default": default})


def cmd_unlock_clear(inv: Invocation) -> Result:
    config = _config(inv)
    if "unlock" in config.data:
        del config.data["unlock"]
        config.save()
    return Result("config_unlock_clear", "method: prompt (default)", {"path": config.path, "method": "prompt"})
