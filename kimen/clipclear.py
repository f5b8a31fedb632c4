"""The clipboard clear helper: `python -m kimen.clipclear --fd N` (started by `clipboard.start_clear`).

It reads one JSON message from the pipe `N` — the clipboard tool, a random key k and
HMAC-SHA256(k, value) — sleeps for the delay, reads the clipboard and clears it only when its HMAC
under k equals the digest: a clipboard the user has since filled with something else is left
alone. It never holds the value, prints nothing (stdio is the null device) and exits after one
check. Nothing imports this module.
"""

from __future__ import annotations

import hmac
import json
import os
import sys
import time

from . import errors
from .clipboard import MAX_CLEAR_SECONDS, MAX_PASTE_BYTES, Tool, clear, digest, paste
from .fsutil import read_limited


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--fd" or not argv[1].isdigit():
        return 2
    fd = int(argv[1])
    try:
        message = json.loads(read_limited(fd, 64 * 1024))
        tool = Tool.from_json(message["tool"])
        key, expected = bytes.fromhex(message["key"]), bytes.fromhex(message["digest"])
        seconds = min(max(int(message["seconds"]), 0), MAX_CLEAR_SECONDS)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return 2
    finally:
        os.close(fd)
    time.sleep(seconds)
    env = dict(os.environ)
    try:
        held = paste(tool, env)
    except errors.KimenError:
        return 0  # empty, not text, or no owner any more: nothing of ours to clear
    if len(held) > MAX_PASTE_BYTES or not hmac.compare_digest(digest(key, held), expected):
        return 0
    try:
        clear(tool, env)
    except errors.KimenError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
