"""`kimen init ci-pr-safety|ci-deploy` (SPEC §10): the workflows parse, pin actions by commit,
call only kimen commands and flags that exist, and ship as templates in .github/workflows."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"ci-pr-safety": REPO / ".github/workflows/kimen-pr-safety-template.yml",
           "ci-deploy": REPO / ".github/workflows/kimen-deploy-template.yml"}


def _kimen_lines(workflow: dict) -> list[str]:
    lines = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                if line.strip().startswith("kimen "):
                    lines.append(line.strip())
    return lines


def _check_workflow(kimen, text: str) -> dict:
    workflow = yaml.safe_load(text)
    assert workflow["permissions"] == {"contents": "read"}
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    assert any("pip install" in str(s.get("run", "")) for s in steps)
    assert "echo $" not in text and "secrets." not in "".join(_kimen_lines(workflow))
    lines = _kimen_lines(workflow)
    assert lines
    for line in lines:
        words = line.split()[1:]
        if "--" in words:
            words = words[: words.index("--")]
        command = []
        for word in words:
            if word.startswith("-"):
                break
            command.append(word)
        assert command, line
        help_text = kimen.ok(*command, "--help").stdout
        for flag in (w for w in words if w.startswith("--")):
            assert flag in help_text, f"{flag} is not an option of kimen {' '.join(command)}"
    return workflow


@pytest.mark.parametrize("template", ["ci-pr-safety", "ci-deploy"])
def test_generated_workflow(kimen, template):
    done = kimen.ok("init", template, "--json")
    out = Path(done.json()["out"])
    assert done.json()["action"] == "init_" + template.replace("-", "_")
    assert out.relative_to(kimen.cwd).parts[:2] == (".github", "workflows")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o755
    workflow = _check_workflow(kimen, out.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    if template == "ci-pr-safety":
        assert "pull_request" in triggers
        assert not any("secrets" in str(job) for job in workflow["jobs"].values())
    else:
        assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
        env = workflow["jobs"]["kimen-deploy"]["env"]
        assert env["KIMEN_AGE_IDENTITY"] == "${{ secrets.KIMEN_AGE_IDENTITY }}"
        assert env["KIMEN_TRUSTED_SIGNERS"] == "${{ vars.KIMEN_TRUSTED_SIGNERS }}"


def test_flags_and_refusals(kimen):
    done = kimen.ok("init", "ci-deploy", "--out", "d.yml", "--profile", "staging", "--deploy-command",
                    "make deploy ENV=staging # done", "--bundle", "secrets/staging.age")
    assert done.stdout.strip() == f"wrote {kimen.cwd / 'd.yml'}"
    text = (kimen.cwd / "d.yml").read_text()
    _check_workflow(kimen, text)
    assert "--bundle secrets/staging.age --profile staging -- make deploy ENV=staging # done" in text
    done = kimen.fail(33, "output_exists", "init", "ci-deploy", "--out", "d.yml")
    assert "--force" in done.err_json()["hint"]
    kimen.ok("init", "ci-deploy", "--out", "d.yml", "--force")
    assert "--profile prod" in (kimen.cwd / "d.yml").read_text()
    (kimen.cwd / "dir.yml").mkdir()
    kimen.fail(33, "output_is_directory", "init", "ci-pr-safety", "--out", "dir.yml")
    kimen.fail(33, "invalid_profile_name", "init", "ci-pr-safety", "--out", "x.yml", "--profile", "a b")
    kimen.fail(33, "init_failed", "init", "ci-deploy", "--out", "x.yml", "--bundle", "../x.age")
    assert not (kimen.cwd / "x.yml").exists()


@pytest.mark.parametrize("template", sorted(SHIPPED))
def test_shipped_templates_are_current(kimen, template):
    from scripts.gen_ci_templates import shipped

    path = SHIPPED[template]
    assert path.read_text() == shipped()[path], "run: python scripts/gen_ci_templates.py"
    workflow = _check_workflow(kimen, path.read_text())
    assert list(workflow[True]) == ["workflow_dispatch"]
