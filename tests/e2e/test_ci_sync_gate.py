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


def _ci_run(tmp_path: Path, name: str, lines: list[tuple[str, set[str]]], variables: dict[str, str], *,
            keep_going: bool = False):
    """One CI run on a fresh machine (no vault, no config): each line in bash, in order, until one
    fails (`keep_going`: every line, to see what each step says); the results."""
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
        if done.returncode and not keep_going:
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
    line, rc, out, _err = results[-1]
    assert "preflight" in line and rc == 32
    report = json.loads(out)  # the report, on stdout
    assert report["action"] == "sync_preflight" and report["failed_checks"] == ["rotation"], report


def _preflight_refuses_the_head(results, reason: str) -> None:
    line, rc, out, _err = results[-1]
    assert "preflight" in line and rc == 32, (line, rc, out)
    report = json.loads(out)
    head = next(c for c in report["checks"] if c["name"] == "head")
    assert "head" in report["failed_checks"] and not head["ok"] and reason in json.dumps(head), report


def test_the_gate_fails_on_heads_forged_by_an_outsider_and_by_a_reader(gate, tmp_path):
    repo = gate["repo"]
    eve = sync_team.person(tmp_path, "eve", vault=False)  # not a member; read a head somehow; has push access
    good = sync_team.read_head(repo)
    for n, (key, by) in enumerate(((eve.identity, None), (gate["ci_key"], None), (gate["ci_key"], "ci"))):
        # the reader (CI's own identity) can decrypt heads but never publish one, even in its own name
        forged = sync_team.forge(good, gate["ci_key"], key, gate["recipients"], by=by)
        sync_team.write_head(repo, forged)
        results = _ci_run(tmp_path, f"ci-forged-{n}", gate["lines"], gate["variables"], keep_going=True)
        assert [rc for _line, rc, _out, _err in results] == [0, 32, 32], results
        pin_err = results[1][3]
        assert json.loads(pin_err.strip().splitlines()[-1])["reason"] == "sync_signer_not_writer", pin_err
        _preflight_refuses_the_head(results, "sync_signer_not_writer")
    sync_team.write_head(repo, good)  # the genuine head again (a new commit): the gate passes
    results = _ci_run(tmp_path, "ci-good-again", gate["lines"], gate["variables"])
    assert [rc for _line, rc, _out, _err in results] == [0, 0, 0], results
