"""Opening the store a command needs: the vault path and the unlock order (docs/passphrase-and-config.md).

This is the one seam between commands and vaults: a command asks `open_store(inv)` and gets a
`Store` — the session daemon's when a session for the same canonical vault path is live and no
explicit passphrase source was given, else a locally unlocked vault. `open_metadata(inv)` opens
a vault for key-free reads (`list`, `meta`) without any passphrase.

The local vault module (sqlite3, crypto) is imported only on the local path, so a command served
by a live session never loads it.
"""

from __future__ import annotations

import os

from . import errors, paths

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Protocol, TypeVar

    from .sensitive import Sensitive

    T = TypeVar("T")

    from .config import Config
    from .daemon.client import Probe
    from .passphrase import Source, StdinClaim
    from .store import Store
    from .vault import LocalStore, Vault
    from .vault.file import VaultFile

    class Invocation(Protocol):
        """What opening a store reads of a command's invocation (`kimen.cli.model.Invocation`)."""

        @property
        def env(self) -> Mapping[str, str]: ...
        @property
        def vault_flag(self) -> str | None: ...
        @property
        def passphrase_cmd(self) -> str | None: ...
        @property
        def passphrase_stdin(self) -> bool: ...
        @property
        def no_session(self) -> bool: ...
        @property
        def derived(self) -> dict[str, Any]: ...
        @property
        def command_name(self) -> str: ...
        @property
        def options(self) -> Any: ...


class VaultLocation:
    """The resolved vault path (absolute, not symlink-resolved) and where it came from."""

    __slots__ = ("path", "source")

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source  # flag | env | config | default

    @property
    def canonical_path(self) -> str:
        """The session key: the realpath of the vault file."""
        return os.path.realpath(self.path)


def load_config(inv: Invocation) -> Config:
    """The config file, loaded once per command."""
    cached: Config | None = inv.derived.get("config")
    if cached is None:
        from .config import Config

        cached = inv.derived["config"] = Config.load(inv.env)
    return cached


def stdin_claim(inv: Invocation) -> StdinClaim:
    """Who reads stdin (the passphrase, an identity, a value): claimed once per command."""
    claim: StdinClaim | None = inv.derived.get("stdin")
    if claim is None:
        from .passphrase import StdinClaim

        claim = inv.derived["stdin"] = StdinClaim()
    return claim


def resolve_vault(inv: Invocation) -> VaultLocation:
    """--vault > KIMEN_VAULT (non-empty) > config vault.path > <config>/vault.db."""
    if inv.vault_flag is not None:
        if not inv.vault_flag:  # not "no --vault": an empty path must not silently mean another vault
            raise errors.UsageError(detail="--vault needs a path, not an empty value")
        return VaultLocation(paths.absolute(inv.vault_flag), "flag")
    env_path = inv.env.get("KIMEN_VAULT", "")
    if env_path:
        return VaultLocation(paths.absolute(env_path), "env")
    configured = _configured_vault(inv)
    if configured:
        return VaultLocation(paths.absolute(configured), "config")
    return VaultLocation(paths.default_vault(inv.env), "default")


def _configured_vault(inv: Invocation) -> str | None:
    """config `vault.path`; without a config file, kimen.config is not even imported (hot path)."""
    if "config" not in inv.derived and paths.config_absent(inv.env):
        return None
    return load_config(inv).vault_path()


def open_metadata(inv: Invocation, location: VaultLocation | None = None) -> VaultFile:
    """The vault file opened for key-free reads; no passphrase, no session (and no crypto module
    loaded: names, sizes and KDF parameters are plaintext)."""
    from .vault.file import VaultFile

    return VaultFile.open((location or resolve_vault(inv)).path)


def explicit(inv: Invocation) -> Source | None:
    """The explicit passphrase source (KIMEN_PASSPHRASE, --passphrase-cmd, --passphrase-stdin),
    warning once if several are set."""
    derived = inv.derived
    if "explicit_source" not in derived:
        if not (inv.env.get("KIMEN_PASSPHRASE") or inv.passphrase_cmd is not None or inv.passphrase_stdin):
            derived["explicit_source"] = None  # without importing kimen.passphrase (hot path)
        else:
            from .passphrase import explicit_source

            derived["explicit_source"] = explicit_source(
                inv.env, inv.passphrase_cmd, inv.passphrase_stdin, stdin_claim(inv)
            )
    source: Source | None = derived["explicit_source"]
    return source


def fallback_source(inv: Invocation, location: VaultLocation, *, prompt: bool = True) -> Source | None:
    """The configured unlock method (#5), then the terminal prompt (#6)."""
    from .passphrase import configured_source, prompt_source

    configured = configured_source(load_config(inv).unlock(), inv.env, stdin_claim(inv))
    if configured is not None:
        return configured
    return prompt_source(location.path) if prompt else None


def session_probe(inv: Invocation, location: VaultLocation, reading: Sequence[str] = ()) -> Probe:
    """What the session daemon says about this vault (stopped, busy, locked, expired, unlocked…);
    a daemon of another version is no session, with a warning (docs/session.md). `reading`: the
    names the command will read, asked for at once (`kimen.daemon.client.probe`)."""
    from .daemon import client

    context = _context(inv)
    found = client.probe(inv.env, location.canonical_path, context=context, reading=reading)
    if found.state == "other_version":
        client.warn_other_version(found)
    return found


