"""`kimen migrate` in real git repositories: detection, one transaction, per-directory profiles that
`run` finds, dotenv files never touched, git warnings, and the refusals that write nothing."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.vault_helpers import CANARY


def git(cwd, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@e", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def repo(kimen):
    kimen.init_vault()
    root = kimen.cwd
    git(root, "init", "-q")
    (root / ".gitignore").write_text("/.env\n")
    (root / ".env").write_bytes(b"A=1\nB=" + CANARY + b"\n")
    (root / ".env.local").write_text("B=local\nC=3\n")
    (root / "apps" / "api").mkdir(parents=True)
    (root / "apps" / "api" / ".env").write_text("DATABASE_URL=pg://api\n")
    (root / ".env.example").write_text("A=\n")
    (root / ".env.keys").write_text("DOTENV_PRIVATE_KEY=x\n")
    (root / ".env.prod").write_text("P=1\n")
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / ".env").write_text("N=1\n")
    git(root, "add", ".gitignore", "apps/api/.env")
    git(root, "commit", "-qm", "init")
    return kimen


def _snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob(".env*") if p.is_file()}


def test_migrate_imports_and_writes_profiles_run_reproduces(repo):
    root = repo.cwd
    before = _snapshot(root)
    done = repo.ok("migrate", "--json", env=repo.with_pass())
    doc = done.json()
    assert doc["root"] == str(root) and doc["dry_run"] is False and doc["backup_path"] is None
    files = {os.path.relpath(f["path"], root): f for f in doc["files"]}
    assert set(files) == {".env", ".env.local", "apps/api/.env"}
    assert files["apps/api/.env"]["created"] == ["apps-api.dev.DATABASE_URL"]
    assert files["apps/api/.env"]["git_tracked"] is True and files[".env"]["git_ignored"] is True
    assert files[".env.local"]["git_ignored"] is False
    why = {os.path.relpath(n["path"], root): n["why"] for n in doc["not_imported"]}
    assert set(why) == {".env.example", ".env.keys", ".env.prod"}
    assert [w["reason"] for w in doc["warnings"]] == ["env_file_tracked"]
    assert "then: rm .env" in doc["next_steps"] and "add .env.local to .gitignore" in doc["next_steps"]
    assert "add .env to .gitignore" not in doc["next_steps"]
    assert _snapshot(root) == before  # never touches a dotenv file
    assert (root / ".kimen/profiles/dev.kmap").read_text() == (
        "# kimen migrate from .env, .env.local: values are in the vault\n"
        "env A=secret:dev.A\nenv B=secret:dev.B\nenv C=secret:dev.C\n")
    assert oct(os.stat(root / ".kimen/profiles/dev.kmap").st_mode & 0o777) == "0o644"
    out = repo.ok("run", "--profile", "dev", "--", "sh", "-c", 'printf %s "$A $B $C"', env=repo.with_pass()).out
    assert out == b"1 local 3"
    api = root / "apps" / "api"
    out = repo.ok("run", "--", "sh", "-c", 'printf %s "$DATABASE_URL"', cwd=api,
                  env={**repo.with_pass(), "KIMEN_PROFILE": "dev"}).out
    assert out == b"pg://api"
    assert CANARY not in done.out and CANARY.decode() not in done.err


def test_existing_names_13_existing_profile_29_nothing_written(repo):
    root = repo.cwd
    repo.ok("migrate", env=repo.with_pass())
    profile = (root / ".kimen/profiles/dev.kmap").read_bytes()
    repo.ok("secret", "set", "dev.A", "--value", "changed", env=repo.with_pass())
    done = repo.fail(13, "secret_exists", "migrate", env=repo.with_pass())
    assert done.err_json()["existing"] == ["apps-api.dev.DATABASE_URL", "dev.A", "dev.B", "dev.C"]
    repo.fail(13, "secret_exists", "migrate", "--dry-run", unset=("KIMEN_PASSPHRASE",))
    done = repo.fail(29, "profile_exists", "migrate", "--skip-existing", env=repo.with_pass())
    assert done.err_json()["path"] == str(root / ".kimen/profiles/dev.kmap")
    assert repo.get("dev.A") == b"changed" and (root / ".kimen/profiles/dev.kmap").read_bytes() == profile
    (root / ".env").write_bytes(b"A=1\nB=x\nNEW=n\n")
    done = repo.ok("migrate", "--skip-existing", "--update-profile", "--json", env=repo.with_pass())
    assert [w["reason"] for w in done.json()["warnings"]].count("migrate_kept_existing") == 1
    assert (root / ".kimen/profiles/dev.kmap").read_bytes().startswith(profile)
    assert b"env NEW=secret:dev.NEW\n" in (root / ".kimen/profiles/dev.kmap").read_bytes()
    assert repo.get("dev.A") == b"changed" and repo.get("dev.NEW") == b"n"
    done = repo.ok("migrate", "--overwrite", "--update-profile", "--json", env=repo.with_pass())
    assert done.json()["backup_path"] and os.path.exists(done.json()["backup_path"])
    assert repo.get("dev.A") == b"1"


def test_a_symlinked_profile_is_refused_before_any_value_is_imported(repo):
    root = repo.cwd
    dotfiles = repo.root / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "dev.kmap").write_text("env OLD=const:x\n")
    (root / ".kimen" / "profiles").mkdir(parents=True)
    (root / ".kimen" / "profiles" / "dev.kmap").symlink_to(dotfiles / "dev.kmap")
    for extra in (("--dry-run",), ()):  # the dry run exits as the real run does
        done = repo.fail(29, "unsafe_output_path", "migrate", "--update-profile", *extra, env=repo.with_pass())
        assert done.err_json()["path"] == str(root / ".kimen/profiles/dev.kmap")
    assert repo.ok("secret", "list", "--json").json()["secrets"] == []  # nothing was imported
    assert (dotfiles / "dev.kmap").read_text() == "env OLD=const:x\n"


def test_dry_run_needs_no_passphrase_and_writes_nothing(repo):
    done = repo.ok("migrate", "--dry-run", unset=("KIMEN_PASSPHRASE",))
    assert "[dry-run]   create apps-api.dev.DATABASE_URL" in done.stdout.splitlines()
    assert not (repo.cwd / ".kimen").exists()
    assert repo.ok("secret", "list", "--json").json()["secrets"] == []


def test_files_all_prefix_and_refusals(repo, tmp_path):
    root = repo.cwd
    done = repo.ok("migrate", "--all", "--json", env=repo.with_pass())
    assert (root / ".kimen/profiles/prod.kmap").read_text().endswith("env P=secret:prod.P\n")
    assert {n["why"] for n in done.json()["not_imported"]} >= {"placeholder values, not secrets"}
    repo.fail(29, "migrate_prefix_ambiguous", "migrate", "--prefix", "x.", "--dry-run")
    (tmp_path / "one.env").write_text("K=v\n")
    repo.ok("migrate", str(tmp_path / "one.env"), "--profile", "one", "--prefix", "ext.", env=repo.with_pass())
    assert repo.get("ext.K") == b"v"
    assert (root / ".kimen/profiles/one.kmap").read_text().endswith("env K=secret:ext.K\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = repo.fail(29, "no_env_files_found", "migrate", cwd=empty)
    assert done.err_json()["root"] == str(empty)
    (tmp_path / "bad.env").write_text("KIMEN_X=1\n")
    repo.fail(29, "reserved_env_var", "migrate", str(tmp_path / "bad.env"), "--profile", "bad", env=repo.with_pass())
    (tmp_path / "bad2.env").write_text("my.key=1\n")
    repo.fail(29, "invalid_dotenv", "migrate", str(tmp_path / "bad2.env"), "--profile", "bad", env=repo.with_pass())
    assert not (root / ".kimen/profiles/bad.kmap").exists()


@pytest.mark.parametrize("hostile", ["file", "directory"])
def test_a_newline_in_a_path_cannot_add_a_directive_to_the_profile(kimen, hostile):
    """The profile's header comment names the source files: a file or directory name holding a
    newline must stay inside that comment, not end it and start `env PATH=...`."""
    kimen.init_vault()
    evil = "x\nenv PATH=const:evil\n#"
    if hostile == "file":
        (kimen.cwd / (evil + ".env")).write_text("Q=1\n")
        done = kimen.ok("migrate", evil + ".env", "--prefix", "m.", env=kimen.with_pass())
        where = kimen.cwd
    else:
        where = kimen.cwd / evil
        where.mkdir()
        (where / ".env").write_text("Q=1\n")
        done = kimen.ok("migrate", env=kimen.with_pass())  # from above: the header names the directory
    profile = (where / ".kimen" / "profiles" / "dev.kmap").read_text()
    directives = [line for line in profile.splitlines() if not line.startswith("#")]
    assert len(directives) == 1 and directives[0].startswith("env Q=secret:") and "\\n" in profile
    assert not any(line.startswith("env ") for line in done.stdout.splitlines())  # the report escapes it
    out = kimen.ok("run", "--profile", "dev", "--", "sh", "-c", 'printf %s "$PATH"', cwd=where,
                   env=kimen.with_pass()).out
    assert out != b"evil"


def test_all_merges_the_default_profiles_files_in_the_dotenv_tools_order(kimen):
    """`.env.local` overrides `.env.dev` (Next.js, Vite and dotenv-flow read them so);
    `.env.dev.local` overrides both."""
    kimen.init_vault()
    for name, value in ((".env", "base"), (".env.local", "local"), (".env.dev", "devfile")):
        (kimen.cwd / name).write_text(f"V={value}\nONLY{name.replace('.', '_').upper()}=1\n")
    kimen.ok("migrate", "--all", env=kimen.with_pass())
    assert kimen.get("dev.V") == b"local"
    assert {"dev.ONLY_ENV", "dev.ONLY_ENV_LOCAL", "dev.ONLY_ENV_DEV"} <= set(kimen.ok("secret", "list").stdout.split())
    (kimen.cwd / ".env.dev.local").write_text("V=devlocal\n")
    kimen.ok("migrate", "--all", "--overwrite", "--update-profile", env=kimen.with_pass())
    assert kimen.get("dev.V") == b"devlocal"
