"""Regenerate the rendered workflow templates shipped in .github/workflows (`kimen init`'s output with
the trigger reduced to workflow_dispatch; tests/e2e/test_init_ci.py checks them): run from the repo root."""

from __future__ import annotations

from pathlib import Path

from kimen.cli.init import TEMPLATES, render

DEFAULTS = {"ci-pr-safety": {"profile": "ci", "command": "echo ci-check"},
            "ci-deploy": {"profile": "prod", "command": "./scripts/deploy.sh", "bundle": "vault.age"},
            "ci-sync-gate": {}}


def shipped() -> dict[Path, str]:
    root = Path(__file__).resolve().parents[1] / ".github" / "workflows"
    out = {}
    for name in TEMPLATES:
        target = root / ("kimen-" + name.removeprefix("ci-") + "-template.yml")
        out[target] = render(name, dispatch_only=True, **DEFAULTS[name])
    return out


if __name__ == "__main__":
    for path, text in shipped().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
