"""`migrate`: which dotenv files, into which names and profiles (docs/daily.md). Detection and
planning only: this module never opens a vault and never writes a file; the command imports the
values in one store transaction and then writes the profile texts computed here.

Detection (no FILE given) walks the root — the top of the git work tree, else the working
directory — at most `depth` directories deep (default 4, 0-8), never following symlinks, skipping
`.git`, `.kimen`, `node_modules`, `vendor`, `.venv`, `venv`, `dist`, `build`, `target`, nested git
repositories and, when git is available, the directories git ignores. In each directory D:

- `.env`, then `.env.local` (overriding per key) go to profile `--profile` (default `dev`);
- with `--all`, `.env.<p>` then `.env.<p>.local` go to profile `<p>` (a profile name); without it
  they are listed as not imported, with the command that imports them;
- never: placeholders (`.env.example`, `.env.sample`, `.env.template`, `.env.dist`,
  `.env.defaults`, and `.env.<p>.<one of those>`), dotenvx's `.env.vault` and `.env.keys`,
  `.envrc`, a symlink or a non-regular file: listed with the reason.

Names: `--prefix P`, else `<profile>.` for files at the root or given as FILE, else
`<slug>.<profile>.` with slug = D relative to the root, `/` → `-`, other characters outside
`[A-Za-z0-9_-]` → `-`, leading `-` dropped (`apps/api` → `apps-api`, `.devcontainer` →
`devcontainer`). The profile goes to `<D>/.kimen/profiles/<profile>.kmap` (FILE arguments:
`<root>/.kimen/profiles/`), where the nearest-first profile lookup finds it from inside D.

Files are parsed with `secret import`'s dotenv dialect and warnings (no interpolation); a key that
is not an environment variable name is `invalid_dotenv` (the line only, never its text), `KIMEN_*`
is `reserved_env_var`. Every file is parsed and every name and profile checked before the command
writes anything. Values are held only in memory, for the store write.
"""

from __future__ import annotations

import os

from . import errors, gitcheck
from .dotenv import MAX_FILE_BYTES, kept_literally
from .dotenv import parse as parse_dotenv
from .fsutil import read_regular
from .output import one_line, warn
from .paths import is_profile_name, work_tree_top
from .projection.kmap import check_profile_name, is_env_name, variables_set
from .store import Change
from .values import MAX_VALUE_BYTES, check_secret_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

DEFAULT_PROFILE = "dev"
DEFAULT_DEPTH = 4
MAX_DEPTH = 8
SKIPPED_DIRS = frozenset({".git", ".kimen", "node_modules", "vendor", ".venv", "venv", "dist", "build", "target"})
_PLACEHOLDERS = ("example", "sample", "template", "dist", "defaults")
NEVER = {
    **{f".env.{word}": "placeholder values, not secrets" for word in _PLACEHOLDERS},
    ".env.vault": "dotenvx ciphertext (decrypt it with dotenvx, then migrate the result)",
    ".env.keys": "dotenvx private keys",
    ".envrc": "a direnv script, not a dotenv file",
}
ALL_COMMAND = "kimen migrate --all --skip-existing --update-profile"
_SLUG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class Source:
    """One dotenv file to import into `profile` of `directory` (absolute paths)."""

    __slots__ = ("directory", "git_ignored", "git_tracked", "path", "profile")

    def __init__(self, path: str, directory: str, profile: str) -> None:
        self.path = path
        self.directory = directory
        self.profile = profile
        self.git_ignored: bool | None = None
        self.git_tracked: bool | None = None


class NotImported:
    """A file detection found and left alone, with why (and the command that imports it, if any)."""

    __slots__ = ("command", "path", "why")

    def __init__(self, path: str, why: str, command: str | None = None) -> None:
        self.path = path
        self.why = why
        self.command = command

    def as_json(self) -> dict[str, object]:
        return {"path": self.path, "why": self.why, "command": self.command}


class Detection:
    """The files to import (in group order) and the ones left alone, under `root`."""

    def __init__(self, root: str, sources: list[Source], not_imported: list[NotImported], *,
                 explicit: bool = False) -> None:
        self.root = root
        self.sources = sources
        self.not_imported = not_imported
        self.explicit = explicit


