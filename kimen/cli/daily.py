"""`kimen inject|migrate|status|direnv`: the daily-use commands (docs/daily.md).

The rules live in the cores: the template scanner and renderer (`kimen.projection.template`),
dotenv detection and planning (`kimen.migrate`), the status screen (`kimen.status`) and the
direnv output (`kimen.direnv`). This module wires them to the store, the files and the output.

`status` and `direnv` (safe output) are on the light path: nothing heavy is imported at top level,
and their handlers never open SQLite, run git or import crypto.
"""

from __future__ import annotations

import os

from .. import errors
from .model import COMMANDS, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .model import Invocation


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .flags import BUNDLE_SOURCE, DIRENV, STATUS
    from .parser import add_command, add_flags

    if name == "inject":
        p = add_command(sub, "inject", COMMANDS[name][1], handler=cmd_inject, area=errors.AREA_INJECT)
        p.add_argument("-i", "--in", dest="template", metavar="TEMPLATE",
                       help="the template file (- or omitted: stdin)")
        p.add_argument("-o", "--out", metavar="PATH", help="the file to write, 0600 (- or omitted: stdout)")
        p.add_argument("--unsafe-stdout", action="store_true", help="allow the rendered values on stdout")
        p.add_argument("--dry-run", action="store_true", help="check the references only; unlock nothing")
        add_flags(p, BUNDLE_SOURCE)
    elif name == "status":
        p = add_command(sub, "status", COMMANDS[name][1], handler=cmd_status, area=errors.AREA_CONFIG)
        add_flags(p, STATUS)

    elif name == "direnv":
        p = add_command(sub, "direnv", COMMANDS[name][1], handler=cmd_direnv, area=errors.AREA_ENVFILE)
        add_flags(p, DIRENV)

    elif name == "migrate":
        p = add_command(sub, "migrate", COMMANDS[name][1], handler=cmd_migrate, area=errors.AREA_MIGRATE)
        p.add_argument("files", nargs="*", metavar="FILE", help="dotenv files to import (default: detect)")
        p.add_argument("--profile", metavar="NAME", help="the profile of .env and .env.local (default dev)")
        p.add_argument("--all", action="store_true", help="also import .env.<profile> files")
        p.add_argument("--depth", metavar="N", type=int, default=4, help="directories to descend (0-8, default 4)")
        p.add_argument("--prefix", metavar="P", help="secret name prefix (one directory only)")
        existing = p.add_mutually_exclusive_group()
        existing.add_argument("--overwrite", action="store_true", help="replace existing secrets (backup first)")
        existing.add_argument("--skip-existing", action="store_true", help="keep and map existing secrets")
        p.add_argument("--update-profile", action="store_true", help="append to an existing profile file")
        p.add_argument("--no-backup", action="store_true", help="no backup before --overwrite")
        p.add_argument("--dry-run", action="store_true", help="show the plan; no passphrase, nothing written")


# ---------------------------------------------------------------------------------------------
# inject
# ---------------------------------------------------------------------------------------------


def cmd_inject(inv: Invocation) -> Result | int:
    from .. import fsutil
    from ..paths import absolute
    from ..projection import template

    args = inv.options
    in_path = args.template if args.template is not None else "-"
    to_stdout = args.out in (None, "-")
    if to_stdout and not args.unsafe_stdout and not args.dry_run:
        raise errors.UnsafeStdoutRequired(hint="pass -o PATH, or --unsafe-stdout to print the rendered values")
    if to_stdout:
        out = None
    else:
        from .pipeline import output_file

        out = output_file(args.out)
    if in_path == "-":
        if inv.passphrase_stdin or getattr(args, "identity_stdin", False):
            raise errors.ConflictingStdinInputs()
        from ..access import stdin_claim

        claim = stdin_claim(inv)
        data = template.read("-", lambda limit: claim.read("template", limit))
    else:
        data = template.read(absolute(in_path))
    parsed = template.parse(data, in_path)
    if parsed.references == 0:
        from ..output import warn

        warn(f"the template {in_path} has no {{{{ kimen:NAME }}}} reference; it is copied as is "
             "(an escaped \\{{ is written as {{)", reason="template_has_no_references")
    where = out if out is not None else "stdout"
    fields: dict[str, Any] = {"in": in_path if in_path == "-" else absolute(in_path), "out": out,
                              "references": parsed.references, "secrets": parsed.names}
    if args.dry_run:
        _check_names(inv, parsed.names)
        fields.update(bytes=None, dry_run=True, missing=[])
        human = [f"[dry-run] would write {where}: {parsed.references} references, {len(parsed.names)} secrets",
                 *(f"[dry-run]   {name}" for name in parsed.names)]
        return Result("inject", human, fields)
    values: dict[str, bytes] = {}
    if parsed.names:
        from .pipeline import store_for

        store = store_for(inv)
        try:
            values = {name: item.value for name, item in store.read(parsed.names).items()}
        finally:
            store.close()
    rendered = parsed.render(values)
    if out is None:
        from ..output import write_bytes

        write_bytes(rendered)
        return 0
    fsutil.atomic_write(out, rendered)
    from .common import warn_if_not_git_ignored

    warn_if_not_git_ignored(inv, out)
    fields.update(bytes=len(rendered), dry_run=False)
    return Result("inject", f"wrote {out} ({parsed.references} references, {len(parsed.names)} secrets)", fields)


