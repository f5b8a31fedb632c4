"""`kimen session grant|grants|revoke|log`: grants for agents and the audit log (docs/agents.md).

`grant` needs the vault passphrase from an explicit source (`KIMEN_PASSPHRASE`, `--passphrase-cmd`,
`--passphrase-stdin`) or the prompt — never the session, never the configured unlock method (any
process of the user can run that) — and a daemon in which the vault is already unlocked: it never
starts or unlocks one. A profile (`--profile`, `--map`) is resolved now to the exact secret names
it references, includes followed, so later edits cannot widen the grant. The token is printed once
(alone on stdout; details on stderr), or given to one command's environment only (`-- CMD`), whose
exit revokes the grant. `log` reads the audit files without the daemon.
"""

from __future__ import annotations

from .. import errors
from .model import Invocation, Result, takes_child_argv

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..sensitive import Sensitive

DEFAULT_GRANT_TTL = "10m"


def register(group: argparse._SubParsersAction) -> None:
    """The grant and log commands, under `kimen session`."""
    from .parser import add_command

    p = add_command(group, "grant", "mint a least-privilege token for an agent (needs the passphrase)",
                    handler=cmd_grant)
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--profile", metavar="P", help="the secret names profile P references (includes followed)")
    scope.add_argument("--map", metavar="PATH", help="the secret names the .kmap file at PATH references")
    scope.add_argument("--secret", metavar="GLOB", action="append",
                       help="a name or glob (`*` one segment, `**` across dots); repeatable")
    p.add_argument("--ttl", metavar="DUR", default=DEFAULT_GRANT_TTL,
                   help="lifetime (default 10m; never past the session's max TTL)")
    p.add_argument("--read-only", action="store_true", help="refuse writes with this token")
    p.add_argument("--export", action="store_true", help="print `export KIMEN_SESSION_TOKEN='…'` for eval")

    add_command(group, "grants", "list the session's grants (never their tokens)", handler=cmd_grants)

    p = add_command(group, "revoke", "revoke a grant: its token stops working at once", handler=cmd_revoke)
    p.add_argument("grant_id", metavar="ID", help="the grant id (from `kimen session grants`)")

    p = add_command(group, "log", "show the audit log of session requests (no daemon needed)", handler=cmd_log)
    p.add_argument("--follow", action="store_true", help="keep printing new records until interrupted")
    p.add_argument("--since", metavar="DUR|TIME", help="records from DUR ago (15m) or an RFC 3339 time on")
    p.add_argument("--limit", metavar="N", type=int, help="only the newest N records that pass")
    p.add_argument("--grant", metavar="ID", help="only the records of grant ID")
    p.add_argument("--name", metavar="GLOB", help="only records naming a name GLOB matches")


# -- session grant --


def _scope(inv: Invocation) -> list[str]:
    args = inv.options
    if args.secret:
        from ..globs import can_match_a_name

        for entry in args.secret:
            if not can_match_a_name(entry):  # a scope entry that no name matches grants nothing
                raise errors.InvalidSecretName(
                    name=entry, hint="--secret takes a secret name or a glob of names (`prod.db.password`, "
                                     "`prod.*`, `prod.**`); see docs/profiles.md, Globs")
        return list(dict.fromkeys(args.secret))
    if args.profile is None and args.map is None:
        raise errors.UsageError(detail="give the scope: --profile P, --map PATH or --secret GLOB")
    from ..projection.resolve import secret_names
    from .pipeline import load_profile

    profile = load_profile(inv, profile=args.profile, map_path=args.map, inline=[])
    names = secret_names(profile.directives)
    if not names:
        raise errors.GrantScopeEmpty()
    return names


def _ttl(text: str) -> int:
    from ..durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise errors.InvalidTtl(detail=str(exc)) from None
    if seconds <= 0:
        raise errors.InvalidTtl(detail="the grant TTL must be greater than zero")
    return seconds


def _ready_session(inv: Invocation, canonical: str) -> None:
    """The vault must be unlocked in a running daemon: checked before any passphrase is asked."""
    from ..daemon import client

    found = client.probe(inv.env, canonical, strict=True, keep=False)
    if found.state in ("stopped", "busy"):
        raise errors.SessionUnavailable(message="no session daemon serves this vault",
                                        hint="unlock it first: `kimen session start`")
    if found.state != "unlocked":
        raise found.refusal(canonical)


def _covered(inv: Invocation, location: Any, scope: list[str]) -> int:
    """How many of the vault's names the scope covers now (for the details line)."""
    from ..access import open_metadata
    from ..globs import Glob

    globs = [Glob(text) for text in scope]
    try:
        with open_metadata(inv, location) as vault:
            names = vault.list_names()
    except errors.KimenError:
        return 0
    return sum(any(g.match(name) for g in globs) for name in names)


def _mint(inv: Invocation, canonical: str, source: Any, scope: list[str], ttl: int) -> dict[str, Any]:
    import base64

    from ..access import with_attempts
    from ..daemon import control

    def mint(passphrase: Sensitive) -> dict[str, Any]:
        encoded = base64.b64encode(passphrase.view()).decode()
        try:
            return control.grant(inv.env, canonical, encoded, scope, read_only=bool(inv.options.read_only), ttl=ttl)
        finally:
            del encoded

    return with_attempts(source, mint)


