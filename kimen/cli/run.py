"""`kimen run`: start a command with a profile's secrets projected into its environment, files and stdin.

The hot path: this module imports nothing heavy at top level -- not argparse (`kimen.cli.fastargs`
reads the common argv without it; the flags are registered in `kimen.cli.project` from the tables
of `kimen.cli.flags`), and not the other projection commands. The steps it shares with them (load
the profile, resolve the winners through one store) are `kimen.cli.pipeline`'s; `--dry-run`'s
plan is `kimen.cli.plan`'s.
"""

from __future__ import annotations

import os

from .. import errors
from .model import output_loaded, takes_child_argv
from .pipeline import files_dir_arg, load_profile, resolve_values, write_user_dir

TYPE_CHECKING = False  # typing itself is not imported on the hot path
if TYPE_CHECKING:
    from ..projection.kmap import Directive
    from .model import Invocation


@takes_child_argv
def cmd_run(inv: Invocation) -> int:
    name = inv.options.command_name
    argv = inv.child_argv
    if not argv or not argv[0]:
        raise errors.MissingCommand(command=name)
    if "KIMEN_RUN" in inv.env:
        from ..output import warn

        warn("nested kimen run", reason="nested_run")
    files_dir = files_dir_arg(inv)
    profile = load_profile(inv)
    if inv.options.dry_run:
        from .plan import print_plan

        return print_plan(inv, profile, "run", argv)
    winners = profile.winners()
    files = [d for d in winners if d.kind == "file"]
    if files and files_dir is None:
        from ..projection.kmap import check_private_dir_targets

        check_private_dir_targets(files)
    stdin = next((d for d in winners if d.kind == "stdin"), None)
    values = resolve_values(inv, [d for d in winners if d.ref is not None])
    return _run(inv, winners, files, stdin, values, argv, files_dir if files else None)


def _flush_warnings() -> None:
    """Collected warnings before the child owns stderr; none can wait while `kimen.output` was
    never imported (`output_loaded`)."""
    if output_loaded():
        from ..output import flush_warnings

        flush_warnings()


def _run(inv: Invocation, winners: list[Directive], files: list[Directive], stdin: Directive | None,
         values: dict[Directive, bytes], argv: list[str], user_dir: str | None) -> int:
    from ..projection import env as penv

    masked = _mask_values(inv, values)  # before anything is written or started
    private = bool(files) and user_dir is None
    if private:
        from ..paths import runtime_base

        planned: str | None = os.path.join(runtime_base(inv.env), "run-" + "0" * 16)  # as long as the real one
    else:
        planned = user_dir
    environ = penv.child_environ(inv.env, winners, values, planned, pristine=inv.options.pristine)
    penv.check_exec_block(environ, argv)
    exe = penv.find_command(argv[0], environ)
    payload = [(d.target, values[d]) for d in files]

    if not private and stdin is None and masked is None:
        if user_dir is not None:
            write_user_dir(user_dir, payload, errors.UnsafeFilesDir)
        _flush_warnings()  # with --json: one `{"warnings": [...]}` line before the child owns stderr
        try:
            penv.exec_in_place(exe, argv, environ)
        except errors.KimenError:  # it did not start (a script without `#!`): leave no value behind
            _unwrite(user_dir, payload)
            raise
        raise AssertionError("unreachable")  # pragma: no cover - exec_in_place returns by raising

    # Supervised: this process lives as long as the child, so the collector (off during start-up,
    # see `kimen.__main__`) runs again. Block the relayed signals *before* anything needs cleaning up.
    import gc

    gc.enable()
    from ..projection import run as prun

    relay = None
    if masked is not None:
        from ..projection.relay import Relay

        relay = Relay(masked, stdin_projected=stdin is not None)
    prun.block_signals(relay.watched if relay is not None else prun.WATCHED)
    runtime = None
    try:
        if private:
            from ..projection.files import create_runtime_dir

            runtime = create_runtime_dir(inv.env)
            environ = penv.child_environ(inv.env, winners, values, runtime.path, pristine=inv.options.pristine)
            runtime.write(payload)
        elif user_dir is not None:
            write_user_dir(user_dir, payload, errors.UnsafeFilesDir)
        stop = prun.pending_stop()
        if stop is not None:  # interrupted while setting up: the child never starts
            _unwrite(user_dir, payload)
            return 128 + stop
        _flush_warnings()
        own_group = prun.own_group_wanted()
        try:
            pid = prun.start(exe, argv, environ, values[stdin] if stdin is not None else None, own_group=own_group,
                             spawner=relay.spawn if relay is not None else None)
        except errors.KimenError:  # it did not start (a script without `#!`)
            _unwrite(user_dir, payload)
            raise
        if relay is not None:
            code = relay.supervise(pid, own_group=own_group)
            lost = relay.lost_output()
            if lost is not None:  # the child's output did not all reach kimen's: never a silent 0
                raise errors.output_failed(*lost)
            return code
        return prun.supervise(pid, own_group=own_group)
    finally:
        if relay is not None:
            relay.close()
        if runtime is not None:
            runtime.remove()


def _unwrite(user_dir: str | None, payload: list[tuple[str, bytes]]) -> None:
    """The command never started: remove the files this run wrote to `--files-dir` (no value is
    left behind for a command that did not run)."""
    if user_dir is not None and payload:
        from ..projection.files import remove_written

        remove_written(user_dir, [rel for rel, _ in payload], errors.UnsafeFilesDir)


def _mask_values(inv: Invocation, values: dict[Directive, bytes]) -> dict[str, bytes] | None:
    """Under --mask / --strict-mask: the projected values by the name `[masked:NAME]` shows (the
    variable, the file's relative path, `stdin`), short ones refused or named; else None."""
    strict = bool(inv.options.strict_mask)
    if not (strict or inv.options.mask):
        return None
    from ..projection.relay import check_short_values

    named: dict[str, bytes] = {}
    for d, value in values.items():
        name = d.target if d.kind != "stdin" else "stdin"
        if name in named:  # a variable and a file (or `stdin`) of one name: each value is masked
            name = f"{d.kind} {name}" if d.kind != "stdin" else "stdin (projected)"
        base, n = name, 2
        while name in named:  # that name is a target too (a file named `file A`): number it
            name, n = f"{base} ({n})", n + 1
        named[name] = value
    check_short_values(named, strict=strict)
    return named