def _check_names(inv: Invocation, names: list[str]) -> None:
    """--dry-run: every name exists (the vault's names without unlocking; a bundle's after opening it)."""
    if not names:
        return
    from .pipeline import bundle_given, store_for

    if bundle_given(inv):
        store = store_for(inv)
        try:
            found = store.names(names)  # type: ignore[attr-defined]
        finally:
            store.close()
    else:
        from ..access import open_metadata, resolve_vault

        location = resolve_vault(inv)
        if not os.path.exists(location.path):
            raise errors.VaultNotFound(path=location.path)
        with open_metadata(inv, location) as vault:
            found = set(vault.list_names())
    missing = sorted(n for n in names if n not in found)
    if missing:
        raise errors.SecretNotFound(missing)


# ---------------------------------------------------------------------------------------------
# status
# ---------------------------------------------------------------------------------------------


def _profile_choice(inv: Invocation) -> tuple[str | None, str | None]:
    """The selected profile and where it came from (`flag`, `env`), KIMEN_PROFILE applied."""
    return inv.options.profile, getattr(inv.options, "profile_source", None)


def cmd_status(inv: Invocation) -> Result:
    from .. import status
    from ..access import resolve_vault

    location = resolve_vault(inv)
    vault = status.vault_section(location.path, location.source)
    fields = _session_fields(inv, location.canonical_path)
    session = status.session_section(fields)
    name, source = _profile_choice(inv)
    cwd = os.getcwd()
    profile = status.profile_section(name, source, inv.env, cwd)
    doc = status.document(vault, session, profile, status.visible_profiles(inv.env, cwd), _remotes(inv))
    return Result("status", status.lines(doc), doc)


def _remotes(inv: Invocation) -> list[dict[str, Any]]:
    """Per configured remote the head this vault last accepted, read from its ratchet file (never
    the remote, git or the vault); no config file or no remote: none."""
    from .. import paths

    if paths.config_absent(inv.env):
        return []
    from ..access import load_config

    configured = load_config(inv).data.get("remotes")
    out: list[dict[str, Any]] = []
    for remote in configured if isinstance(configured, list) else ():
        if not isinstance(remote, dict) or not isinstance(remote.get("name"), str):
            continue
        remote_id = remote.get("remote_id")
        seq, at = _known_head(inv, remote_id) if isinstance(remote_id, str) else (None, None)
        out.append({"name": remote["name"], "type": remote.get("type"), "remote_id": remote_id or None,
                    "known_seq": seq, "known_at": at})
    return out


def _known_head(inv: Invocation, remote_id: str) -> tuple[int | None, str | None]:
    """(seq, updated_at) of `<state>/sync/<remote_id>/ratchet.json`, or (None, None)."""
    import json

    from .. import paths

    if not remote_id or "/" in remote_id or remote_id in (".", ".."):
        return None, None
    path = os.path.join(paths.state_dir(inv.env), "sync", remote_id, "ratchet.json")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        try:
            doc = json.loads(os.read(fd, 65536))
        finally:
            os.close(fd)
    except (OSError, ValueError, RecursionError):
        return None, None
    if not isinstance(doc, dict) or doc.get("remote_id") != remote_id:
        return None, None
    seq, at = doc.get("seq"), doc.get("updated_at")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            at if isinstance(at, str) else None)


def _session_fields(inv: Invocation, canonical: str) -> dict[str, Any] | None:
    """What the daemon says about the selected vault (one `status` request, 1 s timeout): `state`
    stopped, locked, expired or unlocked; `unavailable` with the error when it cannot be asked (an
    unsafe session dir) or refuses (its audit log unwritable); None when it did not answer (shown
    as unknown)."""
    from ..daemon import client

    try:
        _socket, found = client.status(inv.env, canonical)
    except errors.KimenError as exc:
        return {"state": "unavailable", "reason": exc.reason, "message": exc.message, "hint": exc.hint_text}
    raw = found.status
    if raw is None:
        return None if found.state == "busy" else {"state": "stopped"}
    vaults = [v for v in raw.get("vaults") or () if isinstance(v, dict)]
    mine = next((v for v in vaults if v.get("vault_path") == canonical), None)
    state = (mine.get("state") or "unlocked") if mine is not None else "locked"
    expired = mine is not None and state == "expired"
    return {"state": state, "pid": raw.get("pid"), "vault_path": canonical, "vaults": vaults,
            "expired_at": mine.get("expired_at") if expired else None,  # type: ignore[union-attr]
            "expired_by": mine.get("expired_by") if expired else None,  # type: ignore[union-attr]
            "require_grant": bool(raw.get("require_grant"))}


# ---------------------------------------------------------------------------------------------
# direnv
# ---------------------------------------------------------------------------------------------


