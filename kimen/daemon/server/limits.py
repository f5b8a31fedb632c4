"""The daemon's resource bounds, and the byte budget its connections and workers share.

Hostile or broken peers must not lock others out: connections are capped (and lowered to fit
RLIMIT_NOFILE), worker threads and concurrent KDFs are capped, and every frame or response larger
than `SMALL_FRAME` first reserves its length from one `Budget` of `BUFFER_CAP` bytes.
"""

from __future__ import annotations

import threading

MAX_CONNECTIONS = 4096
RESERVED_FDS = 64  # descriptors kept for vault files, pipes and threads beyond the connections
SMALL_FRAME = 16 * 1024  # frames up to this size need no reservation
BUFFER_CAP = 160 * 1024 * 1024  # larger frames and responses held at once, all connections together
STALL = 1.0  # a partial frame with no byte for this long is slow (evicted first)
MAX_WORKERS = 64
KDF_SLOTS = 2  # concurrent unlocks (each KDF may use up to 2 GiB); more wait in their worker thread


class Budget:
    """Bytes of large frames and responses held in memory, shared by the loop and the workers."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self._cond = threading.Condition()

    def try_take(self, n: int) -> bool:
        with self._cond:
            if self.used + n > self.cap:
                return False
            self.used += n
            return True

    def take(self, n: int, timeout: float) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + n <= self.cap, timeout):
                return False
            self.used += n
            return True

    def charge(self, n: int) -> None:
        """Account for bytes already held (a response larger than its estimate)."""
        with self._cond:
            self.used += n

    def give(self, n: int) -> None:
        if n:
            with self._cond:
                self.used -= n
                self._cond.notify_all()
