"""What the fs and git transports share: the transport checks of a head and the test-only pause.

**Transport checks** (the first step of accepting a head, before anything decrypts it): a Git LFS
pointer is refused (`git_lfs_pointer`: git stored a pointer where the head should be), a head over
256 MiB is refused (`bundle_too_large`), and the age header must pass kimen's strict pre-parser
(`kimen.agefmt`: `bundle_invalid`, `age_work_factor_rejected`, `bundle_unsupported`).

**testOnlyPause** is a fault-injection seam for the remote contract tests: when the variable
`KIMEN_TEST_ONLY_PAUSE_AT` names a point a publish reaches (`before_write`, `after_write`,
`after_replace`), the process says so on stderr and stops itself (SIGSTOP), so that a test can
SIGKILL it there, or let it go on (SIGCONT) after another publisher moved the head. Unset (always,
outside tests), it costs one dictionary lookup.

Standard library and layer-1 kimen modules only.
"""

from __future__ import annotations

import os

from .. import errors

MAX_HEAD_BYTES = 256 * 1024 * 1024
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
PAUSE_POINTS = ("before_write", "after_write", "after_replace")
PAUSE_VARIABLE = "KIMEN_TEST_ONLY_PAUSE_AT"


def check_head(data: bytes, shown: str) -> None:
    """Refuse what is not a head kimen would try to decrypt; `shown` names it in messages."""
    if data.startswith(LFS_POINTER_PREFIX):
        raise errors.GitLfsPointer(path=shown)
    if len(data) > MAX_HEAD_BYTES:
        raise errors.BundleTooLarge(path=shown)
    from .. import agefmt

    agefmt.binary(data)


def testOnlyPause(point: str) -> None:
    """Stop this process at `point` when the tests ask for it (see the module docstring)."""
    if os.environ.get(PAUSE_VARIABLE) != point:
        return
    import signal

    os.write(2, f"kimen-test-paused {point}\n".encode())
    os.kill(os.getpid(), signal.SIGSTOP)
