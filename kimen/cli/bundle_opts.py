"""Identity, trust and `--bundle` flags shared by `bundle …` and the projection commands.

The flags themselves are rows of `kimen.cli.flags`; nothing heavy at import time: the bundle
machinery (pyrage, nacl) is imported only when a bundle is actually opened.
"""

from __future__ import annotations

import os

from .. import errors
from . import flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ..bundle.document import Document
    from ..bundle.keys import Identity
    from ..bundle.store import BundleStore
    from .model import Invocation

MAX_KEY_BYTES = 64 * 1024


def add_identity_flags(p: argparse.ArgumentParser) -> None:
    from .parser import add_flags

    add_flags(p, flags.IDENTITY)


def add_trust_flags(p: argparse.ArgumentParser, *, stateful: bool = False) -> None:
    from .parser import add_flags

    add_flags(p, flags.TRUST)
    if stateful:
        add_flags(p, flags.TRUST_STATEFUL)


# ---------------------------------------------------------------------------------------------


def read_listed_file(name: str, limit: int, invalid: type[errors.KimenError]) -> tuple[str, bytes]:
    """A file a flag names (`--recipients-file`, `--trusted-signers-file`): its absolute path and
    bytes, at most `limit`; a missing file is `input_missing`, any other problem `invalid`."""
    from ..fsutil import read_regular
    from ..paths import absolute

    path = absolute(name)
    return path, read_regular(path, limit, lambda problem: invalid(detail=f"{path}: {problem}"),
                              missing=lambda: errors.InputMissing(path=path))


def _read_key_file(path: str, missing: type[errors.KimenError]) -> bytes:
    from ..fsutil import read_regular

    return read_regular(path, MAX_KEY_BYTES, lambda problem: errors.InvalidIdentity(detail=f"{path}: {problem}"),
                        missing=lambda: missing(path=path))


def load_identity(inv: Invocation, *, required: bool = True, env: bool = True) -> Identity | None:
    """--identity FILE > --identity-stdin > KIMEN_AGE_IDENTITY (docs/bundles.md); warns when several are set."""
    from ..bundle.keys import parse_identity
    from ..output import warn

    args = inv.options
    if getattr(args, "identity", None) == "":  # an unset shell variable: never another identity instead
        raise errors.UsageError(detail="--identity needs a file, not an empty value")
    found = [name for name, on in (("--identity", bool(getattr(args, "identity", None))),
                                   ("--identity-stdin", bool(getattr(args, "identity_stdin", False))),
                                   ("KIMEN_AGE_IDENTITY", env and bool(inv.env.get("KIMEN_AGE_IDENTITY"))))
             if on]
    if not found:
        if required and env and "KIMEN_AGE_IDENTITY" in inv.env:  # a CI secret that is not set arrives empty
            raise errors.MissingIdentityInput(hint="KIMEN_AGE_IDENTITY is set but empty: in CI, check that the "
                                              "secret it is read from exists and is passed to this step")
        if required:
            raise errors.MissingIdentityInput()
        return None
    if len(found) > 1:
        warn(f"several identities are set; using {found[0]}, ignoring {', '.join(found[1:])}",
             reason="identity_source_conflict")
    if found[0] == "--identity":
        from ..paths import absolute

        path = absolute(args.identity)
        return parse_identity(_read_key_file(path, errors.MissingIdentityFile), path)
    if found[0] == "--identity-stdin":
        from ..access import stdin_claim

        data = stdin_claim(inv).read("identity", MAX_KEY_BYTES)
        if len(data) > MAX_KEY_BYTES:
            raise errors.InvalidIdentity(detail="stdin: larger than 64 KiB")
        return parse_identity(data, "stdin")
    return parse_identity(os.fsencode(inv.env["KIMEN_AGE_IDENTITY"]), "KIMEN_AGE_IDENTITY")


def trusted_signers(inv: Invocation, identity: Identity | None) -> list[str]:
    """Every trusted signer: flags, files, KIMEN_TRUSTED_SIGNERS, config, the opener's own."""
    from ..access import load_config
    from ..bundle.keys import parse_signer, parse_signers_text
    args = inv.options
    out: list[str] = []
    for item in getattr(args, "trusted_signer", None) or []:
        parse_signer(item)
        out.append(item.strip())
    for name in getattr(args, "trusted_signers_file", None) or []:
        path, data = read_listed_file(name, MAX_KEY_BYTES, errors.InvalidSigner)
        out += parse_signers_text(data.decode("utf-8", "replace"), path)
    if inv.env.get("KIMEN_TRUSTED_SIGNERS"):
        out += parse_signers_text(inv.env["KIMEN_TRUSTED_SIGNERS"], "KIMEN_TRUSTED_SIGNERS")
    configured = load_config(inv).section("bundle").get("trusted_signers")
    if isinstance(configured, str):
        configured = [configured]
    if configured is not None:
        if not isinstance(configured, list) or not all(isinstance(x, str) for x in configured):
            path = load_config(inv).path
            raise errors.InvalidConfigValue(field="bundle.trusted_signers", path=path,
                                            detail="must be a list of signer ids",
                                            hint=f"fix `bundle.trusted_signers` in {path}")
        out += parse_signers_text("\n".join(configured), "config bundle.trusted_signers")
    if identity is not None and identity.signer is not None:
        out.append(identity.signer)
    return out


def max_age_seconds(inv: Invocation) -> int | None:
    text = getattr(inv.options, "max_age", None)
    if text is None:
        return None
    from ..durations import parse_duration

    try:
        return parse_duration(text)
    except (ValueError, errors.KimenError):
        raise errors.UsageError(detail=f"invalid --max-age: {text}") from None


def read_bundle_file(path: str) -> bytes:
    """The bundle file's bytes; absent -> input_missing; over the size limit -> bundle_too_large."""
    from ..bundle.age import MAX_FILE_BYTES
    from ..fsutil import read_regular

    return read_regular(path, MAX_FILE_BYTES,
                        lambda problem: errors.BundleFailed(detail=f"{path}: {problem}", path=path),
                        missing=lambda: errors.InputMissing(path=path),
                        too_large=lambda: errors.BundleTooLarge(path=path))


def open_document(inv: Invocation, path: str, *, passphrase: bytes | None = None) -> tuple[Document, Identity | None]:
    """Decrypt, parse, verify and check trust and max age of the bundle at `path` (in memory)."""
    from ..bundle import age, document

    data = read_bundle_file(path)
    identity = load_identity(inv, required=passphrase is None)
    trusted = trusted_signers(inv, identity)
    limit = max_age_seconds(inv)
    plaintext = age.decrypt(data, [identity] if identity is not None else [], passphrase)
    doc = document.parse(plaintext)
    document.check_trust(doc, trusted, allow_unsigned=bool(getattr(inv.options, "allow_unsigned", False)))
    document.check_max_age(doc, limit)
    return doc, identity


def bundle_store(inv: Invocation) -> BundleStore:
    """The read-only store of `--bundle` (projection commands)."""
    from ..bundle.store import BundleStore
    from ..paths import absolute

    if inv.vault_flag is not None:  # `--vault ""` was given too: never silently dropped
        raise errors.ConflictingSourceInputs()
    path = absolute(inv.options.bundle)
    doc, _ = open_document(inv, path)
    return BundleStore(path, doc)
