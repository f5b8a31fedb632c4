"""`kimen sync preflight` (the sync commands' checks in one report) and the plain `kimen sync`
(doctor, status, then the one step they call for): docs/sync.md, "Preflight" and "Plain `kimen sync`".

A part of the `sync` command module: `kimen.cli.sync` registers both commands' flags and names
their handlers here as "module:function", so it never imports this module (which reuses its
session, status and push/pull results; a direct import back would be a cycle).

Preflight's checks run in a fixed order — `doctor`, `head`, `pin`, `status`, `conflicts`,
`rotation`, `pull`, `push` — each as the command it names
would (its exit code, its JSON fields as the check's `payload`, its error), sharing one read of the
head and at most one unlock. `head`, `pin` and `rotation` need an identity but no vault and no
passphrase (the CI gate); the others are vault checks, reported `skipped` under
`--allow-missing-vault` when there is no vault. Nothing is written: not the vault, not the ratchet,
not the config. Output names checks, members, seqs and head ids — never a value or an identity.
"""

from __future__ import annotations

import os

from .. import errors
from ..output import Progress
from . import sync as common
from .common import check_fingerprint
from .model import Invocation, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

CHECKS = ("doctor", "head", "pin", "status", "conflicts", "rotation", "pull", "push")
VAULT_CHECKS = frozenset({"doctor", "status", "conflicts", "pull", "push"})


def selected_checks(only: list[str], skip: list[str]) -> list[str]:
    """The checks `--only` and `--skip` (each repeatable or comma-separated) leave, in their order."""
    from ..suggest import hint

    def names(items: list[str]) -> set[str]:
        out = {n.strip() for item in items for n in item.split(",") if n.strip()}
        for name in sorted(out):
            if name not in CHECKS:
                raise errors.UnknownPreflightCheck(name=name[:40], **({"hint": found} if (found := hint(name, CHECKS))
                                                                     else {}))
        return out

    wanted, unwanted = names(only), names(skip)
    chosen = [c for c in CHECKS if (not only or c in wanted) and c not in unwanted]
    if not chosen:
        raise errors.NoPreflightChecksSelected()
    return chosen


class _Run:
    """One preflight: the vault (metadata only, if any), the selected remote, the head read once.
    The remote is selected on first use, so the doctor step needs none (`--only doctor`)."""

    def __init__(self, inv: Invocation) -> None:
        from ..access import resolve_vault

        self.inv = inv
        self.vault_path = resolve_vault(inv).path
        self.has_vault = os.path.exists(self.vault_path)
        self._session: Any = None
        self._fetched: Any = None
        self._fetch_error: errors.KimenError | None = None
        self._unlocked: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = common.Session(self.inv, unlock=False, identity=False)
        return self._session

    @property
    def name(self) -> str:
        return str(self.session.remote["name"])

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._unlocked is not None:
            self._unlocked.close()

    def state(self) -> Any:
        from ..vault.syncstate import read_state

        return read_state(self.session.vault, self.name) if self.session.vault is not None else None

    def fetched(self) -> Any:
        """The current head, accepted against the known head (read once; its error kept)."""
        if self._fetch_error is not None:
            raise self._fetch_error
        if self._fetched is None:
            try:
                engine = self.session.engine
                if engine.identity is None:
                    raise errors.RemoteIdentityMissing(
                        remote=self.name, recommended_action="configure_remote_identity",
                        hint=f"pass --identity FILE, set KIMEN_AGE_IDENTITY, or "
                             f"`kimen remote set {self.name} --identity FILE`")
                with Progress(f"fetching the head of {self.name}"):
                    fetched = engine.fetch(self.state())
                if fetched is None:
                    raise engine.no_head(self.state())
                self._fetched = fetched
            except errors.KimenError as exc:
                self._fetch_error = exc
                raise
        return self._fetched

    def unlocked(self) -> Any:
        """The unlocked session the `pull` and `push` checks share (one unlock)."""
        if self._unlocked is None:
            self._unlocked = common.Session(self.inv, unlock=True)
        return self._unlocked


def _command(name: str, remote: str, inv: Invocation) -> str:
    strict = " --strict" if getattr(inv.options, "strict", False) else ""
    args = inv.options
    if name == "doctor":
        words = ["kimen doctor"]
        if args.profile:
            words.append(f"--profile {args.profile}")
        words += [f"--bundle {b}" for b in args.bundle_in]
        return " ".join(words)
    if name == "head":
        return f"kimen sync preflight --remote {remote} --only head"
    if name == "pin":
        return f"kimen sync pin --remote {remote} --check {args.pin}"
    if name in ("status", "conflicts", "rotation"):
        return f"kimen sync {name} --remote {remote}{strict}"
    if name == "pull":
        return f"kimen sync pull --remote {remote} --reconcile --dry-run"
    return f"kimen sync push --remote {remote} --dry-run"


