"""The flags of `kimen run|render|envfile|plan|project|map lint|doctor`, and render, envfile and plan
(SPEC §6, §7).

`run` itself and the pipeline every projection command shares (load the profile, resolve the
winning directives through one store, write private files) live in `kimen.cli.run`, which the hot
path imports without this module. `map lint` and `doctor` are reports, in `projection_checks`.
"""

from __future__ import annotations

import os

from .. import errors
from . import COMMANDS, Context, Result, takes_child_argv
from .run import cmd_run, files_dir_arg, load_profile, resolve_values, store_for, write_user_dir

TYPE_CHECKING = False  # typing itself is not imported on the hot path
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..projection.kmap import Directive, Profile

INLINE_HELP = {
    "env": ("NAME=REF", "set env var NAME from REF (secret:NAME, NAME, const:TEXT, exec:CMD)"),
    "file": ("RELPATH=REF", "project REF into the file RELPATH under the files dir"),
    "envpath": ("NAME=RELPATH", "set NAME to the path of a projected file"),
    "stdin": ("REF", "feed REF to the command's stdin (run only)"),
}


def _source_flags(p: argparse.ArgumentParser, inline: tuple[str, ...]) -> None:
    from .bundle_opts import add_bundle_source_flags
    from .parser import InlineAction

    p.add_argument("--profile", metavar="NAME", help="profile NAME (see docs/profiles.md for lookup)")
    p.add_argument("--map", metavar="PATH", help="profile file PATH")
    add_bundle_source_flags(p)
    p.set_defaults(inline=[])
    for kind in inline:
        metavar, text = INLINE_HELP[kind]
        p.add_argument(f"--{kind}", action=InlineAction, kind=kind, metavar=metavar, help=text, dest="inline")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .parser import add_command, add_group, argparse

    if name == "run":
        _register_run(sub, "run")
    elif name == "render":
        _register_render(sub, "render")
    elif name == "envfile":
        p = add_command(sub, "envfile", COMMANDS[name][1], handler=cmd_envfile, area=errors.AREA_ENVFILE)
        _source_flags(p, ("env", "file", "envpath"))
        p.add_argument("--out", metavar="PATH", required=True, help="file to write (- for stdout)")
        p.add_argument("--format", choices=("dotenv", "shell", "docker", "json"), default="dotenv")
        p.add_argument("--files-dir", metavar="DIR",
                       help="write the files into DIR (kept) and envpath variables as DIR/RELPATH")
        p.add_argument("--unsafe-stdout", action="store_true", help="allow --out - (values on stdout)")
    elif name == "plan":
        _register_plan(sub, "plan")
    elif name == "map":
        group = add_group(sub, "map", COMMANDS[name][1], area=errors.AREA_MAP_LINT)
        p = add_command(group, "lint", "check a profile (no vault, no exec:)", handler=_lint,
                        area=errors.AREA_MAP_LINT)
        p.add_argument("--profile", metavar="NAME")
        p.add_argument("--map", metavar="PATH")
        _mode_flag(p, "also report the warnings of this mode: run, render or envfile")
        p.add_argument("--strict", action="store_true", help="warnings fail too")
    elif name == "doctor":
        p = add_command(sub, "doctor", COMMANDS[name][1], handler=_doctor, area=errors.AREA_DOCTOR)
        p.add_argument("--profile", metavar="NAME", help="also check profile NAME and its secrets")
        p.add_argument("--map", metavar="PATH", help="also check the profile file PATH and its secrets")
        _mode_flag(p, "lint the profile for this mode too: run, render or envfile")
        p.add_argument("--strict", action="store_true", help="warnings fail too")
        p.add_argument("--allow-missing-vault", action="store_true", help="a missing vault is not an error")
        from .bundle_opts import add_identity_flags, add_trust_flags

        p.add_argument("--bundle", metavar="FILE", action="append", default=[],
                       help="check this bundle instead of the vault; repeatable (each one is checked)")
        p.add_argument("--bundle-in", dest="bundle", metavar="FILE", action="append", help=argparse.SUPPRESS)
        add_identity_flags(p)
        add_trust_flags(p)
    elif name == "project":
        group = add_group(sub, "project", COMMANDS[name][1], area=errors.AREA_RUN)
        _register_run(group, "run", project=True)
        _register_render(group, "render", project=True)
        _register_plan(group, "plan", project=True)


