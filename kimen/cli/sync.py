"""`kimen remote add|get|set|list|rm` and the `kimen sync …` commands (docs/sync.md). The plain
`kimen sync` and `sync preflight` are registered here with their handlers in `kimen.cli.sync_checks`.

Remotes live in the config (`remotes`: name, type, path, identity, remote_id, and for git branch
and bundle_path); membership never does. The sync commands build a `kimen.sync.engine.Engine`
from the selected remote: its transport (fs or git), the member's identity, the state directory
and the clock. Output names secrets, members, seqs, head ids and remote revs — never a value, a
per-key digest or an identity.
"""

from __future__ import annotations

import contextlib
import os

from .. import errors
from ..output import Progress
from . import flags
from .common import check_fingerprint
from .model import COMMANDS, Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from typing import Any

    from ..bundle.keys import Identity
    from ..config import Config
    from ..sync.engine import Engine
    from ..sync.status import Remote
    from ..vault import Vault

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_FIELDS = ("type", "path", "identity", "remote_id", "branch", "bundle_path")
_LOCATION_FIELDS = ("type", "path", "branch", "bundle_path", "remote_id")
_MEMBERSHIP_FLAGS = ("recipient", "recipients_file", "signer", "scope", "derive_recipient", "no_derive_recipient")
_IGNORED_KEYS = ("recipients", "signers", "scope")


def register(sub: argparse._SubParsersAction, name: str) -> None:
    if name == "remote":
        _register_remote(sub, name)
    else:
        _register_sync(sub, name)


def _location_flags(p: argparse.ArgumentParser, *, type_default: str | None, identity: bool = True) -> None:
    p.add_argument("--type", choices=["fs", "git"], default=type_default, help="fs (a directory) or git")
    p.add_argument("--path", help="fs: a directory or a .age file; git: the repository (path or URL)")
    if identity:
        p.add_argument("--identity", metavar="FILE", help="your age identity file (decrypts and signs heads)")
    p.add_argument("--branch", help="git only: the branch (default main)")
    p.add_argument("--bundle-path", help="git only: the head's path in the repository (default vault.age)")


def _register_remote(sub: argparse._SubParsersAction, name: str) -> None:
    import argparse

    from .parser import add_command, add_group

    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_REMOTE)
    for verb, text, handler in (("add", "add a remote (contacts nothing)", cmd_remote_add),
                                ("set", "change fields of a remote (an empty value clears one)", cmd_remote_set)):
        p = add_command(group, verb, text, handler=handler)
        p.add_argument("name", metavar="NAME")
        _location_flags(p, type_default="fs" if verb == "add" else None)
        p.add_argument("--remote-id", help="the remote's id (32 hex), pinned on first contact otherwise")
        for flag in _MEMBERSHIP_FLAGS:  # membership lives in the remote's head, not in the config
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, nargs="?", const=True, default=None,
                           help=argparse.SUPPRESS)
    p = add_command(group, "get", "show a remote's fields", handler=cmd_remote_get)
    p.add_argument("name", metavar="NAME")
    add_command(group, "list", "list the remotes", handler=cmd_remote_list)
    p = add_command(group, "rm", "remove a remote (and this vault's sync state for it)", handler=cmd_remote_rm)
    p.add_argument("name", metavar="NAME")


def _terse(p: argparse.ArgumentParser) -> None:
    from .parser import add_flags

    add_flags(p, (flags.TERSE,))


def _common(p: argparse.ArgumentParser) -> None:
    from .parser import add_flags

    add_flags(p, flags.SYNC_COMMON)


