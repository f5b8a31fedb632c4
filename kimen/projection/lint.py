"""The lint rules of `map lint` (and doctor's profile check) over a composed profile: the
warnings (protected variables, `exec:` commands that need a wrapper, mode-only directives,
shadowed profiles) and the within-file duplicate rules, added to the errors the parser found.

Off the `run` hot path: `kimen.projection.kmap` parses and validates; only the report commands
import this module.
"""

from __future__ import annotations

from .kmap import Directive, Issue, Profile

TYPE_CHECKING = False  # collections.abc is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Iterable

_WRAPPER_CHARS = frozenset("'\"|&;<>$()`")
PROTECTED_ENV = frozenset({
    "PATH", "NODE_OPTIONS", "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "ENV", "IFS", "PERL5OPT",
    "RUBYOPT", "JAVA_TOOL_OPTIONS",
})


def is_protected_env(name: str) -> bool:
    return name in PROTECTED_ENV or name.startswith(("LD_", "DYLD_"))


def _warn(code: str, message: str, d: Directive | None = None, path: str | None = None) -> Issue:
    return Issue(code, "warning", message, d.path if d else path, d.line if d else None)


def lint_issues(profile: Profile, mode: str | None = None) -> list[Issue]:
    """Every issue of `profile`: its errors plus the lint-only rules, sorted errors first.

    The warnings that concern one projection mode only (`envpath_requires_files_dir_for_envfile`,
    `stdin_run_only`, `envfile_has_no_env_mappings`) are reported only when `mode` asks for it, so
    a profile meant for `run` passes `map lint --strict` with `envpath` and `stdin` directives.
    """
    issues = list(profile.issues)
    ds = profile.directives
    if not ds and not profile.errors():
        issues.append(Issue("empty_map", "error", "no directives", profile.source, None))
    seen: dict[tuple[int, tuple[str, str]], Directive] = {}
    kinds_dup = {"env": "env_var", "file": "file_path", "envpath": "envpath_var"}
    for d in ds:
        if d.kind == "stdin":
            continue
        key = (d.unit, (d.kind, d.target))
        first = seen.get(key)
        if first is not None:
            same = (first.ref.key if first.ref else first.relpath) == (d.ref.key if d.ref else d.relpath)
            what = kinds_dup[d.kind]
            if same:
                issues.append(_warn(f"redundant_{what}", f"{d.target} repeats line {first.line}", d))
            else:
                issues.append(Issue(f"duplicate_{what}", "error",
                                    f"{d.target} is set again with another reference (line {first.line})",
                                    d.path, d.line))
        seen[key] = d
    env_names = {d.target for d in ds if d.kind == "env"}
    for d in ds:
        if d.kind == "envpath" and d.target in env_names:
            issues.append(_warn("envpath_overrides_env_var",
                                f"{d.target} is set by both env and envpath", d))
        if d.kind in ("env", "envpath") and is_protected_env(d.target):
            issues.append(_warn("protected_env_var",
                                f"{d.target} changes how programs start; make sure you mean it", d))
        if d.ref is not None and d.ref.kind == "exec" and _WRAPPER_CHARS & set(d.ref.text):
            issues.append(_warn("exec_source_may_require_wrapper",
                                "exec: runs without a shell; quotes and shell operators are passed "
                                "literally (wrap the command in a script)", d))
        if d.kind == "envpath" and mode == "envfile":
            issues.append(_warn("envpath_requires_files_dir_for_envfile",
                                f"envfile writes {d.target} only with --files-dir", d))
        if d.kind == "stdin" and mode in ("render", "envfile"):
            issues.append(_warn("stdin_run_only", "stdin is used only by run", d))
    kinds = {d.kind for d in ds}
    if kinds == {"file"} and mode == "envfile":
        issues.append(_warn("envfile_has_no_env_mappings",
                            "only file directives: envfile has nothing to write", path=profile.source))
    for other in profile.shadowed:
        issues.append(_warn("profile_shadowed_candidates",
                            f"{other} is shadowed by {profile.source}", path=profile.source))
    return sort_issues(issues)


def sort_issues(issues: Iterable[Issue]) -> list[Issue]:
    return sorted(issues, key=lambda i: (i.severity != "error", i.code, i.path or "", i.line or 0))
