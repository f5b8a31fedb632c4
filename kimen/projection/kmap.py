"""The `.kmap` profile language: line parser, references, validation, includes, lookup and
composition with inline flags (the lint rules of `map lint` are `kimen.projection.lint`'s).

Pure in the sense that matters: it reads profile files and nothing else — no vault, no `exec:`, no
writes. Every problem becomes an `Issue` carrying the precise `KimenError`; commands raise the first
error, `map lint` reports them all. Messages name `path:line` and never echo a line or any part of
a reference beyond a *valid* secret, env or profile name: a mistyped line may hold a value, so an
invalid name is described, not shown.
"""

from __future__ import annotations

import os

from .. import errors, paths
from ..paths import is_profile_name
from ..values import is_valid_secret_name

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

MAX_PROFILE_BYTES = 1024 * 1024
MAX_INCLUDE_DEPTH = 16
MAX_RELPATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
INLINE = "<inline>"
OWNER_FILE = ".kimen-owner"  # the owner record of a private runtime dir
KINDS = ("env", "file", "envpath", "stdin", "include")

# Sets rather than regular expressions: compiling each costs ~0.3 ms on every `run`.
_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_ENV_CHARS = _LETTERS | frozenset("0123456789")  # [A-Za-z_][A-Za-z0-9_]*
_EXEC_BLANKS = str.maketrans("\t\f\v", "   ")  # exec: arguments split on [ \t\f\v]+

# reason of the raised error -> lint code, where they differ
_LINT_CODE = {
    "envpath_requires_projected_files": "envpath_missing_file",
    "envpath_missing_projected_file": "envpath_missing_file",
    "map_unreadable": "include_not_found",
    "invalid_profile_name": "invalid_map",
}


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class Ref:
    """The right side of a directive. `text` is the reference as written (shown by `plan`)."""

    __slots__ = ("argv", "const", "kind", "name", "text")

    def __init__(self, kind: str, text: str, name: str | None = None, const: bytes | None = None,
                 argv: tuple[str, ...] | None = None) -> None:
        self.kind = kind  # "secret" | "const" | "exec"
        self.text = text
        self.name = name  # secret name
        self.const = const
        self.argv = argv

    def __repr__(self) -> str:
        return f"Ref({self.kind}, {self.name or self.argv or '<const>'})"

    @property
    def key(self) -> tuple[str, object]:
        """Identity for "same reference" (a bare name equals `secret:name`)."""
        if self.kind == "secret":
            return ("secret", self.name)
        if self.kind == "exec":
            return ("exec", self.argv)
        return ("const", self.const)


class Directive:
    """One effective line or inline flag. Compared and hashed by identity (a dict key for values)."""

    __slots__ = ("kind", "line", "path", "ref", "relpath", "target", "unit")

    def __init__(self, kind: str, target: str, path: str, line: int, ref: Ref | None = None,
                 relpath: str | None = None, unit: int = 0) -> None:
        self.kind = kind  # env | file | envpath | stdin
        self.target = target  # env name, relative path, or "" for stdin
        self.path = path  # profile file, or <inline>
        self.line = line
        self.ref = ref  # env, file, stdin
        self.relpath = relpath  # envpath
        self.unit = unit  # which loaded file (duplicates are judged within one file)

    def __repr__(self) -> str:
        return f"Directive({self.kind} {self.target} at {self.where})"

    @property
    def slot(self) -> tuple[str, str]:
        """The target a later directive overrides: env and envpath share the variable names."""
        if self.kind in ("env", "envpath"):
            return ("var", self.target)
        if self.kind == "file":
            return ("file", self.target)
        return ("stdin", "")

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


class Issue:
    """One problem found in a profile; `error` is what a command raises for it."""

    __slots__ = ("code", "error", "line", "message", "path", "severity")

    def __init__(self, code: str, severity: str, message: str, path: str | None, line: int | None,
                 error: errors.KimenError | None = None) -> None:
        self.code = code
        self.severity = severity  # "error" | "warning"
        self.message = message  # without the location
        self.path = path
        self.line = line
        self.error = error

    def as_json(self) -> dict[str, object]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "path": self.path, "line": self.line}


