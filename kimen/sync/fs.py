"""The fs transport: a team's head as one file in a shared directory (docs/sync.md, "Remotes and
transports").

With `<B>` the head file (`<path>/vault.age`, or the path itself when it ends in `.age`):

- `<B>.lock`: created on first use and never removed. A push holds `flock(LOCK_EX)` on it — taken
  on a read-only descriptor, so any member who can read the file can lock — and writes
  informational `pid=`, `host=`, `user=`, `created_at=` lines into it while it holds it. The
  kernel drops a flock when its holder dies, so there is never a stale lock to break.
- `<B>.tmp.<16 hex>`: the next head in flight (O_EXCL, fsynced), renamed over `<B>`.
- `<B>.history/<seq, 12 digits>.age`: hard links of the heads replaced, the last 64 kept.

Readers take no lock: `rename` replaces `<B>` atomically, so a reader sees the old or the new
complete head. A kill -9 at any step leaves one of them, at worst a `<B>.tmp.*` file that a later
push sweeps after an hour. Files are 0644 and the history directory 0755; in a setgid remote
directory (a team sharing through a group) 0664 and 2775, with the directory's group.

Never follows a symlink at `<B>`, its lock or its history directory, never reads anything but a
regular file, and never reads more than the head size limit. Holds no secret: everything here is
ciphertext or metadata.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from contextlib import contextmanager

from .. import errors
from ..durations import format_time
from ..fsutil import read_limited, unlink_quietly, write_exclusive
from .base import LOCK_WAIT, HeadRev, LostRace, ProbeReport, Published, RemoteHead, remote_rev
from .transport import MAX_HEAD_BYTES, check_head, testOnlyPause

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from .base import PublishResult

HEAD_NAME = "vault.age"
HISTORY_KEEP = 64
TEMP_MAX_AGE = 3600.0  # seconds: a push sweeps in-flight files older than this
LOCK_RETRY = 0.25  # seconds between two tries to take the lock
_MAX_LOCK_INFO = 4096
_INFO_KEYS = ("pid", "host", "user", "created_at")
_HEX = frozenset("0123456789abcdef")

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_SYMLINK_ERRNOS = (errno.ELOOP, errno.EMLINK)  # O_NOFOLLOW on a symlink: Linux, macOS / FreeBSD

# Filesystems whose flock or rename is not coherent across machines (or that kimen cannot tell):
# `probe` warns about them. nfs4 is supported (Linux clients emulate flock with NFS byte-range locks).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "ncpfs", "coda",
    "davfs", "vboxsf", "vmhgfs",
})


def head_path(path: str) -> str:
    """`<B>` of an fs remote `path` (absolute and normalised): the path itself when it ends in
    `.age`, else `<path>/vault.age`."""
    path = os.path.abspath(path)
    return path if path.endswith(".age") else os.path.join(path, HEAD_NAME)


def _unsafe(path: str, problem: str) -> errors.KimenError:
    return errors.SyncFailed(detail=f"{path} {problem}",
                             hint="kimen reads and replaces only a regular file there, never a symlink")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory, not the head file"
    if stat.S_ISLNK(mode):
        return "is a symlink"
    return "is not a regular file"


def _printable(text: str, limit: int = 128) -> str:
    return "".join(c for c in text if " " < c <= "~")[:limit]


class FsTransport:
    """An fs remote: the head file `<B>` and its lock, in-flight files and history beside it."""

    kind = "fs"

    def __init__(self, path: str, *, lock_wait: float = LOCK_WAIT) -> None:
        self.head = head_path(path)
        self.lock_wait = lock_wait
        self.directory, self.name = os.path.split(self.head)
        self.lock_path = self.head + ".lock"
        self.history_dir = self.head + ".history"
        self.location = self.head
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"FsTransport({self.head!r})"

    # -- reading ---------------------------------------------------------------------------------

    def _open_dir(self) -> int:
        try:
            return os.open(self.directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        except FileNotFoundError:
            raise errors.SyncFailed(detail=f"fs remote directory {self.directory} does not exist",
                                    hint="create it (shared by the team), or check the remote's path") from None
        except OSError as exc:
            raise errors.SyncFailed(detail=f"fs remote directory {self.directory}: {exc.strerror}") from None

    def _read_file(self, dir_fd: int, name: str, shown: str) -> bytes | None:
        """The bytes of the regular file `name` in `dir_fd` (None when absent), never through a
        symlink, never blocking on a FIFO, never more than the head size limit."""
        try:
            fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS:
                raise _unsafe(shown, "is a symlink") from None
            raise errors.SyncFailed(detail=f"{shown}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _unsafe(shown, _kind(st.st_mode))
            if st.st_size > MAX_HEAD_BYTES:
                raise errors.BundleTooLarge(path=shown)
            os.set_blocking(fd, True)
            data = read_limited(fd, MAX_HEAD_BYTES)
        except OSError as exc:
            raise errors.SyncFailed(detail=f"{shown}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(data) > MAX_HEAD_BYTES:
            raise errors.BundleTooLarge(path=shown)
        return data

    def _read_head_file(self) -> bytes | None:
        """The head file's bytes, after the transport checks (None: no head)."""
        dir_fd = self._open_dir()
        try:
            data = self._read_file(dir_fd, self.name, self.head)
        finally:
            os.close(dir_fd)
        if data is not None:
            check_head(data, self.head)
        return data

    def read_head(self) -> RemoteHead | None:
        data = self._read_head_file()
        return RemoteHead(data, remote_rev(data)) if data is not None else None

    def head_rev(self, known: Callable[[bytes], str | None] | None = None) -> HeadRev | None:
        data = self._read_head_file()
        if data is None:
            return None
        return HeadRev((known(data) if known is not None else None) or remote_rev(data))

    def history(self, seq: int) -> bytes | None:
        dir_fd = self._open_dir()
        try:
            history_fd = self._open_history(dir_fd)
            if history_fd is None:
                return None
            try:
                name = f"{seq:012d}.age"
                data = self._read_file(history_fd, name, os.path.join(self.history_dir, name))
            finally:
                os.close(history_fd)
        finally:
            os.close(dir_fd)
        if data is not None:
            check_head(data, os.path.join(self.history_dir, f"{seq:012d}.age"))
        return data

    # -- the lock --------------------------------------------------------------------------------

    @staticmethod
    def _modes(dir_fd: int) -> tuple[int, int]:
        """(file mode, history directory mode): group-writable and setgid in a setgid directory."""
        if os.fstat(dir_fd).st_mode & stat.S_ISGID:
            return 0o664, 0o2775
        return 0o644, 0o755

    def _open_lock(self, dir_fd: int) -> int:
        """A read-only descriptor of `<B>.lock`, created (with the remote's file mode) when missing."""
        name = self.name + ".lock"
        flags = os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC
        try:
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
                os.fchmod(fd, self._modes(dir_fd)[0])
            except FileExistsError:
                fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _SYMLINK_ERRNOS:
                raise _unsafe(self.lock_path, "is a symlink") from None
            raise errors.SyncFailed(detail=f"{self.lock_path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _unsafe(self.lock_path, _kind(st.st_mode))
        return fd

    def _try_lock(self, fd: int) -> bool:
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise errors.FsLockUnsupported(path=self.directory, detail=f"flock does not work here ({exc.strerror})",
                                           lock_path=self.lock_path) from None
        return True

    def _holder(self, dir_fd: int) -> str:
        """Who holds the lock, from the lines its holder wrote (printable `key=value` only)."""
        try:
            fd = os.open(self.name + ".lock", os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return "unknown holder"
        try:
            text = read_limited(fd, _MAX_LOCK_INFO)[:_MAX_LOCK_INFO].decode("utf-8", "replace")
        except OSError:
            text = ""
        finally:
            os.close(fd)
        info: dict[str, str] = {}
        for line in text.splitlines():
            key, _sep, value = line.partition("=")
            info[key] = value
        shown = [f"{key}={_printable(info[key])}" for key in _INFO_KEYS if info.get(key)]
        return " ".join(shown) or "unknown holder"

    def _write_info(self, dir_fd: int) -> None:
        """Say who holds the lock (best effort: the file may be another member's, read-only to us)."""
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = str(os.getuid())
        lines = f"pid={os.getpid()}\nhost={os.uname().nodename}\nuser={user}\ncreated_at={format_time()}\n"
        self._rewrite_lock(dir_fd, lines.encode())

    def _rewrite_lock(self, dir_fd: int, data: bytes) -> None:
        try:
            fd = os.open(self.name + ".lock", os.O_WRONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, data)
        except OSError:
            pass
        finally:
            os.close(fd)

    @contextmanager
    def locked(self, wait: float | None = None) -> Iterator[None]:
        """Hold `<B>.lock`, trying every 250 ms for up to `wait` seconds (default: `lock_wait`),
        else `remote_lock_present`. Re-entrant within this object; released (truncated, then
        closed) on the way out."""
        if self._lock_fd is not None:
            yield
            return
        dir_fd = self._open_dir()
        try:
            fd = self._open_lock(dir_fd)
            deadline = time.monotonic() + (self.lock_wait if wait is None else wait)
            try:
                while not self._try_lock(fd):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise errors.RemoteLockPresent(lock_path=self.lock_path, lock_owner=self._holder(dir_fd),
                                                       recommended_action="wait_or_sync_unlock")
                    time.sleep(min(LOCK_RETRY, left))
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
            try:
                self._write_info(dir_fd)
                yield
            finally:
                self._rewrite_lock(dir_fd, b"")
                self._lock_fd = None
                os.close(fd)  # releases the flock
        finally:
            os.close(dir_fd)

    def lock_holder(self) -> str | None:
        """Who holds the lock now (a flock probe, nothing removed), or None when nobody does."""
        dir_fd = self._open_dir()
        try:
            try:
                fd = os.open(self.name + ".lock", os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise errors.SyncFailed(detail=f"{self.lock_path}: {exc.strerror}") from None
            try:
                return None if self._try_lock(fd) else self._holder(dir_fd)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, new: bytes, expected_rev: str | None, *, seq: int, by: str,
                expected_seq: int | None) -> PublishResult:
        with self.locked():
            dir_fd = self._open_dir()
            try:
                return self._publish(dir_fd, new, expected_rev, expected_seq if expected_seq is not None else seq - 1)
            finally:
                os.close(dir_fd)

    def _publish(self, dir_fd: int, new: bytes, expected_rev: str | None, current_seq: int) -> PublishResult:
        current = self._read_file(dir_fd, self.name, self.head)
        actual = remote_rev(current) if current is not None else None
        if actual != expected_rev:
            return LostRace(actual)
        file_mode, dir_mode = self._modes(dir_fd)
        testOnlyPause("before_write")
        tmp = self._write_temp(dir_fd, new, file_mode)
        testOnlyPause("after_write")
        try:
            if current is not None:
                self._keep_history(dir_fd, current_seq, dir_mode)
            os.rename(tmp, self.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            unlink_quietly(tmp, dir_fd=dir_fd)
            if isinstance(exc, OSError):
                raise errors.SyncFailed(detail=f"{self.head}: {exc.strerror}") from None
            raise
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        testOnlyPause("after_replace")
        rev = remote_rev(new)
        back = self._read_file(dir_fd, self.name, self.head)
        if back is None or remote_rev(back) != rev:
            raise errors.SyncPushUnconfirmed(detail=f"{self.head} does not hold the new head after the rename",
                                             expected_rev=rev, actual_rev=remote_rev(back) if back else None)
        self._sweep(dir_fd, TEMP_MAX_AGE)
        return Published(rev)

    def _write_temp(self, dir_fd: int, data: bytes, mode: int) -> str:
        """A new `<B>.tmp.<16 hex>` holding `data` (exclusive create, fsynced, `mode`)."""
        tmp = f"{self.name}.tmp.{os.urandom(8).hex()}"
        write_exclusive(tmp, data, mode=mode, dir_fd=dir_fd, shown=os.path.join(self.directory, tmp),
                        failed=errors.SyncFailed)
        return tmp

    def _open_history(self, dir_fd: int, create_mode: int | None = None) -> int | None:
        """The history directory (created with `create_mode` when given and missing), or None."""
        name = self.name + ".history"
        if create_mode is not None:
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                create_mode = None
            except OSError:
                return None
        try:
            fd = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None  # absent, or not a real directory: no history is kept or read there
        if create_mode is not None:
            try:
                os.fchmod(fd, create_mode)
            except OSError:
                pass
        return fd

    def _keep_history(self, dir_fd: int, seq: int, dir_mode: int) -> None:
        """Hard-link the head about to be replaced as `<B>.history/<seq>.age` (an existing one is
        kept). Best effort: a filesystem without hard links keeps no history."""
        history_fd = self._open_history(dir_fd, dir_mode)
        if history_fd is None:
            return
        try:
            os.link(self.name, f"{seq:012d}.age", src_dir_fd=dir_fd, dst_dir_fd=history_fd, follow_symlinks=False)
        except OSError:
            pass
        finally:
            os.close(history_fd)

    # -- sweeping --------------------------------------------------------------------------------

    def _is_temp(self, name: str) -> bool:
        prefix = self.name + ".tmp."
        tail = name[len(prefix):]
        return name.startswith(prefix) and len(tail) == 16 and _HEX.issuperset(tail)

    def _sweep(self, dir_fd: int, max_age: float) -> list[str]:
        """Remove in-flight files older than `max_age` seconds and history beyond the last 64
        heads (the caller holds the lock); returns the in-flight files removed."""
        removed: list[str] = []
        now = time.time()
        try:
            names = os.listdir(dir_fd)
        except OSError:
            names = []
        for name in names:
            if not self._is_temp(name):
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if now - st.st_mtime >= max_age:
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(os.path.join(self.directory, name))
            except OSError:
                continue
        history_fd = self._open_history(dir_fd)
        if history_fd is not None:
            try:
                kept = sorted(n for n in os.listdir(history_fd)
                              if len(n) == 16 and n.endswith(".age") and n[:12].isdigit() and n[:12].isascii())
                for name in kept[:-HISTORY_KEEP]:
                    unlink_quietly(name, dir_fd=history_fd)
            except OSError:
                pass
            finally:
                os.close(history_fd)
        return removed

    def sweep_temp_files(self, max_age: float) -> list[str]:
        """`sync unlock`: remove in-flight files older than `max_age` seconds, under the lock."""
        with self.locked():
            dir_fd = self._open_dir()
            try:
                return self._sweep(dir_fd, max_age)
            finally:
                os.close(dir_fd)

    # -- probing ---------------------------------------------------------------------------------

    def probe(self) -> ProbeReport:
        """Check that flock and rename work in the remote directory (`fs_lock_unsupported`), and
        warn when the mount table names a network or FUSE filesystem other than nfs4 there."""
        dir_fd = self._open_dir()
        try:
            fd = self._open_lock(dir_fd)
            try:
                self._try_lock(fd)  # held by another push proves that flock works too
            finally:
                os.close(fd)
            first = self._write_temp(dir_fd, b"", 0o600)
            second = f"{self.name}.tmp.{os.urandom(8).hex()}"
            try:
                os.rename(first, second, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                raise errors.FsLockUnsupported(path=self.directory,
                                               detail=f"rename does not work here ({exc.strerror})") from None
            finally:
                unlink_quietly(first, dir_fd=dir_fd)
                unlink_quietly(second, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        warning = mount_warning(os.path.realpath(self.directory), _mount_table())
        return ProbeReport(self.head, (warning,) if warning else ())


def _mount_table() -> str:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as table:
            return table.read(1 << 20)
    except OSError:
        return ""  # not Linux: no warning


def _unescape(field: str) -> str:
    r"""The mount table escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_warning(path: str, table: str) -> str | None:
    """A warning when the mount that holds `path` (the longest mount point above it in `table`,
    /proc/mounts format) is a network or FUSE filesystem other than nfs4."""
    best, fstype = "", ""
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, fields[2]
    if fstype.startswith("fuse") or fstype in NETWORK_FILESYSTEMS:
        return (f"{path} is on a {fstype} filesystem ({best}): kimen cannot rely on its locks and renames "
                "across machines (docs/sync.md, \"Supported filesystems\")")
    return None
