"""The error hierarchy: unique reasons, SPEC's exit codes, documented, envelopes as SPEC shows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kimen import errors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_errors_doc  # noqa: E402


def _spec_tables(spec: str) -> tuple[dict[str, int], set[str]]:
    """Fixed codes of SPEC §2.8 and the area reasons of §2.9."""
    fixed: dict[str, int] = {}
    s28 = spec[spec.index("### 2.8"):spec.index("### 2.9")]
    for line in s28.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0][:1].isdigit():
            continue
        codes = [int(c) for c in re.findall(r"\d+", cells[0])]
        reasons = re.findall(r"`([a-z][a-z0-9_]+)`", cells[2])
        if len(codes) == 2 and len(reasons) == 2:  # "126 / 127": one code per reason
            fixed.update(zip(reasons, codes, strict=True))
            continue
        for reason in reasons:
            if reason not in ("missing", "existing", "secret"):
                fixed[reason] = codes[0]
    s29 = spec[spec.index("### 2.9"):spec.index("### 2.10")]
    rows = "\n".join(line for line in s29.splitlines() if line.startswith("| "))
    area = set(re.findall(r"`([a-z][a-z0-9_]+)`", rows))
    return fixed, area


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


def test_codes_match_spec(shared_dir):
    fixed, area = _spec_tables((shared_dir / "SPEC.md").read_text())
    classes = {cls.reason: cls for cls in errors.all_error_classes()}
    for reason, code in fixed.items():
        assert reason in classes, f"SPEC reason {reason} has no class"
        assert classes[reason].code == code, reason
    for reason in area:
        assert reason in classes, f"SPEC reason {reason} has no class"
        assert classes[reason].code is None, f"{reason} must take the command's code"
    extra = set(classes) - set(fixed) - area
    assert not extra, f"reasons not in SPEC: {sorted(extra)}"


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