class Profile:
    """A composed profile: the directives in composition order and everything found wrong."""

    def __init__(self) -> None:
        self.source: str | None = None
        self.directives: list[Directive] = []
        self.issues: list[Issue] = []
        self.include_count = 0
        self.shadowed: list[str] = []
        self.files: list[str] = []  # every file loaded: the profile, then its includes (direnv watches them)

    def winners(self) -> list[Directive]:
        """The directive that wins each target (the later one), in composition order."""
        last: dict[tuple[str, str], int] = {}
        for i, d in enumerate(self.directives):
            last[d.slot] = i
        keep = set(last.values())
        return [d for i, d in enumerate(self.directives) if i in keep]

    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    def check(self) -> Profile:
        """Raise the first error (commands stop at it; `map lint` reports all)."""
        for issue in self.issues:
            if issue.error is not None and issue.severity == "error":
                raise issue.error
        return self


# ---------------------------------------------------------------------------------------------
# Names and paths
# ---------------------------------------------------------------------------------------------


def is_env_name(name: str) -> bool:
    return bool(name) and name[0] in _LETTERS and _ENV_CHARS.issuperset(name)


def relpath_problem(path: str) -> str | None:
    """Why `path` cannot name a file under a files dir, or None."""
    if path == "":
        return "path is empty"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_RELPATH_BYTES:
        return "path is longer than 1024 bytes"
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in path):
        return "path contains a control character"
    if "\\" in path:
        return "path contains a backslash"
    if path.startswith("/"):
        return "path is absolute"
    for part in path.split("/"):
        if part == "":
            return "path has an empty component"
        if part in (".", ".."):
            return "path has a '.' or '..' component"
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            return "path component is longer than 255 bytes"
    return None


def check_private_dir_targets(directives: Iterable[Directive]) -> None:
    """Refuse a `file` that would collide with the owner record of a private runtime dir.

    `run` without `--files-dir` keeps `.kimen-owner` at the top of the dir it creates; checked with
    the profile (before anything is resolved), so `plan` predicts it too."""
    for d in directives:
        if d.kind == "file" and d.target.split("/", 1)[0] == OWNER_FILE:
            detail = f"{OWNER_FILE} is reserved in the private runtime dir (use --files-dir)"
            raise errors.InvalidRelativePath(f"{d.where}: {detail}", path=d.path, line=d.line, detail=detail)


# ---------------------------------------------------------------------------------------------
# One line / one inline flag
# ---------------------------------------------------------------------------------------------


