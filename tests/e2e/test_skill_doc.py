"""docs/SKILL.md stays true: every command of its `sh` blocks runs as written with only a grant
token (no passphrase), against a real session in grant-required mode, and no value reaches the
output."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

SKILL = Path(__file__).resolve().parents[2] / "docs" / "SKILL.md"
VALUES = {"app.db.url": b"postgres://skill-db-value", "app.api_key": b"skill-api-key-value"}


def _commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", SKILL.read_text(), re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


def test_the_skill_commands_run_with_a_grant_alone(kimen):
    text = SKILL.read_text()
    assert text.startswith("---\nname: ") and "\ndescription: " in text.split("---", 2)[1]
    for banned in ("KIMEN_PASSPHRASE=", "--unsafe-stdout --", "--passphrase-stdin "):
        assert banned not in text.replace(f"`{banned}", "")
    kimen.init_vault()
    for name, value in VALUES.items():
        kimen.set(name, value)
    kimen.write_profile("app", "env DATABASE_URL=app.db.url\nenv API_KEY=app.api_key\n")
    kimen.ok("session", "start", "--require-grant", env=kimen.with_pass())
    token = kimen.ok("session", "grant", "--profile", "app", "--read-only", env=kimen.with_pass()).stdout.strip()
    commands = _commands()
    assert len(commands) >= 3 and all(argv[0] == "kimen" for argv in commands)
    for argv in commands:
        done = kimen.ok(*argv[1:], env={"KIMEN_SESSION_TOKEN": token})
        for value in VALUES.values():
            assert value not in done.out and value.decode() not in done.err, argv
    masked = kimen.ok("run", "--profile", "app", "--mask", "--", "env", env={"KIMEN_SESSION_TOKEN": token}).stdout
    assert "API_KEY=[masked:API_KEY]" in masked and "DATABASE_URL=[masked:DATABASE_URL]" in masked
