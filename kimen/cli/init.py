"""`kimen init ci-pr-safety|ci-deploy|ci-sync-gate`: GitHub Actions workflows from built-in templates.

Templates live in `kimen/templates/`; actions are pinned by commit. The rendered copies shipped in
`.github/workflows/*-template.yml` (triggers reduced to `workflow_dispatch`) are produced by
`render(..., dispatch_only=True)` via `scripts/gen_ci_templates.py`; a test keeps them current.

What a flag puts into a workflow is checked here, once, for every template (docs/ci.md, "Flag
values"): a value holding `${{` (GitHub would expand it before the shell runs: a commit message or
PR title could then run in the job that holds the identity) or a line break or other control
character (it could end its YAML scalar and add keys) is `template_value_unsafe`. Free text (the
command, the install spec) only ever lands inside a literal block scalar (`run: |`) whose line
starts with kimen's own words, so YAML takes it byte for byte; names that are YAML scalars of their
own (the environment, the sync gate's branch trigger) are written double-quoted; profile and bundle
are restricted to plain shell-safe characters; the sync gate's remote location (path, branch, bundle
path) is shell-quoted after the rules `kimen remote add` applies to it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex

from .. import errors
from .model import COMMANDS, Invocation, Result
from .parser import add_command, add_group

TEMPLATES = {
    "ci-pr-safety": {"file": "ci-pr-safety.yml", "out": ".github/workflows/kimen-pr-safety.yml",
                     "triggers": "  pull_request:\n"},
    "ci-deploy": {"file": "ci-deploy.yml", "out": ".github/workflows/kimen-deploy.yml",
                  "triggers": "  push:\n    branches: [main]\n  workflow_dispatch:\n", "environment": "production"},
    # a new head arrives with a push to the remote's branch; the daily run notices a membership or
    # rotation change that no push to this repository announced
    "ci-sync-gate": {"file": "ci-sync-gate.yml", "out": ".github/workflows/kimen-sync-gate.yml",
                     "triggers": "  push:\n    branches: [__BRANCH__]\n  schedule:\n    - cron: \"17 5 * * *\"\n"
                                 "  workflow_dispatch:\n", "environment": "kimen-sync-gate"},
}
SYNC_GATE_REMOTE_TYPES = ("git",)  # CI reaches no shared directory: an fs remote cannot be gated there
_PATH = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,255}")  # not absolute, not a flag
_PLACEHOLDER = re.compile(r"__([A-Z_]+)__")
_ENVIRONMENT_MAX = 255  # GitHub's limit for an environment name


def default_install_spec() -> str:
    """The pinned requirement of this kimen (its version lives only in `kimen.__version__`)."""
    from .. import __version__

    return f"kimen=={__version__}"


def register(sub: argparse._SubParsersAction, name: str) -> None:
    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_INIT)
    p = _template_command(group, "ci-pr-safety", "workflow: lint and plan a profile on pull requests (no secrets)")
    p.add_argument("--profile", metavar="NAME", default="ci", help="profile to check (default ci)")
    p.add_argument("--command", dest="run_command", metavar="CMD", default="echo ci-check",
                   help="command to plan (default echo ci-check)")
    p = _template_command(group, "ci-deploy", "workflow: deploy with secrets projected from a committed bundle")
    p.add_argument("--profile", metavar="NAME", default="prod", help="profile to project (default prod)")
    p.add_argument("--deploy-command", dest="run_command", metavar="CMD", default="./scripts/deploy.sh",
                   help="command to run (default ./scripts/deploy.sh)")
    p.add_argument("--bundle", metavar="FILE", default="vault.age",
                   help="bundle path in the repository (default vault.age)")
    p.add_argument("--environment", metavar="NAME", default="production",
                   help="GitHub environment of the deploy job; its protection rules guard the identity "
                        "(default production)")
    p = _template_command(group, "ci-sync-gate",
                          "workflow: check a team's sync head and pinned members (no vault, no passphrase)")
    p.add_argument("--remote-name", metavar="NAME", default="team", help="the remote's name in the job (default team)")
    p.add_argument("--remote-type", metavar="TYPE", default="git", help="the remote's type: git (the default and "
                   "the only type a CI job can reach)")
    p.add_argument("--remote-path", metavar="URL", default="",
                   help="the team's git repository (URL or path); empty (the default): the repository the "
                        "workflow runs in, checked out at --remote-branch")
    p.add_argument("--remote-branch", metavar="BRANCH", default="main", help="the remote's branch (default main)")
    p.add_argument("--remote-bundle-path", metavar="PATH", default="vault.age",
                   help="the head's path in the repository (default vault.age)")
    p.add_argument("--environment", metavar="NAME", default="kimen-sync-gate",
                   help="GitHub environment of the gate job, which holds the reader identity (default kimen-sync-gate)")


def _template_command(group: argparse._SubParsersAction, template: str, help: str) -> argparse.ArgumentParser:
    """`init <template>` with the flags every template shares: --out, --force and --install-spec."""
    p = add_command(group, template, help, handler=cmd_init)
    out = TEMPLATES[template]["out"]
    p.add_argument("--out", metavar="PATH", default=out, help=f"workflow file to write (default {out})")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--install-spec", metavar="SPEC", default=None,
                   help="what the install step passes to `python -m pip install`, verbatim; may carry pip "
                        f"options (default {default_install_spec()}; see docs/ci.md for a git URL, a wheel "
                        "or a private index)")
    p.set_defaults(template=template)
    return p


def _checked(flag: str, value: str) -> str:
    """`value` if a workflow can hold it as written: one printable line without a GitHub expression."""
    if "${{" in value:
        raise errors.TemplateValueUnsafe(
            flag=flag, detail="it holds `${{`, which GitHub expands before the step runs")
    if not value.isprintable():  # newlines, CR, NEL, U+2028/9, tabs and other control characters
        raise errors.TemplateValueUnsafe(
            flag=flag, detail="it holds a line break or another control character")
    return value


def render(template: str, *, profile: str = "ci", command: str = "echo ci-check", bundle: str = "vault.age",
           environment: str | None = None, install_spec: str | None = None, remote_name: str = "team",
           remote_type: str = "git", remote_path: str = "", remote_branch: str = "main",
           remote_bundle_path: str = "vault.age", dispatch_only: bool = False) -> str:
    """The workflow text; refuses values that could break out of their YAML or shell slot."""
    from importlib import resources

    install_spec = default_install_spec() if install_spec is None else install_spec
    spec = TEMPLATES[template]
    environment = spec.get("environment", "") if environment is None else environment
    _checked("--install-spec", install_spec)
    if not install_spec.strip():
        raise errors.InitFailed(detail="--install-spec must not be empty")
    values = {"INSTALL_SPEC": install_spec}
    if template == "ci-sync-gate":
        values.update(_sync_gate_values(remote_name, remote_type, remote_path, remote_branch, remote_bundle_path))
    else:
        values.update(_project_values(template, profile, command, bundle))
    if "environment" in spec:  # the jobs that hold the identity
        values.update(_environment_values(environment))
    text = resources.files("kimen").joinpath("templates", spec["file"]).read_text(encoding="utf-8")
    triggers = "  workflow_dispatch:" if dispatch_only else spec["triggers"].rstrip("\n")
    values["TRIGGERS"] = triggers.replace("__BRANCH__", values.get("BRANCH_SCALAR", ""))
    # one pass: a value that happens to contain `__PROFILE__` is never substituted again
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _project_values(template: str, profile: str, command: str, bundle: str) -> dict[str, str]:
    """The placeholders of the templates that read a profile: ci-pr-safety and ci-deploy."""
    from ..paths import is_profile_name

    command_flag = "--deploy-command" if template == "ci-deploy" else "--command"
    for flag, value in (("--profile", profile), (command_flag, command), ("--bundle", bundle)):
        _checked(flag, value)
    if not is_profile_name(profile) or profile.startswith("-"):  # "-x" would read as a flag after --profile
        raise errors.InvalidProfileName(name=profile)
    parts = bundle.split("/")
    if not _PATH.fullmatch(bundle) or any(part in ("", "..") for part in parts) or parts[-1] == ".":
        raise errors.InitFailed(detail="--bundle must be a relative file path of [A-Za-z0-9_./-] without `..` "
                                       "or empty components (`.kimen/vault.age`, `deploy/vault.age`)")
    if not command.strip():
        raise errors.InitFailed(detail=f"{command_flag} must not be empty")
    return {"PROFILE": profile, "BUNDLE": bundle, "COMMAND": command}


def _environment_values(environment: str) -> dict[str, str]:
    """The job's GitHub environment (its protection rules guard the identity), checked."""
    _checked("--environment", environment)
    if not environment or environment != environment.strip() or len(environment) > _ENVIRONMENT_MAX:
        raise errors.InitFailed(
            detail=f"--environment must be 1 to {_ENVIRONMENT_MAX} characters, without leading or trailing spaces")
    # JSON strings are YAML double-quoted scalars: any name reads back as itself (`yes`, `1.0`, `a: b`)
    return {"ENVIRONMENT": json.dumps(environment, ensure_ascii=False),
            "CONCURRENCY_GROUP": json.dumps(f"kimen-deploy-{environment}", ensure_ascii=False)}