@takes_child_argv
def cmd_grant(inv: Invocation) -> Result | int:
    from ..access import explicit, resolve_vault
    from ..passphrase import prompt_source
    from .common import check_session_path

    args = inv.options
    command = inv.child_argv
    if args.export and (inv.json or command is not None):
        raise errors.UsageError(detail="--export cannot be combined with --json or -- CMD")
    if command is not None and not command:
        raise errors.MissingCommand(command="session grant")
    ttl = _ttl(args.ttl)
    location = resolve_vault(inv)
    canonical = location.canonical_path
    check_session_path(canonical)
    scope = _scope(inv)
    _ready_session(inv, canonical)
    source = explicit(inv) or prompt_source(location.path)  # never the session or the configured method
    if source is None:
        raise errors.MissingPassphrase(
            hint="minting a grant needs the vault passphrase: KIMEN_PASSPHRASE, --passphrase-cmd, "
                 "--passphrase-stdin or a terminal to prompt on (a session or the configured unlock "
                 "method never mint a grant)")
    minted = _mint(inv, canonical, source, scope, ttl)
    token, grant_id = minted["token"], minted["grant_id"]
    access = "read-only" if minted.get("read_only") else "read-write"
    details = (f"grant {grant_id}: {_covered(inv, location, scope)} names, {access}, "
               f"expires {minted.get('expires_at')}")
    if command is not None:
        return _run_with_token(inv, command, token, grant_id, details)
    if inv.json:
        fields = {"grant_id": grant_id, "token": token, "env": {"KIMEN_SESSION_TOKEN": token},
                  "vault_path": canonical, "secrets": minted.get("secrets", scope),
                  "read_only": bool(minted.get("read_only")), "expires_at": minted.get("expires_at")}
        return Result("session_grant", None, fields)
    from ..output import flush_warnings, print_lines, write_err

    flush_warnings()
    write_err(details + "\n")
    print_lines(f"export KIMEN_SESSION_TOKEN='{token}'" if args.export else token)
    return 0


def _run_with_token(inv: Invocation, command: list[str], token: str, grant_id: str, details: str) -> int:
    """CMD with the token in its environment only; supervised, and the grant revoked when it exits."""
    from ..daemon import control, tokens
    from ..output import flush_warnings, warn, write_err
    from ..projection import env as penv
    from ..projection import run as prun

    prun.block_signals()
    try:
        environ: dict[str, str | bytes] = {**penv.base_environ(inv.env, False), tokens.ENV: token}
        exe = penv.find_command(command[0], environ)
        stop = prun.pending_stop()
        if stop is not None:
            return 128 + stop
        if not inv.json:
            write_err(details + "\n")
        flush_warnings()
        own_group = prun.own_group_wanted()
        pid = prun.spawn(exe, command, environ, None, own_group=own_group)
        return prun.supervise(pid, own_group=own_group)
    finally:
        try:
            control.revoke(inv.env, grant_id)
        except errors.KimenError:
            warn(f"could not revoke grant {grant_id} (it ends at its expiry or with the daemon)",
                 reason="grant_revoke_failed")
            flush_warnings()


# -- session grants / revoke --


def cmd_grants(inv: Invocation) -> Result:
    from ..daemon import control

    found = control.grants(inv.env)
    keys = ("grant_id", "vault_path", "secrets", "read_only", "created_at", "expires_at", "last_used_at",
            "use_count")
    shown = [{k: g.get(k) for k in keys} for g in found]
    lines = [f"{g['grant_id']}  vault={g['vault_path']}  scope={','.join(g['secrets'] or [])}  "
             f"{'read-only' if g['read_only'] else 'read-write'}  created={g['created_at']}  "
             f"expires={g['expires_at']}  last_used={g['last_used_at'] or '-'}  uses={g['use_count']}"
             for g in shown]
    return Result("session_grants", lines or ["no grants"], {"grants": shown})


def cmd_revoke(inv: Invocation) -> Result:
    from ..daemon import control

    grant_id = control.revoke(inv.env, inv.options.grant_id)
    return Result("session_revoke", f"grant {grant_id} revoked", {"grant_id": grant_id})


# -- session log --


def cmd_log(inv: Invocation) -> int:
    from .. import paths
    from ..daemon.audit_reader import LogReader, Selection, human_lines, parse_since
    from ..output import dumps, print_lines

    args = inv.options
    if args.limit is not None and args.limit < 0:
        raise errors.UsageError(detail="--limit must be 0 or more")
    limit = None if args.limit is not None and args.limit > 1 << 32 else args.limit  # more than any log holds: all
    since = parse_since(args.since) if args.since is not None else None
    reader = LogReader(paths.audit_log(inv.env), Selection(since=since, grant=args.grant, name=args.name))

    def show(records: list[dict[str, Any]]) -> None:
        if not records:
            return
        print_lines([dumps(r) for r in records] if inv.json else human_lines(records))

    if limit == 0:
        return 0
    if not args.follow:
        show(reader.scan(limit))
        if reader.skipped:
            from ..output import warn

            warn(f"{reader.skipped} line{'s' if reader.skipped != 1 else ''} of the audit log "
                 f"{'are' if reader.skipped != 1 else 'is'} not a record: skipped", reason="audit_lines_skipped")
        return 0
    try:
        for record in reader.follow(limit):
            show([record])
    except KeyboardInterrupt:
        return 0
    return 0

