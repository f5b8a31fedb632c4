"""The relay of `run --mask` (docs/run.md, "Masking") with real children: through pipes when kimen's
output is not a terminal, through one real pty when it is (isatty, window size, job control), every
masked form across 1-byte writes, clean binary output byte-identical, exit codes and signals as
plain `run`, and the 6-byte rule (refusal under --strict-mask, else a warning naming the values)."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from kimen import errors, output
from kimen.projection.mask import masked_forms
from kimen.projection.relay import check_short_values

VALUES = {
    "API_TOKEN": b"tok_9f8e7d6c5b4a",
    "DB_PASSWORD": 'pä$$ "w0rd"/+?'.encode(),
    "TLS_KEY": b"-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----\n",
    "PIN": b"1234",
}

# kimen's side: the relay module driving a real child (argv after the values' JSON)
DRIVER = """
import json, os, sys
from kimen.projection import relay
values = {k: bytes.fromhex(v) for k, v in json.loads(sys.argv[1]).items()}
sys.exit(relay.run(sys.argv[2], sys.argv[2:], dict(os.environ), values))
"""

# the child: writes its argv[1] (hex) one byte per write(2), to stdout or stderr
ONE_BYTE = """
import os, sys
data = bytes.fromhex(sys.argv[1])
fd = int(sys.argv[2]) if len(sys.argv) > 2 else 1
for i in range(len(data)):
    os.write(fd, data[i:i + 1])
"""


def driver_argv(*child: str, values: dict[str, bytes] = VALUES) -> list[str]:
    return [sys.executable, "-c", DRIVER, json.dumps({k: v.hex() for k, v in values.items()}), *child]


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def run_piped(*child: str, values: dict[str, bytes] = VALUES, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(driver_argv(*child, values=values), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def every_form() -> list[tuple[str, bytes]]:
    return [(name, form) for name, value in VALUES.items() for form in sorted(masked_forms(value))]


# ---------------------------------------------------------------------------------------------
# pipes
# ---------------------------------------------------------------------------------------------


def test_every_form_split_into_one_byte_writes_is_masked_on_stdout_and_stderr():
    forms = every_form()
    assert len(forms) >= 24
    text = b"".join(b"<" + form + b">\n" for _, form in forms)
    for fd in ("1", "2"):
        done = run_piped(*py(ONE_BYTE, text.hex(), fd))
        assert done.returncode == 0, done.stderr
        got = done.stdout if fd == "1" else done.stderr
        for _, form in forms:
            assert form not in got
        expected = b"".join(b"<[masked:" + name.encode() + b"]>\n" for name, _ in forms)
        # a line form of the multi-line key shows the key's name; lines are masked inside longer forms only
        assert got == expected, (fd, got[:400])


def test_clean_binary_output_passes_byte_identical(tmp_path):
    blob = os.urandom(1 << 20) + bytes(range(256)) * 64
    assert not any(form in blob for _, form in every_form())
    (tmp_path / "blob").write_bytes(blob)
    code = ("import sys; sys.stdout.buffer.write(open(sys.argv[1], 'rb').read()); "
            "sys.stderr.buffer.write(b'e\\x00\\xff')")
    done = run_piped(*py(code, str(tmp_path / "blob")))
    assert done.returncode == 0
    assert done.stdout == blob
    assert done.stderr == b"e\x00\xff"


def test_bytes_that_cannot_begin_a_form_are_released_at_once():
    """A prompt is seen before the child goes on (the child waits for it to be read)."""
    code = ("import os, sys\nos.write(1, b'Password for tok_9f8e7d6c5b4a please: ')\n"
            "os.write(1, b'(waiting)'); sys.stdin.readline(); os.write(1, b' done tok_9')\n")
    proc = subprocess.Popen(driver_argv(*py(code)), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    seen = b""
    while not seen.endswith(b"(waiting)"):
        ready = select.select([proc.stdout], [], [], 30)[0]
        assert ready, seen
        seen += os.read(proc.stdout.fileno(), 4096)
    assert seen == b"Password for [masked:API_TOKEN] please: (waiting)"
    proc.stdin.write(b"\n")
    proc.stdin.close()
    assert proc.stdout.read() == b" done tok_9"  # a prefix held until the end, then released
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(("code", "status"), [
    ("import sys; sys.exit(0)", 0), ("import sys; sys.exit(1)", 1), ("import sys; sys.exit(42)", 42),
    ("import sys; sys.exit(255)", 255),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + signal.SIGKILL),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", 128 + signal.SIGSEGV),
])
def test_exit_status_is_the_childs(code, status):
    done = run_piped(*py("import sys; print('out tok_9f8e7d6c5b4a', flush=True)\n" + code))
    assert done.returncode == status
    assert done.stdout == b"out [masked:API_TOKEN]\n"


def test_start_failures_keep_their_reasons(tmp_path):
    done = run_piped(str(tmp_path / "missing"))
    assert done.returncode != 0 and b"CommandNotFound" in done.stderr
    script = tmp_path / "noexec"
    script.write_text("#!/bin/sh\n")
    done = run_piped(str(script))
    assert b"CommandNotExecutable" in done.stderr


def test_sigterm_to_kimen_is_forwarded_once_and_output_is_drained(tmp_path):
    log = tmp_path / "log"
    code = ("import os, signal, sys, time\n"
            "def h(s, f):\n"
            "    open(sys.argv[1], 'a').write('TERM\\n'); os.write(1, b'bye tok_9f8e7d6c5b4a\\n'); os._exit(9)\n"
            "signal.signal(signal.SIGTERM, h)\nprint('ready', flush=True)\n"
            "while True: signal.pause()\n")
    proc = subprocess.Popen(driver_argv(*py(code, str(log))), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.read() == b"bye [masked:API_TOKEN]\n"
    assert proc.wait(timeout=30) == 9
    assert log.read_text() == "TERM\n"


def test_closed_output_reaches_the_child_as_a_closed_pipe():
    """`kimen run --mask -- yes | head -1`: the child meets EPIPE/SIGPIPE, kimen ends."""
    proc = subprocess.Popen(driver_argv(shutil.which("yes"), "tok_9f8e7d6c5b4a"), stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout.readline() == b"[masked:API_TOKEN]\n"
    proc.stdout.close()
    assert proc.wait(timeout=30) == 128 + signal.SIGPIPE


# ---------------------------------------------------------------------------------------------
# a real pty: kimen's stdin, stdout and stderr are a terminal
# ---------------------------------------------------------------------------------------------


class Terminal:
    """kimen started on a fresh pty (session leader, the pty its controlling terminal), as in a shell."""

    def __init__(self, argv: list[str], rows: int = 30, cols: int = 90) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the forked child
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.out = b""

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, self.out
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, self.out
                self.out += chunk
        return self.out

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def finish(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                self.out += chunk
                if not chunk:
                    break
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


REPORT = """
import os, signal, sys
def show(*_):
    c, r = os.get_terminal_size(1)
    print(f"size {r}x{c}", flush=True)
