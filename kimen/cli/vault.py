"""`kimen vault init|info|path|rekey` (docs/vault.md)."""

from __future__ import annotations

import os

from .. import errors
from .common import add_kdf_flags, kdf_from_args
from .model import COMMANDS, Invocation, Result

# `vault init` says it in one line: no one, kimen included, can open a vault without its passphrase
LOST_PASSPHRASE_NOTICE = ("a lost passphrase cannot be recovered, and neither can these secrets: keep a backup "
                          "bundle sealed to an offline identity (kimen bundle seal)")


TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse


def register(sub: argparse._SubParsersAction, name: str) -> None:
    from .flags import VAULT_INFO
    from .parser import add_command, add_flags, add_group

    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_VAULT)
    p = add_command(group, "init", "create a new vault", handler=cmd_init)
    add_kdf_flags(p)
    add_command(group, "path", "print the resolved vault path", handler=cmd_path)
    p = add_command(group, "info", "show vault metadata (no passphrase needed)", handler=cmd_info)
    add_flags(p, VAULT_INFO)
    p = add_command(group, "rekey", "change the passphrase or KDF parameters; optionally rotate the data key",
                    handler=cmd_rekey)
    p.add_argument("--new-passphrase-env", metavar="NAME", default="KIMEN_NEW_PASSPHRASE",
                   help="variable holding the new passphrase (default KIMEN_NEW_PASSPHRASE)")
    p.add_argument("--new-passphrase-stdin", action="store_true", help="read the new passphrase from stdin")
    p.add_argument("--new-passphrase-cmd", metavar="CMD",
                   help="run CMD; its first output line is the new passphrase")
    p.add_argument("--rotate-data-key", action="store_true",
                   help="also replace the data key and re-encrypt every secret")
    add_kdf_flags(p)
    p.add_argument("--dry-run", action="store_true", help="check everything, change nothing")
    p.add_argument("--no-backup", action="store_true", help="do not snapshot the vault first")
    p.add_argument("--backup-dir", metavar="DIR", help="directory for the snapshot (default: the vault's)")
    from . import vault_backups

    vault_backups.register(group)


def cmd_init(inv: Invocation) -> Result:
    from ..access import passphrase_for_new_vault, resolve_vault
    from ..output import warn
    from ..vault import KDF_DEFAULT, create_vault, vault_exists_error

    params = kdf_from_args(inv.options, KDF_DEFAULT)
    location = resolve_vault(inv)
    if os.path.lexists(location.path):
        raise vault_exists_error(location.path)
    with passphrase_for_new_vault(inv, location) as passphrase:
        if _characters(passphrase) < 8:
            warn("the passphrase is shorter than 8 characters", reason="short_passphrase")
        vault = create_vault(location.path, passphrase, params)
    with vault:
        meta = vault.meta()
    return Result(
        "vault_init",
        [f"initialized vault: {location.path}", LOST_PASSPHRASE_NOTICE],
        {"path": location.path, "vault_id": meta.vault_id, "kdf": params.as_json()},
    )


def _characters(passphrase) -> int:
    """Characters, not bytes, of a UTF-8 passphrase (`ääää` is 4 characters), counted
    without decoding it into an immutable str: every byte but a UTF-8 continuation byte."""
    return sum(1 for byte in passphrase.view() if byte & 0xC0 != 0x80)


def cmd_path(inv: Invocation) -> Result:
    from ..access import resolve_vault

    location = resolve_vault(inv)
    return Result(
        "vault_path",
        location.path,
        {"path": location.path, "canonical_path": location.canonical_path, "source": location.source},
    )


def cmd_info(inv: Invocation) -> Result:
    from ..access import open_metadata, open_store, resolve_vault

    location = resolve_vault(inv)
    with open_metadata(inv, location) as vault:
        meta = vault.meta()
    integrity = "unchecked"
    if inv.options.verify:
        store = open_store(inv)
        try:
            store.verify()
        finally:
            store.close()
        integrity = "ok"
    kdf = meta.kdf
    lines = [
        f"path: {meta.path}",
        f"format: {meta.format}",
        f"kdf: {kdf.alg} m={kdf.memory_kib} t={kdf.time} p={kdf.parallelism}",
        f"vault_id: {meta.vault_id}",
        f"generation: {meta.generation}",
        f"secrets: {meta.secret_count}",
        f"created_at: {meta.created_at}",
    ]
    if inv.options.verify:
        lines.append("integrity: ok")
    return Result("vault_info", lines, {
        "path": meta.path, "format": meta.format, "schema_version": meta.schema_version,
        "vault_id": meta.vault_id, "created_at": meta.created_at, "generation": meta.generation,
        "secret_count": meta.secret_count, "size_bytes": meta.size_bytes, "mode": meta.mode,
        "kdf": kdf.as_json(), "integrity": integrity,
    })


def _new_passphrase(inv: Invocation, old_uses_stdin: bool, env_value: str):
    """The new passphrase, or None when no source is set (rotation alone);
    `env_value` is the value of the `--new-passphrase-env` variable ("" when unset)."""
    from .. import passphrase as pp
    from ..access import stdin_claim
    from ..sensitive import Sensitive

    a = inv.options
    chosen = [name for name, on in (("--new-passphrase-cmd", a.new_passphrase_cmd is not None),
                                    ("--new-passphrase-stdin", a.new_passphrase_stdin),
                                    (a.new_passphrase_env, bool(env_value))) if on]
    if len(chosen) > 1:
        raise errors.ConflictingPassphraseSources(
            message=f"several new-passphrase sources are set: {', '.join(chosen)}")
    empty = errors.EmptyNewPassphrase
    if a.new_passphrase_cmd is not None:
        argv = a.new_passphrase_cmd.split()
        if not argv:
            raise errors.EmptyPassphraseCommand()
        return pp.run_command(argv, inv.env)
    if a.new_passphrase_stdin:
        value = stdin_claim(inv).passphrase_line(1 if old_uses_stdin else 0)
        return pp._checked(value, empty)
    if env_value:
        return pp._checked(Sensitive(os.fsencode(env_value)), empty)
    return None


