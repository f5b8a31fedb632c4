"""`kimen secret set|list|get|rm|mv|import` (docs/vault.md).

Values are read and validated before the vault is unlocked (the name first of all), so a bad
input never costs a KDF and never leaves a partial write. Values are printed only by
`get --unsafe-stdout`; every other output names secrets, never their values.
"""

from __future__ import annotations

import os

from .. import errors
from ..store import Change
from ..values import MAX_VALUE_BYTES, check_secret_name
from . import history, secret_tools
from .common import check_fingerprint
from .model import COMMANDS, Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any

    from ..store import SecretInfo
    from ..vault.listing import JsonListing


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .flags import SECRET_LIST
    from .parser import add_command, add_flags, add_group, complete_names

    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_SECRET)

    p = add_command(group, "set", "store a secret (prompts for the value in a terminal)", handler=cmd_set)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    p.add_argument("--stdin", action="store_true", help="read the value from stdin (all bytes)")
    p.add_argument("--from-file", metavar="PATH", help="read the value from a regular file")
    p.add_argument("--from-env", metavar="VAR", help="read the value from an environment variable")
    p.add_argument("--value", metavar="TEXT", help="the value itself (visible in the process list!)")
    p.add_argument("--strip-newline", action="store_true", help="remove one trailing LF or CRLF")
    p.add_argument("--confirm-fingerprint", metavar="HEX", help="require this SHA-256 of the value")
    p.add_argument("--no-clobber", action="store_true", help="refuse to replace an existing secret")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would change")

    p = add_command(group, "get", "print a secret's value (needs --unsafe-stdout)", handler=cmd_get)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    p.add_argument("--unsafe-stdout", action="store_true", help="yes, print the value on stdout")
    history.add_revision(p)
    p.add_argument("--out", metavar="PATH", help="write the value to PATH (0600, atomic) instead")
    p.add_argument("--force", action="store_true", help="with --out: replace an existing file")

    p = add_command(group, "list", "list secret names (no passphrase needed)", handler=cmd_list)
    add_flags(p, SECRET_LIST)

    p = add_command(group, "rm", "remove a secret", handler=cmd_rm, aliases=["delete"])
    complete_names(p.add_argument("name", metavar="NAME", nargs="?"), "secrets")
    p.add_argument("--prefix", metavar="P", help="remove every secret starting with P (one transaction, backup first)")
    p.add_argument("--yes", action="store_true", help="confirm --prefix")

    p = add_command(group, "mv", "rename a secret", handler=cmd_mv, aliases=["rename"])
    complete_names(p.add_argument("old", metavar="OLD"), "secrets")
    p.add_argument("new", metavar="NEW")
    p.add_argument("--prefix", action="store_true",
                   help="OLD and NEW are prefixes: rename every secret under OLD (one transaction, backup first)")

    p = add_command(group, "import", "import a dotenv file (- for stdin)", handler=cmd_import)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--prefix", metavar="P", default="", help="prepended to every key, e.g. prod.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace existing secrets")
    mode.add_argument("--skip-existing", action="store_true", help="leave existing secrets alone")
    p.add_argument("--no-backup", action="store_true",
                   help="do not snapshot the vault before --overwrite replaces values")
    p.add_argument("--dry-run", action="store_true", help="show what would change (no passphrase)")

    history.register(group)
    secret_tools.register(group)


# -- set --


def _strip_newline(value: bytes) -> bytes:
    if value.endswith(b"\r\n"):
        return value[:-2]
    if value.endswith(b"\n"):
        return value[:-1]
    return value


def _too_large(name: str, **where: Any) -> errors.KimenError:
    return errors.SecretTooLarge(secret=name, hint="values are limited to 1 MiB; project large files another way",
                                 **where)


