"""Bundle documents, signatures, keys and the read-only bundle store."""

from __future__ import annotations

import base64
import json

import pyrage
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kimen import agefmt, crypto, durations, errors
from kimen.bundle import age, document, keys
from kimen.bundle.store import BundleStore

IDENTITY = str(pyrage.x25519.Identity.generate()).encode()  # made at test time, never committed


def _identity() -> keys.Identity:
    return keys.parse_identity(b"# comment\n\n" + IDENTITY + b"\n", "test")


def _doc(identity=None, secrets=None) -> bytes:
    items = secrets if secrets is not None else [document.Secret("b.x", b"2", 2, "t"),
                                                 document.Secret("a", b"1", 1, "t")]
    payload, _ = document.build(items, source_vault_id="ab" * 16, generation=7, creator={"user": "u"},
                                identity=identity)
    return payload


def test_signing_key_is_derived_from_the_identity_text():
    seed = crypto.bundle_signing_seed(IDENTITY)
    assert seed == crypto.bundle_signing_seed(IDENTITY.lower())  # canonical upper-case text
    assert len(seed) == 32 and crypto.ed25519_public(seed) == crypto.ed25519_public(seed)
    signer = _identity().signer
    assert signer.startswith(keys.SIGNER_PREFIX) and len(signer) == len(keys.SIGNER_PREFIX) + 43
    assert keys.parse_signer(signer) == crypto.ed25519_public(seed)
    other = keys.generate()[0]
    assert other.signer != signer


@pytest.mark.parametrize("bad", ["kimen-sig-v1:", "kimen-sig-v2:" + "A" * 43, "kimen-sig-v1:" + "A" * 42,
                                 "kimen-sig-v1:" + "!" * 43, "kimen-sig-v1:" + "A" * 42 + "B"])
def test_malformed_signer_ids(bad):
    with pytest.raises(errors.KimenError) as info:
        keys.parse_signer(bad)
    assert info.value.reason == "invalid_signer"


def test_document_is_canonical_sorted_and_signed():
    identity = _identity()
    payload = _doc(identity)
    parsed = json.loads(payload)
    assert payload == document.canonical(parsed) and payload.isascii()
    assert [s["name"] for s in parsed["secrets"]] == ["a", "b.x"]
    doc = document.parse(payload)
    assert doc.signer == identity.signer and doc.generation == 7
    assert [(s.name, s.value) for s in doc.secrets] == [("a", b"1"), ("b.x", b"2")]
    document.check_trust(doc, [identity.signer], allow_unsigned=False)
    with pytest.raises(errors.KimenError) as info:
        document.check_trust(doc, [], allow_unsigned=True)
    assert info.value.reason == "bundle_signer_untrusted"


def test_any_change_breaks_the_signature():
    parsed = json.loads(_doc(_identity()))
    for mutate in (lambda d: d.__setitem__("generation", 8),
                   lambda d: d["secrets"][0].__setitem__("value_b64", base64.b64encode(b"9").decode()),
                   lambda d: d["secrets"].pop(),
                   lambda d: d["signature"].__setitem__("sig", base64.b64encode(bytes(64)).decode())):
        changed = json.loads(json.dumps(parsed))
        mutate(changed)
        with pytest.raises(errors.KimenError) as info:
            document.parse(document.canonical(changed))
        assert info.value.reason == "bundle_signature_invalid"


def test_sign_canonical_returns_the_canonical_signed_document_and_parse_keeps_it():
    from kimen import sigfmt

    raw = json.loads(_doc())
    again = json.loads(json.dumps(raw))
    text = document.sign_canonical(raw, _identity())
    assert text == document.canonical(raw)
    document.sign(again, _identity())
    assert again["signature"] == raw["signature"]  # Ed25519 is deterministic: the same signature
    assert document.parse(text).canonical_text == text
    doc = {"b": [1, {"z": "\u00e9", "a": None}], "a b": "x", "a!": 1, "a": 2, "signature": {"x": "y"}}
    assert sigfmt.canonical_without(doc, "signature") == (
        document.canonical({k: v for k, v in doc.items() if k != "signature"}), document.canonical(doc))


def test_verified_before_skips_only_the_signature_check():
    """A document the caller verified before (same canonical bytes) is not verified again; its
    signature member's form and every other rule still are."""
    parsed = json.loads(_doc(_identity()))
    parsed["signature"]["sig"] = base64.b64encode(bytes(64)).decode()
    forged = document.canonical(parsed)
    with pytest.raises(errors.KimenError):
        document.parse(forged)
    doc = document.parse(forged, verified_before=True)  # the caller's word: these bytes were verified
    assert doc.signer == _identity().signer and doc.canonical_text == forged
    for mutate, reason in ((lambda d: d["signature"].pop("alg"), "bundle_invalid"),
                           (lambda d: d.__setitem__("generation", 0), "bundle_invalid"),
                           (lambda d: d["secrets"][0].__setitem__("value_b64", "!"), "bundle_invalid")):
        changed = json.loads(json.dumps(parsed))
        mutate(changed)
        with pytest.raises(errors.KimenError) as info:
            document.parse(document.canonical(changed), verified_before=True)
        assert info.value.reason == reason


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff\xfe", "bundle_not_a_document"),
    (b"[1]", "bundle_not_a_document"),
    (b'{"kimen_bundle": 1, "kimen_bundle": 1}', "bundle_invalid"),
    (b'{"kimen_bundle": 1.0}', "bundle_invalid"),
    (b'{"kimen_bundle": true}', "bundle_invalid"),
    (b'{"kimen_bundle": 3}', "bundle_unsupported"),
    (b'{"kimen_bundle": 1}', "bundle_invalid"),
])
def test_malformed_payloads(payload, reason):
    with pytest.raises(errors.KimenError) as info:
        document.parse(payload)
    assert info.value.reason == reason