def cmd_rekey(inv: Invocation) -> Result | int:
    from .. import passphrase as pp
    from ..access import explicit, fallback_source, missing_passphrase_without_session, resolve_vault, unlock_vault
    from ..sensitive import Sensitive
    from ..vault import Vault
    from . import backup

    a = inv.options
    if a.no_backup and a.backup_dir:
        raise errors.ConflictingBackupOptions()
    new_env_value = inv.env.get(a.new_passphrase_env, "") if a.new_passphrase_env else ""
    if a.new_passphrase_env and not _read_by_kimen(a.new_passphrase_env):
        # the variable holds a passphrase, private like KIMEN_NEW_PASSPHRASE: the
        # old passphrase's command or unlock exec must not see it (a new mapping; os.environ is
        # never changed). kimen's own settings are kept; the private ones are never passed on anyway.
        inv = inv.replace(env={k: v for k, v in inv.env.items() if k != a.new_passphrase_env})
    location = resolve_vault(inv)
    vault = Vault.open(location.path)
    with vault:
        current = vault.header().kdf
        params = kdf_from_args(a, current)
        # 1. the old passphrase: explicit, configured or prompt -- never a session
        old_source = explicit(inv) or fallback_source(inv, location)
        if old_source is None:
            raise missing_passphrase_without_session()
        captured: list[Sensitive] = []

        def remember() -> Sensitive:
            value = old_source.get()
            for stale in captured:
                stale.wipe()
            captured[:] = [Sensitive(value.reveal())]
            return value

        store = unlock_vault(vault, pp.Source(old_source.name, old_source.kind, remember, old_source.attempts))
        old = captured[0]
        # 2. the new passphrase
        new = _new_passphrase(inv, old_source.name in ("--passphrase-stdin", "unlock.method=stdin"), new_env_value)
        if new is None:
            if a.rotate_data_key:
                new = Sensitive(old.reveal())
            elif pp.terminal_available():
                new = pp.prompt_new("New passphrase: ", "Confirm new passphrase: ",
                                    errors.NewPassphraseMismatch, errors.EmptyNewPassphrase)
            else:
                # the hint names the variable this rekey reads (--new-passphrase-env), if any
                variable = f"set {a.new_passphrase_env}, " if a.new_passphrase_env else ""
                raise errors.MissingNewPassphrase(hint=f"{variable}pass --new-passphrase-cmd or "
                                                  "--new-passphrase-stdin, or run in a terminal")
        with new, old:
            if new == old and params == current and not a.rotate_data_key:
                raise errors.NewPassphraseUnchanged()
            backup_path = None if a.no_backup else backup.backup_path(location.path, a.backup_dir)
            if a.dry_run:
                if backup_path is not None:
                    backup.check_writable(os.path.dirname(backup_path))
                return Result("vault_rekey", f"rekey preflight ok: {location.path}", {
                    "dry_run": True, "would_backup": backup_path, "rotate_data_key": a.rotate_data_key,
                    "path": location.path})
            # the backup still opens with the old passphrase: it is dropped again unless the key
            # record (wrap id) changed
            with backup.backed_up(vault, backup_path):
                vault.rekey(store.data_key, store.wrap_id, new, params, rotate_data_key=a.rotate_data_key)
        store.forget_key()
    _lock_session(inv, location.canonical_path)
    lines = [f"rekeyed vault: {location.path}"]
    if backup_path:
        lines.append(f"backup: {backup_path} (opens with the old passphrase)")
        lines.append("hint: backups made before this rekey open with the old passphrase; list them with "
                     "`kimen vault backups` and remove them with `kimen vault backups --prune --keep N --yes`")
    return Result("vault_rekey", lines, {
        "path": location.path, "backup_path": backup_path, "rotated_data_key": a.rotate_data_key,
        "kdf": params.as_json(), "dry_run": False,
    })


# The settings kimen itself reads (docs/passphrase-and-config.md, plus PATH): never dropped from its own view of
# the environment. Any other name -- `KIMEN_MY_NEW` included -- holds only the new passphrase.
_KIMEN_SETTINGS = frozenset({
    "KIMEN_VAULT", "KIMEN_CONFIG", "KIMEN_SESSION_DIR", "KIMEN_PROFILE_DIR", "KIMEN_REMOTE",
    "KIMEN_TRUSTED_SIGNERS", "KIMEN_PASSPHRASE", "KIMEN_NEW_PASSPHRASE", "KIMEN_SESSION_TOKEN",
    "KIMEN_AGE_IDENTITY", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
    "XDG_DATA_HOME", "HOME", "PATH",
})


def _read_by_kimen(name: str) -> bool:
    """Variables kimen itself reads: never dropped from its own view of the environment
    (the private ones among them are kept from children by `public_environ` already)."""
    return name in _KIMEN_SETTINGS


def _lock_session(inv: Invocation, canonical_path: str) -> None:
    """After a rekey, tell a running daemon to forget this vault (best effort; it would also
    notice the new wrap id on the next request)."""
    from ..daemon import control

    try:
        control.lock(inv.env, canonical_path)
    except (errors.KimenError, OSError):
        pass
