"""`kimen bundle keygen|recipient|seal|open` (docs/bundles.md)."""

from __future__ import annotations

import argparse
import os

from .. import errors
from .bundle_opts import add_identity_flags, add_trust_flags
from .common import add_kdf_flags, warn_if_not_git_ignored
from .model import COMMANDS, Invocation, Result
from .parser import add_command, add_group

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..access import VaultLocation
    from ..bundle.document import Document
    from ..projection.kmap import Profile
    from ..store import KdfParams
    from ..vault import LocalStore


def register(sub: argparse._SubParsersAction, name: str) -> None:
    group = add_group(sub, name, COMMANDS[name][1], area=errors.AREA_BUNDLE)
    p = add_command(group, "keygen", "create an age identity (X25519) for bundles", handler=cmd_keygen)
    p.add_argument("--out", metavar="FILE", help="identity file to create (0600)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing identity file")
    p.add_argument("--print-recipient", action="store_true", help="print the recipient (age1...) on stdout")
    p = add_command(group, "recipient", "print the recipient (or signer id) of an identity", handler=cmd_recipient)
    add_identity_flags(p)
    p.add_argument("--signer", action="store_true", help="print the signer id instead")
    p = add_command(group, "seal", "write a signed, encrypted bundle of the vault's secrets", handler=cmd_seal)
    p.add_argument("--out", metavar="FILE", help="bundle file to write (0600, replaced atomically)")
    p.add_argument("--recipient", metavar="R", action="append", default=[],
                   help="age1... or ssh-ed25519 key; repeatable")
    p.add_argument("--recipients-file", metavar="FILE", action="append", default=[],
                   help="file of recipients, one per line; repeatable")
    add_identity_flags(p)
    p.add_argument("--no-sign", action="store_true", help="write an unsigned bundle")
    p.add_argument("--armor", action="store_true", help="ASCII-armored output")
    p.add_argument("--profile", metavar="NAME", help="only the secrets profile NAME references")
    p.add_argument("--map", metavar="PATH", help="only the secrets the profile file PATH references")
    p.add_argument("--secret", metavar="GLOB", action="append", default=[], help="only names matching GLOB; repeatable")
    p.add_argument("--generation", metavar="N", help="generation number (default: now in ms)")
    p = add_command(group, "open", "decrypt and verify a bundle into a vault", handler=cmd_open)
    p.add_argument("--in", dest="in_path", metavar="FILE", help="bundle file to open")
    p.add_argument("--out-vault", metavar="PATH", help="vault to create or update (default: the resolved vault)")
    add_identity_flags(p)
    add_trust_flags(p, stateful=True)
    p.add_argument("--overwrite", action="store_true",
                   help="update an existing vault: add the bundle's new names, replace differing values; never remove")
    p.add_argument("--mirror", action="store_true",
                   help="like --overwrite, and also remove the names the bundle does not hold")
    p.add_argument("--no-backup", action="store_true", help="do not snapshot an existing vault before changing it")
    p.add_argument("--dry-run", action="store_true", help="decrypt, verify and compare; change nothing")
    add_kdf_flags(p)
    p.add_argument("--age-passphrase-stdin", action="store_true",
                   help="read the passphrase of a passphrase-encrypted age file from stdin (interop)")


# ---------------------------------------------------------------------------------------------


def cmd_keygen(inv: Invocation) -> Result:
    from .. import fsutil
    from ..bundle.keys import generate
    from ..output import print_lines
    from ..paths import absolute

    args = inv.options
    if not args.out:
        raise errors.MissingOut()
    path = absolute(args.out)
    identity, text = generate()
    if os.path.isdir(path):
        raise errors.OutputIsDirectory(path=path)
    if args.overwrite:
        fsutil.atomic_write(path, text.encode("ascii"), mode=0o600)
    else:
        fsutil.write_exclusive(path, text.encode("ascii"), mode=0o600, exists=errors.IdentityExists)
    signer = identity.signer
    fields = {"identity_path": path, "recipient": identity.recipient, "signer": signer}
    if not inv.json:  # with --json the envelope alone carries them
        from ..output import write_err

        write_err(f"kimen: created identity {path}\nkimen: signer: {signer}\n")
    warn_if_not_git_ignored(inv, path)
    if args.print_recipient and not inv.json:
        print_lines(identity.recipient or "")
    return Result("bundle_keygen", None, fields)


def cmd_recipient(inv: Invocation) -> Result:
    from .bundle_opts import load_identity

    args = inv.options
    if not args.identity and not args.identity_stdin:
        raise errors.MissingIdentityInput()
    identity = load_identity(inv, env=False)
    assert identity is not None
    if args.signer and identity.signer is None:
        raise errors.InvalidIdentity(detail="ssh-ed25519 identities cannot sign")
    if not args.signer and identity.recipient is None:  # pragma: no cover - every parsed identity has one
        raise errors.InvalidIdentity(detail="no recipient")
    shown = identity.signer if args.signer else identity.recipient
    return Result("bundle_recipient", shown, {"recipient": identity.recipient, "signer": identity.signer})