def _read_value(inv: Invocation, name: str) -> bytes:
    """The value from exactly one source (stdin, a file, a variable, the flag, or the prompt),
    size-checked before reading past the limit."""
    from ..access import stdin_claim
    from ..output import warn

    a = inv.options
    sources = [s for s, on in (("--stdin", a.stdin), ("--from-file", a.from_file is not None),
                               ("--from-env", a.from_env is not None), ("--value", a.value is not None)) if on]
    if len(sources) > 1:
        raise errors.ConflictingValueSources(message=f"give exactly one value source, not {' and '.join(sources)}")
    if a.stdin:
        if inv.passphrase_stdin:
            raise errors.ConflictingStdinInputs()
        value = stdin_claim(inv).read("value", MAX_VALUE_BYTES + 2)
    elif a.from_file is not None:
        # +2: room for a CRLF that --strip-newline removes
        value = _read_file(a.from_file, MAX_VALUE_BYTES + 2, lambda: _too_large(name))
        warn_if_tracked(inv, a.from_file)
    elif a.from_env is not None:
        if a.from_env not in inv.env:
            raise errors.ValueSourceFailed(detail=f"environment variable {a.from_env} is not set")
        value = os.fsencode(inv.env[a.from_env])
    elif a.value is not None:
        warn("--value is visible in the process list and shell history", reason="value_on_command_line")
        value = os.fsencode(a.value)
    else:
        return _prompt_value(name)
    # sources are read up to limit+3 bytes: enough to see "too large" even after stripping a CRLF
    if len(value) > MAX_VALUE_BYTES + 2:
        raise _too_large(name)
    if a.strip_newline and a.value is None:
        value = _strip_newline(value)
    if len(value) > MAX_VALUE_BYTES:
        raise _too_large(name)
    return value


def _read_file(path: str, limit: int, too_large: Callable[[], errors.KimenError] | None = None) -> bytes:
    from ..fsutil import read_regular

    return read_regular(path, limit, lambda problem: errors.ValueSourceFailed(detail=f"cannot read {path}: {problem}"),
                        too_large=too_large)


def warn_if_tracked(inv: Invocation, path: str) -> None:
    """`source_tracked_by_git` when the file a value came from is tracked in a git work tree."""
    from .. import gitcheck
    from ..output import warn
    from ..paths import absolute

    if gitcheck.is_tracked(absolute(path), dict(inv.env)):
        warn(f"{path} is tracked by git: its content is already in the repository's history; rotate the value "
             "and remove the file from git", reason="source_tracked_by_git")


def _prompt_value(name: str) -> bytes:
    from ..passphrase import prompt_hidden, terminal_available

    if not terminal_available():
        raise errors.MissingSecretValue(name=name)
    try:
        first = prompt_hidden(f"Value for {name}: ")
        second = prompt_hidden("Confirm value: ")
    except EOFError:
        raise errors.MissingSecretValue(name=name) from None
    with first, second:
        if first != second:
            raise errors.SecretConfirmationMismatch()
        if not first:
            raise errors.EmptySecretValue()
        return first.reveal()


def cmd_set(inv: Invocation) -> Result:
    import hashlib

    from ..access import open_metadata, open_store

    a = inv.options
    name = check_secret_name(a.name)
    expected = check_fingerprint(a.confirm_fingerprint)
    value = _read_value(inv, name)
    digest = hashlib.sha256(value).hexdigest()
    if expected is not None and digest != expected:
        raise errors.FingerprintMismatch()
    if a.dry_run:
        with open_metadata(inv) as vault:
            exists = bool(vault.names([name]))
        if exists and a.no_clobber:
            raise _clobber(name)
        verb = "update" if exists else "create"
        return Result("set", f"[dry-run] would set {name} ({verb}) size={len(value)} sha256={digest}", {
            "name": name, "created": not exists, "replaced": exists, "revision": None, "size": len(value),
            "dry_run": True, "sha256": digest})
    store = open_store(inv)
    try:
        # --no-clobber: a create-only change, refused inside the write transaction (no race)
        result = store.write([Change.set(name, value, mode="create" if a.no_clobber else "upsert")]).results[0]
    except errors.SecretExists:
        raise _clobber(name) from None
    finally:
        store.close()
    verb = "set" if result.created else "replaced"
    return Result("set", f"{verb} {name} (revision {result.revision})", {
        "name": name, "created": result.created, "replaced": not result.created, "revision": result.revision,
        "size": len(value), "dry_run": False})


def _clobber(name: str) -> errors.SecretExists:
    return errors.SecretExists([name], hint="drop --no-clobber to replace it")


# -- get / list / rm / mv --


def cmd_get(inv: Invocation) -> Result | int:
    import base64

    from ..access import open_store
    from ..output import print_json, success_envelope, write_bytes

    a = inv.options
    if a.out is not None and a.unsafe_stdout:
        raise errors.UsageError(detail="--out and --unsafe-stdout cannot be combined")
    if a.force and a.out is None:
        raise errors.UsageError(detail="--force goes with --out")
    if a.out is None and not a.unsafe_stdout:
        raise errors.UnsafeStdoutRequired(hint="add --unsafe-stdout, write a file with --out PATH, "
                                               "or project the value with `kimen run`")
    name = check_secret_name(inv.options.name)
    out = None if a.out is None else _check_out(a.out, force=bool(a.force))
    if inv.options.revision is not None:
        value, revision = history.read_revision(inv, name, inv.options.revision)
    else:
        store = open_store(inv)
        try:
            secret = store.read([name])[name]
        finally:
            store.close()
        value, revision = secret.value, secret.revision
    if out is not None:
        return _write_out(inv, name, value, revision, out, force=bool(a.force))
    if inv.json:
        print_json(success_envelope("get", {
            "name": name, "encoding": "base64", "value_b64": base64.b64encode(value).decode(),
            "revision": revision, "size": len(value)}))
    else:
        write_bytes(value)
    return 0


