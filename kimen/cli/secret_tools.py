"""`kimen secret generate|edit|copy` (docs/daily.md): new random values, editing a value in the
user's editor, and handing a value to the clipboard.

The rules live in their own modules (`kimen.generate`, `kimen.editing`, `kimen.clipboard`); these
handlers check the input before anything is unlocked, then read and write through the store (so a
session, its grants and its audit log apply). No handler prints or returns a value.
"""

from __future__ import annotations

from .. import errors
from ..store import Change
from ..values import check_secret_name
from .model import Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ..store import SetMode, Store

CAS_ATTEMPTS = 5


def register(group: argparse._SubParsersAction) -> None:
    """Add `generate`, `edit` and `copy` to the `secret` group."""
    from .parser import add_command, complete_names

    p = add_command(group, "generate", "store a new random value (never printed)", handler=cmd_generate)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    p.add_argument("--length", metavar="N", help="characters (1-4096, default 32)")
    p.add_argument("--charset", metavar="SET", help="alnum (default), alpha, digits, hex, base32 or symbols")
    p.add_argument("--bytes", metavar="N", dest="nbytes", help="random bytes (1-65536) instead of text")
    p.add_argument("--encoding", metavar="ENC", help="with --bytes: hex (default), base64, base64url or raw")
    p.add_argument("--replace", action="store_true", help="replace an existing secret (its value goes to history)")
    p.add_argument("--dry-run", action="store_true", help="show what would be generated (no passphrase)")

    p = add_command(group, "edit", "edit a secret in $VISUAL/$EDITOR (a private file, removed afterwards)",
                    handler=cmd_edit)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    p.add_argument("--create", action="store_true", help="start from an empty value when NAME does not exist")
    p.add_argument("--keep-newline", action="store_true", help="keep a final newline the editor added")

    p = add_command(group, "copy", "put a secret on the clipboard, cleared after 45s", handler=cmd_copy)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    clear = p.add_mutually_exclusive_group()
    clear.add_argument("--clear-after", metavar="DUR", help="clear the clipboard after DUR (default 45s, 1s-24h)")
    clear.add_argument("--no-clear", action="store_true", help="leave the value on the clipboard")


