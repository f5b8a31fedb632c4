"""Projecting straight from a bundle: `--bundle FILE --identity FILE` on run, envfile, render, plan,
doctor and project: no vault is opened or written and no passphrase is asked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .bundle_helpers import CANARY, Team, make_vault

PRINT_ENV = [sys.executable, "-c", "import os, sys; sys.stdout.write(os.environ.get('DB', '-') + '|' + "
             "os.environ.get('TOKEN', '-') + '|' + os.environ.get('KIMEN_AGE_IDENTITY', 'no-identity'))"]


@pytest.fixture
def ci(kimen):
    """A bundle and identity in a CI-like checkout: the vault is gone, no passphrase is set."""
    make_vault(kimen)
    team = Team(kimen)
    team.seal()
    for suffix in ("", "-wal", "-shm"):
        Path(str(kimen.vault) + suffix).unlink(missing_ok=True)
    kimen.write_profile("prod", "env DB=prod.db\nenv TOKEN=prod.token\n")
    return kimen, team


def test_run_from_bundle_without_vault_or_passphrase(ci):
    kimen, team = ci
    done = kimen.ok("run", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "prod", "--", *PRINT_ENV)
    assert done.stdout == f"postgres://u:p@h/db|{CANARY}|no-identity"
    assert not kimen.vault.exists()
    # the identity from KIMEN_AGE_IDENTITY (the CI secret) works and never reaches the child
    identity = team.key.read_text()
    done = kimen.ok("project", "run", "--bundle", "vault.age", "--profile", "prod", "--", *PRINT_ENV,
                    env={"KIMEN_AGE_IDENTITY": identity})
    assert done.stdout == f"postgres://u:p@h/db|{CANARY}|no-identity"
    assert not kimen.vault.exists()


def test_envfile_and_render_from_bundle(ci, tmp_path):
    kimen, team = ci
    out = tmp_path / "app.env"
    kimen.ok("envfile", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "prod", "--out", str(out))
    assert f"TOKEN='{CANARY}'" in out.read_text() or f"TOKEN={CANARY}" in out.read_text()
    kimen.ok("render", "--bundle", "vault.age", "--identity", str(team.key), "--file", "token=prod.token",
             "--dir", str(tmp_path / "r"))
    assert (tmp_path / "r" / "token").read_text() == CANARY
    assert not kimen.vault.exists()


def test_plan_from_bundle_checks_names_without_values(ci):
    kimen, team = ci
    done = kimen.ok("plan", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "prod", "--json",
                    "--", "deploy")
    doc = done.json()
    assert doc["bundle"]["secrets_present"] == 2 and doc["bundle"]["signer"] == team.signer
    assert CANARY not in done.stdout + done.err
    kimen.write_profile("more", "env DB=prod.db\nenv X=prod.missing\n")
    done = kimen.fail(12, "secret_not_found", "plan", "--bundle", "vault.age", "--identity", str(team.key),
                      "--profile", "more", "--", "deploy")
    assert done.err_json()["missing"] == ["prod.missing"] and CANARY not in done.err


def test_doctor_with_bundle(ci):
    kimen, team = ci
    done = kimen.run("doctor", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "prod",
                     "--strict", "--json")
    report = done.json()
    assert done.code == 0, done.stdout
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["bundle_decrypt"] == "ok" and checks["bundle_signer"] == "ok" and checks["mapping_secrets"] == "ok"
    assert checks["vault_path"] == "skipped" and checks["passphrase_source"] == "skipped"
    kimen.write_profile("more", "env X=prod.missing\n")
    done = kimen.run("doctor", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "more", "--json")
    assert done.code == 27
    assert any(c["name"] == "mapping_secrets" and c["status"] == "error" for c in done.json()["checks"])
    stranger = Team(kimen, "stranger.txt")
    done = kimen.run("doctor", "--bundle", "vault.age", "--identity", str(stranger.key), "--json")
    assert done.code == 27
    assert {c["name"]: c["status"] for c in done.json()["checks"]}["bundle_decrypt"] == "error"


def test_bundle_source_refusals(ci):
    kimen, team = ci
    args = ("--identity", str(team.key), "--profile", "prod", "--", "true")
    kimen.fail(23, "conflicting_source_inputs", "run", "--bundle", "vault.age", "--vault", "x.db", *args)
    # an empty --vault is given too: not silently dropped (as it is not without --bundle)
    kimen.fail(23, "conflicting_source_inputs", "run", "--bundle", "vault.age", "--vault", "", *args)
    done = kimen.run("doctor", "--bundle", "vault.age", "--vault", "", "--identity", str(team.key), "--json")
    assert {c["name"]: c["status"] for c in done.json()["checks"]}["bundle_spec"] == "error"
    kimen.fail(23, "input_missing", "run", "--bundle", "absent.age", *args)
    kimen.fail(23, "missing_identity_input", "run", "--bundle", "vault.age", "--profile", "prod", "--", "true")
    unset_secret = kimen.fail(23, "missing_identity_input", "run", "--bundle", "vault.age", "--profile", "prod",
                              "--", "true", env={"KIMEN_AGE_IDENTITY": ""}).err_json()  # a CI secret not set
    assert "KIMEN_AGE_IDENTITY is set but empty" in unset_secret["hint"]
    stranger = Team(kimen, "stranger.txt")
    kimen.fail(23, "bundle_no_match", "run", "--bundle", "vault.age", "--identity", str(stranger.key),
               "--profile", "prod", "--", "true")
    done = kimen.run("run", "--json", "--bundle", "vault.age", "--identity", str(team.key), "--profile", "prod",
                     "--trusted-signer", "not-a-signer", "--", "true")
    assert done.code == 23 and json.loads(done.err.splitlines()[-1])["reason"] == "invalid_signer"


def test_trusted_signers_from_env_and_file(kimen, tmp_path):
    make_vault(kimen)
    team = Team(kimen)
    reader = Team(kimen, "reader.txt")
    kimen.ok("bundle", "seal", "--out", "v.age", "--recipient", reader.recipient, "--identity", str(team.key),
             env=kimen.with_pass())
    kimen.write_profile("prod", "env TOKEN=prod.token\n")
    base = ("run", "--bundle", "v.age", "--identity", str(reader.key), "--profile", "prod", "--")
    done = kimen.fail(23, "bundle_signer_untrusted", *base, "true")
    assert done.err_json()["signer"] == team.signer
    kimen.ok(*base, "true", env={"KIMEN_TRUSTED_SIGNERS": f"{reader.signer}, {team.signer}"})
    (tmp_path / "signers").write_text(f"# ops\n{team.signer}\n")
    kimen.ok(*base[:1], "--trusted-signers-file", str(tmp_path / "signers"), *base[1:], "true")
    config = Path(kimen.env["XDG_CONFIG_HOME"]) / "kimen" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"bundle": {"trusted_signers": [team.signer]}}))
    kimen.ok(*base, "true")


def test_inject_from_bundle_without_vault_or_passphrase(ci):
    kimen, team = ci
    (kimen.cwd / "t.txt").write_text("token={{ kimen:prod.token }}\n")
    kimen.ok("inject", "--bundle", "vault.age", "--identity", str(team.key), "-i", "t.txt", "-o", "out.txt")
    token = CANARY if isinstance(CANARY, bytes) else CANARY.encode()
    assert (kimen.cwd / "out.txt").read_bytes() == b"token=" + token + b"\n"
    (kimen.cwd / "bad.txt").write_text("{{ kimen:prod.nope }}")
    done = kimen.fail(12, "secret_not_found", "inject", "--bundle", "vault.age", "--identity", str(team.key),
                      "-i", "bad.txt", "--dry-run")
    assert done.err_json()["missing"] == ["prod.nope"]
    assert not kimen.vault.exists()
