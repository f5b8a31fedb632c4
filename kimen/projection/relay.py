"""The output relay of `kimen run --mask`: the child's stdout and stderr pass through the masker.

Imported only under `--mask` (it imports the masker and its matcher library, `threading`, `termios`).

Streams. When kimen's stdout or stderr is a terminal, the child gets one pty as its controlling
terminal, in a session of its own: the pty is its stdout and its stderr where kimen's are terminals,
and its stdin too when kimen's stdin is a terminal, no `stdin` is projected and kimen is the
terminal's foreground job (a background kimen must not read or set the terminal). The pty's output
goes to kimen's stdout when that is a terminal, else to its stderr. The pty starts with the
terminal's modes and window size. Every stream that is not a terminal gets a pipe of its own (stdin
is then inherited, or the projected `stdin` pipe).

Relaying. One thread per output stream reads what the child wrote, feeds the masker and writes what
it releases at once (`MaskStream.feed` holds only bytes that may still begin a form). At end of
stream (EOF, or EIO once every holder of the pty's other side has closed it) the rest is released.
When kimen's own output is closed (EPIPE) the thread closes its read end, so the child meets a
closed pipe on its next write, as it would without kimen; any other failed write (a full disk) does
the same and is kept in `lost` for `kimen run` to report. A terminal stdin is copied to the pty by
another thread, with kimen's terminal in raw mode (restored on every exit path and while stopped),
so Ctrl-C, Ctrl-\\ and Ctrl-Z reach the child through the pty's line discipline.

Signals (the main thread; collected with `sigwaitinfo` as in `run.supervise`). Through pipes, the
rules of plain `run` hold unchanged. On a pty the child leads its own session and process group:
every relayed signal is forwarded to that group (a terminal's Ctrl-C reaches kimen alone when its
stdin is not in raw mode), except SIGWINCH, which copies the window size to the pty (the kernel then
signals the child). Job control: the child leads its own session, so its process group is orphaned
and the kernel discards SIGTSTP sent to it (by the pty or anyone); kimen therefore stops it with
SIGSTOP, when the pty's suspend character (Ctrl-Z) arrives from kimen's terminal while the pty
generates signals, or when kimen gets SIGTSTP. When the child stops, kimen restores its terminal and
stops itself; when kimen is continued it re-enters raw mode, copies the window size and continues
the child. A program that reads Ctrl-Z itself (an editor in raw mode) cannot suspend itself this
way. kimen ends when the child has exited and its output
streams are closed (as a pipeline does); then the exit code is the child's, or 128+N for signal N.
"""

from __future__ import annotations

import _signal
import errno
import os
import sys
import threading

from .. import errors
from . import run as prun
from .mask import MIN_LENGTH, Masker, MaskStream

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

CHUNK = 1 << 20  # a read returns what is there: large reads cost nothing when output trickles
PIPE_SIZE = 1 << 20  # the child's pipes (Linux F_SETPIPE_SZ): fewer, larger chunks per write burst
JOB_CONTROL = frozenset({_signal.SIGTSTP, _signal.SIGCONT})


def check_short_values(values: Mapping[str, bytes], *, strict: bool) -> None:
    """Values too short to mask (under 6 bytes; empty ones hide nothing): refused under
    `--strict-mask` (`mask_value_too_short`), else named in a warning. Names only, never values."""
    short = sorted(name for name, value in values.items() if 0 < len(value) < MIN_LENGTH)
    if not short:
        return
    if strict:
        raise errors.MaskValueTooShort(names=", ".join(short))
    from ..output import warn

    warn(f"values under {MIN_LENGTH} bytes are not masked: {', '.join(short)}", reason="mask_value_unmasked")