def test_unsorted_or_duplicate_secrets_are_invalid():
    parsed = json.loads(_doc(None))
    parsed["secrets"].reverse()
    with pytest.raises(errors.KimenError) as info:
        document.parse(document.canonical(parsed))
    assert info.value.reason == "bundle_invalid"


def test_encrypt_decrypt_round_trip_and_armor():
    identity, _ = keys.generate()
    recipient = keys.parse_recipient(identity.recipient)
    for armor in (False, True):
        ciphertext = age.encrypt(b"payload", [recipient.obj], armor=armor)
        assert agefmt.is_armored(ciphertext) is armor
        assert age.decrypt(ciphertext, [identity]) == b"payload"
    stranger, _ = keys.generate()
    with pytest.raises(errors.KimenError) as info:
        age.decrypt(age.encrypt(b"x", [recipient.obj]), [stranger])
    assert info.value.reason == "bundle_no_match"


def test_recipient_parsing_never_echoes_identities():
    with pytest.raises(errors.KimenError) as info:
        keys.parse_recipient(IDENTITY.decode())
    assert IDENTITY.decode() not in info.value.message
    with pytest.raises(errors.KimenError) as info:
        keys.parse_recipients_file(b"# x\n\n" + IDENTITY + b"\n", "r.txt")
    assert info.value.reason == "recipients_file_contains_identity" and info.value.fields["line"] == 3


def test_bundle_store_is_read_only():
    store = BundleStore("/b.age", document.parse(_doc(_identity())))
    assert [i.name for i in store.list()] == ["a", "b.x"] and [i.name for i in store.list("b.")] == ["b.x"]
    assert store.read(["b.x"])["b.x"].value == b"2"
    assert store.names(["a", "zz"]) == {"a"}
    with pytest.raises(errors.KimenError) as info:
        store.read(["a", "nope"])
    assert info.value.reason == "secret_not_found" and info.value.fields["missing"] == ["nope"]
    with pytest.raises(errors.KimenError):
        store.write([])
    assert store.meta().generation == 7 and store.meta().secret_count == 2


def test_header_limits():
    stanza = b"-> grease\n\n"
    mac = b"--- " + base64.b64encode(bytes(32)).rstrip(b"=") + b"\n"
    ok = b"age-encryption.org/v1\n" + stanza * 64 + mac
    assert len(agefmt.parse_header(ok + bytes(32)).stanzas) == 64
    with pytest.raises(errors.KimenError, match="64 stanzas"):
        agefmt.parse_header(b"age-encryption.org/v1\n" + stanza * 65 + mac)
    big = b"-> grease " + b"x" * 60000 + b"\n\n"
    with pytest.raises(errors.KimenError, match="64 KiB"):
        agefmt.parse_header(b"age-encryption.org/v1\n" + big + big + mac)
    with pytest.raises(errors.KimenError) as info:
        agefmt.parse_header(b"age-encryption.org/v2\n" + stanza + mac)
    assert info.value.reason == "bundle_invalid" and "version" in info.value.message


def test_bundle_store_answers_like_the_vault_it_was_sealed_from(tmp_path):
    """A vault's reads and the reads of a bundle sealed from it (through real age) agree exactly."""
    from kimen import vault
    from kimen.sensitive import Sensitive
    from kimen.store import Change, KdfParams

    local = vault.create_vault(str(tmp_path / "v.db"), Sensitive(b"pw"), KdfParams(8192, 1, 1)).unlock(
        Sensitive(b"pw"))
    binary = bytes(range(256))
    local.write([Change.set("a.bin", binary), Change.set("a.empty", b""), Change.set("a.ml", b"x\r\ny\n"),
                 Change.set("b-1", b"1"), Change.set("B", b"upper")])
    local.write([Change.set("a.bin", binary[::-1])])
    infos = local.list()
    names = [i.name for i in infos]
    values = local.verify_and_read(names)
    identity, _ = keys.generate()
    payload, _ = document.build([document.Secret(n, values[n].value, values[n].revision, i.updated_at)
                                 for n, i in zip(names, infos, strict=True)],
                                source_vault_id=local.meta().vault_id, generation=1, creator={}, identity=identity)
    sealed = age.encrypt(payload, [keys.parse_recipient(identity.recipient).obj], armor=True)
    bundle = BundleStore("b.age", document.parse(age.decrypt(sealed, [identity])))
    assert bundle.read(names) == local.read(names)
    assert [(i.name, i.revision, i.size) for i in bundle.list()] == [(i.name, i.revision, i.size) for i in infos]
    assert [i.name for i in bundle.list("a.")] == [i.name for i in local.list("a.")]
    for store in (local, bundle):
        with pytest.raises(errors.SecretNotFound) as info:
            store.read(["zz", "a.bin", "aa"])
        assert info.value.fields["missing"] == ["aa", "zz"]
        with pytest.raises(errors.KimenError) as info:
            store.read(["bad name"])
        assert info.value.reason == "invalid_secret_name"
    local.close()


