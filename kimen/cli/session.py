"""`kimen session start|status|lock|stop` (SPEC §5.7).

`start` is the only command that hands a passphrase to the daemon (sources 1-3, 5, 6 of §4.1:
never the session itself). `status` always exits 0 and is on the hot path: it imports the light
client only. Grants and the audit log (`--require-grant`, `grant`, `revoke`, `grants`, `log`)
come with a later issue.
"""

from __future__ import annotations

import argparse

from .. import errors
from . import COMMANDS, Context, Result
from .parser import add_command, add_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: argparse._SubParsersAction, name: str) -> None:
    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_SESSION)

    p = add_command(group, "start", "unlock the vault in the session daemon (starts it when needed)",
                    handler=cmd_start)
    p.add_argument("--ttl", metavar="DUR", default="15m", help="idle TTL, refreshed by every use (default 15m)")
    p.add_argument("--max-ttl", metavar="DUR", default="8h", help="absolute TTL from unlock (default 8h, at most 7d)")
    p.add_argument("--stdin", action="store_true", help="alias of --passphrase-stdin")

    add_command(group, "status", "show whether a session serves the vault (always exits 0)", handler=cmd_status)

    p = add_command(group, "lock", "forget the vault's key (the daemon keeps running)", handler=cmd_lock)
    p.add_argument("--all", action="store_true", help="forget every vault's key")

    add_command(group, "stop", "forget every key and stop the daemon", handler=cmd_stop)


def _ttls(ctx: Context) -> tuple[int, int]:
    from ..daemon.session import ttl_problem
    from ..durations import parse_duration

    try:
        ttl = parse_duration(ctx.args.ttl)
        max_ttl = parse_duration(ctx.args.max_ttl)
    except ValueError as exc:
        raise errors.InvalidTtl(detail=str(exc)) from None
    problem = ttl_problem(ttl, max_ttl)
    if problem:
        raise errors.InvalidTtl(detail=problem)
    return ttl, max_ttl


def cmd_start(ctx: Context) -> Result:
    import base64
    import os

    from ..access import explicit, fallback_source, missing_passphrase_without_session, resolve_vault
    from ..daemon import client, control
    from ..durations import format_duration

    ttl, max_ttl = _ttls(ctx)
    if ctx.args.stdin:
        ctx.args.passphrase_stdin = True
    location = resolve_vault(ctx)
    if not os.path.isfile(location.path):
        raise errors.VaultNotFound(path=location.path)
    canonical = location.canonical_path
    source = explicit(ctx) or fallback_source(ctx, location)  # never the session (SPEC §4.1)
    if source is None:  # the hint leaves out the session: this command is how one starts (SPEC §5.7)
        raise missing_passphrase_without_session(" (--stdin)")
    conn, _started = control.ensure_daemon(ctx.env)
    with conn:
        for attempt in range(source.attempts):
            with source.get() as passphrase:
                encoded = base64.b64encode(passphrase.view()).decode()
            try:
                conn.call("unlock", timeout=client.UNLOCK_TIMEOUT, vault_path=canonical, passphrase_b64=encoded,
                          ttl=ttl, max_ttl=max_ttl, require_grant=False)
                break
            except errors.WrongPassphrase:
                if attempt + 1 >= source.attempts:
                    raise
                from ..output import warn

                warn("wrong passphrase, try again", reason="passphrase_retry")
            finally:
                del encoded
        state = conn.call("status")
    fields = status_fields(client_socket(ctx), state, canonical)
    return Result("session_start", f"session unlocked: {canonical} (idle {format_duration(ttl)}, "
                                   f"max {format_duration(max_ttl)}, pid {fields['pid']})", fields)


def client_socket(ctx: Context) -> str:
    from ..daemon.protocol import socket_path

    return socket_path(ctx.env)


def _selected(ctx: Context) -> str | None:
    """The selected vault's canonical path, or None when it cannot be resolved."""
    from ..access import resolve_vault

    try:
        return resolve_vault(ctx).canonical_path
    except errors.KimenError:
        return None


