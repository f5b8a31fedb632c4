"""The workflow `kimen init ci-sync-gate` writes works as written: its `kimen …` lines, read from the
generated YAML and run verbatim by bash with the step's variables, against a bare git repository a
team of three made through the CLI, on a CI machine with no vault and a reader's identity. A good
head passes; a wrong pin, and heads forged by an outsider and by a reader, fail with their reasons."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Kimen
from tests.e2e import sync_team
from tests.e2e.test_init_ci import PENDING

pytestmark = pytest.mark.skipif("sync preflight" in PENDING, reason="`kimen sync preflight` lands with another branch")

CANARY = "canary-5b0c-sync-gate-value"


def _steps(kimen: Kimen, repo: Path) -> list[tuple[str, set[str]]]:
    """Every `kimen …` line of the generated workflow, with the names its step's `env:` sets."""
    out = kimen.root / "gate.yml"
    kimen.ok("init", "ci-sync-gate", "--out", str(out), "--remote-path", str(repo))
    workflow = yaml.safe_load(out.read_text())
    lines = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            lines += [(line.strip(), set(step.get("env") or {})) for line in str(step.get("run", "")).splitlines()
                      if line.strip().startswith("kimen ")]
    assert [line.split()[1:3] for line, _ in lines] == [["remote", "add"], ["sync", "pin"], ["sync", "preflight"]]
    return lines


def _ci_run(tmp_path: Path, name: str, lines: list[tuple[str, set[str]]], variables: dict[str, str]):
    """One CI run on a fresh machine (no vault, no config): each line in bash, in order, until one
    fails; the results."""
    (tmp_path / name).mkdir()
    ci = Kimen(tmp_path / name)
    results = []
    for line, names in lines:
        env = {**ci.env, **{k: v for k, v in variables.items() if k in names}}
        done = subprocess.run(["bash", "-c", line], cwd=ci.cwd, env=env, capture_output=True, timeout=120,
                              start_new_session=True)
        out, err = done.stdout.decode(), done.stderr.decode()
        assert "Traceback" not in err and CANARY not in out + err and "AGE-SECRET-KEY" not in out + err
        results.append((line, done.returncode, out, err))
        if done.returncode:
            break
    assert not ci.vault.exists()  # the gate never made a vault
    return results


@pytest.fixture
def gate(tmp_path):
    ana, bo, cy, repo, remote_id = sync_team.team(tmp_path, "git")
    ci_key = tmp_path / "ci-key.txt"
    made = ana.ok("bundle", "keygen", "--out", str(ci_key), "--json").json()
    ana.ok("sync", "members", "add", "ci", "--recipient", made["recipient"], "--role", "reader")
    ana.set("prod.db", CANARY)
    sync_team.sync(ana, "push")
    members = ana.ok("sync", "members", "list", "--json").json()
    assert {m["id"]: m["role"] for m in members["members"]} == {"ana": "admin", "bo": "writer", "cy": "writer",
                                                                 "ci": "reader"}
    got = ana.ok("remote", "get", "team", "--json").json()
    assert got["remote"]["remote_id"] == remote_id
    variables = {"KIMEN_AGE_IDENTITY": ci_key.read_text(), "KIMEN_REMOTE_ID": remote_id,
                 "KIMEN_MEMBERS_PIN": members["members_fp"]}
    return {"ana": ana, "bo": bo, "cy": cy, "repo": repo, "ci_key": ci_key, "variables": variables,
            "lines": _steps(ana, repo), "recipients": [m["recipient"] for m in members["members"]]}


def _failed(results, code: int, reason: str) -> None:
    line, rc, _out, err = results[-1]
    assert rc == code, f"{line}: exit {rc}\n{err}"
    assert json.loads(err.strip().splitlines()[-1])["reason"] == reason, err


def test_the_gate_passes_on_a_good_head_and_fails_on_a_wrong_pin(gate, tmp_path):
    results = _ci_run(tmp_path, "ci-good", gate["lines"], gate["variables"])
    assert [rc for _line, rc, _out, _err in results] == [0, 0, 0], results
    pin = json.loads(results[1][2])
    assert pin["action"] == "sync_pin" and pin["pinned"] and pin["writers"] == ["ana", "bo", "cy"]
    preflight = json.loads(results[2][2])
    assert preflight["action"] == "sync_preflight" and preflight["failed_count"] == 0
    assert [c["name"] for c in preflight["checks"]] == ["head", "pin", "rotation"]

    wrong = {**gate["variables"], "KIMEN_MEMBERS_PIN": "0" * 64}
    _failed(_ci_run(tmp_path, "ci-wrong-pin", gate["lines"], wrong), 32, "members_pin_mismatch")
    other = {**gate["variables"], "KIMEN_REMOTE_ID": "0" * 32}
    _failed(_ci_run(tmp_path, "ci-wrong-remote", gate["lines"], other), 32, "bundle_wrong_remote")
    # a membership change nobody re-pinned fails the gate, although the head itself is genuine
    gate["ana"].ok("sync", "members", "add", "bo", "--update", "--role", "admin")
    _failed(_ci_run(tmp_path, "ci-members-changed", gate["lines"], gate["variables"]), 32, "members_pin_mismatch")


def test_the_gate_fails_on_a_preflight_with_names_due_for_rotation(gate, tmp_path):
    ana = gate["ana"]
    ana.ok("sync", "members", "rm", "cy", "--yes")
    fp = ana.ok("sync", "members", "list", "--json").json()["members_fp"]
    results = _ci_run(tmp_path, "ci-rotation", gate["lines"], {**gate["variables"], "KIMEN_MEMBERS_PIN": fp})
    assert [rc for _line, rc, _out, _err in results][:2] == [0, 0]  # the head and the pin are fine
    line, rc, _out, err = results[-1]
    assert "preflight" in line and rc == 32
    envelope = json.loads(err.strip().splitlines()[-1])
    assert envelope["failed_checks"] == ["rotation"], envelope


@pytest.mark.parametrize("forger", ["outsider", "reader"])
def test_the_gate_fails_on_a_forged_head(gate, tmp_path, forger):
    repo = gate["repo"]
    if forger == "outsider":  # eve: not a member; she read an old head somehow, and has push access
        eve = sync_team.person(tmp_path, "eve", vault=False)
        key = eve.identity
    else:  # the reader (here: CI's own identity) can decrypt heads but never publish one
        key = gate["ci_key"]
    forged = sync_team.forge(sync_team.read_head(repo), gate["ci_key"], key, gate["recipients"])
    sync_team.write_head(repo, forged)
    _failed(_ci_run(tmp_path, f"ci-{forger}", gate["lines"], gate["variables"]), 32, "sync_signer_not_writer")
    # the same forgery claiming to be by the reader itself
    forged = sync_team.forge(sync_team.read_head(repo), gate["ci_key"], key, gate["recipients"], by="ci")
    sync_team.write_head(repo, forged)
    results = _ci_run(tmp_path, f"ci-{forger}-by", gate["lines"], gate["variables"])
    _line, rc, _out, err = results[-1]
    assert rc == 32 and json.loads(err.strip().splitlines()[-1])["reason"] in (
        "sync_signer_not_writer", "sync_write_unauthorized"), err
