"""Projected files: private runtime dirs, `--files-dir`, render dirs.

Every write goes through directory file descriptors opened with O_NOFOLLOW, so a symlink planted
anywhere under a directory kimen writes into is refused rather than followed. Runtime dirs are
`run-<random>` (`run`) or `edit-<random>` (`secret edit`) under the runtime base (tmpfs when
available), 0700, with a `.kimen-owner` record (pid and process start time) so the next `run` or
`edit` can remove the leftovers of a SIGKILLed kimen, whichever command left them;
files in them are created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW, 0600) and fsynced. `--files-dir`
and render targets are user directories: files there are replaced atomically (`fsutil.replace_at`:
a locked `<name>.kimen-tmp-<hex>` temp file + rename). Removal never follows symlinks.
"""

from __future__ import annotations

import os
import stat
import time

from .. import errors, fsutil, paths, procs
from .kmap import OWNER_FILE

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ORPHAN_GRACE_SECONDS = 60


# ---------------------------------------------------------------------------------------------
# Directory-fd helpers
# ---------------------------------------------------------------------------------------------


def open_subdirs(root_fd: int, parts: list[str], error: type[errors.KimenError], root_shown: str) -> int:
    """Walk (creating 0700 as needed) `parts` below `root_fd`; returns a new fd of the last one.

    A component that exists as a symlink or a non-directory is refused with `error`, naming it.
    """
    fd = os.dup(root_fd)
    try:
        for depth, part in enumerate(parts, 1):
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                raise error(path=os.path.join(root_shown, *parts[:depth]),
                            problem="is a symlink or not a directory") from None
            if created:
                os.fchmod(child, 0o700)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def remove_tree_at(parent_fd: int, name: str) -> None:
    """Remove directory `name` below `parent_fd` and everything in it, never following symlinks."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError:
        fsutil.unlink_quietly(name, dir_fd=parent_fd)  # a symlink or a file where a dir was expected: unlink it
        return
    try:
        with os.scandir(fd) as entries:
            items = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for entry, is_dir in items:
            if is_dir:
                remove_tree_at(fd, entry)
            else:
                fsutil.unlink_quietly(entry, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError:
        pass


def write_files(root_fd: int, root_shown: str, files: Iterable[tuple[str, bytes]], *, replace: bool,
                error: type[errors.KimenError]) -> list[str]:
    """Write each (relpath, data) below `root_fd`; returns the paths written, as shown.

    replace: atomic replacement (`fsutil.replace_at`, each directory swept of dead writers' temp
    files once), else exclusive creation (a fresh private runtime dir). A directory the user named
    (`replace`) is checked for every file before the first is written: a symlink or another
    non-regular file in the way, or a subdirectory that is a symlink, refuses them all."""
    dirs: dict[tuple[str, ...], int] = {}  # each directory opened once, whatever its file count
    targets: list[tuple[int, str, bytes, str]] = []  # (its directory's fd, file name, data, shown)
    try:
        for rel, data in files:  # every directory opened, and in a user's directory every file's
            parts = rel.split("/")  # place checked, before the first file is written
            shown = os.path.join(root_shown, rel)
            where = tuple(parts[:-1])
            if where not in dirs:
                dirs[where] = open_subdirs(root_fd, parts[:-1], error, root_shown)
            targets.append((dirs[where], parts[-1], data, shown))
            if replace:
                fsutil.refuse_unsafe_target(parts[-1], dir_fd=dirs[where], shown=shown)
        swept: set[int] = set()
        for fd, name, data, shown in targets:
            if replace:
                fsutil.replace_at(fd, name, data, shown=shown, sweep=fd not in swept)
                swept.add(fd)
            else:
                fsutil.write_exclusive(name, data, dir_fd=fd, shown=shown)
    finally:
        for fd in dirs.values():
            os.close(fd)
    return [shown for *_rest, shown in targets]


def open_dir(path: str, error: type[errors.KimenError]) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise error(path=path, problem=f"cannot open: {exc.strerror}") from None


# ---------------------------------------------------------------------------------------------
# Private runtime dirs
# ---------------------------------------------------------------------------------------------


RUNTIME_KINDS = ("run", "edit")  # the private dirs kimen makes under the runtime base: `<kind>-<random>`


class RuntimeDir:
    """A private `<kind>-<random>` dir under the runtime base; `remove()` is idempotent."""

    def __init__(self, base: str, name: str, base_fd: int, fd: int) -> None:
        self.base = base
        self.name = name
        self.path = os.path.join(base, name)
        self.base_fd = base_fd
        self.fd = fd

    def write(self, files: Iterable[tuple[str, bytes]]) -> None:
        write_files(self.fd, self.path, files, replace=False, error=errors.UnsafeFilesDir)

    def remove(self) -> None:
        if self.fd < 0:
            return
        os.close(self.fd)
        self.fd = -1
        remove_tree_at(self.base_fd, self.name)
        os.close(self.base_fd)
        self.base_fd = -1


def runtime_base(env: Mapping[str, str]) -> str:
    """The runtime base, created 0700 or checked: refused if foreign or loose."""
    base = paths.runtime_base(env)
    fsutil.ensure_private_dir(base, errors.UnsafeFilesDir, strict=True)
    return base


def sweep_stale(base_fd: int) -> list[str]:
    """Remove `run-*` and `edit-*` dirs whose owner process is gone (a SIGKILLed kimen); returns
    their names."""
    removed = []
    now = time.time()
    prefixes = tuple(f"{kind}-" for kind in RUNTIME_KINDS)
    with os.scandir(base_fd) as entries:
        candidates = [e.name for e in entries if e.name.startswith(prefixes)]
    for name in candidates:
        try:
            st = os.lstat(name, dir_fd=base_fd)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        owner = _read_owner(base_fd, name)
        if owner is None:
            if now - st.st_mtime < ORPHAN_GRACE_SECONDS:
                continue  # maybe being created right now by another kimen
        elif procs.is_same_process(*owner):
            continue
        remove_tree_at(base_fd, name)
        removed.append(name)
    return removed


def _read_owner(base_fd: int, name: str) -> tuple[int, str | None] | None:
    try:
        dfd = os.open(name, _DIR_FLAGS, dir_fd=base_fd)
    except OSError:
        return None
    try:
        data = fsutil.read_regular(OWNER_FILE, 256, OSError, dir_fd=dfd, follow_symlinks=False)
        text = data.decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(dfd)
    parts = text.split()
    if not parts:
        return None  # created, not yet written (another kimen, right now): the grace of no record
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else None)
    except ValueError:
        return (0, None)  # unreadable record: treat the owner as gone


def create_runtime_dir(env: Mapping[str, str], kind: str = "run") -> RuntimeDir:
    """Sweep stale dirs, then create `<kind>-<random>` 0700 with its owner record."""
    assert kind in RUNTIME_KINDS
    base = runtime_base(env)
    base_fd = open_dir(base, errors.UnsafeFilesDir)
    try:
        sweep_stale(base_fd)
        name = f"{kind}-{os.urandom(8).hex()}"
        os.mkdir(name, 0o700, dir_fd=base_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=base_fd)
    except BaseException as exc:
        os.close(base_fd)
        if isinstance(exc, OSError):
            raise errors.WriteFailed(detail=f"{base}: {exc.strerror}", path=base) from None
        raise
    rd = RuntimeDir(base, name, base_fd, fd)
    try:
        os.fchmod(fd, 0o700)
        pid = os.getpid()
        fsutil.write_exclusive(OWNER_FILE, f"{pid} {procs.start_time(pid) or '?'}\n".encode(), dir_fd=fd, shown=rd.path)
    except BaseException:
        rd.remove()
        raise
    return rd


# ---------------------------------------------------------------------------------------------
# User directories: --files-dir and render targets
# ---------------------------------------------------------------------------------------------


def remove_written(path: str, relpaths: Iterable[str], error: type[errors.KimenError]) -> None:
    """Best effort: remove the files `write_files` wrote below the user directory `path` (a run
    whose command then failed to start), never through a symlink."""
    try:
        root = open_dir(path, error)
    except errors.KimenError:
        return
    try:
        for rel in relpaths:
            parts = rel.split("/")
            try:
                fd = open_subdirs(root, parts[:-1], error, path)
            except errors.KimenError:
                continue
            try:
                fsutil.unlink_quietly(parts[-1], dir_fd=fd)
            finally:
                os.close(fd)
    finally:
        os.close(root)


def prepare_user_dir(path: str, error: type[errors.KimenError]) -> int:
    """Create `path` 0700 (parents too) or check it: owned by the user, not group/other-writable,
    not a symlink. Never chmods an existing directory. Returns an O_NOFOLLOW fd of it."""
    fsutil.ensure_private_dir(path, error, strict=False)
    return open_dir(path, error)
