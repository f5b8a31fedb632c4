"""`secret copy`: the clipboard tools and the delayed clear (docs/daily.md).

- Tool, the first that applies: `WAYLAND_DISPLAY` set and `wl-copy` on PATH (read `wl-paste
  --no-newline`, clear `wl-copy --clear`); `DISPLAY` set and `xclip` (`xclip -selection clipboard`,
  read with `-out`, clear by copying nothing); `DISPLAY` and `xsel` (`--clipboard --input`,
  `--output`, `--delete`); macOS `pbcopy`/`pbpaste` (clear by copying nothing). None →
  `clipboard_unavailable`, found before anything is unlocked.
- The value reaches the tool on its stdin only, never its argv or environment; tools get kimen's
  environment minus the private variables; a failing tool, or one still running after 5 s, is
  `clipboard_failed`. The tool's own stdout and stderr go to the null device: X11 and Wayland
  copy tools leave a process behind that serves the selection, which must not hold kimen's pipes.
- Clearing: `start_clear` starts `python -m kimen.clipclear` detached (a session of its own, stdio
  on the null device, no private variable, cwd `/`) and hands it, on a pipe, the tool and
  HMAC-SHA256(k, value) under a fresh random k, never the value. After the delay the helper reads
  the clipboard and clears it only if the digest still matches (the user copied nothing else).
"""

from __future__ import annotations

import os
import sys

from . import errors
from .environ import public_environ, which

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

TOOL_TIMEOUT = 5.0
MAX_PASTE_BYTES = 16 * 1024 * 1024
DEFAULT_CLEAR_SECONDS = 45
MIN_CLEAR_SECONDS = 1
MAX_CLEAR_SECONDS = 24 * 3600
TOOL_NAMES = ("wl-copy", "xclip", "xsel", "pbcopy")


class Tool:
    """One clipboard tool: the argv that copies stdin, that prints the clipboard, that clears it
    (None: copy nothing)."""

    __slots__ = ("clear", "copy", "name", "paste")

    def __init__(self, name: str, copy: list[str], paste: list[str], clear: list[str] | None) -> None:
        self.name = name
        self.copy = copy
        self.paste = paste
        self.clear = clear

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "copy": self.copy, "paste": self.paste, "clear": self.clear}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Tool:
        def argv(value: object) -> list[str]:
            if not (isinstance(value, list) and value and all(isinstance(a, str) for a in value)):
                raise ValueError("bad tool argv")
            return list(value)

        clear = doc.get("clear")
        return cls(str(doc["name"]), argv(doc["copy"]), argv(doc["paste"]), None if clear is None else argv(clear))


def detect(env: Mapping[str, str], name: str = "NAME", platform: str = sys.platform) -> Tool:
    """The clipboard tool to use here; `clipboard_unavailable` (hint: the tools and the pipe to use
    instead, for secret `name`) when there is none."""
    path = env.get("PATH")

    def found(command: str) -> str | None:
        exe = which(command, path)
        return exe if exe is not None and os.path.isfile(exe) and os.access(exe, os.X_OK) else None

    if env.get("WAYLAND_DISPLAY"):
        copy, paste = found("wl-copy"), found("wl-paste")
        if copy and paste:
            return Tool("wl-copy", [copy], [paste, "--no-newline"], [copy, "--clear"])
    if env.get("DISPLAY"):
        xclip = found("xclip")
        if xclip:
            return Tool("xclip", [xclip, "-selection", "clipboard"], [xclip, "-selection", "clipboard", "-out"], None)
        xsel = found("xsel")
        if xsel:
            return Tool("xsel", [xsel, "--clipboard", "--input"], [xsel, "--clipboard", "--output"],
                        [xsel, "--clipboard", "--delete"])
    if platform == "darwin":
        copy, paste = found("pbcopy"), found("pbpaste")
        if copy and paste:
            return Tool("pbcopy", [copy], [paste], None)
    raise errors.ClipboardUnavailable(hint=(
        "kimen uses wl-copy (Wayland), xclip or xsel (X11, with DISPLAY set) or pbcopy (macOS), found on PATH; "
        f"or pipe the value yourself: kimen secret get {name} --unsafe-stdout | <tool>"))


def clear_after(text: str) -> int:
    """Seconds of `--clear-after DUR` (1s-24h); `invalid_duration` otherwise."""
    from .durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        raise errors.InvalidDuration(detail=f"--clear-after {text!r}") from None
    if not MIN_CLEAR_SECONDS <= seconds <= MAX_CLEAR_SECONDS:
        raise errors.InvalidDuration(detail=f"--clear-after {text!r}: must be between 1s and 24h")
    return seconds


def _run(tool: Tool, argv: list[str], env: Mapping[str, str], data: bytes | None, *, capture: bool) -> bytes:
    """Run one tool command (value on stdin only); its stdout when `capture`. `clipboard_failed`
    on a start failure, a non-zero exit or no exit within 5 s."""
    import subprocess

    try:
        done = subprocess.run(
            argv, input=data if data is not None else b"", env=public_environ(env), cwd="/",
            stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT, close_fds=True, check=False)
    except subprocess.TimeoutExpired:
        raise errors.ClipboardFailed(tool=tool.name, detail="no exit within 5 s") from None
    except OSError as exc:
        raise errors.ClipboardFailed(tool=tool.name, detail=exc.strerror or "cannot start") from None
    if done.returncode != 0:
        status = done.returncode if done.returncode > 0 else 128 - done.returncode
        raise errors.ClipboardFailed(tool=tool.name, detail=f"exit status {status}")
    return done.stdout[:MAX_PASTE_BYTES + 1] if capture else b""


def copy(tool: Tool, value: bytes, env: Mapping[str, str]) -> None:
    """Put `value` on the clipboard through the tool's stdin."""
    _run(tool, tool.copy, env, value, capture=False)


def paste(tool: Tool, env: Mapping[str, str]) -> bytes:
    """What the clipboard holds now (`clipboard_failed` when the tool cannot say: empty, not text)."""
    return _run(tool, tool.paste, env, None, capture=True)


def clear(tool: Tool, env: Mapping[str, str]) -> None:
    if tool.clear is None:
        _run(tool, tool.copy, env, b"", capture=False)
    else:
        _run(tool, tool.clear, env, None, capture=False)


def digest(key: bytes, value: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(key, value, hashlib.sha256).digest()


def start_clear(tool: Tool, value: bytes, seconds: int, env: Mapping[str, str]) -> int:
    """Start the detached clear helper; returns its pid (kimen does not wait for it)."""
    import json
    import secrets
    import subprocess

    key = secrets.token_bytes(32)
    message = json.dumps({"tool": tool.as_json(), "key": key.hex(), "digest": digest(key, value).hex(),
                          "seconds": seconds}).encode()
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "kimen.clipclear", "--fd", str(read_fd)],
            pass_fds=(read_fd,), env=public_environ(env), cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError as exc:
        os.close(write_fd)
        raise errors.ClipboardFailed(tool=tool.name, detail=f"cannot start the clear helper: {exc.strerror}") from None
    finally:
        os.close(read_fd)
    try:
        os.write(write_fd, message)  # < PIPE_BUF: one atomic write, readable after kimen exits
    finally:
        os.close(write_fd)
    proc.returncode = 0  # detached on purpose: never waited for (silences Popen's destructor)
    return proc.pid