# ---------------------------------------------------------------------------------------------
# Which files
# ---------------------------------------------------------------------------------------------


def find_root(cwd: str) -> str:
    """The top of the git work tree holding `cwd`, else `cwd`."""
    return work_tree_top(cwd) or os.path.abspath(cwd)


def check_depth(depth: int) -> int:
    if not 0 <= depth <= MAX_DEPTH:
        raise errors.UsageError(detail=f"--depth must be 0-{MAX_DEPTH}, not {depth}")
    return depth


def classify(name: str, default_profile: str, all_profiles: bool) -> tuple[int, str] | str | None:
    """What a file name in a directory is: (order, profile) to import, a reason it is never (or,
    without `all_profiles`, not) imported, or None when it is no dotenv file at all."""
    if name in NEVER:
        return NEVER[name]
    # the order within one profile, later overriding: `.env`, `.env.<p>`, `.env.local`, `.env.<p>.local`
    # (the dotenv convention of Next.js, Vite and dotenv-flow when <p> is the default profile)
    if name == ".env":
        return (0, default_profile)
    if name == ".env.local":
        return (2, default_profile)
    if not name.startswith(".env."):
        return None
    rest = name[5:]
    local = rest.endswith(".local")
    profile = rest[:-6] if local else rest
    if profile.rpartition(".")[2] in _PLACEHOLDERS:
        return "placeholder values, not secrets"
    if not is_profile_name(profile):
        return f"{profile!r} is not a profile name"
    if not all_profiles:
        return f"profile {profile}: imported with --all"
    return (3 if local else 1, profile)


def detect(root: str, *, profile: str = DEFAULT_PROFILE, all_profiles: bool = False, depth: int = DEFAULT_DEPTH,
           env: Mapping[str, str] | None = None) -> Detection:
    """Walk `root` for dotenv files; `no_env_files_found` when there is none to import."""
    check_profile_name(profile)
    check_depth(depth)
    use_git = work_tree_top(root) == root
    git_env = dict(env) if env is not None else None
    found: list[tuple[str, int, str, Source]] = []
    not_imported: list[NotImported] = []
    command = ALL_COMMAND + (f" --depth {depth}" if depth != DEFAULT_DEPTH else "")
    level = [""]
    for current_depth in range(depth + 1):
        below: list[str] = []
        for rel in level:
            directory = os.path.join(root, rel) if rel else root
            try:
                with os.scandir(directory) as scan:
                    entries = sorted(scan, key=lambda e: e.name)
            except OSError as exc:
                not_imported.append(NotImported(directory, f"directory not readable ({exc.strerror})"))
                continue
            for entry in entries:
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir and current_depth < depth and entry.name not in SKIPPED_DIRS:
                    if os.path.lexists(os.path.join(entry.path, ".git")):
                        not_imported.append(NotImported(entry.path, "a nested git repository: run kimen migrate in it"))
                    else:
                        below.append(os.path.join(rel, entry.name) if rel else entry.name)
                    continue
                kind = classify(entry.name, profile, all_profiles)
                if kind is None or is_dir:
                    continue
                if isinstance(kind, str):
                    needs_all = kind.endswith("imported with --all")
                    not_imported.append(NotImported(entry.path, kind + (f" ({command})" if needs_all else ""),
                                                    command if needs_all else None))
                elif entry.is_symlink():
                    not_imported.append(NotImported(entry.path, "a symlink: name it as FILE to import it"))
                elif not entry.is_file(follow_symlinks=False):
                    not_imported.append(NotImported(entry.path, "not a regular file"))
                else:
                    order, target = kind
                    found.append((rel, order, entry.name, Source(entry.path, directory, target)))
        if use_git and below:
            ignored = gitcheck.ignored_among(root, below, git_env)
            below = [d for d in below if ignored is None or d not in ignored]
        level = below
    if not found:
        raise errors.NoEnvFilesFound(root=root, depth=depth)
    found.sort(key=lambda item: (item[0], item[3].profile != profile, item[3].profile, item[1], item[2]))
    sources = [item[3] for item in found]
    if use_git:
        rels = [os.path.relpath(s.path, root) for s in sources]
        ignored = gitcheck.ignored_among(root, rels, git_env)
        tracked = gitcheck.tracked_among(root, rels, git_env)
        for source, rel in zip(sources, rels, strict=True):
            source.git_ignored = None if ignored is None else rel in ignored
            source.git_tracked = None if tracked is None else rel in tracked
    return Detection(root, sources, not_imported)