def _filter_literal(branch: str) -> str:
    """`branch` as a GitHub Actions filter pattern that matches exactly it: `*`, `?`, `+`, `[`, `]`,
    `!` and `\\` are pattern syntax there, each escaped with a backslash."""
    return "".join("\\" + c if c in "*?+[]!\\" else c for c in branch)


def _sync_gate_values(name: str, kind: str, path: str, branch: str, bundle_path: str) -> dict[str, str]:
    """The placeholders of ci-sync-gate: the remote as `kimen remote add` would accept it, each value
    one shell word (quoted when it needs it); an empty path is the repository the workflow runs in."""
    from ..sync.git import check_branch, check_bundle_path
    from .sync import _check_name

    for flag, value in (("--remote-name", name), ("--remote-type", kind), ("--remote-path", path),
                        ("--remote-branch", branch), ("--remote-bundle-path", bundle_path)):
        _checked(flag, value)
    _check_name(name)
    if kind not in SYNC_GATE_REMOTE_TYPES:
        raise errors.InvalidRemoteType(type=kind[:20])
    if path != path.strip() or path.startswith("-"):
        raise errors.InitFailed(detail="--remote-path must not start with '-' or a space, nor end with a space")
    try:
        check_branch(branch)
    except errors.GitFailed:
        raise errors.InitFailed(detail="--remote-branch must be a branch name git accepts") from None
    check_bundle_path(bundle_path)
    checkout_ref = f"          ref: {json.dumps(branch)}\n" if not path else ""
    return {
        "REMOTE_NAME": name, "REMOTE_TYPE": kind,
        "REMOTE_PATH": shlex.quote(path) if path else '"$GITHUB_WORKSPACE"',
        "REMOTE_BRANCH": shlex.quote(branch), "REMOTE_BUNDLE_PATH": shlex.quote(bundle_path),
        "CHECKOUT_REF": checkout_ref, "BRANCH_SCALAR": json.dumps(_filter_literal(branch), ensure_ascii=False),
    }


