"""Audit of bundles in doctor and projection: `doctor [--bundle FILE …]` checks every bundle it is given, and the
bundle commands' flags, JSON fields and reasons are the ones the spec lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from .bundle_helpers import CANARY, Team, make_vault


@pytest.fixture
def two(kimen):
    """Two bundles from one vault: all.age (both secrets) and db.age (prod.db only); vault removed."""
    make_vault(kimen)
    team = Team(kimen)
    team.seal("all.age")
    team.seal("db.age", "--secret", "prod.db")
    for suffix in ("", "-wal", "-shm"):
        Path(str(kimen.vault) + suffix).unlink(missing_ok=True)
    kimen.write_profile("prod", "env DB=prod.db\nenv TOKEN=prod.token\n")
    return kimen, team


def _checks(done) -> dict[str, dict]:
    return {c["name"]: c for c in done.json()["checks"]}


def test_doctor_checks_every_bundle_named_per_bundle(two):
    kimen, team = two
    done = kimen.run("doctor", "--bundle", "all.age", "--bundle", "db.age", "--identity", str(team.key), "--json")
    assert done.code == 0, done.stdout
    checks = _checks(done)
    for k, name in ((1, "all.age"), (2, "db.age")):
        assert checks[f"bundle_{k}_spec"]["message"] == str(kimen.cwd / name)
        for check in ("in", "identity", "decrypt", "signer"):
            assert checks[f"bundle_{k}_{check}"]["status"] == "ok", checks
    assert "bundle_spec" not in checks  # several bundles: only the numbered names
    assert checks["session"] == {"name": "session", "status": "ok", "state": "stopped",
                                 "message": "not used: --bundle given, the bundle is the store"}
    # the profile's names are looked up in each bundle; the one lacking a name is named
    done = kimen.run("doctor", "--bundle", "all.age", "--bundle", "db.age", "--identity", str(team.key),
                     "--profile", "prod", "--json")
    assert done.code == 27
    secrets = _checks(done)["mapping_secrets"]
    assert secrets["status"] == "error"
    assert secrets["message"] == f"missing from the bundle 2 ({kimen.cwd / 'db.age'}): prod.token"
    assert CANARY not in done.stdout + done.err


def test_doctor_one_bad_bundle_among_several_fails_alone(two):
    kimen, team = two
    (kimen.cwd / "junk.age").write_text("not an age file\n")
    done = kimen.run("doctor", "--bundle", "all.age", "--bundle", "junk.age", "--bundle", "absent.age",
                     "--identity", str(team.key), "--profile", "prod", "--json")
    assert done.code == 27 and done.err == ""
    checks = _checks(done)
    assert checks["bundle_1_decrypt"]["status"] == "ok"
    assert checks["bundle_2_decrypt"]["status"] == "error"
    assert checks["bundle_2_signer"]["status"] == "skipped"
    assert checks["bundle_3_in"]["status"] == "error" and "absent.age" in checks["bundle_3_in"]["message"]
    assert checks["mapping_secrets"]["status"] == "ok"  # checked against the usable bundle
    report = done.json()
    assert report["error_count"] == 2


def test_doctor_several_bundles_read_the_stdin_identity_once(two):
    kimen, team = two
    done = kimen.run("doctor", "--bundle", "all.age", "--bundle-in", "db.age", "--identity-stdin", "--json",
                     input=team.key.read_bytes())
    assert done.code == 0, done.stdout
    checks = _checks(done)
    assert checks["bundle_1_identity"]["status"] == checks["bundle_2_identity"]["status"] == "ok"
    assert checks["bundle_2_spec"]["message"].endswith("db.age")  # --bundle-in adds a bundle too


def test_doctor_several_bundles_without_identity(two):
    kimen, _team = two
    done = kimen.run("doctor", "--bundle", "all.age", "--bundle", "db.age", "--json")
    assert done.code == 27
    checks = _checks(done)
    for k in (1, 2):
        assert checks[f"bundle_{k}_identity"]["status"] == "error"
        assert checks[f"bundle_{k}_decrypt"]["status"] == "skipped"
    done = kimen.run("doctor", "--bundle", "all.age", "--profile", "prod", "--json")
    assert _checks(done)["mapping_secrets"] == {"name": "mapping_secrets", "status": "skipped",
                                                "message": "no usable bundle to check names against"}


def test_doctor_bundles_and_vault_conflict(two):
    kimen, team = two
    done = kimen.run("--vault", "x.db", "doctor", "--bundle", "all.age", "--bundle", "db.age",
                     "--identity", str(team.key), "--json")
    assert done.code == 27
    checks = _checks(done)
    assert checks["bundle_1_spec"]["status"] == checks["bundle_2_spec"]["status"] == "error"
    assert not (kimen.cwd / "x.db").exists()


def test_doctor_reports_several_identities_as_a_warning(two):
    """several identity sources -> a warning naming the one used; a report keeps stderr empty."""
    kimen, team = two
    done = kimen.run("doctor", "--bundle", "all.age", "--identity", str(team.key), "--json",
                     env={"KIMEN_AGE_IDENTITY": team.key.read_text()})
    assert done.err == ""
    check = _checks(done)["bundle_identity"]
    assert check["status"] == "warning"
    assert "using --identity, ignoring KIMEN_AGE_IDENTITY" in check["message"]
    assert "AGE-SECRET-KEY" not in done.stdout
    done = kimen.run("doctor", "--bundle", "all.age", "--identity", str(team.key), "--strict", "--json",
                     env={"KIMEN_AGE_IDENTITY": team.key.read_text()})
    assert done.code == 27


def test_bundle_commands_json_fields_are_the_spec_ones(kimen, tmp_path):
    """each bundle command's action and fields (fields may be added, never missing)."""
    from ..conftest import SMALL_KDF
    from .bundle_helpers import NEW_PASS

    make_vault(kimen)
    done = kimen.ok("bundle", "keygen", "--out", "k.txt", "--json")
    keygen = done.json()
    assert set(keygen) == {"ok", "action", "exit_code", "warnings", "identity_path", "recipient", "signer"}
    assert keygen["action"] == "bundle_keygen" and keygen["identity_path"] == str(kimen.cwd / "k.txt")
    assert done.err == ""  # with --json the signer id is in the envelope only
    human = kimen.ok("bundle", "keygen", "--out", "k2.txt")
    assert human.stdout == "" and "signer: kimen-sig-v1:" in human.err
    human = kimen.ok("bundle", "keygen", "--out", "k3.txt", "--print-recipient")
    assert human.stdout.startswith("age1") and human.stdout.count("\n") == 1
    recipient = kimen.ok("bundle", "recipient", "--identity", "k.txt", "--json").json()
    assert recipient == {"ok": True, "action": "bundle_recipient", "exit_code": 0, "warnings": [],
                         "recipient": keygen["recipient"], "signer": keygen["signer"]}
    assert kimen.ok("bundle", "recipient", "--identity", "k.txt", "--signer").stdout == keygen["signer"] + "\n"
    seal = kimen.ok("bundle", "seal", "--out", "v.age", "--recipient", keygen["recipient"], "--identity", "k.txt",
                    "--json", env=kimen.with_pass()).json()
    assert set(seal) == {"ok", "action", "exit_code", "warnings", "vault", "out", "recipient_count", "secret_count",
                         "signed", "signer", "generation", "bundle_id"}
    assert seal["action"] == "bundle_seal" and seal["signed"] is True and seal["secret_count"] == 2
    opened = kimen.ok("bundle", "open", "--in", "v.age", "--identity", "k.txt", "--out-vault", str(tmp_path / "n.db"),
                      *SMALL_KDF, "--json", env=NEW_PASS).json()
    assert set(opened) == {"ok", "action", "exit_code", "warnings", "in", "out_vault", "created", "count",
                           "bundle_id", "generation", "created_at", "signer", "added", "updated", "removed",
                           "backup_path", "dry_run"}
    assert (opened["added"], opened["updated"], opened["removed"]) == (["prod.db", "prod.token"], [], [])
    assert opened["backup_path"] is None and opened["dry_run"] is False
    dry = kimen.ok("bundle", "open", "--in", "v.age", "--identity", "k.txt", "--out-vault", str(tmp_path / "n.db"),
                   "--overwrite", "--dry-run", "--json", env=NEW_PASS).json()
    assert set(dry) == set(opened) | {"would_add", "would_update", "would_remove", "would_backup"}
    assert opened["action"] == "bundle_open" and opened["created"] is True and opened["count"] == 2
    assert (opened["bundle_id"], opened["generation"], opened["signer"]) == (seal["bundle_id"], seal["generation"],
                                                                            seal["signer"])


