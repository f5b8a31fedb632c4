"""Resolving the winning directives' references to bytes.

Secrets come from one `store.read(names)` with exactly the names the directives need; the store
is opened through the caller's `open_store` only when there is at least one such name, so a
profile of `const:` and `exec:` never asks for a passphrase. Then each distinct `exec:` argv runs
once, in profile order. Nothing is written here and no value ever reaches a message.
"""

from __future__ import annotations

from .. import errors
from ..environ import which
from ..values import MAX_VALUE_BYTES
from .kmap import Directive

TYPE_CHECKING = False  # collections.abc is not imported on the hot path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from ..store import Store

MAX_EXEC_OUTPUT = 1024 * 1024


def secret_names(directives: Iterable[Directive]) -> list[str]:
    """The secret names `directives` read, sorted and without repeats."""
    return sorted({d.ref.name for d in directives if d.ref is not None and d.ref.kind == "secret"
                   and d.ref.name is not None})


def exec_commands(directives: Iterable[Directive]) -> list[tuple[str, ...]]:
    """Each distinct `exec:` argv, in order of first use."""
    out: list[tuple[str, ...]] = []
    for d in directives:
        if d.ref is not None and d.ref.kind == "exec" and d.ref.argv not in out:
            out.append(d.ref.argv)  # type: ignore[arg-type]
    return out


def run_exec_source(d: Directive, env: Mapping[str, str], cwd: str | None) -> bytes:
    """Stdout of an `exec:` source with one trailing LF or CRLF removed."""
    import subprocess

    assert d.ref is not None and d.ref.argv is not None  # only `exec:` directives come here
    argv = list(d.ref.argv)
    exe = which(argv[0], env.get("PATH"))
    where = d.where
    if exe is None:
        raise errors.ExecSourceFailed(f"{where}: exec source command not found", path=d.path,
                                      line=d.line)
    try:
        proc = subprocess.Popen([exe, *argv[1:]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                env=dict(env), cwd=cwd, close_fds=True)
    except OSError as exc:
        raise errors.ExecSourceFailed(f"{where}: exec source could not start ({exc.strerror})",
                                      path=d.path, line=d.line) from None
    from ..fsutil import read_limited

    try:
        data = read_limited(proc.stdout, MAX_EXEC_OUTPUT)
        if len(data) > MAX_EXEC_OUTPUT:
            raise errors.ExecSourceFailed(f"{where}: exec source printed more than 1 MiB",
                                          path=d.path, line=d.line)
        status = proc.wait()
    except BaseException:  # too much output, or Ctrl-C while it runs: it must not outlive kimen
        from ..procs import stop_tree

        stop_tree(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if status != 0:
        shown = f"exit status {status}" if status > 0 else f"killed by signal {-status}"
        raise errors.ExecSourceFailed(f"{where}: exec source failed ({shown})", path=d.path,
                                      line=d.line, status=status)
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def resolve(
    directives: Sequence[Directive],
    open_store: Callable[[list[str]], Store] | None,
    env: Mapping[str, str],
    cwd: str | None = None,
) -> dict[Directive, bytes]:
    """Bytes of every directive in `directives` that has a reference (envpath has none).

    `open_store(names)`: the store to read `names` from (a session may answer them at once).
    `env` is the environment `exec:` sources get (already without private variables).
    """
    values: dict[Directive, bytes] = {}
    names = secret_names(directives)
    if names:
        if open_store is None:
            raise errors.ProjectionFailed(detail="no store available for secret references")
        store = open_store(names)
        try:
            found = store.read(names)
        finally:
            store.close()
        missing = [n for n in names if n not in found]
        if missing:
            raise errors.SecretNotFound(missing)
        for d in directives:
            if d.ref is not None and d.ref.kind == "secret":
                value = found[d.ref.name].value  # type: ignore[index]
                if len(value) > MAX_VALUE_BYTES:
                    raise errors.SecretTooLarge(secret=d.ref.name)
                values[d] = value
    ran: dict[tuple[str, ...], bytes] = {}
    for d in directives:
        if d.ref is None:
            continue
        if d.ref.kind == "const":
            values[d] = d.ref.const  # type: ignore[assignment]
        elif d.ref.kind == "exec":
            argv = d.ref.argv
            if argv not in ran:
                ran[argv] = run_exec_source(d, env, cwd)  # type: ignore[index]
            values[d] = ran[argv]  # type: ignore[index]
    return values
