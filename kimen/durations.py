"""Durations and sizes as written on the command line (SPEC §2.5)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_GROUP = re.compile(r"([0-9]+)([smhd])")  # ASCII digits: \d takes any script's
_SIZE = re.compile(r"([0-9]+)[ \t]*(KiB|MiB|GiB)?")  # ASCII digits: \d takes any script's
_SIZE_UNITS = {None: 1, "KiB": 1, "MiB": 1024, "GiB": 1024 * 1024}


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Seconds in `text`; raises ValueError (the caller maps it to its area's reason)."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        pos, seconds = 0, 0
        for match in _GROUP.finditer(text):
            if match.start() != pos:
                raise ValueError(f"invalid duration {text!r}")
            seconds += int(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise ValueError(f"invalid duration {text!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"duration must be greater than zero: {text!r}")
    return seconds


def format_duration(seconds: int) -> str:
    """The shortest `1h30m` form of `seconds`."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def parse_size_kib(text: str) -> int:
    """KiB in `text` (`64MiB`, `65536`, `1GiB`); raises ValueError."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