def test_doctor_checks_bundles_even_when_the_config_is_unusable(two):
    """with --bundle the bundle checks run; an invalid config fails config_json and the
    signer check (config `bundle.trusted_signers` cannot be read), not the whole bundle section."""
    kimen, team = two
    bad = kimen.root / "bad.json"
    bad.write_text("{not json")
    done = kimen.run("doctor", "--bundle", "all.age", "--identity", str(team.key), "--json",
                     env={"KIMEN_CONFIG": str(bad)})
    assert done.code == 27 and done.err == ""
    checks = _checks(done)
    assert checks["config_json"]["status"] == "error"
    assert [checks[f"bundle_{c}"]["status"] for c in ("spec", "in", "identity", "decrypt")] == ["ok"] * 4
    assert checks["bundle_signer"]["status"] == "error" and "not valid JSON" in checks["bundle_signer"]["message"]
    assert checks["vault_path"]["status"] == "skipped"


def test_seal_secret_globs_narrow_and_warn_when_unmatched(kimen):
    make_vault(kimen)
    team = Team(kimen)
    kimen.write_profile("prod", "env DB=prod.db\nenv TOKEN=prod.token\n")
    done = kimen.run("bundle", "seal", "--out", "v.age", "--recipient", team.recipient, "--identity", str(team.key),
                     "--profile", "prod", "--secret", "prod.d*", "--secret", "prod.typo*", "--json",
                     env=kimen.with_pass())
    assert done.code == 0, done.err
    assert done.json()["secret_count"] == 1
    assert done.json()["warnings"] == [{"reason": "secret_glob_unmatched",
                                        "message": "--secret prod.typo* matches no secret to seal"}]
    assert done.err == ""