def _check_out(path: str, *, force: bool) -> str:
    """`--out PATH`: never through a symlink, an existing file only with --force."""
    from ..fsutil import refuse_unsafe_target, require_output_dir
    from ..paths import absolute

    out = absolute(path)
    refuse_unsafe_target(out)
    if os.path.lexists(out) and not force:
        raise errors.OutputExists(path=out)
    require_output_dir(out)
    return out


def _write_out(inv: Invocation, name: str, value: bytes, revision: int, out: str, *, force: bool) -> Result:
    from ..fsutil import atomic_write, write_exclusive
    from .common import warn_if_not_git_ignored

    if force:
        atomic_write(out, value)
    else:  # created exclusively: a file that appeared meanwhile is not replaced
        write_exclusive(out, value, exists=errors.OutputExists)
    warn_if_not_git_ignored(inv, out)
    return Result("get", f"wrote {name} (revision {revision}, {len(value)} bytes) to {out}",
                  {"name": name, "revision": revision, "size": len(value), "out": out})


def cmd_list(inv: Invocation) -> Result | int:
    from ..access import open_metadata

    a = inv.options
    if a.match:
        from ..globs import compile_globs, match_any

        globs = compile_globs(a.match)
        with open_metadata(inv) as vault:
            infos = [i for i in vault.list(a.prefix) if match_any(globs, i.name)]
        if not (inv.json or a.long):
            return Result("list", [i.name for i in infos], {})
        return _list_result(inv, infos)
    with open_metadata(inv) as vault:
        if not (inv.json or a.long):
            return Result("list", vault.list_names(a.prefix), {})
        if inv.json:
            with vault.json_listing(a.prefix) as listing:
                if listing is not None:
                    _write_listing(listing)
                    return 0
        infos = vault.list(a.prefix)
    return _list_result(inv, infos)


def _list_result(inv: Invocation, infos: list[SecretInfo]) -> Result:
    if inv.json:
        return Result("list", None, {
            "names": [i.name for i in infos], "count": len(infos), "secrets": [i.as_json() for i in infos]})
    return Result("list", [f"{i.name}\t{i.revision}\t{i.size}\t{i.updated_at}" for i in infos], {})


def _write_listing(listing: JsonListing) -> None:
    """The `secret list --json` envelope around SQLite's arrays, as `output.dumps` writes it,
    written a slice of objects at a time (100k rows: 13 MB never held at once). A slice SQLite
    could not write as the general encoder would comes as rows and is encoded here."""
    from ..output import dumps, success_envelope, write_bytes
    from ..store import SecretInfo

    head = dumps(success_envelope("list", {}))  # {"ok":true,...,"warnings":[...]}
    write_bytes(f'{head[:-1]},"names":'.encode(), listing.names, f',"count":{listing.count},"secrets":['.encode())
    comma = b""
    for part in listing.objects():
        text = part if isinstance(part, bytes) else ",".join(dumps(SecretInfo(*row).as_json()) for row in part).encode()
        if text:
            write_bytes(comma, text)
            comma = b","
    write_bytes(b"]}\n")


def cmd_rm(inv: Invocation) -> Result:
    from ..access import open_store

    if inv.options.prefix is not None:
        from .bulk import rm_prefix

        return rm_prefix(inv)
    if inv.options.yes:
        raise errors.UsageError(detail="--yes goes with --prefix")
    if inv.options.name is None:
        raise errors.UsageError(detail="secret rm needs NAME or --prefix P")
    name = check_secret_name(inv.options.name)
    store = open_store(inv)
    try:
        store.write([Change.rm(name)])
    finally:
        store.close()
    return Result("rm", f"removed {name}", {"name": name})


