"""The README's CI example ("Hand CI a signed, age-encrypted bundle") works as written.

The block is taken from README.md and run command by command with `sh`, verbatim, in a temp dir
that holds what the README's quick start made before it: a vault with `prod.*` secrets and the
`prod` profile. The only substitutions are the two placeholders, filled from the block's own
output as a user would copy them: `age1...` <- what `keygen --print-recipient` printed,
`kimen-sig-v1:...` <- what `recipient --signer` printed. `./deploy.sh` is a script the test
writes. Commands after `bundle seal` run as a CI job would: the vault moved away, no passphrase.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .bundle_helpers import make_vault

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "Hand CI a signed, age-encrypted bundle"
PLACEHOLDERS = ("age1...", "kimen-sig-v1:...")

DEPLOY = """#!/bin/sh
# fails unless the bundle's values arrived (and the identity did not)
test "$DATABASE_URL" = "postgres://u:p@h/db" || exit 3
test "$(cat "$GOOGLE_APPLICATION_CREDENTIALS")" = '{"k": 1}' || exit 4
test -z "$KIMEN_AGE_IDENTITY" || exit 5
echo deployed >> "$DEPLOY_LOG"
"""


def readme_ci_commands() -> list[str]:
    """The shell commands of the README's CI block: `\\`-continued lines joined, comment-only
    lines dropped (trailing comments are left to sh)."""
    text = README.read_text()
    start = text.index("```sh\n", text.index(MARKER)) + len("```sh\n")
    block = text[start:text.index("```", start)]
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        commands.append(pending + line)
        pending = ""
    return commands


def test_readme_ci_block_runs_as_written(kimen):
    commands = readme_ci_commands()
    assert any(c.startswith("kimen bundle seal") for c in commands)
    assert any("--trusted-signer kimen-sig-v1:..." in c for c in commands)
    assert any("KIMEN_TRUSTED_SIGNERS=kimen-sig-v1:..." in c for c in commands)
    make_vault(kimen, {"prod.database_url": "postgres://u:p@h/db", "prod.gcp_credentials_json": '{"k": 1}'})
    kimen.write_profile("prod", "env DATABASE_URL=prod.database_url\nenv PORT=const:5050\n"
                                "file credentials.json=prod.gcp_credentials_json\n"
                                "envpath GOOGLE_APPLICATION_CREDENTIALS=credentials.json\n")
    deploy = kimen.cwd / "deploy.sh"
    deploy.write_text(DEPLOY)
    deploy.chmod(0o755)
    log = kimen.root / "deploy.log"
    env = {**kimen.env, **kimen.with_pass(), "DEPLOY_LOG": str(log)}
    filled: dict[str, str] = {}
    for command in commands:
        code, _, comment = command.partition(" #")  # placeholders in a trailing comment stay as they are
        for placeholder in PLACEHOLDERS:
            if placeholder in code:
                assert placeholder in filled, f"{placeholder} is used before the block prints it: {command}"
                code = code.replace(placeholder, filled[placeholder])
        command = code + (" #" + comment if comment else "")
        done = subprocess.run(["sh", "-c", command], cwd=kimen.cwd, env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stderr.decode()}"
        assert b"Traceback" not in done.stderr
        printed = done.stdout.decode().strip()
        for placeholder in PLACEHOLDERS:
            if printed.startswith(placeholder[:-3]) and "\n" not in printed:
                filled[placeholder] = printed
        if command.startswith("kimen bundle seal"):  # from here on: the CI job
            os.rename(kimen.vault, kimen.root / "elsewhere.db")
            env.pop("KIMEN_PASSPHRASE")
    assert set(filled) == set(PLACEHOLDERS)
    assert log.read_text() == "deployed\n" * sum("./deploy.sh" in c for c in commands)
    assert log.read_text().count("deployed") == 2
