"""Private and bounded file I/O: atomic writes, exclusive creates, permission checks, bounded reads.

Secret-bearing files are created 0600 whatever the umask, either exclusively or by a locked temp
file (`<name>.kimen-tmp-<16 hex>`) + rename in the same directory, never through a symlink; every
atomic write first removes the temp files dead writers left in its directory. Directories kimen
creates are 0700; an existing directory that is a symlink, foreign-owned or loose is refused, never
chmodded. Files a user names are read by `read_regular` only: never blocking, regular files only,
bounded. Callers pass the error class that names their context (session dir, files dir…).
"""

from __future__ import annotations

import os
import stat

from . import errors
from .errors import KimenError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def make_private_dirs(path: str, mode: int = 0o700) -> list[str]:
    """Create `path` and missing parents with `mode`; existing components are left untouched.

    Returns the directories created (outermost first), so a caller can remove them on failure.
    """
    created: list[str] = []
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue
        os.chmod(directory, mode)  # we created it: make the mode exact whatever the umask
        created.append(directory)
    return created


def directory_problem(path: str, *, strict: bool = True) -> str | None:
    """Why `path` is not a safe private directory, or None if it is one.

    strict: no group/other bits at all (session dir); otherwise only group/other *write* bits
    are refused (files and render dirs).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot inspect: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.getuid():
        return "owned by another user"
    loose = 0o077 if strict else 0o022
    if st.st_mode & loose:
        return f"permissions {stat.S_IMODE(st.st_mode):04o} are too open; expected 0700"
    return None


def ensure_private_dir(path: str, error: type[KimenError], *, strict: bool = True) -> bool:
    """Create `path` 0700 if missing, else check it; raises `error(path=, problem=)`.

    Returns True if kimen created the directory.
    """
    if not os.path.lexists(path):
        try:
            make_private_dirs(path)
        except OSError as exc:
            raise error(path=path, problem=f"cannot create: {exc.strerror}") from None
        created = True
    else:
        created = False
    problem = directory_problem(path, strict=strict)
    if problem:
        raise error(path=path, problem=problem)
    return created


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def refuse_unsafe_target(path: str, unsafe: type[KimenError] | None = None, *, dir_fd: int | None = None,
                         shown: str | None = None) -> None:
    """Refuse to replace a symlink or a non-regular file (`path` relative to `dir_fd` when given);
    `unsafe` defaults to `UnsafeOutputPath`."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return  # absent, or not reachable (a name too long, a loop, no search permission): the write says why
    unsafe = unsafe or errors.UnsafeOutputPath
    if stat.S_ISLNK(st.st_mode):
        raise unsafe(path=shown or path, problem="is a symlink")
    if not stat.S_ISREG(st.st_mode):
        raise unsafe(path=shown or path, problem="is not a regular file")


# ---------------------------------------------------------------------------------------------
# Atomic replacement: temp files named <name>.kimen-tmp-<16 hex>, locked by their writer
# ---------------------------------------------------------------------------------------------
#
# A writer creates its temp file, takes an exclusive `flock` on it before writing a byte, and holds
# it through the rename. Every atomic write first sweeps its directory: a `*.kimen-tmp-*` regular
# file of the user whose lock can be taken belongs to a dead writer (SIGKILLed, power cut) and is
# removed, so plaintext never stays behind for long. A live writer's file is locked and left alone.
# The one window a writer's file is unlocked is between its creation and the `flock`, when it is
# still empty: so an unlocked *empty* file is removed only once it is older than TEMP_GRACE_SECONDS.

TEMP_MARK = ".kimen-tmp-"
TEMP_GRACE_SECONDS = 60
_NAME_MAX = 255


def temp_name(name: str) -> str:
    """`<name>.kimen-tmp-<16 hex>`; a name too long for that is shortened (bytes) to fit NAME_MAX."""
    suffix = f"{TEMP_MARK}{os.urandom(8).hex()}"
    raw = os.fsencode(name)
    if len(raw) + len(suffix) > _NAME_MAX:
        raw = raw[: _NAME_MAX - len(suffix)]
    return os.fsdecode(raw) + suffix


def is_temp_name(name: str) -> bool:
    at = name.rfind(TEMP_MARK)
    tail = name[at + len(TEMP_MARK):]
    return at >= 0 and len(tail) == 16 and all(c in "0123456789abcdef" for c in tail)


