"""Opening the store a command needs (SPEC §2.2 vault path, §4.1 unlock precedence).

This is the one seam between commands and vaults: a command asks `open_store(ctx)` and gets a
`Store` — the session daemon's when a session for the same canonical vault path is live and no
explicit passphrase source was given, else a locally unlocked vault. `open_metadata(ctx)` opens
a vault for key-free reads (`list`, `meta`) without any passphrase.

The local vault module (sqlite3, crypto) is imported only on the local path, so a command served
by a live session never loads it.
"""

from __future__ import annotations

import os

from . import errors, paths

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any

    from .config import Config
    from .daemon.client import Probe
    from .passphrase import Source, StdinClaim
    from .store import Store
    from .vault import LocalStore, Vault


class VaultLocation:
    """The resolved vault path (absolute, not symlink-resolved) and where it came from."""

    __slots__ = ("path", "source")

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source  # flag | env | config | default

    @property
    def canonical_path(self) -> str:
        """The session key: the realpath of the vault file (SPEC §2.2)."""
        return os.path.realpath(self.path)


def load_config(ctx: Any) -> Config:
    """The config file, loaded once per command."""
    cached = getattr(ctx, "config", None)
    if cached is None:
        from .config import Config

        cached = Config.load(ctx.env)
        ctx.config = cached
    return cached


def stdin_claim(ctx: Any) -> StdinClaim:
    claim = getattr(ctx, "stdin", None)
    if claim is None:
        from .passphrase import StdinClaim

        claim = StdinClaim()
        ctx.stdin = claim
    return claim


def resolve_vault(ctx: Any) -> VaultLocation:
    """--vault > KIMEN_VAULT (non-empty) > config vault.path > <config>/vault.db."""
    if ctx.vault_flag is not None:
        if not ctx.vault_flag:  # not "no --vault": an empty path must not silently mean another vault
            raise errors.UsageError(detail="--vault needs a path, not an empty value")
        return VaultLocation(paths.absolute(ctx.vault_flag), "flag")
    env_path = ctx.env.get("KIMEN_VAULT", "")
    if env_path:
        return VaultLocation(paths.absolute(env_path), "env")
    configured = _configured_vault(ctx)
    if configured:
        return VaultLocation(paths.absolute(configured), "config")
    return VaultLocation(paths.default_vault(ctx.env), "default")


def _configured_vault(ctx: Any) -> str | None:
    """config `vault.path`; without a config file, kimen.config is not even imported (hot path)."""
    if getattr(ctx, "config", None) is None:
        try:
            if not os.path.lexists(paths.config_file(ctx.env)):
                return None
        except (KeyError, OSError, RuntimeError):
            pass  # Config.load reports it
    return load_config(ctx).vault_path()


def open_metadata(ctx: Any, location: VaultLocation | None = None) -> Vault:
    """The vault file opened for key-free reads; no passphrase, no session."""
    from .vault import Vault

    return Vault.open((location or resolve_vault(ctx)).path)


def explicit(ctx: Any) -> Source | None:
    """The explicit passphrase source (SPEC §4.1 #1-3), warning once if several are set."""
    if "explicit_source" not in _memo(ctx):
        if not (ctx.env.get("KIMEN_PASSPHRASE") or ctx.passphrase_cmd is not None or ctx.passphrase_stdin):
            _memo(ctx)["explicit_source"] = None  # without importing kimen.passphrase (hot path)
        else:
            from .passphrase import explicit_source

            _memo(ctx)["explicit_source"] = explicit_source(
                ctx.env, ctx.passphrase_cmd, ctx.passphrase_stdin, stdin_claim(ctx)
            )
    return _memo(ctx)["explicit_source"]


def _memo(ctx: Any) -> dict[str, Any]:
    memo = getattr(ctx, "memo", None)
    if memo is None:
        memo = {}
        ctx.memo = memo
    return memo


def fallback_source(ctx: Any, location: VaultLocation, *, prompt: bool = True) -> Source | None:
    """The configured unlock method (#5), then the terminal prompt (#6)."""
    from .passphrase import configured_source, prompt_source

    configured = configured_source(load_config(ctx).unlock(), ctx.env, stdin_claim(ctx))
    if configured is not None:
        return configured
    return prompt_source(location.path) if prompt else None


def session_probe(ctx: Any, location: VaultLocation) -> Probe:
    """What the session daemon says about this vault (stopped, busy, locked, expired, unlocked…);
    a daemon of another version is no session, with a warning (SPEC §5.10)."""
    from .daemon import client

    found = client.probe(ctx.env, location.canonical_path)
    if found.state == "other_version":
        client.warn_other_version(found)
    return found