class _Fail(Exception):
    """Internal: a line is unusable; carries the issue."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.code)
        self.issue = issue


def _issue(cls: type[errors.KimenError], path: str, line: int, detail: str, *,
           code: str | None = None, **fields: Any) -> Issue:
    err = cls(f"{path}:{line}: {detail}", path=path, line=line, detail=detail, **fields)
    return Issue(code or _LINT_CODE.get(cls.reason, cls.reason), "error", detail, path, line, err)


def _fail(cls: type[errors.KimenError], path: str, line: int, detail: str, **kw: Any) -> _Fail:
    return _Fail(_issue(cls, path, line, detail, **kw))


def parse_ref(text: str, path: str, line: int) -> Ref:
    """A reference: prefixes tested in order const:, secret:, exec:, else a bare name."""
    if text.startswith("const:"):
        return Ref("const", text, const=text[6:].encode("utf-8", "surrogateescape"))
    if text.startswith("exec:"):
        argv = tuple(t for t in text[5:].translate(_EXEC_BLANKS).split(" ") if t)
        if not argv:
            raise _fail(errors.InvalidMap, path, line, "exec: needs a command",
                        code="exec_source_empty_command")
        if "\0" in text:  # no argv word can hold one (execve): refused here, not by the start
            raise _fail(errors.InvalidMap, path, line, "exec: command contains a NUL byte")
        return Ref("exec", text, argv=argv)
    name = text[7:] if text.startswith("secret:") else text
    if not is_valid_secret_name(name):
        raise _fail(errors.InvalidSecretName, path, line,
                    "invalid secret name in reference (names are dot-separated [A-Za-z0-9_-] segments)")
    return Ref("secret", text, name=name)


def _var_name(name: str, path: str, line: int) -> str:
    if not is_env_name(name):
        raise _fail(errors.InvalidEnvVar, path, line,
                    "invalid environment variable name (expected [A-Za-z_][A-Za-z0-9_]*)")
    if name.startswith("KIMEN_"):
        raise _fail(errors.ReservedEnvVar, path, line,
                    f"environment variable {name} is reserved for kimen", name=name)
    return name


def _relpath(rel: str, path: str, line: int) -> str:
    problem = relpath_problem(rel)
    if problem:
        raise _fail(errors.InvalidRelativePath, path, line, problem)
    return rel


def _split_mapping(rest: str, path: str, line: int, inline: bool, expected: str) -> tuple[str, str]:
    """`lhs=rhs`; a bad one raises `InvalidMapping` for an inline flag, else `InvalidMap` (looked up
    only then: `kimen.errors` reads its table on the first lookup of a class)."""
    eq = rest.find("=")
    if eq <= 0:
        raise _fail(_mapping_error(inline), path, line, f"expected {expected}")
    lhs, rhs = rest[:eq].strip(" \t"), rest[eq + 1:].strip(" \t")
    if not lhs or not rhs:
        raise _fail(_mapping_error(inline), path, line, "empty side")
    return lhs, rhs


def _mapping_error(inline: bool) -> type[errors.KimenError]:
    return errors.InvalidMapping if inline else errors.InvalidMap


def build_directive(kind: str, rest: str, path: str, line: int, unit: int,
                    inline: bool = False, expected: str = "lhs=value") -> Directive | tuple[str, str]:
    """A directive from its kind and the text after it. `include` yields ("include", name). A bad
    mapping is `invalid_map`, or `invalid_mapping` for an inline flag."""
    if kind == "stdin":
        return Directive("stdin", "", path, line, ref=parse_ref(rest, path, line), unit=unit)
    if kind == "include":
        return ("include", rest)
    lhs, rhs = _split_mapping(rest, path, line, inline, expected)
    if kind == "env":
        return Directive("env", _var_name(lhs, path, line), path, line,
                         ref=parse_ref(rhs, path, line), unit=unit)
    if kind == "file":
        return Directive("file", _relpath(lhs, path, line), path, line,
                         ref=parse_ref(rhs, path, line), unit=unit)
    return Directive("envpath", _var_name(lhs, path, line), path, line,
                     relpath=_relpath(rhs, path, line), unit=unit)


def _process_line(raw: str) -> str:
    """The first steps of line processing: CR, trim, comment. Returns "" for lines to skip."""
    if raw.endswith("\r"):
        raw = raw[:-1]
    text = raw.strip(" \t")
    hash_at = text.find("#")
    if hash_at > 0 and text[hash_at - 1] in " \t":
        text = text[:hash_at].strip(" \t")
    if not text or text.startswith("#"):
        return ""
    return text


def parse_line(raw: str, path: str, line: int, unit: int = 0) -> Directive | tuple[str, str] | None:
    """One profile line: a directive, ("include", name), or None for blanks and comments."""
    text = _process_line(raw)
    if not text:
        return None
    cut = min((i for i in (text.find(" "), text.find("\t")) if i >= 0), default=-1)
    if cut < 0:
        raise _fail(errors.InvalidMap, path, line, "expected '<kind> <mapping>'")
    kind, rest = text[:cut], text[cut + 1:].strip(" \t")
    if kind not in KINDS:
        raise _fail(errors.InvalidMap, path, line,
                    "unknown kind (expected env, file, envpath, stdin or include)")
    return build_directive(kind, rest, path, line, unit)


def variables_set(data: bytes) -> set[str]:
    """The variables a profile file sets by its own `env` and `envpath` lines (includes are not
    followed; lines that do not parse set nothing): what `migrate --update-profile` leaves alone."""
    found: set[str] = set()
    for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        try:
            item = parse_line(raw, "", number)
        except _Fail:
            continue
        if isinstance(item, Directive) and item.kind in ("env", "envpath"):
            found.add(item.target)
    return found


def parse_inline(kind: str, text: str, index: int) -> Directive:
    """One inline flag (`--env`, `--file`, `--envpath`, `--stdin`) as exactly one directive:
    `#` is literal and a newline is refused (it could otherwise smuggle a second directive)."""
    try:
        if "\n" in text:
            raise _fail(errors.InvalidMapping, INLINE, index, f"--{kind} value contains a newline")
        d = build_directive(kind, text.strip(" \t"), INLINE, index, -1, True,
                            "NAME=REF" if kind != "file" else "RELPATH=REF")
    except _Fail as exc:
        raise exc.issue.error from None  # type: ignore[misc]
    assert isinstance(d, Directive)
    return d


# ---------------------------------------------------------------------------------------------
# Files, lookup, includes
# ---------------------------------------------------------------------------------------------


def read_profile(path: str) -> bytes:
    """A profile's bytes; a FIFO, directory or device is refused (`map_unreadable`), never waited on."""
    from ..fsutil import read_regular

    return read_regular(
        path, MAX_PROFILE_BYTES,
        lambda problem: errors.MapUnreadable(f"cannot read map: {path} ({problem})", path=path),
        too_large=lambda: errors.InvalidMap(f"{path}: profile is larger than 1 MiB", path=path, line=None))