def sweep_temps(dir_fd: int) -> list[str]:
    """Remove the temp files of dead writers in the directory `dir_fd`; returns their names.

    Only regular files owned by the user, opened without following symlinks (a FIFO swapped in
    cannot block: non-blocking open, then the inode is compared), whose lock is free.
    """
    try:
        with os.scandir(dir_fd) as entries:
            names = [e.name for e in entries if is_temp_name(e.name)]
    except OSError:
        return []
    return [name for name in names if _remove_if_dead(dir_fd, name)]


def _remove_if_dead(dir_fd: int, name: str) -> bool:
    import fcntl
    import time

    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return False
        fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | getattr(os, "O_NONBLOCK", 0), dir_fd=dir_fd)
    except OSError:
        return False
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (st.st_dev, st.st_ino):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a live writer holds it
        if held.st_size == 0 and time.time() - held.st_mtime < TEMP_GRACE_SECONDS:
            return False  # maybe a writer between creating and locking it
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _locked_temp(dir_fd: int, name: str) -> tuple[str, int]:
    """A new temp file for `name` in `dir_fd`, 0600, already under its writer's exclusive lock."""
    import fcntl

    for attempt in range(3):
        tmp = temp_name(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return tmp, fd
        except BlockingIOError:  # a sweeper is looking at it this instant: take another name
            os.close(fd)
            unlink_quietly(tmp, dir_fd=dir_fd)
            if attempt == 2:
                raise
        except BaseException:
            os.close(fd)
            unlink_quietly(tmp, dir_fd=dir_fd)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def replace_at(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    shown: str,
    mode: int = 0o600,
    unsafe: type[KimenError] | None = None,
    failed: type[KimenError] | None = None,
    sweep: bool = True,
) -> None:
    """Replace `name` in the directory `dir_fd` with `data`: sweep dead writers' temp files, write a
    locked temp file, fsync, rename, fsync the directory. `shown` is the path errors name.

    A symlink or non-regular target is refused (`unsafe`); on failure the temp file is removed and
    the old file is untouched. The error classes default to `UnsafeOutputPath` and `WriteFailed`
    (looked up here, not at import: `kimen.errors` reads its table on the first lookup).
    """
    failed = failed or errors.WriteFailed
    refuse_unsafe_target(name, unsafe, dir_fd=dir_fd, shown=shown)
    if sweep:
        sweep_temps(dir_fd)
    try:
        tmp, fd = _locked_temp(dir_fd, name)
    except OSError as exc:
        raise failed(detail=f"{shown}: {exc.strerror}", path=shown) from None
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(fd)  # the lock is held until the file has its final name
    except OSError as exc:
        unlink_quietly(tmp, dir_fd=dir_fd)
        raise failed(detail=f"{shown}: {exc.strerror}", path=shown) from None
    except BaseException:
        unlink_quietly(tmp, dir_fd=dir_fd)
        raise
    try:
        os.fsync(dir_fd)
    except OSError:
        pass


def _mkdir_hint(directory: str) -> str:
    return f"its directory does not exist: create it first (`mkdir -p -m 700 {directory}`)"


def require_output_dir(path: str) -> None:
    """The directory an `--out PATH` goes into exists → else `write_failed` naming it, with the
    command that makes it (checked before any value is read)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise errors.WriteFailed(detail=f"{directory}: directory does not exist", path=path,
                                 hint=_mkdir_hint(directory))


def _create_failed(failed: type[KimenError], shown: str, exc: OSError) -> KimenError:
    """A file could not be created at `shown`; a missing directory gets the command that makes it
    (a private file's directory is the user's to create, with the mode they choose)."""
    if isinstance(exc, FileNotFoundError):
        return failed(detail=f"{shown}: {exc.strerror}", path=shown,
                      hint=_mkdir_hint(os.path.dirname(os.path.abspath(shown))))
    return failed(detail=f"{shown}: {exc.strerror}", path=shown)


def atomic_write(
    path: str,
    data: bytes,
    *,
    mode: int = 0o600,
    unsafe: type[KimenError] | None = None,
    failed: type[KimenError] | None = None,
) -> None:
    """Replace `path` with `data` atomically (`replace_at` in its directory)."""
    failed = failed or errors.WriteFailed
    refuse_unsafe_target(path, unsafe)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        dir_fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except OSError as exc:
        raise _create_failed(failed, path, exc) from None
    try:
        replace_at(dir_fd, os.path.basename(path), data, shown=path, mode=mode, unsafe=unsafe, failed=failed)
    finally:
        os.close(dir_fd)


def write_exclusive(
    path: str,
    data: bytes,
    *,
    mode: int = 0o600,
    dir_fd: int | None = None,
    shown: str | None = None,
    exists: type[KimenError] | None = None,
    failed: type[KimenError] | None = None,
) -> None:
    """Create a new file (O_CREAT|O_EXCL|O_NOFOLLOW) and write `data`, fsynced: the one writer of
    new private files (`path` relative to `dir_fd` when given; `shown` is the path errors name).

    An existing path (or a symlink) raises `exists(path=)` when given, else `failed`.
    A partially written file is removed. `failed` defaults to `WriteFailed`.
    """
    failed = failed or errors.WriteFailed
    shown = shown or path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError as exc:
        if exists is not None:
            raise exists(path=shown) from None
        raise failed(detail=f"{shown}: {exc.strerror}", path=shown) from None
    except OSError as exc:
        raise _create_failed(failed, shown, exc) from None
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        unlink_quietly(path, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            raise failed(detail=f"{shown}: {exc.strerror}", path=shown) from None
        raise
    os.close(fd)


def file_kind(mode: int) -> str:
    """Why a file that is not regular is refused, worded like the OS's own errors."""
    if stat.S_ISDIR(mode):
        import errno  # here: only a refusal needs it (`kimen run` reads a profile through this module)

        return os.strerror(errno.EISDIR)  # "Is a directory", as reading one would say
    if stat.S_ISFIFO(mode):
        return "Is a FIFO, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "Is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "Is a socket, not a regular file"
    return "Not a regular file"


def _size(limit: int) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


def read_regular(
    path: str,
    limit: int,
    fail: Callable[[str], BaseException],
    *,
    missing: Callable[[], BaseException] | None = None,
    too_large: Callable[[], BaseException] | None = None,
    dir_fd: int | None = None,
    follow_symlinks: bool = True,
) -> bytes:
    """The bytes of the regular file at `path` (at most `limit`): the one reader of every file a
    user names (profiles, includes, config, bundles, identities, recipients, signers, values) and
    of kimen's own small records (runtime-dir owners, `/proc/<pid>/stat`).

    Never blocks on what is not a regular file: the open is non-blocking (a FIFO without a writer
    would otherwise stall it forever), `fstat` refuses anything but a regular file (a FIFO, a
    directory, `/dev/zero`), and only then is O_NONBLOCK cleared and the file read, bounded.
    Symlinks are followed (a symlinked profile, config or key file is a normal setup) unless
    `follow_symlinks` is false (kimen's own files); `dir_fd` as for `os.open`.
    `fail(problem)` builds the caller's error ("Is a FIFO, not a regular file", "Permission denied",
    "larger than 1 MiB"); `missing()` the one for a path that does not exist (else `fail`);
    `too_large()` the one for a file over `limit` (else `fail`).
    """
    try:
        flags = os.O_RDONLY | _O_CLOEXEC | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else _O_NOFOLLOW)
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise (missing() if missing is not None else fail("not found")) from None
    except OSError as exc:
        raise fail(exc.strerror or "cannot open") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(file_kind(st.st_mode))
        over = too_large or (lambda: fail(f"larger than {_size(limit)}"))
        if st.st_size > limit:
            raise over()
        os.set_blocking(fd, True)
        data = read_limited(fd, limit)
    except OSError as exc:
        raise fail(exc.strerror or "cannot read") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise over()
    return data


def read_limited(fd_or_file: int | object, limit: int) -> bytes:
    """Read to EOF but never more than `limit`+1 bytes (so the caller can tell 'too large')."""
    chunks: list[bytes] = []
    remaining = limit + 1
    if isinstance(fd_or_file, int):
        while remaining > 0:
            chunk = os.read(fd_or_file, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    else:
        reader = getattr(fd_or_file, "buffer", fd_or_file)
        read = getattr(reader, "read1", None) or reader.read  # type: ignore[attr-defined]
        while remaining > 0:
            chunk = read(min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    return b"".join(chunks)


def unlink_quietly(path: str, dir_fd: int | None = None) -> None:
    """Remove `path` if it can be removed (cleaning up after a failure: the first error stands)."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass
