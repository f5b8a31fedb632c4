"""The daily-use security invariants (docs/security.md items 36-42) that the per-command tests do
not prove on their own: all-or-nothing outputs whatever fails, 0600 backups and outputs under an
open umask, a generated value absent from every output and the audit log, history never carried by
a sync head, dotenv files never touched on any path, and no read-only daily command or `--dry-run`
ever unlocking or prompting (a configured unlock command that leaves a mark proves it)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import KIMEN, Kimen
from tests.e2e.vault_helpers import CANARY


def _file_state(path: Path) -> tuple[bytes, int, int, int]:
    st = os.lstat(path)
    return path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_ino, st.st_mtime_ns


def _umask_000(kimen: Kimen, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = " ".join(f"'{a}'" for a in args)
    return subprocess.run(["sh", "-c", f"umask 000; exec {KIMEN} {argv}"], cwd=kimen.cwd,
                          env={**kimen.env, **(env or {})}, capture_output=True, timeout=120)


# -- 36: inject writes nothing unless everything parsed and resolved; 0600 outputs and backups --


def test_every_failed_inject_leaves_an_existing_output_byte_identical(kimen):
    kimen.init_vault()
    kimen.set("app.db", CANARY)
    out = kimen.cwd / "out.yml"
    out.write_bytes(b"previous rendering")
    os.chmod(out, 0o640)
    before = _file_state(out)
    templates = {
        # a good reference first, then the broken part: the whole template is parsed before any read
        "late_invalid.yml": (b"a: {{ kimen:app.db }}\nb: {{ kimen:no good }}\n", 28, "invalid_template"),
        "unclosed.yml": (b"a: {{ kimen:app.db }}\nb: {{ kimen:app.db\n", 28, "invalid_template"),
        "one_missing.yml": (b"a: {{ kimen:app.db }}\nb: {{ kimen:app.gone }}\n", 12, "secret_not_found"),
    }
    for name, (text, code, reason) in templates.items():
        (kimen.cwd / name).write_bytes(text)
        kimen.fail(code, reason, "inject", "-i", name, "-o", "out.yml", env=kimen.with_pass())
        kimen.fail(code, reason, "inject", "-i", name, "-o", "out.yml", "--dry-run", unset=("KIMEN_PASSPHRASE",))
        assert _file_state(out) == before, name
    (kimen.cwd / "good.yml").write_bytes(b"a: {{ kimen:app.db }}\n")
    kimen.fail(15, "wrong_passphrase", "inject", "-i", "good.yml", "-o", "out.yml", env=kimen.with_pass("wrong"))
    kimen.ok("inject", "-i", "good.yml", "-o", "out.yml", "--dry-run", unset=("KIMEN_PASSPHRASE",))
    assert _file_state(out) == before
    assert not [p for p in os.listdir(kimen.cwd) if "kimen-tmp" in p]  # no temp file left either
    kimen.ok("inject", "-i", "good.yml", "-o", "out.yml", env=kimen.with_pass())
    assert out.read_bytes() == b"a: " + CANARY + b"\n" and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_get_out_and_migrate_backups_are_0600_under_umask_000(kimen):
    kimen.init_vault()
    kimen.set("dev.A", "old")
    done = _umask_000(kimen, "secret", "get", "dev.A", "--out", "a.txt", env=kimen.with_pass())
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((kimen.cwd / "a.txt").stat().st_mode) == 0o600
    (kimen.cwd / ".env").write_bytes(b"A=" + CANARY + b"\n")
    done = _umask_000(kimen, "migrate", "--overwrite", "--json", env=kimen.with_pass())
    assert done.returncode == 0, done.stderr
    backup = Path(json.loads(done.stdout)["backup_path"])
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert kimen.get("dev.A") == CANARY


# -- 39: a generated value is in no output, JSON, message or audit line --


def test_a_generated_value_reaches_no_output_and_no_audit_line(kimen):
    kimen.init_vault()
    kimen.set("keep.me", "x")
    runs = [
        kimen.ok("secret", "generate", "g.text", env=kimen.with_pass()),
        kimen.ok("secret", "generate", "g.pin", "--length", "6", "--charset", "digits", env=kimen.with_pass()),
        kimen.ok("secret", "generate", "g.pin2", "--length", "6", "--charset", "digits", "--json",
                 env=kimen.with_pass()),
        kimen.ok("secret", "generate", "g.raw", "--bytes", "24", "--encoding", "base64", "--json",
                 env=kimen.with_pass()),
    ]
    kimen.ok("session", "start", env=kimen.with_pass())
    try:
        runs.append(kimen.ok("secret", "generate", "g.session", "--json", unset=("KIMEN_PASSPHRASE",)))
        runs.append(kimen.ok("secret", "generate", "g.session", "--replace", unset=("KIMEN_PASSPHRASE",)))
        runs.append(kimen.fail(13, "secret_exists", "secret", "generate", "g.session", unset=("KIMEN_PASSPHRASE",)))
    finally:
        kimen.ok("session", "stop")
    values = [kimen.get(name) for name in ("g.text", "g.pin", "g.pin2", "g.raw", "g.session")]
    old = kimen.ok("secret", "history", "g.session", "--json").json()["entries"][0]["revision"]
    history = kimen.ok("secret", "get", "g.session", "--revision", str(old), "--unsafe-stdout",
                       env=kimen.with_pass()).out
    audit = kimen.root / "state" / "kimen" / "audit.jsonl"
    logged = audit.read_bytes()
    assert b'"g.session"' in logged  # the log does record the generate requests, by name
    for value in (*values, history):
        assert len(value) >= 6
        for done in runs:
            assert value not in done.out and value.decode() not in done.err, done.args
        assert value not in logged


def test_generate_starts_no_process_that_could_see_the_value(kimen, tmp_path):
    """generate hands the value to no child: a PATH of tools that would log any start records none."""
    kimen.init_vault()
    spy = tmp_path / "spybin"
    spy.mkdir()
    log = tmp_path / "started"
    for tool in ("sh", "git", "python3", "xclip", "wl-copy", "cat"):
        (spy / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {log}\n")
        (spy / tool).chmod(0o755)
    env = {**kimen.with_pass(), "PATH": f"{os.path.dirname(KIMEN)}:{spy}"}
    kimen.ok("secret", "generate", "g.one", "--json", env=env)
    assert not log.exists()
    assert len(kimen.get("g.one")) == 32


# -- 40: history is local: a sync head never carries it --


def test_a_sync_head_carries_no_history(tmp_path):
    from tests.e2e.test_sync_cli import join, member

    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    ana, bo = member(tmp_path, "ana"), member(tmp_path, "bo")
    remote_id = ana.ok("sync", "init", "team", "--path", str(remote_dir), "--identity", str(ana.identity),
                       "--member", "ana", "--json").json()["remote_id"]
    join(ana, bo, "bo", remote_dir, remote_id)
    ana.set("app.token", CANARY)
    ana.set("app.token", "current")
    assert [e["revision"] for e in ana.ok("secret", "history", "app.token", "--json").json()["entries"]]
    ana.ok("sync", "push", env=ana.with_pass())
    bo.ok("sync", "pull", env=bo.with_pass())
    assert bo.get("app.token") == b"current"
    doc = bo.ok("secret", "history", "app.token", "--json").json()
    assert doc["entries"] == [] and doc["current"]["revision"] == 1
    assert CANARY not in b"".join(p.read_bytes() for p in remote_dir.rglob("*") if p.is_file())


# -- 41: migrate never modifies, moves or deletes a dotenv file; profiles hold no value --


def test_migrate_never_touches_a_dotenv_file_on_any_path(kimen):
    kimen.init_vault()
    root = kimen.cwd
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".env").write_bytes(b"A=" + CANARY + b"\nB=two\n")
    (root / ".env.local").write_bytes(b"B=" + CANARY + b"-local\n")
    (root / "svc").mkdir()
    (root / "svc" / ".env").write_bytes(b"S=" + CANARY + b"-svc\n")
    (root / ".env.example").write_bytes(b"A=\n")
    os.chmod(root / ".env", 0o644)
    subprocess.run(["git", "-C", str(root), "add", "svc/.env"], check=True)
    paths = [root / ".env", root / ".env.local", root / "svc" / ".env", root / ".env.example"]
    before = {p: _file_state(p) for p in paths}
    runs = [
        kimen.ok("migrate", "--dry-run", unset=("KIMEN_PASSPHRASE",)),
        kimen.fail(15, "wrong_passphrase", "migrate", env=kimen.with_pass("wrong")),
        kimen.ok("migrate", "--json", env=kimen.with_pass()),
        kimen.fail(13, "secret_exists", "migrate", env=kimen.with_pass()),
        kimen.fail(29, "profile_exists", "migrate", "--overwrite", env=kimen.with_pass()),
        kimen.ok("migrate", "--overwrite", "--update-profile", env=kimen.with_pass()),
    ]
    assert {p: _file_state(p) for p in paths} == before
    tracked = [w for w in runs[2].json()["warnings"] if w["reason"] == "env_file_tracked"]
    assert len(tracked) == 1 and "svc/.env" in tracked[0]["message"] and "rotate" in tracked[0]["message"]
    profiles = list(root.rglob("*.kmap"))
    assert len(profiles) == 2
    for profile in profiles:
        text = profile.read_bytes()
        assert CANARY not in text and b"two" not in text
        assert all(line.startswith((b"#", b"env ")) for line in text.splitlines())


# -- 42: the read-only daily commands and every --dry-run never unlock, prompt or read a value --


@pytest.fixture
def marked(kimen, tmp_path):
    """A vault whose configured unlock command leaves a mark whenever it runs."""
    kimen.init_vault()
    kimen.set("app.db", CANARY)
    kimen.set("app.db", CANARY + b"-2")
    kimen.write_profile("dev", "env DB=secret:app.db\n")
    (kimen.cwd / "t.yml").write_text("db: {{ kimen:app.db }}\n")
    (kimen.cwd / ".env").write_text("NEW=1\n")
    mark = tmp_path / "unlocked"
    kimen.ok("config", "unlock", "set", "exec", "--", "sh", "-c", f"touch {mark}; echo wrong-anyway")
    kimen.mark = mark  # type: ignore[attr-defined]
    return kimen


READ_ONLY_DAILY = [
    ("status",),
    ("status", "--json", "--profile", "dev"),
    ("direnv", "--profile", "dev"),
    ("secret", "history", "app.db"),
    ("secret", "history", "app.db", "--json"),
    ("secret", "restore", "app.db", "--revision", "1", "--dry-run"),
    ("secret", "generate", "new.one", "--dry-run"),
    ("inject", "-i", "t.yml", "-o", "out.yml", "--dry-run"),
    ("migrate", "--dry-run", "--profile", "local"),
    ("vault", "backups"),
]


@pytest.mark.parametrize("argv", READ_ONLY_DAILY, ids=lambda a: " ".join(a))
def test_read_only_daily_commands_never_unlock_prompt_or_read_a_value(marked, argv):
    done = marked.ok(*argv, unset=("KIMEN_PASSPHRASE",))
    assert not marked.mark.exists(), "the configured unlock command ran"
    assert CANARY not in done.out and CANARY.decode() not in done.err
    assert "passphrase" not in done.err.lower()
    assert not (marked.cwd / "out.yml").exists() and not (marked.cwd / ".kimen" / "profiles" / "local.kmap").exists()


def test_direnv_unsafe_stdout_never_uses_the_configured_unlock(marked):
    marked.fail(22, "direnv_needs_session", "direnv", "--profile", "dev", "--unsafe-stdout",
                unset=("KIMEN_PASSPHRASE",))
    assert not marked.mark.exists()