def cmd_direnv(inv: Invocation) -> Result | int:
    from .. import direnv
    from ..output import write_bytes

    name, source = _profile_choice(inv)
    if not name:
        raise errors.UsageError(detail="give --profile NAME or set KIMEN_PROFILE")
    if inv.options.unsafe_stdout and os.isatty(1):
        raise errors.UnsafeStdoutTerminal()
    from .pipeline import load_profile

    profile = load_profile(inv, profile=name, map_path=None, inline=[])
    if inv.json and not inv.options.unsafe_stdout:  # what the safe output selects and watches (names only)
        return Result("direnv", None, {"profile": name, "profile_source": source, "profile_path": profile.source,
                                       "watch_files": list(dict.fromkeys(profile.files))})
    if not inv.options.unsafe_stdout:
        write_bytes(direnv.safe_output(name, profile.files).encode("utf-8", "surrogateescape"))
        return 0
    envs = direnv.env_directives(profile.winners())
    from ..environ import public_environ
    from ..projection.resolve import resolve

    values = resolve(envs, lambda names: _session_store(inv, names), public_environ(inv.env), os.getcwd())
    data = direnv.unsafe_output(name, profile.files, [(d.target, values[d]) for d in envs])
    write_bytes(data)
    return 0


def _session_store(inv: Invocation, reading: list[str]) -> Any:
    """A live session, or an explicit passphrase source: never a prompt or the configured unlock
    method (direnv runs on every `cd`). `reading`: the names to read (see `open_store`)."""
    from ..access import explicit, open_store, resolve_vault, session_probe

    if explicit(inv) is not None:
        return open_store(inv, reading=reading)
    location = resolve_vault(inv)
    if not os.path.exists(location.path):
        raise errors.VaultNotFound(path=location.path)
    if not inv.no_session:
        from ..access import open_metadata

        store = session_probe(inv, location, reading).store(location.path, lambda: open_metadata(inv, location))
        if store is not None:
            return store
    raise errors.DirenvNeedsSession()


# ---------------------------------------------------------------------------------------------
# migrate
# ---------------------------------------------------------------------------------------------


def cmd_migrate(inv: Invocation) -> Result:
    from .. import migrate
    from ..access import open_metadata, resolve_vault

    args = inv.options
    cwd = os.getcwd()
    profile = args.profile or migrate.DEFAULT_PROFILE
    if args.files:
        detection = migrate.explicit(list(args.files), cwd, profile=profile, env=inv.env)
    else:
        detection = migrate.detect(migrate.find_root(cwd), profile=profile, all_profiles=args.all,
                                   depth=args.depth, env=inv.env)
    plan = migrate.plan(detection, prefix=args.prefix)
    location = resolve_vault(inv)
    if not os.path.exists(location.path):
        raise errors.VaultNotFound(path=location.path)
    with open_metadata(inv, location) as vault:
        existing = vault.names(plan.names())
    plan.resolve(existing, overwrite=args.overwrite, skip_existing=args.skip_existing)
    writes = plan.profiles(update=args.update_profile)  # profile_exists before anything is written
    backup = None
    changes = plan.changes()
    if changes and not args.dry_run:
        backup = _import(inv, location, changes, backup=args.overwrite and not args.no_backup)
    if not args.dry_run:
        _write_profiles(writes, [c.name for c in changes])
    lines = plan.lines(cwd, dry_run=args.dry_run)
    for write in writes:
        if write.existed and write.data is None:
            lines.append(f"{'[dry-run] ' if args.dry_run else ''}profile {os.path.relpath(write.path, cwd)} "
                         "already sets every variable")
    if backup:
        lines.append(f"backup: {backup}")
    steps = plan.next_steps(cwd)
    lines += steps if not args.dry_run else []
    return Result("migrate", lines, {
        "root": plan.root, "files": plan.files_json(), "not_imported": plan.not_imported_json(),
        "backup_path": backup, "dry_run": bool(args.dry_run), "next_steps": steps,
    })


def _import(inv: Invocation, location: Any, changes: list[Any], *, backup: bool) -> str | None:
    """All values in one store transaction, after a backup when values are replaced."""
    from ..access import open_metadata, open_store
    from .backup import backed_up, backup_path

    store = open_store(inv)
    try:
        with open_metadata(inv, location) as vault:
            path = backup_path(vault.path) if backup and any(c.mode == "update" for c in changes) else None
            with backed_up(vault, path):
                store.write(changes, history_op="import")
    finally:
        store.close()
    return path


def _write_profiles(writes: list[Any], imported: list[str]) -> None:
    """Each profile atomically, with the umask (profiles hold no value: they are meant to be committed)."""
    from .. import fsutil

    mask = os.umask(0)
    os.umask(mask)
    for write in writes:
        if write.data is None:
            continue
        try:
            os.makedirs(os.path.dirname(write.path), exist_ok=True)
            fsutil.atomic_write(write.path, write.data, mode=0o666 & ~mask)
        except (OSError, errors.KimenError) as exc:
            detail = exc.message if isinstance(exc, errors.KimenError) else f"{write.path}: {exc.strerror}"
            shown = ", ".join(imported) or "nothing"
            raise errors.WriteFailed(detail=f"{detail}; imported: {shown} (run again with --skip-existing)",
                                     path=write.path) from None
