"""The pipeline every projection command shares: load the profile, resolve the winning directives
through one store, write a user directory (describing a projection as a plan is `kimen.cli.plan`'s).

One pipeline for every projection (run, render, envfile, plan, and doctor's profile check): parse
and validate the profile and inline flags (nothing read yet), decide which directives win,
resolve exactly those (one store read, opened lazily and only when a winning directive names a
secret; then `exec:` sources), check every value for its target, and only then write or start
anything. The store is fetched in `store_for`, the one place a `--bundle` source plugs in.

A leaf of `kimen.cli`: it imports no command module. It is on the `run` hot path, so it imports
nothing heavy at top level.
"""

from __future__ import annotations

import os

from .. import errors

TYPE_CHECKING = False  # typing itself is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..projection.kmap import Directive, Profile
    from ..store import Store
    from .model import Invocation


def load_profile(inv: Invocation, *, profile: str | None = None, map_path: str | None = None,
                 inline: list[tuple[str, str]] | None = None) -> Profile:
    from ..projection import kmap

    bundle_given(inv)  # `--bundle ""` is refused before anything is read
    args = inv.options
    return kmap.load(
        map_path=args.map if map_path is None and profile is None else map_path,
        profile=args.profile if map_path is None and profile is None else profile,
        inline=args.inline if inline is None else inline,
        env=inv.env,
    ).check()


def bundle_given(inv: Invocation) -> bool:
    """Whether `--bundle FILE` was given. `--bundle ""` (an unset shell variable) is a usage error:
    never silently the vault instead."""
    value = getattr(inv.options, "bundle", None)
    if value == "":
        raise errors.UsageError(detail="--bundle needs a file, not an empty value")
    return value is not None


def store_for(inv: Invocation, reading: Sequence[str] = ()) -> Store:
    """The store that serves secret references: `--bundle` (read-only, docs/bundles.md), else the
    session or the unlocked vault. `reading`: the names the command will read, if known."""
    if bundle_given(inv):
        from .bundle_opts import bundle_store

        return bundle_store(inv)
    from ..access import open_store

    return open_store(inv, reading=reading)


def resolve_values(inv: Invocation, directives: list[Directive]) -> dict[Directive, bytes]:
    from ..environ import public_environ
    from ..projection.resolve import resolve

    return resolve(directives, lambda names: store_for(inv, names), public_environ(inv.env), os.getcwd())


def files_dir_arg(inv: Invocation) -> str | None:
    from ..paths import absolute

    value = getattr(inv.options, "files_dir", None)
    if value == "":  # not "no --files-dir": an empty path would silently mean the current directory
        raise errors.UsageError(detail="--files-dir needs a directory, not an empty value")
    return absolute(value) if value is not None else None


def output_file(out: str) -> str:
    """An `--out PATH` for an atomic write (envfile, inject): absolute, not a symlink or another
    non-regular file, in a directory that exists; refused before any value is read."""
    from .. import fsutil
    from ..paths import absolute

    path = absolute(out)
    fsutil.refuse_unsafe_target(path)
    fsutil.require_output_dir(path)
    return path


def write_user_dir(path: str, payload: list[tuple[str, bytes]], unsafe: type[errors.KimenError]) -> None:
    """`--files-dir` / render target: create 0700 or check it, then replace each file atomically."""
    from ..projection.files import prepare_user_dir, write_files

    fd = prepare_user_dir(path, unsafe)
    try:
        write_files(fd, path, payload, replace=True, error=unsafe)
    finally:
        os.close(fd)


def envfile_vars(profile: Profile, files_dir: str | None) -> tuple[list[Directive], list[Directive]]:
    """Winning env directives and the envpath ones that can be written (envpath needs --files-dir)."""
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
