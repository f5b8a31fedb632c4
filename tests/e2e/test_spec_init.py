"""The defaults of `init ci-pr-safety`, `init ci-deploy` and `init ci-sync-gate` are the documented
ones (docs/ci.md), and `--help` names them."""

from __future__ import annotations

import pytest

from kimen import __version__

SHARED_FLAGS = {"--install-spec SPEC": f"default kimen=={__version__}"}

DEFAULTS = {
    "ci-pr-safety": (".github/workflows/kimen-pr-safety.yml",
                     ["kimen map lint --profile ci --strict --json", "kimen plan --profile ci --json -- echo ci-check"],
                     {"--profile NAME": "default ci", "--command CMD": "default echo ci-check"}),
    "ci-deploy": (".github/workflows/kimen-deploy.yml",
                  ["kimen doctor --bundle vault.age --profile prod --strict --json",
                   "kimen project run --bundle vault.age --profile prod --mask -- ./scripts/deploy.sh"],
                  {"--profile NAME": "default prod", "--deploy-command CMD": "default ./scripts/deploy.sh",
                   "--bundle FILE": "default vault.age", "--environment NAME": "default production"}),
    "ci-sync-gate": (".github/workflows/kimen-sync-gate.yml",
                     ['kimen remote add team --type git --path "$GITHUB_WORKSPACE" --branch main'
                      ' --bundle-path vault.age --remote-id "$KIMEN_REMOTE_ID"',
                      'kimen sync pin --remote team --check "$KIMEN_MEMBERS_PIN" --json',
                      'kimen sync preflight --remote team --strict --allow-missing-vault --pin "$KIMEN_MEMBERS_PIN"'
                      " --only head,pin,rotation --json"],
                     {"--remote-name NAME": "default team", "--remote-branch BRANCH": "default main",
                      "--remote-bundle-path PATH": "default vault.age",
                      "--environment NAME": "default kimen-sync-gate"}),
}


@pytest.mark.parametrize("template", sorted(DEFAULTS))
def test_defaults_are_the_spec_ones(kimen, template):
    out, commands, flags = DEFAULTS[template]
    done = kimen.ok("init", template, "--json")
    assert done.json() == {"ok": True, "action": "init_" + template.replace("-", "_"), "exit_code": 0,
                           "warnings": [], "out": str(kimen.cwd / out)}
    lines = [line.strip().removeprefix("run: ") for line in (kimen.cwd / out).read_text().splitlines()]
    for command in [*commands, f"python -m pip install kimen=={__version__}"]:
        assert command in lines, command
    help_text = " ".join(kimen.ok("init", template, "--help").stdout.split())
    assert f"--out PATH workflow file to write (default {out})" in help_text
    for flag, default in {**flags, **SHARED_FLAGS}.items():
        assert flag in help_text and (f"({default})" in help_text or f"({default};" in help_text), flag