def status_fields(socket_path: str, state: dict[str, Any] | None, vault_path: str | None) -> dict[str, Any]:
    """The `session_status` JSON fields (SPEC §5.7) from the daemon's status response."""
    from ..daemon.client import same_version

    if state is None:
        return {"running": False, "state": "stopped", "locked": True, "pid": None, "socket_path": socket_path,
                "version": None, "protocol": None, "require_grant": False, "mlock": False,
                "vault_path": vault_path, "expires_at": None, "ttl_seconds": None, "vaults": [],
                "grant_count": 0, "version_mismatch": False}
    vaults = [v for v in state.get("vaults") or () if isinstance(v, dict)]
    mine = next((v for v in vaults if v.get("vault_path") == vault_path), None)
    return {
        "running": True, "state": "unlocked" if mine else "locked", "locked": mine is None,
        "pid": state.get("pid"), "socket_path": socket_path, "version": state.get("version"),
        "protocol": state.get("protocol"), "require_grant": bool(state.get("require_grant")),
        "mlock": bool(state.get("mlock")), "vault_path": vault_path,
        "expires_at": min(mine["idle_expires_at"], mine["max_expires_at"]) if mine else None,
        "ttl_seconds": mine.get("ttl_seconds") if mine else None,
        "vaults": [{k: v.get(k) for k in ("vault_path", "vault_id", "unlocked_at", "idle_expires_at",
                                          "max_expires_at", "ttl_seconds", "max_ttl_seconds")} for v in vaults],
        "grant_count": state.get("grant_count", 0), "version_mismatch": not same_version(state),
    }


def status_lines(fields: dict[str, Any]) -> list[str]:
    if not fields["running"]:
        return ["session: stopped"]
    pid = fields["pid"]
    lines = []
    selected = fields["vault_path"]
    mine = next((v for v in fields["vaults"] if v["vault_path"] == selected), None)
    if mine:
        lines.append(f"session: unlocked (vault={selected} idle_expires_at={mine['idle_expires_at']} "
                     f"max_expires_at={mine['max_expires_at']} pid={pid})")
    else:
        lines.append(f"session: locked (pid={pid})")
    for v in fields["vaults"]:
        if v is not mine:
            lines.append(f"also unlocked: vault={v['vault_path']} idle_expires_at={v['idle_expires_at']} "
                         f"max_expires_at={v['max_expires_at']}")
    return lines


def _mismatch_warning(fields: dict[str, Any]) -> None:
    if fields["running"] and fields["version_mismatch"]:
        from ..output import warn

        warn(f"the session daemon runs kimen {fields['version']}; run `kimen session start` to replace it",
             reason="session_other_version")


def cmd_status(ctx: Context) -> Result:
    from ..daemon import control

    try:
        socket_path, state = control.status(ctx.env)
    except errors.KimenError as err:  # status always exits 0: an unusable session dir is "stopped"
        import os

        from .. import paths
        from ..daemon.protocol import SOCKET_NAME
        from ..output import warn

        warn(err.message, reason="session_dir_unusable")
        socket_path, state = os.path.join(paths.session_dir(ctx.env), SOCKET_NAME), None
    fields = status_fields(socket_path, state, _selected(ctx))
    _mismatch_warning(fields)
    return Result("session_status", status_lines(fields), fields)


def cmd_lock(ctx: Context) -> Result:
    from ..daemon import control

    selected = _selected(ctx)
    target = None if ctx.args.all else selected
    if target is None and not ctx.args.all:
        from ..access import resolve_vault

        resolve_vault(ctx)  # raise the reason why the vault cannot be resolved
    state = control.lock(ctx.env, target)
    fields = status_fields(client_socket(ctx), state, selected)
    return Result("session_lock", "session locked", fields)


def cmd_stop(ctx: Context) -> Result:
    from ..daemon import control

    control.stop(ctx.env)
    return Result("session_stop", "session stopped", status_fields(client_socket(ctx), None, _selected(ctx)))
