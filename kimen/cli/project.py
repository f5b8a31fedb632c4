"""`kimen run|render|envfile|plan|project`: the projection commands' flags, and render, envfile and plan.

`run`'s handler is `kimen.cli.run` (the hot path imports it without this module); the steps every
projection shares (load the profile, resolve the winning directives through one store, write
private files) are `kimen.cli.pipeline`'s, and the plan `kimen.cli.plan`'s. `map lint` and `doctor` are reports,
in `kimen.cli.checks`.
"""

from __future__ import annotations

import os

from .. import errors
from .flags import BUNDLE_SOURCE, INLINE, PROFILE, RUN_ALL
from .model import COMMANDS, RUN_HANDLER, Result, takes_child_argv
from .pipeline import (
    envfile_vars,
    files_dir_arg,
    load_profile,
    output_file,
    resolve_values,
    write_user_dir,
)
from .plan import print_plan

TYPE_CHECKING = False  # typing itself is not imported on the hot path
if TYPE_CHECKING:
    import argparse

    from .flags import Row
    from .model import Invocation


def _source_flags(p: argparse.ArgumentParser, inline: tuple[Row, ...]) -> None:
    """A profile, a bundle in place of the vault, and the inline directives `inline`."""
    from .parser import add_flags

    add_flags(p, PROFILE)
    add_flags(p, BUNDLE_SOURCE)
    add_flags(p, inline)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .parser import add_command, add_group

    if name == "run":
        _register_run(sub, "run")
    elif name == "render":
        _register_render(sub, "render")
    elif name == "envfile":
        p = add_command(sub, "envfile", COMMANDS[name][1], handler=cmd_envfile, area=errors.AREA_ENVFILE)
        _source_flags(p, INLINE[:3])
        p.add_argument("--out", metavar="PATH", required=True, help="file to write (- for stdout)")
        p.add_argument("--format", choices=("dotenv", "shell", "docker", "json"), default="dotenv")
        p.add_argument("--files-dir", metavar="DIR",
                       help="write the files into DIR (kept) and envpath variables as DIR/RELPATH")
        p.add_argument("--unsafe-stdout", action="store_true", help="allow --out - (values on stdout)")
    elif name == "plan":
        _register_plan(sub, "plan")
    elif name == "project":
        group = add_group(sub, "project", COMMANDS[name][1], area=errors.AREA_RUN)
        _register_run(group, "run", project=True)
        _register_render(group, "render", project=True)
        _register_plan(group, "plan", project=True)


