"""`kimen bundle keygen|recipient|seal|open` end to end."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ..conftest import SMALL_KDF
from .bundle_helpers import (
    AGE,
    CANARY,
    NEW_PASS,
    Team,
    age_decrypt,
    age_encrypt,
    digest,
    hand_document,
    make_vault,
    needs_age,
    values,
)

# -- keygen and recipient ----------------------------------------------------------------------------


def test_keygen_writes_a_private_age_keygen_file(kimen):
    done = kimen.ok("bundle", "keygen", "--out", "key.txt", "--print-recipient")
    key = kimen.cwd / "key.txt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    lines = key.read_text().splitlines()
    assert lines[0].startswith("# created: ") and lines[1].startswith("# public key: age1")
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    recipient = lines[1].removeprefix("# public key: ")
    assert done.stdout.strip() == recipient
    assert "kimen-sig-v1:" in done.err and "AGE-SECRET-KEY" not in done.err + done.stdout
    assert kimen.ok("bundle", "recipient", "--identity", "key.txt").stdout.strip() == recipient
    signer = kimen.ok("bundle", "recipient", "--identity-stdin", "--signer", input=key.read_bytes()).stdout.strip()
    assert signer.startswith("kimen-sig-v1:") and signer in done.err
    # existing file: refused, untouched; --overwrite replaces it
    before = key.read_bytes()
    kimen.fail(25, "identity_exists", "bundle", "keygen", "--out", "key.txt")
    assert key.read_bytes() == before
    kimen.ok("bundle", "keygen", "--out", "key.txt", "--overwrite")
    assert key.read_bytes() != before and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_keygen_and_recipient_inputs(kimen):
    kimen.fail(25, "missing_out", "bundle", "keygen")
    kimen.fail(25, "missing_identity_input", "bundle", "recipient")
    kimen.fail(25, "missing_identity_file", "bundle", "recipient", "--identity", "nope.txt")
    for flags in ((), ("--overwrite",)):  # a missing directory: the hint makes it, nothing is written
        missing = kimen.fail(25, "write_failed", "bundle", "keygen", "--out", "keys/id.txt", *flags).err_json()
        assert f"`mkdir -p -m 700 {kimen.cwd / 'keys'}`" in missing["hint"]
    assert not (kimen.cwd / "keys").exists()


@pytest.mark.parametrize(("argv", "code"), [
    (("envfile", "--env", "A=const:x", "--out", "{missing}/out.env"), 22),
    (("inject", "-i", "t.tmpl", "-o", "{missing}/out.yml"), 28),
    (("secret", "get", "app.x", "--out", "{missing}/x"), 11),
    (("bundle", "seal", "--no-sign", "--secret", "app.x", "--recipient", "{recipient}",
      "--out", "{missing}/v.age"), 25),
])
def test_every_out_in_a_missing_directory_gets_the_mkdir_hint(kimen, argv, code):
    kimen.init_vault()
    kimen.set("app.x", "v")
    (kimen.cwd / "t.tmpl").write_text("plain\n")
    recipient = kimen.ok("bundle", "keygen", "--out", "k.txt", "--json").json()["recipient"]
    missing = kimen.cwd / "missing"
    args = [a.format(missing=missing, recipient=recipient) for a in argv]
    done = kimen.fail(code, "write_failed", *args, env=kimen.with_pass())
    assert done.err_json()["hint"] == f"its directory does not exist: create it first (`mkdir -p -m 700 {missing}`)"
    assert not missing.exists()


@pytest.mark.parametrize(("content", "reason"), [
    ("# only a comment\n\n", "no_identity_found"),
    ("", "no_identity_found"),
    ("AGE-SECRET-KEY-1" + "Q" * 58 + "\n", "invalid_identity"),  # the shape of a key, a bad checksum
    ("hello world\n", "invalid_identity"),
])
def test_bad_identity_files(kimen, content, reason):
    (kimen.cwd / "id.txt").write_text(content)
    done = kimen.fail(25, reason, "bundle", "recipient", "--identity", "id.txt")
    if content:
        assert content.strip().splitlines()[-1] not in done.err


def test_two_identities_in_one_file(kimen):
    kimen.ok("bundle", "keygen", "--out", "a.txt")
    kimen.ok("bundle", "keygen", "--out", "b.txt")
    both = (kimen.cwd / "a.txt").read_text() + (kimen.cwd / "b.txt").read_text()
    (kimen.cwd / "two.txt").write_text(both)
    done = kimen.fail(25, "multiple_identities_found", "bundle", "recipient", "--identity", "two.txt")
    assert "AGE-SECRET-KEY" not in done.err


# -- seal and open -----------------------------------------------------------------------------------


def test_seal_and_open_round_trip(kimen, tmp_path):
    make_vault(kimen, {"prod.db": "postgres://u:p@h/db", "prod.token": CANARY, "dev.x": "1"})
    team = Team(kimen)
    doc = team.seal()
    bundle = kimen.cwd / "vault.age"
    assert doc["action"] == "bundle_seal" and doc["secret_count"] == 3 and doc["recipient_count"] == 1
    assert doc["signed"] is True and doc["signer"] == team.signer and len(doc["bundle_id"]) == 32
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert CANARY.encode() not in bundle.read_bytes()
    target = tmp_path / "copy" / "vault.db"
    done = team.open_new("vault.age", target)
    assert done.code == 0, done.err
    opened = done.json()
    assert opened["action"] == "bundle_open" and opened["created"] is True and opened["count"] == 3
    assert opened["generation"] == doc["generation"] and opened["bundle_id"] == doc["bundle_id"]
    assert opened["signer"] == team.signer and opened["out_vault"] == str(target)
    got = values(kimen, target, ["prod.db", "prod.token", "dev.x"], NEW_PASS)
    assert got == {"prod.db": b"postgres://u:p@h/db", "prod.token": CANARY.encode(), "dev.x": b"1"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # the existing vault is refused without --overwrite
    again = team.open_new("vault.age", target)
    assert again.code == 25 and json.loads(again.err.splitlines()[-1])["reason"] == "output_vault_exists"


def test_seal_selection_armor_and_generation(kimen):
    make_vault(kimen, {"prod.db": "a", "prod.token": "b", "dev.x": "c"})
    team = Team(kimen)
    kimen.write_profile("p", "env DB=prod.db\n")
    assert team.seal("p.age", "--profile", "p")["secret_count"] == 1
    assert team.seal("g.age", "--secret", "prod.*")["secret_count"] == 2
    first = team.seal("a.age", "--armor")
    assert (kimen.cwd / "a.age").read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    second = team.seal("b.age")
    assert second["generation"] > first["generation"]
    kimen.fail(25, "bundle_replay", "bundle", "seal", "--out", "c.age", "--recipient", team.recipient,
               "--identity", str(team.key), "--generation", str(first["generation"]), env=kimen.with_pass())
    assert not (kimen.cwd / "c.age").exists()


def test_seal_refusals(kimen):
    make_vault(kimen)
    team = Team(kimen)
    key_text = team.key.read_text().splitlines()[2]
    base = ("bundle", "seal", "--out", "x.age")
    kimen.fail(25, "missing_out", "bundle", "seal", "--recipient", team.recipient, env=kimen.with_pass())
    kimen.fail(25, "missing_recipient", *base, "--identity", str(team.key), env=kimen.with_pass())
    kimen.fail(25, "missing_signing_identity", *base, "--recipient", team.recipient, env=kimen.with_pass())
    done = kimen.fail(25, "invalid_recipient", *base, "--recipient", key_text, "--no-sign", env=kimen.with_pass())
    assert key_text not in done.err
    kimen.fail(25, "invalid_recipient", *base, "--recipient", "age1notarecipient", "--no-sign", env=kimen.with_pass())
    (kimen.cwd / "recipients.txt").write_text(f"# team\n{team.recipient}\n\n{key_text}\n")
    done = kimen.fail(25, "recipients_file_contains_identity", *base, "--recipients-file", "recipients.txt",
                      "--no-sign", env=kimen.with_pass())
    envelope = done.err_json()
    assert envelope["line"] == 4 and key_text not in done.err
    assert not (kimen.cwd / "x.age").exists()


def test_seal_never_writes_over_what_it_reads_or_what_no_reader_opens(kimen):
    """`--out` naming the vault (or its journal), the signing identity, a recipients file or the
    map is refused before anything is read or written; so are more recipients than a bundle holds
    (64 stanzas: kimen's own reader refuses more), and empty path flags (an unset variable)."""
    from pyrage import x25519

    make_vault(kimen)
    team = Team(kimen)
    (kimen.cwd / "recipients.txt").write_text(team.recipient + "\n")
    (kimen.cwd / "p.kmap").write_text("env A=prod.db\n")
    before = {p: p.read_bytes() for p in (kimen.vault, team.key, kimen.cwd / "recipients.txt", kimen.cwd / "p.kmap")}
    profile = kimen.write_profile("prod", "include base\n")
    base = kimen.write_profile("base", "env A=prod.db\n")
    before.update({profile: profile.read_bytes(), base: base.read_bytes()})
    for out, extra in ((kimen.vault, ()), (team.key, ()), (kimen.cwd / "recipients.txt", ()),
                       (kimen.cwd / "p.kmap", ("--map", "p.kmap")), (profile, ("--profile", "prod")),
                       (base, ("--profile", "prod"))):
        done = kimen.fail(2, "usage_error", "bundle", "seal", "--out", str(out), "--recipients-file", "recipients.txt",
                          "--identity", str(team.key), *extra, env=kimen.with_pass())
        assert "names a file this command reads" in done.err
    assert {p: p.read_bytes() for p in before} == before
    many = [str(x25519.Identity.generate().to_public()) for _ in range(64)]
    (kimen.cwd / "many.txt").write_text("\n".join([*many, team.recipient]) + "\n")
    kimen.fail(25, "invalid_recipient", "bundle", "seal", "--out", "x.age", "--recipients-file", "many.txt",
               "--identity", str(team.key), env=kimen.with_pass())
    assert not (kimen.cwd / "x.age").exists()
    kimen.fail(2, "usage_error", "bundle", "seal", "--out", "x.age", "--recipient", team.recipient, "--identity", "",
               env=kimen.with_pass())
    team.seal("ok.age")
    names = kimen.ok("secret", "list").stdout.split()
    done = kimen.fail(2, "usage_error", "bundle", "open", "--in", "ok.age", "--identity", str(team.key),
                      "--out-vault", "", "--mirror", env=kimen.with_pass())
    assert "--out-vault needs a path" in done.err and kimen.ok("secret", "list").stdout.split() == names
    for argv in (("run", "--bundle", "", "--env", "A=prod.db", "--", "true"),
                 ("run", "--bundle", "", "--env", "A=const:x", "--", "true"), ("plan", "--bundle", "", "--env", "A=x"),
                 ("render", "--bundle", "", "--dir", "out", "--file", "a=prod.db")):
        assert "--bundle needs a file" in kimen.fail(2, "usage_error", *argv, env=kimen.with_pass()).err


def test_a_passphrase_encrypted_age_file_is_named_as_such(kimen):
    """Given where a bundle goes, a passphrase (scrypt) age file is said to be one, with the only
    command that reads it; a wrong passphrase is said to be wrong (no identity is involved)."""
    from pyrage import passphrase

    make_vault(kimen)
    team = Team(kimen)
    (kimen.cwd / "pp.age").write_bytes(passphrase.encrypt(b"{}", "right passphrase"))
    done = kimen.fail(23, "bundle_no_match", "run", "--bundle", "pp.age", "--identity", str(team.key),
                      "--env", "A=prod.db", "--", "true")
    assert "passphrase-encrypted" in done.err and "kimen bundle open --in FILE --age-passphrase-stdin" in done.err
    done = kimen.fail(25, "bundle_no_match", "bundle", "open", "--in", "pp.age", "--age-passphrase-stdin",
                      "--out-vault", str(kimen.root / "x.db"), input=b"wrong passphrase\n")
    assert "the passphrase does not decrypt this file" in done.err and "identity" not in done.err
    assert not (kimen.root / "x.db").exists()


def test_recipients_file_and_duplicates(kimen, tmp_path):
    make_vault(kimen)
    team = Team(kimen)
    other = Team(kimen, "other.txt")
    (kimen.cwd / "recipients.txt").write_text(f"# team\n{team.recipient}\n\n{other.recipient}\n")
    done = kimen.ok("bundle", "seal", "--out", "v.age", "--recipients-file", "recipients.txt", "--recipient",
                    team.recipient, "--identity", str(team.key), "--json", env=kimen.with_pass())
    doc = done.json()
    assert doc["recipient_count"] == 2 and done.err == ""  # --json: the warning is in the envelope
    assert [w["reason"] for w in doc["warnings"]] == ["duplicate_recipient", "bundle_seal_all"]
    done = kimen.run("bundle", "open", "--in", "v.age", "--identity", str(other.key), "--trusted-signer", team.signer,
                     "--out-vault", str(tmp_path / "o.db"), *SMALL_KDF, env=NEW_PASS)
    assert done.code == 0, done.err


def test_unsigned_bundles_need_allow_unsigned(kimen, tmp_path):
    make_vault(kimen)
    team = Team(kimen)
    kimen.ok("bundle", "seal", "--out", "u.age", "--recipient", team.recipient, "--no-sign", env=kimen.with_pass())
    target = tmp_path / "u.db"
    done = team.open_new("u.age", target)
    assert done.code == 25 and done.err_json()["reason"] == "bundle_unsigned" and not target.exists()
    done = team.open_new("u.age", target, "--allow-unsigned")
    assert done.code == 0 and target.exists() and done.err == ""
    assert [w["reason"] for w in done.json()["warnings"]] == ["bundle_unsigned_accepted"]


def test_open_over_existing_vault_mirrors_and_refuses_replays(kimen):
    make_vault(kimen, {"prod.a": "1", "prod.b": "2"})
    team = Team(kimen)
    old = team.seal("old.age")
    kimen.set("prod.a", "changed")
    kimen.ok("secret", "rm", "prod.b", env=kimen.with_pass())
    kimen.set("prod.c", "3")
    new = team.seal("new.age")
    assert new["generation"] > old["generation"]
    # a second vault receives the new bundle, then is offered the old one
    target = kimen.root / "ci.db"
    assert team.open_new("new.age", target).code == 0
    kimen.ok("--vault", str(target), "secret", "set", "prod.local", "--stdin", input="x", env=NEW_PASS)
    args = ("bundle", "open", "--in", "new.age", "--identity", str(team.key), "--out-vault", str(target),
            "--mirror", "--json")
    doc = kimen.ok(*args, env=NEW_PASS).json()
    assert doc["created"] is False and doc["count"] == 2 and doc["removed"] == ["prod.local"]
    listed = kimen.ok("--vault", str(target), "secret", "list", "--json").json()
    assert [s["name"] for s in listed["secrets"]] == ["prod.a", "prod.c"]
    assert values(kimen, target, ["prod.a", "prod.c"], NEW_PASS) == {"prod.a": b"changed", "prod.c": b"3"}
    before = kimen.ok("--vault", str(target), "vault", "info", "--json").json()["generation"]
    done = kimen.fail(25, "bundle_replay", "bundle", "open", "--in", "old.age", "--identity", str(team.key),
                      "--out-vault", str(target), "--overwrite", env=NEW_PASS)
    assert done.err_json()["generation"] == old["generation"]
    assert kimen.ok("--vault", str(target), "vault", "info", "--json").json()["generation"] == before
    assert values(kimen, target, ["prod.a"], NEW_PASS) == {"prod.a": b"changed"}
    kimen.ok("bundle", "open", "--in", "old.age", "--identity", str(team.key), "--out-vault", str(target),
             "--overwrite", "--allow-older", env=NEW_PASS)
    assert values(kimen, target, ["prod.a", "prod.b"], NEW_PASS) == {"prod.a": b"1", "prod.b": b"2"}


# -- hostile inputs ---------------------------------------------------------------------------------


@pytest.fixture
def sealed(kimen):
    make_vault(kimen)
    team = Team(kimen)
    team.seal()
    existing = kimen.root / "existing.db"
    assert team.open_new("vault.age", existing).code == 0
    return team, existing


def _refused(kimen, team, existing, bundle: str, reason: str, *extra: str, identity=None, stateless=True):
    """Refused with `reason` both into a new vault (nothing created) and over an existing one (untouched)."""
    new = kimen.root / "new.db"
    before = digest(existing)
    targets = ((new, ()), (existing, ("--overwrite",))) if stateless else ((existing, ("--overwrite",)),)
    for target, more in targets:
        done = kimen.fail(25, reason, "bundle", "open", "--in", bundle, "--identity", str(identity or team.key),
                          "--out-vault", str(target), *SMALL_KDF, *more, *extra, env=NEW_PASS)
        assert "AGE-SECRET-KEY" not in done.err and CANARY not in done.err
    assert not new.exists() and not any(p.name.startswith("new.db") for p in kimen.root.iterdir())
    assert digest(existing) == before
    return done


def test_wrong_identity(kimen, sealed):
    team, existing = sealed
    stranger = Team(kimen, "stranger.txt")
    _refused(kimen, team, existing, "vault.age", "bundle_no_match", identity=stranger.key)


def test_truncated_and_flipped_bundles(kimen, sealed):
    team, existing = sealed
    data = (kimen.cwd / "vault.age").read_bytes()
    (kimen.cwd / "short.age").write_bytes(data[: len(data) - 20])
    _refused(kimen, team, existing, "short.age", "bundle_decrypt_failed")
    (kimen.cwd / "header.age").write_bytes(data[:60])
    _refused(kimen, team, existing, "header.age", "bundle_invalid")
    for offset, reason in ((len(data) - 5, "bundle_decrypt_failed"), (len(data) // 2, "bundle_decrypt_failed"),
                           (120, None), (5, "bundle_invalid")):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        (kimen.cwd / "flip.age").write_bytes(bytes(flipped))
        done = kimen.run("bundle", "open", "--in", "flip.age", "--identity", str(team.key), "--out-vault",
                         str(kimen.root / "new.db"), *SMALL_KDF, "--json", env=NEW_PASS)
        assert done.code == 25, done.err
        got = done.err_json()["reason"]
        assert got in ("bundle_invalid", "bundle_decrypt_failed", "bundle_no_match", "bundle_unsupported"), got
        if reason:
            assert got == reason
        assert not (kimen.root / "new.db").exists()


def test_missing_and_oversize_inputs(kimen, sealed):
    team, existing = sealed
    kimen.fail(25, "missing_in", "bundle", "open", "--identity", str(team.key), env=NEW_PASS)
    kimen.fail(25, "input_missing", "bundle", "open", "--in", "absent.age", "--identity", str(team.key),
               "--out-vault", str(kimen.root / "new.db"), env=NEW_PASS)
    # a file larger than any document can be is refused before it is read (sparse: no disk use)
    big = kimen.cwd / "big.age"
    big.write_bytes((kimen.cwd / "vault.age").read_bytes())
    os.truncate(big, 400 * 1024 * 1024)
    _refused(kimen, team, existing, "big.age", "bundle_too_large")


@needs_age
def test_outsider_bundle_is_refused_until_its_signer_is_trusted(kimen, sealed, tmp_path):
    team, existing = sealed
    # an outsider knows our public recipient, has their own identity and signs a valid bundle
    outsider_key = kimen.cwd / "outsider.txt"
    outsider = kimen.ok("bundle", "keygen", "--out", str(outsider_key), "--json").json()
    other_vault = tmp_path / "outsider.db"
    env = {"KIMEN_PASSPHRASE": "outsider pass 123"}
    kimen.ok("--vault", str(other_vault), "vault", "init", *SMALL_KDF, env=env)
    kimen.ok("--vault", str(other_vault), "secret", "set", "prod.token", "--stdin", input="evil", env=env)
    kimen.ok("--vault", str(other_vault), "bundle", "seal", "--out", "evil.age", "--recipient", team.recipient,
             "--identity", str(outsider_key), env=env)
    done = _refused(kimen, team, existing, "evil.age", "bundle_signer_untrusted")
    assert done.err_json()["signer"] == outsider["signer"]
    # a hand-made unsigned document is refused too (and a forged signature fails verification)
    plain = age_decrypt(kimen.cwd / "evil.age", team.key)
    doc = json.loads(plain)
    doc["signature"]["signer"] = team.signer  # claim to be the team
    age_encrypt(json.dumps(doc).encode(), team.recipient, kimen.cwd / "forged.age")
    _refused(kimen, team, existing, "forged.age", "bundle_signature_invalid")
    doc["signature"] = None
    age_encrypt(json.dumps(doc).encode(), team.recipient, kimen.cwd / "unsigned.age")
    _refused(kimen, team, existing, "unsigned.age", "bundle_unsigned")
    # pinning the outsider's signer is an explicit decision: then it opens
    done = kimen.run("bundle", "open", "--in", "evil.age", "--identity", str(team.key), "--out-vault",
                     str(tmp_path / "pinned.db"), "--trusted-signer", outsider["signer"], *SMALL_KDF, env=NEW_PASS)
    assert done.code == 0, done.err


@needs_age
def test_older_genuine_bundle_is_a_replay(kimen, sealed):
    team, existing = sealed
    kimen.set("prod.token", "rotated")
    team.seal("newer.age")
    kimen.ok("bundle", "open", "--in", "newer.age", "--identity", str(team.key), "--out-vault", str(existing),
             "--overwrite", env=NEW_PASS)
    _refused(kimen, team, existing, "vault.age", "bundle_replay", stateless=False)


@needs_age
def test_malformed_documents(kimen, sealed):
    team, existing = sealed
    cases = [
        (b"just some text", "bundle_not_a_document"),
        (b'{"hello": 1}', "bundle_not_a_document"),
        (hand_document({"a": b"1"}, kimen_bundle=2), "bundle_unsupported"),
        (hand_document({"a": b"x" * (1024 * 1024 + 1)}), "bundle_invalid"),
        (hand_document({"bad name!": b"1"}), "bundle_invalid"),
        (hand_document({"a": b"1"}, generation=1.5), "bundle_invalid"),
        (hand_document({"a": b"1"}, created_at="yesterday"), "bundle_invalid"),
    ]
    for i, (payload, reason) in enumerate(cases):
        age_encrypt(payload, team.recipient, kimen.cwd / f"m{i}.age")
        _refused(kimen, team, existing, f"m{i}.age", reason, "--allow-unsigned")
    age_encrypt(hand_document({"a": b"1"}), team.recipient, kimen.cwd / "old.age")
    _refused(kimen, team, existing, "old.age", "bundle_expired", "--allow-unsigned", "--max-age", "1d")


# -- interop with the age CLI -------------------------------------------------------------------------


@needs_age
def test_age_cli_reads_kimen_bundles(kimen):
    make_vault(kimen)
    team = Team(kimen)
    for name, extra in (("plain.age", ()), ("armored.age", ("--armor",))):
        team.seal(name, *extra)
        doc = json.loads(age_decrypt(kimen.cwd / name, team.key))
        assert doc["kimen_bundle"] == 1 and doc["signature"]["signer"] == team.signer
        assert [s["name"] for s in doc["secrets"]] == ["prod.db", "prod.token"]


@needs_age
@pytest.mark.parametrize("armor", [False, True])
def test_documents_encrypted_by_the_age_cli_open(kimen, tmp_path, armor):
    team = Team(kimen)
    age_encrypt(hand_document({"prod.token": CANARY.encode()}), team.recipient, kimen.cwd / "hand.age", armor=armor)
    target = tmp_path / "hand.db"
    done = team.open_new("hand.age", target, "--allow-unsigned")
    assert done.code == 0, done.err
    assert done.json()["signer"] is None and "unsigned" in done.json()["warnings"][0]["message"]
    assert values(kimen, target, ["prod.token"], NEW_PASS) == {"prod.token": CANARY.encode()}


def test_seal_refuses_a_tampered_vault(kimen):
    import sqlite3

    make_vault(kimen, {"prod.a": "1", "prod.b": "2"})
    team = Team(kimen)
    conn = sqlite3.connect(kimen.vault)
    conn.execute("DELETE FROM secrets WHERE name='prod.b'")
    conn.commit()
    conn.close()
    kimen.fail(15, "vault_tampered", "bundle", "seal", "--out", "v.age", "--recipient", team.recipient,
               "--identity", str(team.key), env=kimen.with_pass())
    assert not (kimen.cwd / "v.age").exists()


SSH_KEYGEN = __import__("shutil").which("ssh-keygen")


@pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")
def test_ssh_ed25519_recipients_and_identities(kimen):
    import subprocess

    def keygen(name: str, *extra: str) -> None:
        subprocess.run([SSH_KEYGEN, "-q", "-f", str(kimen.cwd / name), "-C", "ci@example", *extra], check=True)

    keygen("id_ed25519", "-t", "ed25519", "-N", "")
    keygen("id_locked", "-t", "ed25519", "-N", "a passphrase")
    keygen("id_rsa", "-t", "rsa", "-b", "2048", "-N", "")
    public = (kimen.cwd / "id_ed25519.pub").read_text().split()
    shown = kimen.ok("bundle", "recipient", "--identity", "id_ed25519").stdout.strip()
    assert shown == f"{public[0]} {public[1]}"
    kimen.fail(25, "invalid_identity", "bundle", "recipient", "--identity", "id_ed25519", "--signer")
    kimen.fail(25, "invalid_identity", "bundle", "recipient", "--identity", "id_locked")
    kimen.fail(25, "invalid_identity", "bundle", "recipient", "--identity", "id_rsa")
    make_vault(kimen)
    team = Team(kimen)
    kimen.ok("bundle", "seal", "--out", "v.age", "--recipient", " ".join(public), "--identity", str(team.key),
             env=kimen.with_pass())
    kimen.fail(25, "invalid_identity", "bundle", "seal", "--out", "w.age", "--recipient", team.recipient,
               "--identity", "id_ed25519", env=kimen.with_pass())
    kimen.write_profile("p", "env TOKEN=prod.token\n")
    done = kimen.ok("run", "--bundle", "v.age", "--identity", "id_ed25519", "--trusted-signer", team.signer,
                    "--profile", "p", "--", "sh", "-c", 'printf %s "$TOKEN"')
    assert done.stdout == CANARY
    if AGE:
        assert json.loads(age_decrypt(kimen.cwd / "v.age", kimen.cwd / "id_ed25519"))["kimen_bundle"] == 1


def test_identity_from_stdin_and_env(kimen, tmp_path):
    make_vault(kimen)
    team = Team(kimen)
    team.seal()
    key = team.key.read_bytes()
    done = kimen.run("bundle", "open", "--in", "vault.age", "--identity-stdin", "--out-vault", str(tmp_path / "a.db"),
                     *SMALL_KDF, input=key, env=NEW_PASS)
    assert done.code == 0, done.err
    done = kimen.run("bundle", "open", "--in", "vault.age", "--out-vault", str(tmp_path / "b.db"), *SMALL_KDF,
                     env={**NEW_PASS, "KIMEN_AGE_IDENTITY": key.decode()})
    assert done.code == 0, done.err
    # several sources: a warning names the one used
    done = kimen.run("bundle", "open", "--in", "vault.age", "--identity", str(team.key), "--out-vault",
                     str(tmp_path / "c.db"), *SMALL_KDF, env={**NEW_PASS, "KIMEN_AGE_IDENTITY": key.decode()})
    assert done.code == 0 and "using --identity" in done.err and key.decode().strip() not in done.err
    # stdin cannot carry both the identity and the vault passphrase
    kimen.fail(25, "conflicting_stdin_inputs", "bundle", "open", "--in", "vault.age", "--identity-stdin",
               "--passphrase-stdin", "--out-vault", str(tmp_path / "d.db"), *SMALL_KDF, input=key)
    assert not (tmp_path / "d.db").exists()


def test_bad_identity_files_on_open_write_nothing(kimen, sealed):
    team, existing = sealed
    (kimen.cwd / "empty.txt").write_text("# no key here\n")
    _refused(kimen, team, existing, "vault.age", "no_identity_found", identity=kimen.cwd / "empty.txt")
    other = Team(kimen, "other.txt")
    (kimen.cwd / "two.txt").write_text(team.key.read_text() + other.key.read_text())
    _refused(kimen, team, existing, "vault.age", "multiple_identities_found", identity=kimen.cwd / "two.txt")
    _refused(kimen, team, existing, "vault.age", "missing_identity_file", identity=kimen.cwd / "absent.txt")