def explicit(files: list[str], cwd: str, *, profile: str = DEFAULT_PROFILE,
             env: Mapping[str, str] | None = None) -> Detection:
    """FILE arguments: exactly these files, in order, into one profile at the root."""
    from .paths import absolute

    check_profile_name(profile)
    root = find_root(cwd)
    git_env = dict(env) if env is not None else None
    sources = []
    for given in files:
        path = absolute(given, cwd)
        source = Source(path, root, profile)
        source.git_ignored = gitcheck.is_ignored(path, git_env)
        source.git_tracked = gitcheck.is_tracked(path, git_env)
        sources.append(source)
    return Detection(root, sources, [], explicit=True)


# ---------------------------------------------------------------------------------------------
# Names, values and profiles
# ---------------------------------------------------------------------------------------------


def slug(relative_dir: str) -> str:
    """`apps/api` → `apps-api`: the directory's part of its secret names."""
    text = "".join(ch if ch in _SLUG_CHARS else "-" for ch in relative_dir.replace(os.sep, "/"))
    return text.lstrip("-") or "_"


class Key:
    """One variable of a group: its secret name, winning value and the file that gave it."""

    __slots__ = ("action", "key", "name", "source", "value")

    def __init__(self, key: str, name: str, value: bytes, source: Source) -> None:
        self.key = key
        self.name = name
        self.value = value
        self.source = source
        self.action = "create"  # create | update | skip, set by Plan.resolve

    def __repr__(self) -> str:  # never the value
        return f"Key({self.key} -> {self.name}, {self.action})"


class Group:
    """The files of one directory that go into one profile."""

    def __init__(self, directory: str, profile: str, profile_path: str, prefix: str) -> None:
        self.directory = directory
        self.profile = profile
        self.profile_path = profile_path
        self.prefix = prefix
        self.sources: list[Source] = []
        self.keys: dict[str, Key] = {}  # in order of first appearance


class ProfileWrite:
    """A profile file to write after the import: its new full text (None: nothing to add)."""

    __slots__ = ("added", "data", "existed", "path")

    def __init__(self, path: str, data: bytes | None, existed: bool, added: list[str]) -> None:
        self.path = path
        self.data = data
        self.existed = existed
        self.added = added