def _register_run(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command, add_flags

    p = add_command(sub, name, "run a command with projected secrets", handler=RUN_HANDLER, area=errors.AREA_RUN,
                    description="run a command with projected secrets:\n"
                    f"  kimen {'project ' if project else ''}run [--profile NAME | --map PATH] [inline...]"
                    " -- CMD [ARGS...]\neverything after -- belongs to the command (see docs/run.md)")
    add_flags(p, RUN_ALL)
    p.set_defaults(command_name="project run" if project else "run")


def _register_render(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command

    p = add_command(sub, name, "write a profile's files into a directory", handler=cmd_render,
                    area=errors.AREA_RUN)
    _source_flags(p, INLINE[1:2])
    p.add_argument("--dir", metavar="DIR", help="target directory")
    p.add_argument("--systemd-service", metavar="NAME", help="target <runtime-dir>/kimen/NAME")
    p.add_argument("--runtime-dir", metavar="DIR", default="/run", help="base for --systemd-service")
    p.add_argument("--print-systemd-hints", action="store_true", help="print unit file lines")
    p.set_defaults(command_name="project render" if project else "render")


def _register_plan(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command, add_mode_flag

    p = add_command(sub, name, "show what a projection would do (no vault, no exec:)", handler=cmd_plan,
                    area=errors.AREA_PLAN)
    _source_flags(p, INLINE)
    add_mode_flag(p, "run, render or envfile", default="run")
    p.add_argument("--files-dir", metavar="DIR", help="as the real command's --files-dir")
    p.add_argument("--against-profile", metavar="NAME", help="compare with profile NAME")
    p.add_argument("--against-map", metavar="PATH", help="compare with profile file PATH")
    p.set_defaults(command_name="project plan" if project else "plan")


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------


def cmd_render(inv: Invocation) -> Result:
    from ..paths import absolute

    args = inv.options
    if args.dir and args.systemd_service:
        raise errors.ConflictingRenderTargetInputs()
    if args.print_systemd_hints and not args.systemd_service:
        raise errors.SystemdHintsRequiresService()
    if not args.dir and not args.systemd_service:
        raise errors.MissingRenderTarget()
    if args.systemd_service is not None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9._@-]+", args.systemd_service) or args.systemd_service in (".", ".."):
            raise errors.InvalidSystemdService(name=args.systemd_service)
        if not args.runtime_dir:  # an empty path would silently mean the current directory
            raise errors.UsageError(detail="--runtime-dir needs a directory, not an empty value")
        out_dir = os.path.join(absolute(args.runtime_dir), "kimen", args.systemd_service)
    else:
        out_dir = absolute(args.dir)
    profile = load_profile(inv)
    winners = profile.winners()
    files = [d for d in winners if d.kind == "file"]
    ignored = {k: sum(1 for d in winners if d.kind == k) for k in ("env", "envpath", "stdin")}
    values = resolve_values(inv, files)
    write_user_dir(out_dir, [(d.target, values[d]) for d in files], errors.UnsafeOutputDir)
    hints = [f"Environment=KIMEN_FILES_DIR={out_dir}",
             f"# files rendered under {out_dir} (dir 0700, files 0600)"] if args.print_systemd_hints else []
    human = [f"rendered {len(files)} file{'s' if len(files) != 1 else ''} to {out_dir}", *hints]
    return Result("render", human, {
        "out_dir": out_dir, "file_count": len(files), "files": [d.target for d in files],
        "ignored": ignored, "hints": hints,
    })


# ---------------------------------------------------------------------------------------------
# envfile
# ---------------------------------------------------------------------------------------------


def cmd_envfile(inv: Invocation) -> Result | int:
    from .. import fsutil
    from ..output import write_bytes
    from ..projection import envfmt

    args = inv.options
    to_stdout = args.out == "-"
    if to_stdout and not args.unsafe_stdout:
        raise errors.UnsafeStdoutRequired(hint="pass --unsafe-stdout to print values on stdout")
    out = None if to_stdout else output_file(args.out)
    files_dir = files_dir_arg(inv)
    if files_dir is not None and os.path.lexists(files_dir):  # refused before any value is read
        problem = fsutil.directory_problem(files_dir, strict=False)
        if problem:
            raise errors.UnsafeFilesDir(path=files_dir, problem=problem)
    profile = load_profile(inv)
    envs, paths = envfile_vars(profile, files_dir)
    files = [d for d in profile.winners() if d.kind == "file"] if files_dir is not None else []
    values = resolve_values(inv, [*envs, *files])
    variables = [(d.target, values[d]) for d in envs]
    variables += [(d.target, os.fsencode(os.path.join(files_dir, d.relpath))) for d in paths]  # type: ignore[arg-type]  # files_dir is set whenever envpath variables or files are written
    data = envfmt.render(args.format, variables)  # every value checked before anything is written
    if files:  # the files the envpath variables name, so each path exists with its value
        write_user_dir(files_dir, [(d.target, values[d]) for d in files], errors.UnsafeFilesDir)  # type: ignore[arg-type]  # files_dir is set whenever envpath variables or files are written
    if out is None:
        write_bytes(data)
        return 0
    fsutil.atomic_write(out, data)
    from .common import warn_if_not_git_ignored  # git only here, after writing (never on run's path)

    warn_if_not_git_ignored(inv, out)
    count = len(variables)
    human = [f"wrote {count} variable{'s' if count != 1 else ''} to {out}"]
    if files_dir is not None:
        human.append(f"wrote {len(files)} file{'s' if len(files) != 1 else ''} to {files_dir}")
    return Result("envfile", human, {"out": out, "format": args.format, "count": count, "files_dir": files_dir,
                                     "files": [d.target for d in files]})


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------


@takes_child_argv
def cmd_plan(inv: Invocation) -> int:
    args = inv.options
    from .parser import check_mode

    check_mode(args.mode)
    if args.against_profile is not None and args.against_map is not None:
        raise errors.ConflictingAgainstInputs()
    files_dir_arg(inv)  # an empty --files-dir is a usage error before the profile is read, as in run
    profile = load_profile(inv)
    against = None
    if args.against_profile is not None or args.against_map is not None:
        try:
            against = load_profile(inv, profile=args.against_profile, map_path=args.against_map, inline=[])
        except errors.KimenError as exc:
            raise errors.InvalidAgainstSpec(detail=exc.message) from None
    return print_plan(inv, profile, args.mode, inv.child_argv, against)


