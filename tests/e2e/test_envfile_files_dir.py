"""`envfile --files-dir DIR` writes the winning `file` directives into DIR, so every `envpath`
variable of the envfile names a file that exists with the right contents (docs/run.md, envfile)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

CERT = "-----CERT-----\nline 2\n"
PROFILE = "env DB=app.db\nfile creds/c.json=app.creds\nfile other=const:o\nenvpath CREDS=creds/c.json\n"


@pytest.fixture
def vault(kimen):
    kimen.init_vault()
    kimen.set("app.db", "postgres://u:p@h/db")
    kimen.set("app.creds", CERT)
    kimen.write_profile("p", PROFILE)
    return kimen


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_are_written_where_the_envpath_variables_point(vault):
    fd = vault.root / "files" / "dir"
    done = vault.ok("envfile", "--profile", "p", "--files-dir", str(fd), "--out", ".env", "--json",
                    env=vault.with_pass())
    doc = done.json()
    assert (doc["files_dir"], doc["files"], doc["count"]) == (str(fd), ["creds/c.json", "other"], 2)
    values = dotenv_values(vault.cwd / ".env")
    assert values == {"DB": "postgres://u:p@h/db", "CREDS": str(fd / "creds" / "c.json")}
    assert Path(values["CREDS"]).read_text() == CERT and (fd / "other").read_text() == "o"
    assert [_mode(p) for p in (fd.parent, fd, fd / "creds", fd / "creds" / "c.json", fd / "other")] == \
        [0o700, 0o700, 0o700, 0o600, 0o600]
    human = vault.ok("envfile", "--profile", "p", "--files-dir", str(fd), "--out", ".env", env=vault.with_pass())
    assert human.stdout.splitlines() == [f"wrote 2 variables to {vault.cwd / '.env'}", f"wrote 2 files to {fd}"]
    assert sorted(p.name for p in fd.iterdir()) == ["creds", "other"]  # replaced in place, left there
    # to stdout: the files are written, stdout is the envfile alone
    (fd / "other").unlink()
    out = vault.ok("envfile", "--profile", "p", "--files-dir", str(fd), "--out", "-", "--unsafe-stdout",
                   "--format", "json", env=vault.with_pass()).out
    assert json.loads(out)["CREDS"] == str(fd / "creds" / "c.json") and (fd / "other").read_text() == "o"
    # inline flags too; plan --mode envfile shows the files it would write
    vault.ok("envfile", "--env", "A=const:a", "--file", "x=const:xx", "--envpath", "X=x", "--files-dir", str(fd),
             "--out", "i.env")
    assert (fd / "x").read_text() == "xx" and dotenv_values(vault.cwd / "i.env")["X"] == str(fd / "x")
    plan = vault.ok("plan", "--mode", "envfile", "--profile", "p", "--files-dir", str(fd), "--json").json()
    assert [f["path"] for f in plan["files"]] == ["creds/c.json", "other"] and plan["files_dir"] == str(fd)
    assert plan["secrets"] == ["app.creds", "app.db"]


def test_unsafe_dir_is_refused_before_any_value_is_read(vault):
    loose = vault.root / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    # no passphrase given: the refusal comes first, nothing is unlocked or written
    vault.fail(22, "unsafe_files_dir", "envfile", "--profile", "p", "--files-dir", str(loose), "--out", ".env")
    link = vault.root / "link"
    link.symlink_to(vault.root / "files-target", target_is_directory=True)
    vault.fail(22, "unsafe_files_dir", "envfile", "--profile", "p", "--files-dir", str(link), "--out", ".env")
    assert not (vault.root / "files-target").exists() and not (vault.cwd / ".env").exists()
    if os.getuid() == 0:
        foreign = vault.root / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 12345, 12345)
        vault.fail(22, "unsafe_files_dir", "envfile", "--profile", "p", "--files-dir", str(foreign), "--out", ".env")


def test_symlinked_target_and_unrepresentable_values_write_nothing(vault, tmp_path):
    fd = vault.root / "fd"
    fd.mkdir(mode=0o700)
    (fd / "other").symlink_to(tmp_path / "victim")
    vault.fail(22, "unsafe_output_path", "envfile", "--profile", "p", "--files-dir", str(fd), "--out", ".env",
               env=vault.with_pass())
    assert not (tmp_path / "victim").exists() and not (vault.cwd / ".env").exists()
    # docker cannot hold a multi-line value: refused before the files dir is even created
    vault.write_profile("multi", "env CERT=app.creds\nfile c=app.creds\nenvpath C=c\n")
    fresh = vault.root / "fresh"
    vault.fail(22, "value_not_representable", "envfile", "--profile", "multi", "--files-dir", str(fresh),
               "--format", "docker", "--out", ".env", env=vault.with_pass())
    assert not fresh.exists() and not (vault.cwd / ".env").exists()


def test_without_files_dir_files_are_ignored(vault):
    done = vault.ok("envfile", "--profile", "p", "--out", ".env", "--json", env=vault.with_pass())
    assert (done.json()["files_dir"], done.json()["files"]) == (None, [])
    assert dotenv_values(vault.cwd / ".env") == {"DB": "postgres://u:p@h/db"}


@pytest.mark.parametrize("command", [
    ("envfile", "--profile", "p", "--out", ".env", "--files-dir"),
    ("run", "--profile", "p", "--files-dir"),
    ("render", "--profile", "p", "--dir"),
])
@pytest.mark.parametrize("blocked", ["subdir", "file"])
def test_one_file_in_the_way_writes_no_file_at_all(vault, command, blocked, tmp_path):
    """Every target is checked before the first file is written: a symlinked subdirectory or a
    symlink where a file goes refuses them all, and the error names what is in the way."""
    target = vault.root / "out"
    target.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if blocked == "subdir":  # creds/c.json is written first, other second
        (target / "creds").symlink_to(elsewhere)
        reason, path = ("unsafe_output_dir" if command[0] == "render" else "unsafe_files_dir"), target / "creds"
    else:
        (target / "other").symlink_to(elsewhere / "other")
        reason, path = "unsafe_output_path", target / "other"
    argv = [*command, str(target)] + (["--", "true"] if command[0] == "run" else [])
    code = {"envfile": 22, "run": 23, "render": 23}[command[0]]
    done = vault.fail(code, reason, *argv, env=vault.with_pass())
    assert done.err_json()["path"] == str(path)
    assert not (target / "creds" / "c.json").exists() and not (vault.cwd / ".env").exists()
    assert list(elsewhere.iterdir()) == []

