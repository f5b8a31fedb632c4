"""`plan` and `--dry-run`: a projection described without values (docs/run.md), as the plan
document (`plan --json`), its human lines, and its difference from another profile.

A leaf of `kimen.cli` beside `kimen.cli.pipeline`, whose steps it predicts (which directives win,
which files and variables, whether `run` execs in place); it imports no command module. Off the
`run` hot path: only `plan`, `project plan` and `--dry-run` import it.
"""

from __future__ import annotations

import os

from .. import errors
from .pipeline import bundle_given, envfile_vars, files_dir_arg

TYPE_CHECKING = False  # typing itself is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from ..projection.kmap import Profile
    from .model import Invocation


def _check_bundle_names(inv: Invocation, names: list[str]) -> dict[str, Any]:
    """`plan --bundle`: every referenced name is in the bundle (names only, never values)."""
    from .bundle_opts import bundle_store

    store = bundle_store(inv)
    try:
        found = store.names(names)
        document = store.document
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing, path=store.path,
                                        known=[i.name for i in store.list()])
    finally:
        store.close()
    return {"path": store.path, "generation": document.generation,
            "signer": document.signer, "secrets_present": len(names)}


def plan_doc(inv: Invocation, profile: Profile, mode: str, argv: list[str] | None,
             against: Profile | None = None) -> dict[str, Any]:
    """The plan object (docs/run.md); never a value (references as written)."""
    from ..projection.resolve import exec_commands, secret_names

    files_dir = files_dir_arg(inv)
    winners = profile.winners()
    if mode == "envfile":  # envfile writes the files too, with --files-dir only
        envs, paths = envfile_vars(profile, files_dir)
        files = [d for d in winners if d.kind == "file"] if files_dir is not None else []
        stdin = None
    else:
        envs = [d for d in winners if d.kind == "env"] if mode == "run" else []
        paths = [d for d in winners if d.kind == "envpath"] if mode == "run" else []
        files = [d for d in winners if d.kind == "file"]
        stdin = next((d for d in winners if d.kind == "stdin"), None) if mode == "run" else None
    used = [*envs, *files, *([stdin] if stdin else [])]
    if mode == "run":  # literals are known: check them as run will (no secret is read for this)
        from ..projection.env import check_exec_block

        literals = {d.target: d.ref.const for d in envs if d.ref is not None and d.ref.kind == "const"}
        check_exec_block(literals, argv or [])  # type: ignore[arg-type]  # consts only (ref.const is set for them); envpath directives carry a relpath
    private = mode == "run" and bool(files) and files_dir is None
    if private:
        from ..projection.kmap import check_private_dir_targets

        check_private_dir_targets(files)
    if mode == "render":
        files_dir = None  # render writes to its --dir or --systemd-service target, never a files dir
    doc: dict[str, Any] = {
        "mode": mode,
        "command": list(argv) if argv else None,
        "source": profile.source,
        "profile_path": profile.source,
        "profile_source": getattr(inv.options, "profile_source", None),
        "env": [{"var": d.target, "source": d.ref.text} for d in envs],  # type: ignore[union-attr]  # env, file and stdin directives always carry a reference
        "files": [{"path": d.target, "source": d.ref.text} for d in files],  # type: ignore[union-attr]  # env, file and stdin directives always carry a reference
        "envpath": [{"var": d.target, "path": d.relpath,
                     "resolved_path": os.path.join(files_dir, d.relpath) if files_dir else None}  # type: ignore[arg-type]  # consts only (ref.const is set for them); envpath directives carry a relpath
                    for d in paths],
        "stdin": stdin.ref.text if stdin is not None else None,  # type: ignore[union-attr]  # env, file and stdin directives always carry a reference
        "secrets": secret_names(used),
        "exec": [list(a) for a in exec_commands(used)],
        "files_dir": files_dir if (files or paths) else None,
        "cleanup": private,
        "exec_in_place": mode == "run" and not private and stdin is None and not _masked(inv),
        "against": against.source if against is not None else None,
        "diff": _diff(profile, against) if against is not None else None,
    }
    if bundle_given(inv):
        doc["bundle"] = _check_bundle_names(inv, doc["secrets"])
    return doc


