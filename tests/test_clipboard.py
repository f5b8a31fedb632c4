"""`secret copy`'s clipboard layer (kimen/clipboard.py, kimen/clipclear.py) with real processes.

A fake `wl-copy`/`wl-paste` pair on PATH (shell scripts keeping the clipboard in a file and
recording their own /proc cmdline and environ) shows detection, the stdin hand-over and the
clear helper's rule; a real `xclip` and `xsel` on a real X server (Xvfb) show the same against
the tools users run.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kimen import clipboard, errors
from tests.conftest import wait_for

VALUE = b"clip-canary-7f3a9 value"
PRIVATE = "private-passphrase-canary"

WL_COPY = """\
#!/bin/sh
tr '\\0' '\\n' < /proc/$$/cmdline > "$CLIP_LOG/copy.cmdline"
tr '\\0' '\\n' < /proc/$$/environ > "$CLIP_LOG/copy.environ"
if [ "$1" = "--clear" ]; then : > "$CLIP"; echo clear >> "$CLIP_LOG/events"; exit 0; fi
cat > "$CLIP.tmp" && mv "$CLIP.tmp" "$CLIP" && echo copy >> "$CLIP_LOG/events"
"""
WL_PASTE = """\
#!/bin/sh
echo paste >> "$CLIP_LOG/events"
[ -s "$CLIP" ] || { echo "Nothing is copied" >&2; exit 1; }
cat "$CLIP"
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


class FakeWayland:
    def __init__(self, root: Path) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "log"
        self.log.mkdir()
        self.clip = root / "clipboard"
        _script(self.bin / "wl-copy", WL_COPY)
        _script(self.bin / "wl-paste", WL_PASTE)
        self.env = {"PATH": f"{self.bin}:/usr/bin:/bin", "WAYLAND_DISPLAY": "wayland-test", "CLIP": str(self.clip),
                    "CLIP_LOG": str(self.log), "KIMEN_PASSPHRASE": PRIVATE, "HOME": str(root)}

    def events(self) -> list[str]:
        path = self.log / "events"
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def wayland(tmp_path):
    return FakeWayland(tmp_path)


def _tools_dir(tmp_path: Path, *names: str) -> str:
    d = tmp_path / "tools"
    d.mkdir(exist_ok=True)
    for name in names:
        _script(d / name, "#!/bin/sh\nexit 0\n")
    return str(d)


def test_detection_order(tmp_path):
    both = _tools_dir(tmp_path, "wl-copy", "wl-paste", "xclip", "xsel", "pbcopy", "pbpaste")
    cases = [
        ({"WAYLAND_DISPLAY": "w", "DISPLAY": ":0"}, "linux", "wl-copy"),
        ({"DISPLAY": ":0"}, "linux", "xclip"),
        ({"WAYLAND_DISPLAY": "", "DISPLAY": ":0"}, "linux", "xclip"),
        ({}, "darwin", "pbcopy"),
        ({"DISPLAY": ":0"}, "darwin", "xclip"),  # XQuartz users get their X clipboard
    ]
    for extra, platform, expected in cases:
        tool = clipboard.detect({"PATH": both, **extra}, platform=platform)
        assert tool.name == expected, (extra, platform)
        assert os.path.isabs(tool.copy[0]) and os.path.isabs(tool.paste[0])
    only_xsel = str(tmp_path / "xsel-only")
    os.mkdir(only_xsel)
    os.symlink(tmp_path / "tools" / "xsel", Path(only_xsel) / "xsel")
    os.symlink(tmp_path / "tools" / "wl-copy", Path(only_xsel) / "wl-copy")  # wl-paste missing: not usable
    tool = clipboard.detect({"PATH": only_xsel, "DISPLAY": ":0", "WAYLAND_DISPLAY": "w"})
    assert (tool.name, tool.copy[1:], tool.paste[1:], tool.clear[1:]) == (
        "xsel", ["--clipboard", "--input"], ["--clipboard", "--output"], ["--clipboard", "--delete"])
    xclip = clipboard.detect({"PATH": both, "DISPLAY": ":0"})
    assert (xclip.copy[1:], xclip.paste[1:], xclip.clear) == (["-selection", "clipboard"],
                                                              ["-selection", "clipboard", "-out"], None)


@pytest.mark.parametrize("env", [
    {},  # no display at all (ssh, CI)
    {"DISPLAY": ":0"},  # X11 without a tool
    {"WAYLAND_DISPLAY": "w"},
])
def test_no_tool_is_clipboard_unavailable_with_the_pipe_in_the_hint(tmp_path, env):
    path = _tools_dir(tmp_path, "pbcopy", "pbpaste", "wl-paste")
    with pytest.raises(errors.ClipboardUnavailable) as caught:
        clipboard.detect({"PATH": path, **env}, name="prod.token", platform="linux")
    hint = caught.value.hint_text
    assert "kimen secret get prod.token --unsafe-stdout | <tool>" in hint
    assert all(tool in hint for tool in ("wl-copy", "xclip", "xsel", "pbcopy"))
    assert caught.value.exit_code(11) == 11