def _make_dirs(directory: str) -> None:
    """Create missing parents 0755 (workflow files are not secret)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)  # noqa: S103 - workflow directories are public
        except FileExistsError:
            raise errors.OutputIsDirectory(path=path) if os.path.isdir(path) else \
                errors.InitFailed(detail=f"{path}: exists and is not a directory") from None
        except OSError as exc:
            raise errors.InitFailed(detail=f"{path}: {exc.strerror}") from None


def cmd_init(inv: Invocation) -> Result:
    from .. import fsutil
    from ..paths import absolute

    args = inv.options
    if args.template == "ci-sync-gate":
        text = render(args.template, install_spec=args.install_spec, environment=args.environment,
                      remote_name=args.remote_name,
                      remote_type=args.remote_type, remote_path=args.remote_path, remote_branch=args.remote_branch,
                      remote_bundle_path=args.remote_bundle_path)
    else:
        text = render(args.template, profile=args.profile, command=args.run_command,
                      bundle=getattr(args, "bundle", "vault.age"),
                      environment=getattr(args, "environment", "production"), install_spec=args.install_spec)
    out = absolute(args.out)
    if os.path.isdir(out):
        raise errors.OutputIsDirectory(path=out)
    if os.path.lexists(out) and not args.force:
        raise errors.OutputExists(path=out)
    _make_dirs(os.path.dirname(out))
    data = text.encode("utf-8")
    if args.force:
        fsutil.atomic_write(out, data, mode=0o644, failed=errors.InitFailed)
    else:
        fsutil.write_exclusive(out, data, mode=0o644, exists=errors.OutputExists, failed=errors.InitFailed)
    return Result("init_" + args.template.replace("-", "_"), f"wrote {out}", {"out": out})
