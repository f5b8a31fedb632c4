"""`kimen secret history|restore` and `secret get --revision`: the kept older values of a name.

The vault keeps the last values of each name (`kimen.vault.store`); these commands show them
(`history`: no passphrase, never a value), print one (`get --revision N --unsafe-stdout`), make
one current again (`restore`, also after `rm`; the value it replaces is kept in turn) and delete
them (`history --purge`, after a leak). Everything goes through the store, so a session serves
them like any other command.
"""

from __future__ import annotations

from .. import errors
from ..values import check_secret_name
from .model import Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def register(group: argparse._SubParsersAction) -> None:
    """Add `history` and `restore` to the `secret` group (`get --revision` is `add_get_revision`).
    The parser is imported here only: `secret list` and `get` are read without argparse."""
    from .parser import add_command, complete_names

    p = add_command(group, "history", "show the kept older revisions of a secret (no passphrase needed)",
                    handler=cmd_history)
    complete_names(p.add_argument("name", metavar="NAME", nargs="?"), "secrets")
    p.add_argument("--purge", action="store_true", help="delete the kept older values of NAME (after a leak)")
    p.add_argument("--all", action="store_true", help="with --purge: of every secret (needs --yes)")
    p.add_argument("--yes", action="store_true", help="confirm --purge --all")

    p = add_command(group, "restore", "make an older revision of a secret current again (also after rm)",
                    handler=cmd_restore)
    complete_names(p.add_argument("name", metavar="NAME"), "secrets")
    add_revision(p, required=True)
    p.add_argument("--dry-run", action="store_true", help="show what would change (no passphrase)")


def add_revision(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument("--revision", metavar="N", type=_revision, required=required,
                        help="an older revision (kimen secret history NAME lists them)")


def _revision(text: str) -> int:
    import argparse  # called by argparse itself: already loaded

    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise argparse.ArgumentTypeError(f"a revision is a positive integer, not {text[:40]!r}")
    return int(text)


# -- history --


def cmd_history(inv: Invocation) -> Result:
    a = inv.options
    if a.purge:
        return _purge(inv)
    if a.all or a.yes:
        raise errors.UsageError(detail="--all and --yes go with --purge")
    if a.name is None:
        raise errors.UsageError(detail="secret history needs NAME")
    from ..access import load_config, open_metadata

    name = check_secret_name(a.name)
    keep = load_config(inv).history_keep()
    with open_metadata(inv) as vault:
        info = vault.history(name, keep)
    lines = []
    if info.current is not None:
        lines.append(f"{info.current.revision} {info.current.updated_at} size={info.current.size} current")
    lines += [f"{e.revision} {e.created_at} size={e.size} replaced {e.replaced_at} ({e.op})" for e in info.entries]
    current = None if info.current is None else {
        "revision": info.current.revision, "size": info.current.size, "updated_at": info.current.updated_at}
    return Result("history", lines, {"name": name, "current": current,
                                     "entries": [e.as_json() for e in info.entries], "keep": info.keep})


def _purge(inv: Invocation) -> Result:
    from ..access import open_store

    a = inv.options
    if a.all == (a.name is not None):
        raise errors.UsageError(detail="secret history --purge needs NAME or --all, not both")
    if a.all and not a.yes:
        raise errors.PurgeConfirmationRequired()
    names = None if a.all else [check_secret_name(a.name)]
    if names is not None:
        from ..access import open_metadata

        with open_metadata(inv) as vault:
            vault.history(names[0])  # an unknown name: secret_not_found before any unlock
    store = open_store(inv)
    try:
        count = store.purge_history(names)
    finally:
        store.close()
    what = "every secret" if names is None else names[0]
    return Result("history_purge", f"purged {count} kept value{'s' if count != 1 else ''} of {what}",
                  {"name": None if names is None else names[0], "count": count})


# -- restore --


def cmd_restore(inv: Invocation) -> Result:
    from ..access import open_metadata, open_store

    a = inv.options
    name = check_secret_name(a.name)
    revision = a.revision
    with open_metadata(inv) as vault:
        info = vault.history(name)  # secret_not_found before any unlock
    available = info.revisions()
    if revision not in available:
        raise errors.RevisionNotFound(secret=name, revision=revision, available=available)
    if info.current is not None and info.current.revision == revision:
        return _restored(name, revision, revision, unchanged=True, dry_run=bool(a.dry_run))
    if a.dry_run:
        return _restored(name, revision, None, unchanged=False, dry_run=True)
    store = open_store(inv)
    try:
        result = store.restore(name, revision)
    finally:
        store.close()
    return _restored(name, revision, result.revision, unchanged=result.unchanged, dry_run=False)


def _restored(name: str, from_revision: int, revision: int | None, *, unchanged: bool, dry_run: bool) -> Result:
    if unchanged:
        human = f"{name} is at revision {from_revision} already (unchanged)"
    elif dry_run:
        human = f"[dry-run] would restore {name} from revision {from_revision}"
    else:
        human = f"restored {name} from revision {from_revision} (revision {revision})"
    return Result("restore", human, {"name": name, "from_revision": from_revision, "revision": revision,
                                     "unchanged": unchanged, "dry_run": dry_run})


# -- get --revision --


def read_revision(inv: Invocation, name: str, revision: int) -> tuple[bytes, int]:
    """`secret get NAME --revision N`: the value and revision through the store."""
    from ..access import open_store

    store = open_store(inv)
    try:
        found = store.read_revision(name, revision)
    finally:
        store.close()
    return found.value, found.revision
