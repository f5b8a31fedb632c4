"""`kimen session start|status|lock|stop` (docs/session.md).

`start` is the only command that hands a passphrase to the daemon (sources 1-3, 5, 6 of the unlock
order in docs/passphrase-and-config.md: never the session itself). `status` always exits 0 and is on
the hot path: it imports the light client only. `--require-grant` switches the daemon into grant-
required mode; the grant and log commands (`grant`, `grants`, `revoke`, `log`) are
`kimen.cli.grants`'s.
"""

from __future__ import annotations

from .. import errors
from .common import check_session_path, expiry_text
from .model import COMMANDS, Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from ..sensitive import Sensitive


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .parser import add_command, add_group

    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_SESSION)

    p = add_command(group, "start", "unlock the vault in the session daemon (starts it when needed)",
                    handler=cmd_start)
    p.add_argument("--ttl", metavar="DUR", default="15m", help="idle TTL, refreshed by every use (default 15m)")
    p.add_argument("--max-ttl", metavar="DUR", default="8h", help="absolute TTL from unlock (default 8h, at most 7d)")
    p.add_argument("--stdin", action="store_true", help="alias of --passphrase-stdin")
    p.add_argument("--require-grant", action="store_true",
                   help="refuse store requests without a grant token (until `session stop`)")

    add_command(group, "status", "show whether a session serves the vault (always exits 0)", handler=cmd_status)

    p = add_command(group, "lock", "forget the vault's key (the daemon keeps running)", handler=cmd_lock)
    p.add_argument("--all", action="store_true", help="forget every vault's key")

    add_command(group, "stop", "forget every key and stop the daemon", handler=cmd_stop)

    from .grants import register as register_grants  # grant, grants, revoke, log

    register_grants(group)


def _ttls(inv: Invocation) -> tuple[int, int]:
    from ..daemon.session import ttl_problem
    from ..durations import parse_duration

    try:
        ttl = parse_duration(inv.options.ttl)
        max_ttl = parse_duration(inv.options.max_ttl)
    except ValueError as exc:
        raise errors.InvalidTtl(detail=str(exc)) from None
    problem = ttl_problem(ttl, max_ttl)
    if problem:
        raise errors.InvalidTtl(detail=problem)
    return ttl, max_ttl


def cmd_start(inv: Invocation) -> Result:
    import base64
    import os

    from ..access import explicit, fallback_source, missing_passphrase_without_session, resolve_vault, with_attempts
    from ..daemon import client, control
    from ..durations import format_duration

    ttl, max_ttl = _ttls(inv)
    if inv.options.stdin:  # `session start --stdin` is `--passphrase-stdin`
        inv = inv.replace(passphrase_stdin=True)
    location = resolve_vault(inv)
    if not os.path.isfile(location.path):  # no daemon for a path that holds no vault: the local reason
        from ..vault import Vault

        Vault.open(location.path).close()  # always raises (missing, not a regular file, unreadable)
        raise errors.VaultNotFound(path=location.path)
    canonical = location.canonical_path
    check_session_path(canonical)
    source = explicit(inv) or fallback_source(inv, location)  # never the session: it is what this command starts
    if source is None:  # the hint leaves out the session: this command is how one starts
        raise missing_passphrase_without_session(" (--stdin)")
    conn, started = control.ensure_daemon(inv.env)
    try:
        with conn:
            def unlock(passphrase: Sensitive) -> None:
                encoded = base64.b64encode(passphrase.view()).decode()
                try:
                    conn.call("unlock", timeout=client.UNLOCK_TIMEOUT, vault_path=canonical, passphrase_b64=encoded,
                              ttl=ttl, max_ttl=max_ttl, require_grant=bool(inv.options.require_grant))
                finally:
                    del encoded

            with_attempts(source, unlock)
            state = conn.call("status")
    except (errors.KimenError, KeyboardInterrupt):
        if started:  # the daemon this command started, unless another command unlocked a vault in it
            try:
                control.stop_unused(inv.env, conn.pid)
            except errors.KimenError:
                pass
        raise
    fields = status_fields(client_socket(inv), state, canonical)
    return Result("session_start", f"session unlocked: {canonical} (idle {format_duration(ttl)}, "
                                   f"max {format_duration(max_ttl)}, pid {fields['pid']})", fields)