def check_profile_name(name: str) -> str:
    if not is_profile_name(name):
        raise errors.InvalidProfileName(
            "invalid profile name (expected [A-Za-z0-9_-][A-Za-z0-9_.-]*)" if name
            else "invalid profile name: empty")
    return name


def profile_candidates(name: str, env: Mapping[str, str], cwd: str | None = None) -> list[str]:
    """Every existing regular file for profile `name`, in lookup order."""
    found = []
    for directory in paths.profile_dirs(env, cwd):
        candidate = os.path.join(directory, f"{name}.kmap")
        if os.path.isfile(candidate):
            found.append(candidate)
    return found


def find_profile(name: str, env: Mapping[str, str], cwd: str | None = None) -> tuple[str, list[str]]:
    """The winning file for profile `name` and the lower-precedence files it shadows."""
    check_profile_name(name)
    found = profile_candidates(name, env, cwd)
    if not found:
        raise _not_found(name, env, cwd)
    return found[0], found[1:]


def _not_found(name: str, env: Mapping[str, str], cwd: str | None) -> errors.KimenError:
    """`profile_not_found` with the directories searched, where to create it, and near names."""
    from ..suggest import nearest

    cwd = cwd or os.getcwd()
    searched = paths.profile_dirs(env, cwd)
    names: set[str] = set()
    for directory in searched:
        try:
            with os.scandir(directory) as entries:
                names.update(e.name[:-5] for e in entries if e.name.endswith(".kmap") and is_profile_name(e.name[:-5]))
        except OSError:
            continue
    suggestions = nearest(name, names, most=3)
    top = paths.work_tree_top(cwd) or os.path.abspath(cwd)
    hint = [f"create {os.path.join(top, '.kimen', 'profiles', name + '.kmap')} or set KIMEN_PROFILE_DIR"]
    if suggestions:
        hint.append(f"did you mean {', '.join(suggestions)}?")
    return errors.ProfileNotFound(name=name, hint=hint, searched=searched, suggestions=suggestions)