# -- the checks: each returns (payload, exit code) or raises its reason -----------------------------


def _doctor(run: _Run) -> tuple[dict[str, Any], int]:
    from . import flags
    from .checks import doctor_report

    args = run.inv.options
    options = {**flags.defaults(flags.IDENTITY), **flags.defaults(flags.TRUST),
               "profile": args.profile, "profile_source": getattr(args, "profile_source", None), "map": None,
               "mode": None, "example": None, "bundle": list(args.bundle_in), "strict": False,
               "allow_missing_vault": bool(args.allow_missing_vault),
               "identity": args.identity, "identity_stdin": args.identity_stdin}
    doctor = run.inv.replace(**options)
    doctor.derived.update(run.inv.derived)  # one stdin, one passphrase source for the whole preflight
    code, fields, _lines = doctor_report(doctor)
    run.inv.derived.update(doctor.derived)
    if code:
        raise errors.DoctorFailed(errors=fields["error_count"], warnings=fields["warning_count"],
                                  recommended_action="doctor", payload=fields)
    return fields, 0


def _head(run: _Run) -> tuple[dict[str, Any], int]:
    from ..sync.chain import members_fp

    fetched = run.fetched()
    head = fetched.head
    threshold = common.stale_threshold(run.inv)
    return {"remote_id": head.remote_id, "seq": head.seq, "head_id": head.id, "remote_rev": fetched.remote.rev,
            "by": head.by, "created_at": head.created_at, "outcome": fetched.outcome,
            "members_fp": members_fp(head.current.members),
            "likely_stale": common.likely_stale(head.generation / 1000.0, threshold)}, 0


def _pin(run: _Run) -> tuple[dict[str, Any], int]:
    from ..sync.chain import members_fp

    head = run.fetched().head
    fp = members_fp(head.current.members)
    expected = check_fingerprint(run.inv.options.pin)
    if fp != expected:
        raise errors.MembersPinMismatch(actual=fp, expected=expected, recommended_action="sync_members_ack")
    writers = [m for m in head.current.members if m.can_write]
    return {"members_fp": fp, "pinned": True, "writers": [m.id for m in writers]}, 0


def _status(run: _Run) -> tuple[dict[str, Any], int]:
    result = common.status_result(run.inv, run.session)
    return result.fields, result.exit_code


def _conflicts(run: _Run) -> tuple[dict[str, Any], int]:
    result = common.conflicts_result(run.inv, run.session)
    return result.fields, result.exit_code


def _rotation(run: _Run) -> tuple[dict[str, Any], int]:
    head = run.fetched().head
    due = [d.to_json() for d in head.sync.rotation_due]
    if run.inv.options.strict and due:
        raise errors.SyncRotationDue(count=len(due), recommended_action="sync_rotate",
                                     payload={"rotation_due": due, "count": len(due)})
    return {"rotation_due": due, "count": len(due)}, 0


def _without_conflicts(result: Result) -> Result:
    """A pull or push dry run that found conflicts fails as the real step would (31)."""
    keys = result.fields["conflict_keys"]
    if keys:
        raise errors.OverlappingChanges(names=", ".join(keys), conflict_keys=keys,
                                        recommended_action="manual_reconcile", payload=result.fields)
    return result


def _pull(run: _Run) -> tuple[dict[str, Any], int]:
    return _without_conflicts(common.pull_dry_run(run.unlocked(), reconcile=True)).fields, 0


def _push(run: _Run) -> tuple[dict[str, Any], int]:
    return _without_conflicts(common.push_dry_run(run.unlocked())).fields, 0


_RUNNERS: dict[str, Callable[[_Run], tuple[dict[str, Any], int]]] = {
    "doctor": _doctor, "head": _head, "pin": _pin, "status": _status, "conflicts": _conflicts,
    "rotation": _rotation, "pull": _pull, "push": _push,
}