def client_socket(inv: Invocation) -> str:
    from ..daemon.protocol import socket_path

    return socket_path(inv.env)


def _selected(inv: Invocation) -> str | None:
    """The selected vault's canonical path, or None when it cannot be resolved."""
    from ..access import resolve_vault

    try:
        return resolve_vault(inv).canonical_path
    except errors.KimenError:
        return None


VAULT_KEYS = ("vault_path", "vault_id", "state", "unlocked_at", "idle_expires_at", "max_expires_at", "ttl_seconds",
              "max_ttl_seconds", "expired_at", "expired_by")


def status_fields(socket_path: str, state: dict[str, Any] | None, vault_path: str | None, *,
                  busy_pid: int | None = None, busy: bool = False) -> dict[str, Any]:
    """The `session_status` JSON fields (docs/session.md) from the daemon's status response: `state` is
    the selected vault's `locked`, `expired` or `unlocked`; `stopped` without a daemon; `unknown`
    (with `reason: session_busy`) when a daemon holds the socket but did not answer in time."""
    from ..daemon.client import same_version

    fields: dict[str, Any] = {
        "running": False, "state": "stopped", "locked": True, "pid": None, "socket_path": socket_path,
        "version": None, "protocol": None, "require_grant": False, "mlock": False, "vault_path": vault_path,
        "expires_at": None, "expired_at": None, "expired_by": None, "ttl_seconds": None, "vaults": [],
        "grant_count": 0, "version_mismatch": False,
    }
    if busy:  # it may hold keys: never "stopped"
        fields.update(running=True, state="unknown", locked=None, pid=busy_pid, reason="session_busy")
    if state is None:
        return fields
    vaults: list[dict[str, Any]] = [{k: v.get(k) for k in VAULT_KEYS} | {"state": v.get("state") or "unlocked"}
              for v in state.get("vaults") or () if isinstance(v, dict)]
    mine = next((v for v in vaults if v["vault_path"] == vault_path), None)
    selected = mine["state"] if mine else "locked"
    fields.update(
        running=True, state=selected, locked=selected != "unlocked", pid=state.get("pid"),
        version=state.get("version"), protocol=state.get("protocol"),
        require_grant=bool(state.get("require_grant")), mlock=bool(state.get("mlock")), vaults=vaults,
        grant_count=state.get("grant_count", 0), version_mismatch=not same_version(state),
    )
    if mine is None:
        return fields
    if selected == "unlocked":
        fields.update(expires_at=min(mine["idle_expires_at"], mine["max_expires_at"]), ttl_seconds=mine["ttl_seconds"])
    elif selected == "expired":
        fields.update(expired_at=mine["expired_at"], expired_by=mine["expired_by"], ttl_seconds=mine["ttl_seconds"])
    return fields


def status_lines(fields: dict[str, Any]) -> list[str]:
    if fields["state"] == "unknown" and fields.get("reason") == "audit_unavailable":
        return ["session: unknown (the daemon refuses every request: its audit log cannot be written)"]
    if fields["state"] == "unknown":
        return [f"session: unknown (busy: the daemon did not answer within 1s; pid={fields['pid'] or '-'})"]
    if not fields["running"]:
        return ["session: stopped"]
    mine = next((v for v in fields["vaults"] if v["vault_path"] == fields["vault_path"]), None)
    if mine is None:
        first = f"session: locked (pid={fields['pid']})"
    elif mine["state"] == "expired":
        first = f"session: expired (vault={mine['vault_path']} at {expiry_text(mine)})"
    else:
        first = (f"session: unlocked (vault={mine['vault_path']} idle_expires_at={mine['idle_expires_at']} "
                 f"max_expires_at={mine['max_expires_at']} pid={fields['pid']})")
    return [first, *_other_vaults(fields, mine, "also")]


