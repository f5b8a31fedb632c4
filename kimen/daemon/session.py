"""Keys and deadlines of the session daemon.

- `boot_clock()`: seconds on CLOCK_BOOTTIME (keeps counting across suspend) on Linux,
  CLOCK_MONOTONIC elsewhere. Every deadline is on this clock.
- `Deadlines`: the idle TTL (from the last successful use) and the max TTL (from unlock).
- `LockedKey`: a data key in its own page, `mlock`ed where RLIMIT_MEMLOCK allows and excluded
  from core dumps, zeroed by `wipe()`. Libraries that take the key (PyNaCl, hashlib) still make
  short-lived immutable copies of it; docs/session.md says what this does and does not buy.
"""

from __future__ import annotations

import mmap
import time

from ..sensitive import Sensitive

MAX_TTL_LIMIT = 7 * 86400
DEFAULT_TTL = 15 * 60
DEFAULT_MAX_TTL = 8 * 3600
_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
_PAGE = mmap.PAGESIZE


def boot_clock() -> float:
    """Seconds since boot, suspend included (Linux); monotonic seconds elsewhere."""
    return time.clock_gettime(_CLOCK)


def ttl_problem(ttl: float, max_ttl: float) -> str | None:
    """Why (ttl, max_ttl) is refused (`invalid_ttl`), or None: 0 < ttl <= max_ttl <= 7d."""
    if not (ttl > 0 and max_ttl > 0):
        return "TTLs must be greater than zero"
    if ttl > max_ttl:
        return "--ttl must not exceed --max-ttl"
    if max_ttl > MAX_TTL_LIMIT:
        return "--max-ttl must not exceed 7d"
    return None


class Deadlines:
    """Idle and absolute deadlines of one unlocked vault, on the boot clock."""

    __slots__ = ("idle_at", "max_at", "max_ttl", "ttl", "unlocked_at")

    def __init__(self, ttl: float, max_ttl: float, now: float | None = None) -> None:
        now = boot_clock() if now is None else now
        self.ttl = ttl
        self.max_ttl = max_ttl
        self.unlocked_at = now
        self.max_at = now + max_ttl
        self.idle_at = min(now + ttl, self.max_at)

    def expired(self, now: float | None = None) -> bool:
        now = boot_clock() if now is None else now
        return now >= self.idle_at or now >= self.max_at

    def touch(self, now: float | None = None) -> None:
        """A successful use: push the idle deadline, never past the max deadline."""
        now = boot_clock() if now is None else now
        self.idle_at = min(now + self.ttl, self.max_at)

    def next_deadline(self) -> float:
        return min(self.idle_at, self.max_at)


def wall_time(boot_deadline: float, now_boot: float | None = None) -> float:
    """A boot-clock instant as a Unix time (for display)."""
    now_boot = boot_clock() if now_boot is None else now_boot
    return time.time() + (boot_deadline - now_boot)


class LockedKey(Sensitive):
    """A 32-byte key in a private anonymous page: mlocked when permitted, never in a core dump."""

    __slots__ = ("_map", "locked")

    def __init__(self, key: Sensitive) -> None:
        size = len(key)
        self._map = mmap.mmap(-1, _PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_DONTDUMP"):
            try:
                self._map.madvise(mmap.MADV_DONTDUMP)
            except OSError:
                pass
        self.locked = _mlock(self._map)
        self._map[:size] = key.view()
        key.wipe()
        # the locked page's memoryview stands in for Sensitive's bytearray (the same buffer interface)
        self._buf = memoryview(self._map)[:size]  # type: ignore[assignment]

    def reveal(self) -> bytes:
        return bytes(self._buf)

    def wipe(self) -> None:
        buf = self._buf
        if buf is None:
            return
        try:
            buf[:] = b"\0" * len(buf)
            buf.release()  # type: ignore[attr-defined]  # the memoryview of __init__
        except ValueError:  # already released
            pass
        self._buf = None  # type: ignore[assignment]  # wiped: `len()` is 0 from now on
        self._map[:] = b"\0" * _PAGE
        if self.locked:
            _munlock(self._map)
        self._map.close()

    def __len__(self) -> int:
        return 0 if self._buf is None else len(self._buf)


def _address(buf: mmap.mmap) -> int:
    import ctypes

    view = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # release the export so the map can be closed later


def _libc():
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _mlock(buf: mmap.mmap) -> bool:
    import ctypes

    try:
        return _libc().mlock(ctypes.c_void_p(_address(buf)), ctypes.c_size_t(_PAGE)) == 0
    except (OSError, AttributeError):
        return False


def _munlock(buf: mmap.mmap) -> None:
    import ctypes

    try:
        _libc().munlock(ctypes.c_void_p(_address(buf)), ctypes.c_size_t(_PAGE))
    except (OSError, AttributeError):
        pass