class Relay:
    """The child's output streams for one run: decided from kimen's own (terminal or not), opened
    before the fork, relayed after it. `values` maps the name shown in `[masked:NAME]` to a value."""

    def __init__(self, values: Mapping[str, bytes], *, stdin_projected: bool) -> None:
        out_tty, err_tty = os.isatty(1), os.isatty(2)
        # kimen's keyboard goes to the pty only while kimen is the terminal's foreground job
        self.in_tty = os.isatty(0) and not stdin_projected and (out_tty or err_tty) and _foreground()
        self.pty = out_tty or err_tty
        self.values = dict(values)
        self._maskers: dict[bool, Masker] = {}
        self.redirect: dict[int, int] = {}  # child fd -> fd dup'ed there
        self._child_ends: list[int] = []
        self._pumps: list[tuple[int, int, MaskStream]] = []  # (read fd, kimen fd, masking state)
        self.lost: list[tuple[int, OSError]] = []  # (kimen fd, error) of an output that failed (not EPIPE)
        self._threads: list[threading.Thread] = []
        self._saved_mode: list[Any] | None = None
        self._stop_r = self._stop_w = -1
        self.master = self.ctty = -1
        self.terminal = -1  # kimen's terminal whose size and modes the pty copies
        try:
            if self.pty:
                self._open_pty(out_tty, err_tty)
            for fd, tty in ((1, out_tty), (2, err_tty)):
                if not tty:
                    read_end, write_end = os.pipe()
                    _grow_pipe(read_end)
                    self._child_ends.append(write_end)
                    self.redirect[fd] = write_end
                    self._pumps.append((read_end, fd, self._masker(pty=False).stream()))
        except BaseException:
            self.close()
            raise

    def _masker(self, *, pty: bool) -> Masker:
        masker = self._maskers.get(pty)
        if masker is None:
            masker = self._maskers[pty] = Masker(self.values, pty=pty)
        return masker

    @property
    def watched(self) -> frozenset[int]:
        """The signals the supervisor collects (job control too on a pty)."""
        return prun.WATCHED | JOB_CONTROL if self.pty else prun.WATCHED

    def _open_pty(self, out_tty: bool, err_tty: bool) -> None:
        import termios

        self.terminal = 1 if out_tty else 2
        master, slave = os.openpty()
        self.master, self.ctty = master, slave
        self._child_ends.append(slave)
        try:
            modes = termios.tcgetattr(self.terminal)
            if not self.in_tty:  # kimen's terminal is never made raw, so it translates output itself
                modes[1] &= ~termios.OPOST  # once: not `\r\r\n` for the child's `\n`
            termios.tcsetattr(slave, termios.TCSANOW, modes)
        except termios.error:
            pass  # the pty's default modes
        self.copy_window_size()
        for fd, tty in ((0, self.in_tty), (1, out_tty), (2, err_tty)):
            if tty:
                self.redirect[fd] = slave
        self._pumps.append((master, self.terminal, self._masker(pty=True).stream()))

    def copy_window_size(self) -> None:
        """kimen's terminal's size onto the pty (the kernel signals the child's foreground group)."""
        import fcntl
        import termios

        try:
            size = fcntl.ioctl(self.terminal, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def spawn(self, exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes], stdin_fd: int | None,
              *, own_group: bool) -> int:
        """Start the child on these streams (signals blocked, no other thread yet), then the relays."""
        pid = prun.spawn(exe, argv, environ, stdin_fd, own_group=own_group and not self.pty,
                         redirect=self.redirect, ctty=self.ctty if self.pty else None)
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []
        self.ctty = -1
        self._start()
        return pid

    def _start(self) -> None:
        if self.in_tty:
            self._stop_r, self._stop_w = os.pipe()
            self.raw_mode()
            self._thread(_copy_input, self._stop_r, os.dup(self.master))  # its own fd: the pump closes master
        for read_fd, out_fd, stream in self._pumps:
            self._thread(_pump, read_fd, out_fd, stream, self.lost)

    def _thread(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="kimen-relay", daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def raw_mode(self) -> None:
        """kimen's terminal (its stdin) in raw mode; the first call saves the modes to restore."""
        if not self.in_tty or not _foreground():  # a background job leaves the terminal alone
            return
        import termios
        import tty

        try:
            if self._saved_mode is None:
                self._saved_mode = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)
        except termios.error:
            pass

    def restore_mode(self) -> None:
        if self._saved_mode is None:
            return
        import termios

        try:
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved_mode)
        except termios.error:
            pass

    def supervise(self, pid: int, *, own_group: bool) -> int:
        """Relay signals (and job control on a pty) until the child exits, then the rest of its
        output; returns kimen's exit code for the child's status."""
        group = own_group or self.pty
        watched = self.watched
        while True:
            done, status = os.waitpid(pid, os.WNOHANG | (os.WUNTRACED if self.pty else 0))
            if done == pid:
                if os.WIFSTOPPED(status):
                    self._child_stopped(pid)
                    continue
                code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
                break
            sig, from_terminal = prun.next_signal(watched)
            if sig == _signal.SIGCHLD:
                continue
            if self.pty and sig == _signal.SIGWINCH:
                self.copy_window_size()
            elif sig == _signal.SIGCONT:
                self.raw_mode()
                self.copy_window_size()
                prun.forward(pid, sig, True)
            elif sig == _signal.SIGTSTP:  # the child stops, then kimen (above); SIGTSTP would be discarded
                prun.forward(pid, _signal.SIGSTOP, True)  # (the child's group is orphaned: _stop_foreground)
            elif not (sig in prun.TERMINAL_SIGNALS and from_terminal and prun.shares_foreground(pid)):
                prun.forward(pid, sig, group)
        self._drain(pid if group else None, watched)
        return code

    def _child_stopped(self, pid: int) -> None:
        """The child stopped (Ctrl-Z through the pty, or a SIGTSTP kimen forwarded): kimen gives the
        terminal back and stops too; once continued it takes the terminal again and continues the child."""
        self.restore_mode()
        sys.stdout.flush()
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGTSTP})
        try:
            os.kill(os.getpid(), _signal.SIGTSTP)  # default action: the process stops here
        finally:
            _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGTSTP})
        self.raw_mode()
        self.copy_window_size()
        prun.forward(pid, _signal.SIGCONT, True)

    def _drain(self, group: int | None, watched: frozenset[int]) -> None:
        """Wait for the output relays to reach end of stream (what the child's descendants still
        hold open keeps them going); stopping signals meanwhile go to the child's group."""
        outputs = self._threads[1:] if self.in_tty else self._threads
        wait = getattr(_signal, "sigtimedwait", None)
        for thread in outputs:
            while thread.is_alive():
                if wait is None:
                    thread.join()
                    break
                info = wait(watched, 0.05)
                if info is not None and group is not None and info.si_signo in prun.STOPPING:
                    try:
                        os.killpg(group, info.si_signo)
                    except OSError:
                        pass

    def lost_output(self) -> tuple[str, OSError] | None:
        """(stream, error) when relaying to kimen's own stdout or stderr failed for another reason
        than a reader that went away (a full disk, a closed descriptor); known once `supervise`
        returned."""
        if not self.lost:
            return None
        fd, failed = self.lost[0]
        return ("standard output" if fd == 1 else "standard error"), failed

    def close(self) -> None:
        """Restore the terminal, stop the input copier, close what is still open (every exit path)."""
        self.restore_mode()
        if self._stop_w >= 0:
            os.close(self._stop_w)  # the copier sees it and returns
            self._stop_w = -1
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []
        if not self._threads:  # never started: the relays' read ends are ours to close
            for read_fd, _, _ in self._pumps:
                os.close(read_fd)
            self._pumps = []


