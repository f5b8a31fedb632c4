"""`kimen run`, and the steps every projection command shares (SPEC §6, §7).

One pipeline for every projection: parse and validate the profile and inline flags (nothing read
yet), decide which directives win, resolve exactly those (one store read, opened lazily and only
when a winning directive names a secret; then `exec:` sources), check every value for its target,
and only then write or start anything. `run` is the hot path: this module imports nothing heavy at
top level — not argparse (`kimen.cli.run_args` reads the common argv without it; the flags are
registered in `kimen.cli.projection`), and not the other projection commands. The store is fetched
in `store_for`, the one place a `--bundle` source plugs in.
"""

from __future__ import annotations

import os

from .. import errors
from . import takes_child_argv

TYPE_CHECKING = False  # typing itself is not imported on the hot path
if TYPE_CHECKING:
    from ..projection.kmap import Directive, Profile
    from ..store import Store
    from . import Context


def load_profile(ctx: Context, *, profile: str | None = None, map_path: str | None = None,
                 inline: list[tuple[str, str]] | None = None) -> Profile:
    from ..projection import kmap

    args = ctx.args
    return kmap.load(
        map_path=args.map if map_path is None and profile is None else map_path,
        profile=args.profile if map_path is None and profile is None else profile,
        inline=args.inline if inline is None else inline,
        env=ctx.env,
    ).check()


def store_for(ctx: Context) -> Store:
    """The store that serves secret references: `--bundle` (read-only, SPEC §8.5), else the
    session or the unlocked vault."""
    if getattr(ctx.args, "bundle", None):
        from .bundle_opts import bundle_store

        return bundle_store(ctx)  # type: ignore[return-value]
    from ..access import open_store

    return open_store(ctx)


def resolve_values(ctx: Context, directives: list[Directive]) -> dict[Directive, bytes]:
    from ..environ import public_environ
    from ..projection.resolve import resolve

    return resolve(directives, lambda: store_for(ctx), public_environ(ctx.env), os.getcwd())


def files_dir_arg(ctx: Context) -> str | None:
    from ..paths import absolute

    value = getattr(ctx.args, "files_dir", None)
    if value == "":  # not "no --files-dir": an empty path would silently mean the current directory
        raise errors.UsageError(detail="--files-dir needs a directory, not an empty value")
    return absolute(value) if value is not None else None


def write_user_dir(path: str, payload: list[tuple[str, bytes]], unsafe: type[errors.KimenError]) -> None:
    """`--files-dir` / render target: create 0700 or check it, then replace each file atomically."""
    from ..projection.files import prepare_user_dir, write_files

    fd = prepare_user_dir(path, unsafe)
    try:
        write_files(fd, path, payload, replace=True, error=unsafe)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


@takes_child_argv
def cmd_run(ctx: Context) -> int:
    from ..output import warn

    name = ctx.args.command_name
    argv = ctx.child_argv
    if not argv or not argv[0]:
        raise errors.MissingCommand(command=name)
    if "KIMEN_RUN" in ctx.env:
        warn("nested kimen run", reason="nested_run")
    files_dir = files_dir_arg(ctx)
    profile = load_profile(ctx)
    if ctx.args.dry_run:
        from .projection import print_plan

        return print_plan(ctx, profile, "run", argv)
    winners = profile.winners()
    files = [d for d in winners if d.kind == "file"]
    if files and files_dir is None:
        from ..projection.kmap import check_private_dir_targets

        check_private_dir_targets(files)
    stdin = next((d for d in winners if d.kind == "stdin"), None)
    values = resolve_values(ctx, [d for d in winners if d.ref is not None])
    return _run(ctx, winners, files, stdin, values, argv, files_dir if files else None)


def _run(ctx: Context, winners: list[Directive], files: list[Directive], stdin: Directive | None,
         values: dict[Directive, bytes], argv: list[str], user_dir: str | None) -> int:
    from ..output import flush_warnings
    from ..projection import env as penv
    from ..projection import run as prun

    masked = _mask_values(ctx, values)  # before anything is written or started
    private = bool(files) and user_dir is None
    if private:
        from ..paths import runtime_base

        planned = os.path.join(runtime_base(ctx.env), "run-" + "0" * 16)  # same length as the real one
    else:
        planned = user_dir
    environ = penv.child_environ(ctx.env, winners, values, planned, pristine=ctx.args.pristine)
    penv.check_exec_block(environ, argv)
    exe = penv.find_command(argv[0], environ)
    payload = [(d.target, values[d]) for d in files]

    if not private and stdin is None and masked is None:
        if user_dir is not None:
            write_user_dir(user_dir, payload, errors.UnsafeFilesDir)
        flush_warnings()  # with --json: one `{"warnings": [...]}` line before the child owns stderr
        prun.exec_in_place(exe, argv, environ)
        raise AssertionError("unreachable")  # pragma: no cover - exec_in_place returns by raising

    # Supervised: block the relayed signals *before* anything needs cleaning up.
    relay = None
    if masked is not None:
        from ..projection.relay import Relay

        relay = Relay(masked, stdin_projected=stdin is not None)
    prun.block_signals(relay.watched if relay is not None else prun.WATCHED)
    runtime = None
    try:
        if private:
            from ..projection.files import create_runtime_dir

            runtime = create_runtime_dir(ctx.env)
            environ = penv.child_environ(ctx.env, winners, values, runtime.path, pristine=ctx.args.pristine)
            runtime.write(payload)
        elif user_dir is not None:
            write_user_dir(user_dir, payload, errors.UnsafeFilesDir)
        stop = prun.pending_stop()
        if stop is not None:  # interrupted while setting up: the child never starts
            return 128 + stop
        flush_warnings()
        own_group = prun.own_group_wanted()
        pid = prun.start(exe, argv, environ, values[stdin] if stdin is not None else None, own_group=own_group,
                         spawner=relay.spawn if relay is not None else None)
        if relay is not None:
            return relay.supervise(pid, own_group=own_group)
        return prun.supervise(pid, own_group=own_group)
    finally:
        if relay is not None:
            relay.close()
        if runtime is not None:
            runtime.remove()


def _mask_values(ctx: Context, values: dict[Directive, bytes]) -> dict[str, bytes] | None:
    """Under --mask / --strict-mask: the projected values by the name `[masked:NAME]` shows (the
    variable, the file's relative path, `stdin`), short ones refused or named; else None."""
    strict = bool(getattr(ctx.args, "strict_mask", False))
    if not (strict or getattr(ctx.args, "mask", False)):
        return None
    from ..projection.relay import check_short_values

    named = {(d.target if d.kind != "stdin" else "stdin"): value for d, value in values.items()}
    check_short_values(named, strict=strict)
    return named
