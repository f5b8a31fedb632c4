"""`kimen secret get NAME --unsafe-stdout` and `kimen run --profile P -- CMD` served by a live
session, without the command model.

These are the most frequent commands of scripts and agents; through `kimen.cli` (its command
records, the invocation, the full session client and the store interface, `json`) they cost more
than the interpreter's own start-up. This module recognises exactly these argv shapes,

    secret get NAME --unsafe-stdout
    secret get --unsafe-stdout NAME
    run --profile P -- CMD [ARG...]
    run -- CMD [ARG...]                 (with KIMEN_PROFILE set)

and handles only the case where everything is plain: no explicit passphrase source and no grant
token in the environment, the vault from `KIMEN_VAULT` or the default path (no config file), a
safe session directory, a daemon of this uid and version that returns every value; for `secret
get` a valid secret name; for `run` a profile that projects only environment variables (from
secrets and `const:`, never `PATH`), a command found on PATH, no enclosing `kimen run`. **Anything
else — any doubt, any error before a value was served — returns None and the normal parser runs
the command from the start**, so every message, warning, fallback and exit code comes from the
one parser of truth (`kimen.cli`). The rules themselves are not copied: the profile is read by
`kimen.projection.kmap` and the child's environment built by `kimen.projection.env`, as on the
normal path (the one copy is the secret-name check, below). A read the session refused is handed
back too, so the audit log records that refusal once more, before the normal path's own requests.

`tests/e2e/test_session_fastpath.py` and `tests/e2e/test_run_session_fastpath.py` check both
paths give the same exit code, stdout and stderr (and for `run` the child's environment and the
audit records) across states (live, locked, stopped, missing secret, invalid name, explicit
passphrase, unsafe session directory, grants required, …).

The request is the protocol's `read` frame (for `run` with the `context` the normal client sends);
the response is accepted only in the exact shape this version's daemon writes (a daemon of
another version refuses the request). Stdlib C modules only: `_socket` (and `binascii` for a long
value).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .projection.kmap import Directive

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


_REPLY_TIMEOUT = 60.0  # as the normal client's REPLY_TIMEOUT: a read may wait for a busy vault


class _Defer(Exception):
    """Not the plain case: let the normal parser run the command."""


def secret_get(argv: list[str]) -> int | None:
    """Exit code when the fast path served the command, else None (nothing was printed). A value
    read but not written (a full disk on stdout) raises the OSError: `kimen.__main__` reports it."""
    if len(argv) != 4 or argv[0] != "secret" or argv[1] != "get" or sys.stdout is None:
        return None
    if argv[2] == "--unsafe-stdout":
        name = argv[3]
    elif argv[3] == "--unsafe-stdout":
        name = argv[2]
    else:
        return None
    try:
        if not _valid_name(name):
            raise _Defer()
        value = _read([name], None)[name]
    except (_Defer, OSError, ValueError, KeyError, RuntimeError):
        return None
    out = sys.stdout
    out.flush()
    out.buffer.write(value)
    out.buffer.flush()
    return 0


def run(argv: list[str]) -> None:
    """`run --profile P -- CMD [ARG...]`, or `run -- CMD [ARG...]` with `KIMEN_PROFILE` set: exec
    the child in place when the profile (loaded by `kimen.projection.kmap`, the one profile reader)
    projects only environment variables, from secrets (and `const:`) a live session serves, and
    the normal path would exec it in place too. The child's environment, the command lookup and
    the checks of what execve would refuse are `kimen.projection.env`'s, as on the normal path.

    Returns, having printed and started nothing, in every other case, up to and including a read
    the session refused (a missing secret, a grant required): the normal path then runs the
    command from the start. Once the session has served the values, the command is this path's:
    a failure (a NUL in a value, an environment too large for execve) raises its `KimenError`,
    which `kimen.__main__` reports as the normal path would, so no value is read twice."""
    if len(argv) >= 5 and argv[1] == "--profile" and argv[3] == "--":
        profile, child = argv[2], argv[4:]
    elif len(argv) >= 3 and argv[1] == "--":
        profile, child = os.environ.get("KIMEN_PROFILE", ""), argv[2:]
    else:
        return
    if argv[0] != "run" or not profile or profile[0] == "-" or not child[0] or "KIMEN_RUN" in os.environ:
        return  # (a nested run warns: the normal path's)
    try:
        winners, exe = _plan(profile, child)
        names = sorted({d.ref.name for d in winners if d.ref is not None and d.ref.name is not None})
        if not names or not _one_read(names):
            return
        found = _read(names, f'{{"command":"run","profile":{_quote(profile)}}}')
    except Exception:  # any doubt: the normal path runs the command from the start
        return
    _exec(winners, found, exe, child)


def _one_read(names: list[str]) -> bool:
    """Whether the normal client reads `names` in one request too (`protocol.read_batches`, every
    value counted at its largest legal size); more, and it reads them in batches."""
    from .daemon import protocol
    from .values import MAX_VALUE_BYTES

    return len(protocol.read_batches(names, None, MAX_VALUE_BYTES)) == 1


def _plan(profile: str, child: list[str]) -> tuple[list[Directive], str]:
    """The winning directives of `profile` (only `env` ones from secrets or `const:`, never PATH)
    and the program `child` runs, found on kimen's own PATH (the profile cannot change it)."""
    from .projection import env as penv
    from .projection import kmap

    winners = kmap.load(profile=profile, env=os.environ).check().winners()
    if any(d.kind != "env" or d.ref is None or d.ref.kind not in ("secret", "const") or d.target == "PATH"
           for d in winners):
        raise _Defer()  # files, stdin, envpath, exec: sources: the normal path
    return winners, penv.find_command(child[0], penv.base_environ(os.environ, False))