signal.signal(signal.SIGWINCH, show)  # before the first line: the test resizes once it has read it
print("tty", os.isatty(0), os.isatty(1), os.isatty(2), os.getsid(0) == os.getpid(), flush=True)
show()
line = sys.stdin.readline()
print("got", line.strip(), flush=True)
"""


def test_on_a_terminal_the_child_gets_one_pty_with_the_window_size_and_sigwinch():
    term = Terminal(driver_argv(*py(REPORT)))
    term.read_until(b"size 30x90")
    assert b"tty True True True True" in term.out  # stdin too; the child leads its own session
    term.resize(50, 120)  # the terminal signals kimen, which copies the size to the child's pty
    term.read_until(b"size 50x120")
    os.write(term.fd, b"tok_9f8e7d6c5b4a\r")  # typed input reaches the child; its echo is masked too
    assert term.finish() == 0
    assert b"got [masked:API_TOKEN]" in term.out
    assert b"tok_9f8e7d6c5b4a" not in term.out


def test_on_a_terminal_forms_across_one_byte_writes_are_masked_after_the_line_discipline():
    forms = every_form()
    text = b"".join(b"<" + form + b">\n" for _, form in forms)
    term = Terminal(driver_argv(*py(ONE_BYTE, text.hex())))
    assert term.finish() == 0
    for _, form in forms:
        assert form not in term.out
        assert form.replace(b"\n", b"\r\n") not in term.out
    assert term.out.count(b"[masked:") == len(forms)


def test_on_a_terminal_ctrl_c_reaches_the_child_through_the_pty():
    code = "import sys, time\nprint('ready', flush=True)\ntime.sleep(60)"
    term = Terminal(driver_argv(*py(code)))
    term.read_until(b"ready")
    os.write(term.fd, b"\x03")  # raw mode: the byte goes to the child's pty, whose line discipline signals
    assert term.finish() == 128 + signal.SIGINT


JOB_SHELL = """
import os, signal, sys
# a minimal job-control shell: kimen runs as a foreground job in a process group of its own
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.read(go_r, 1)
    os.execv(sys.argv[1], sys.argv[1:])