def _mode_flag(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    from .parser import complete_with

    complete_with(p.add_argument("--mode", default=default, help=help), ("run", "render", "envfile"))


def _register_run(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command

    p = add_command(sub, name, "run a command with projected secrets", handler=cmd_run, area=errors.AREA_RUN,
                    description="run a command with projected secrets:\n"
                    f"  kimen {'project ' if project else ''}run [--profile NAME | --map PATH] [inline...]"
                    " -- CMD [ARGS...]\neverything after -- belongs to the command (see docs/run.md)")
    _source_flags(p, ("env", "file", "envpath", "stdin"))
    p.add_argument("--files-dir", metavar="DIR", help="write files here (kept) instead of a private dir")
    p.add_argument("--pristine", action="store_true", help="start from a minimal environment")
    p.add_argument("--mask", action="store_true",
                   help="relay the command's stdout and stderr with every projected value masked")
    p.add_argument("--strict-mask", action="store_true",
                   help="--mask, and refuse values too short to mask (under 6 bytes)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; open no vault, run nothing")
    p.set_defaults(command_name="project run" if project else "run")


def _register_render(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command

    p = add_command(sub, name, "write a profile's files into a directory", handler=cmd_render,
                    area=errors.AREA_RUN)
    _source_flags(p, ("file",))
    p.add_argument("--dir", metavar="DIR", help="target directory")
    p.add_argument("--systemd-service", metavar="NAME", help="target <runtime-dir>/kimen/NAME")
    p.add_argument("--runtime-dir", metavar="DIR", default="/run", help="base for --systemd-service")
    p.add_argument("--print-systemd-hints", action="store_true", help="print unit file lines")
    p.set_defaults(command_name="project render" if project else "render")


def _register_plan(sub: argparse._SubParsersAction, name: str, project: bool = False) -> None:
    from .parser import add_command

    p = add_command(sub, name, "show what a projection would do (no vault, no exec:)", handler=cmd_plan,
                    area=errors.AREA_PLAN)
    _source_flags(p, ("env", "file", "envpath", "stdin"))
    _mode_flag(p, "run, render or envfile", default="run")
    p.add_argument("--files-dir", metavar="DIR", help="as the real command's --files-dir")
    p.add_argument("--against-profile", metavar="NAME", help="compare with profile NAME")
    p.add_argument("--against-map", metavar="PATH", help="compare with profile file PATH")
    p.set_defaults(command_name="project plan" if project else "plan")


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------


def cmd_render(ctx: Context) -> Result:
    from ..paths import absolute

    args = ctx.args
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
    profile = load_profile(ctx)
    winners = profile.winners()
    files = [d for d in winners if d.kind == "file"]
    ignored = {k: sum(1 for d in winners if d.kind == k) for k in ("env", "envpath", "stdin")}
    values = resolve_values(ctx, files)
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


def _envfile_vars(profile: Profile, files_dir: str | None) -> tuple[list[Directive], list[Directive]]:
    """Winning env directives and the envpath ones that can be written (SPEC §7.3)."""
    from ..output import warn
    from ..projection.kmap import INLINE

    winners = profile.winners()
    envs = [d for d in winners if d.kind == "env"]
    paths = [d for d in winners if d.kind == "envpath"]
    if paths and files_dir is None:
        if any(d.path == INLINE for d in paths):
            raise errors.MissingFilesDirForEnvpath()
        warn("envpath skipped without --files-dir: " + ", ".join(d.target for d in paths), reason="envpath_skipped")
        paths = []
    if not envs and not paths:
        raise errors.MissingEnvMappings()
    return envs, paths


def cmd_envfile(ctx: Context) -> Result | int:
    from .. import fsutil
    from ..output import write_bytes
    from ..paths import absolute
    from ..projection import envfmt

    args = ctx.args
    to_stdout = args.out == "-"
    if to_stdout and not args.unsafe_stdout:
        raise errors.UnsafeStdoutRequired(hint="pass --unsafe-stdout to print values on stdout")
    out = None if to_stdout else absolute(args.out)
    if out is not None:
        fsutil.refuse_unsafe_target(out)
        if not os.path.isdir(os.path.dirname(out)):
            raise errors.WriteFailed(detail=f"{os.path.dirname(out)}: directory does not exist", path=out)
    files_dir = files_dir_arg(ctx)
    if files_dir is not None and os.path.lexists(files_dir):  # refused before any value is read
        problem = fsutil.directory_problem(files_dir, strict=False)
        if problem:
            raise errors.UnsafeFilesDir(path=files_dir, problem=problem)
    profile = load_profile(ctx)
    envs, paths = _envfile_vars(profile, files_dir)
    files = [d for d in profile.winners() if d.kind == "file"] if files_dir is not None else []
    values = resolve_values(ctx, [*envs, *files])
    variables = [(d.target, values[d]) for d in envs]
    variables += [(d.target, os.fsencode(os.path.join(files_dir, d.relpath))) for d in paths]  # type: ignore[arg-type]
    data = envfmt.render(args.format, variables)  # every value checked before anything is written
    if files:  # the files the envpath variables name, so each path exists with its value
        write_user_dir(files_dir, [(d.target, values[d]) for d in files], errors.UnsafeFilesDir)  # type: ignore[arg-type]
    if out is None:
        write_bytes(data)
        return 0
    fsutil.atomic_write(out, data)
    from .common import warn_if_not_git_ignored  # git only here, after writing (never on run's path)

    warn_if_not_git_ignored(ctx, out)
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
def cmd_plan(ctx: Context) -> int:
    args = ctx.args
    if args.mode not in ("run", "render", "envfile"):
        from .parser import choice_hint

        raise errors.InvalidMode(mode=args.mode, hint=choice_hint(args.mode, ("run", "render", "envfile"),
                                                                  errors.InvalidMode.hint or ""))
    if args.against_profile is not None and args.against_map is not None:
        raise errors.ConflictingAgainstInputs()
    files_dir_arg(ctx)  # an empty --files-dir is a usage error before the profile is read, as in run
    profile = load_profile(ctx)
    against = None
    if args.against_profile is not None or args.against_map is not None:
        try:
            against = load_profile(ctx, profile=args.against_profile, map_path=args.against_map, inline=[])
        except errors.KimenError as exc:
            raise errors.InvalidAgainstSpec(detail=exc.message) from None
    return print_plan(ctx, profile, args.mode, ctx.child_argv, against)


def _check_bundle_names(ctx: Context, names: list[str]) -> dict[str, Any]:
    """`plan --bundle`: every referenced name is in the bundle (names only, never values)."""
    store = store_for(ctx)
    try:
        found = store.names(names)  # type: ignore[attr-defined]
        document = store.document  # type: ignore[attr-defined]
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing, path=store.path,  # type: ignore[attr-defined]
                                        known=[i.name for i in store.list()])
    finally:
        store.close()
    return {"path": store.path, "generation": document.generation,  # type: ignore[attr-defined]
            "signer": document.signer, "secrets_present": len(names)}


def plan_doc(ctx: Context, profile: Profile, mode: str, argv: list[str] | None,
             against: Profile | None = None) -> dict[str, Any]:
    """The plan object of SPEC §7.4; never a value (references as written)."""
    from ..projection.resolve import exec_commands, secret_names

    files_dir = files_dir_arg(ctx)
    winners = profile.winners()
    if mode == "envfile":  # envfile writes the files too, with --files-dir only
        envs, paths = _envfile_vars(profile, files_dir)
        files = [d for d in winners if d.kind == "file"] if files_dir is not None else []
        stdin = None
    else:
        envs = [d for d in winners if d.kind == "env"] if mode == "run" else []
        paths = [d for d in winners if d.kind == "envpath"] if mode == "run" else []
        files = [d for d in winners if d.kind == "file"]
        stdin = next((d for d in winners if d.kind == "stdin"), None) if mode == "run" else None
    used = [*envs, *files, *([stdin] if stdin else [])]
    if mode == "run":  # literals are known: check them as run will (no secret is read for this)
        from ..projection.env import check_exec_block

        literals = {d.target: d.ref.const for d in envs if d.ref is not None and d.ref.kind == "const"}
        check_exec_block(literals, argv or [])  # type: ignore[arg-type]
    private = mode == "run" and bool(files) and files_dir is None
    if private:
        from ..projection.kmap import check_private_dir_targets

        check_private_dir_targets(files)
    if mode == "render":
        files_dir = None  # render writes to its --dir or --systemd-service target, never a files dir
    doc: dict[str, Any] = {
        "mode": mode,
        "command": list(argv) if argv else None,
        "source": profile.source,
        "profile_path": profile.source,
        "env": [{"var": d.target, "source": d.ref.text} for d in envs],  # type: ignore[union-attr]
        "files": [{"path": d.target, "source": d.ref.text} for d in files],  # type: ignore[union-attr]
        "envpath": [{"var": d.target, "path": d.relpath,
                     "resolved_path": os.path.join(files_dir, d.relpath) if files_dir else None}  # type: ignore[arg-type]
                    for d in paths],
        "stdin": stdin.ref.text if stdin is not None else None,  # type: ignore[union-attr]
        "secrets": secret_names(used),
        "exec": [list(a) for a in exec_commands(used)],
        "files_dir": files_dir if (files or paths) else None,
        "cleanup": private,
        "exec_in_place": mode == "run" and not private and stdin is None and not _masked(ctx),
        "against": against.source if against is not None else None,
        "diff": _diff(profile, against) if against is not None else None,
    }
    if getattr(ctx.args, "bundle", None):
        doc["bundle"] = _check_bundle_names(ctx, doc["secrets"])
    return doc


def _masked(ctx: Context) -> bool:
    return bool(getattr(ctx.args, "mask", False) or getattr(ctx.args, "strict_mask", False))


def _diff(mine: Profile, other: Profile) -> dict[str, Any]:
    def table(p: Profile, kind: str) -> dict[str, str]:
        return {d.target: (d.ref.text if d.ref else d.relpath) for d in p.winners() if d.kind == kind}  # type: ignore[misc]

    out: dict[str, Any] = {}
    for kind, key, label in (("env", "var", "env"), ("file", "path", "files"), ("envpath", "var", "envpath")):
        a, b = table(mine, kind), table(other, kind)
        out[f"{label}_added"] = sorted(set(a) - set(b))
        out[f"{label}_removed"] = sorted(set(b) - set(a))
        out[f"{label}_changed"] = [{key: k, "from": b[k], "to": a[k]} for k in sorted(set(a) & set(b))
                                   if a[k] != b[k]]
    s1 = next((d.ref.text for d in mine.winners() if d.kind == "stdin"), None)  # type: ignore[union-attr]
    s2 = next((d.ref.text for d in other.winners() if d.kind == "stdin"), None)  # type: ignore[union-attr]
    out["stdin_changed"] = s1 != s2
    return out


def print_plan(ctx: Context, profile: Profile, mode: str, argv: list[str] | None,
               against: Profile | None = None) -> int:
    from ..output import print_json, print_lines, success_envelope

    doc = plan_doc(ctx, profile, mode, argv, against)
    if ctx.json:
        print_json(success_envelope("plan", doc))
        return 0
    import shlex

    lines = [f"mode: {mode}", f"profile: {doc['profile_path'] or '(inline only)'}"]
    if mode == "run":
        lines.append(f"command: {shlex.join(argv) if argv else '(none)'}")
    for title, items, a, b in (("env", doc["env"], "var", "source"), ("files", doc["files"], "path", "source"),
                               ("envpath", doc["envpath"], "var", "path")):
        lines.append(f"{title}:" if items else f"{title}: (none)")
        lines.extend(f"  - {item[a]} <= {item[b]}" for item in items)
    lines.append(f"stdin: {doc['stdin'] or '(none)'}")
    if doc["files_dir"]:
        lines.append(f"files-dir: {doc['files_dir']}")
    elif doc["files"] and mode == "render":
        lines.append("files-dir: (the render target: --dir or --systemd-service)")
    else:
        lines.append(f"files-dir: {'(private runtime dir)' if doc['cleanup'] else '(none)'}")
    if mode == "run":
        lines.append(f"cleanup: {'yes' if doc['cleanup'] else 'no'}")
    lines.append(f"secrets: {', '.join(doc['secrets']) or '(none)'}")
    if doc.get("bundle"):
        lines.append(f"bundle: {doc['bundle']['path']} (all {len(doc['secrets'])} referenced secrets present)")
    if doc["exec"]:
        lines.append("exec:")
        lines.extend(f"  - {shlex.join(cmd)}" for cmd in doc["exec"])
    if against is not None:
        lines.append(f"against: {doc['against'] or '(inline)'}")
        diff = doc["diff"]
        for label in ("env", "files", "envpath"):
            lines.extend(f"  + {label} {x}" for x in diff[f"{label}_added"])
            lines.extend(f"  - {label} {x}" for x in diff[f"{label}_removed"])
            key = "path" if label == "files" else "var"
            lines.extend(f"  ~ {label} {c[key]}: {c['from']} -> {c['to']}" for c in diff[f"{label}_changed"])
        if diff["stdin_changed"]:
            lines.append("  ~ stdin")
    print_lines(lines)
    return 0


# ---------------------------------------------------------------------------------------------
# map lint and doctor (reports, in their own module)
# ---------------------------------------------------------------------------------------------


def _lint(ctx: Context) -> int:
    from .projection_checks import cmd_map_lint

    return cmd_map_lint(ctx)


def _doctor(ctx: Context) -> int:
    from .projection_checks import cmd_doctor

    return cmd_doctor(ctx)
