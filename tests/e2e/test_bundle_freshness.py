"""Bundle time and generation fields: parsed strictly, bounded, and checked only by stateful opens.

- `created_at` must be a real calendar RFC 3339 UTC time, `generation` an integer 1 ... 2**53-1
  (else `bundle_invalid`, never a crash), also under `--max-age` and `bundle seal --generation`;
- a stateful `bundle open` refuses a generation over 15 minutes ahead of the clock
  (`generation_in_future`); a vault that recorded a huge generation still seals;
- stateless reads (`--bundle` on run, render, envfile, plan, doctor, project) never check
  generations: the sealer can always use its own older bundle.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ..conftest import SMALL_KDF
from .bundle_helpers import CANARY, NEW_PASS, Team, age_encrypt, hand_document, make_vault, needs_age

MAX_GENERATION = 2**53 - 1


def _open_new(kimen, team, bundle: str, *extra: str):
    return kimen.run("bundle", "open", "--in", bundle, "--identity", str(team.key), "--out-vault",
                     str(kimen.root / "new.db"), "--allow-unsigned", *SMALL_KDF, "--json", *extra, env=NEW_PASS)


def _now_ms() -> int:
    return int(time.time() * 1000)


@needs_age
@pytest.mark.parametrize("created_at", [
    "2026-99-99T99:99:99Z", "2026-02-30T10:00:00Z", "2026-01-01T24:00:00Z", "2026-01-01T10:60:00Z",
    "2026-12-31T23:59:60Z", "0000-01-01T00:00:00Z", "2026-1-01T10:00:00Z", "2026-01-01T10:00:00+01:00",
])
def test_created_at_must_be_a_real_utc_time(kimen, created_at):
    make_vault(kimen)
    team = Team(kimen)
    age_encrypt(hand_document({"a": b"1"}, created_at=created_at), team.recipient, kimen.cwd / "t.age")
    for extra in ((), ("--max-age", "1d")):
        done = _open_new(kimen, team, "t.age", *extra)
        assert done.code == 25, done.err
        assert done.err_json()["reason"] == "bundle_invalid" and "created_at" in done.err_json()["error"]
        kimen.write_profile("p", "env A=a\n")
        done = kimen.run("run", "--bundle", "t.age", "--identity", str(team.key), "--allow-unsigned", "--profile",
                         "p", *extra, "--json", "--", "true")
        assert done.code == 23 and done.err_json()["reason"] == "bundle_invalid", done.err
    assert not (kimen.root / "new.db").exists()


@needs_age
@pytest.mark.parametrize("generation", [0, -1, MAX_GENERATION + 1, 2**63 - 1, 2**64, True, "5"])
def test_generation_out_of_range_is_invalid(kimen, generation):
    make_vault(kimen)
    team = Team(kimen)
    age_encrypt(hand_document({"a": b"1"}, generation=generation), team.recipient, kimen.cwd / "g.age")
    done = _open_new(kimen, team, "g.age")
    assert done.code == 25 and done.err_json()["reason"] == "bundle_invalid", done.err
    assert not (kimen.root / "new.db").exists()


def test_seal_generation_flag_is_bounded(kimen):
    make_vault(kimen)
    team = Team(kimen)
    for bad in ("0", str(MAX_GENERATION + 1), str(2**63), "-5", "1e3", "abc", "٣"):
        done = kimen.fail(25, "bundle_invalid", "bundle", "seal", "--out", "x.age", "--recipient", team.recipient,
                          "--identity", str(team.key), "--generation", bad, env=kimen.with_pass())
        assert "--generation" in done.err_json()["error"]
    assert not (kimen.cwd / "x.age").exists()
    # a valid generation over 15 minutes ahead: no opener accepts it, and the vault would record it
    # and refuse every later seal of its own; refused before anything is written or recorded
    for ahead in (str(MAX_GENERATION), str(_now_ms() + 20 * 60 * 1000)):
        kimen.fail(25, "generation_in_future", "bundle", "seal", "--out", "x.age", "--recipient", team.recipient,
                   "--identity", str(team.key), "--generation", ahead, env=kimen.with_pass())
    assert not (kimen.cwd / "x.age").exists()
    skew = _now_ms() + 5 * 60 * 1000  # within the clock skew an opener accepts
    assert team.seal("ok.age", "--generation", str(skew))["generation"] == skew
    following = team.seal("next.age")  # the next seal goes above it, with no warning
    assert following["generation"] > skew
    assert "bundle_generation_ignored" not in [w["reason"] for w in following["warnings"]]


@needs_age
def test_stateful_open_refuses_a_generation_from_the_future(kimen):
    make_vault(kimen)
    team = Team(kimen)
    ahead = _now_ms() + 20 * 60 * 1000
    age_encrypt(hand_document({"a": b"1"}, generation=ahead), team.recipient, kimen.cwd / "future.age")
    done = _open_new(kimen, team, "future.age")
    assert done.code == 25 and done.err_json()["reason"] == "generation_in_future", done.err
    assert done.err_json()["generation"] == ahead and not (kimen.root / "new.db").exists()
    existing = kimen.root / "existing.db"
    kimen.ok("--vault", str(existing), "vault", "init", *SMALL_KDF, env=NEW_PASS)
    before = existing.read_bytes()
    done = kimen.run("bundle", "open", "--in", "future.age", "--identity", str(team.key), "--out-vault",
                     str(existing), "--allow-unsigned", "--overwrite", "--allow-older", "--json", env=NEW_PASS)
    assert done.code == 25 and done.err_json()["reason"] == "generation_in_future", done.err
    assert existing.read_bytes() == before
    # a stateless read does not record it, so it does not care
    kimen.write_profile("p", "env A=a\n")
    kimen.ok("run", "--bundle", "future.age", "--identity", str(team.key), "--allow-unsigned", "--profile", "p",
             "--", "true")
    # within 15 minutes is clock skew, accepted
    age_encrypt(hand_document({"a": b"1"}, generation=_now_ms() + 5 * 60 * 1000), team.recipient,
                kimen.cwd / "skew.age")
    assert _open_new(kimen, team, "skew.age").code == 0


def test_a_vault_that_recorded_a_huge_generation_still_seals(kimen):
    """A vault that accepted generation 2**63-1 before generations were bounded: seals still work
    (with a warning), never an overflow crash."""
    make_vault(kimen)
    team = Team(kimen)
    with sqlite3.connect(kimen.vault) as conn:  # the state an unbounded bundle open left behind
        conn.execute("UPDATE vault SET bundle_high_generation=?", (2**63 - 1,))
    for name in ("one.age", "two.age"):
        done = kimen.run("bundle", "seal", "--out", name, "--recipient", team.recipient, "--identity",
                         str(team.key), "--json", env=kimen.with_pass())
        assert done.code == 0, done.err
        generation = done.json()["generation"]
        assert 1 <= generation <= MAX_GENERATION and abs(generation - _now_ms()) < 60_000
        warned = {w["reason"]: w["message"] for w in done.json()["warnings"]}
        assert "beyond the largest valid one" in warned["bundle_generation_ignored"] and done.err == ""


def test_stateless_reads_accept_the_sealers_older_bundle(kimen, tmp_path):
    """Seal twice: plan, doctor, run, envfile, render and project with the OLDER bundle all work."""
    make_vault(kimen)
    team = Team(kimen)
    old = team.seal("old.age")
    kimen.set("prod.token", "rotated")
    new = team.seal("new.age")
    assert new["generation"] > old["generation"]
    kimen.write_profile("prod", "env DB=prod.db\nenv TOKEN=prod.token\n")
    src = ("--bundle", "old.age", "--identity", str(team.key), "--profile", "prod")
    kimen.ok("plan", *src)
    doctor = kimen.ok("doctor", *src, "--strict", "--json").json()
    assert doctor["ok"] is True
    assert kimen.ok("run", *src, "--", "sh", "-c", 'printf %s "$TOKEN"').out == CANARY.encode()  # the old value
    kimen.ok("envfile", *src, "--out", str(tmp_path / "env"))
    kimen.ok("render", *src, "--dir", str(tmp_path / "r"))
    kimen.ok("project", "plan", *src)
    kimen.ok("project", "run", *src, "--", "true")
    # and the vault still refuses the older bundle where it matters: a stateful open
    target = kimen.root / "t.db"
    kimen.ok("bundle", "open", "--in", "new.age", "--identity", str(team.key), "--out-vault", str(target),
             *SMALL_KDF, env=NEW_PASS)
    kimen.fail(25, "bundle_replay", "bundle", "open", "--in", "old.age", "--identity", str(team.key),
               "--out-vault", str(target), "--overwrite", env=NEW_PASS)
    assert Path(target).exists()