@pytest.mark.parametrize(("text", "seconds"), [
    ("1970-01-01T00:00:00Z", 0),
    ("2024-02-29T23:59:59Z", 1709251199),
    ("2026-11-25T10:00:00.123456789Z", 1795600800),
])
def test_created_at_parses_real_utc_times(text, seconds):
    assert durations.parse_time(text) == seconds


@pytest.mark.parametrize("text", [
    "2026-99-99T99:99:99Z", "2025-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-01T24:00:00Z",
    "2026-01-01T00:60:00Z", "2026-01-01T00:00:60Z", "0000-01-01T00:00:00Z", "2026-01-01T00:00:00",
    "2026-01-01 00:00:00Z", "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00.Z", "२०२६-01-01T00:00:00Z",
])
def test_created_at_refuses_what_is_not_a_real_utc_time(text):
    assert durations.parse_time(text) is None


# -- identities are checked without pyrage: the same rule as pyrage's ---------------------------------

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _pyrage_accepts(text: bytes) -> bool:
    try:
        pyrage.x25519.Identity.from_str(text.decode("ascii"))
    except (pyrage.IdentityError, ValueError, UnicodeDecodeError):
        return False
    return True


def test_identity_check_accepts_generated_identities_and_defers_pyrage():
    for _ in range(20):
        obj = pyrage.x25519.Identity.generate()
        text = str(obj).encode()
        assert keys.is_age_secret_key(text)
        parsed = keys.parse_identity(text + b"\n", "test")
        assert parsed._obj is None  # no pyrage object until one is needed
        assert parsed.recipient == str(obj.to_public())
        assert str(parsed.pyrage_identity()) == str(obj)


@given(st.data())
@settings(max_examples=400, deadline=None)
def test_identity_check_agrees_with_pyrage(data):
    """Mutations of a valid identity (a changed, dropped, added or swapped character, a changed
    padding bit, another prefix) are accepted exactly when pyrage accepts them."""
    text = bytearray(str(pyrage.x25519.Identity.generate()).encode())
    kind = data.draw(st.sampled_from(["change", "drop", "add", "swap", "padding", "prefix", "none"]))
    alphabet = st.sampled_from(list(_BECH32.upper() + "1BIO-a"))
    if kind == "change":
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = ord(data.draw(alphabet))
    elif kind == "drop":
        del text[data.draw(st.integers(0, len(text) - 1))]
    elif kind == "add":
        text.insert(data.draw(st.integers(0, len(text))), ord(data.draw(alphabet)))
    elif kind == "swap":
        i = data.draw(st.integers(16, len(text) - 2))
        text[i], text[i + 1] = text[i + 1], text[i]
    elif kind == "padding":  # the 52nd data group: its last 4 bits are padding
        group = _BECH32.upper().index(chr(text[16 + 51]))
        text[16 + 51] = ord(_BECH32.upper()[group ^ data.draw(st.integers(1, 15))])
    elif kind == "prefix":
        text[:16] = data.draw(st.sampled_from([b"AGE-SECRET-KEY-2", b"AGE-SECRET-KEY1", b"AGE-SECRET-KEY-PQ-1"]))
    assert keys.is_age_secret_key(bytes(text)) == _pyrage_accepts(bytes(text))


def test_invalid_identity_is_refused_at_parse_time():
    text = bytearray(str(pyrage.x25519.Identity.generate()).encode())
    text[-1] = ord("Q" if text[-1] != ord("Q") else "P")
    with pytest.raises(errors.InvalidIdentity):
        keys.parse_identity(bytes(text), "test")


def _bech32_with_checksum(groups: list[int]) -> bytes:
    """`AGE-SECRET-KEY-1` + `groups` + a valid bech32 checksum (BIP 173's reference encoder)."""
    hrp = "age-secret-key-"
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + groups
    polymod = keys._polymod(values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return ("AGE-SECRET-KEY-1" + "".join(_BECH32[g] for g in groups + checksum)).upper().encode()


@given(st.lists(st.integers(0, 31), min_size=50, max_size=54))
@settings(max_examples=200, deadline=None)
def test_identity_length_and_padding_rules_agree_with_pyrage(groups):
    """Well-formed checksums over any number of groups and any padding bits: exactly 52 groups
    (32 bytes; the 4 padding bits are ignored) are an identity, for pyrage and for kimen alike."""
    text = _bech32_with_checksum(groups)
    assert keys.is_age_secret_key(text) == _pyrage_accepts(text) == (len(groups) == 52)
