"""Durations, sizes and times as kimen writes and reads them: the one owner of each.

- durations on the command line: `90s`, `15m`, `1h30m`, `7d` or a bare number of seconds;
- sizes: `64MiB`, `1GiB` or a bare number of KiB;
- times: RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ` (whole seconds) as kimen writes them — in the
  vault's rows, bundles, identities and the session's status — and, with an optional fraction,
  as it reads them from signed documents (`created_at`, a head's log entries, join requests).

Regular expressions are compiled on first use (`re`'s own cache): writing a time must not cost
the start-up of a command that never parses one.
"""

from __future__ import annotations

import time

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = r"([0-9]+)[ \t]*(KiB|MiB|GiB)?"  # ASCII digits: \d takes any script's
_SIZE_UNITS = {None: 1, "KiB": 1, "MiB": 1024, "GiB": 1024 * 1024}
_TIME = r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?Z"


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Seconds in `text`; raises ValueError (the caller maps it to its area's reason). Read by hand,
    not with `re`: every sync command checks its `--max-skew` at start-up."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        seconds = int(text)
    else:
        seconds, digits = 0, ""
        for char in text:
            if "0" <= char <= "9":  # ASCII digits: isdigit takes any script's
                digits += char
            elif char in _UNITS and digits:
                seconds += int(digits) * _UNITS[char]
                digits = ""
            else:
                raise ValueError(f"invalid duration {text!r}")
        if digits or not text:
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
    import re

    match = re.fullmatch(_SIZE, text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


def format_time(unix: float | None = None) -> str:
    """`unix` (default: now) as kimen writes times: `YYYY-MM-DDTHH:MM:SSZ`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def parse_time(text: object) -> int | None:
    """Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.frac]Z` that names a
    real calendar time (month 1-12, a day the month has, 00:00:00-23:59:59; no leap second), else
    None (also for anything that is not a string)."""
    if not isinstance(text, str):
        return None
    import re

    match = re.fullmatch(_TIME, text)
    if match is None:
        return None
    import calendar
    import datetime

    year, month, day, hour, minute, second = (int(group) for group in match.groups())
    try:
        datetime.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
