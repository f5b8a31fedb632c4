"""SKILL.md (the guide for coding agents) stays true: every command in its `sh` blocks runs as
written under a read-only grant in a session that requires one, prints no value, and the run is
masked; the commands it tells an agent to avoid appear in no block it tells it to run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import KIMEN

SKILL = Path(__file__).resolve().parents[2] / "SKILL.md"
VALUES = {"test.api_key": b"agent-visible-nowhere-1234", "test.db.url": b"postgres://skill-db-5678",
          "prod.api_key": b"production-only-9012"}


def _blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", SKILL.read_text(), re.S)


def _setup(kimen) -> str:
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    kimen.write_profile("test", "env API_KEY=test.api_key\nenv DB_URL=test.db.url\n")
    kimen.ok("session", "start", "--require-grant", env=kimen.with_pass())
    return kimen.ok("session", "grant", "--profile", "test", "--ttl", "10m", "--read-only",
                    env=kimen.with_pass()).stdout.strip()


def _shell(kimen, script: str, token: str) -> subprocess.CompletedProcess[bytes]:
    env = {**kimen.env, "KIMEN_SESSION_TOKEN": token, "PATH": f"{Path(KIMEN).parent}:{kimen.env['PATH']}"}
    return subprocess.run(["bash", "-euc", script], env=env, cwd=kimen.cwd, capture_output=True, timeout=120,
                          start_new_session=True)


def test_every_sh_block_runs_under_a_read_only_grant_and_shows_no_value(kimen):
    token = _setup(kimen)
    blocks = _blocks()
    assert len(blocks) >= 4
    outputs = []
    for block in blocks:
        done = _shell(kimen, block, token)
        assert done.returncode == 0, (block, done.stderr.decode())
        text = done.stdout + done.stderr
        assert not any(value in text for value in VALUES.values()), block
        assert token.encode() not in text and b"Traceback" not in text
        outputs.append(text)
    run = [out for block, out in zip(blocks, outputs, strict=True) if "run --profile test --mask" in block]
    assert run and b"token is [masked:API_KEY]" in run[0]
    assert b"test.api_key" in outputs[next(i for i, b in enumerate(blocks) if "plan" in b)]  # names, not values


def test_the_grant_command_of_the_table_works_and_nothing_forbidden_is_run(kimen):
    text = SKILL.read_text()
    for block in _blocks():
        for forbidden in ("--unsafe-stdout", "KIMEN_PASSPHRASE", "--passphrase", "secret get", "envfile"):
            assert forbidden not in block, forbidden
    grant = re.search(r"`(kimen session grant --profile PROFILE [^`]*)`", text)
    assert grant, "the table names the grant command"
    _setup(kimen)
    command = grant.group(1).replace("PROFILE", "test").replace("<your command>", "kimen run --profile test -- true")
    done = subprocess.run(["bash", "-euc", command], env={**kimen.env, **kimen.with_pass(),
                          "PATH": f"{Path(KIMEN).parent}:{kimen.env['PATH']}"}, cwd=kimen.cwd,
                          capture_output=True, timeout=120, start_new_session=True)
    assert done.returncode == 0, done.stderr.decode()
    # outside the grant: the documented reason and exit code
    token = kimen.ok("session", "grant", "--profile", "test", "--read-only", env=kimen.with_pass()).stdout.strip()
    denied = _shell(kimen, "kimen secret get prod.api_key --unsafe-stdout", token)
    assert denied.returncode == 35 and b"grant does not cover: prod.api_key" in denied.stderr