def test_value_goes_only_to_the_tools_stdin(wayland):
    tool = clipboard.detect(wayland.env)
    assert tool.name == "wl-copy"
    clipboard.copy(tool, VALUE, wayland.env)
    assert wayland.clip.read_bytes() == VALUE
    cmdline = (wayland.log / "copy.cmdline").read_text()
    environ = (wayland.log / "copy.environ").read_text()
    assert cmdline.split() == ["/bin/sh", str(wayland.bin / "wl-copy")]
    assert VALUE.decode() not in cmdline + environ
    assert "KIMEN_PASSPHRASE" not in environ and PRIVATE not in environ
    assert "WAYLAND_DISPLAY=wayland-test" in environ.splitlines()
    assert clipboard.paste(tool, wayland.env) == VALUE


def _helper_view(pid: int) -> tuple[bytes, bytes]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        cmdline = fh.read()
    with open(f"/proc/{pid}/environ", "rb") as fh:
        environ = fh.read()
    return cmdline, environ


def test_clear_helper_clears_an_unchanged_clipboard(wayland):
    tool = clipboard.detect(wayland.env)
    clipboard.copy(tool, VALUE, wayland.env)
    pid = clipboard.start_clear(tool, VALUE, 1, wayland.env)
    # the kernel shows an empty cmdline for an instant while the exec completes
    cmdline, environ = wait_for(lambda: (view := _helper_view(pid))[0] and view, "the helper's /proc entry")
    assert b"kimen.clipclear" in cmdline and VALUE not in cmdline + environ
    assert b"KIMEN_PASSPHRASE" not in environ and PRIVATE.encode() not in environ
    assert os.getsid(pid) == pid  # detached: a session of its own
    assert all(os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null" for fd in ("0", "1", "2"))
    os.waitpid(pid, 0)
    assert wayland.clip.read_bytes() == b""
    assert wayland.events()[-2:] == ["paste", "clear"]


def test_clear_helper_never_holds_the_value(wayland):
    """Its whole memory, once it has read its pipe and sleeps, holds the tool it was handed but no
    copy of the value: it got a keyed digest only."""
    from tests.e2e.test_security_invariants import _memory_count

    tool = clipboard.detect(wayland.env)
    clipboard.copy(tool, VALUE, wayland.env)
    pid = clipboard.start_clear(tool, VALUE, 600, wayland.env)
    try:
        cmdline = wait_for(lambda: _helper_view(pid)[0], "the helper's /proc entry")
        fd = cmdline.split(b"\0")[cmdline.split(b"\0").index(b"--fd") + 1].decode()
        wait_for(lambda: not os.path.exists(f"/proc/{pid}/fd/{fd}"), "the helper to read its pipe")
        try:
            seen = _memory_count(pid, str(wayland.bin).encode())
        except PermissionError:
            pytest.skip("this kernel does not let the test read its child's memory")
        assert seen >= 1  # the scan does see what the helper was handed
        assert _memory_count(pid, VALUE) == 0
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert wayland.clip.read_bytes() == VALUE and "clear" not in wayland.events()


def test_clear_helper_leaves_what_the_user_copied_since(wayland):
    tool = clipboard.detect(wayland.env)
    clipboard.copy(tool, VALUE, wayland.env)
    pid = clipboard.start_clear(tool, VALUE, 1, wayland.env)
    clipboard.copy(tool, b"something the user copied", wayland.env)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert wayland.clip.read_bytes() == b"something the user copied"
    assert "clear" not in wayland.events()


def test_clear_helper_with_an_empty_clipboard_does_nothing(wayland):
    tool = clipboard.detect(wayland.env)
    pid = clipboard.start_clear(tool, VALUE, 1, wayland.env)
    os.waitpid(pid, 0)
    assert wayland.events() == ["paste"]


@pytest.mark.parametrize("message", [b"", b"not json", b"[" * 100_000 + b"]" * 100_000,
                                     b'{"tool": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_clear_helper_refuses_a_malformed_message(message, tmp_path):
    """A message it cannot read (nested too deep included) ends the helper with 2, clearing nothing."""
    (tmp_path / "message").write_bytes(message)
    fd = os.open(tmp_path / "message", os.O_RDONLY)
    try:
        done = subprocess.run([sys.executable, "-m", "kimen.clipclear", "--fd", str(fd)],
                              pass_fds=(fd,), capture_output=True, timeout=30)
    finally:
        os.close(fd)
    assert done.returncode == 2 and done.stderr == b""


def test_tool_failures_are_clipboard_failed(wayland):
    _script(wayland.bin / "wl-copy", "#!/bin/sh\ncat > /dev/null; exit 4\n")
    tool = clipboard.detect(wayland.env)
    with pytest.raises(errors.ClipboardFailed) as caught:
        clipboard.copy(tool, VALUE, wayland.env)
    assert caught.value.message == "the clipboard tool wl-copy failed (exit status 4)"
    assert VALUE.decode() not in caught.value.message


@pytest.mark.slow
def test_a_tool_that_hangs_is_stopped_after_5_seconds(wayland):
    _script(wayland.bin / "wl-copy", "#!/bin/sh\nexec sleep 60\n")
    tool = clipboard.detect(wayland.env)
    started = time.monotonic()
    with pytest.raises(errors.ClipboardFailed) as caught:
        clipboard.copy(tool, VALUE, wayland.env)
    assert "no exit within 5 s" in caught.value.message and time.monotonic() - started < 30


@pytest.mark.parametrize(("text", "seconds"), [("45s", 45), ("1", 1), ("2m", 120), ("24h", 86400), ("1h30m", 5400)])
def test_clear_after_durations(text, seconds):
    assert clipboard.clear_after(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "24h1s", "2d", "soon", "", "-5", "1.5s"])
def test_clear_after_out_of_range_or_invalid(text):
    with pytest.raises(errors.InvalidDuration) as caught:
        clipboard.clear_after(text)
    assert caught.value.exit_code(11) == 11


# ---------------------------------------------------------------------------------------------
# A real X server (Xvfb) and the real xclip and xsel
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def x_display():
    """A private X server; its display number comes on a pipe (-displayfd: no race between workers),
    whose read end stays open while it runs (Xvfb writes the number again at each reset)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (Debian package xvfb; `make test` installs it when it can)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp", "-noreset", "-screen", "0", "64x64x8"],
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    os.close(write_fd)
    try:
        ready = select.select([read_fd], [], [], 30)[0]
        number = os.read(read_fd, 64).decode().strip() if ready else ""
        if not number.isdigit():
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=30)
        os.close(read_fd)


@pytest.fixture(params=["xclip", "xsel"])
def x_tool(request, x_display, tmp_path):
    name = request.param
    real = shutil.which(name)
    if real is None:
        pytest.skip(f"{name} is not installed (Debian package {name}; `make test` installs xclip when it can)")
    bin_dir = tmp_path / "xbin"
    bin_dir.mkdir()
    os.symlink(real, bin_dir / name)  # only this tool on PATH
    env = {"PATH": str(bin_dir), "DISPLAY": x_display, "KIMEN_PASSPHRASE": PRIVATE, "HOME": str(tmp_path)}
    tool = clipboard.detect(env)
    assert tool.name == name
    return tool, env


def _holds(tool, env) -> bytes | None:
    try:
        return clipboard.paste(tool, env)
    except errors.ClipboardFailed:
        return None


def test_real_x_clipboard_copy_and_clear(x_tool):
    tool, env = x_tool
    value = VALUE + b"\n" + os.urandom(4).hex().encode()
    clipboard.copy(tool, value, env)
    wait_for(lambda: _holds(tool, env) == value, f"{tool.name} to hold the value", limit=10)
    pid = clipboard.start_clear(tool, value, 1, env)
    os.waitpid(pid, 0)
    wait_for(lambda: _holds(tool, env) in (None, b""), "the clipboard to be cleared", limit=10)


def test_real_x_clipboard_keeps_what_the_user_copied_since(x_tool):
    tool, env = x_tool
    clipboard.copy(tool, VALUE, env)
    wait_for(lambda: _holds(tool, env) == VALUE, f"{tool.name} to hold the value", limit=10)
    pid = clipboard.start_clear(tool, VALUE, 2, env)
    clipboard.copy(tool, b"the user's own text", env)
    wait_for(lambda: _holds(tool, env) == b"the user's own text", "the user's copy", limit=10)
    os.waitpid(pid, 0)
    assert _holds(tool, env) == b"the user's own text"


def test_real_xclip_process_gets_the_value_on_stdin_only(x_display, tmp_path):
    """The real tool's own /proc view while it serves the selection: neither its argv nor its
    environment holds the value or a private variable."""
    real = shutil.which("xclip")
    if real is None:
        pytest.skip("xclip is not installed")
    env = {"PATH": os.path.dirname(real), "DISPLAY": x_display, "KIMEN_PASSPHRASE": PRIVATE}
    tool = clipboard.detect(env)
    marker = os.urandom(6).hex()
    clipboard.copy(tool, VALUE + marker.encode(), env)
    servers = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            view = _helper_view(int(pid))
        except OSError:
            continue
        if view[0].startswith(real.encode()) and b"DISPLAY=" + x_display.encode() in view[1]:
            servers.append(view)
    assert servers, "xclip leaves a process serving the selection"
    for cmdline, environ in servers:
        assert marker.encode() not in cmdline + environ and PRIVATE.encode() not in environ

