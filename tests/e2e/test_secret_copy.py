"""`secret copy` through the installed kimen: a fake `wl-copy`/`wl-paste` on PATH (detection, the
value on stdin only, no private variable, the detached clear and its digest check), and the real
`xclip` on a real X server (Xvfb) when both are installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CANARY = "CANARY-copy-31d9-value"

WL_COPY = """#!{python}
import os, sys
clip, log = os.environ["FAKE_CLIP"], os.environ["FAKE_LOG"]
with open(log, "a") as f:
    f.write("copy %r private=%s\\n" % (sys.argv[1:], "KIMEN_PASSPHRASE" in os.environ))
data = b"" if "--clear" in sys.argv else sys.stdin.buffer.read()
with open(clip, "wb") as f:
    f.write(data)
"""
WL_PASTE = """#!{python}
import os, sys
clip, log = os.environ["FAKE_CLIP"], os.environ["FAKE_LOG"]
with open(log, "a") as f:
    f.write("paste %r\\n" % (sys.argv[1:],))
data = open(clip, "rb").read()
if not data:
    sys.exit(1)
sys.stdout.buffer.write(data)
"""


@pytest.fixture
def wl(kimen, tmp_path):
    kimen.init_vault()
    kimen.set("app.token", CANARY)
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    for name, text in (("wl-copy", WL_COPY), ("wl-paste", WL_PASTE)):
        (bindir / name).write_text(text.format(python=sys.executable))
        (bindir / name).chmod(0o755)
    env = {**kimen.with_pass(), "WAYLAND_DISPLAY": "wayland-test", "PATH": f"{bindir}:{kimen.env['PATH']}",
           "FAKE_CLIP": str(tmp_path / "clip"), "FAKE_LOG": str(tmp_path / "log")}
    (tmp_path / "clip").write_bytes(b"")
    (tmp_path / "log").write_text("")
    kimen.wl_env = env
    kimen.clip = tmp_path / "clip"
    kimen.log = tmp_path / "log"
    return kimen


def _until(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _helpers(marker: str) -> list[int]:
    """Clear helpers whose environment holds `marker` (ours, not another test's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"kimen.clipclear" in cmdline and marker.encode() in environ:
            found.append(int(entry))
    return found


def test_copy_hands_the_value_on_stdin_and_clears_it(wl):
    done = wl.ok("secret", "copy", "app.token", "--clear-after", "1s", env=wl.wl_env)
    assert done.stdout.strip() == "copied app.token to the clipboard (wl-copy); clears in 1s"
    assert CANARY not in done.stdout + done.err
    log = wl.log.read_text()
    assert CANARY not in log and "private=False" in log  # not in argv, no private variable
    _until(lambda: wl.clip.read_bytes() == b"", "the clipboard to be cleared")
    _until(lambda: not _helpers(str(wl.clip)), "the helper to exit")
    assert "--clear" in wl.log.read_text()


def test_the_helper_leaves_a_clipboard_the_user_changed(wl):
    doc = wl.ok("secret", "copy", "app.token", "--clear-after", "2s", "--json", env=wl.wl_env).json()
    assert doc == {**doc, "action": "copy", "name": "app.token", "revision": 1, "tool": "wl-copy",
                   "clear_after_seconds": 2}
    assert wl.clip.read_bytes() == CANARY.encode()
    wl.clip.write_bytes(b"something else")
    _until(lambda: "paste" in wl.log.read_text(), "the helper to read the clipboard")
    _until(lambda: not _helpers(str(wl.clip)), "the helper to exit")
    assert wl.clip.read_bytes() == b"something else" and "--clear" not in wl.log.read_text()


def test_no_clear_starts_no_helper(wl):
    doc = wl.ok("secret", "copy", "app.token", "--no-clear", "--json", env=wl.wl_env).json()
    assert doc["clear_after_seconds"] is None and not _helpers(str(wl.clip))
    assert wl.clip.read_bytes() == CANARY.encode()


def test_no_tool_is_refused_before_any_unlock(wl):
    env = {**wl.wl_env, "WAYLAND_DISPLAY": "", "DISPLAY": ""}
    done = wl.fail(11, "clipboard_unavailable", "secret", "copy", "app.token", env=env, unset=("KIMEN_PASSPHRASE",))
    assert "--unsafe-stdout" in done.err
    wl.fail(11, "invalid_duration", "secret", "copy", "app.token", "--clear-after", "25h", env=wl.wl_env)
    wl.fail(11, "invalid_duration", "secret", "copy", "app.token", "--clear-after", "soon", env=wl.wl_env)
    wl.fail(12, "secret_not_found", "secret", "copy", "app.nope", env=wl.wl_env)
    assert wl.clip.read_bytes() == b""


def test_a_failing_tool(wl, tmp_path):
    (tmp_path / "fakebin" / "wl-copy").write_text("#!/bin/sh\nexit 4\n")
    wl.fail(11, "clipboard_failed", "secret", "copy", "app.token", env=wl.wl_env)


@pytest.mark.skipif(not (shutil.which("xclip") and shutil.which("Xvfb")), reason="needs xclip and Xvfb")
def test_real_xclip_on_xvfb(kimen, tmp_path):
    kimen.init_vault()
    kimen.set("app.token", CANARY)
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-nolisten", "tcp"], pass_fds=(write_fd,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as f:
            display = ":" + f.readline().strip()
        env = {**kimen.with_pass(), "DISPLAY": display, "WAYLAND_DISPLAY": ""}

        def held() -> bytes:
            out = subprocess.run(["xclip", "-selection", "clipboard", "-out"], env={**os.environ, "DISPLAY": display},
                                 capture_output=True, timeout=10)
            return out.stdout

        doc = kimen.ok("secret", "copy", "app.token", "--no-clear", "--json", env=env).json()
        assert doc["tool"] == "xclip" and held() == CANARY.encode()
        kimen.ok("secret", "copy", "app.token", "--clear-after", "1s", env=env)
        _until(lambda: held() == b"", "xclip's clipboard to be cleared")
    finally:
        server.terminate()
        server.wait(timeout=30)
