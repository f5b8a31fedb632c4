"""`kimen init ci-pr-safety|ci-deploy`: GitHub Actions workflows from built-in templates.

Templates live in `kimen/templates/`; actions are pinned by commit. The rendered copies shipped in
`.github/workflows/*-template.yml` (triggers reduced to `workflow_dispatch`) are produced by
`render(..., dispatch_only=True)` via `scripts/gen_ci_templates.py`; a test keeps them current.

What a flag puts into a workflow is checked here, once, for every template (docs/ci.md, "Flag
values"): a value holding `${{` (GitHub would expand it before the shell runs: a commit message or
PR title could then run in the job that holds the identity) or a line break or other control
character (it could end its YAML scalar and add keys) is `template_value_unsafe`. Free text (the
command, the install spec) only ever lands inside a literal block scalar (`run: |`) whose line
starts with kimen's own words, so YAML takes it byte for byte; names that are YAML scalars of their
own (the environment) are written double-quoted; profile and bundle are restricted to plain
shell-safe characters.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from .. import errors
from .model import COMMANDS, Invocation, Result
from .parser import add_command, add_group

TEMPLATES = {
    "ci-pr-safety": {"file": "ci-pr-safety.yml", "out": ".github/workflows/kimen-pr-safety.yml",
                     "triggers": "  pull_request:\n"},
    "ci-deploy": {"file": "ci-deploy.yml", "out": ".github/workflows/kimen-deploy.yml",
                  "triggers": "  push:\n    branches: [main]\n  workflow_dispatch:\n"},
}
_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,255}")
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


def render(template: str, *, profile: str, command: str, bundle: str = "vault.age",
           environment: str = "production", install_spec: str | None = None,
           dispatch_only: bool = False) -> str:
    """The workflow text; refuses values that could break out of their YAML or shell slot."""
    from importlib import resources

    from ..paths import is_profile_name

    command_flag = "--deploy-command" if template == "ci-deploy" else "--command"
    install_spec = default_install_spec() if install_spec is None else install_spec
    for flag, value in (("--profile", profile), (command_flag, command), ("--bundle", bundle),
                        ("--environment", environment), ("--install-spec", install_spec)):
        _checked(flag, value)
    if not is_profile_name(profile) or profile.startswith("-"):  # "-x" would read as a flag after --profile
        raise errors.InvalidProfileName(name=profile)
    if not _PATH.fullmatch(bundle) or ".." in bundle.split("/"):
        raise errors.InitFailed(detail="--bundle must be a relative path of [A-Za-z0-9_./-]")
    if not command.strip():
        raise errors.InitFailed(detail=f"{command_flag} must not be empty")
    if not install_spec.strip():
        raise errors.InitFailed(detail="--install-spec must not be empty")
    if not environment or environment != environment.strip() or len(environment) > _ENVIRONMENT_MAX:
        raise errors.InitFailed(
            detail=f"--environment must be 1 to {_ENVIRONMENT_MAX} characters, without leading or trailing spaces")
    spec = TEMPLATES[template]
    text = resources.files("kimen").joinpath("templates", spec["file"]).read_text(encoding="utf-8")
    values = {
        "TRIGGERS": "  workflow_dispatch:" if dispatch_only else spec["triggers"].rstrip("\n"),
        "PROFILE": profile, "BUNDLE": bundle, "COMMAND": command, "INSTALL_SPEC": install_spec,
        # JSON strings are YAML double-quoted scalars: any name reads back as itself (`yes`, `1.0`, `a: b`)
        "ENVIRONMENT": json.dumps(environment, ensure_ascii=False),
        "CONCURRENCY_GROUP": json.dumps(f"kimen-deploy-{environment}", ensure_ascii=False),
    }
    # one pass: a value that happens to contain `__PROFILE__` is never substituted again
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


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
