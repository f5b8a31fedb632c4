"""The age layer: the only importer of pyrage.

Decryption is in memory only (`pyrage.decrypt`; `pyrage.decrypt_file` writes 0644 plaintext and
follows symlinks). Before pyrage sees a byte, `kimen.agefmt` removes the armor strictly and checks
the header, so every CCTV failure vector is refused and an scrypt work factor above 20 never runs.
pyrage either returns the whole plaintext or raises: partial plaintext is never released.
"""

from __future__ import annotations

from .. import agefmt, errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from .keys import Identity

MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
# an armored document of 256 MiB is ~346 MiB with line ends; a larger file cannot hold one
MAX_FILE_BYTES = 360 * 1024 * 1024


def decrypt(data: bytes, identities: Sequence[Identity] = (), passphrase: bytes | None = None,
            limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The plaintext of the age file `data`, or a reasoned refusal (nothing partial).

    Reasons: header problems -> bundle_invalid (or age_work_factor_rejected, bundle_unsupported);
    no identity matches -> bundle_no_match; MAC or payload failure -> bundle_decrypt_failed.
    """
    import pyrage

    raw, header = agefmt.binary(data)
    if agefmt.max_plaintext(header, len(raw)) > limit + 16 * (limit // 65536 + 2):
        raise errors.BundleTooLarge()
    try:
        if header.is_scrypt:
            if passphrase is None:
                raise errors.BundleNoMatch(
                    message="this file is passphrase-encrypted, not sealed to an identity",
                    hint="kimen seals bundles to identities (`kimen bundle seal`); to read a passphrase-"
                         "encrypted age file, use `kimen bundle open --in FILE --age-passphrase-stdin`")
            from pyrage import passphrase as age_passphrase

            plaintext = age_passphrase.decrypt(raw, passphrase.decode("utf-8", "surrogateescape"))
        else:
            if passphrase is not None and not identities:
                raise errors.BundleNoMatch(hint="this file is not passphrase-encrypted; use --identity")
            plaintext = pyrage.decrypt(raw, [i.pyrage_identity() for i in identities])
    except pyrage.DecryptError as exc:
        text = str(exc)
        if header.is_scrypt and "Decryption failed" in text:
            raise errors.BundleNoMatch(message="the passphrase does not decrypt this file",
                                       hint="check the passphrase given on stdin (its first line)") from None
        if "No matching keys" in text:
            raise errors.BundleNoMatch() from None
        if "Header is invalid" in text or "Unknown age format" in text:
            raise errors.BundleInvalid(detail="malformed age header") from None
        raise errors.BundleDecryptFailed() from None
    except (ValueError, TypeError):
        raise errors.BundleDecryptFailed() from None
    if len(plaintext) > limit:
        raise errors.BundleTooLarge()
    return plaintext


def encrypt(plaintext: bytes, recipients: Sequence[object], *, armor: bool = False) -> bytes:
    """Encrypt to pyrage recipient objects (X25519 and ssh-ed25519)."""
    import pyrage

    try:
        return pyrage.encrypt(plaintext, list(recipients), armored=armor)
    except pyrage.EncryptError:
        raise errors.BundleFailed(detail="age encryption failed") from None
