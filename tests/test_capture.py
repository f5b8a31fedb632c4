"""`kimen.capture`: real children, both outputs, exit codes and signals, descriptors."""

from __future__ import annotations

import os
import sys

import pytest

from kimen.capture import capture

PY = sys.executable
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_both_outputs_and_the_exit_code():
    done = capture(_py("import sys; sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)"), env=ENV)
    assert (done.code, done.out, done.err) == (3, b"out", b"err")


def test_large_outputs_on_both_streams_do_not_stall():
    """4 MiB on each stream, interleaved: a reader of one pipe at a time would deadlock."""
    code = ("import os\n"
            "for _ in range(64):\n"
            "    os.write(1, b'o' * 65536)\n"
            "    os.write(2, b'e' * 65536)\n")
    done = capture(_py(code), env=ENV)
    assert done.code == 0
    assert done.out == b"o" * (64 * 65536) and done.err == b"e" * (64 * 65536)


def test_stdin_is_dev_null_or_the_given_descriptor(tmp_path):
    assert capture(_py("import sys; print(repr(sys.stdin.read()))"), env=ENV).out == b"''\n"
    source = tmp_path / "in"
    source.write_bytes(b"fed\n")
    with open(source, "rb") as handle:
        assert capture(_py("import sys; sys.stdout.write(sys.stdin.read())"), env=ENV, stdin=handle.fileno()).out \
            == b"fed\n"


def test_exactly_the_given_environment():
    done = capture(_py("import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"), env={**ENV, "ONLY": "1"})
    assert done.out.decode().strip() == repr(sorted(["LC_ALL", "ONLY", "PATH"]))


def test_no_descriptor_of_the_parent_is_inherited(tmp_path):
    """Neither kimen's own descriptors nor one it was given (inheritable) reach the child."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc")
    given = os.open(tmp_path, os.O_RDONLY)
    os.set_inheritable(given, True)
    own = os.open(tmp_path, os.O_RDONLY)
    try:
        done = capture(["/bin/ls", "/proc/self/fd"], env=ENV)
    finally:
        os.close(given)
        os.close(own)
    fds = sorted(int(name) for name in done.out.split())
    assert fds == [0, 1, 2, 3]  # 3: the directory ls reads


def test_sigpipe_and_sigxfsz_are_back_to_default_in_the_child():
    """kimen (Python) ignores SIGPIPE; an ignored signal would stay ignored across exec."""
    if not os.path.isfile("/proc/self/status"):
        pytest.skip("no /proc")
    done = capture(["/bin/cat", "/proc/self/status"], env=ENV)
    line = next(line for line in done.out.decode().splitlines() if line.startswith("SigIgn:"))
    ignored = int(line.split()[1], 16)
    assert ignored & (1 << (13 - 1)) == 0 and ignored & (1 << (25 - 1)) == 0  # SIGPIPE, SIGXFSZ (Linux numbers)


def test_a_killed_child_reports_the_signal():
    done = capture(_py("import os, signal; os.kill(os.getpid(), signal.SIGTERM)"), env=ENV)
    assert done.code == -15


def test_a_missing_program_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        capture([str(tmp_path / "missing")], env=ENV)


def test_works_when_the_parent_started_without_stdout():
    """A parent whose descriptors 1 and 2 are closed gets them back from pipe(): the child must
    still see its output pipes, not a descriptor closed by close-on-exec."""
    code = ("import os, sys\n"
            "from kimen.capture import capture\n"
            "saved = os.dup(1)\n"
            "os.close(1); os.close(2)\n"
            "done = capture([sys.executable, '-c', 'print(\"hi\"); import sys; sys.stderr.write(\"e\")'],"
            " env={'PATH': '/usr/bin:/bin'})\n"
            "os.write(saved, repr((done.code, done.out, done.err)).encode())\n")
    done = capture(_py(code), env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.out == repr((0, b"hi\n", b"e")).encode()


def test_an_interrupted_capture_kills_and_reaps_the_child(tmp_path):
    """An exception while the outputs are read (here a signal handler raising, as Ctrl-C does):
    the child is killed and reaped, never left running or as a zombie."""
    import signal

    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 2.0)  # time for the child to start and write its pid
    try:
        with pytest.raises(KeyboardInterrupt):
            capture(_py(code), env=ENV)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pid = int(pid_file.read_text())
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped, so dead: no child of ours by that pid any more