class _Loader:
    def __init__(self, profile: Profile, env: Mapping[str, str], cwd: str | None) -> None:
        self.profile = profile
        self.env = env
        self.cwd = cwd
        self.stack: list[str] = []  # real paths being expanded
        self.shown: list[str] = []  # the same, as displayed
        self.done: set[str] = set()
        self.units = 0

    def load(self, path: str) -> None:
        real = os.path.realpath(path)
        self.stack.append(real)
        self.shown.append(path)
        self.units += 1
        unit = self.units
        self.profile.files.append(path)
        try:
            data = read_profile(path)
            self._lines(data, path, unit)
        finally:
            self.stack.pop()
            self.shown.pop()
            self.done.add(real)

    def _lines(self, data: bytes, path: str, unit: int) -> None:
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.profile.issues.append(_issue(errors.InvalidMap, path, number, "invalid UTF-8"))
                continue
            try:
                item = parse_line(text, path, number, unit)
            except _Fail as exc:
                self.profile.issues.append(exc.issue)
                continue
            if item is None:
                continue
            if isinstance(item, Directive):
                self.profile.directives.append(item)
            else:
                self._include(item[1], path, number)

    def _include(self, name: str, path: str, line: int) -> None:
        issues = self.profile.issues
        if not is_profile_name(name):
            issues.append(_issue(errors.InvalidProfileName, path, line,
                                 "invalid profile name in include"))
            return
        local = os.path.join(os.path.dirname(path), f"{name}.kmap")
        if os.path.isfile(local):
            target = local
        else:
            found = profile_candidates(name, self.env, self.cwd)
            if not found:
                issues.append(_issue(errors.IncludeNotFound, path, line, f"include not found: {name}",
                                     name=name))
                return
            target = found[0]
        real = os.path.realpath(target)
        if real in self.stack:
            start = self.stack.index(real)
            chain = " -> ".join([*self.shown[start:], target])
            err = errors.IncludeCycle(f"{path}:{line}: include cycle: {chain}", path=path, line=line)
            issues.append(Issue("include_cycle", "error", f"include cycle: {chain}", path, line, err))
            return
        if real in self.done:
            return  # already included: skipped
        if len(self.stack) > MAX_INCLUDE_DEPTH:
            issues.append(_issue(errors.InvalidMap, path, line, "includes nested deeper than 16"))
            return
        self.profile.include_count += 1
        try:
            self.load(target)
        except errors.KimenError as exc:
            code = _LINT_CODE.get(exc.reason, exc.reason)
            issues.append(Issue(code, "error", exc.message, path, line, exc))


def load(
    *,
    map_path: str | None = None,
    profile: str | None = None,
    inline: Sequence[tuple[str, str]] = (),
    env: Mapping[str, str] = os.environ,
    cwd: str | None = None,
) -> Profile:
    """Compose the profile (includes in place) then the inline flags, and validate.

    Raises for a source that cannot be loaded at all (both or bad source, not found, unreadable);
    everything else is recorded in `Profile.issues` — call `.check()` to stop at the first error.
    """
    if map_path is not None and profile is not None:
        raise errors.ConflictingMapProfileInputs()
    result = Profile()
    loader = _Loader(result, env, cwd)
    if profile is not None:
        path, result.shadowed = find_profile(profile, env, cwd)
    elif map_path is not None:
        path = paths.absolute(map_path, cwd) if map_path else map_path
        if not map_path:
            raise errors.MapUnreadable("cannot read map: empty path", path="")
    else:
        path = None
    if path is not None:
        result.source = path
        loader.load(path)
    for index, (kind, text) in enumerate(inline, start=1):
        result.directives.append(parse_inline(kind, text, index))
    _compose_checks(result)
    return result


def _compose_checks(profile: Profile) -> None:
    issues = profile.issues
    stdins = [d for d in profile.directives if d.kind == "stdin"]
    for extra in stdins[1:]:
        issues.append(_issue(errors.DuplicateStdin, extra.path, extra.line,
                             "more than one stdin directive"))
    winners = profile.winners()
    files = {d.target for d in winners if d.kind == "file"}
    for d in winners:
        if d.kind == "file":
            parts = d.target.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in files:
                    issues.append(_issue(errors.InvalidRelativePath, d.path, d.line,
                                         "file path is below another projected file",
                                         code="file_path_conflicts_with_directory"))
                    break
        elif d.kind == "envpath" and d.relpath not in files:
            if not files:
                issues.append(_issue(errors.EnvpathRequiresProjectedFiles, d.path, d.line,
                                     f"envpath {d.target} needs a file directive, and the profile "
                                     "projects no files", name=d.target))
            else:
                issues.append(_issue(errors.EnvpathMissingProjectedFile, d.path, d.line,
                                     f"envpath {d.target} names a file that no file directive projects",
                                     name=d.target))