def _register_sync(sub: argparse._SubParsersAction, name: str) -> None:
    from .parser import add_command, add_flags, add_subcommands

    # plain `kimen sync` runs doctor, status and the step they call for; its flags go before nothing
    # else (a subcommand's own flags follow the subcommand)
    top = add_command(sub, name, COMMANDS[name][1], area=errors.AREA_SYNC, handler="kimen.cli.sync_checks:cmd_sync")
    add_flags(top, flags.SYNC_ALL)
    group = top.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=False, prog=top.prog)
    p = add_command(group, "init", "configure a remote; create its first head when it has none", handler=cmd_init)
    p.add_argument("name", metavar="NAME", nargs="?")
    _common(p)
    _location_flags(p, type_default=None, identity=False)
    p.add_argument("--member", help="your member id (default: the login name, lower-cased)")
    p.add_argument("--scope", metavar="GLOB", action="append", default=[], help="your scope (default **)")
    p.add_argument("--update", action="store_true", help="change an existing remote's entry")
    p.add_argument("--no-check", action="store_true", help="do not contact the remote")

    # `sync status` and `sync conflicts` are also read without argparse (`kimen.cli.fastargs`)
    for verb, text, handler, rows in (
            ("status", "compare the vault and the remote (no passphrase)", cmd_status, flags.SYNC_STATUS),
            ("conflicts", "the revision-level conflict and the lock (no passphrase)", cmd_conflicts,
             flags.SYNC_CONFLICTS)):
        p = add_command(group, verb, text, handler=handler)
        add_flags(p, rows)
    p = add_command(group, "preflight", "run the sync checks in one report (CI gate: --only head,pin,rotation)",
                    handler="kimen.cli.sync_checks:cmd_preflight")
    add_flags(p, (*flags.SYNC_COMMON, *flags.SYNC_CHECKS))
    p.add_argument("--pin", metavar="FP", help="the pin check: the members' fingerprint must be FP")
    p.add_argument("--only", metavar="CHECKS", action="append", default=[],
                   help="run only these checks (comma-separated): doctor,head,pin,status,conflicts,rotation,pull,push")
    p.add_argument("--skip", metavar="CHECKS", action="append", default=[], help="skip these checks (comma-separated)")
    p = add_command(group, "changes", "names changed locally, remotely, or both", handler=cmd_changes)
    _common(p)

    p = add_command(group, "pull", "merge the remote head into the vault", handler=cmd_pull)
    _common(p)
    p.add_argument("--reconcile", action="store_true", help="merge even with local changes (kept)")
    p.add_argument("--mirror", action="store_true", help="make the names in scope equal to the head's (backup first)")
    p.add_argument("--no-backup", action="store_true", help="no snapshot of the vault before changing it")
    p.add_argument("--dry-run", action="store_true", help="report what would change; change nothing")

    p = add_command(group, "push", "publish local changes as the next head", handler=cmd_push)
    _common(p)
    p.add_argument("--lock-wait", metavar="DUR", help="wait this long for the remote's lock (10s)")
    p.add_argument("--break-stale-lock-after", metavar="DUR", help="fs only; accepted and ignored")
    p.add_argument("--dry-run", action="store_true", help="report what would be published; change nothing")
    p.add_argument("--ff-only", action="store_true", help="refuse when the head moved since the last sync")
    p.add_argument("--no-backup", action="store_true", help="no snapshot before applying remote changes")
    p.add_argument("--restore-head", action="store_true",
                   help="admins: publish the known head again when the remote's is gone, older or forked")
    p.add_argument("--yes", action="store_true", help="confirm --restore-head")

    p = add_command(group, "join", "configure a remote and print a join request for an admin", handler=cmd_join)
    p.add_argument("name", metavar="NAME", nargs="?")
    _common(p)
    _location_flags(p, type_default=None, identity=False)
    p.add_argument("--member", help="your member id (default: the login name, lower-cased)")
    p.add_argument("--remote-id", help="the remote's id (32 hex), when the admin gave it to you")
    p.add_argument("--update", action="store_true", help="change an existing remote's entry")

    members = add_command(group, "members", "list, add, remove and acknowledge members")
    members_sub = add_subcommands(members, "sync_members_command")
    p = add_command(members_sub, "list", "the current members (decrypts the head)", handler=cmd_members_list)
    _common(p)
    p = add_command(members_sub, "add", "add a member (admins): from a join request, or ID and --recipient",
                    handler=cmd_members_add)
    p.add_argument("id", metavar="ID", nargs="?")
    _common(p)
    p.add_argument("--request", metavar="TEXT", help="the join request the new member printed")
    p.add_argument("--recipient", metavar="R", help="the member's age1... (or, for a reader, ssh-ed25519) recipient")
    p.add_argument("--signer", metavar="S", help="the member's signer id (kimen-sig-v1:...)")
    p.add_argument("--role", choices=["admin", "writer", "reader"], help="admin, writer (default) or reader")
    p.add_argument("--scope", metavar="GLOB", action="append", default=[], help="the member's scope (default **)")
    p.add_argument("--update", action="store_true", help="change the role or scope of an existing member")
    p = add_command(members_sub, "rm", "remove a member (admins); their names become due for rotation",
                    handler=cmd_members_rm)
    p.add_argument("id", metavar="ID")
    _common(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    p = add_command(members_sub, "ack", "acknowledge the current members", handler=cmd_members_ack)
    _common(p)
    p.add_argument("--fp", metavar="FP", help="refuse unless the members' fingerprint is FP")

    p = add_command(group, "rotation", "names still due for rotation after member removals",
                    handler=cmd_rotation)
    _common(p)
    p.add_argument("--strict", action="store_true", help="exit 32 when any name is due")
    p = add_command(group, "log", "the head's change log, newest first (names only)", handler=cmd_log)
    _common(p)
    p.add_argument("--limit", metavar="N", default="20", help="at most N entries (20)")
    p.add_argument("--key", metavar="NAME", help="only entries that set or deleted NAME")
    p = add_command(group, "pin", "CI gate: accept the head statelessly (no vault, no passphrase)",
                    handler=cmd_pin)
    _common(p)
    p.add_argument("--check", metavar="FP", help="refuse unless the members' fingerprint is FP")
    p.add_argument("--remote-id", help="the remote's id (default: the configured one)")

    p = add_command(group, "reset-baseline", "take the remote head as the baseline, or drop the baseline",
                    handler=cmd_reset_baseline)
    _common(p)
    p.add_argument("--to-remote", action="store_true", help="baseline := the current head (values unchanged)")
    p.add_argument("--clear", action="store_true", help="drop this vault's baseline and sync state")
    p.add_argument("--rev", metavar="SHA256", help="as --to-remote, only if the head's remote rev is SHA256")
    p.add_argument("--accept-fork", action="store_true", help="with --to-remote: accept a head that forks")
    p.add_argument("--yes", action="store_true", help="confirm")
    p = add_command(group, "unlock", "fs: who holds the remote's lock; sweep old in-flight files",
                    handler=cmd_unlock)
    _common(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.add_argument("--if-older-than", metavar="DUR", default="1h", help="in-flight files older than DUR (1h)")

    p = add_command(group, "revert", "a local change back to NAME's value at an older head", handler=cmd_revert)
    p.add_argument("key", metavar="NAME")
    _common(p)
    p.add_argument("--to-seq", metavar="N", help="the head whose value to take back (see `kimen sync log`)")

    p = add_command(group, "restore", "replace the vault with a backup (after a snapshot); the ratchet stays",
                    handler=cmd_restore)
    p.add_argument("--backup", metavar="FILE", help="the backup to restore (e.g. a sync backup_path)")
    p.add_argument("--no-backup", action="store_true", help="do not snapshot the current vault first")
    _terse(p)

    p = add_command(group, "resolve", "settle conflicting keys: --take local or remote", handler=cmd_resolve)
    _common(p)
    p.add_argument("--take", help="local or remote")
    p.add_argument("--key", metavar="K", action="append", default=[], help="a conflicting key (default: all)")
    p.add_argument("--no-backup", action="store_true", help="no snapshot before --take remote writes")


# -- the config's remotes ----------------------------------------------------------------------------


def _config(inv: Invocation) -> Config:
    from ..access import load_config

    return load_config(inv)


def _remotes(config: Config) -> list[dict[str, Any]]:
    value = config.data.get("remotes")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in value):
        raise errors.InvalidConfigValue(field="remotes", path=config.path,
                                        detail="must be a list of objects with a name",
                                        hint=f"fix `remotes` in {config.path}")
    return value


def _check_name(name: str) -> str:
    if not name:
        raise errors.EmptyRemoteName()
    if not _NAME_CHARS.issuperset(name) or len(name) > 64 or name[0] == "-":  # "-x" reads as a flag
        raise errors.InvalidRemoteName(name=name[:72])
    return name


def _find(config: Config, name: str) -> dict[str, Any]:
    for remote in _remotes(config):
        if remote["name"] == name:
            return remote
    from ..suggest import hint

    raise errors.RemoteNotFound(name=name, hint=hint(name, [r["name"] for r in _remotes(config)]))


def _warn_ignored(remote: dict[str, Any]) -> None:
    from ..output import warn

    ignored = [k for k in _IGNORED_KEYS if k in remote]
    if ignored:
        warn(f"remote {remote['name']}: {', '.join(ignored)} in the config are ignored; membership lives in the "
             "remote's head (`kimen sync members`)", reason="remote_membership_keys_ignored")


def _check_fields(fields: dict[str, Any]) -> None:
    """The rules of a remote object's fields (after the flags were applied)."""
    kind = fields.get("type") or "fs"
    if kind not in ("fs", "git"):
        raise errors.UnsupportedRemoteType(type=str(kind)[:20])
    if not fields.get("path"):
        raise errors.MissingPath()
    if kind != "git" and (fields.get("branch") or fields.get("bundle_path")):
        raise errors.GitFieldsRequireGitType()
    if fields.get("remote_id"):
        from ..sync.ratchet import check_remote_id

        check_remote_id(fields["remote_id"])
    if kind == "git":
        from ..sync.git import check_branch, check_bundle_path

        check_branch(fields.get("branch") or "main")
        check_bundle_path(fields.get("bundle_path") or "vault.age")


def _flag_fields(inv: Invocation, refused: tuple[str, ...] = _MEMBERSHIP_FLAGS,
                 current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The remote fields given as flags (None: not given; "": clear); a `refused` membership flag is
    `membership_not_in_config`. A path on this machine (any fs path; a git path that is not a URL
    or `host:path`) is made absolute; the type is the flag's, else the `current` entry's, else fs."""
    from ..paths import absolute

    args = inv.options
    for flag in refused:
        if getattr(args, flag, None):
            raise errors.MembershipNotInConfig(flag="--" + flag.replace("_", "-"))
    kind = getattr(args, "type", None) or (current or {}).get("type") or "fs"
    out: dict[str, Any] = {}
    for key in _FIELDS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if value and key == "identity":
            value = absolute(value)
        if value and key == "path" and (kind != "git" or _git_local_path(value)):
            value = absolute(value)
        out[key] = value
    return out


def _git_local_path(path: str) -> bool:
    """Whether git reads `path` as a directory on this machine: not `scheme://…` and not the
    scp-like `[user@]host:path` (a `:` before any `/`). A relative one would otherwise be taken
    relative to kimen's cache repository, where git runs."""
    if "://" in path:
        return False
    head, colon, _ = path.partition(":")
    return not colon or "/" in head


def _shown_path(remote: dict[str, Any]) -> str | None:
    """The remote's path as kimen shows it: a git URL without its `user:password@` part."""
    path = remote.get("path")
    if path and (remote.get("type") or "fs") == "git":
        from ..sync.git import redact

        return redact(path)
    return path


def _remote_view(remote: dict[str, Any]) -> dict[str, Any]:
    return {key: (_shown_path(remote) if key == "path" else remote.get(key)) for key in ("name", *_FIELDS)}


def _human_fields(remote: dict[str, Any]) -> list[str]:
    view = _remote_view(remote)
    return [f"{key}: {view[key] or '(none)'}" for key in ("name", *_FIELDS)]


# -- remote commands -----------------------------------------------------------------------------------


def cmd_remote_add(inv: Invocation) -> Result:
    name = _check_name(inv.options.name)
    config = _config(inv)
    remotes = _remotes(config)
    if any(r["name"] == name for r in remotes):
        raise errors.RemoteExists(name=name)
    fields = {k: v for k, v in _flag_fields(inv).items() if v}
    fields.setdefault("type", "fs")
    _check_fields(fields)
    remote = {"name": name, **fields}
    config.data["remotes"] = [*remotes, remote]
    config.save()
    return Result("remote_add", f"added remote {name} ({remote['type']}: {_shown_path(remote)})",
                  {"name": name, "remote": _remote_view(remote)})


def cmd_remote_get(inv: Invocation) -> Result:
    remote = _find(_config(inv), inv.options.name)
    _warn_ignored(remote)
    return Result("remote_get", _human_fields(remote), {"name": remote["name"], "remote": _remote_view(remote)})


def cmd_remote_list(inv: Invocation) -> Result:
    remotes = sorted(_remotes(_config(inv)), key=lambda r: r["name"])
    lines = [f"{r['name']}\t{r.get('type') or 'fs'}\t{_shown_path(r) or ''}" for r in remotes]
    return Result("remote_list", lines, {"remotes": [_remote_view(r) for r in remotes], "count": len(remotes)})


def cmd_remote_set(inv: Invocation) -> Result:
    config = _config(inv)
    remote = _find(config, inv.options.name)
    given = _flag_fields(inv, current=remote)
    if not given:
        raise errors.MissingRemoteSetFields()
    updated = dict(remote)
    for key, value in given.items():
        if value:
            updated[key] = value
        else:
            updated.pop(key, None)
    _check_fields(updated)
    moved = any(remote.get(k) != updated.get(k) for k in _LOCATION_FIELDS)
    reset = _clear_baseline(inv, remote["name"]) if moved else False
    remote.clear()
    remote.update(updated)
    config.save()
    return Result("remote_set", _human_fields(remote),
                  {"name": remote["name"], "remote": _remote_view(remote), "baseline_reset": reset})


def cmd_remote_rm(inv: Invocation) -> Result:
    config = _config(inv)
    remote = _find(config, inv.options.name)
    config.data["remotes"] = [r for r in _remotes(config) if r is not remote]
    reset = _clear_baseline(inv, remote["name"])
    config.save()
    return Result("remote_rm", f"removed remote {remote['name']}", {"name": remote["name"], "baseline_reset": reset})


def _clear_baseline(inv: Invocation, name: str) -> bool:
    """Drop the selected vault's sync state of remote `name` (no key; the ratchet stays)."""
    from ..access import resolve_vault
    from ..vault import Vault
    from ..vault.syncstate import clear_state

    location = resolve_vault(inv)
    if not os.path.exists(location.path):
        return False
    with Vault.open(location.path) as vault:
        return clear_state(vault, name)


# -- the engine of a sync command ---------------------------------------------------------------------


def _select(inv: Invocation, config: Config, vault: Vault | None) -> dict[str, Any]:
    """The remote a sync command acts on (`--remote`, KIMEN_REMOTE, the one with a sync state, `origin`,
    the only one), its fields checked."""
    remote = _choose(inv, config, vault)
    for key in _FIELDS:  # a hand-edited config can give a field any JSON type, or drop the path
        value = remote.get(key)
        if value is not None and not isinstance(value, str):
            detail = f"a JSON {_json_kind(value)}, not text"
        elif key == "path" and not value:
            detail = "missing"
        else:
            continue
        name = remote["name"][:64]
        raise errors.InvalidConfigValue(field=f"remotes[{name}].{key}", path=config.path, detail=detail,
                                        hint=f"`kimen remote set {name} --{key.replace('_', '-')} VALUE`, "
                                             "or edit the file")
    return remote


def _json_kind(value: Any) -> str:
    kinds = ((bool, "boolean"), (int, "number"), (float, "number"), (list, "array"), (dict, "object"))
    return next((kind for t, kind in kinds if isinstance(value, t)), type(value).__name__)


def _choose(inv: Invocation, config: Config, vault: Vault | None) -> dict[str, Any]:
    remotes = _remotes(config)
    wanted = getattr(inv.options, "remote", None)
    if wanted:
        return _find(config, wanted)
    from_env = inv.env.get("KIMEN_REMOTE", "")
    if from_env:
        for remote in remotes:
            if remote["name"] == from_env:
                return remote
        raise errors.RemoteNotFoundFromEnv(name=from_env)
    if not remotes:
        raise errors.NoRemotesConfigured(hint="add one with `kimen sync init` or `kimen remote add`")
    if vault is not None:
        from ..vault.syncstate import read_state

        with_state = [r for r in remotes if read_state(vault, r["name"]) is not None]
        if len(with_state) == 1:
            return with_state[0]
    for remote in remotes:
        if remote["name"] == "origin":
            return remote
    if len(remotes) == 1:
        return remotes[0]
    raise errors.MultipleRemotesConfigured(hint="pass --remote NAME or set KIMEN_REMOTE")


def _transport(inv: Invocation, remote: dict[str, Any], lock_wait: float | None = None) -> Any:
    if (remote.get("type") or "fs") == "git":
        from ..sync.git import GitTransport

        return GitTransport(remote["path"], branch=remote.get("branch") or "main",
                            bundle_path=remote.get("bundle_path") or "vault.age", env=inv.env)
    from ..sync.base import LOCK_WAIT
    from ..sync.fs import FsTransport

    return FsTransport(remote["path"], lock_wait=LOCK_WAIT if lock_wait is None else lock_wait)


def _identity(inv: Invocation, remote: dict[str, Any], *, required: bool) -> Identity | None:
    from .bundle_opts import load_identity

    found = load_identity(inv, required=False)
    if found is not None:
        return found
    path = remote.get("identity")
    if path:
        from ..bundle.keys import parse_identity
        from .bundle_opts import _read_key_file

        return parse_identity(_read_key_file(path, errors.MissingIdentityFile), path)
    if required:
        raise errors.RemoteIdentityMissing(
            hint=f"pass --identity FILE, set KIMEN_AGE_IDENTITY, or "
                 f"`kimen remote set {remote['name']} --identity FILE`")
    return None


def duration(text: str, error: type[errors.KimenError], *, allow_zero: bool = True) -> int:
    from ..durations import parse_duration

    try:
        return parse_duration(text, allow_zero=allow_zero)
    except ValueError as exc:
        raise error(detail=str(exc)) from None


def _max_skew(inv: Invocation) -> int:
    return duration(getattr(inv.options, "max_skew", None) or "15m", errors.InvalidMaxSkew)


def _handle(inv: Invocation, remote: dict[str, Any], lock_wait: float | None = None) -> Remote:
    """The selected remote as the engine and `sync status` see it (no engine imported)."""
    from ..sync.status import Remote, endpoint

    kind = remote.get("type") or "fs"
    return Remote(remote["name"], _transport(inv, remote, lock_wait), remote_id=remote.get("remote_id") or None,
                  endpoint=lambda: endpoint(kind, remote["path"], remote.get("branch"), remote.get("bundle_path")),
                  env=inv.env)


def _engine(inv: Invocation, remote: dict[str, Any], identity: Identity | None,
            lock_wait: float | None = None, *, handle: Remote | None = None, max_skew: int | None = None) -> Engine:
    from ..sync.engine import Engine

    skew = _max_skew(inv) if max_skew is None else max_skew
    return Engine(handle if handle is not None else _handle(inv, remote, lock_wait), identity,
                  max_skew=float(skew))


def _pin(config: Config, remote: dict[str, Any], remote_id: str | None, *, created: bool = False) -> None:
    """First contact with a remote whose id was not configured: pin it, and say so (not to the
    member who just created the remote)."""
    if remote_id is None or remote.get("remote_id"):
        return
    remote["remote_id"] = remote_id
    config.save()
    if not created:
        from ..output import warn

        warn(f"remote id {remote_id} pinned on first use", reason="remote_id_pinned")


class Session:
    """A sync command's parts: config, selected remote, the vault (unlocked or not), the engine."""

    def __init__(self, inv: Invocation, *, unlock: bool, identity: bool = True, lock_wait: float | None = None):
        from ..access import open_metadata, open_store, resolve_vault

        self.inv = inv
        self.config = _config(inv)
        location = resolve_vault(inv)
        self.vault_path = location.path
        self.vault: Any = None
        self.store: Any = None
        if unlock:
            if not os.path.exists(location.path):
                raise errors.LocalVaultMissing(path=location.path, hint="create one with `kimen vault init`")
            self.store = open_store(inv, allow_session=False)
            self.vault = self.store.vault
        elif os.path.exists(location.path):
            self.vault = open_metadata(inv, location)
        self.remote = _select(inv, self.config, self.vault)
        _warn_ignored(self.remote)
        try:
            self.identity = _identity(inv, self.remote, required=identity)
        except errors.MissingIdentityFile:
            if identity:
                raise
            self.identity = None  # `sync status` needs none: a configured file that is gone is a blocker, no error
        self.max_skew = _max_skew(inv)  # checked now, though only the engine uses it
        self.handle = _handle(inv, self.remote, lock_wait)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The engine, built on first use (`sync status` reads through `handle` and needs none)."""
        if self._engine is None:
            self._engine = _engine(self.inv, self.remote, self.identity, handle=self.handle, max_skew=self.max_skew)
        return self._engine

    def local(self) -> Any:
        from ..vault.syncstate import VaultSyncState

        return VaultSyncState(self.store)

    def backup_path(self) -> str | None:
        if getattr(self.inv.options, "no_backup", False):
            return None
        from .backup import backup_path

        return backup_path(self.vault_path)

    def pin(self, remote_id: str | None) -> None:
        _pin(self.config, self.remote, remote_id)

    def close(self) -> None:
        if self.vault is not None:
            self.vault.close()


def _reading(session: Session) -> Progress:
    """The progress line of a command that reads (and decrypts) the selected remote's head."""
    return Progress(f"reading the head of {session.remote['name']}")


RESTORE_ACTION = "sync_reset_baseline_or_remote_recreate"  # the head is gone: an admin restores it


def next_command(action: str, remote: str, role: str | None = None) -> str | None:
    """The command line that carries out `action`; none when there is none for this `role` (only an
    admin can put back a head that disappeared)."""
    if action == RESTORE_ACTION:
        return f"kimen sync push --remote {remote} --restore-head --yes" if role == "admin" else None
    commands = {
        "sync_init": f"kimen sync init {remote}", "sync_pull": f"kimen sync pull --remote {remote}",
        "sync_pull_reconcile": f"kimen sync pull --remote {remote} --reconcile",
        "sync_pull_mirror": f"kimen sync pull --remote {remote} --mirror",
        "sync_push": f"kimen sync push --remote {remote}", "manual_reconcile": f"kimen sync changes --remote {remote}",
        "wait_or_sync_unlock": f"kimen sync unlock --remote {remote}",
        "configure_remote_identity": f"kimen remote set {remote} --identity FILE",
        "vault_init": "kimen vault init", "doctor": "kimen doctor",
        "sync_members_ack": f"kimen sync members ack --remote {remote}",
        "sync_rotate": f"kimen sync rotation --remote {remote}",
    }
    return commands.get(action)


def next_line(action: str, command: str | None, remote: str) -> str:
    """The human `next:` line: the command, what to ask an admin for, or nothing to do."""
    if command is None and action == RESTORE_ACTION:
        return f"next: ask an admin to put the head back (`kimen sync push --remote {remote} --restore-head --yes`)"
    return f"next: {command or 'nothing to do'}"


def _names(label: str, names: list[str]) -> list[str]:
    return [f"{label}: {', '.join(names)}"] if names else []


# -- sync commands -------------------------------------------------------------------------------------


@contextlib.contextmanager
def _undone_on_failure(config: Config, name: str, created: bool) -> Iterator[None]:
    """A remote entry this command just created is removed again when the command fails (a bad
    member id, an unreachable repository): nothing is left that the user did not get."""
    try:
        yield
    except BaseException:
        if created:
            config.data["remotes"] = [r for r in _remotes(config) if r.get("name") != name]
            config.save()
        raise


def cmd_init(inv: Invocation) -> Result:
    args = inv.options
    config = _config(inv)
    name = _check_name(args.name or args.remote or "origin")
    remote, created, updated = _configure(inv, config, name)
    with _undone_on_failure(config, name, created):
        fields: dict[str, Any] = {"created": created, "updated": updated, "created_remote": False,
                                  "remote_id": remote.get("remote_id"), "member": None, "baseline_reset": False,
                                  "check_ok": None, "remote_config": _remote_view(remote)}
        lines = [f"{'added' if created else 'updated' if updated else 'kept'} remote {name} "
                 f"({remote.get('type') or 'fs'}: {_shown_path(remote)})"]
        if not args.no_check:
            engine = _engine(inv, remote, _identity(inv, remote, required=True))
            for warning in getattr(engine.remote.transport.probe(), "warnings", ()):
                from ..output import warn

                warn(warning, reason="remote_filesystem_unsupported")
            done = engine.init(_member_id(inv), args.scope or ("**",), _other_scopes(inv, name))
            _pin(config, remote, done.pin_remote_id, created=done.created_remote)
            fields.update(created_remote=done.created_remote, remote_id=done.remote_id, member=done.member,
                          check_ok=True, seq=done.seq, head_id=done.head_id, remote_rev=done.remote_rev,
                          remote_config=_remote_view(remote))  # with the id it just pinned
            lines.append(f"created the remote's first head (remote id {done.remote_id}, admin {done.member})"
                         if done.created_remote else
                         f"checked the remote's head: seq {done.seq}, remote id {done.remote_id}, member {done.member}")
        action = "sync_pull"
        fields.update(recommended_action=action, next_command=next_command(action, name))
        lines.append(f"next: {fields['next_command']}")
        return Result("sync_init", lines, fields)


def _other_scopes(inv: Invocation, remote: str) -> dict[str, tuple[str, ...]]:
    """This member's scope in the vault's other remotes (none without a vault); read unlocked."""
    from ..access import open_metadata, resolve_vault
    from ..vault.syncstate import other_scopes

    location = resolve_vault(inv)
    if not os.path.exists(location.path):
        return {}
    vault = open_metadata(inv, location)
    try:
        return other_scopes(vault, remote)
    finally:
        vault.close()


def stale_threshold(inv: Invocation) -> int:
    """`--stale-threshold DUR` in seconds (0: off) → `invalid_stale_threshold`."""
    return duration(getattr(inv.options, "stale_threshold", None) or "0", errors.InvalidStaleThreshold)


def likely_stale(created: float | None, threshold: int, now: float | None = None) -> bool:
    """The head was made longer than `threshold` seconds ago (0: off; None: no head known)."""
    import time

    if not threshold or created is None:
        return False
    return (time.time() if now is None else now) - created > threshold


def _status(session: Session) -> Any:
    from ..sync.status import read_status
    from ..vault.syncstate import read_local_revision, read_state

    vault = session.vault
    state = read_state(vault, session.remote["name"]) if vault is not None else None
    local_rev = (lambda scope: read_local_revision(vault, scope, state)) if vault is not None else None
    return read_status(session.handle, session.identity, state, local_rev)


def status_result(inv: Invocation, session: Session) -> Result:
    """`sync status` over an open session (also the `status` check of `sync preflight`)."""
    threshold = stale_threshold(inv)
    name = session.remote["name"]
    with Progress(f"reading the head of {name}"):
        status = _status(session)
    fields = {
        "remote": name, "remote_id": status.remote_id, "remote_rev": status.remote_rev,
        "remote_commit": status.remote_commit, "last_seen_rev": status.last_seen_rev, "local_rev": status.local_rev,
        "has_remote": status.has_remote, "has_local": status.has_local, "has_lock": status.has_lock,
        "lock_owner": status.lock_owner, "likely_stale": likely_stale(status.head_created, threshold),
        "in_sync": status.in_sync, "can_push": status.can_push, "needs_pull": status.needs_pull,
        "local_changed": status.local_changed,
        "blockers": status.blockers, "reason": status.reason, "recommended_action": status.recommended_action,
        "next_command": next_command(status.recommended_action, name, status.role),
        "head_seq": status.head_seq,
        "ratchet_seq": status.ratchet_seq, "member": status.member, "role": status.role, "scope": status.scope,
        "members_changed": status.members_changed, "rotation_due_count": status.rotation_due_count,
        "baseline_verified": status.baseline_verified,
    }
    lines = [f"remote: {name}", f"head: {'seq ' + str(status.head_seq) if status.head_seq else '(no baseline)'}"
             f"{'' if status.has_remote else ' (the remote holds no head)'}",
             f"in sync: {'yes' if status.in_sync else 'no'}" + (f" ({status.reason})" if status.reason else ""),
             f"local changes: {'yes' if status.local_changed else 'no'}",
             next_line(status.recommended_action, fields["next_command"], name)]
    if fields["likely_stale"]:
        lines.insert(2, "likely stale: nobody has published for longer than --stale-threshold")
    if status.members_changed:
        lines.insert(-1, "members changed since you acknowledged them: `kimen sync members list`, then "
                         "`kimen sync members ack`")
    code = 0
    if inv.options.strict and (status.blockers or status.members_changed):
        code = 31 if status.has_conflict else 32  # members alone: members_unacknowledged
    if code == 32 and not status.blockers:
        fields["reason"] = fields["reason"] or "members_unacknowledged"
    return Result("sync_status", lines, fields, exit_code=code)


def _read_only(inv: Invocation, result: Callable[[Invocation, Session], Result]) -> Result:
    """A no-passphrase report over a session of its own (`sync status`, `sync conflicts`)."""
    session = Session(inv, unlock=False, identity=False)
    try:
        return result(inv, session)
    finally:
        session.close()


def cmd_status(inv: Invocation) -> Result:
    return _read_only(inv, status_result)


def conflicts_result(inv: Invocation, session: Session) -> Result:
    """`sync conflicts` over an open session (also the `conflicts` check of `sync preflight`)."""
    threshold = stale_threshold(inv)
    with Progress(f"reading the head of {session.remote['name']}"):
        status = _status(session)
    fields = {**status.conflicts(), "likely_stale": likely_stale(status.head_created, threshold)}
    lines = [f"conflict: {'yes (' + str(status.reason) + ')' if status.has_conflict else 'no'}",
             f"lock: {status.lock_owner or 'free'}"]
    code = 0
    if inv.options.strict:
        code = 31 if status.has_conflict else 32 if status.has_lock else 0
    return Result("sync_conflicts", lines, fields, exit_code=code)


def cmd_conflicts(inv: Invocation) -> Result:
    return _read_only(inv, conflicts_result)


def cmd_changes(inv: Invocation) -> Result:
    session = Session(inv, unlock=True)
    try:
        with _reading(session):
            changes = session.engine.changes(session.local())
    finally:
        session.close()
    fields = {
        "seq": changes.seq, "local_changed_keys": changes.local_changed_keys,
        "remote_changed_keys": changes.remote_changed_keys, "conflict_keys": changes.conflict_keys,
        "conflicts": changes.conflicts, "local_only_changed_keys": changes.local_only_changed_keys,
        "remote_only_changed_keys": changes.remote_only_changed_keys, "converged_keys": changes.converged_keys,
        "out_of_scope_count": changes.out_of_scope_count, "can_reconcile": changes.can_reconcile,
        "recommended_action": "manual_reconcile" if changes.conflict_keys else
        "sync_pull_reconcile" if changes.remote_only_changed_keys else
        "sync_push" if changes.local_only_changed_keys else "none",
    }
    lines = (_names("local", changes.local_only_changed_keys) + _names("remote", changes.remote_only_changed_keys)
             + _names("conflicts", changes.conflict_keys)) or ["no changes"]
    return Result("sync_changes", lines, fields)


def pull_dry_run(session: Session, *, reconcile: bool, mirror: bool = False) -> Result:
    """`sync pull --dry-run`: what a pull would change, and the conflicts it would stop at."""
    result = session.engine.pull(session.local(), reconcile=reconcile, mirror=mirror, dry_run=True)
    would_backup = bool((result.applied_keys or result.deleted_keys)
                        and not getattr(session.inv.options, "no_backup", False))
    fields = {"seq": result.seq, "head_id": result.head_id, "would_backup": would_backup,
              "can_reconcile": not result.conflict_keys, "would_apply_keys": result.applied_keys,
              "would_delete_keys": result.deleted_keys, "conflict_keys": result.conflict_keys}
    return Result("sync_pull_dry_run", [f"would pull seq {result.seq}", *_names("would apply", result.applied_keys),
                                        *_names("would delete", result.deleted_keys),
                                        *_names("conflicts", result.conflict_keys)], fields)


def cmd_pull(inv: Invocation) -> Result:
    args = inv.options
    if args.reconcile and args.mirror:
        raise errors.ConflictingPullModes()
    session = Session(inv, unlock=True)
    try:
        if args.dry_run:
            return pull_dry_run(session, reconcile=args.reconcile, mirror=args.mirror)
        with Progress(f"pulling from {session.remote['name']}"):
            result = session.engine.pull(session.local(), reconcile=args.reconcile, mirror=args.mirror,
                                         backup_path=session.backup_path())
        session.pin(result.pin_remote_id)
    finally:
        session.close()
    return pull_result(result)


def pull_result(result: Any) -> Result:
    fields = {"seq": result.seq, "head_id": result.head_id, "remote_rev": result.remote_rev,
              "backup_path": result.backup_path, "applied_keys": result.applied_keys,
              "deleted_keys": result.deleted_keys, "kept_local_keys": result.kept_local_keys,
              "in_sync": result.in_sync, "first_pull": result.first_pull}
    lines = [f"pulled seq {result.seq}" + (" (first pull: union)" if result.first_pull else ""),
             *_names("applied", result.applied_keys), *_names("deleted", result.deleted_keys),
             *_names("kept local", result.kept_local_keys)]
    if result.backup_path:
        lines.append(f"backup: {result.backup_path}")
    return Result("sync_" + result.mode, lines, fields)


def push_dry_run(session: Session) -> Result:
    """`sync push --dry-run`: the names a push would publish, delete and merge, and its conflicts."""
    changes = session.engine.changes(session.local())
    deleted = changes.local_deleted_keys
    published = [k for k in changes.local_only_changed_keys if k not in deleted]
    fields = {"seq": changes.seq, "would_publish_keys": published, "would_delete_keys": deleted,
              "would_merge_keys": changes.remote_only_changed_keys, "conflict_keys": changes.conflict_keys,
              "can_push": not changes.conflict_keys}
    return Result("sync_push_dry_run", [*_names("would publish", published), *_names("would delete", deleted),
                                        *_names("would merge", changes.remote_only_changed_keys),
                                        *_names("conflicts", changes.conflict_keys)] or ["nothing to publish"],
                  fields)


def cmd_push(inv: Invocation) -> Result:
    args = inv.options
    lock_wait = duration(args.lock_wait or "10s", errors.InvalidLockWait)
    if args.break_stale_lock_after is not None:
        duration(args.break_stale_lock_after, errors.InvalidBreakStaleLockAfter)
    if args.dry_run and (args.lock_wait is not None or args.break_stale_lock_after is not None):
        raise errors.ConflictingDryRunLockFlags()  # a dry run takes no lock
    if args.restore_head:
        if args.dry_run or args.ff_only:
            raise errors.UsageError(detail="--restore-head cannot be combined with --dry-run or --ff-only")
        if not args.yes:
            raise errors.RestoreHeadConfirmationRequired()
    session = Session(inv, unlock=True, lock_wait=float(lock_wait))
    try:
        if args.break_stale_lock_after is not None:
            if (session.remote.get("type") or "fs") != "fs":
                raise errors.LockFlagsRequireFsRemote()
            from ..output import warn

            warn("--break-stale-lock-after is ignored: a remote's lock is a flock, released when its holder dies",
                 reason="break_stale_lock_ignored")
        if args.dry_run:
            return push_dry_run(session)
        if args.restore_head:
            with Progress(f"restoring the head of {session.remote['name']}"):
                restored = session.engine.restore_head(session.local(), backup_path=session.backup_path(),
                                                       lock_wait=float(lock_wait))
            return push_result(restored, restored=True)
        with Progress(f"pushing to {session.remote['name']}"):
            result = session.engine.push(session.local(), ff_only=args.ff_only,
                                         backup_path=session.backup_path(), lock_wait=float(lock_wait))
        session.pin(result.pin_remote_id)
    finally:
        session.close()
    return push_result(result)


def push_result(result: Any, *, restored: bool = False) -> Result:
    fields = {"seq": result.seq, "head_id": result.head_id, "remote_rev": result.remote_rev,
              "remote_commit": result.remote_commit, "generation": result.generation,
              "published_keys": result.published_keys, "deleted_keys": result.deleted_keys,
              "merged_remote_keys": result.merged_remote_keys, "attempts": result.attempts, "noop": result.noop,
              "backup_path": result.backup_path, "stale_lock_broken": False, "restored": restored}
    lines = ([f"nothing to publish (head seq {result.seq})"] if result.noop else
             [f"restored the known head as seq {result.seq}"] if restored else [f"pushed seq {result.seq}"])
    lines += [*_names("published", result.published_keys), *_names("deleted", result.deleted_keys),
              *_names("merged from the remote", result.merged_remote_keys)]
    if result.backup_path:
        lines.append(f"backup: {result.backup_path}")
    return Result("sync_push", lines, fields)


def cmd_resolve(inv: Invocation) -> Result:
    args = inv.options
    if args.take not in ("local", "remote"):
        raise errors.InvalidTake()
    keys = sorted({k.strip() for item in args.key for k in item.split(",") if k.strip()})
    session = Session(inv, unlock=True)
    try:
        result = session.engine.resolve(session.local(), args.take, keys,
                                        backup_path=session.backup_path() if args.take == "remote" else None)
    finally:
        session.close()
    action = "manual_reconcile" if result.remaining_conflict_keys else "sync_pull_reconcile"
    fields = {"take": result.take, "keys": result.keys, "resolved_count": result.resolved_count,
              "remaining_conflict_keys": result.remaining_conflict_keys, "recommended_action": action,
              "backup_path": result.backup_path}
    lines = [f"resolved ({result.take}): {', '.join(result.keys)}",
             *_names("still conflicting", result.remaining_conflict_keys)]
    if result.backup_path:
        lines.append(f"backup: {result.backup_path}")
    return Result("sync_resolve", lines, fields)


# -- membership ----------------------------------------------------------------------------------------


def _configure(inv: Invocation, config: Config, name: str) -> tuple[dict[str, Any], bool, bool]:
    """Create or (with --update) change the config entry of remote `name` from the flags."""
    remotes = _remotes(config)
    existing = next((r for r in remotes if r["name"] == name), None)
    # `sync init --scope` is the member's scope in a new remote's first head, not a config field
    given = {k: v for k, v in _flag_fields(inv, tuple(f for f in _MEMBERSHIP_FLAGS if f != "scope"),
                                           current=existing).items() if v}
    if existing is None:
        remote = {"name": name, "type": "fs", **given}
        _check_fields(remote)
        config.data["remotes"] = [*remotes, remote]
        config.save()
        return remote, True, False
    if given and not inv.options.update and any(existing.get(k) != v for k, v in given.items()):
        raise errors.RemoteExists(name=name, hint="pass --update to change its entry")
    updated = any(existing.get(k) != v for k, v in given.items())
    if updated:
        candidate = {**existing, **given}
        _check_fields(candidate)
        existing.update(candidate)
        config.save()
    return existing, False, updated


def _member_id(inv: Invocation) -> str:
    import getpass

    if inv.options.member:
        return inv.options.member
    try:
        return getpass.getuser().lower()
    except (KeyError, OSError):
        raise errors.InvalidMemberId(member="", hint="pass --member ID") from None


def _members_fields(head: Any) -> dict[str, Any]:
    from ..sync.chain import members_fp

    return {"members": [m.to_json() for m in head.current.members], "members_fp": members_fp(head.current.members),
            "epoch": head.current.epoch, "seq": head.seq}


def _member_lines(head: Any) -> list[str]:
    return [f"{m.id}\t{m.role}\t{','.join(m.scope)}\t{m.recipient}" for m in head.current.members]


def cmd_join(inv: Invocation) -> Result | int:
    from ..durations import format_time
    from ..sync.chain import make_join_request

    args = inv.options
    config = _config(inv)
    name = _check_name(args.name or args.remote or "origin")
    remote, created, updated = _configure(inv, config, name)
    with _undone_on_failure(config, name, created):
        identity = _identity(inv, remote, required=True)
        assert identity is not None
        if identity.recipient is None or identity.signer is None or not identity.recipient.startswith("age1"):
            raise errors.MissingSigningIdentity(hint="use an age (X25519) identity: it decrypts and signs")
        member = _member_id(inv)
        request = make_join_request(member, identity, identity.recipient, remote.get("remote_id") or None,
                                    format_time())
        try:
            with Progress(f"reading the head of {name}"):
                fetched = _engine(inv, remote, identity).fetch(None)
            mine = [m for m in (fetched.head.current.members if fetched is not None else ())
                    if m.recipient == identity.recipient]
        except errors.KimenError:
            mine = []
        is_member = bool(mine)
        if is_member:  # already admitted: the scope it has here must not overlap this vault's other remotes
            _engine(inv, remote, identity).check_scope_overlap(mine[0].scope, _other_scopes(inv, name))
        fields = {"request": request.text, "fingerprint": request.fingerprint, "member": member,
                  "recipient": identity.recipient, "signer": identity.signer, "is_member": is_member,
                  "created": created, "updated": updated,
                  "next_command": f"kimen sync pull --remote {name}" if is_member else None}
        if is_member:
            return Result("sync_join", [f"{member} is already a member of {name}",
                                        f"next: kimen sync pull --remote {name}"], fields)
        if inv.json or inv.options.terse:
            return Result("sync_join", None, fields)
        # The request alone on stdout (`kimen sync join … > bo.request`), the guidance on stderr.
        from ..output import flush_warnings, print_lines, write_err

        flush_warnings()
        write_err("send this join request to an admin of the team\n"
                  f"fingerprint (compare it with the admin by voice): {request.fingerprint}\n"
                  f"then: kimen sync pull --remote {name}\n")
        print_lines(request.text)
        return 0


def cmd_members_list(inv: Invocation) -> Result:
    session = Session(inv, unlock=False)
    session.close()
    with _reading(session):
        head = session.engine.members().head
    from ..sync.ratchet import SyncStateDir

    ack = SyncStateDir(head.remote_id, inv.env).read_ack()
    fields = _members_fields(head)
    acked = {m.id: m for m in ack.members} if ack is not None else {}
    current = {m.id: m for m in head.current.members}
    fields.update(acked=ack is not None and ack.members_fp == fields["members_fp"],
                  added=sorted(set(current) - set(acked)) if ack else [],
                  removed=sorted(set(acked) - set(current)) if ack else [],
                  changed=sorted(k for k in set(current) & set(acked) if current[k] != acked[k]))
    lines = [*_member_lines(head), f"members_fp: {fields['members_fp']}"]
    news = [f"{label} {', '.join(fields[label])}" for label in ("added", "removed", "changed") if fields[label]]
    if news:
        lines.append(f"since you acknowledged them: {'; '.join(news)} (`kimen sync members ack`)")
    return Result("sync_members_list", lines, fields)


def cmd_members_add(inv: Invocation) -> Result:
    from ..sync import merge
    from ..sync.base import Member, check_scope_glob

    args = inv.options
    session = Session(inv, unlock=False)
    session.close()
    scope = tuple(dict.fromkeys(check_scope_glob(g) for g in args.scope)) or None  # a glob given twice once
    fingerprint = None
    if args.update:
        if not args.id:
            raise errors.MemberNotFound(member="", hint="name the member: kimen sync members add ID --update")
        change: Any = merge.UpdateMember(args.id, args.role, scope)
        member_id = args.id
    elif args.request:
        from ..sync.chain import parse_join_request

        request = parse_join_request(args.request, session.remote.get("remote_id") or None)
        member_id, fingerprint = request.member, request.fingerprint
        change = merge.AddMember(Member(request.member, args.role or "writer", request.recipient, request.signer,
                                        scope or ("**",)))
    else:
        if not args.id or not args.recipient:
            raise errors.InvalidJoinRequest(detail="give --request TEXT, or ID with --recipient (and --signer)")
        member_id = args.id
        change = merge.AddMember(Member(args.id, args.role or "writer", args.recipient, args.signer,
                                        scope or ("**",)))
    with Progress(f"changing the members of {session.remote['name']}"):
        done = session.engine.change_members(change)
    added = done.head.current.member(member_id)
    fields = {"member": member_id, "role": added.role if added else None, "scope": list(added.scope) if added else [],
              "fingerprint": fingerprint, "seq": done.head.seq, "remote_id": done.head.remote_id,
              "members_fp": _members_fields(done.head)["members_fp"], "attempts": done.attempts}
    verb = "updated" if args.update else "added"
    lines = [f"{verb} {member_id} ({fields['role']}) in seq {done.head.seq}"]
    if fingerprint:
        lines.append(f"fingerprint: {fingerprint} (it must be the one {member_id} read out to you; "
                     f"if not: kimen sync members rm {member_id} --yes)")
    return Result("sync_members_add", [*lines, f"next: {member_id} runs kimen sync pull"], fields)


def cmd_members_rm(inv: Invocation) -> Result:
    from ..sync import merge

    args = inv.options
    if not args.yes:
        raise errors.MembersRmConfirmationRequired(member=args.id)
    session = Session(inv, unlock=False)
    session.close()
    with Progress(f"changing the members of {session.remote['name']}"):
        done = session.engine.change_members(merge.RemoveMember(args.id))
    head = done.head
    fields = {"member": args.id, "seq": head.seq, "members_fp": _members_fields(head)["members_fp"],
              "recipient_count": len(head.current.members), "rotation_due_count": len(head.sync.rotation_due),
              "next_command": "kimen sync rotation"}
    return Result("sync_members_rm", [
        f"removed {args.id} in seq {head.seq}; {len(head.sync.rotation_due)} names are due for rotation",
        "they keep what they already fetched: rotate those secrets, and remove their access to the remote's "
        "directory or repository too"], fields)


def cmd_members_ack(inv: Invocation) -> Result:
    from ..sync.chain import members_fp
    from ..sync.ratchet import SyncStateDir

    session = Session(inv, unlock=False)
    session.close()
    with _reading(session):
        head = session.engine.members().head
    current = members_fp(head.current.members)
    expected = check_fingerprint(inv.options.fp or None)
    if expected and expected != current:
        raise errors.MembersPinMismatch(actual=current, expected=expected)
    directory = SyncStateDir(head.remote_id, inv.env)
    previous = directory.read_ack()
    directory.write_ack(current, head.current.members)
    return Result("sync_members_ack", f"acknowledged members {current}",
                  {"members_fp": current, "previous_fp": previous.members_fp if previous else None})


# -- reading the head: rotation, log, pin ---------------------------------------------------------------


def cmd_rotation(inv: Invocation) -> Result:
    session = Session(inv, unlock=False)
    session.close()
    with _reading(session):
        head = session.engine.members().head
    due = [d.to_json() for d in head.sync.rotation_due]
    if inv.options.strict and due:
        raise errors.SyncRotationDue(count=len(due))
    lines = [f"{d['name']}\tsince seq {d['since_seq']}\tremoved {','.join(d['removed'])}" for d in due]
    return Result("sync_rotation", lines or ["nothing is due for rotation"], {"rotation_due": due, "count": len(due)})


def cmd_log(inv: Invocation) -> Result:
    args = inv.options
    try:
        limit = int(args.limit)
    except ValueError:
        limit = 0
    if limit < 1:
        raise errors.InvalidLimit(detail=str(args.limit)[:20])
    if args.key is not None:
        from ..values import check_secret_name

        check_secret_name(args.key)  # a name no secret can have would match nothing, silently
    session = Session(inv, unlock=False)
    session.close()
    with _reading(session):
        head = session.engine.members().head
    entries = [e.to_json() for e in reversed(head.sync.log)
               if args.key is None or args.key in e.set or args.key in e.deleted][:limit]
    lines = [f"{e['seq']}\t{e['at']}\t{e['by']}\t" + " ".join(
        [*("+" + n for n in e["set"]), *("-" + n for n in e["del"])] + (["(members)"] if e["members"] else [])
        + ([f"({e['note']})"] if e["note"] and not (e["members"] and e["note"] == "members") else []))
        for e in entries]
    return Result("sync_log", lines, {"entries": entries, "first_seq": head.sync.log[0].seq, "head_seq": head.seq})


def cmd_pin(inv: Invocation) -> Result:
    from ..sync.chain import members_fp
    from ..sync.ratchet import check_remote_id

    args = inv.options
    config = _config(inv)
    remote = dict(_select(inv, config, None))
    if args.remote_id:
        remote["remote_id"] = check_remote_id(args.remote_id)
    engine = _engine(inv, remote, _identity(inv, remote, required=True))
    with Progress(f"fetching the head of {remote['name']}"):
        fetched = engine.fetch(None, stateless=True)
    if fetched is None:
        raise engine.no_head(None, stateless=True)
    head = fetched.head
    fp = members_fp(head.current.members)
    expected = check_fingerprint(args.check or None)
    if expected and expected != fp:
        raise errors.MembersPinMismatch(actual=fp, expected=expected)
    writers = [m for m in head.current.members if m.can_write]
    fields = {"remote_id": head.remote_id, "seq": head.seq, "head_id": head.id, "by": head.by, "members_fp": fp,
              "writers": [m.id for m in writers], "trusted_signers": [m.signer for m in writers],
              "pinned": bool(args.check)}
    return Result("sync_pin", [f"head seq {head.seq} by {head.by}: accepted", f"members_fp: {fp}",
                               "trusted signers: " + ",".join(str(m.signer) for m in writers)], fields)


# -- recovery: reset-baseline, unlock -------------------------------------------------------------------


def cmd_reset_baseline(inv: Invocation) -> Result:
    args = inv.options
    modes = [m for m, on in (("to_remote", args.to_remote), ("clear", args.clear), ("rev", bool(args.rev))) if on]
    if len(modes) != 1 or (args.accept_fork and modes != ["to_remote"]):
        raise errors.InvalidResetBaselineMode()
    from ..sync.base import is_lower_hex

    if args.rev and not is_lower_hex(args.rev, 64):
        raise errors.UsageError(detail="--rev must be a remote rev: 64 lower-case hexadecimal digits",
                                hint="`kimen sync status --json` shows it (`remote_rev`)")
    if not args.yes:
        raise errors.ResetBaselineConfirmationRequired()
    mode = modes[0]
    if mode == "clear":
        from ..vault.syncstate import read_state

        session = Session(inv, unlock=False, identity=False)
        try:
            previous = read_state(session.vault, session.remote["name"]) if session.vault is not None else None
            if session.vault is not None:
                from ..vault.syncstate import clear_state

                clear_state(session.vault, session.remote["name"])
        finally:
            session.close()
        fields = {"mode": "clear", "previous_rev": previous.head_rev if previous else None, "new_rev": None,
                  "previous_seq": previous.head_seq if previous else None, "new_seq": None, "accepted_fork": False}
        return Result("sync_reset_baseline", f"cleared the baseline of {session.remote['name']}", fields)
    session = Session(inv, unlock=True)
    try:
        with _reading(session):
            done = session.engine.reset_baseline(session.local(), accept_fork=args.accept_fork, rev=args.rev or None)
    finally:
        session.close()
    fields = {"mode": "rev" if mode == "rev" else "to_remote", "previous_rev": done.previous_rev,
              "new_rev": done.new_rev, "previous_seq": done.previous_seq, "new_seq": done.new_seq,
              "accepted_fork": done.accepted_fork}
    lines = ([f"accepted a fork: the ratchet now names head seq {done.new_seq} ({done.head_id})",
              "dropped the baseline: the next pull merges your values and the team's as a first pull does",
              f"next: {next_command('sync_pull', session.remote['name'])}"]
             if done.accepted_fork else [f"baseline := head seq {done.new_seq} ({done.head_id})"])
    return Result("sync_reset_baseline", lines, fields)


def cmd_unlock(inv: Invocation) -> Result:
    args = inv.options
    if not args.yes:
        raise errors.UnlockConfirmationRequired()
    age = duration(args.if_older_than, errors.InvalidIfOlderThan)
    config = _config(inv)
    remote = _select(inv, config, None)
    if (remote.get("type") or "fs") != "fs":
        raise errors.UnlockRequiresFsRemote()
    transport = _transport(inv, remote, lock_wait=0.0)
    holder = transport.lock_holder()
    removed_files: list[str] = []
    if holder is None:
        try:
            removed_files = transport.sweep_temp_files(float(age))
        except errors.RemoteLockPresent as exc:  # taken meanwhile
            holder = exc.fields.get("lock_owner")
    fields = {"lock_path": transport.lock_path, "held": holder is not None, "holder": holder, "removed": False,
              "removed_temp_files": removed_files, "lock_age": None,
              "reason": None if holder is not None else "lock_missing"}
    lines = [f"lock {transport.lock_path}: " + (f"held by {holder}" if holder else "free"),
             "a lock is never removed: it is released when its holder exits",
             *_names("removed in-flight files", removed_files)]
    return Result("sync_unlock", lines, fields)


def cmd_revert(inv: Invocation) -> Result:
    from ..values import check_secret_name

    args = inv.options
    name = check_secret_name(args.key)
    if not args.to_seq:
        raise errors.MissingToSeq()
    try:
        to_seq = int(args.to_seq)
    except ValueError:
        raise errors.SyncHistoryUnavailable(seq=str(args.to_seq)[:20], hint="--to-seq is a head's seq") from None
    session = Session(inv, unlock=True)
    try:
        with Progress(f"reading seq {to_seq} of {session.remote['name']}"):
            done = session.engine.revert(session.local(), name, to_seq)
    finally:
        session.close()
    remote = session.remote["name"]
    push = f"kimen sync push --remote {remote}" if done.changed else None  # nothing changed: nothing to publish
    fields = {"key": done.key, "to_seq": done.to_seq, "deleted": done.deleted, "changed": done.changed,
              "next_command": push}
    what = "removed (absent at that head)" if done.deleted else "set to its value at that head"
    return Result("sync_revert", [f"{name}: {what if done.changed else 'already so'} (seq {to_seq})",
                                  *([f"next: {push}"] if push else [])], fields)


def cmd_restore(inv: Invocation) -> Result:
    from .backup import restore_backup

    args = inv.options
    if not args.backup:
        raise errors.MissingBackup()
    path, source, snapshot = restore_backup(inv, args.backup, snapshot=not args.no_backup)
    lines = [f"restored {path} from {source}"]
    if snapshot:
        lines.append(f"backup of the replaced vault: {snapshot}")
    lines.append("the remote's ratchet is unchanged: an older vault cannot roll the team back; "
                 "`kimen sync status` shows what to run next")
    return Result("sync_restore", lines, {"vault_path": path, "source_backup_path": source,
                                          "current_backup_path": snapshot})