def _count(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise errors.InvalidGenerateOptions(detail=f"{flag} takes a positive integer, not {text[:40]!r}")
    return int(text)


# -- generate --


def cmd_generate(inv: Invocation) -> Result:
    from ..access import open_metadata, open_store
    from ..generate import generate, recipe

    a = inv.options
    name = check_secret_name(a.name)
    made = recipe(length=_count("--length", a.length), charset=a.charset, nbytes=_count("--bytes", a.nbytes),
                  encoding=a.encoding)
    fields: dict[str, object] = {"name": name}
    if a.dry_run:
        with open_metadata(inv) as vault:
            exists = bool(vault.names([name]))
        if exists and not a.replace:
            raise _exists(name)
        fields.update(created=not exists, replaced=exists, revision=None, size=_size(made), **made.as_json(),
                      dry_run=True)
        return Result("generate", f"[dry-run] would generate {name} ({made.describe()}, {int(made.bits)} bits)",
                      fields)
    value = generate(made)
    store = open_store(inv)
    try:
        result = store.write([Change.set(name, value, mode="upsert" if a.replace else "create")]).results[0]
    except errors.SecretExists:
        raise _exists(name) from None
    finally:
        store.close()
    fields.update(created=result.created, replaced=not result.created, revision=result.revision, size=len(value),
                  **made.as_json(), dry_run=False)
    return Result("generate", f"generated {name} (revision {result.revision}, {made.describe()}, "
                              f"{int(made.bits)} bits)", fields)


def _size(made: object) -> int:
    """The stored size of a value of this recipe (the value itself is not drawn in a dry run)."""
    nbytes, length, encoding = (getattr(made, k) for k in ("nbytes", "length", "encoding"))
    if nbytes is None:
        return int(length)
    if encoding == "raw":
        return int(nbytes)
    if encoding == "hex":
        return 2 * int(nbytes)
    return 4 * ((int(nbytes) + 2) // 3)


def _exists(name: str) -> errors.SecretExists:
    return errors.SecretExists([name], hint="pass --replace to replace it (the old value is kept in its history)")


# -- edit --


def cmd_edit(inv: Invocation) -> Result:
    from ..access import open_store
    from ..editing import edit, editor_command

    a = inv.options
    name = check_secret_name(a.name)
    editor = editor_command(inv.env)  # editor_not_found before any unlock
    store = open_store(inv)
    try:
        _refuse_a_read_only_grant(inv, name)
        generation = store.meta().generation
        try:
            secret = store.read([name])[name]
            old, revision = secret.value, secret.revision
        except errors.SecretNotFound:
            if not a.create:
                raise
            old, revision = b"", None
        new = edit(name, old, editor, inv.env, keep_newline=bool(a.keep_newline))
        if new is None:
            return Result("edit", f"unchanged {name}", {"name": name, "created": False, "changed": False,
                                                        "revision": revision})
        written = _write_if_unchanged(store, name, new, revision, generation)
    finally:
        store.close()
    created = revision is None
    verb = "created" if created else "edited"
    return Result("edit", f"{verb} {name} (revision {written})",
                  {"name": name, "created": created, "changed": True, "revision": written})


def _refuse_a_read_only_grant(inv: Invocation, name: str) -> None:
    """Under a read-only grant the daemon refuses the write after the editor has closed, and the
    edit is lost: refuse before the editor opens (the daemon still checks the write itself)."""
    if not inv.env.get("KIMEN_SESSION_TOKEN"):
        return
    from ..daemon import control

    for grant in control.grants(inv.env):  # a token holder sees its own grant only
        if grant.get("read_only"):
            raise errors.GrantDenied(message="the grant is read-only", denied=[name],
                                     grant_id=grant.get("grant_id"),
                                     hint="ask for a grant that may write, or edit without the grant")


def _write_if_unchanged(store: Store, name: str, value: bytes, revision: int | None, generation: int) -> int:
    """Write `value` only if `name` is still at `revision` (None: still absent): compare-and-set
    on the vault's generation, retried while only other names changed."""
    mode: SetMode = "create" if revision is None else "update"
    for _attempt in range(CAS_ATTEMPTS):
        try:
            result = store.write([Change.set(name, value, mode=mode)], if_generation=generation)
            return int(result.results[0].revision or 0)
        except (errors.VaultFailed, errors.SecretExists, errors.SecretNotFound):
            current = [i.revision for i in store.list(name) if i.name == name]
            if (current[0] if current else None) != revision:
                raise errors.SecretChangedConcurrently(secret=name) from None
            generation = store.meta().generation
    raise errors.SecretChangedConcurrently(secret=name)


# -- copy --


def cmd_copy(inv: Invocation) -> Result:
    from .. import clipboard
    from ..access import open_store

    a = inv.options
    name = check_secret_name(a.name)
    tool = clipboard.detect(inv.env, name)  # clipboard_unavailable before any unlock
    seconds = None if a.no_clear else (clipboard.DEFAULT_CLEAR_SECONDS if a.clear_after is None
                                       else clipboard.clear_after(a.clear_after))
    store = open_store(inv)
    try:
        secret = store.read([name])[name]
    finally:
        store.close()
    clipboard.copy(tool, secret.value, inv.env)
    if seconds is not None:
        clipboard.start_clear(tool, secret.value, seconds, inv.env)
    when = "not cleared (--no-clear)" if seconds is None else f"clears in {_duration(seconds)}"
    return Result("copy", f"copied {name} to the clipboard ({tool.name}); {when}",
                  {"name": name, "revision": secret.revision, "tool": tool.name, "clear_after_seconds": seconds})


def _duration(seconds: int) -> str:
    from ..durations import format_duration

    return format_duration(seconds)