# ---------------------------------------------------------------------------------------------
# seal
# ---------------------------------------------------------------------------------------------


def _refuse_own_input(out: str, inputs: list[str | None]) -> None:
    """`--out` naming a file this command reads (the vault, its journal, the signing identity, a
    recipients file, the profile and what it includes) would replace it with the bundle: refused
    before anything is read."""
    from ..paths import absolute

    for given in inputs:
        if not given:
            continue
        path = absolute(given)
        try:
            same = os.path.samefile(out, path)
        except OSError:  # one of them does not exist: not the same file
            continue
        if same:
            raise errors.UsageError(detail=f"--out names a file this command reads: {path}",
                                    hint="write the bundle to another file")


def _recipients(inv: Invocation) -> list:
    from ..bundle.keys import parse_recipient, parse_recipients_file
    from ..output import warn
    from .bundle_opts import read_listed_file

    args = inv.options
    found = [parse_recipient(r) for r in args.recipient]
    for name in args.recipients_file:
        path, data = read_listed_file(name, 1024 * 1024, errors.InvalidRecipient)
        found += parse_recipients_file(data, path)
    unique: dict[str, object] = {}
    for r in found:
        if r.text in unique:
            warn(f"duplicate recipient dropped: {r.text}", reason="duplicate_recipient")
            continue
        unique[r.text] = r
    if not unique:
        raise errors.MissingRecipient()
    from ..agefmt import MAX_STANZAS

    if len(unique) > MAX_STANZAS:  # no reader of kimen's would open it
        raise errors.InvalidRecipient(detail=f"{len(unique)} recipients: a bundle holds at most {MAX_STANZAS}",
                                      hint="seal one bundle per group of recipients")
    return list(unique.values())


def _seal_profile(inv: Invocation) -> Profile | None:
    """The profile whose references select what to seal (`--profile` / `--map`), loaded before
    anything else is read; None without either."""
    args = inv.options
    if not (args.profile or args.map):
        return None
    if args.profile and args.map:
        raise errors.ConflictingMapProfileInputs()
    from ..projection import kmap

    return kmap.load(map_path=args.map, profile=args.profile, inline=[], env=inv.env).check()


def _selected_names(inv: Invocation, infos: list, profile: Profile | None) -> list[str]:
    """The names to seal: a profile's references, then the `--secret` globs (kimen.globs); none of
    those flags -> every name, with a warning saying so."""
    from ..output import warn

    args = inv.options
    names = [info.name for info in infos]
    if profile is not None:
        from ..projection.resolve import secret_names

        wanted = secret_names(profile.winners())
        missing = [n for n in wanted if n not in set(names)]
        if missing:
            raise errors.SecretNotFound(missing)
        names = sorted(set(wanted))
    if args.secret:
        from ..globs import compile_globs, select

        globs = compile_globs(args.secret)
        for glob in globs:  # a typo must not pass for an intentionally small bundle
            if not select([glob], names):
                warn(f"--secret {glob.text} matches no secret to seal", reason="secret_glob_unmatched")
        names = select(globs, names)
    elif not (args.profile or args.map):
        warn(f"sealing all {len(names)} secret{'s' if len(names) != 1 else ''} of the vault",
             reason="bundle_seal_all")
    return names