def _grow_pipe(fd: int) -> None:
    import fcntl

    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    try:
        fcntl.fcntl(fd, setsize, PIPE_SIZE)
    except OSError:
        pass  # not Linux, or over the user's pipe-buffer limit: the default size


def _foreground() -> bool:
    """kimen's stdin is a terminal whose foreground process group is kimen's."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _write_all(fd: int, data: bytes) -> OSError | None:
    """Write everything; the error when the reader is gone (EPIPE) or the output failed."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        return exc
    return None


def _pump(read_fd: int, out_fd: int, stream: MaskStream, lost: list[tuple[int, OSError]]) -> None:
    """One output stream: read, mask, write what is released; the rest at end of stream. A write
    that fails for another reason than a closed reader (a full disk) is recorded in `lost`."""
    try:
        while True:
            try:
                chunk = os.read(read_fd, CHUNK)
            except OSError as exc:  # EIO: the pty's other side is closed by every holder
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            released = stream.feed(chunk) if chunk else stream.flush()
            failed = _write_all(out_fd, released) if released else None
            if failed is not None:  # kimen's output failed: closing the read end tells the child
                if failed.errno != errno.EPIPE:
                    lost.append((out_fd, failed))
                return
            if not chunk:
                return
    except OSError:
        return
    finally:
        os.close(read_fd)


def _copy_input(stop_fd: int, master: int) -> None:
    """kimen's terminal input to the pty, until kimen stops relaying or either side closes."""
    import select

    try:
        while True:
            if not _foreground():  # reading the terminal in the background would stop kimen (SIGTTIN)
                if select.select([stop_fd], [], [], 0.2)[0]:
                    return
                continue
            ready = select.select([0, stop_fd], [], [])[0]
            if stop_fd in ready:
                return
            if not _foreground():
                continue
            data = os.read(0, 4096)
            if not data:
                return
            suspend = _suspend_char(master)
            while suspend is not None and suspend in data:  # Ctrl-Z: stop the foreground job
                before, _, data = data.partition(suspend)
                if _write_all(master, before) is not None:
                    return
                _stop_foreground(master)
            if _write_all(master, data) is not None:
                return
    except OSError:
        return
    finally:
        os.close(stop_fd)
        os.close(master)


def _suspend_char(master: int) -> bytes | None:
    """The pty's suspend character while its line discipline generates signals (ISIG), else None."""
    import termios

    try:
        mode = termios.tcgetattr(master)
    except termios.error:
        return None
    char = mode[6][termios.VSUSP]
    if not mode[3] & termios.ISIG or char in (b"\0", 0, b""):
        return None
    return char if isinstance(char, bytes) else bytes([char])


def _stop_foreground(master: int) -> None:
    """Stop the pty's foreground process group with SIGSTOP: the child leads a session of its own,
    so its group is orphaned and the kernel discards the SIGTSTP a terminal would send it."""
    try:
        os.killpg(os.tcgetpgrp(master), _signal.SIGSTOP)
    except OSError:
        pass


def run(exe: str, argv: Sequence[str], environ: Mapping[str, str | bytes], values: Mapping[str, bytes], *,
        stdin_data: bytes | None = None) -> int:
    """Start and supervise a masked child with nothing to clean up (the benchmark's and tests' entry;
    `kimen run --mask` does the same around its runtime directory)."""
    relay = Relay(values, stdin_projected=stdin_data is not None)
    prun.block_signals(relay.watched)
    try:
        own_group = prun.own_group_wanted()
        pid = prun.start(exe, argv, environ, stdin_data, own_group=own_group, spawner=relay.spawn)
        return relay.supervise(pid, own_group=own_group)
    finally:
        relay.close()
