"""The git transport: a team's head as one file on a branch (docs/sync.md, "Remotes and
transports"). It runs the git CLI itself (no GitPython: importing it cost more than the git
processes of a `sync status`).

Each remote gets a bare cache repository, `<cache>/git/<first 16 hex of SHA-256(url NUL branch)>/`
(0700): no work tree, no checkout, never a git merge.

- read: `ls-remote` asks the remote which commit the branch points at now; when the cache does not
  hold that commit, fetch `+refs/heads/<branch>:refs/remotes/origin/<branch>` (no tags); then read
  the blob `<bundle_path>` of that commit (one `cat-file --batch`); a missing branch or file is no
  head. Git names every object by the hash of its content, so a commit the cache holds is exactly
  the remote's: the answer is always the remote's current head, never a cached one. The branch is
  taken as it is, rewritten or not: a force-pushed older head comes back as what it is, and the
  puller's acceptance rule refuses it (`remote_rollback`, `remote_fork`); the transport adopts
  nothing. A publish fetches (it builds on the tracking ref).
- publish: the new head as a blob, the tip's tree with only `<bundle_path>` replaced (through a
  private index), a commit whose only parent is the tip (an orphan on a missing branch), pushed as
  `<commit>:refs/heads/<branch>` and never forced: a non-fast-forward rejection is a lost race.
  Then `ls-remote` must show the branch at that commit (`sync_push_unconfirmed` otherwise).

**Environment.** Every git process gets exactly `kimen.gitcheck.git_environ` (no private
variable, no `GIT_*` but the SSH, askpass and author/committer ones, prompts off, a private
`GIT_INDEX_FILE`) with `LC_ALL=C` and `LANGUAGE=C` (git's messages are read), and `-c
core.hooksPath=<empty dir> -c core.fsmonitor=false -c protocol.ext.allow=never` (and, for the
ciphertext it moves, `-c core.compression=0 -c pack.window=0`: no zlib, no delta search), with
`--git-dir` naming the cache; nothing of kimen's own environment is merged in.

Errors: git's first error line (`git_failed`), with the credentials of any URL removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from contextlib import contextmanager

from .. import errors
from ..durations import format_time
from ..environ import which
from ..fsutil import directory_problem, make_private_dirs, read_regular, unlink_quietly
from ..gitcheck import git_environ
from ..paths import cache_dir
from .base import HeadRev, LostRace, ProbeReport, Published, RemoteHead, check_member_id, is_lower_hex, remote_rev
from .transport import MAX_HEAD_BYTES, check_head, testOnlyPause

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import BinaryIO

    from .base import PublishResult

DEFAULT_BRANCH = "main"
DEFAULT_BUNDLE_PATH = "vault.age"
FALLBACK_IDENTITY = ("kimen", "kimen@localhost")
_HOOKS = "kimen-hooks"  # an empty directory: core.hooksPath, so no hook ever runs
_INDEX = "kimen-index"
_LOCK = "kimen.lock"
_KNOWN = "kimen-head"  # `<commit> <rev>`: the head file of the commit kimen last read (and checked) or pushed
# through the last `@` before the host (a password may hold `@`); compiled only for a text holding "@"
_CREDENTIALS = r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@"
_FILE_MODES = ("100644", "100755")
_ENTRY_KINDS = {"120000": "a symlink", "040000": "a directory", "160000": "a submodule"}
_BAD_REF_CHARS = frozenset(" ~^:?*[\\\x7f")
_MAX_OBJECT = 64 * 1024 * 1024  # a commit or tree on the head's path (a head itself: MAX_HEAD_BYTES)


def _tree_entry(tree: bytes, name: str, id_bytes: int) -> tuple[str, str] | None:
    """(mode as `ls-tree` shows it, object id in hex) of the entry `name` of a raw tree object
    (entries `<mode> <name>\\0<id>`), or None."""
    wanted = name.encode("utf-8", "surrogateescape")
    pos = 0
    while pos < len(tree):
        space = tree.find(b" ", pos)
        nul = tree.find(b"\0", space + 1)
        if space < 0 or nul < 0 or nul + 1 + id_bytes > len(tree):
            raise errors.GitFailed(detail="git cat-file: a tree that does not parse")
        if tree[space + 1:nul] == wanted:
            return tree[pos:space].decode("ascii", "replace").zfill(6), tree[nul + 1:nul + 1 + id_bytes].hex()
        pos = nul + 1 + id_bytes
    return None


# What the cache repository stores and sends is age ciphertext, which neither zlib nor a delta
# against the previous head makes smaller (every head is encrypted afresh): objects are written
# without compression and a push searches no deltas (about a quarter of the CPU of a push's git
# processes on a 1.8 MB head). The remote repository stores what it receives by its own settings.
_CIPHERTEXT_CONFIG = ("-c", "core.compression=0", "-c", "pack.window=0")


def redact(text: str) -> str:
    """`text` without the user:password part of any URL in it."""
    if "@" not in text:  # nothing to take out; `sync status` need not import `re`
        return text
    import re

    return re.sub(_CREDENTIALS, r"\1", text)


def _first_error_line(*outputs: str) -> str:
    lines = [line.strip() for output in outputs for line in output.splitlines() if line.strip()]
    chosen = next((line for line in lines if line.startswith(("fatal:", "error:", "remote: error", "ERROR"))),
                  lines[0] if lines else "no message")
    return "".join(c for c in redact(chosen) if c.isprintable())[:300]


def check_bundle_path(path: str) -> str:
    """A bundle path is relative, made of non-empty segments, none `.`, `..` or `.git`."""
    if not path or "\0" in path or "\n" in path or "\r" in path:
        raise errors.InvalidBundlePath(detail="empty or with a control character")
    if path.startswith("/"):
        raise errors.InvalidBundlePath(detail=f"{path!r} is absolute")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise errors.InvalidBundlePath(detail=f"{path!r} has an empty, '.' or '..' segment")
        if segment.lower() == ".git":
            raise errors.InvalidBundlePath(detail=f"{path!r} has a .git segment")
    return path


def check_branch(branch: str) -> str:
    """A branch name git accepts (git-check-ref-format's rules) that no git option can mistake."""
    parts = branch.split("/")
    if (not branch or branch.startswith("-") or branch == "@" or ".." in branch or "@{" in branch
            or any(ord(c) < 32 or c in _BAD_REF_CHARS for c in branch) or branch.endswith((".", ".lock"))
            or any(not part or part.startswith(".") or part.endswith(".lock") for part in parts)):
        raise errors.GitFailed(detail=f"invalid branch name: {''.join(c for c in branch if c.isprintable())[:80]!r}")
    return branch


def cache_path(url: str, branch: str, env: Mapping[str, str] | None = None) -> str:
    """`<cache>/git/<first 16 hex of SHA-256(url NUL branch)>`."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape") + b"\0" + branch.encode()).hexdigest()
    return os.path.join(cache_dir(os.environ if env is None else env), "git", digest[:16])


class _Missing(Exception):
    """An object the cache repository does not hold (before a fetch: fetch it)."""


class _Done:
    __slots__ = ("code", "err", "out")

    def __init__(self, code: int, out: bytes, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace").strip()


class GitTransport:
    """A git remote: `<bundle_path>` on `<branch>` of the repository at `url` (a path, `file://`,
    ssh or https URL), through a bare cache repository."""

    kind = "git"

    def __init__(self, url: str, *, branch: str = DEFAULT_BRANCH, bundle_path: str = DEFAULT_BUNDLE_PATH,
                 env: Mapping[str, str] | None = None, cache: str | None = None) -> None:
        if not url or url.startswith("-") or any(ord(c) < 32 for c in url):
            raise errors.GitFailed(detail="invalid repository location")
        self.url = url
        self.branch = check_branch(branch)
        self.bundle_path = check_bundle_path(bundle_path)
        self.location = f"{redact(url)} ({branch}:{bundle_path})"
        self.cache = cache or cache_path(url, branch, env)
        self._tracking = f"refs/remotes/origin/{branch}"
        self._environ = git_environ(env, index_file=os.path.join(self.cache, _INDEX))
        search = self._environ.get("PATH", os.defpath)
        self._git_exe = which("git", search)  # kimen's PATH lookup (no shutil import)
        self._environ.update(LC_ALL="C", LANGUAGE="C")

    def __repr__(self) -> str:
        return f"GitTransport({self.location!r})"

    # -- running git -----------------------------------------------------------------------------

    def _command(self, *args: str) -> list[str]:
        if self._git_exe is None:
            raise errors.GitFailed(detail="git is not installed (not found on PATH)")
        return [self._git_exe, "-C", self.cache, f"--git-dir={self.cache}",
                "-c", f"core.hooksPath={os.path.join(self.cache, _HOOKS)}", "-c", "core.fsmonitor=false",
                "-c", "protocol.ext.allow=never", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
                *_CIPHERTEXT_CONFIG, *args]

    def _run(self, *args: str, stdin: BinaryIO | None = None, env: Mapping[str, str] | None = None) -> _Done:
        from ..capture import capture

        try:
            done = capture(self._command(*args), env={**self._environ, **(env or {})},
                           stdin=stdin.fileno() if stdin is not None else None)
        except OSError as exc:
            raise errors.GitFailed(detail=type(exc).__name__) from None
        return _Done(done.code, done.out, done.err.decode("utf-8", "replace"))

    def _check(self, *args: str, stdin: BinaryIO | None = None, env: Mapping[str, str] | None = None) -> _Done:
        done = self._run(*args, stdin=stdin, env=env)
        if done.code != 0:
            raise errors.GitFailed(detail=_first_error_line(done.err, done.text))
        return done

    @contextmanager
    def _cache_locked(self) -> Iterator[None]:
        """The cache repository, created when missing, under an flock for one operation (so two
        kimen processes of this user never share its refs or index at once)."""
        import fcntl

        try:
            if not os.path.lexists(self.cache):
                make_private_dirs(self.cache)
            problem = directory_problem(self.cache)
            if problem:
                raise errors.SyncFailed(detail=f"git cache {self.cache} {problem}")
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(os.path.join(self.cache, _LOCK), flags, 0o600)
        except OSError as exc:
            raise errors.SyncFailed(detail=f"git cache {self.cache}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._prepare()
            yield
        finally:
            os.close(fd)

    def _prepare(self) -> None:
        """Create the repository and its empty hooks directory when missing, and remove the git
        lock files a git killed with kimen left (no other git runs here while we hold the flock)."""
        hooks = os.path.join(self.cache, _HOOKS)
        try:
            if not os.path.isdir(hooks):
                os.mkdir(hooks, 0o700)
            stale = [os.path.join(root, name) for root, _dirs, names in os.walk(os.path.join(self.cache, "refs"))
                     for name in names if name.endswith(".lock")]
            stale += [os.path.join(self.cache, name) for name in ("HEAD.lock", "config.lock", "packed-refs.lock",
                                                                  "shallow.lock", "index.lock", _INDEX + ".lock")]
            for path in stale:
                unlink_quietly(path)
        except OSError as exc:
            raise errors.SyncFailed(detail=f"git cache {self.cache}: {exc.strerror}") from None
        if not os.path.exists(os.path.join(self.cache, "HEAD")):
            self._check("init", "--bare", "--quiet", f"--template={hooks}", self.cache)

    # -- reading ---------------------------------------------------------------------------------

    def _fetch_branch(self) -> bool:
        """Fetch the branch into the tracking ref; False (and no tracking ref) when the remote has
        no such branch."""
        done = self._run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                         "--", self.url, f"+refs/heads/{self.branch}:{self._tracking}")
        if done.code != 0:
            if "couldn't find remote ref" in done.err:
                self._run("update-ref", "-d", self._tracking)
                return False
            raise errors.GitFailed(detail=_first_error_line(done.err, done.text))
        return True

    def _fetch(self) -> str | None:
        """Fetch the branch; its commit, or None when the remote has no such branch."""
        if not self._fetch_branch():
            return None
        return self._check("rev-parse", "--verify", "--quiet", f"{self._tracking}^{{commit}}").text

    def _fetch_head(self) -> tuple[str | None, bytes | None]:
        """Fetch the branch: (its commit, the bytes of `<bundle_path>` in it), each None when absent.
        Two git processes: the fetch, and one `cat-file --batch` for the rest (`_at`)."""
        if not self._fetch_branch():
            return None, None
        try:
            return self._at(self._tracking)
        except _Missing as missing:
            raise errors.GitFailed(detail=f"git object {missing} is missing after the fetch") from None

    def _current_head(self, tip: str | None = None) -> tuple[str | None, bytes | None]:
        """(the branch's commit on the remote now, the bytes of `<bundle_path>` in it), each None
        when absent. `ls-remote` asks the remote for the commit (unless given as `tip`); when the
        cache repository already holds that commit (git names every object by the hash of its
        content, so the same id is the same commit, tree and file), it is read from there without a
        fetch, else fetched first."""
        tip = tip or self._ls_tip()
        if tip is None:
            return None, None
        try:
            return self._at(tip)
        except _Missing:
            return self._fetch_head()

    def _checked(self, commit: str, data: bytes, known: Callable[[bytes], str | None] | None = None) -> str:
        """The rev of the head file `data` of `commit` (`known(data)`, else hashed), after the
        transport checks; remembered."""
        check_head(data, f"{self.bundle_path} on {self.branch}")
        rev = (known(data) if known is not None else None) or remote_rev(data)
        self._remember(commit, rev)
        return rev

    def _remember(self, commit: str, rev: str) -> None:
        """Keep `<commit> <rev>` in the cache (under its flock; a torn write reads as nothing)."""
        path = os.path.join(self.cache, _KNOWN)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        with contextlib.suppress(OSError):
            fd = os.open(path, flags, 0o600)
            try:
                os.write(fd, f"{commit} {rev}\n".encode("ascii"))
            finally:
                os.close(fd)

    def _recall(self) -> tuple[str, str] | None:
        """The `(commit, rev)` `_remember` kept, or None (none, or not what it writes)."""
        try:
            data = read_regular(os.path.join(self.cache, _KNOWN), 200, OSError, follow_symlinks=False)
        except OSError:
            return None
        parts = data.decode("ascii", "replace").split()
        if len(parts) != 2 or len(parts[0]) not in (40, 64) or not is_lower_hex(parts[0], len(parts[0])) \
                or not is_lower_hex(parts[1], 64) or not data.endswith(b"\n"):
            return None
        return parts[0], parts[1]

    def _ls_tip(self) -> str | None:
        """The commit the remote's branch points at now (`git ls-remote`), None without the branch."""
        ref = f"refs/heads/{self.branch}"
        done = self._check("ls-remote", "--", self.url, ref)
        for line in done.text.splitlines():
            sha, _tab, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def _blob(self, commit: str) -> bytes | None:
        """The bytes of `<bundle_path>` in `commit` (None when absent)."""
        try:
            return self._at(commit)[1]
        except _Missing as missing:
            raise errors.GitFailed(detail=f"git object {missing} is missing") from None

    def _at(self, rev: str) -> tuple[str, bytes | None]:
        """(the commit `rev` names, the bytes of `<bundle_path>` in it or None when absent), read
        through one `git cat-file --batch`: the commit, then each tree down the path (a tree entry
        gives the mode, so only a regular file is read, never a symlink, directory or submodule),
        then the blob, each object's size checked before its bytes are read."""
        import subprocess

        shown = f"{self.bundle_path} on {self.branch}"
        try:
            proc = subprocess.Popen(self._command("cat-file", "--batch"), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    env=self._environ)
        except OSError as exc:
            raise errors.GitFailed(detail=type(exc).__name__) from None
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None  # both are pipes

        def ask(name: str, limit: int) -> tuple[str, str, bytes]:
            """(id, type, bytes) of the object `name` (`_Missing` when the cache has none)."""
            try:
                stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
                stdin.flush()
                header = stdout.readline().decode("ascii", "replace").split()
                if len(header) == 2 and header[1] == "missing":
                    raise _Missing(name)
                if len(header) != 3 or not header[2].isdigit():
                    raise errors.GitFailed(detail=f"git cat-file: unexpected answer for {name}")
                size = int(header[2])
                if size > limit:
                    raise (errors.BundleTooLarge(path=shown) if limit == MAX_HEAD_BYTES else
                           errors.SyncFailed(detail=f"{shown}: a git object on its path is too large"))
                body = stdout.read(size)
                end = stdout.read(1)  # the newline after the object
            except OSError as exc:
                raise errors.GitFailed(detail=f"git cat-file: {exc.strerror}") from None
            if len(body) != size or end != b"\n":
                raise errors.GitFailed(detail="git cat-file stopped early")
            return header[0], header[1], body

        try:
            commit = ask(f"{rev}^{{commit}}", _MAX_OBJECT)[0]
            tree: bytes | None = ask(f"{commit}^{{tree}}", _MAX_OBJECT)[2]
            segments = self.bundle_path.split("/")
            for depth, segment in enumerate(segments):
                entry = _tree_entry(tree, segment, len(commit) // 2) if tree is not None else None
                if entry is None:
                    return commit, None
                mode, sha = entry
                if depth < len(segments) - 1:
                    tree = ask(sha, _MAX_OBJECT)[2] if mode == "040000" else None
                    continue
                if mode not in _FILE_MODES:
                    raise errors.SyncFailed(
                        detail=f"{shown} is {_ENTRY_KINDS.get(mode, 'not a file')}, not the head file",
                        hint="kimen reads only a regular file there")
                return commit, ask(sha, MAX_HEAD_BYTES)[2]
            return commit, None
        finally:
            with contextlib.suppress(OSError):
                stdin.close()
            proc.kill()
            proc.wait()

    def read_head(self) -> RemoteHead | None:
        with self._cache_locked():
            commit, data = self._current_head()
            if data is None or commit is None:
                return None
            return RemoteHead(data, self._checked(commit, data), commit)

    def head_rev(self, known: Callable[[bytes], str | None] | None = None) -> HeadRev | None:
        with self._cache_locked():
            tip = self._ls_tip()
            if tip is None:
                return None
            kept = self._recall()
            if kept is not None and kept[0] == tip:
                return HeadRev(kept[1], tip)
            commit, data = self._current_head(tip)
            if data is None or commit is None:
                return None
            return HeadRev(self._checked(commit, data, known), commit)

    def history(self, seq: int) -> bytes | None:
        """The head of seq `seq` from the branch's history: the newest commit whose message (kimen's
        own, `kimen sync push … seq <n> by …`) names it."""
        with self._cache_locked():
            if self._fetch() is None:
                return None
            found = self._check("rev-list", "--first-parent", "-n", "1", "-E",
                                f"--grep=^kimen sync push [^ ]+ seq {int(seq)} by ", self._tracking).text
            data = self._blob(found) if found else None
        if data is not None:
            check_head(data, f"{self.bundle_path} at seq {seq}")
        return data

    # -- publishing ------------------------------------------------------------------------------

    @contextmanager
    def locked(self, wait: float | None = None) -> Iterator[None]:
        """Nothing to hold: a push is never forced, so a head that moved meanwhile is a lost race."""
        yield

    def _identity_env(self) -> dict[str, str]:
        """The user's git identity when git has one, else kimen's own."""
        if all(self._run("var", var).code == 0 for var in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT")):
            return {}
        name, email = FALLBACK_IDENTITY
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
                "GIT_COMMITTER_EMAIL": email}

    def _commit(self, new: bytes, parent: str | None, message: str) -> str:
        import tempfile

        with tempfile.TemporaryFile(dir=self.cache) as blob_input:
            blob_input.write(new)
            blob_input.seek(0)
            blob = self._check("hash-object", "-w", "--no-filters", "--stdin", stdin=blob_input).text
        index = os.path.join(self.cache, _INDEX)
        try:
            os.unlink(index)
        except FileNotFoundError:
            pass
        if parent is not None:
            self._check("read-tree", parent)
        self._check("update-index", "--add", "--cacheinfo", f"100644,{blob},{self.bundle_path}")
        tree = self._check("write-tree").text
        parents = ["-p", parent] if parent is not None else []
        return self._check("commit-tree", "--no-gpg-sign", tree, *parents, "-m", message,
                           env=self._identity_env()).text

    def _remote_tip(self) -> str | None:
        ref = f"refs/heads/{self.branch}"
        done = self._run("ls-remote", "--", self.url, ref)
        if done.code != 0:
            raise errors.SyncPushUnconfirmed(detail=_first_error_line(done.err, done.text))
        for line in done.text.splitlines():
            sha, _tab, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def publish(self, new: bytes, expected_rev: str | None, *, seq: int, by: str,
                expected_seq: int | None) -> PublishResult:
        check_member_id(by)
        with self._cache_locked():
            tip = self._fetch()
            kept = self._recall() if tip is not None else None
            if kept is not None and kept[0] == tip:
                actual: str | None = kept[1]  # the commit kimen last read or pushed: the same blob
            else:
                current = self._blob(tip) if tip else None
                actual = remote_rev(current) if current is not None else None
            if actual != expected_rev:
                return LostRace(actual)
            testOnlyPause("before_write")
            commit = self._commit(new, tip, f"kimen sync push {format_time()} seq {int(seq)} by {by}")
            testOnlyPause("after_write")
            pushed = self._run("push", "--porcelain", "--no-verify", "--no-follow-tags", "--no-signed",
                               "--recurse-submodules=no", "--", self.url, f"{commit}:refs/heads/{self.branch}")
            if pushed.code != 0:
                # Rejected as non-fast-forward, or beaten to the remote's ref lock by a push landing
                # at the same moment: either way the branch moved, which makes it a lost race.
                moved, now = self._fetch_head()
                if moved != tip:
                    return LostRace(remote_rev(now) if now is not None else None)
                rejected = [line for line in pushed.text.splitlines() if line.startswith("!")]
                raise errors.GitFailed(detail=_first_error_line(pushed.err, *rejected))
            testOnlyPause("after_replace")
            remote = self._remote_tip()
            if remote != commit:
                raise errors.SyncPushUnconfirmed(
                    detail=f"branch {self.branch} points at {remote[:12] if remote else 'nothing'}, "
                           f"not at the pushed commit {commit[:12]}")
            self._run("update-ref", self._tracking, commit)
            rev = remote_rev(new)
            self._remember(commit, rev)
        return Published(rev, commit)

    # -- probing ---------------------------------------------------------------------------------

    def probe(self) -> ProbeReport:
        """The repository answers (`git_failed` otherwise)."""
        with self._cache_locked():
            self._check("ls-remote", "--", self.url, f"refs/heads/{self.branch}")
        return ProbeReport(self.location)
