"""Helpers of the grant and audit tests: an explicit clock and a call that must not block."""

from __future__ import annotations

import threading


class Clock:
    """An explicit clock (boot or wall): tests move `now` by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def raised_within(seconds: float, fn, *args, **kwargs) -> BaseException | None:
    """What `fn` raised (None if nothing), called in a thread that must finish within `seconds`: a
    FIFO or anything else must never block kimen, so a call still running fails the test."""
    result: list[BaseException | None] = []

    def call():
        try:
            fn(*args, **kwargs)
            result.append(None)
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{getattr(fn, '__name__', fn)} blocked"
    return result[0]