def cmd_seal(inv: Invocation) -> Result:
    import getpass
    import socket
    import time

    from .. import __version__, fsutil
    from ..access import open_metadata, open_store, resolve_vault
    from ..bundle import age, document
    from ..output import warn
    from ..paths import absolute
    from .bundle_opts import load_identity

    args = inv.options
    if not args.out:
        raise errors.MissingOut()
    out = absolute(args.out)
    fsutil.refuse_unsafe_target(out)
    fsutil.require_output_dir(out)
    requested = None
    if args.generation is not None:
        text = args.generation
        requested = int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None
        if not document.valid_generation(requested):
            raise errors.BundleInvalid(detail=f"--generation must be an integer from 1 to {document.MAX_GENERATION}")
        document.check_not_in_future(requested)  # the vault records it: no opener would accept one
    location = resolve_vault(inv)
    profile = _seal_profile(inv)
    _refuse_own_input(out, [location.path, *(location.path + suffix for suffix in ("-wal", "-shm", "-journal")),
                            args.identity, *args.recipients_file, *(profile.files if profile is not None else ())])
    recipients = _recipients(inv)
    identity = None if args.no_sign else load_identity(inv, required=False)
    if not args.no_sign:
        if identity is None:
            raise errors.MissingSigningIdentity()
        if not identity.can_sign:
            raise errors.InvalidIdentity(detail="ssh-ed25519 identities cannot sign; use an age identity or --no-sign")
    store = open_store(inv)
    try:
        listed = store.list()
        names = _selected_names(inv, listed, profile)
        infos = {i.name: i for i in listed}
        del listed
        if hasattr(store, "verify_and_read"):  # a local vault: one pass decrypts every row once
            values = store.verify_and_read(names)
        else:
            store.verify()
            values = store.read(names) if names else {}
        meta = store.meta()
    finally:
        store.close()
    with open_metadata(inv, location) as vault:
        high = vault.header().bundle_high_generation
    if high >= document.MAX_GENERATION:
        # only a bundle opened before generations were bounded can have left this; no valid
        # generation exceeds it, so it is ignored rather than making every seal fail
        warn(f"this vault recorded bundle generation {high}, beyond the largest valid one; sealing with "
             "a current generation (vaults that accepted it need --allow-older)", reason="bundle_generation_ignored")
        high = 0
    generation = requested if requested is not None else max(int(time.time() * 1000), high + 1)
    if generation <= high:
        raise errors.BundleReplay(generation=generation, high=high,
                                  hint="the vault already sealed a bundle with a higher generation")
    secrets = [document.Secret(n, values[n].value, values[n].revision, infos[n].updated_at) for n in names]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    creator = {"user": user, "host": socket.gethostname(), "kimen": __version__}
    payload, bundle_id = document.build(secrets, source_vault_id=meta.vault_id, generation=generation,
                                        creator=creator, identity=identity)
    if len(payload) > age.MAX_DOCUMENT_BYTES:
        raise errors.BundleTooLarge()
    ciphertext = age.encrypt(payload, [r.obj for r in recipients], armor=args.armor)
    del payload, secrets, values
    fsutil.atomic_write(out, ciphertext, mode=0o600)
    with open_metadata(inv, location) as vault:
        vault.record_bundle_generation(generation)
    signer = identity.signer if identity is not None else None
    return Result("bundle_seal", f"sealed {len(names)} secret{'s' if len(names) != 1 else ''} to {out} "
                  f"({len(recipients)} recipient{'s' if len(recipients) != 1 else ''}, "
                  f"{'signed by ' + signer if signer else 'unsigned'}, generation {generation})", {
                      "vault": location.path, "out": out, "recipient_count": len(recipients),
                      "secret_count": len(names), "signed": signer is not None, "signer": signer,
                      "generation": generation, "bundle_id": bundle_id})


# ---------------------------------------------------------------------------------------------
# open
# ---------------------------------------------------------------------------------------------


def _age_passphrase(inv: Invocation) -> bytes | None:
    if not inv.options.age_passphrase_stdin:
        return None
    from ..access import stdin_claim

    claim = stdin_claim(inv)
    with claim.passphrase_line(0) as line:
        value = line.reveal()
    claim.owner = "age-passphrase"
    if not value:
        raise errors.EmptyPassphrase()
    return value


def cmd_open(inv: Invocation) -> Result:
    """Decrypt and verify, then create a vault or update an existing one (one transaction).

    `--overwrite` sets the bundle's names and never removes another; `--mirror` also removes the
    names the bundle lacks. A backup precedes any change to an existing vault (`kimen.cli.backup`);
    `--dry-run` compares and changes nothing.
    """
    from ..access import resolve_vault
    from ..bundle import document
    from ..paths import absolute
    from .bundle_opts import open_document
    from .common import kdf_from_args

    args = inv.options
    if not args.in_path:
        raise errors.MissingIn()
    in_path = absolute(args.in_path)
    if args.out_vault == "":  # an unset shell variable: never the default vault instead
        raise errors.UsageError(detail="--out-vault needs a path, not an empty value")
    if args.out_vault:  # `--out-vault PATH` is the vault this command writes
        inv = inv.replace(vault=absolute(args.out_vault))
    location = resolve_vault(inv)
    exists = os.path.lexists(location.path)
    if exists and not (args.overwrite or args.mirror):
        raise errors.OutputVaultExists(path=location.path)
    if not exists:
        from ..vault import KDF_DEFAULT

        params = kdf_from_args(args, KDF_DEFAULT)
    if not os.path.exists(in_path):
        raise errors.InputMissing(path=in_path)
    doc, _identity = open_document(inv, in_path, passphrase=_age_passphrase(inv))
    document.check_not_in_future(doc.generation)  # opening records the generation (freshness, stateful)
    wanted = {s.name: s.value for s in doc.secrets}
    if exists:
        plan = _update(inv, location, wanted, doc.generation)
    elif args.dry_run:
        plan = _Plan(sorted(wanted), [], [], None)
    else:
        _create(inv, location, params, wanted, doc.generation)
        plan = _Plan(sorted(wanted), [], [], None)
    return _open_result(inv, in_path, location.path, doc, plan, created=not exists)