def _exec(winners: list[Directive], found: dict[str, bytes], exe: str, child: list[str]) -> None:
    from . import errors
    from .projection import env as penv
    from .values import MAX_VALUE_BYTES

    values: dict[Directive, bytes] = {}
    for d in winners:
        assert d.ref is not None and (d.ref.name is not None or d.ref.const is not None)
        value = d.ref.const if d.ref.name is None else found[d.ref.name]
        assert value is not None
        if len(value) > MAX_VALUE_BYTES:
            raise errors.SecretTooLarge(secret=d.ref.name)
        values[d] = value
    environ = penv.child_environ(os.environ, winners, values, None)
    penv.check_exec_block(environ, child)
    penv.exec_in_place(exe, child, environ)


def _valid_name(name: str) -> bool:
    """The secret-name rule of `kimen.values.check_secret_name` (ASCII letters, digits, `_` and `-`
    in non-empty dot-separated segments, at most 128, not starting with `-`). A copy on purpose:
    importing `kimen.values` costs this command ~0.15 ms (2 % of it, against a 1.3x budget it
    meets by little); tests/e2e/test_session_fastpath.py checks that the two rules agree."""
    if not 0 < len(name) <= 128 or name[0] == "-" or not name.isascii():
        return False
    return all(segment and _NAME_CHARS.issuperset(segment) for segment in name.split("."))


def _quote(text: str) -> str:
    """A JSON string for plain printable ASCII; anything needing escapes defers."""
    if not text.isascii() or not text.isprintable() or '"' in text or "\\" in text:
        raise _Defer()
    return f'"{text}"'


def _read(names: list[str], context: str | None) -> dict[str, bytes]:
    """The values of `names` (valid secret names) from the live session serving the vault, in one
    `read` request carrying `context` (a JSON object's text, as the normal path's client sends
    it); `_Defer` for anything but the plain case and the exact answer this version writes."""
    env = os.environ
    if env.get("KIMEN_PASSPHRASE") or env.get("KIMEN_SESSION_TOKEN"):
        raise _Defer()
    from . import paths
    from .daemon import protocol

    vault = env.get("KIMEN_VAULT", "")
    if vault:
        path = paths.absolute(vault)
    else:
        if not paths.config_absent(env):  # vault.path may be configured: the normal path
            raise _Defer()
        path = paths.default_vault(env)
    if not os.path.exists(path):
        raise _Defer()
    canonical = os.path.realpath(path)
    try:
        sock_path = protocol.socket_path(env)
    except Exception:
        raise _Defer() from None
    st = os.lstat(os.path.dirname(sock_path))
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise _Defer()
    listed = ",".join(_quote(name) for name in names)
    told = "" if context is None else ',"context":' + context
    body = (f'{{"v":{protocol.PROTOCOL},"kimen":{_quote(protocol.VERSION)},"id":"1","op":"read",'
            f'"vault_path":{_quote(canonical)},"names":[{listed}]{told}}}').encode()
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(sock_path)
        if protocol.peer_uid(sock) != os.getuid():  # before sending anything
            raise _Defer()
        sock.sendall(len(body).to_bytes(4, "big") + body)
        sock.settimeout(_REPLY_TIMEOUT)
        try:
            length = int.from_bytes(_recv(sock, 4), "big")
        except TimeoutError:  # it took the request and did not answer: the normal path need not wait again
            protocol.UNANSWERED.add(sock_path)
            raise
        if length > protocol.MAX_FRAME:
            raise _Defer()
        reply = _recv(sock, length)
    finally:
        sock.close()
    return _values(reply, names)


def _values(reply: bytes, names: list[str]) -> dict[str, bytes]:
    """Each name's value from a `read` answer in exactly the shape this version's daemon writes
    (`{"v","id","ok","secrets":[{"name","value_b64","revision"}, ...]}`, every name once)."""
    from .daemon import protocol

    head = f'{{"v":{protocol.PROTOCOL},"id":"1","ok":true,"secrets":[{{'.encode()
    if not reply.startswith(head) or not reply.endswith(b"}]}"):
        raise _Defer()
    found: dict[str, bytes] = {}
    for item in reply[len(head):-3].split(b"},{"):  # names, base64 and digits hold no braces
        name, sep, rest = item.partition(b'","value_b64":"')
        encoded, sep2, revision = rest.partition(b'","revision":')
        if not (name.startswith(b'"name":"') and sep and sep2 and revision.isdigit()):
            raise _Defer()
        text = name[len(b'"name":"'):].decode("ascii")
        if text not in names or text in found:
            raise _Defer()
        found[text] = protocol.value_from_b64(encoded.decode("ascii"))
    if len(found) != len(names):
        raise _Defer()
    return found


def _recv(sock, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise _Defer()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