class Plan:
    """Every group, parsed and checked; `resolve` it against the vault's names before writing."""

    def __init__(self, detection: Detection, groups: list[Group]) -> None:
        self.root = detection.root
        self.detection = detection
        self.groups = groups

    def entries(self) -> list[Key]:
        return [k for g in self.groups for k in g.keys.values()]

    def names(self) -> list[str]:
        return [k.name for k in self.entries()]

    def resolve(self, existing: Collection[str], *, overwrite: bool = False, skip_existing: bool = False) -> None:
        """Decide create/update/skip per name against the names already in the vault:
        `secret_exists` (all listed) unless `overwrite` or `skip_existing` (warned)."""
        clashing = sorted(n for n in self.names() if n in existing)
        if clashing and not (overwrite or skip_existing):
            raise errors.SecretExists(clashing, hint="pass --overwrite to replace them (a backup is made first) "
                                                     "or --skip-existing to map the existing secrets")
        for key in self.entries():
            key.action = "create" if key.name not in existing else ("update" if overwrite else "skip")
        if clashing and skip_existing:
            warn(f"kept {len(clashing)} existing secret{'s' if len(clashing) != 1 else ''} (mapped, not imported): "
                 + ", ".join(clashing), reason="migrate_kept_existing")

    def changes(self) -> list[Change]:
        """The store writes of the import (one transaction): creates, then updates."""
        keys = self.entries()
        return ([Change.set(k.name, k.value, mode="create") for k in keys if k.action == "create"]
                + [Change.set(k.name, k.value, mode="update") for k in keys if k.action == "update"])

    def profiles(self, *, update: bool = False) -> list[ProfileWrite]:
        """The profile texts: `profile_exists` for an existing file unless `update`, which appends
        the variables the file does not set and changes no line."""
        out = []
        for group in self.groups:
            lines = [f"env {k.key}=secret:{k.name}\n" for k in group.keys.values()]
            header = f"# kimen migrate from {', '.join(self._shown(s.path) for s in group.sources)}: " \
                     "values are in the vault\n"
            if not os.path.lexists(group.profile_path):
                out.append(ProfileWrite(group.profile_path, (header + "".join(lines)).encode(), False,
                                        list(group.keys)))
                continue
            if not update:
                raise errors.ProfileExists(path=group.profile_path)
            from .fsutil import refuse_unsafe_target
            from .projection.kmap import read_profile

            # checked here, before any value is imported: the atomic write would refuse it after
            refuse_unsafe_target(group.profile_path)

            old = read_profile(group.profile_path)
            have = variables_set(old)
            added = [k for k in group.keys if k not in have]
            if not added:
                out.append(ProfileWrite(group.profile_path, None, True, []))
                continue
            text = old if old.endswith(b"\n") or not old else old + b"\n"
            text += (header + "".join(f"env {k}=secret:{group.keys[k].name}\n" for k in added)).encode()
            out.append(ProfileWrite(group.profile_path, text, True, added))
        return out

    def _shown(self, path: str) -> str:
        """A source path for the profile's header comment: one line whatever the name holds (a
        newline in a file or directory name must not end the comment and start a directive)."""
        return one_line(os.path.relpath(path, self.root))

    def files_json(self) -> list[dict[str, object]]:
        """`files` of the `migrate` envelope: per file, the names whose winning value it gave."""
        out = []
        for group in self.groups:
            for source in group.sources:
                mine = [k for k in group.keys.values() if k.source is source]
                out.append({
                    "path": source.path, "profile": group.profile, "profile_path": group.profile_path,
                    "prefix": group.prefix, "count": len(mine),
                    "created": [k.name for k in mine if k.action == "create"],
                    "updated": [k.name for k in mine if k.action == "update"],
                    "skipped": [k.name for k in mine if k.action == "skip"],
                    "git_ignored": source.git_ignored, "git_tracked": source.git_tracked,
                })
        return out

    def not_imported_json(self) -> list[dict[str, object]]:
        return [n.as_json() for n in self.detection.not_imported]

    def lines(self, cwd: str, *, dry_run: bool = False) -> list[str]:
        """The human report: per file its profile and prefix, then each name's action."""
        mark = "[dry-run] " if dry_run else ""
        out = []
        for group in self.groups:
            for source in group.sources:
                flags = [word for word, on in (("tracked by git", source.git_tracked),
                                               ("not ignored by git", source.git_ignored is False)) if on]
                out.append(f"{mark}{_rel(source.path, cwd)} -> {_rel(group.profile_path, cwd)} (prefix {group.prefix})"
                           + (f" [{', '.join(flags)}]" if flags else ""))
                out += [f"{mark}  {k.action} {k.name}" for k in group.keys.values() if k.source is source]
        out += [f"{mark}not imported: {_rel(n.path, cwd)}: {n.why}" for n in self.detection.not_imported]
        return out

    def next_steps(self, cwd: str) -> list[str]:
        """What the user does next (kimen never does it): check, remove, ignore."""
        out = []
        cwd = os.path.abspath(cwd)
        for group in self.groups:
            inside = cwd == group.directory or cwd.startswith(group.directory.rstrip(os.sep) + os.sep)
            go = "" if inside or self.detection.explicit else f"cd {_rel(group.directory, cwd)} && "
            out.append(f"check: {go}kimen run --profile {group.profile} -- <your command>")
            for source in group.sources:
                out.append(f"then: rm {_rel(source.path, cwd)}")
                if source.git_ignored is False:
                    out.append(f"add {_rel(source.path, cwd)} to .gitignore")
        return out