def _context(inv: Invocation) -> dict[str, str] | None:
    """What this command tells the daemon it is doing (advisory, only logged): the command and its
    profile."""
    command = inv.command_name
    if not command:
        parser = getattr(inv.options, "parser", None)
        prog = getattr(parser, "prog", None)
        command = prog.partition(" ")[2] if isinstance(prog, str) else ""
    if not command:
        return None
    context = {"command": command}
    profile = getattr(inv.options, "profile", None)
    if isinstance(profile, str):
        context["profile"] = profile
    return context


def _refusal(inv: Invocation, found: Probe, location: VaultLocation) -> errors.KimenError:
    """Why no session serves `location` when one must (a grant token is set, docs/agents.md):
    an unsafe session dir or a too-long socket path is the reason, not only a warning."""
    if found.state == "stopped":
        from .daemon import client

        try:
            conn = client.connect(inv.env, strict=True)
        except errors.KimenError as err:
            return err
        if conn is not None:
            conn.close()
    return found.refusal(location.path)


def session_store(inv: Invocation, location: VaultLocation) -> Store | None:
    """The session daemon's store for this vault, or None when no session serves it."""
    return session_probe(inv, location).store(location.path, lambda: open_metadata(inv, location))


def open_store(inv: Invocation, *, allow_session: bool = True, prompt: bool = True,
               reading: Sequence[str] = ()) -> Store:
    """The store for the selected vault, in the unlock order of docs/passphrase-and-config.md.

    `allow_session=False` for commands that must never use a session (rekey, session start);
    `prompt=False` for commands that must never ask (doctor): they get `MissingPassphrase`.
    `reading`: the names the command will read first, when it knows them (a live session then
    answers them with the probe itself).
    A session that expired for this vault falls back like a locked one, but when no later source
    exists the command fails with `session_expired`, which says when and what to run.
    """
    location = resolve_vault(inv)
    if not os.path.exists(location.path):
        raise errors.VaultNotFound(path=location.path)
    source = explicit(inv)
    expired = None
    if source is None and allow_session:
        # a token means "use the session": sources 5 and 6 are never tried
        token = bool(inv.env.get("KIMEN_SESSION_TOKEN"))
        if not inv.no_session:
            found = session_probe(inv, location, reading)
            store = found.store(location.path, lambda: open_metadata(inv, location))
            if store is not None:
                store.keep_history_from(lambda: load_config(inv).history_keep())
                return store
            if token:
                raise _refusal(inv, found, location)
            if found.state == "expired":
                expired = found
        elif token:
            raise errors.MissingPassphrase(hint="KIMEN_SESSION_TOKEN is set, so kimen neither prompts nor runs the "
                                           "configured unlock method; drop --no-session or give an explicit source")
    source = source or fallback_source(inv, location, prompt=prompt)
    if source is None and expired is not None:
        raise expired.refusal(location.path)
    if source is None and not allow_session:
        raise missing_passphrase_without_session()  # its hint never suggests a session
    return unlock_local(inv, location, source)


def unlock_local(inv: Invocation, location: VaultLocation, source: Source | None) -> LocalStore:
    """Open and unlock the vault file with `source` (a prompt is asked up to 3 times)."""
    from .vault import Vault

    if source is None:
        raise errors.MissingPassphrase()
    vault = Vault.open(location.path)
    try:
        store = unlock_vault(vault, source)
    except BaseException:
        vault.close()
        raise
    store.keep_history_from(lambda: load_config(inv).history_keep())
    return store


def unlock_vault(vault: Vault, source: Source) -> LocalStore:
    return with_attempts(source, vault.unlock)


def with_attempts(source: Source, use: Callable[[Sensitive], T]) -> T:
    """`use(passphrase)` with the passphrase of `source`; a wrong one is asked for again as often as
    the source allows (the terminal prompt: 3 times), with a warning each time. The one owner of
    the retry rule: local unlocks, `session start` and `session grant` use it."""
    for attempt in range(source.attempts):
        with source.get() as passphrase:
            try:
                return use(passphrase)
            except errors.WrongPassphrase:
                if attempt + 1 >= source.attempts:
                    raise
                from .output import warn

                warn("wrong passphrase, try again", reason="passphrase_retry")
    raise errors.WrongPassphrase()  # pragma: no cover - attempts >= 1


def missing_passphrase_without_session(stdin_flag: str = "") -> errors.KimenError:
    """`missing_passphrase` for a command that never uses a session (vault init, vault rekey,
    session start): its hint lists only the sources that command reads, not `session start`."""
    return errors.MissingPassphrase(hint=f"set KIMEN_PASSPHRASE, pass --passphrase-cmd or --passphrase-stdin"
                                    f"{stdin_flag}, configure an unlock method (kimen config unlock set), "
                                    "or run in a terminal")


def passphrase_for_new_vault(inv: Invocation, location: VaultLocation) -> Any:
    """`vault init` (and `bundle open` creating a vault): an explicit or configured source without
    confirmation, else the prompt asked twice. Never a session."""
    from .passphrase import configured_source, prompt_new, terminal_available

    source = explicit(inv) or configured_source(load_config(inv).unlock(), inv.env, stdin_claim(inv))
    if source is not None:
        return source.get()
    if not terminal_available():
        raise missing_passphrase_without_session()
    return prompt_new("New passphrase: ", "Confirm passphrase: ", errors.PassphraseMismatch,
                      errors.EmptyPassphrase)


def noninteractive_source_name(inv: Invocation) -> str | None:
    """Which non-prompting source would unlock the vault (for doctor), or None."""
    source = explicit(inv)
    if source is not None:
        return source.name
    location = resolve_vault(inv)
    if not inv.no_session and session_store(inv, location) is not None:
        return "session"
    from .passphrase import configured_source

    configured = configured_source(load_config(inv).unlock(), inv.env, stdin_claim(inv))
    return configured.name if configured is not None else None