class _Plan:
    """What an open adds, updates and removes (sorted names), and its backup path."""

    __slots__ = ("added", "backup_path", "removed", "updated")

    def __init__(self, added: list[str], updated: list[str], removed: list[str], backup_path: str | None) -> None:
        self.added, self.updated, self.removed, self.backup_path = added, updated, removed, backup_path


def _open_result(inv: Invocation, in_path: str, vault_path: str, doc: Document, plan: _Plan, *,
                 created: bool) -> Result:
    dry = bool(inv.options.dry_run)
    counts = f"{len(plan.added)}, {'update' if dry else 'updated'} {len(plan.updated)}, " \
             f"{'remove' if dry else 'removed'} {len(plan.removed)}"
    fields = {
        "in": in_path, "out_vault": vault_path, "created": created and not dry, "count": len(doc.secrets),
        "bundle_id": doc.bundle_id, "generation": doc.generation, "created_at": doc.created_at,
        "signer": doc.signer,
        "added": [] if dry else plan.added, "updated": [] if dry else plan.updated,
        "removed": [] if dry else plan.removed, "backup_path": None if dry else plan.backup_path, "dry_run": dry,
    }
    if dry:
        fields.update({"would_add": plan.added, "would_update": plan.updated, "would_remove": plan.removed,
                       "would_backup": plan.backup_path})
        lines = [f"[dry-run] {verb} {name}" for verb, names in (("add", plan.added), ("update", plan.updated),
                                                                 ("remove", plan.removed)) for name in names]
        lines.append(f"[dry-run] would open {in_path} into {vault_path}"
                     f"{' (a new vault)' if created else ''}: add {counts}")
        if plan.backup_path:
            lines.append(f"[dry-run] would back up to {plan.backup_path}")
        return Result("bundle_open", lines, fields)
    lines = [f"opened {in_path} into {vault_path}: added {counts}"]
    if plan.backup_path:
        lines.append(f"backup: {plan.backup_path}")
    if plan.removed:
        lines.append(f"removed: {', '.join(plan.removed)}")
    return Result("bundle_open", lines, fields)


def _create(inv: Invocation, location: VaultLocation, params: KdfParams, wanted: dict[str, bytes],
            generation: int) -> None:
    from ..access import passphrase_for_new_vault
    from ..store import Change
    from ..vault import create_vault, discard_new_vault

    path = location.path
    with passphrase_for_new_vault(inv, location) as passphrase:
        vault = create_vault(path, passphrase, params)
        try:
            store = vault.unlock(passphrase)
            store.write([Change.set(n, v) for n, v in wanted.items()], bundle_generation=generation)
        except BaseException:
            vault.close()
            discard_new_vault(path)
            raise
    vault.checkpoint()
    vault.close()


def _update(inv: Invocation, location: VaultLocation, wanted: dict[str, bytes], generation: int) -> _Plan:
    """Compare with the existing vault; unless a dry run: back up, then one transaction that sets
    the new and differing names, removes absent ones with --mirror, and records the generation."""
    from typing import cast

    from ..access import open_store
    from ..store import Change
    from .backup import backed_up, backup_path, check_writable

    args = inv.options
    # never a session: the store is the locally unlocked vault
    store = cast("LocalStore", open_store(inv, allow_session=False))
    try:
        vault = store.vault
        header = vault.header()
        if generation < header.bundle_high_generation and not args.allow_older:
            raise errors.BundleReplay(generation=generation, high=header.bundle_high_generation)
        current_names = [i.name for i in store.list()]
        current = store.read(current_names) if current_names else {}
        added = sorted(n for n in wanted if n not in current)
        updated = sorted(n for n in wanted if n in current and current[n].value != wanted[n])
        removed = sorted(n for n in current_names if n not in wanted) if args.mirror else []
        del current
        changed = bool(added or updated or removed)
        path = backup_path(location.path) if changed and not args.no_backup else None
        plan = _Plan(added, updated, removed, path)
        if args.dry_run:
            if path is not None:
                check_writable(os.path.dirname(path))
            return plan
        changes = [Change.set(n, wanted[n]) for n in added + updated] + [Change.rm(n) for n in removed]
        with backed_up(vault, path):
            if changed:  # `if_generation`: the lists above stay true (a concurrent change -> retry)
                store.write(changes, if_generation=header.generation,
                            bundle_generation=generation, allow_older=bool(args.allow_older),
                            history_op="bundle")
            else:
                vault.record_bundle_generation(generation)
        vault.checkpoint()
        return plan
    finally:
        store.close()
