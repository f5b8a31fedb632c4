"""The README's "Daily use" block works as written: run verbatim as one `sh -e` script (the
`export` carries to the next lines) in a git repository holding a `.env`, an app that checks its
environment and a template."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "## Daily use"

APP = """#!/bin/sh
test "$API_TOKEN" = "tok-123" || exit 3
test "$PORT" = "5050" || exit 4
echo ran >> "$APP_LOG"
"""


def daily_block() -> str:
    text = README.read_text()
    start = text.index("```sh\n", text.index(MARKER)) + len("```sh\n")
    return text[start:text.index("```", start)]


def test_readme_daily_use_block_runs_as_written(kimen):
    block = daily_block()
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] if c.startswith("kimen") else c.split()[0] for c in commands] == [
        "migrate", "status", "export", "run", "inject"]
    kimen.init_vault()
    subprocess.run(["git", "init", "-q", str(kimen.cwd)], check=True)
    (kimen.cwd / ".env").write_text("API_TOKEN=tok-123\nPORT=5050\n")
    (kimen.cwd / "app").write_text(APP)
    (kimen.cwd / "app").chmod(0o755)
    (kimen.cwd / "config.tmpl.yml").write_text("token: {{ kimen:dev.API_TOKEN }}\nimage: {{ .Values.image }}\n")
    log = kimen.root / "app.log"
    env = {**kimen.env, **kimen.with_pass(), "APP_LOG": str(log)}
    done = subprocess.run(["sh", "-e", "-c", block], cwd=kimen.cwd, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert log.read_text() == "ran\n"
    config = kimen.cwd / "config.yml"
    assert config.read_text() == "token: tok-123\nimage: {{ .Values.image }}\n"
    assert os.stat(config).st_mode & 0o777 == 0o600
    assert (kimen.cwd / ".env").read_text() == "API_TOKEN=tok-123\nPORT=5050\n"
    assert b"profile:  none" in done.stdout  # status ran before the profile was selected
    assert b"tok-123" not in done.stdout and b"tok-123" not in done.stderr
