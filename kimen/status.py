"""`kimen status`: one screen of where you stand — vault, session, profile here, visible profiles,
remotes — and its JSON (docs/daily.md).

Built from facts the command gathers cheaply: `stat` of the vault, the session daemon's `status`
answer (the `session status` fields), the profile lookup (`stat` only), and per remote the head it
last accepted. Never unlocks, prompts, opens SQLite, runs git or `exec:`, or reads a value. On the
hot path: stdlib only (no json: the envelope is written by `kimen.output`).
"""

from __future__ import annotations

import os
import stat

from . import paths
from .durations import format_time
from .paths import is_profile_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

VAULT_SOURCES = {"flag": "--vault", "env": "KIMEN_VAULT", "config": "config", "default": "default"}
PROFILE_SOURCES = {"flag": "--profile", "env": "KIMEN_PROFILE"}
_TTL_WORDS = {"idle_ttl": "idle TTL", "max_ttl": "max TTL"}


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def vault_section(path: str, source: str) -> dict[str, Any]:
    """`vault` of the envelope from one `stat` (`source`: flag, env, config or default).
    `problem`: why what is at `path` cannot be the vault (not a regular file) or why
    it cannot even be checked (then `exists` is false but the vault is not called missing)."""
    doc: dict[str, Any] = {"path": path, "source": source, "exists": False, "mode": None, "size_bytes": None,
                           "modified_at": None, "problem": None}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return doc
    except OSError as exc:
        doc["problem"] = f"cannot be checked ({exc.strerror})"
        return doc
    doc.update(exists=True, mode=f"{st.st_mode & 0o7777:04o}", size_bytes=st.st_size,
               modified_at=format_time(st.st_mtime))
    if not stat.S_ISREG(st.st_mode):
        from .fsutil import file_kind

        doc["problem"] = f"is not a vault file ({file_kind(st.st_mode)})"
    return doc


