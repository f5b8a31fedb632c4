"""`kimen bundle keygen|recipient|seal|open` (SPEC §8.4)."""

from __future__ import annotations

import argparse
import os

from .. import errors
from . import COMMANDS, Context, Result
from .bundle_opts import add_identity_flags, add_trust_flags
from .common import add_kdf_flags
from .parser import add_command, add_group


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
    p.add_argument("--overwrite", action="store_true", help="make an existing vault mirror the bundle")
    add_kdf_flags(p)
    p.add_argument("--age-passphrase-stdin", action="store_true",
                   help="read the passphrase of a passphrase-encrypted age file from stdin (interop)")


# ---------------------------------------------------------------------------------------------


def cmd_keygen(ctx: Context) -> Result:
    from .. import fsutil
    from ..bundle.keys import generate
    from ..output import print_lines
    from ..paths import absolute

    args = ctx.args
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
    import sys

    sys.stderr.write(f"kimen: created identity {path}\nkimen: signer: {signer}\n")
    if args.print_recipient and not ctx.json:
        print_lines(identity.recipient or "")
    return Result("bundle_keygen", None, fields)


def cmd_recipient(ctx: Context) -> Result:
    from .bundle_opts import load_identity

    args = ctx.args
    if not args.identity and not args.identity_stdin:
        raise errors.MissingIdentityInput()
    identity = load_identity(ctx, env=False)
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


def _recipients(ctx: Context) -> list:
    from ..bundle.keys import parse_recipient, parse_recipients_file
    from ..fsutil import read_regular
    from ..output import warn
    from ..paths import absolute

    args = ctx.args
    found = [parse_recipient(r) for r in args.recipient]
    for name in args.recipients_file:
        path = absolute(name)
        data = read_regular(path, 1024 * 1024, lambda problem, path=path: errors.InvalidRecipient(
            detail=f"{path}: {problem}"), missing=lambda path=path: errors.InputMissing(path=path))
        found += parse_recipients_file(data, path)
    unique: dict[str, object] = {}
    for r in found:
        if r.text in unique:
            warn(f"duplicate recipient dropped: {r.text}")
            continue
        unique[r.text] = r
    if not unique:
        raise errors.MissingRecipient()
    return list(unique.values())


def _selected_names(ctx: Context, infos: list) -> list[str]:
    import fnmatch

    args = ctx.args
    names = [info.name for info in infos]
    if args.profile or args.map:
        if args.profile and args.map:
            raise errors.ConflictingMapProfileInputs()
        from ..projection import kmap
        from ..projection.resolve import secret_names

        profile = kmap.load(map_path=args.map, profile=args.profile, inline=[], env=ctx.env).check()
        wanted = secret_names(profile.winners())
        missing = [n for n in wanted if n not in set(names)]
        if missing:
            raise errors.SecretNotFound(missing)
        names = sorted(set(wanted))
    if args.secret:
        from ..output import warn

        for glob in args.secret:  # a typo must not pass for an intentionally small bundle
            if not any(fnmatch.fnmatchcase(n, glob) for n in names):
                warn(f"--secret {glob} matches no secret to seal")
        names = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in args.secret)]
    return names


def cmd_seal(ctx: Context) -> Result:
    import getpass
    import socket
    import time

    from .. import __version__, fsutil
    from ..access import open_metadata, open_store, resolve_vault
    from ..bundle import age, document
    from ..paths import absolute
    from .bundle_opts import load_identity

    args = ctx.args
    if not args.out:
        raise errors.MissingOut()
    out = absolute(args.out)
    fsutil.refuse_unsafe_target(out)
    if not os.path.isdir(os.path.dirname(out)):
        raise errors.WriteFailed(detail=f"{os.path.dirname(out)}: directory does not exist", path=out)
    requested = None
    if args.generation is not None:
        try:
            requested = int(args.generation)
        except ValueError:
            requested = -1
        if not 0 < requested < 2**63:
            raise errors.UsageError(detail="--generation must be a positive integer")
    recipients = _recipients(ctx)
    identity = None if args.no_sign else load_identity(ctx, required=False)
    if not args.no_sign:
        if identity is None:
            raise errors.MissingSigningIdentity()
        if not identity.can_sign:
            raise errors.InvalidIdentity(detail="ssh-ed25519 identities cannot sign; use an age identity or --no-sign")
    location = resolve_vault(ctx)
    store = open_store(ctx)
    try:
        listed = store.list()
        names = _selected_names(ctx, listed)
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
    with open_metadata(ctx, location) as vault:
        high = vault.header().bundle_high_generation
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
    with open_metadata(ctx, location) as vault:
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