def cmd_mv(inv: Invocation) -> Result:
    from ..access import open_store

    if inv.options.prefix:
        from .bulk import mv_prefix

        return mv_prefix(inv)
    old = check_secret_name(inv.options.old)
    new = check_secret_name(inv.options.new)
    if old == new:
        raise errors.SameSecretName(name=old)
    store = open_store(inv)
    try:
        result = store.write([Change.mv(old, new)]).results[0]
    finally:
        store.close()
    return Result("mv", f"renamed {old} to {new} (revision {result.revision})",
                  {"from": old, "to": new, "revision": result.revision})


# -- import --

MAX_IMPORT_BYTES = 256 * 1024 * 1024


def _read_import_source(inv: Invocation, path: str) -> tuple[bytes, str]:
    from ..access import stdin_claim
    from ..paths import absolute

    if path == "-":
        if inv.passphrase_stdin:
            raise errors.ConflictingStdinInputs()
        data = stdin_claim(inv).read("import", MAX_IMPORT_BYTES)
        label = "-"
    else:
        label = absolute(path)
        data = _read_file(label, MAX_IMPORT_BYTES)
        warn_if_tracked(inv, label)
    if len(data) > MAX_IMPORT_BYTES:
        raise errors.ValueSourceFailed(detail=f"{label} is larger than 256 MiB")
    return data, label


def cmd_import(inv: Invocation) -> Result:
    from ..access import open_metadata, open_store
    from ..dotenv import kept_literally, parse
    from ..output import warn

    a = inv.options
    data, label = _read_import_source(inv, a.file)
    entries = parse(data)
    values: dict[str, bytes] = {}
    for entry in entries:
        if kept_literally(entry.value):  # the key and line, never the value
            warn(f"{label}:{entry.line}: {entry.key} imported literally (no ${{…}} interpolation, no \\$ unescaping)",
                 reason="import_not_interpolated")
        name = a.prefix + entry.key
        try:
            check_secret_name(name)
        except errors.InvalidSecretName:
            raise errors.InvalidSecretName(name=name, message=f"line {entry.line}: invalid secret name: {name}",
                                           line=entry.line) from None
        if len(entry.value) > MAX_VALUE_BYTES:
            raise _too_large(name, line=entry.line,
                             message=f"line {entry.line}: value of {name} exceeds 1 MiB")
        if name in values:
            warn(f"{entry.key} is set more than once; the last value wins (line {entry.line})",
                 reason="import_key_repeated")
            del values[name]  # keep file order of the winning assignment
        values[name] = entry.value
    backup_path = None
    store = None
    try:
        # What exists is decided again inside the write: a name created meanwhile is `secret_exists`
        # there, and the import looks once more (up to 3 times); one removed meanwhile is set anyway.
        for attempt in range(3):
            with open_metadata(inv) as vault:
                existing = vault.names(list(values))
            if existing and not (a.overwrite or a.skip_existing):
                raise errors.SecretExists(sorted(existing), hint="use --overwrite to replace them or --skip-existing")
            created = [n for n in values if n not in existing]
            updated = [n for n in values if n in existing] if a.overwrite else []
            skipped = [n for n in values if n in existing] if a.skip_existing else []
            changes = [Change.set(n, values[n], mode="create") for n in created]
            changes += [Change.set(n, values[n]) for n in updated]
            if not changes or a.dry_run:
                break
            from .backup import backed_up
            from .backup import backup_path as new_backup_path

            store = store or open_store(inv)
            try:  # replacing values the command line does not name: a backup first (bulk change)
                with open_metadata(inv) as vault:
                    backup_path = new_backup_path(vault.path) if updated and not a.no_backup else None
                    with backed_up(vault, backup_path):
                        written = store.write(changes, history_op="import")
            except errors.SecretExists:
                if attempt == 2 or not (a.overwrite or a.skip_existing):
                    raise
                continue  # created meanwhile: replaced (with its backup) or skipped, as the flag asks
            made = {r.name for r in written.results if r.created}  # what the write found
            created = [n for n in values if n in made]
            updated = [n for n in updated if n not in made]
            if not updated and backup_path is not None:  # all removed meanwhile: nothing was replaced
                from ..vault.backup import discard

                discard(backup_path)
                backup_path = None
            break
    finally:
        if store is not None:
            store.close()
    prefix = "[dry-run] " if a.dry_run else ""
    lines = [f"{prefix}create {n}" for n in created] + [f"{prefix}update {n}" for n in updated]
    lines += [f"{prefix}skip {n}" for n in skipped]
    if backup_path:
        lines.append(f"backup: {backup_path}")
    return Result("import", lines, {
        "file": label, "count": len(changes), "created": created, "updated": updated, "skipped": skipped,
        "backup_path": backup_path, "dry_run": a.dry_run})