def _one(run: _Run, name: str) -> dict[str, Any]:
    check: dict[str, Any] = {"name": name, "command": _command(name, "" if name == "doctor" else run.name, run.inv),
                             "ok": True,
                             "skipped": False, "exit_code": 0, "error": None, "recommended_action": "none",
                             "payload": None}
    if name == "pin" and not run.inv.options.pin:
        check.update(skipped=True, payload={"reason": "no --pin given"})
        return check
    if name in VAULT_CHECKS and not run.has_vault and run.inv.options.allow_missing_vault:
        check.update(skipped=True, payload={"reason": "no vault (--allow-missing-vault)"})
        return check
    try:
        if name in VAULT_CHECKS and not run.has_vault:
            raise errors.LocalVaultMissing(path=run.vault_path, recommended_action="vault_init",
                                           hint="create one with `kimen vault init`, or pass --allow-missing-vault")
        payload, code = _RUNNERS[name](run)
    except errors.KimenError as exc:
        envelope = exc.envelope(errors.AREA_SYNC)
        envelope.pop("ok", None)
        check.update(ok=False, exit_code=envelope["exit_code"], error=envelope, payload=exc.fields.get("payload"),
                     recommended_action=exc.fields.get("recommended_action") or "manual_reconcile")
        return check
    check.update(payload=payload, exit_code=code, ok=code == 0)
    if isinstance(payload, dict) and payload.get("recommended_action"):
        check["recommended_action"] = payload["recommended_action"]
    return check


def cmd_preflight(inv: Invocation) -> Result:
    args = inv.options
    chosen = selected_checks(args.only, args.skip)
    common.stale_threshold(inv)  # a bad duration fails before any check runs
    run = _Run(inv)
    try:
        checks = [_one(run, name) for name in chosen]
        remote = run.name if chosen != ["doctor"] else None
    finally:
        run.close()
    failed = [c for c in checks if not c["ok"]]
    code = 31 if any(c["exit_code"] == 31 for c in failed) else 32 if failed else 0
    action = failed[0]["recommended_action"] if failed else "none"
    failed_names = [str(c["name"]) for c in failed]
    fields: dict[str, Any] = {
        "ok": not failed, "exit_code": code, "remote": remote, "check_count": len(checks),
        "failed_count": len(failed), "failed_checks": failed_names, "recommended_action": action,
        "next_command": common.next_command(action, remote or "", _role(checks)), "checks": checks}
    lines = []
    for c in checks:
        state = "skipped" if c["skipped"] else "ok" if c["ok"] else f"failed (exit {c['exit_code']}" + (
            f", {c['error']['reason']})" if c["error"] else ")")
        lines.append(f"{c['name']}: {state}")
    lines.append(f"preflight: {'ok' if not failed else 'failed: ' + ', '.join(failed_names)}")
    if failed and fields["next_command"]:
        lines.append(f"next: {fields['next_command']}")
    return Result("sync_preflight", lines, fields, exit_code=code)


def _role(checks: list[dict[str, Any]]) -> str | None:
    """This member's role as a check that read it reported (the `status` check), else None."""
    for check in checks:
        payload = check.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("role"), str):
            return str(payload["role"])
    return None


# -- plain `kimen sync`: doctor, status, then one decided step ---------------------------------------

_BLOCKING = ("remote_identity_missing", "remote_lock_present", "sync_role_forbidden", "remote_disappeared")


def decide(status: dict[str, Any], *, has_vault: bool, strict: bool) -> tuple[str, str | None]:
    """(decision, reason) from `sync status`'s fields: noop, pull (no baseline), pull_reconcile
    (nothing to publish), push (local changes, a writer; it merges) or blocked."""
    if not has_vault:
        return "blocked", "local_vault_missing"
    for blocker in _BLOCKING:
        if blocker in status["blockers"]:
            return "blocked", blocker
    reason = status["reason"]
    if reason == "remote_missing":
        return "blocked", reason
    if strict and status["members_changed"]:
        return "blocked", "members_unacknowledged"
    writer = status["role"] in ("admin", "writer")
    if reason == "no_local_baseline":
        return "pull", reason
    if status["local_changed"] and writer:
        return "push", reason
    if reason == "remote_changed":
        return "pull_reconcile", reason
    return "noop", reason


_CONFLICT_REASONS = frozenset({"remote_disappeared", "no_local_baseline", "remote_changed"})


def _step(name: str, command: str, run: Callable[[], Result]) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "command": command, "ok": True, "exit_code": 0, "error": None,
                            "action": None, "payload": None}
    try:
        result = run()
    except errors.KimenError as exc:
        envelope = exc.envelope(errors.AREA_SYNC)
        envelope.pop("ok", None)
        step.update(ok=False, exit_code=envelope["exit_code"], error=envelope, payload=exc.fields.get("payload"))
        return step
    step.update(action=result.action, payload=result.fields, exit_code=result.exit_code, ok=result.exit_code == 0)
    return step


