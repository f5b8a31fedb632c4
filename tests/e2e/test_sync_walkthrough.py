"""docs/sync.md's "A team of three, step by step" works as written: each block runs verbatim on
its member's machine (a separate home, vault and identity), in the order of the page, against a
real bare git repository. A line whose comment says `exit N` must exit N; every other line 0."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import git as gitpython

from tests.conftest import Kimen
from tests.e2e.bundle_helpers import AGE

DOC = Path(__file__).resolve().parents[2] / "docs" / "sync.md"
SECTION = "## A team of three, step by step"


def blocks() -> list[tuple[str, list[str]]]:
    """(member, command lines) of every sh block in the section; continuations joined."""
    text = DOC.read_text()
    start = text.index(SECTION)
    section = text[start:text.index("\n## ", start + len(SECTION))]
    found = []
    for body in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        lines = body.replace("\\\n", " ").splitlines()
        assert lines[0].startswith("# "), f"a block must start with `# member`: {lines[0]!r}"
        found.append((lines[0][2:].strip(), [line for line in lines[1:] if line.strip()]))
    return found


def expected_exit(line: str) -> int:
    comment = line.split("  # ", 1)[1] if "  # " in line else ""
    match = re.match(r"exit (\d+)", comment)
    return int(match.group(1)) if match else 0


def test_the_team_walkthrough_runs_as_written(tmp_path):
    steps = blocks()
    assert [m for m, _ in steps] == ["ana", "bo", "cy", "ana", "bo", "cy", "bo", "cy", "ana", "cy", "bo",
                                     "ana", "bo", "ana"]
    repo = tmp_path / "team-secrets.git"
    gitpython.Repo.init(repo, bare=True)
    shared = tmp_path / "mail"  # where request files pass from one member to another
    shared.mkdir()
    members: dict[str, Kimen] = {}
    for name in ("ana", "bo", "cy"):
        (tmp_path / name).mkdir()
        members[name] = Kimen(tmp_path / name)
        members[name].init_vault()  # ~/.config/kimen does not exist: the page's `mkdir` makes it
    outputs = []
    remote_id = ""
    for who, lines in steps:
        k = members[who]
        if not remote_id and who != "ana":
            remote_id = members["ana"].ok("remote", "get", "team", "--json").json()["remote"]["remote_id"]
        env = {**k.env, **k.with_pass(), "TEAM_REPO": str(repo), "TEAM_REMOTE_ID": remote_id}
        for line in lines:
            done = subprocess.run(["sh", "-c", line], cwd=shared, env=env, capture_output=True, timeout=120)
            err = done.stderr.decode()
            assert "Traceback" not in err, line
            assert done.returncode == expected_exit(line), f"{who}: {line}\nexit {done.returncode}\n{err}"
            outputs.append(done.stdout + done.stderr)

    for name in ("bo", "cy"):  # `sync join > NAME.request` holds the request alone
        request = (shared / f"{name}.request").read_text()
        assert request.startswith("kimen-join-v1:") and request.count("\n") == 1
    ana, bo, cy = members["ana"], members["bo"], members["cy"]
    password = ana.get("prod.db.password")
    assert password != b"not-the-password" and bo.get("prod.db.password") == password
    assert ana.get("dev.api.key") == bo.get("dev.api.key") != cy.get("dev.api.key")
    # no value reached any output
    for value in (password, ana.get("dev.api.key"), cy.get("dev.api.key")):
        assert not any(value in out for out in outputs)
    # step 8: the CI member's identity alone (a fresh home, no vault) passes the pinned gate
    assert (shared / ".github" / "workflows" / "kimen-sync-gate.yml").is_file()
    pin = ana.ok("sync", "pin", "--json").json()["members_fp"]
    (tmp_path / "ci").mkdir()
    ci = Kimen(tmp_path / "ci")
    ci_env = {"KIMEN_AGE_IDENTITY": (shared / "ci-key.txt").read_text()}
    ci.ok("remote", "add", "team", "--type", "git", "--path", str(repo), "--remote-id", remote_id)
    assert ci.ok("sync", "pin", "--check", pin, "--json", env=ci_env).json()["writers"] == ["ana", "bo"]
    assert not ci.vault.exists()
    # cy's identity does not open the current head; bo's does
    bare = gitpython.Repo(repo)
    head_file = tmp_path / "head.age"
    ref = next(r for r in bare.references if r.path.startswith("refs/heads/"))
    head_file.write_bytes(bare.git.show(f"{ref.path}:vault.age", stdout_as_string=False))
    for name, opens in (("cy", False), ("bo", True)):
        done = subprocess.run([AGE, "-d", "-i", str(members[name].root / "home/.config/kimen/id.txt"),
                               str(head_file)], capture_output=True)
        assert (done.returncode == 0) is opens, name
