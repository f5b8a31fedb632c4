"""The generated CI workflows work as written: every `kimen …` line of every `run:` step of `kimen
init ci-pr-safety` and `kimen init ci-deploy` runs locally, in a git work tree holding the example
profiles of `profiles/` (env + file + envpath), against a sealed bundle for the deploy workflow, and
exits 0. The commands are read from the generated YAML, not written here, so a template change is
tested as it ships."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "profiles"
CHECK = """\
import json, os, sys
expected = json.load(open(sys.argv[1]))
for var, value in expected["env"].items():
    assert os.environ[var] == value, var
for var, value in expected["envpath"].items():
    assert open(os.environ[var]).read() == value, var
open(sys.argv[2], "w").write("checked")
"""


def _steps(workflow: dict):
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            yield job, step


def _kimen_commands(workflow: dict) -> list[tuple[str, set[str]]]:
    """Every `kimen …` line of every `run:` step, with the env names the step can see."""
    out = []
    top = set(workflow.get("env") or {})
    for job, step in _steps(workflow):
        names = top | set(job.get("env") or {}) | set(step.get("env") or {})
        out += [(line.strip(), names) for line in str(step.get("run", "")).splitlines()
                if line.strip().startswith("kimen ")]
    return out


def _repo_with_profiles(kimen) -> Path:
    """A git work tree (a `.git` directory is all lookup needs) with the example profiles."""
    repo = kimen.root / "repo"
    (repo / ".git").mkdir(parents=True)
    shutil.copytree(PROFILES, repo / ".kimen" / "profiles")
    return repo


def _expected(kimen, repo: Path, profile: str) -> tuple[dict, dict[str, str]]:
    """The plan of `profile` (references only) and a value for each secret it reads."""
    plan = kimen.ok("plan", "--profile", profile, "--json", cwd=repo).json()
    values = {name: f"value of {name}" for name in plan["secrets"]}
    return plan, values


def _check_script(repo: Path, plan: dict, values: dict[str, str]) -> str:
    """A deploy command that fails unless every variable and projected file holds its value."""
    def value(source: str) -> str:
        return source[len("const:"):] if source.startswith("const:") else values[source.removeprefix("secret:")]

    files = {f["path"]: value(f["source"]) for f in plan["files"]}
    expected = {"env": {e["var"]: value(e["source"]) for e in plan["env"]},
                "envpath": {e["var"]: files[e["path"]] for e in plan["envpath"]}}
    (repo / "expected.json").write_text(json.dumps(expected))
    (repo / "check.py").write_text(CHECK)
    return f"{Path(sys.executable).name} check.py expected.json checked.txt"


def _run_lines(kimen, repo: Path, commands: list[tuple[str, set[str]]], env: dict[str, str]) -> None:
    assert commands, "the workflow runs no kimen command"
    for line, names in commands:
        step_env = {**kimen.env, **{k: v for k, v in env.items() if k in names}}
        done = subprocess.run(["bash", "-c", line], cwd=repo, env=step_env, capture_output=True, timeout=120,
                              start_new_session=True)
        assert done.returncode == 0, f"{line}\nexit {done.returncode}\n{done.stdout.decode()}{done.stderr.decode()}"


def _workflow(kimen, repo: Path, template: str, *flags: str) -> dict:
    out = kimen.root / f"{template}.yml"
    kimen.ok("init", template, "--out", str(out), *flags, cwd=repo)
    return yaml.safe_load(out.read_text())


@pytest.mark.parametrize("profile", ["prod", "demo"])
def test_pr_safety_workflow_runs_as_written(kimen, profile):
    repo = _repo_with_profiles(kimen)
    text = (repo / ".kimen" / "profiles" / f"{profile}.kmap").read_text()
    assert re.search(r"^env ", text, re.M) and re.search(r"^file ", text, re.M) and re.search(r"^envpath ", text, re.M)
    workflow = _workflow(kimen, repo, "ci-pr-safety", "--profile", profile, "--command", "./deploy.sh")
    _run_lines(kimen, repo, _kimen_commands(workflow), {})


@pytest.mark.parametrize("profile", ["prod", "demo"])
def test_deploy_workflow_runs_as_written_against_a_sealed_bundle(kimen, profile):
    repo = _repo_with_profiles(kimen)
    plan, values = _expected(kimen, repo, profile)
    kimen.init_vault()
    for name, value in values.items():
        kimen.set(name, value)
    sealer = kimen.ok("bundle", "keygen", "--out", str(kimen.root / "me.txt"), "--json").json()
    ci = kimen.ok("bundle", "keygen", "--out", str(kimen.root / "ci-key.txt"), "--json").json()
    kimen.ok("bundle", "seal", "--out", str(repo / "vault.age"), "--recipient", ci["recipient"], "--identity",
             str(kimen.root / "me.txt"), "--profile", profile, cwd=repo, env=kimen.with_pass())
    command = _check_script(repo, plan, values)
    workflow = _workflow(kimen, repo, "ci-deploy", "--profile", profile, "--deploy-command", command,
                         "--bundle", "vault.age")
    ci_env = {"KIMEN_AGE_IDENTITY": (kimen.root / "ci-key.txt").read_text(),
              "KIMEN_TRUSTED_SIGNERS": sealer["signer"]}
    # CI has no vault and no passphrase: an empty config home
    kimen.env["XDG_CONFIG_HOME"] = str(kimen.root / "ci-config")
    _run_lines(kimen, repo, _kimen_commands(workflow), ci_env)
    assert (repo / "checked.txt").read_text() == "checked"
