"""`kimen map lint` (docs/profiles.md) and `kimen doctor`: reports, not envelopes.

Both print their report on stdout whether they pass or fail and return the exit code (20 / 27);
nothing goes to stderr (warnings that lower layers would print are captured and folded into the
report). Neither prints a value, runs `exec:`, or prompts; doctor unlocks only when a
non-interactive source or a session can do it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import errors
from ..output import capture_warnings, print_json, print_lines, success_envelope
from ..projection import kmap
from ..projection.lint import lint_issues
from .common import expiry_text
from .model import COMMANDS, Invocation

if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .flags import IDENTITY, TRUST
    from .parser import add_command, add_flags, add_group, add_mode_flag, argparse

    if name == "map":
        group = add_group(sub, "map", COMMANDS[name][1], area=errors.AREA_MAP_LINT)
        p = add_command(group, "lint", "check a profile (no vault, no exec:)", handler=cmd_map_lint,
                        area=errors.AREA_MAP_LINT)
        p.add_argument("--profile", metavar="NAME")
        p.add_argument("--map", metavar="PATH")
        add_mode_flag(p, "also report the warnings of this mode: run, render or envfile")
        p.add_argument("--strict", action="store_true", help="warnings fail too")
    elif name == "doctor":
        p = add_command(sub, "doctor", COMMANDS[name][1], handler=cmd_doctor, area=errors.AREA_DOCTOR)
        p.add_argument("--profile", metavar="NAME", help="also check profile NAME and its secrets")
        p.add_argument("--map", metavar="PATH", help="also check the profile file PATH and its secrets")
        add_mode_flag(p, "lint the profile for this mode too: run, render or envfile")
        p.add_argument("--strict", action="store_true", help="warnings fail too")
        p.add_argument("--allow-missing-vault", action="store_true", help="a missing vault is not an error")
        p.add_argument("--example", metavar="FILE",
                       help="also list the keys of a dotenv example file (.env.example) the profile does not map")
        p.add_argument("--bundle", metavar="FILE", action="append", default=[],
                       help="check this bundle instead of the vault; repeatable (each one is checked)")
        p.add_argument("--bundle-in", dest="bundle", metavar="FILE", action="append", help=argparse.SUPPRESS)
        add_flags(p, IDENTITY)
        add_flags(p, TRUST)


# ---------------------------------------------------------------------------------------------
# map lint
# ---------------------------------------------------------------------------------------------


def lint_mode(inv: Invocation) -> str | None:
    """`--mode` of map lint and doctor: which mode's own warnings to report (None: no mode's)."""
    from .parser import check_mode

    mode = getattr(inv.options, "mode", None)
    return None if mode is None else check_mode(mode)


def lint_report(
    inv: Invocation, map_path: str | None, profile_name: str | None
) -> tuple[dict[str, Any], kmap.Profile | None]:
    """The lint report document and the composed profile (None when it could not be loaded)."""
    mode = lint_mode(inv)
    issues: list[kmap.Issue] = []
    profile = None
    if map_path is None and profile_name is None:
        issues.append(kmap.Issue("invalid_input", "error", "give --profile NAME or --map PATH", None, None))
    elif map_path is not None and profile_name is not None:
        issues.append(kmap.Issue("invalid_input", "error", "use either --map or --profile, not both", None, None))
    else:
        try:
            profile = kmap.load(map_path=map_path, profile=profile_name, env=inv.env)
        except errors.KimenError as exc:
            code = "invalid_map" if exc.reason == "invalid_map" else "invalid_input"
            issues.append(kmap.Issue(code, "error", exc.message, exc.fields.get("path"), None))
    if profile is not None:
        issues = lint_issues(profile, mode)
    winners = profile.winners() if profile is not None else []
    n_err = sum(1 for i in issues if i.severity == "error")
    n_warn = len(issues) - n_err
    strict = bool(getattr(inv.options, "strict", False))
    failed = n_err > 0 or (strict and n_warn > 0)
    doc = {
        "ok": not failed,
        "exit_code": errors.AREA_MAP_LINT if failed else 0,
        "path": profile.source if profile is not None else None,
        "profile_path": profile.source if profile is not None else None,
        "mode": mode,
        "env_count": sum(1 for d in winners if d.kind == "env"),
        "file_count": sum(1 for d in winners if d.kind == "file"),
        "envpath_count": sum(1 for d in winners if d.kind == "envpath"),
        "stdin": any(d.kind == "stdin" for d in winners),
        "include_count": profile.include_count if profile is not None else 0,
        "error_count": n_err,
        "warning_count": n_warn,
        "issues": [i.as_json() for i in issues],
    }
    return doc, profile


def _issue_line(issue: dict[str, Any]) -> str:
    where = issue["path"] or ""
    if where and issue["line"] is not None:
        where = f"{where}:{issue['line']}"
    return f"- [{issue['severity']}] {issue['code']} {where + ': ' if where else ''}{issue['message']}"


def cmd_map_lint(inv: Invocation) -> int:
    doc, _ = lint_report(inv, inv.options.map, inv.options.profile)
    if inv.json:
        print_json(success_envelope("map_lint", doc))
    else:
        shown = doc["path"] or "(none)"
        lines = [f"map ok: {shown}"] if not doc["issues"] else [f"map: {shown}"]
        lines.extend(_issue_line(i) for i in doc["issues"])
        print_lines(lines)
    return doc["exit_code"]


# ---------------------------------------------------------------------------------------------
# doctor
# ---------------------------------------------------------------------------------------------


class _Checks:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, name: str, status: str, message: str) -> None:
        self.items.append({"name": name, "status": status, "message": message})

    def count(self, status: str) -> int:
        return sum(1 for c in self.items if c["status"] == status)


def session_check(inv: Invocation, vault_path: str | None) -> tuple[str, str, str]:
    """(status, message, state) about the session for the selected vault (`cli.session.doctor_check`)."""

    return doctor_check(inv, vault_path)


def _runtime_check(inv: Invocation, checks: _Checks) -> None:
    from .. import fsutil, paths

    base = paths.runtime_base(inv.env)
    problem = fsutil.directory_problem(base, strict=True) if os.path.lexists(base) else None
    if problem:
        checks.add("runtime_dir", "error", f"runtime base {base} is unsafe: {problem}")
    elif inv.env.get("XDG_RUNTIME_DIR") and base.startswith(os.path.join(inv.env["XDG_RUNTIME_DIR"], "")):
        checks.add("runtime_dir", "ok", f"projected files go under {base}")
    elif base.startswith("/dev/shm/"):  # noqa: S108 - comparing, not creating
        checks.add("runtime_dir", "ok" if not inv.env.get("XDG_RUNTIME_DIR") else "warning",
                   f"projected files go under {base} (tmpfs)"
                   + ("; XDG_RUNTIME_DIR is not usable (not owned by you or too open)"
                      if inv.env.get("XDG_RUNTIME_DIR") else ""))
    else:
        checks.add("runtime_dir", "warning", f"projected files go under {base}, which may be on disk; "
                   "set XDG_RUNTIME_DIR to a private tmpfs directory")


def _guard(checks: _Checks, name: str, fn: Callable[[], Any]) -> Any:
    """Run one check step; a KimenError becomes an error entry instead of ending the report."""
    try:
        return fn()
    except errors.KimenError as exc:
        checks.add(name, "error", exc.message)
        return None


def _vault_checks(inv: Invocation, checks: _Checks) -> Any:
    """vault_* and passphrase_source; returns the open metadata vault (or None)."""
    from .. import access

    location = _guard(checks, "vault_path", lambda: access.resolve_vault(inv))
    if location is None:
        return None
    source = _guard(checks, "passphrase_source", lambda: access.noninteractive_source_name(inv))
    if not any(c["name"] == "passphrase_source" for c in checks.items):
        _passphrase_check(inv, checks, source)
    if not os.path.exists(location.path):
        if inv.options.allow_missing_vault:
            checks.add("vault_path", "ok", f"no vault at {location.path} (allowed)")
        else:
            checks.add("vault_path", "error", f"vault not found: {location.path}")
        for name in ("vault_file", "vault_metadata", "vault_kdf", "vault_permissions", "vault_integrity"):
            checks.add(name, "skipped", "no vault")
        return None
    checks.add("vault_path", "ok", f"{location.path} ({location.source})")
    vault = _guard(checks, "vault_file", lambda: access.open_metadata(inv, location))
    if vault is None:
        for name in ("vault_metadata", "vault_kdf", "vault_integrity"):
            checks.add(name, "skipped", "vault file unusable")
        _permissions(checks, location.path)
        return None
    checks.add("vault_file", "ok", "kimen vault")
    meta = _guard(checks, "vault_metadata", vault.meta)
    if meta is not None:
        from ..vault import kdf_problem

        problem = kdf_problem(meta.kdf)
        if problem:
            checks.add("vault_metadata", "error", f"KDF parameters rejected: {problem}")
        else:
            checks.add("vault_metadata", "ok",
                       f"schema {meta.schema_version}, {meta.secret_count} secrets, generation {meta.generation}")
        k = meta.kdf
        params = f"m={k.memory_kib // 1024}MiB t={k.time} p={k.parallelism}"
        if k.memory_kib < 19 * 1024 or (k.memory_kib < 46 * 1024 and k.time < 2):
            checks.add("vault_kdf", "warning", f"{params} is below the OWASP minimum (19 MiB, t=2); "
                       "rekey with the defaults")
        elif k.memory_kib < 65536 or k.time < 3 or k.parallelism < 4:
            checks.add("vault_kdf", "warning", f"{params} is below the defaults (64 MiB, t=3, p=4)")
        else:
            checks.add("vault_kdf", "ok", params)
    _permissions(checks, location.path)
    if source is None:
        checks.add("vault_integrity", "skipped", "the vault cannot be unlocked without a prompt")
    else:
        def verify() -> bool:
            store = access.open_store(inv, prompt=False)
            try:
                store.verify()
            finally:
                store.close()
            return True

        if _guard(checks, "vault_integrity", verify):
            checks.add("vault_integrity", "ok", f"integrity check passed (unlocked via {source})")
    return vault


_BUNDLE_CHECKS = ("spec", "in", "identity", "decrypt", "signer")


def _bundle_checks(inv: Invocation, checks: _Checks) -> list[tuple[str, Any]]:
    """bundle_spec, bundle_in, bundle_identity, bundle_decrypt, bundle_signer for every `--bundle`
    (docs/errors.md); with several bundles the names are `bundle_<k>_spec` ... (k = 1, 2, ... in argv
    order). Returns (label, store) for each usable bundle: the stores answer `names` for
    mapping_secrets. The identity and the trusted signers are read once (stdin can be read once)."""
    from ..paths import absolute
    from .bundle_opts import load_identity

    paths = [absolute(b) for b in inv.options.bundle]
    several = len(paths) > 1

    def name(k: int, check: str) -> str:
        return f"bundle_{k}_{check}" if several else f"bundle_{check}"

    if inv.vault_flag is not None:  # `--vault ""` was given too: never silently dropped
        for k in range(1, len(paths) + 1):
            checks.add(name(k, "spec"), "error", "use either --bundle or --vault, not both")
            for check in _BUNDLE_CHECKS[1:]:
                checks.add(name(k, check), "skipped", "bundle source unusable")
        return []
    identity: list[Any] = []  # [identity] once loaded, [None, message] when it failed
    stores = []
    for k, path in enumerate(paths, 1):
        if not identity:
            try:
                with capture_warnings() as said:  # "several identities are set" -> the check's note
                    identity[:] = [load_identity(inv), _warnings(said)]
            except errors.KimenError as exc:
                identity[:] = [None, exc.message]
        label = f"bundle {k} ({path})" if several else "bundle"
        store = _one_bundle(inv, checks, path, functools.partial(name, k), identity)
        if store is not None:
            stores.append((label, store))
    return stores


def _warnings(said: list[dict[str, str]]) -> str:
    """The messages of captured warnings, joined."""
    return "; ".join(w["message"] for w in said)


def _one_bundle(inv: Invocation, checks: _Checks, path: str, name: Callable[[str], str], identity: list[Any]) -> Any:
    from .bundle_opts import read_bundle_file, trusted_signers

    checks.add(name("spec"), "ok", path)
    data = _guard(checks, name("in"), lambda: read_bundle_file(path))
    if data is None:
        for check in _BUNDLE_CHECKS[2:]:
            checks.add(name(check), "skipped", "bundle unreadable")
        return None
    checks.add(name("in"), "ok", f"{len(data)} bytes")
    key = identity[0]
    if key is None:
        checks.add(name("identity"), "error", identity[1])
        for check in _BUNDLE_CHECKS[3:]:
            checks.add(name(check), "skipped", "no identity")
        return None
    note = identity[1]
    checks.add(name("identity"), "warning" if note else "ok", f"{key.kind} identity" + (f"; {note}" if note else ""))
    from ..bundle import age, document

    doc = _guard(checks, name("decrypt"), lambda: document.parse(age.decrypt(data, [key])))
    if doc is None:
        checks.add(name("signer"), "skipped", "bundle not decrypted")
        return None
    checks.add(name("decrypt"), "ok", f"{len(doc.secrets)} secrets, generation {doc.generation}")

    def trust() -> bool:
        from .bundle_opts import max_age_seconds

        document.check_trust(doc, trusted_signers(inv, key), allow_unsigned=bool(inv.options.allow_unsigned))
        document.check_max_age(doc, max_age_seconds(inv))
        return True

    if not _guard(checks, name("signer"), trust):
        return None
    checks.add(name("signer"), "ok" if doc.signer else "warning",
               f"trusted signer {doc.signer}" if doc.signer else "unsigned (allowed by --allow-unsigned)")
    from ..bundle.store import BundleStore

    return BundleStore(path, doc)


def _passphrase_check(inv: Invocation, checks: _Checks, source: str | None) -> None:
    from ..access import load_config
    from ..passphrase import terminal_available

    explicit = [n for n, on in (("KIMEN_PASSPHRASE", bool(inv.env.get("KIMEN_PASSPHRASE"))),
                                ("--passphrase-cmd", bool(inv.passphrase_cmd)),
                                ("--passphrase-stdin", inv.passphrase_stdin)) if on]
    try:
        method = (load_config(inv).unlock() or {}).get("method")
    except errors.KimenError as exc:  # a hand-broken `unlock` section: an entry, not the end of the report
        checks.add("passphrase_source", "error", exc.message)
        return
    if len(explicit) > 1:
        checks.add("passphrase_source", "warning", f"several explicit sources are set: {', '.join(explicit)}; "
                   f"{explicit[0]} wins")
    elif method == "stdin":
        checks.add("passphrase_source", "warning", "unlock.method=stdin collides with other stdin inputs")
    elif source is not None:
        checks.add("passphrase_source", "ok", f"non-interactive source: {source}")
    elif terminal_available():
        checks.add("passphrase_source", "warning", "only the terminal prompt is available")
    else:
        checks.add("passphrase_source", "error", "no non-interactive passphrase source and no terminal")


def _permissions(checks: _Checks, path: str) -> None:
    loose = []
    for item in (path, f"{path}-wal", f"{path}-shm", os.path.dirname(path)):
        try:
            st = os.stat(item)
        except OSError:
            continue
        if st.st_mode & 0o077:
            loose.append(f"{item} ({stat.S_IMODE(st.st_mode):04o})")
    if loose:
        checks.add("vault_permissions", "warning", "group/other permissions on " + ", ".join(loose))
    else:
        checks.add("vault_permissions", "ok", "private")


def _mapping_checks(inv: Invocation, checks: _Checks, stores: list[tuple[str, Any]]) -> str | None:
    """The profile checks; mapping_secrets looks the names up in every store (label, store).
    Returns the profile file used (absolute), or None."""
    args = inv.options
    if args.map is None and args.profile is None:
        for name in ("mapping_spec", "mapping_profile", "mapping_parse", "mapping_lint", "mapping_secrets"):
            checks.add(name, "skipped", "no --profile or --map given")
        return None
    checks.add("mapping_spec", "ok", f"profile {args.profile}" if args.profile else f"map {args.map}")
    doc, profile = lint_report(inv, args.map, args.profile)
    if profile is None:
        message = doc["issues"][0]["message"] if doc["issues"] else "cannot load"
        checks.add("mapping_profile", "error", message)
        for name in ("mapping_parse", "mapping_lint", "mapping_secrets"):
            checks.add(name, "skipped", "profile not loaded")
        return None
    checks.add("mapping_profile", "ok", f"using {profile.source}")
    parse_errors = [i for i in doc["issues"] if i["code"] == "invalid_map"]
    checks.add("mapping_parse", "error" if parse_errors else "ok",
               f"{len(parse_errors)} syntax errors" if parse_errors else "parsed")
    codes = sorted({i["code"] for i in doc["issues"]})
    summary = f"errors={doc['error_count']} warnings={doc['warning_count']}"
    summary += f" ({', '.join(codes)})" if codes else ""
    checks.add("mapping_lint", "error" if doc["error_count"] else "warning" if doc["warning_count"] else "ok", summary)
    from ..projection.resolve import secret_names

    names = secret_names(profile.winners())
    if not names:
        checks.add("mapping_secrets", "ok", "the profile references no secrets")
    elif not stores:
        store = "usable bundle" if getattr(args, "bundle", None) else "vault"
        checks.add("mapping_secrets", "skipped", f"no {store} to check names against")
    else:
        problems = []
        for label, store in stores:
            found = _guard(checks, "mapping_secrets", functools.partial(store.names, names))
            if found is None:
                return profile.source
            missing = [n for n in names if n not in found]
            if missing:
                problems.append(f"missing from the {label}: " + ", ".join(missing))
        if problems:
            checks.add("mapping_secrets", "error", "; ".join(problems))
        else:
            where = "are in every bundle" if len(stores) > 1 else "exist"
            checks.add("mapping_secrets", "ok", f"all {len(names)} referenced secrets {where}")
    return profile.source


# -- doctor --example: keys of a dotenv example file that the profile does not map --

MAX_EXAMPLE_BYTES = 16 * 1024 * 1024


def _example_check(inv: Invocation, checks: _Checks, profile_path: str | None) -> None:
    """`example_keys`: the keys of `--example FILE` (values ignored) that no env directive of the
    profile sets; names only, warning level."""
    from ..dotenv import parse
    from ..fsutil import read_regular
    from ..paths import absolute
    from ..projection import kmap

    if profile_path is None:
        checks.add("example_keys", "skipped", "no profile loaded (give --profile or --map)")
        return
    path = absolute(inv.options.example)

    def unreadable(problem: str) -> errors.KimenError:
        return errors.ValueSourceFailed(detail=f"cannot read {path}: {problem}")

    def keys() -> list[str]:
        data = read_regular(path, MAX_EXAMPLE_BYTES, unreadable)
        return list(dict.fromkeys(entry.key for entry in parse(data)))

    wanted = _guard(checks, "example_keys", keys)
    if wanted is None:
        return
    profile = kmap.load(map_path=profile_path, env=inv.env)
    mapped = {d.target for d in profile.winners() if d.kind in ("env", "envpath")}
    missing = [k for k in wanted if k not in mapped]
    if missing:
        checks.add("example_keys", "warning", f"{len(missing)} of {len(wanted)} keys of {path} are not mapped by "
                                              f"the profile: {', '.join(missing)}")
        checks.items[-1]["keys"] = missing  # type: ignore[assignment]  # the one list field of a check
    else:
        checks.add("example_keys", "ok", f"the profile maps all {len(wanted)} keys of {path}")


def cmd_doctor(inv: Invocation) -> int:
    code, fields, lines = doctor_report(inv)
    if inv.json:
        print_json(success_envelope("doctor", fields))
    else:
        print_lines(lines)
    return code


def doctor_report(inv: Invocation) -> tuple[int, dict[str, Any], list[str]]:
    """Run doctor's checks: (exit code, the JSON fields, the human lines); prints nothing (the
    `doctor` step of `kimen sync preflight` reads it too)."""
    from .. import access, paths

    args = inv.options
    lint_mode(inv)  # an unknown --mode fails before any check runs
    checks = _Checks()
    profile_path = None
    if args.map is not None and args.profile is not None:
        checks.add("mapping_input", "error", "use either --map or --profile, not both")
    else:
        checks.add("mapping_input", "ok", "one source" if (args.map or args.profile) else "no profile given")
    checks.add("config_path", "ok", paths.config_file(inv.env))
    with contextlib.redirect_stderr(io.StringIO()), capture_warnings():  # lower layers' warnings: the checks say it
        config = _guard(checks, "config_json", lambda: access.load_config(inv))
        if config is not None:
            checks.add("config_json", "ok", "valid" if getattr(config, "exists", True) else "no config file")
        if getattr(args, "bundle", None):  # checked even when the config is unusable: bundles need no vault
            for name in ("passphrase_source", "vault_path", "vault_file", "vault_metadata", "vault_kdf",
                         "vault_permissions", "vault_integrity"):
                checks.add(name, "skipped", "--bundle given: the bundle is the store")
            stores = _bundle_checks(inv, checks)
        elif config is not None:
            vault = _vault_checks(inv, checks)
            stores = [("vault", vault)] if vault is not None else []
        else:
            stores = []
            for name in ("passphrase_source", "vault_path"):
                checks.add(name, "skipped", "config unusable")
        location = stores[0][1].path if stores and not getattr(args, "bundle", None) else None
        status, message, state = session_check(inv, location)
        if status == "ok" and getattr(args, "bundle", None):
            message = "not used: --bundle given, the bundle is the store"
        checks.add("session", status, message)
        checks.items[-1]["state"] = state
        _runtime_check(inv, checks)
        if args.map is None or args.profile is None:
            profile_path = _mapping_checks(inv, checks, stores)
        if args.example is not None:
            _example_check(inv, checks, profile_path)
        for _label, store in stores:
            store.close()
    n_err, n_warn = checks.count("error"), checks.count("warning")
    failed = n_err > 0 or (args.strict and n_warn > 0)
    code = errors.AREA_DOCTOR if failed else 0
    fields = {"ok": not failed, "exit_code": code, "strict": bool(args.strict), "profile_path": profile_path,
              "profile_source": getattr(args, "profile_source", None),
              "error_count": n_err, "warning_count": n_warn, "checks": checks.items}
    lines = [f"doctor: {'failed' if failed else 'ok'} (errors={n_err} warnings={n_warn})"]
    lines.extend(f"- [{c['status']}] {c['name']}: {c['message']}" for c in checks.items)
    return code, fields, lines


def doctor_check(inv: Invocation, vault_path: str | None) -> tuple[str, str, str]:
    """`doctor`'s `session` check: (status, message, state). `stopped`, `locked`, `expired` and
    `unlocked` are all `ok` (a passphrase can come from elsewhere); an unsafe session directory, a
    daemon of another version and one that does not answer (state `unknown`) are warnings."""
    import os

    from .. import fsutil, paths
    from ..daemon import client

    directory = paths.session_dir(inv.env)
    if os.path.lexists(directory):
        problem = fsutil.directory_problem(directory, strict=True)
        if problem:
            return "warning", f"session dir {directory} is unsafe: {problem}; the session is ignored", "stopped"
    canonical = os.path.realpath(vault_path) if vault_path else None
    try:
        found = client.probe(inv.env, canonical, timeout=client.STATUS_TIMEOUT, keep=False)
    except errors.KimenError as err:
        return "warning", err.message, "stopped"
    unused = " (not used: --no-session)" if inv.no_session else ""
    pid = found.pid
    if found.state == "stopped":
        return "ok", "no session daemon", "stopped"
    if found.state == "busy":
        return "warning", f"the session daemon did not answer within 1s (busy; pid={pid or '-'})", "unknown"
    if found.state == "other_version":
        version = (found.status or {}).get("version")
        return ("warning", f"the session daemon (pid={pid}) runs kimen {version!s:.40}; "
                "run `kimen session start` to replace it", "locked")
    if found.state == "expired":
        vault = found.vault or {}
        return ("ok", f"expired at {expiry_text(vault)}; run kimen session start{unused}", "expired")
    if found.state == "unlocked" and found.vault is not None:
        until = min(found.vault["idle_expires_at"], found.vault["max_expires_at"])
        return "ok", f"unlocked until {until} (pid={pid}){unused}", "unlocked"
    what = f"{vault_path} is locked" if vault_path else "no vault selected"
    return "ok", f"session daemon running (pid={pid}); {what}", "locked"
