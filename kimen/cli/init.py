"""`kimen init ci-pr-safety|ci-deploy` (SPEC §10): GitHub Actions workflows from built-in templates.

Templates live in `kimen/templates/`; actions are pinned by commit. The rendered copies shipped in
`.github/workflows/*-template.yml` (triggers reduced to `workflow_dispatch`) are produced by
`render(..., dispatch_only=True)` via `scripts/gen_ci_templates.py`; a test keeps them current.
"""

from __future__ import annotations

import argparse
import os
import re

from .. import errors
from . import COMMANDS, Context, Result
from .parser import add_command, add_group

TEMPLATES = {
    "ci-pr-safety": {"file": "ci-pr-safety.yml", "out": ".github/workflows/kimen-pr-safety.yml",
                     "triggers": "  pull_request:\n"},
    "ci-deploy": {"file": "ci-deploy.yml", "out": ".github/workflows/kimen-deploy.yml",
                  "triggers": "  push:\n    branches: [main]\n  workflow_dispatch:\n"},
}
_PROFILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,255}")


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


def _template_command(group: argparse._SubParsersAction, template: str, help: str) -> argparse.ArgumentParser:
    """`init <template>` with the flags every template shares: --out (its default path) and --force."""
    p = add_command(group, template, help, handler=cmd_init)
    out = TEMPLATES[template]["out"]
    p.add_argument("--out", metavar="PATH", default=out, help=f"workflow file to write (default {out})")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(template=template)
    return p


def render(template: str, *, profile: str, command: str, bundle: str = "vault.age",
           dispatch_only: bool = False) -> str:
    """The workflow text; refuses values that could break out of their YAML or shell slot."""
    from importlib import resources

    from .. import __version__

    if not _PROFILE.fullmatch(profile):
        raise errors.InvalidProfileName(name=profile)
    if not _PATH.fullmatch(bundle) or ".." in bundle.split("/"):
        raise errors.InitFailed(detail="--bundle must be a relative path of [A-Za-z0-9_./-]")
    if not command.strip() or not command.isprintable():
        raise errors.InitFailed(detail="the command must be one non-empty line of printable text")
    spec = TEMPLATES[template]
    text = resources.files("kimen").joinpath("templates", spec["file"]).read_text(encoding="utf-8")
    triggers = "  workflow_dispatch:\n" if dispatch_only else spec["triggers"]
    return (text.replace("__TRIGGERS__\n", triggers).replace("__PROFILE__", profile)
            .replace("__BUNDLE__", bundle).replace("__KIMEN_VERSION__", __version__)
            .replace("__COMMAND__", command))


def _make_dirs(directory: str) -> None:
    """Create missing parents 0755 (workflow files are not secret, SPEC §2.2)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)  # noqa: S103 - workflow directories are public (SPEC §10)
        except FileExistsError:
            raise errors.OutputIsDirectory(path=path) if os.path.isdir(path) else \
                errors.InitFailed(detail=f"{path}: exists and is not a directory") from None
        except OSError as exc:
            raise errors.InitFailed(detail=f"{path}: {exc.strerror}") from None


def cmd_init(ctx: Context) -> Result:
    from .. import fsutil
    from ..paths import absolute

    args = ctx.args
    out = absolute(args.out)
    if os.path.isdir(out):
        raise errors.OutputIsDirectory(path=out)
    if os.path.lexists(out) and not args.force:
        raise errors.OutputExists(path=out)
    text = render(args.template, profile=args.profile, command=args.run_command,
                  bundle=getattr(args, "bundle", "vault.age"))
    _make_dirs(os.path.dirname(out))
    data = text.encode("utf-8")
    if args.force:
        fsutil.atomic_write(out, data, mode=0o644, failed=errors.InitFailed)
    else:
        fsutil.write_exclusive(out, data, mode=0o644, exists=errors.OutputExists, failed=errors.InitFailed)
    return Result("init_" + args.template.replace("-", "_"), f"wrote {out}", {"out": out})