def test_seal_secret_globs_use_the_one_glob_grammar(kimen):
    """`*` stays within one dot-separated segment, `**` crosses dots, `?` is one character."""
    make_vault(kimen, {"prod.x": "1", "prod.x.y": "2", "prod.ab": "3", "prod": "4", "staging.x": "5"})
    team = Team(kimen)
    cases = {
        ("prod.*",): ["prod.ab", "prod.x"],
        ("prod.**",): ["prod.ab", "prod.x", "prod.x.y"],
        ("prod.?",): ["prod.x"],
        ("*.x",): ["prod.x", "staging.x"],
        ("prod.*", "staging.*"): ["prod.ab", "prod.x", "staging.x"],
        ("**",): ["prod", "prod.ab", "prod.x", "prod.x.y", "staging.x"],
    }
    for globs, expected in cases.items():
        flags = [arg for glob in globs for arg in ("--secret", glob)]
        seal = team.seal("g.age", *flags)
        assert seal["secret_count"] == len(expected), globs
        opened = kimen.ok("bundle", "open", "--in", "g.age", "--identity", str(team.key), "--out-vault",
                          str(kimen.root / "g.db"), "--dry-run", "--json").json()
        assert opened["would_add"] == expected, globs


def test_sealing_the_whole_vault_says_so(kimen):
    make_vault(kimen)
    team = Team(kimen)
    base = ("bundle", "seal", "--out", "v.age", "--recipient", team.recipient, "--identity", str(team.key))
    done = kimen.ok(*base, env=kimen.with_pass())
    assert "kimen: warning: sealing all 2 secrets of the vault" in done.err.splitlines()
    kimen.write_profile("prod", "env DB=prod.db\n")
    for narrowed in (("--profile", "prod"), ("--secret", "prod.*")):
        assert "sealing all" not in kimen.ok(*base, *narrowed, env=kimen.with_pass()).err


def test_untrusted_signer_hint_gives_the_id_and_both_ways_to_trust_it(kimen):
    make_vault(kimen)
    sealer = Team(kimen)
    ci = Team(kimen, "ci.txt")
    kimen.ok("bundle", "seal", "--out", "v.age", "--recipient", ci.recipient, "--identity", str(sealer.key),
             "--secret", "prod.*", env=kimen.with_pass())
    kimen.write_profile("prod", "env DB=prod.db\n")
    base = ("run", "--bundle", "v.age", "--identity", str(ci.key), "--profile", "prod")
    envelope = kimen.fail(23, "bundle_signer_untrusted", *base, "--", "true").err_json()
    assert envelope["signer"] == sealer.signer
    assert envelope["hint"] == (f"trust it with --trusted-signer {sealer.signer} "
                                f"or KIMEN_TRUSTED_SIGNERS={sealer.signer}")
    human = kimen.run(*base, "--", "true")
    assert f"kimen: hint: trust it with --trusted-signer {sealer.signer} or KIMEN_TRUSTED_SIGNERS={sealer.signer}" \
        in human.err.splitlines()
    # both ways named in the hint work
    kimen.ok(*base, "--trusted-signer", sealer.signer, "--", "true")
    kimen.ok(*base, "--", "true", env={"KIMEN_TRUSTED_SIGNERS": sealer.signer})