def _refusal(ctx: Any, found: Probe, location: VaultLocation) -> errors.KimenError:
    """Why no session serves `location` when one must (a grant token is set, SPEC §4.1, §5.10):
    an unsafe session dir or a too-long socket path is the reason, not only a warning."""
    if found.state == "stopped":
        from .daemon import client

        try:
            conn = client.connect(ctx.env, strict=True)
        except errors.KimenError as err:
            return err
        if conn is not None:
            conn.close()
    return found.refusal(location.path)


def session_store(ctx: Any, location: VaultLocation) -> Store | None:
    """The session daemon's store for this vault, or None when no session serves it (SPEC §5.10)."""
    return session_probe(ctx, location).store(location.path, lambda: open_metadata(ctx, location))


def open_store(ctx: Any, *, allow_session: bool = True, prompt: bool = True) -> Store:
    """The store for the selected vault, following SPEC §4.1.

    `allow_session=False` for commands that must never use a session (rekey, session start);
    `prompt=False` for commands that must never ask (doctor): they get `MissingPassphrase`.
    A session that expired for this vault falls back like a locked one, but when no later source
    exists the command fails with `session_expired`, which says when and what to run (§5.10).
    """
    location = resolve_vault(ctx)
    if not os.path.exists(location.path):
        raise errors.VaultNotFound(path=location.path)
    source = explicit(ctx)
    expired = None
    if source is None and allow_session:
        # a token means "use the session": sources 5 and 6 are never tried (SPEC §4.1)
        token = bool(ctx.env.get("KIMEN_SESSION_TOKEN"))
        if not ctx.no_session:
            found = session_probe(ctx, location)
            store = found.store(location.path, lambda: open_metadata(ctx, location))
            if store is not None:
                return store
            if token:
                raise _refusal(ctx, found, location)
            if found.state == "expired":
                expired = found
        elif token:
            raise errors.MissingPassphrase(hint="KIMEN_SESSION_TOKEN is set, so kimen neither prompts nor runs the "
                                           "configured unlock method; drop --no-session or give an explicit source")
    source = source or fallback_source(ctx, location, prompt=prompt)
    if source is None and expired is not None:
        raise expired.refusal(location.path)
    return unlock_local(ctx, location, source)


def unlock_local(ctx: Any, location: VaultLocation, source: Source | None) -> LocalStore:
    """Open and unlock the vault file with `source` (a prompt is asked up to 3 times)."""
    from .vault import Vault

    if source is None:
        raise errors.MissingPassphrase()
    vault = Vault.open(location.path)
    try:
        return unlock_vault(vault, source)
    except BaseException:
        vault.close()
        raise


def unlock_vault(vault: Vault, source: Source) -> LocalStore:
    for attempt in range(source.attempts):
        with source.get() as passphrase:
            try:
                return vault.unlock(passphrase)
            except errors.WrongPassphrase:
                if attempt + 1 >= source.attempts:
                    raise
                from .output import warn

                warn("wrong passphrase, try again", reason="passphrase_retry")
    raise errors.WrongPassphrase()  # pragma: no cover - attempts >= 1


def missing_passphrase_without_session(stdin_flag: str = "") -> errors.MissingPassphrase:
    """`missing_passphrase` for a command that never uses a session (vault init, vault rekey,
    session start): its hint lists only the sources that command reads, not `session start`."""
    return errors.MissingPassphrase(hint=f"set KIMEN_PASSPHRASE, pass --passphrase-cmd or --passphrase-stdin"
                                    f"{stdin_flag}, configure an unlock method (kimen config unlock set), "
                                    "or run in a terminal")


def passphrase_for_new_vault(ctx: Any, location: VaultLocation) -> Any:
    """`vault init` (and `bundle open` creating a vault): an explicit or configured source without
    confirmation, else the prompt asked twice. Never a session."""
    from .passphrase import configured_source, prompt_new, terminal_available

    source = explicit(ctx) or configured_source(load_config(ctx).unlock(), ctx.env, stdin_claim(ctx))
    if source is not None:
        return source.get()
    if not terminal_available():
        raise missing_passphrase_without_session()
    return prompt_new("New passphrase: ", "Confirm passphrase: ", errors.PassphraseMismatch,
                      errors.EmptyPassphrase)


def noninteractive_source_name(ctx: Any) -> str | None:
    """Which non-prompting source would unlock the vault (for doctor), or None."""
    source = explicit(ctx)
    if source is not None:
        return source.name
    location = resolve_vault(ctx)
    if not ctx.no_session and session_store(ctx, location) is not None:
        return "session"
    from .passphrase import configured_source

    configured = configured_source(load_config(ctx).unlock(), ctx.env, stdin_claim(ctx))
    return configured.name if configured is not None else None