def _rel(path: str, cwd: str) -> str:
    """A path for the report's lines: relative, control characters escaped (`output.one_line`)."""
    return one_line(os.path.relpath(path, cwd))


def plan(detection: Detection, *, prefix: str | None = None) -> Plan:
    """Group, name, read and check every file (warnings as `secret import` gives them; a tracked
    file warns `env_file_tracked`). Raises before the command writes anything."""
    groups: dict[tuple[str, str], Group] = {}
    root = detection.root
    for source in detection.sources:
        group = groups.get((source.directory, source.profile))
        if group is None:
            if detection.explicit or source.directory == root:
                directory_prefix = f"{source.profile}."
            else:
                directory_prefix = f"{slug(os.path.relpath(source.directory, root))}.{source.profile}."
            profile_path = os.path.join(source.directory, ".kimen", "profiles", f"{source.profile}.kmap")
            group = Group(source.directory, source.profile, profile_path,
                          prefix if prefix is not None else directory_prefix)
            groups[(source.directory, source.profile)] = group
        group.sources.append(source)
    if prefix is not None and len(groups) > 1:
        raise errors.MigratePrefixAmbiguous(prefix=prefix)
    seen: dict[str, Group] = {}
    for group in groups.values():
        other = seen.setdefault(group.prefix, group)
        if other is not group:
            raise errors.MigratePrefixAmbiguous(
                message=f"{_rel(other.directory, root)} and {_rel(group.directory, root)} would share the "
                        f"names {group.prefix}*", prefix=group.prefix,
                hint="rename one of the directories, or migrate them one at a time: kimen migrate DIR/.env --prefix P")
    for group in groups.values():
        for source in group.sources:
            _read_into(group, source, root)
            if source.git_tracked:
                shown = _rel(source.path, root)
                warn(f"{shown} is tracked by git: its values are in the history; "
                     f"git rm --cached {shown} and rotate them", reason="env_file_tracked")
    return Plan(detection, list(groups.values()))


def _read_into(group: Group, source: Source, root: str) -> None:
    shown = _rel(source.path, root)
    data = read_regular(source.path, MAX_FILE_BYTES,
                        lambda problem: errors.ValueSourceFailed(detail=f"{shown}: {problem}", path=source.path))
    try:
        entries = parse_dotenv(data)
    except errors.InvalidDotenv as exc:
        line = exc.fields.get("line")
        raise errors.InvalidDotenv(message=f"{shown}: {exc.message}", path=source.path, line=line) from None
    seen: set[str] = set()
    for entry in entries:
        where = f"{shown}: line {entry.line}"
        if not is_env_name(entry.key):
            raise errors.InvalidDotenv(message=f"{shown}: invalid dotenv line {entry.line}: the key is not an "
                                               "environment variable name", path=source.path, line=entry.line)
        if entry.key.startswith("KIMEN_"):
            raise errors.ReservedEnvVar(message=f"{where}: environment variable name is reserved for kimen: "
                                                f"{entry.key}", name=entry.key, path=source.path, line=entry.line)
        name = group.prefix + entry.key
        try:
            check_secret_name(name)
        except errors.KimenError:
            raise errors.InvalidSecretName(message=f"{where}: invalid secret name: {name}", name=name,
                                           path=source.path, line=entry.line) from None
        if len(entry.value) > MAX_VALUE_BYTES:
            raise errors.SecretTooLarge(message=f"{where}: value of {name} exceeds 1 MiB", secret=name,
                                        path=source.path, line=entry.line)
        if kept_literally(entry.value):  # the key and line, never the value
            warn(f"{where}: {entry.key} imported literally (no ${{…}} interpolation, no \\$ unescaping)",
                 reason="import_not_interpolated")
        if entry.key in seen:
            warn(f"{shown}: {entry.key} is set more than once; the last value wins (line {entry.line})",
                 reason="import_key_repeated")
        seen.add(entry.key)
        key = group.keys.get(entry.key)
        if key is None:
            group.keys[entry.key] = Key(entry.key, name, entry.value, source)
        else:  # a later file (or line) overrides the value and keeps the variable's place
            key.value, key.source = entry.value, source