def _age_passphrase(ctx: Context) -> bytes | None:
    if not ctx.args.age_passphrase_stdin:
        return None
    from ..access import stdin_claim

    claim = stdin_claim(ctx)
    with claim.passphrase_line(0) as line:
        value = line.reveal()
    claim.owner = "age-passphrase"
    if not value:
        raise errors.EmptyPassphrase()
    return value


def cmd_open(ctx: Context) -> Result:
    from ..access import resolve_vault
    from ..paths import absolute
    from ..store import Change
    from .bundle_opts import open_document
    from .common import kdf_from_args

    args = ctx.args
    if not args.in_path:
        raise errors.MissingIn()
    in_path = absolute(args.in_path)
    if args.out_vault:
        args.vault = absolute(args.out_vault)
    location = resolve_vault(ctx)
    exists = os.path.lexists(location.path)
    if exists and not args.overwrite:
        raise errors.OutputVaultExists(path=location.path)
    if not exists:
        from ..vault import KDF_DEFAULT

        params = kdf_from_args(args, KDF_DEFAULT)
    if not os.path.exists(in_path):
        raise errors.InputMissing(path=in_path)
    doc, _identity = open_document(ctx, in_path, passphrase=_age_passphrase(ctx))
    wanted = {s.name: s.value for s in doc.secrets}
    if exists:
        _mirror(ctx, wanted, doc.generation)
    else:
        _create(ctx, location, params, [Change.set(n, v) for n, v in wanted.items()], doc.generation)
    n = len(wanted)
    return Result("bundle_open", f"{'created' if not exists else 'updated'} {location.path} from {in_path}: "
                  f"{n} secret{'s' if n != 1 else ''}, generation {doc.generation}, "
                  f"{'signed by ' + doc.signer if doc.signer else 'unsigned'}", {
                      "in": in_path, "out_vault": location.path, "created": not exists, "count": n,
                      "bundle_id": doc.bundle_id, "generation": doc.generation, "created_at": doc.created_at,
                      "signer": doc.signer})


def _create(ctx: Context, location: object, params: object, changes: list, generation: int) -> None:
    from ..access import passphrase_for_new_vault
    from ..vault import create_vault, discard_new_vault

    path = location.path  # type: ignore[attr-defined]
    with passphrase_for_new_vault(ctx, location) as passphrase:
        vault = create_vault(path, passphrase, params)  # type: ignore[arg-type]
        try:
            store = vault.unlock(passphrase)
            store.write(changes, bundle_generation=generation)
        except BaseException:
            vault.close()
            discard_new_vault(path)
            raise
    vault.checkpoint()
    vault.close()


def _mirror(ctx: Context, wanted: dict[str, bytes], generation: int) -> None:
    """One transaction: set changed names, remove absent ones, record the generation."""
    from ..access import open_store
    from ..store import Change

    store = open_store(ctx, allow_session=False)
    try:
        current_names = [i.name for i in store.list()]
        current = store.read(current_names) if current_names else {}
        changes = [Change.set(n, v) for n, v in wanted.items() if n not in current or current[n].value != v]
        changes += [Change.rm(n) for n in current_names if n not in wanted]
        store.write(changes, bundle_generation=generation,  # type: ignore[call-arg]
                    allow_older=bool(ctx.args.allow_older))
        store.vault.checkpoint()  # type: ignore[attr-defined]
    finally:
        store.close()