def _other_vaults(fields: dict[str, Any], mine: dict[str, Any] | None, word: str,
                  states: tuple[str, ...] = ("unlocked", "expired")) -> list[str]:
    """One line per other vault in one of `states`."""
    return [f"{word} unlocked: vault={v['vault_path']} idle_expires_at={v['idle_expires_at']} "
            f"max_expires_at={v['max_expires_at']}" if v["state"] == "unlocked"
            else f"{word} expired: vault={v['vault_path']} at {expiry_text(v)}"
            for v in fields["vaults"] if v is not mine and v["state"] in states]


def _mismatch_warning(fields: dict[str, Any]) -> None:
    if fields["running"] and fields["version_mismatch"]:
        from ..output import warn

        warn(f"the session daemon runs kimen {fields['version']}; run `kimen session start` to replace it",
             reason="session_other_version")


def cmd_status(inv: Invocation) -> Result:
    from ..daemon import client

    selected = _selected(inv)
    try:
        socket_path, found = client.status(inv.env, selected)
    except errors.KimenError as err:  # status always exits 0: an unusable session dir is "stopped"
        import os

        from .. import paths
        from ..daemon.protocol import SOCKET_NAME
        from ..output import warn

        socket_path = os.path.join(paths.session_dir(inv.env), SOCKET_NAME)
        fields = status_fields(socket_path, None, selected)
        if err.reason == "audit_unavailable":  # a daemon answered, refusing everything: it runs
            warn(f"{err.message}; {err.hint_text}" if err.hint_text else err.message, reason="session_refused")
            fields.update(running=True, state="unknown", locked=None, reason=err.reason)
        else:
            warn(err.message, reason="session_dir_unusable")
    else:
        fields = status_fields(socket_path, found.status, selected, busy=found.state == "busy", busy_pid=found.pid)
    _mismatch_warning(fields)
    return Result("session_status", status_lines(fields), fields)


def cmd_lock(inv: Invocation) -> Result:
    """`held` (JSON): whether the daemon held the selected vault (any vault with `--all`) before
    this lock; null without a daemon. A vault the daemon does not hold is said so, and every
    vault that stays unlocked is named."""
    from ..daemon import client, control
    from ..daemon.protocol import utf8

    selected = _selected(inv)
    target = None if inv.options.all else selected
    if target is None and not inv.options.all:
        from ..access import resolve_vault

        resolve_vault(inv)  # raise the reason why the vault cannot be resolved
    if target is not None and not utf8(target):  # never held: a session only holds UTF-8 paths
        _, found = client.status(inv.env, None)
        state = None if found.status is None else {**found.status, "held": False}
    else:
        state = control.lock(inv.env, target)
    fields = status_fields(client_socket(inv), state, selected)
    held = state.get("held") if state is not None else None
    fields["held"] = held if isinstance(held, bool) else None
    if state is None or held is True:
        lines = ["session locked"]
    elif inv.options.all:
        lines = ["session locked (no vault was unlocked)"]
    else:
        lines = [f"session: nothing locked: {selected} is not unlocked in the session"]
    lines.extend(_other_vaults(fields, None, "still", ("unlocked",)))
    return Result("session_lock", lines, fields)


def cmd_stop(inv: Invocation) -> Result:
    from ..daemon import control

    forced = control.stop(inv.env)
    if forced:
        from ..output import warn

        signal = "SIGTERM" if forced == "terminated" else "SIGKILL"
        warn(f"the session daemon did not answer `stop`: it was {forced} ({signal})", reason="session_stop_forced")
    return Result("session_stop", "session stopped", status_fields(client_socket(inv), None, _selected(inv)))