def _run_decision(inv: Invocation, decision: str, remote: str, *, dry_run: bool) -> dict[str, Any]:
    """Execute the decided step (or its dry run) in a session of its own, unlocked once."""
    command = _run_command(decision, remote) + (" --dry-run" if dry_run else "")

    def execute() -> Result:
        session = common.Session(inv, unlock=True)
        try:
            if decision == "push":
                if dry_run:
                    return _without_conflicts(common.push_dry_run(session))
                with Progress(f"pushing to {remote}"):
                    pushed = session.engine.push(session.local(), backup_path=session.backup_path())
                session.pin(pushed.pin_remote_id)
                return common.push_result(pushed)
            if dry_run:
                return _without_conflicts(common.pull_dry_run(session, reconcile=decision == "pull_reconcile"))
            with Progress(f"pulling from {remote}"):
                pulled = session.engine.pull(session.local(), reconcile=decision == "pull_reconcile",
                                             backup_path=session.backup_path())
            session.pin(pulled.pin_remote_id)
            return common.pull_result(pulled)
        finally:
            session.close()

    return _step(decision, command, execute)


def cmd_sync(inv: Invocation) -> Result:
    args = inv.options
    if args.check and args.dry_run:
        raise errors.ConflictingCheckAndDryRun()
    common.stale_threshold(inv)
    mode = "check" if args.check else "dry_run" if args.dry_run else "run"
    run = _Run(inv)
    steps: list[dict[str, Any]] = []
    try:
        if not args.no_doctor and (run.has_vault or not args.allow_missing_vault):
            steps.append(_one_step(run, "doctor"))
        status = common.status_result(inv.replace(strict=False), run.session).fields
        remote = run.name
    finally:
        run.close()
    steps.append({"name": "status", "command": f"kimen sync status --remote {remote}", "ok": True,
                  "exit_code": 0, "error": None, "action": "sync_status", "payload": status})
    decision, reason = decide(status, has_vault=run.has_vault, strict=bool(args.strict))
    if steps[0]["name"] == "doctor" and not steps[0]["ok"] and decision != "blocked":
        decision, reason = "blocked", "doctor_failed"
    code = 0
    action = status["recommended_action"]
    if decision == "blocked":
        if reason == "local_vault_missing" and args.allow_missing_vault:
            decision = "noop"
        else:
            code = 31 if reason in _CONFLICT_REASONS else 32
            action = "doctor" if reason == "doctor_failed" else action
    elif decision != "noop" and mode != "check":
        step = _run_decision(inv, decision, remote, dry_run=mode == "dry_run")
        steps.append(step)
        if not step["ok"]:
            code = step["exit_code"]
            error = step["error"] or {}
            action = error.get("recommended_action") or (
                common.RESTORE_ACTION if error.get("reason") in ("remote_rollback", "remote_fork")
                else "manual_reconcile" if code == 31 else "none")
        elif mode == "run":
            action = "none"
    fields: dict[str, Any] = {
        "ok": code == 0, "exit_code": code, "remote": remote, "mode": mode, "decision": decision,
        "local_changed": status["local_changed"], "reason": reason, "recommended_action": action,
        "next_command": common.next_command(action, remote, status["role"]), "status": status, "steps": steps}
    if mode == "check" and decision not in ("noop", "blocked"):
        fields["would_run"] = _run_command(decision, remote)
    lines = [line for s in steps for line in _step_lines(s)]
    verb = {"check": "would ", "dry_run": "dry run: "}.get(mode, "")
    lines.append(f"sync: {verb}{decision}" + (f" ({reason})" if reason else ""))
    if action != "none" and (fields["next_command"] or action == common.RESTORE_ACTION):
        lines.append(common.next_line(action, fields["next_command"], remote))
    return Result("sync", lines, fields, exit_code=code)


def _step_lines(step: dict[str, Any]) -> list[str]:
    """A step of the report: `name: ok`, or its failure with the reason, the message (it names the
    keys of a conflict) and the hint."""
    if step["ok"]:
        return [f"{step['name']}: ok"]
    error = step["error"] or {}
    if not error:
        return [f"{step['name']}: failed (exit {step['exit_code']})"]
    lines = [f"{step['name']}: failed (exit {step['exit_code']}, {error['reason']}): {error['error']}"]
    return lines + ([f"  hint: {error['hint']}"] if error.get("hint") else [])


def _run_command(decision: str, remote: str) -> str:
    return {"pull": f"kimen sync pull --remote {remote}",
            "pull_reconcile": f"kimen sync pull --remote {remote} --reconcile",
            "push": f"kimen sync push --remote {remote}"}[decision]


def _one_step(run: _Run, name: str) -> dict[str, Any]:
    """A preflight check as a step of `kimen sync` (the doctor step)."""
    check = _one(run, name)
    return {"name": check["name"], "command": check["command"], "ok": check["ok"], "exit_code": check["exit_code"],
            "error": check["error"], "action": name, "payload": check["payload"]}
