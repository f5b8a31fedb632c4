"""Private and bounded file I/O: atomic writes, exclusive creates, permission checks, bounded reads.

Owns SPEC §11 items 10 and 11: secret-bearing files are created 0600 whatever the umask, either
exclusively or by temp file + rename in the same directory, never through a symlink; directories
kimen creates are 0700; an existing directory that is a symlink, foreign-owned or loose is refused,
never chmodded. Callers pass the error class that names their context (session dir, files dir…).
"""

from __future__ import annotations

import errno
import os
import stat

from .errors import KimenError, UnsafeOutputPath, WriteFailed

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
    are refused (files and render dirs, SPEC §7.1, §7.2).
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


def refuse_unsafe_target(path: str, unsafe: type[KimenError] = UnsafeOutputPath) -> None:
    """Refuse to replace a symlink or a non-regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise unsafe(path=path, problem="is a symlink")
    if not stat.S_ISREG(st.st_mode):
        raise unsafe(path=path, problem="is not a regular file")


def atomic_write(
    path: str,
    data: bytes,
    *,
    mode: int = 0o600,
    unsafe: type[KimenError] = UnsafeOutputPath,
    failed: type[KimenError] = WriteFailed,
) -> None:
    """Replace `path` with `data`: temp file in the same directory, fsync, rename, fsync dir.

    A symlink or non-regular target is refused; on failure nothing is left behind and the old
    file is untouched.
    """
    refuse_unsafe_target(path, unsafe)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.urandom(6).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
    except OSError as exc:
        raise failed(detail=f"{path}: {exc.strerror}", path=path) from None
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise failed(detail=f"{path}: {exc.strerror}", path=path) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(directory)


def write_exclusive(
    path: str,
    data: bytes,
    *,
    mode: int = 0o600,
    dir_fd: int | None = None,
    exists: type[KimenError] | None = None,
    failed: type[KimenError] = WriteFailed,
) -> None:
    """Create a new file (O_CREAT|O_EXCL|O_NOFOLLOW) and write `data`, fsynced.

    An existing path (or a symlink) raises `exists(path=)` when given, else `failed`.
    A partially written file is removed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        if exists is not None:
            raise exists(path=path) from None
        raise failed(detail=f"{path}: already exists", path=path) from None
    except OSError as exc:
        raise failed(detail=f"{path}: {exc.strerror}", path=path) from None
    try:
        _write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException as exc:
        os.close(fd)
        _unlink_quietly(path, dir_fd=dir_fd)
        if isinstance(exc, OSError):
            raise failed(detail=f"{path}: {exc.strerror}", path=path) from None
        raise
    os.close(fd)


def _file_kind(mode: int) -> str:
    """Why a file that is not regular is refused, worded like the OS's own errors."""
    if stat.S_ISDIR(mode):
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
) -> bytes:
    """The bytes of the regular file at `path` (at most `limit`): the one reader of every file a
    user names (profiles, includes, config, bundles, identities, recipients, signers, values).

    Never blocks on what is not a regular file: the open is non-blocking (a FIFO without a writer
    would otherwise stall it forever), `fstat` refuses anything but a regular file (a FIFO, a
    directory, `/dev/zero`), and only then is O_NONBLOCK cleared and the file read, bounded.
    Symlinks are followed: a symlinked profile, config or key file is a normal setup.
    `fail(problem)` builds the caller's error ("Is a FIFO, not a regular file", "Permission denied",
    "larger than 1 MiB"); `missing()` the one for a path that does not exist (else `fail`);
    `too_large()` the one for a file over `limit` (else `fail`).
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise (missing() if missing is not None else fail("not found")) from None
    except OSError as exc:
        raise fail(exc.strerror or "cannot open") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(_file_kind(st.st_mode))
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


def _unlink_quietly(path: str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass


def is_enospc(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