os.setpgid(pid, pid)
os.tcsetpgrp(0, pid)
os.write(go_w, b"g")
_, status = os.waitpid(pid, os.WUNTRACED)
os.tcsetpgrp(0, os.getpgrp())
print("job stopped" if os.WIFSTOPPED(status) else "job not stopped", flush=True)
os.tcsetpgrp(0, pid)
os.killpg(pid, signal.SIGCONT)
_, status = os.waitpid(pid, 0)
print("job exit", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_on_a_terminal_ctrl_z_stops_the_child_and_kimen_and_fg_continues_both():
    code = ("import sys\nprint('ready', flush=True)\nline = sys.stdin.readline()\n"
            "print('continued', line.strip(), flush=True)")
    term = Terminal(py(JOB_SHELL, *driver_argv(*py(code))))
    term.read_until(b"ready")
    os.write(term.fd, b"\x1a")  # Ctrl-Z: the child's pty stops the child; kimen stops itself
    term.read_until(b"job stopped")
    os.write(term.fd, b"tok_9f8e7d6c5b4a\r")
    assert term.finish() == 0
    assert b"continued [masked:API_TOKEN]" in term.out
    assert b"job exit 0" in term.out


def test_on_a_terminal_sigtstp_to_kimen_stops_the_child_first():
    code = ("import os, sys\nprint('ready', os.getppid(), flush=True)\nline = sys.stdin.readline()\n"
            "print('continued', line.strip(), flush=True)")
    term = Terminal(py(JOB_SHELL, *driver_argv(*py(code))))
    kimen = int(term.read_until(b"\r\n").split(b"ready ")[1].split()[0])
    os.kill(kimen, signal.SIGTSTP)
    term.read_until(b"job stopped")
    os.write(term.fd, b"line\r")
    assert term.finish() == 0
    assert b"continued line" in term.out and b"job exit 0" in term.out


BACKGROUND_SHELL = """
import os, sys
# kimen started as a background job (`kimen run --mask -- CMD &`): its group is not the terminal's
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.execv(sys.argv[1], sys.argv[1:])
try:
    os.setpgid(pid, pid)  # both sides set it (the usual shell race); the child may have exec'd already
except PermissionError:
    pass
_, status = os.waitpid(pid, os.WUNTRACED)
print("job stopped" if os.WIFSTOPPED(status) else f"job exit {os.waitstatus_to_exitcode(status)}", flush=True)
if os.WIFSTOPPED(status):
    os.killpg(pid, 9)
"""


def test_a_terminal_on_stdout_with_stdin_elsewhere_translates_newlines_once():
    """kimen's terminal is not made raw when stdin is not it, so it turns `\n` into `\r\n` itself: the
    pty in between must not do it too (`\r\r\n`)."""
    code = "print('one'); print('tok_9f8e7d6c5b4a', flush=True)"
    term = Terminal(["/bin/sh", "-c", 'exec "$@" < /dev/null', "sh", *driver_argv(*py(code))])
    assert term.finish() == 0
    assert b"one\r\n[masked:API_TOKEN]\r\n" in term.out and b"\r\r\n" not in term.out, term.out


def test_as_a_background_job_kimen_leaves_the_keyboard_alone_and_does_not_stop():
    code = "import os\nprint(os.isatty(0), os.isatty(1), 'tok_9f8e7d6c5b4a', flush=True)"
    term = Terminal(py(BACKGROUND_SHELL, *driver_argv(*py(code))))
    assert term.finish() == 0
    assert b"job exit 0" in term.out
    assert b"True True [masked:API_TOKEN]" in term.out  # stdin: the terminal itself, not the pty


# ---------------------------------------------------------------------------------------------
# the 6-byte rule
# ---------------------------------------------------------------------------------------------


def test_strict_mask_refuses_short_values_by_name():
    with pytest.raises(errors.MaskValueTooShort) as caught:
        check_short_values({"PIN": b"1234", "OTP": b"12345", "OK": b"long enough", "EMPTY": b""}, strict=True)
    assert caught.value.reason == "mask_value_too_short"
    assert caught.value.exit_code(errors.AREA_RUN) == 23
    assert "OTP, PIN" in caught.value.message
    assert "1234" not in caught.value.message


def test_short_values_are_named_in_a_warning(capfd):
    output.collect_warnings(on=True)
    try:
        check_short_values({"PIN": b"1234", "OK": b"long enough", "EMPTY": b""}, strict=False)
        warnings = output.take_warnings()
    finally:
        output.collect_warnings(on=False)
    assert [w["reason"] for w in warnings] == ["mask_value_unmasked"]
    assert "PIN" in warnings[0]["message"] and "1234" not in warnings[0]["message"]
    assert "EMPTY" not in warnings[0]["message"] and "OK" not in warnings[0]["message"]
    check_short_values({"OK": b"long enough"}, strict=True)  # nothing short: nothing said


def test_base64_of_a_value_is_masked_through_the_relay():
    done = run_piped(*py("import sys; print(sys.argv[1])", base64.b64encode(VALUES["DB_PASSWORD"]).decode()))
    assert done.stdout == b"[masked:DB_PASSWORD]\n"