def _masked(inv: Invocation) -> bool:
    """`run --mask` / `--strict-mask`: always supervised (plan's `exec_in_place` is false)."""
    return bool(getattr(inv.options, "mask", False) or getattr(inv.options, "strict_mask", False))


def _diff(mine: Profile, other: Profile) -> dict[str, Any]:
    def table(p: Profile, kind: str) -> dict[str, str]:
        return {d.target: (d.ref.text if d.ref else d.relpath) for d in p.winners() if d.kind == kind}  # type: ignore[misc]  # env and file directives carry a reference, envpath ones a relpath

    out: dict[str, Any] = {}
    for kind, key, label in (("env", "var", "env"), ("file", "path", "files"), ("envpath", "var", "envpath")):
        a, b = table(mine, kind), table(other, kind)
        out[f"{label}_added"] = sorted(set(a) - set(b))
        out[f"{label}_removed"] = sorted(set(b) - set(a))
        out[f"{label}_changed"] = [{key: k, "from": b[k], "to": a[k]} for k in sorted(set(a) & set(b))
                                   if a[k] != b[k]]
    s1 = next((d.ref.text for d in mine.winners() if d.kind == "stdin"), None)  # type: ignore[union-attr]  # env, file and stdin directives always carry a reference
    s2 = next((d.ref.text for d in other.winners() if d.kind == "stdin"), None)  # type: ignore[union-attr]  # env, file and stdin directives always carry a reference
    out["stdin_changed"] = s1 != s2
    return out


def print_plan(inv: Invocation, profile: Profile, mode: str, argv: list[str] | None,
               against: Profile | None = None) -> int:
    from ..output import print_json, print_lines, success_envelope

    doc = plan_doc(inv, profile, mode, argv, against)
    if inv.json:
        print_json(success_envelope("plan", doc))
        return 0
    import shlex

    lines = [f"mode: {mode}", f"profile: {doc['profile_path'] or '(inline only)'}"]
    if mode == "run":
        lines.append(f"command: {shlex.join(argv) if argv else '(none)'}")
    for title, items, a, b in (("env", doc["env"], "var", "source"), ("files", doc["files"], "path", "source"),
                               ("envpath", doc["envpath"], "var", "path")):
        lines.append(f"{title}:" if items else f"{title}: (none)")
        lines.extend(f"  - {item[a]} <= {item[b]}" for item in items)
    lines.append(f"stdin: {doc['stdin'] or '(none)'}")
    if doc["files_dir"]:
        lines.append(f"files-dir: {doc['files_dir']}")
    elif doc["files"] and mode == "render":
        lines.append("files-dir: (the render target: --dir or --systemd-service)")
    else:
        lines.append(f"files-dir: {'(private runtime dir)' if doc['cleanup'] else '(none)'}")
    if mode == "run":
        lines.append(f"cleanup: {'yes' if doc['cleanup'] else 'no'}")
    lines.append(f"secrets: {', '.join(doc['secrets']) or '(none)'}")
    if doc.get("bundle"):
        lines.append(f"bundle: {doc['bundle']['path']} (all {len(doc['secrets'])} referenced secrets present)")
    if doc["exec"]:
        lines.append("exec:")
        lines.extend(f"  - {shlex.join(cmd)}" for cmd in doc["exec"])
    if against is not None:
        lines.append(f"against: {doc['against'] or '(inline)'}")
        diff = doc["diff"]
        for label in ("env", "files", "envpath"):
            lines.extend(f"  + {label} {x}" for x in diff[f"{label}_added"])
            lines.extend(f"  - {label} {x}" for x in diff[f"{label}_removed"])
            key = "path" if label == "files" else "var"
            lines.extend(f"  ~ {label} {c[key]}: {c['from']} -> {c['to']}" for c in diff[f"{label}_changed"])
        if diff["stdin_changed"]:
            lines.append("  ~ stdin")
    print_lines(lines)
    return 0
