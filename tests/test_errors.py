"""The error hierarchy: unique reasons, pinned exit codes, documented (docs/errors.md), envelopes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kimen import errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_errors_doc  # noqa: E402

# The fixed exit codes are a contract: scripts branch on them, so they are never renumbered. This
# table pins them; docs/errors.md (generated from kimen/errors.py) must agree with it and the code.
FIXED_CODES = {
    "internal_error": 1, "usage_error": 2, "interrupted": 130,
    "missing_passphrase": 10, "empty_passphrase": 10, "passphrase_mismatch": 10,
    "passphrase_command_failed": 10, "empty_passphrase_command": 10, "missing_new_passphrase": 10,
    "empty_new_passphrase": 10, "new_passphrase_mismatch": 10, "new_passphrase_unchanged": 10,
    "conflicting_passphrase_sources": 10, "session_expired": 10,
    "secret_not_found": 12, "secret_exists": 13, "vault_not_found": 14,
    "wrong_passphrase": 15, "secret_corrupt": 15, "vault_tampered": 15,
    "invalid_vault_file": 24, "vault_unsupported": 24, "kdf_params_rejected": 24, "vault_busy": 24,
    "vault_read_only": 24, "disk_full": 24,
    "invalid_config_json": 26, "config_path_unavailable": 26, "invalid_config_value": 26,
    "audit_unavailable": 34, "grant_required": 35, "grant_denied": 35, "grant_expired": 35, "grant_invalid": 35,
    "session_unavailable": 34, "session_locked": 34, "session_dir_unsafe": 34, "socket_path_too_long": 34,
    "daemon_start_failed": 34, "session_stop_failed": 34, "session_protocol_error": 34, "session_version_mismatch": 34,
    "frame_too_large": 34, "invalid_ttl": 34, "session_unsupported": 34,
    "remote_changed": 31, "no_local_baseline": 31, "remote_disappeared": 31, "overlapping_changes": 31,
    "remote_rollback": 31, "remote_fork": 31, "remote_history_gap": 31,
    "command_not_executable": 126, "command_not_found": 127,
}


def _doc_tables() -> tuple[set[int], dict[str, str]]:
    """docs/errors.md: the codes of its exit-code table, and reason -> code of its reasons table."""
    text = (ROOT / "docs" / "errors.md").read_text()
    codes_part = text[text.index("## Exit codes"):text.index("## Reasons")]
    codes = {int(m) for m in re.findall(r"^\| (\d+) \|", codes_part, re.M)}
    reasons_part = text[text.index("## Reasons"):text.index("## Warning reasons")]
    reasons = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+?) \|", reasons_part, re.M))
    return codes, reasons


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _command_reachable_source() -> str:
    """The source of every kimen module a command can reach, the error table aside: the command
    modules (loaded by name from `kimen.cli.COMMANDS`), the entry points and the daemon process,
    and every kimen module they import, function-level imports included. A reason raised only in
    code no command reaches yet (the sync core before `kimen sync` exists) is not raised by a command."""
    import ast

    paths = {_module_name(p): p for p in sorted((ROOT / "kimen").rglob("*.py"))}
    seen: set[str] = set()
    # and every kimen.cli.* (not kimen.clipboard)
    entry = ("kimen.cli", "kimen.__main__", "kimen.daemon.server", "kimen.daemon.server.__main__")
    todo = [m for m in paths if m.startswith("kimen.cli.") or m in entry]
    while todo:
        name = todo.pop()
        if name in seen or name not in paths:
            continue
        seen.add(name)
        package = name if paths[name].name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(paths[name].read_text())):
            found: list[str] = []
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            # importing a module runs its parent packages too
            todo += [".".join(t.split(".")[:i]) for t in found for i in range(2, t.count(".") + 2)]
    return "\n".join(paths[m].read_text() for m in sorted(seen) if m not in ("kimen.errors", "kimen.reasons"))


def test_reasons_are_unique_snake_case_and_have_templates():
    seen = set()
    for cls in errors.all_error_classes():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.reason), cls
        assert cls.reason not in seen
        seen.add(cls.reason)
        template = (cls.__doc__ or "").strip()
        first = template.split()[0]
        assert not first[0].isupper() or first.isupper(), cls  # lowercase start (env names aside)
        assert not template.endswith("."), cls


def test_codes_match_spec():
    """Every reason's code in docs/errors.md is the class's code; fixed codes are the pinned ones
    and each appears in the doc's exit-code table (the doc is the project's own reference)."""
    codes, documented = _doc_tables()
    classes = {cls.reason: cls for cls in errors.all_error_classes()}
    assert set(documented) == set(classes), "docs/errors.md is stale: run `python scripts/gen_errors_doc.py`"
    for reason, cls in classes.items():
        assert documented[reason] == (str(cls.code) if cls.code is not None else "command's"), reason
        if cls.code is not None:
            assert FIXED_CODES.get(reason) == cls.code, f"{reason}: fixed code {cls.code} is not the pinned one"
            assert cls.code in codes, f"{reason}: exit code {cls.code} has no row in the doc's table"
    for reason, code in FIXED_CODES.items():
        assert reason in classes and classes[reason].code == code, f"{reason} must keep exit code {code}"
    for cls in errors.all_error_classes(not_built=True):  # declared ahead: code fixed or the command's
        assert cls.code in (None, 31, 34, 35), cls.reason


def test_documented_reasons_are_raised_and_waiting_ones_are_not():
    """docs/errors.md lists only reasons some command raises; the ones declared for features not
    built yet wait in one marked table, raised by no command and left out of the doc."""
    source = _command_reachable_source()
    assert "def run_cli" in source and "def cmd_seal" in source  # the walk reached the commands

    def raised(cls: type[errors.KimenError]) -> bool:
        return bool(re.search(rf"\b{cls.__name__}\b", source) or re.search(rf"[\"']{cls.reason}[\"']", source))

    unraised = [cls.reason for cls in errors.all_error_classes() if not raised(cls)]
    assert not unraised, f"listed in docs/errors.md but raised nowhere (move them to reasons.NOT_BUILT): {unraised}"
    waiting = errors.all_error_classes(not_built=True)
    assert waiting, "the not-built table is empty: remove it"
    early = [cls.reason for cls in waiting if raised(cls)]
    assert not early, f"raised but still in reasons.NOT_BUILT (move them into reasons.DECLARED): {early}"
    _codes, documented = _doc_tables()
    assert not {cls.reason for cls in waiting} & set(documented)


def test_warnings_name_declared_reasons():
    """Every `warn(...)` in kimen/ passes a literal `reason=` declared in errors.WARNINGS, and every
    declared warning reason is raised somewhere (docs/errors.md lists exactly these)."""
    import ast

    used: set[str] = set()
    for path in sorted((ROOT / "kimen").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "warn"):
                continue
            reason = next((k.value for k in node.keywords if k.arg == "reason"), None)
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert isinstance(reason, ast.Constant) and isinstance(reason.value, str), f"{where}: warn() needs reason="
            assert reason.value in errors.WARNINGS, f"{where}: warning reason {reason.value} not in errors.WARNINGS"
            used.add(reason.value)
    assert set(errors.WARNINGS) == used, f"declared but never raised: {sorted(set(errors.WARNINGS) - used)}"
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in errors.WARNINGS)
    assert not set(errors.WARNINGS) & {cls.reason for cls in errors.all_error_classes()}


def test_duplicate_reason_is_refused():
    with pytest.raises(TypeError):
        type("Dup", (errors.KimenError,), {"reason": "secret_not_found"})


def test_docs_errors_md_is_current():
    assert (ROOT / "docs" / "errors.md").read_text() == gen_errors_doc.render(), (
        "docs/errors.md is stale: run `python scripts/gen_errors_doc.py`"
    )


def test_envelope_shape_fixed_and_area_codes():
    err = errors.SecretNotFound(["b", "a"])
    assert err.envelope(11) == {
        "ok": False, "error": "secret not found: a, b", "exit_code": 12,
        "reason": "secret_not_found", "missing": ["a", "b"],
    }
    area = errors.InvalidSecretName(name="x y")
    assert area.exit_code(11) == 11 and area.exit_code(23) == 23
    env = area.envelope(23)
    assert env["exit_code"] == 23 and env["hint"] and env["error"] == "invalid secret name: x y"


def test_template_fields_stay_out_of_envelope():
    env = errors.ValueSourceFailed(detail="cannot read x").envelope(11)
    assert "detail" not in env and env["error"] == "cannot read the value: cannot read x"


def test_error_class_round_trip_for_daemon_frames():
    assert errors.error_class("session_locked") is errors.SessionLocked
    assert errors.error_class("no_such_reason_from_the_future") is errors.SessionProtocolError