def session_section(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """`session` of the envelope from the `session status` fields for the selected vault (None:
    the daemon could not be asked, state `unknown`)."""
    if fields is None:
        fields = {"state": "unknown"}
    selected = fields.get("vault_path")
    mine: Mapping[str, Any] = next((v for v in fields.get("vaults") or () if v.get("vault_path") == selected), {})
    unlocked = fields.get("state") == "unlocked"
    return {
        "state": fields.get("state", "unknown"), "pid": fields.get("pid"),
        "idle_expires_at": mine.get("idle_expires_at") if unlocked else None,
        "max_expires_at": mine.get("max_expires_at") if unlocked else None,
        "expired_at": fields.get("expired_at"), "expired_by": fields.get("expired_by"),
        "require_grant": bool(fields.get("require_grant")),
        # `unavailable`: why the daemon cannot be asked or refused, and the fix
        "reason": fields.get("reason"), "message": fields.get("message"), "hint": fields.get("hint"),
    }


def profile_section(name: str | None, source: str | None, env: Mapping[str, str], cwd: str) -> dict[str, Any]:
    """`profile` of the envelope: the selected profile (`source` flag or env) looked up from `cwd`
    with `stat` only; `create` names the file to create when it is not found (else null)."""
    doc: dict[str, Any] = {"name": name, "source": source, "path": None, "found": False, "create": None}
    if name is None:
        return doc
    if is_profile_name(name):
        for directory in paths.profile_dirs(env, cwd):
            candidate = os.path.join(directory, f"{name}.kmap")
            if os.path.isfile(candidate):
                doc.update(path=candidate, found=True)
                return doc
        top = paths.work_tree_top(cwd) or os.path.abspath(cwd)
        doc["create"] = os.path.join(top, ".kimen", "profiles", f"{name}.kmap")
    return doc


def visible_profiles(env: Mapping[str, str], cwd: str) -> list[dict[str, str]]:
    """Every profile found from `cwd`, in lookup order; a name shadowed by an earlier one is left out."""
    seen: dict[str, str] = {}
    for directory in paths.profile_dirs(env, cwd):
        try:
            with os.scandir(directory) as entries:
                names = sorted(e.name[:-5] for e in entries if e.name.endswith(".kmap")
                               and is_profile_name(e.name[:-5]) and e.is_file())
        except OSError:
            continue
        for name in names:
            seen.setdefault(name, os.path.join(directory, f"{name}.kmap"))
    return [{"name": name, "path": path} for name, path in seen.items()]


def document(vault: dict[str, Any], session: dict[str, Any], profile: dict[str, Any],
             profiles: list[dict[str, str]], remotes: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `status` envelope's fields, with `next`: the commands that fix what the screen shows."""
    nxt: list[str] = []
    if vault["problem"] is None and not vault["exists"]:
        nxt.append("kimen vault init")
    elif vault["problem"] is None and int(vault["mode"], 8) & 0o077:
        nxt.append(f"chmod 600 {vault['path']}")
    if vault["exists"] and vault["problem"] is None and session["state"] in ("stopped", "locked", "expired"):
        nxt.append("kimen session start")
    if profile.get("create"):
        nxt.append(f"create {profile['create']}")
    if profile["name"] is None and profiles:
        nxt.append(f"kimen run --profile {profiles[0]['name']} -- <command> (or export KIMEN_PROFILE)")
    doc = {
        "vault": vault, "session": session,
        "profile": profile,
        "profiles": profiles,
        "remotes": [{k: r.get(k) for k in ("name", "type", "remote_id", "known_seq", "known_at")} for r in remotes],
        "next": nxt,
    }
    return doc


def _label(word: str) -> str:
    return f"{word + ':':<10}"


def lines(doc: Mapping[str, Any]) -> list[str]:
    """The human screen of `doc` (from `document`)."""
    out = [_label("vault") + _vault_line(doc["vault"]), _label("session") + _session_line(doc["session"]),
           _label("profile") + _profile_line(doc["profile"])]
    groups: dict[str, list[str]] = {}
    for item in doc["profiles"]:
        groups.setdefault(os.path.dirname(item["path"]), []).append(item["name"])
    shown = "; ".join(f"{', '.join(names)} ({directory})" for directory, names in groups.items())
    out.append(_label("profiles") + (shown or "none found"))
    for remote in doc["remotes"]:
        if remote.get("known_seq") is None:
            head = "no head accepted yet (kimen sync pull)"
        else:
            head = (f"known head seq {remote['known_seq']} at {remote.get('known_at') or '?'} "
                    "(kimen sync status for more)")
        out.append(_label("remote") + f"{remote['name']} ({remote.get('type') or '?'}) {head}")
    return out


def _vault_line(vault: Mapping[str, Any]) -> str:
    where = f"{vault['path']} ({VAULT_SOURCES.get(vault['source'], vault['source'])})"
    if not vault["exists"]:
        if vault["problem"] is not None:
            return f"{where} {vault['problem']}"
        return f"{where} missing; run kimen vault init"
    text = f"{where} {vault['mode']} {_size(vault['size_bytes'])} modified {vault['modified_at']}"
    if vault["problem"] is not None:
        text += f" {vault['problem']}"
    elif int(vault["mode"], 8) & 0o077:
        text += f" (open to other users: chmod 600 {vault['path']})"
    return text


def _session_line(session: Mapping[str, Any]) -> str:
    state = session["state"]
    grants = ", grants required" if session.get("require_grant") else ""
    if state == "unlocked":
        idle, most = session.get("idle_expires_at") or "?", session.get("max_expires_at") or "?"
        if most[:11] == idle[:11] and "T" in most:
            most = most[11:]
        return f"unlocked until {idle} (idle) / {most} (max) pid {session.get('pid')}{grants}"
    if state == "expired":
        by = _TTL_WORDS.get(session.get("expired_by") or "", session.get("expired_by") or "?")
        return f"expired at {session.get('expired_at')} ({by}); run kimen session start"
    if state == "locked":
        return f"locked (pid {session.get('pid')}){grants}; run kimen session start"
    if state == "stopped":
        return "stopped"
    if state == "unavailable":
        hint = session.get("hint")
        return f"unavailable: {session.get('message')} ({session.get('reason')})" + (f"; {hint}" if hint else "")
    return "unknown (the session daemon did not answer within 1s)"


def _profile_line(profile: Mapping[str, Any]) -> str:
    if profile["name"] is None:
        return "none (pass --profile NAME or set KIMEN_PROFILE)"
    source = PROFILE_SOURCES.get(profile.get("source") or "", profile.get("source"))
    name = f"{profile['name']} ({source})" if source else profile["name"]
    if profile["found"]:
        return f"{name} -> {profile['path']}"
    if not is_profile_name(profile["name"]):
        return f"{name} is not a valid profile name"
    return f"{name} not found; create {profile['create']}"
